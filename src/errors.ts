/** Every error Strata raises: one class per kind, each saying what failed, where, and what to do. */

export type Fault = "user" | "system";

/** Base of all Strata errors. `code` is stable and machine-readable; `fault` says whose move it is. */
export class StrataError extends Error {
  readonly code: string = "STRATA_ERROR";
  readonly fault: Fault = "system";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StrataError";
  }
}

/** The image definition is invalid (bad argument, step order, unknown option). */
export class InvalidDefinitionError extends StrataError {
  override readonly code = "INVALID_DEFINITION";
  override readonly fault = "user";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InvalidDefinitionError";
  }
}

/**
 * A step uses a secret (`Step.secrets`) the build was given no value for. Image.build() passes the definition's own
 * Secret values; a caller building a Plan itself passes them as `secrets` (a name → value map).
 */
export class MissingSecretError extends StrataError {
  override readonly code = "MISSING_SECRET";
  override readonly fault = "user";
  constructor(
    readonly secret: string,
    readonly step: string,
  ) {
    super(
      `${step}: uses the secret ${JSON.stringify(secret)}, but the build was given no value for it; ` +
        `pass it in the build's secrets (e.g. \`build(image.plan(), { secrets: image.secretValues() })\`, or \`--secret id=${secret},…\` on the command line)`,
    );
    this.name = "MissingSecretError";
  }
}

/** A place in a Dockerfile: 1-based line and column (columns count UTF-16 code units, as editors do). */
export interface SourceLocation {
  readonly file: string;
  readonly line: number;
  readonly column: number;
}

/**
 * The Dockerfile is malformed or asks for something BuildKit would reject (unknown instruction, bad flag, missing
 * arguments, undefined stage, a failed `${VAR:?message}` expansion, a COPY source that does not exist, …). The
 * message reads `Dockerfile:12:5: unknown instruction "RUNN"`.
 */
export class DockerfileSyntaxError extends StrataError {
  override readonly code = "DOCKERFILE_SYNTAX";
  override readonly fault = "user";
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** the message without the `file:line:column: ` prefix */
  readonly detail: string;
  constructor(location: SourceLocation, detail: string, options?: { cause?: unknown }) {
    super(`${location.file}:${location.line}:${location.column}: ${detail}`, options);
    this.name = "DockerfileSyntaxError";
    this.file = location.file;
    this.line = location.line;
    this.column = location.column;
    this.detail = detail;
  }
}

/** A definition file could not be loaded (syntax error, threw at import, no Image exported). */
export class DefinitionLoadError extends StrataError {
  override readonly code = "DEFINITION_LOAD";
  override readonly fault = "user";
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}: ${message}`, options);
    this.name = "DefinitionLoadError";
  }
}

/** A local path named by the definition does not exist or cannot be read. */
export class LocalPathError extends StrataError {
  override readonly code = "LOCAL_PATH";
  override readonly fault = "user";
  constructor(
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "LocalPathError";
  }
}

/** STRATA_BUILDER_VERSION (or a definition) names a builder version that does not exist. */
export class UnknownBuilderVersionError extends StrataError {
  override readonly code = "UNKNOWN_BUILDER_VERSION";
  override readonly fault = "user";
  constructor(
    readonly version: string,
    readonly known: readonly string[],
  ) {
    super(
      `unknown builder version "${version}": known versions are ${known.join(", ")} (set STRATA_BUILDER_VERSION to one of them, or unset it for the default)`,
    );
    this.name = "UnknownBuilderVersionError";
  }
}

function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${(ms / 1000).toFixed(1)}s`;
}

/** A build step ran and failed. Nothing is written to the cache when this is thrown. */
export class StepFailedError extends StrataError {
  override readonly code = "STEP_FAILED";
  override readonly fault = "user";
  constructor(
    readonly stepIndex: number,
    readonly description: string,
    readonly command: string,
    readonly exitCode: number | null,
    readonly logTail: string[],
    readonly durationMs: number,
    readonly timedOut = false,
    /** What stopped it, when the sandbox knows: the timeout that applied, or a resource limit it exceeded. */
    readonly detail: { timeoutMs?: number; limit?: string } = {},
  ) {
    const why = timedOut
      ? `timed out${detail.timeoutMs !== undefined ? ` after ${formatDuration(detail.timeoutMs)}` : ""} and was killed (raise the step's \`timeout\`; a build service caps it at its --max-step-timeout)`
      : detail.limit
        ? `was stopped: ${detail.limit}`
        : `exited with code ${exitCode}`;
    super(
      `step ${stepIndex} (${description}) failed: \`${command}\` ${why}` +
        (logTail.length ? `\n--- last ${logTail.length} log lines ---\n${logTail.join("\n")}` : ""),
    );
    this.name = "StepFailedError";
  }
}

/** A blob's content does not match the digest it was stored or fetched under. */
export class DigestMismatchError extends StrataError {
  override readonly code = "DIGEST_MISMATCH";
  constructor(
    readonly expected: string,
    readonly actual: string,
    where: string,
  ) {
    super(`digest mismatch for ${where}: expected ${expected}, got ${actual}`);
    this.name = "DigestMismatchError";
  }
}

/**
 * A tar header is malformed (a bad checksum, a number that is not octal, a negative size, a broken PAX record…):
 * `field` names what, `offset` is the header's byte offset in the uncompressed archive, `where` the archive.
 */
export class TarFormatError extends StrataError {
  override readonly code = "TAR_FORMAT";
  override readonly fault = "user";
  constructor(
    readonly field: string,
    readonly offset: number,
    readonly problem: string,
    readonly where = "tar archive",
  ) {
    super(`${where}: malformed tar header at byte ${offset}: ${field} ${problem}; the archive is corrupt or not a tar`);
    this.name = "TarFormatError";
  }
}

/** An image, blob or record does not exist. */
export class NotFoundError extends StrataError {
  override readonly code = "NOT_FOUND";
  override readonly fault = "user";
  constructor(message: string) {
    super(message);
    this.name = "NotFoundError";
  }
}

/** The store on disk is unreadable or inconsistent. */
export class StoreError extends StrataError {
  override readonly code = "STORE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreError";
  }
}

/** The sandbox could not be set up (runc, overlay, mounts) — not a failure of the user's command. */
export class SandboxError extends StrataError {
  override readonly code = "SANDBOX";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SandboxError";
  }
}

/** A required host tool (runc, mmdebstrap, uv, …) is missing. */
export class MissingToolError extends StrataError {
  override readonly code = "MISSING_TOOL";
  override readonly fault = "user";
  constructor(
    readonly tool: string,
    hint: string,
  ) {
    super(`${tool} is not available: ${hint}`);
    this.name = "MissingToolError";
  }
}

/**
 * Something that needs root ran as another user: local builds (runc sandboxes, layers that keep their files' owners)
 * and `strata run`. Raised before any work, instead of a failing chown deep inside.
 */
export class NeedsRootError extends StrataError {
  override readonly code = "NEEDS_ROOT";
  override readonly fault = "user";
  constructor(
    readonly uid: number,
    message: string,
  ) {
    super(message);
    this.name = "NeedsRootError";
  }
}

/** A build was cancelled (its AbortSignal fired), e.g. because the service is shutting down. */
export class BuildCancelledError extends StrataError {
  override readonly code = "CANCELLED";
  constructor(message = "the build was cancelled before it finished; run it again") {
    super(message);
    this.name = "BuildCancelledError";
  }
}

/** A setting (environment variable, command-line flag, operator option) has a value Strata cannot use. */
export class ConfigError extends StrataError {
  override readonly code = "CONFIG";
  override readonly fault = "user";
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A step asked for something the builder's operator has not granted (the `network.host` entitlement). */
export class EntitlementError extends StrataError {
  override readonly code = "ENTITLEMENT";
  override readonly fault = "user";
  constructor(message: string) {
    super(message);
    this.name = "EntitlementError";
  }
}

/** A step's resource limit (memory, pids, cpus) is invalid or above the operator's maximum. */
export class LimitError extends StrataError {
  override readonly code = "STEP_LIMIT";
  override readonly fault = "user";
  constructor(
    readonly limit: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "LimitError";
  }
}

/** A step's cgroup could not be found, created, limited, read or removed (`path` says where). */
export class CgroupError extends StrataError {
  override readonly code = "CGROUP";
  constructor(
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "CgroupError";
  }
}

/**
 * A fetch made on a client's behalf was refused by the outbound fetch policy (`src/net/`): an address the policy
 * refuses (loopback, private, link-local, …, after DNS and after each redirect), or plain HTTP to an unlisted
 * registry. The message names the policy and the allowance that would change it.
 */
export class FetchPolicyError extends StrataError {
  override readonly code = "FETCH_POLICY";
  override readonly fault = "user";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "FetchPolicyError";
  }

  /** The same refusal with `what` (the fetch it stopped, e.g. `ADD http://…`) in front. */
  within(what: string): FetchPolicyError {
    return new FetchPolicyError(`${what}: ${this.message}`, { cause: this });
  }
}

/** An operator's fetch policy setting (`--allow-fetch`, `--insecure-registry`, `STRATA_ALLOW_FETCH`, …) is malformed. */
export class FetchPolicyConfigError extends StrataError {
  override readonly code = "FETCH_POLICY_CONFIG";
  override readonly fault = "user";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "FetchPolicyConfigError";
  }
}

/**
 * A registry configuration (`--registry-config`, `STRATA_REGISTRY_CONFIG`: mirrors, plain HTTP, TLS per registry) is
 * malformed: `file` is the file, `key` the TOML key (`registry."docker.io".mirrors[1]`) when one is at fault.
 */
export class RegistryConfigError extends StrataError {
  override readonly code = "REGISTRY_CONFIG";
  override readonly fault = "user";
  constructor(
    message: string,
    readonly file: string,
    readonly key?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "RegistryConfigError";
  }
}

/**
 * A tenant is at one of its quotas on a build service (builds, upload bytes, store bytes): the request is refused with
 * 429 and a `Retry-After` of `retryAfterSeconds`; other tenants are not affected.
 */
export class QuotaExceededError extends StrataError {
  override readonly code = "QUOTA_EXCEEDED";
  override readonly fault = "user";
  constructor(
    readonly tenant: string,
    /** Which quota: `builds`, `upload-in-flight`, `upload-window`, `store`. */
    readonly quota: string,
    readonly retryAfterSeconds: number,
    message: string,
  ) {
    super(message);
    this.name = "QuotaExceededError";
  }
}

/** An image name (`strata build --tag`, `strata tag`, `image.build({ tag })`) is not a valid `NAME[:TAG]`. */
export class InvalidImageNameError extends StrataError {
  override readonly code = "INVALID_NAME";
  override readonly fault = "user";
  constructor(
    readonly input: string,
    why: string,
  ) {
    super(`invalid image name "${input}": ${why}`);
    this.name = "InvalidImageNameError";
  }
}

/** A command line the CLI cannot act on, found after its options parsed (exit 2, as a usage error). */
export class CommandUsageError extends StrataError {
  override readonly code = "USAGE";
  override readonly fault = "user";
  constructor(message: string) {
    super(message);
    this.name = "CommandUsageError";
  }
}

/**
 * A debianSlim base came out with other Debian packages than its builder version records (`debian.pins` in
 * `builders/<version>.json`): the archive moved on (a point release replaced them), so building it would give this key
 * other content than another store has under it. Nothing is cached. `changed` lists `name: recorded → installed`.
 */
export class DebianArchiveDriftError extends StrataError {
  override readonly code = "DEBIAN_ARCHIVE_DRIFT";
  override readonly fault = "user";
  constructor(
    readonly builderVersion: string,
    readonly suite: string,
    readonly changed: readonly string[],
  ) {
    const shown = changed.slice(0, 12).join("; ") + (changed.length > 12 ? `; … (${changed.length} in all)` : "");
    super(
      `debianSlim ${suite}: the Debian archive no longer serves the package versions builder version ${builderVersion} records ` +
        `(${shown}). The base is not built, so no store gets other packages under the same key. Use a newer builder version ` +
        "(STRATA_BUILDER_VERSION; PREVIEW is re-recorded with `node scripts/record-debian-pins.mjs PREVIEW`), or a builder " +
        "whose `debian.mirror` still serves those versions (a snapshot of the archive).",
    );
    this.name = "DebianArchiveDriftError";
  }
}
