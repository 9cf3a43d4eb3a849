/**
 * The build service's request schema (`POST /v1/images`), declared once with zod: the types client and server share
 * (`z.infer` of it), the validator's allowed fields and limits, and the normalisation the server applies (image
 * paths clamped, env sorted, entries in walk order). The client's encoder (`encode.ts`) and the server's decoder
 * (`decode.ts`) both work from these types; `plan-ties.ts` makes every part that travels unchanged equal to the
 * plan's own type (`src/plan/`), so a field added to a plan but not to the wire is a compile error.
 *
 * A request is a compiled Plan whose local inputs are replaced by the entries the client walked (path, type, mode,
 * owner, content digest or link target); file contents travel separately as blobs (`POST /v1/blobs/check`,
 * `PUT /v1/blobs/sha256:<hex>`). What legitimately differs from a plan:
 * - `dir`/`file` inputs and `copy: false` mounts carry walked entries instead of a local path.
 * - A `select` rooted at the build context is resolved by the client with the engine's own selection code: it sends
 *   the matched sources (`matches`) and every selected entry, exactly what the step's key covers. The server
 *   materialises them as a tree and selects them again there by their literal paths.
 * - Nested plans (Dockerfile stages other steps read) travel once each in `plans` and are named by index, from later
 *   plans and the request's steps only (so references never cycle).
 * - A `debian` base names only its Python series; the server derives the recipe (suite, mirror, variant, packages,
 *   CMD) and the step from `builders/<version>.json`, so the base step carries nothing else.
 * - `extra` never holds a name the engine derives from what a step runs (see src/keys/step-extra.ts).
 * - Secret values travel once, by name (`secrets`, the build's SecretValues); never in the build id, a log or the store.
 */
import { z } from "zod";
import { isDerivedExtra } from "../../keys/step-extra.js";
import { HOSTNAME_RULE, isValidHostname } from "../../plan/hostname.js";
import { clampImagePath } from "../../plan/image-path.js";
import { isValidEntry, selectionProblem, sortEntries, treeProblem, under, unlistedParents } from "./entries.js";
import {
  absImagePath,
  bool,
  digest,
  imagePath,
  int,
  mode,
  mtimeMs,
  obj,
  ownerId,
  PARSE_OPTIONS,
  pairs,
  patternList,
  relPath,
  secretName,
  str,
  strings,
  varName,
} from "./fields.js";
import { INPUT_NAME_RE, LIMITS, MAX_JSON_BYTES, type WIRE_FORMAT } from "./limits.js";

// ---------------------------------------------------------------------------------------------------------------
// Instructions (as src/plan/instructions.ts declares them; image paths clamped)

const argv = strings();
const mountOwnership = { mode: mode.optional(), uid: ownerId.optional(), gid: ownerId.optional() };

export const RunMountSchema = z.discriminatedUnion("type", [
  obj({ type: z.literal("bind"), source: str(256), target: imagePath, readonly: bool }),
  obj({
    type: z.literal("cache"),
    id: str(LIMITS.pathBytes).refine((s) => s !== "", { error: "empty cache id" }),
    target: imagePath,
    sharing: z.enum(["shared", "private", "locked"]),
    readonly: bool.optional(),
    ...mountOwnership,
    seed: str(256).optional(),
    source: relPath.optional(),
  }),
  obj({
    type: z.literal("secret"),
    id: secretName,
    target: imagePath.optional(),
    env: varName.optional(),
    required: bool.optional(),
    ...mountOwnership,
  }),
  obj({ type: z.literal("tmpfs"), target: imagePath, size: int(0, Number.MAX_SAFE_INTEGER).optional() }),
]);

/** COPY/ADD options of the Dockerfile form (with `sources`); the SDK form has `source` and an absolute `dest` only. */
const copyFields = {
  source: str(256),
  dest: str(LIMITS.pathBytes).refine((s) => s !== "", { error: "empty path" }),
  sources: patternList.optional(),
  inputs: strings(LIMITS.inputsPerStep, 256).optional(),
  from: str(2048).optional(),
  chown: str(256).optional(),
  chmod: str(256).optional(),
  link: bool.optional(),
  exclude: patternList.optional(),
  parents: bool.optional(),
};
const DOCKERFILE_ONLY = ["inputs", "from", "chown", "chmod", "link", "exclude", "parents"] as const;

/** The SDK form's destination is absolute; only a Dockerfile COPY/ADD (with `sources`) has the Dockerfile flags. */
function copyRules<
  T extends { op: "COPY" | "ADD"; dest: string; sources?: string[] | undefined } & Partial<
    Record<(typeof DOCKERFILE_ONLY)[number], unknown>
  >,
>(o: T, ctx: z.RefinementCtx): void {
  if (o.sources !== undefined) return;
  if (!o.dest.startsWith("/"))
    ctx.addIssue({
      code: "custom",
      path: ["dest"],
      message: `expected an absolute path in the image, got ${JSON.stringify(o.dest)}`,
    });
  for (const k of DOCKERFILE_ONLY)
    if (o[k] !== undefined)
      ctx.addIssue({ code: "custom", path: [k], message: `only a Dockerfile ${o.op} (with "sources") has this field` });
}

/** The destination with its `..` kept below `/` (src/plan/image-path.ts). */
const clampDest = <T extends { dest: string }>(o: T): T => ({ ...o, dest: clampImagePath(o.dest) });

export const InstructionSchema = z.discriminatedUnion("op", [
  obj({
    op: z.literal("RUN"),
    command: z.union([str(), argv]),
    mounts: z.array(RunMountSchema).max(64).optional(),
    network: z.enum(["host", "none"]).optional(),
    hostname: str(253).refine(isValidHostname, HOSTNAME_RULE).optional(),
  }),
  obj({ op: z.literal("COPY"), ...copyFields })
    .superRefine(copyRules)
    .transform(clampDest),
  obj({ op: z.literal("ADD"), ...copyFields, unpack: bool.optional(), checksum: str(256).optional() })
    .superRefine(copyRules)
    .transform(clampDest),
  obj({ op: z.literal("ENV"), vars: pairs }),
  // A WORKDIR without `create` comes from the SDK (absolute); a Dockerfile's may be relative to the previous one.
  obj({ op: z.literal("WORKDIR"), path: imagePath, create: bool.optional() }).superRefine((o, ctx) => {
    if (o.create === undefined && !o.path.startsWith("/"))
      ctx.addIssue({
        code: "custom",
        path: ["path"],
        message: `expected an absolute path in the image, got ${JSON.stringify(o.path)}`,
      });
  }),
  obj({ op: z.literal("USER"), user: str(256) }),
  obj({ op: z.literal("ENTRYPOINT"), argv, keepCmd: bool.optional(), shell: bool.optional() }),
  obj({ op: z.literal("CMD"), argv, shell: bool.optional() }),
  obj({ op: z.literal("SHELL"), argv }),
  obj({ op: z.literal("LABEL"), labels: pairs }),
  obj({ op: z.literal("ARG"), names: strings(1000, 256) }),
  obj({ op: z.literal("EXPOSE"), ports: strings(1000, 64) }),
  obj({ op: z.literal("VOLUME"), paths: strings(1000, LIMITS.pathBytes) }),
  obj({ op: z.literal("STOPSIGNAL"), signal: str(64) }),
  obj({
    op: z.literal("HEALTHCHECK"),
    test: argv,
    interval: int(0, Number.MAX_SAFE_INTEGER).optional(),
    timeout: int(0, Number.MAX_SAFE_INTEGER).optional(),
    startPeriod: int(0, Number.MAX_SAFE_INTEGER).optional(),
    startInterval: int(0, Number.MAX_SAFE_INTEGER).optional(),
    retries: int(0, Number.MAX_SAFE_INTEGER).optional(),
  }),
  obj({ op: z.literal("ONBUILD"), expression: str(64 * 1024).optional() }),
  obj({ op: z.literal("MAINTAINER"), name: str(1024) }),
]);

// ---------------------------------------------------------------------------------------------------------------
// Walked entries

/** One walked local entry. `path` is relative, `/`-separated, without `.`/`..` segments. */
export const EntrySchema = obj({
  path: relPath,
  type: z.enum(["file", "dir", "symlink"]),
  /** Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`). */
  mode,
  uid: ownerId,
  gid: ownerId,
  /** Files: size in bytes. */
  size: int(0, Number.MAX_SAFE_INTEGER).optional(),
  /** Files: `sha256:<hex>` of the content (the blob to upload). */
  digest: digest.optional(),
  /** Symlinks: the link target. */
  target: str(LIMITS.pathBytes).optional(),
  /** Modification time, ms since the Unix epoch: what a copy gives the entry (never keyed). Default 0. */
  mtimeMs: mtimeMs.optional(),
}).superRefine((e, ctx) => {
  if (e.type === "file") {
    if (e.size === undefined) ctx.addIssue({ code: "custom", path: ["size"], message: "a file has a size" });
    if (e.digest === undefined)
      ctx.addIssue({
        code: "custom",
        path: ["digest"],
        message: "a file has a digest (sha256:<64 lowercase hex digits>)",
      });
    if (e.target !== undefined)
      ctx.addIssue({ code: "custom", path: ["target"], message: "only symlinks have a target" });
  } else if (e.type === "symlink") {
    if (e.target === undefined || e.target === "")
      ctx.addIssue({ code: "custom", path: ["target"], message: "a symlink has a non-empty target" });
    if (e.digest !== undefined || e.size !== undefined)
      ctx.addIssue({ code: "custom", message: "a symlink has no size or digest (its target is sent instead)" });
  } else if (e.digest !== undefined || e.size !== undefined || e.target !== undefined) {
    ctx.addIssue({ code: "custom", message: "a directory has no size, digest or target" });
  }
});

/**
 * A list of entries: each checked by the fast path (`isValidEntry`, the same rules without a zod parse per entry: a
 * context can have a million), and the first it refuses parsed by {@link EntrySchema}, which names the problem.
 */
const entryList = z
  .array(z.unknown())
  .max(LIMITS.entries)
  .superRefine((list, ctx) => {
    const bad = list.findIndex((e) => !isValidEntry(e));
    if (bad < 0) return;
    const r = EntrySchema.safeParse(list[bad], PARSE_OPTIONS);
    for (const iss of r.error?.issues ?? [{ code: "custom" as const, path: [], message: "not a valid entry" }])
      ctx.addIssue({ ...iss, path: [bad, ...iss.path] } as z.core.$ZodRawIssue);
  })
  .transform((list) => list as WireEntry[]);
/** A whole tree (a dir input, a deferred mount): each path once, every parent listed as a directory; sorted bytewise. */
export const TreeEntriesSchema = entryList
  .superRefine((list, ctx) => {
    const problem = treeProblem(list);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  })
  .transform((list) => sortEntries(list));

/** A context selection's entries: each path once, a listed ancestor is a directory; sorted bytewise. */
const SelectionEntriesSchema = entryList
  .superRefine((list, ctx) => {
    const problem = selectionProblem(list);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  })
  .transform((list) => sortEntries(list));

// ---------------------------------------------------------------------------------------------------------------
// Inputs

/** A place in a Dockerfile (error messages only). */
export const LocationSchema = obj({ file: str(LIMITS.pathBytes), line: int(0, 1e9), column: int(0, 1e9) });

/** An input's name; a Dockerfile heredoc's (in a select or inline input) is `<<NAME`. Never `.` or `..`. */
function inputName(heredoc: boolean) {
  return str(128).superRefine((n, ctx) => {
    if (n === "." || n === "..")
      ctx.addIssue({
        code: "custom",
        message: `"${n}" is not a valid input name (it names a directory, not an input)`,
      });
    else if (!INPUT_NAME_RE.test(n) && !(heredoc && /^<<[A-Za-z0-9_.-]{1,126}$/.test(n)))
      ctx.addIssue({ code: "custom", message: `"${n}" is not a valid input name` });
  });
}

/** A nested plan's index in `plans` (which ones a step may name is checked with the whole request: decode.ts). */
export const planIndex = int(0, LIMITS.plans - 1);

/**
 * A source a context `select` matched: its path relative to the context ("" for the context itself) and type; `parents`
 * for a `COPY --parents` source (`path` is then its pivot directory, whose entries below it were selected).
 */
export const MatchSchema = obj({
  path: z.union([z.literal(""), relPath]),
  type: z.enum(["file", "dir"]),
  parents: z.literal(true).optional(),
});
/** A source the client matched but `--exclude` dropped by name (no entries; it makes COPY's destination). */
const ExcludedSchema = obj({ path: relPath, type: z.enum(["file", "dir"]) });

const SelectRootSchema = z.discriminatedUnion("kind", [
  /** The client's context, resolved by the client; `source` (its path there) is for log text only. */
  obj({ kind: z.literal("context"), source: str(LIMITS.pathBytes).optional() }),
  obj({ kind: z.literal("stage"), stage: str(256), plan: planIndex }),
  obj({
    kind: z.literal("image"),
    ref: str(2048).refine((s) => s !== "", { error: "empty image reference" }),
    insecure: bool.optional(),
  }),
  /** A git repository (`https://host/repo.git#ref:subdir`), fetched by the service under its fetch policy. */
  obj({
    kind: z.literal("git"),
    url: str(4096).refine((s) => s !== "", { error: "empty git URL" }),
    keepGitDir: bool.optional(),
    checksum: str(64).optional(),
  }),
]);

/**
 * Dockerfile COPY/ADD sources and RUN bind mounts. For a context root, `matches` and `entries` (sorted, unique paths;
 * a path's listed ancestors are directories) are the client's selection; other roots have neither and are resolved
 * by the server with `patterns`, `exclude` and `parents`.
 */
const SelectInputSchema = obj({
  kind: z.literal("select"),
  name: inputName(true),
  root: SelectRootSchema,
  patterns: patternList.min(1, { error: "a selection needs at least one pattern" }),
  exclude: patternList.optional(),
  parents: bool.optional(),
  location: LocationSchema.optional(),
  entries: SelectionEntriesSchema.optional(),
  matches: z.array(MatchSchema).max(LIMITS.entries).optional(),
  excluded: z.array(ExcludedSchema).max(LIMITS.entries).optional(),
}).superRefine((i, ctx) => {
  if (i.root.kind !== "context") {
    if (i.matches !== undefined || i.entries !== undefined || i.excluded !== undefined) {
      ctx.addIssue({
        code: "custom",
        message: `a selection from ${i.root.kind === "stage" ? "a stage" : i.root.kind === "git" ? "a git repository" : "an image"} is resolved by the server: send no matches or entries`,
      });
    }
    return;
  }
  if (i.entries === undefined)
    return void ctx.addIssue({
      code: "custom",
      path: ["entries"],
      message: "a context selection lists the entries the client selected",
    });
  if (i.matches === undefined)
    return void ctx.addIssue({
      code: "custom",
      path: ["matches"],
      message: "a context selection lists the sources the client matched",
    });
  const problem = contextSelectionProblem(i.matches, i.entries, Boolean(i.parents));
  if (problem) ctx.addIssue({ code: "custom", path: problem.path, message: problem.message });
});

/** Why a context selection's matches and entries do not fit together (the server would select something else). */
function contextSelectionProblem(
  matches: readonly WireMatch[],
  entries: readonly WireEntry[],
  parents: boolean,
): { path: PropertyKey[]; message: string } | undefined {
  const byPath = new Map(entries.map((e) => [e.path, e]));
  for (const [i, m] of matches.entries()) {
    if (Boolean(m.parents) !== parents)
      return {
        path: ["matches", i, "parents"],
        message: parents
          ? "every match of a --parents selection is a pivot (parents: true)"
          : "only a --parents selection has pivot matches",
      };
    if (m.parents) {
      if (m.type !== "dir") return { path: ["matches", i, "type"], message: "a --parents pivot is a directory" };
    } else if (m.path === "") {
      if (m.type !== "dir") return { path: ["matches", i, "type"], message: "the context itself is a directory" };
    } else if (byPath.get(m.path)?.type !== m.type) {
      return {
        path: ["matches", i, "path"],
        message: `the matched ${m.type} ${JSON.stringify(m.path)} is not listed as a ${m.type} in the entries`,
      };
    }
  }
  // Every entry belongs to a match (is it, or is below a directory match) ...
  const dirs = matches.filter((m) => m.type === "dir").map((m) => m.path);
  const files = new Set(matches.filter((m) => m.type === "file").map((m) => m.path));
  for (const e of entries) {
    if (!files.has(e.path) && !dirs.some((d) => e.path === d || under(e.path, d)))
      return { path: ["entries"], message: `${JSON.stringify(e.path)} is not a matched source or below one` };
  }
  // ... and the directories the server adds to hold the tree are never inside a matched directory (they would be
  // selected there too, and the server's selection would differ from the client's).
  for (const p of unlistedParents(entries)) {
    const d = dirs.find((d) => under(p, d));
    if (d !== undefined)
      return {
        path: ["entries"],
        message: `directory ${JSON.stringify(p)} is below the matched directory ${JSON.stringify(d || ".")} but not listed`,
      };
  }
  return undefined;
}

/** A step input as sent: walked entries instead of a local path (`source` is the client's path, for log text only). */
export const InputSchema = z.discriminatedUnion("kind", [
  obj({
    kind: z.literal("dir"),
    name: inputName(false),
    source: str(LIMITS.pathBytes).optional(),
    entries: TreeEntriesSchema,
  }),
  obj({
    kind: z.literal("file"),
    name: inputName(false),
    source: str(LIMITS.pathBytes).optional(),
    entry: EntrySchema,
  }).superRefine((i, ctx) => {
    if (i.entry.type !== "file")
      ctx.addIssue({
        code: "custom",
        path: ["entry", "type"],
        message: `a file input's entry must be a regular file, got ${i.entry.type}`,
      });
    else if (i.entry.path.includes("/"))
      ctx.addIssue({
        code: "custom",
        path: ["entry", "path"],
        message: `a file input's entry path is the file's name, got ${JSON.stringify(i.entry.path)}`,
      });
  }),
  obj({ kind: z.literal("inline"), name: inputName(true), content: str(MAX_JSON_BYTES), mode }),
  SelectInputSchema,
  obj({
    kind: z.literal("url"),
    name: inputName(true),
    url: str(LIMITS.urlBytes).refine((u) => /^https?:\/\/[^/\s]/i.test(u), {
      error: (iss) => `expected an http:// or https:// URL, got ${JSON.stringify(iss.input)}`,
    }),
    checksum: str(256).optional(),
    location: LocationSchema.optional(),
    help: str(64 * 1024).optional(),
  }),
  /** Nested plans (indexes into `plans`) built before the step reads anything. */
  obj({ kind: z.literal("stages"), name: inputName(true), plans: z.array(planIndex).max(LIMITS.plans) }),
]);

// ---------------------------------------------------------------------------------------------------------------
// Bases, steps, plans

/** The login kinds of a registry base (src/registry/credentials.ts), with the build's secrets as credentials. */
const registryLogin = z.enum(["registry", "ecr", "gcp"]);

/**
 * Where a chain starts, as a client names it. A `debian` base is only a Python series of the request's builder version:
 * the server derives its recipe from `builders/<version>.json`.
 */
export const BaseSchema = z.discriminatedUnion("kind", [
  obj({ kind: z.literal("scratch") }),
  obj({
    kind: z.literal("debian"),
    python: str(32).regex(/^[0-9]+\.[0-9]+$/, {
      error: (iss) => `expected a Python series such as "3.11", got ${JSON.stringify(iss.input)}`,
    }),
  }),
  obj({
    kind: z.literal("registry"),
    ref: str(2048),
    insecure: bool.optional(),
    login: registryLogin.optional(),
    gcpMode: z.enum(["access_token", "json_key"]).optional(),
  }),
  obj({ kind: z.literal("image"), imageId: str(80) }),
]);

const byCodeUnit = ([a]: [string, string], [b]: [string, string]) => (a < b ? -1 : a > b ? 1 : 0);

export const StepSchema = obj({
  method: str(128),
  description: str(64 * 1024),
  base: BaseSchema.optional(),
  instructions: z.array(InstructionSchema).max(LIMITS.instructionsPerStep),
  inputs: z.array(InputSchema).max(LIMITS.inputsPerStep),
  /** Secret names (values travel once, in the request's `secrets`). */
  secrets: z.array(secretName).max(LIMITS.secretsPerStep),
  /** `false` for Dockerfile steps: secrets reach a RUN only through `--mount=type=secret`. */
  secretsAsEnv: bool.optional(),
  // Sorted: the key sorts env entries too, so their order must not separate otherwise identical builds.
  env: z.record(varName, str()).transform((env) => Object.fromEntries(Object.entries(env).sort(byCodeUnit))),
  /** Dockerfile build args the step depends on (keyed). */
  buildArgs: pairs.optional(),
  /** Proxy build args for a RUN's environment (not keyed, as BuildKit's ProxyEnv). */
  proxyEnv: pairs.optional(),
  forceBuild: bool,
  timeoutMs: int(1, 7 * 24 * 3600 * 1000).optional(),
  extra: pairs,
}).superRefine((s, ctx) => {
  for (const [i, [name]] of s.extra.entries()) {
    if (isDerivedExtra(name))
      ctx.addIssue({
        code: "custom",
        path: ["extra", i],
        message: `"${name}" is derived by the server from what the step runs (its base, instructions and env); do not send it`,
      });
  }
  if (new Set(s.secrets).size !== s.secrets.length)
    ctx.addIssue({ code: "custom", path: ["secrets"], message: "a secret name is listed twice" });
  const names = s.inputs.map((i) => i.name);
  if (new Set(names).size !== names.length)
    ctx.addIssue({ code: "custom", path: ["inputs"], message: "two inputs have the same name" });
  if (s.base?.kind === "debian") {
    // Everything else about a debian base step (its CMD, its key) is derived by the server from the builder version.
    const carried: [string, boolean][] = [
      ["instructions", s.instructions.length > 0],
      ["inputs", s.inputs.length > 0],
      ["secrets", s.secrets.length > 0],
      ["env", Object.keys(s.env).length > 0],
      ["extra", s.extra.length > 0],
      ["buildArgs", (s.buildArgs?.length ?? 0) > 0],
      ["proxyEnv", (s.proxyEnv?.length ?? 0) > 0],
    ];
    for (const [field, set] of carried) {
      if (set)
        ctx.addIssue({
          code: "custom",
          path: [field],
          message: `a debian base step carries only its Python series: the server derives the rest from builders/<version>.json; send an empty ${field}`,
        });
    }
  }
});

/** A chain's steps: the first carries the base, no other does. */
const StepsSchema = z
  .array(StepSchema)
  .min(1, { error: "a build needs at least one step (its base)" })
  .max(LIMITS.steps)
  .superRefine((steps, ctx) => {
    if (!steps[0]?.base)
      ctx.addIssue({
        code: "custom",
        path: [0],
        message: "the first step must carry the base (fromScratch, debianSlim, fromRegistry or fromId)",
      });
    for (const [i, s] of steps.entries())
      if (i > 0 && s.base)
        ctx.addIssue({ code: "custom", path: [i, "base"], message: "only the first step may carry a base" });
  });

export const builderVersionName = str(64).regex(/^[A-Za-z0-9._-]+$/, {
  error: (iss) => `"${String(iss.input)}" is not a builder version name`,
});

/** A nested plan (a Dockerfile stage other steps read), built by the server when a step needs it. */
export const NestedPlanSchema = obj({ builderVersion: builderVersionName, steps: StepsSchema });

/** A `copy: false` local file or directory (built as the final step). */
export const DeferredSchema = obj({
  kind: z.enum(["dir", "file"]),
  source: str(LIMITS.pathBytes).optional(),
  remotePath: absImagePath,
  ignore: strings(),
  entries: TreeEntriesSchema,
}).superRefine((d, ctx) => {
  if (
    d.kind === "file" &&
    (d.entries.length !== 1 || d.entries[0]!.type !== "file" || d.entries[0]!.path.includes("/"))
  ) {
    ctx.addIssue({
      code: "custom",
      path: ["entries"],
      message: "a file mount has exactly one regular-file entry named after the file",
    });
  }
});

/** The body of `POST /v1/images` (the format is checked first: see decode.ts). */
export const BuildRequestSchema = obj({
  /** The wire format (WIRE_FORMAT); a request without it comes from an older client. */
  format: z.string(),
  builderVersion: builderVersionName,
  steps: StepsSchema,
  /** `copy: false` files and directories (none when absent). */
  deferred: z.array(DeferredSchema).max(LIMITS.deferred).default([]),
  /** Nested plans, referred to by index from `stage` select roots and `stages` inputs (and from later plans only). */
  plans: z.array(NestedPlanSchema).max(LIMITS.plans).optional(),
  /** The build's secret values by name (the plan's SecretValues): each step gets the names it lists. Never in the id. */
  secrets: z.record(secretName, str()).optional(),
  forceBuild: bool.optional(),
  ignoreCache: bool.optional(),
  /** Name under which the build is remembered for `strata explain` on the server. */
  chainName: str(4096).optional(),
  /** Resource limits the client asks for its RUN steps; the service caps them at its maximum (a step fails above it). */
  limits: obj({
    memoryBytes: int(1, Number.MAX_SAFE_INTEGER).optional(),
    pids: int(1, 2 ** 31).optional(),
    cpus: z
      .number({ error: (iss) => `expected a number of CPUs above 0, got ${String(iss.input)}` })
      .gt(0, { error: (iss) => `expected a number of CPUs above 0, got ${String(iss.input)}` })
      .max(4096)
      .optional(),
  }).optional(),
});

/** `POST /v1/blobs/check`. */
export const BlobCheckSchema = obj({ digests: z.array(digest).max(1_000_000) });

export type RunMountWire = z.output<typeof RunMountSchema>;
export type InstructionWire = z.output<typeof InstructionSchema>;
export type WireEntry = z.output<typeof EntrySchema>;
export type WireLocation = z.output<typeof LocationSchema>;
export type WireMatch = z.output<typeof MatchSchema>;
export type WireSelectRoot = z.output<typeof SelectRootSchema>;
export type WireInput = z.output<typeof InputSchema>;
export type WireBase = z.output<typeof BaseSchema>;
export type WireStep = z.output<typeof StepSchema>;
export type WirePlan = z.output<typeof NestedPlanSchema>;
export type WireDeferred = z.output<typeof DeferredSchema>;
/** A request as the server accepted it (format checked, fields normalised). */
export type BuildRequest = Omit<z.output<typeof BuildRequestSchema>, "format"> & { format: typeof WIRE_FORMAT };
