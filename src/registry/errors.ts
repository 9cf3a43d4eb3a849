/** Errors raised while talking to an OCI distribution registry. */
import { StrataError, type Fault } from "../errors.js";

export interface RegistryErrorDetails {
  /** HTTP status of the failing response; undefined for network errors. */
  status?: number;
  /** Registry error codes from the JSON error body (`MANIFEST_UNKNOWN`, `UNAUTHORIZED`, `TOOMANYREQUESTS`, …). */
  codes?: string[];
  /** True when retrying later may succeed (network errors, 408, 429, 5xx). */
  temporary?: boolean;
  /** The URL that failed. */
  url?: string;
  /** How long the registry asked us to wait (`Retry-After` on 429/503), in ms. */
  retryAfterMs?: number;
  cause?: unknown;
}

/** A registry request failed. The message names the URL and says what to do. */
export class RegistryError extends StrataError {
  override readonly code = "REGISTRY";
  override readonly fault: Fault;
  readonly status: number | undefined;
  readonly codes: readonly string[];
  readonly temporary: boolean;
  readonly url: string | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(message: string, details: RegistryErrorDetails = {}) {
    super(message, details.cause !== undefined ? { cause: details.cause } : undefined);
    this.name = "RegistryError";
    this.status = details.status;
    this.codes = details.codes ?? [];
    this.temporary = details.temporary ?? false;
    this.url = details.url;
    this.retryAfterMs = details.retryAfterMs;
    // 4xx (bad name, missing tag, access denied) is the user's move; network trouble and 5xx are not.
    const s = details.status;
    this.fault = s !== undefined && s >= 400 && s < 500 && s !== 408 && s !== 429 ? "user" : "system";
  }
}

/**
 * `e` with `where` (e.g. the Dockerfile step that named the image) before its message, when it is a RegistryError
 * (same status, codes and retry hints, the original as cause); any other error as it is.
 */
export function locateRegistryError(where: string, e: unknown): unknown {
  if (!(e instanceof RegistryError)) return e;
  return new RegistryError(`${where}: ${e.message}`, {
    ...(e.status !== undefined ? { status: e.status } : {}),
    codes: [...e.codes],
    temporary: e.temporary,
    ...(e.url !== undefined ? { url: e.url } : {}),
    ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {}),
    cause: e,
  });
}

/** The image exists but Strata cannot use it (schema1 manifest, zstd layers, wrong platform, malformed JSON). */
export class UnsupportedImageError extends StrataError {
  override readonly code = "UNSUPPORTED_IMAGE";
  override readonly fault = "user";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UnsupportedImageError";
  }
}

/** The registry (or its token service) refused the credentials, or needs credentials none were given for. */
export class RegistryAuthError extends RegistryError {
  constructor(message: string, details: RegistryErrorDetails = {}) {
    super(message, { status: 401, codes: ["UNAUTHORIZED"], ...details, temporary: false });
    this.name = "RegistryAuthError";
  }
}

/** One host's failure in a pull that tried several (mirrors, then the registry). */
export interface HostFailure {
  /** How the host is named (`mirror 127.0.0.5:5000`, `docker.io`). */
  readonly host: string;
  readonly error: unknown;
}

/** Every host a pull tried — the registry's mirrors, then the registry itself — failed; the message lists each. */
export class RegistryHostsError extends RegistryError {
  readonly failures: readonly HostFailure[];
  constructor(what: string, failures: readonly HostFailure[]) {
    const lines = failures.map(
      (f, i) => `${i + 1}. ${f.host}: ${f.error instanceof Error ? f.error.message : String(f.error)}`,
    );
    const last = failures.at(-1)?.error;
    super(`could not get ${what} from any of the ${failures.length} hosts tried, in order:\n${lines.join("\n")}`, {
      ...(last instanceof RegistryError && last.status !== undefined ? { status: last.status } : {}),
      codes: failures.flatMap((f) => (f.error instanceof RegistryError ? [...f.error.codes] : [])),
      temporary: failures.every((f) => f.error instanceof RegistryError && f.error.temporary),
      cause: last,
    });
    this.name = "RegistryHostsError";
    this.failures = failures;
  }
}
