/**
 * The build service's wire format (`POST /v1/images` and friends), shared by the client and the server: JSON types,
 * a strict validator (every field checked, unknown fields refused, paths confined), and the build id — a content hash
 * of the request's definition, so identical requests get the same id and join one build.
 *
 * A request is a compiled {@link Plan} whose local inputs are replaced by the entries the client walked (path,
 * type, mode, owner, content digest or link target); file contents travel separately as blobs
 * (`POST /v1/blobs/check`, `PUT /v1/blobs/sha256:<hex>`). Secret values travel per step and never enter the id,
 * a log or the store; a request has one value per secret name (the build's SecretValues, which each step's values
 * are taken from), so two steps giving one name different values are refused.
 *
 * Dockerfile plans (format 2) add `select` inputs, `url` inputs, `stages` inputs and nested plans:
 * - A `select` rooted at the build context is resolved by the client with the engine's own selection code; it sends
 *   the matched sources (`matches`) and every selected entry, exactly what the step's key covers, so only those files
 *   are uploaded. The server materialises them as a tree and selects them again there by their literal paths.
 * - A `select` rooted at a stage names a nested plan by its index in {@link BuildRequest.plans} (each plan appears
 *   once however often it is read, and only refers to plans before it); one rooted at an image names the reference,
 *   and the server pulls it. `url` inputs are downloaded by the server (keyed by content, as locally).
 * - A nested plan's secret values travel in its own `secrets` (index-aligned with its steps), never in the id.
 *
 * Format 3 makes the server the only author of what a step's key stands for:
 * - A request names its format (`format: "strata-build/3"`); one without it comes from an older client and is refused.
 * - A `debian` base names only its Python series; the server derives the recipe (suite, mirror, variant, packages,
 *   CMD) and the step from `builders/<version>.json`, so the base step carries nothing else.
 * - `extra` never holds a name the engine derives from what a step runs (`base`, `base.*`, `env.*`, `link.*`,
 *   `workdir.create`; see src/keys/step-extra.ts).
 * - Absolute image paths (WORKDIR, COPY/ADD destinations, RUN mount targets, deferred destinations) whose `..`
 *   would climb above `/` are clamped (src/plan/image-path.ts), as `Image.plan` clamps them.
 */
import { createHash } from "node:crypto";
import { clampImagePath } from "../plan/image-path.js";
import type { Instruction, RunMount } from "../plan/instructions.js";
import { isDerivedExtra } from "../keys/step-extra.js";

/** Version of this wire format: every request names it (`format`), and it is part of every build id. */
export const WIRE_FORMAT = "strata-build/3";

/** Largest JSON body the service accepts. */
export const MAX_JSON_BYTES = 10 * 1024 * 1024;

/** One walked local entry. `path` is relative, `/`-separated, without `.`/`..` segments. */
export interface WireEntry {
  path: string;
  type: "file" | "dir" | "symlink";
  /** Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** Files: size in bytes. */
  size?: number;
  /** Files: `sha256:<hex>` of the content (the blob to upload). */
  digest?: string;
  /** Symlinks: the link target. */
  target?: string;
}

/** A place in a Dockerfile (error messages only). */
export interface WireLocation {
  file: string;
  line: number;
  column: number;
}

/**
 * A source a context `select` matched: its path relative to the context ("" for the context itself) and type; `parents`
 * for a `COPY --parents` source (`path` is then its pivot directory, whose entries below it were selected).
 */
export interface WireMatch {
  path: string;
  type: "file" | "dir";
  parents?: true;
}

/** Where a `select` picks from: the client's context (resolved by the client), a nested plan, or a registry image. */
export type WireSelectRoot =
  | { kind: "context"; source?: string }
  | { kind: "stage"; stage: string; plan: number }
  | { kind: "image"; ref: string; insecure?: boolean };

/** A step input as sent: walked entries instead of a local path (`source` is the client's path, for log text only). */
export type WireInput =
  | { kind: "dir"; name: string; source?: string; entries: WireEntry[] }
  | { kind: "file"; name: string; source?: string; entry: WireEntry }
  | { kind: "inline"; name: string; content: string; mode: number }
  /**
   * Dockerfile COPY/ADD sources and RUN bind mounts. For a context root, `matches` and `entries` (sorted, unique paths;
   * a path's listed ancestors are directories) are the client's selection; other roots have neither and are resolved
   * by the server with `patterns`, `exclude` and `parents`.
   */
  | {
      kind: "select";
      name: string;
      root: WireSelectRoot;
      patterns: string[];
      exclude?: string[];
      parents?: boolean;
      location?: WireLocation;
      matches?: WireMatch[];
      entries?: WireEntry[];
      /** context root: sources the client matched but `--exclude` dropped by name (no entries; they make COPY's destination) */
      excluded?: WireMatch[];
    }
  | { kind: "url"; name: string; url: string; checksum?: string; location?: WireLocation; help?: string }
  /** Nested plans (indexes into {@link BuildRequest.plans}) built before the step reads anything. */
  | { kind: "stages"; name: string; plans: number[] };

/**
 * Where a chain starts, as a client names it. A `debian` base is only a Python series of the request's builder version:
 * the server derives its recipe from `builders/<version>.json`.
 */
export type WireBase =
  | { kind: "scratch" }
  | { kind: "debian"; python: string }
  | { kind: "registry"; ref: string; insecure?: boolean }
  | { kind: "image"; imageId: string };

export interface WireStep {
  method: string;
  description: string;
  base?: WireBase;
  instructions: Instruction[];
  inputs: WireInput[];
  /** Secret names (values travel in {@link BuildRequest.secrets}, or the nested plan's `secrets`). */
  secrets: string[];
  /** `false` for Dockerfile steps: secrets reach a RUN only through `--mount=type=secret`. */
  secretsAsEnv?: boolean;
  env: Record<string, string>;
  /** Dockerfile build args the step depends on (keyed). */
  buildArgs?: [string, string][];
  /** Proxy build args for a RUN's environment (not keyed, as BuildKit's ProxyEnv). */
  proxyEnv?: [string, string][];
  forceBuild: boolean;
  timeoutMs?: number;
  extra: [string, string][];
}

/** A nested plan (a Dockerfile stage other steps read), built by the server when a step needs it. */
export interface WirePlan {
  builderVersion: string;
  steps: WireStep[];
  /** Secret values per step (as {@link BuildRequest.secrets}); never part of the build id. */
  secrets?: (Record<string, string> | null)[];
}

/** A `copy: false` local file or directory (built as the final step). */
export interface WireDeferred {
  kind: "dir" | "file";
  source?: string;
  remotePath: string;
  ignore: string[];
  entries: WireEntry[];
}

export interface BuildRequest {
  /** The wire format ({@link WIRE_FORMAT}); a request without it comes from an older client. */
  format: typeof WIRE_FORMAT;
  builderVersion: string;
  steps: WireStep[];
  deferred: WireDeferred[];
  /** Nested plans, referred to by index from `stage` select roots and `stages` inputs (and from later plans only). */
  plans?: WirePlan[];
  /** Secret values per step (index-aligned with `steps`; `null`/missing for a step without secrets). */
  secrets?: (Record<string, string> | null)[];
  forceBuild?: boolean;
  ignoreCache?: boolean;
  /** Name under which the build is remembered for `strata explain` on the server. */
  chainName?: string;
  /** Resource limits the client asks for its RUN steps; the service caps them at its maximum (a step fails above it). */
  limits?: { memoryBytes?: number; pids?: number; cpus?: number };
}

export type BuildStatus = "queued" | "building" | "succeeded" | "failed" | "timeout" | "terminated";

export const FINISHED: ReadonlySet<BuildStatus> = new Set(["succeeded", "failed", "timeout", "terminated"]);

export interface WireStepResult {
  index: number;
  description: string;
  cached: boolean;
  seconds: number;
  key: string;
  imageId: string;
  layer?: string;
}

export interface WireFailure {
  /** The error's stable code (`STEP_FAILED`, `INVALID_DEFINITION`, `INTERNAL`, …). */
  code: string;
  message: string;
  step?: number;
  description?: string;
  command?: string;
  exitCode?: number | null;
  logTail?: string[];
  durationMs?: number;
  timedOut?: boolean;
  /** The timeout that applied (ms), for a step that timed out. */
  timeoutMs?: number;
  /** The resource limit a step hit, in words. */
  limit?: string;
}

export interface WireResult {
  imageId: string;
  steps: WireStepResult[];
}

/** `POST /v1/images` response. `result` is set when the build had already finished successfully. */
export interface CreateResponse {
  buildId: string;
  status: BuildStatus;
  imageId?: string;
  /** True when this request joined a build that was already queued, running or finished. */
  joined: boolean;
  result?: WireResult;
}

/** `GET /v1/images/:id` response for a build id. */
export interface BuildInfo {
  buildId: string;
  status: BuildStatus;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  forceBuild: boolean;
  ignoreCache: boolean;
  steps: { index: number; description: string }[];
  /** Cursor of the newest log line. */
  lastCursor: number;
  result?: WireResult;
  failure?: WireFailure;
  /** For a succeeded build: the final image as stored. */
  image?: ImageInfo;
}

export interface ImageInfo {
  imageId: string;
  manifestDigest: string;
  config: unknown;
  layers: { digest: string; diffId: string; size: number; mediaType: string }[];
  parent?: string;
}

/** Error body of every 4xx/5xx response. */
export interface ErrorBody {
  error: { code: string; message: string; missing?: string[] };
}

// ---------------------------------------------------------------------------------------------------------------
// Validation

/** A request that does not match the schema; the message names the offending field. */
export class WireError extends Error {
  constructor(
    message: string,
    readonly status = 400,
    readonly code = "BAD_REQUEST",
  ) {
    super(message);
    this.name = "WireError";
  }
}

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const INPUT_NAME_RE = /^[A-Za-z0-9_.-]{1,128}$/;

/** Limits on a request's shape (besides the byte size of its JSON). */
export const LIMITS = {
  steps: 1000,
  instructionsPerStep: 1000,
  inputsPerStep: 64,
  entries: 1_000_000,
  pathBytes: 4096,
  stringBytes: 1024 * 1024,
  deferred: 256,
  /** Nested plans (Dockerfile stages read by other steps). */
  plans: 256,
  /** Patterns (and excludes) of one select input, and the bytes of each. */
  patterns: 1000,
  patternBytes: 4096,
  urlBytes: 8192,
} as const;

type Obj = Record<string, unknown>;

function fail(where: string, what: string): never {
  throw new WireError(`${where}: ${what}`);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  return typeof v === "object" ? "an object" : `${typeof v} ${String(v)}`;
}

function obj(v: unknown, where: string, allowed: readonly string[]): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(where, `expected an object, got ${describe(v)}`);
  for (const k of Object.keys(v))
    if (!allowed.includes(k)) fail(where, `unknown field "${k}" (allowed: ${allowed.join(", ")})`);
  return v as Obj;
}

function str(v: unknown, where: string, maxBytes: number = LIMITS.stringBytes): string {
  if (typeof v !== "string") fail(where, `expected a string, got ${describe(v)}`);
  if (v.length > maxBytes) fail(where, `longer than ${maxBytes} characters`);
  if (v.includes("\0")) fail(where, "contains a NUL character");
  return v;
}

function optStr(v: unknown, where: string, maxBytes?: number): string | undefined {
  return v === undefined ? undefined : str(v, where, maxBytes);
}

function bool(v: unknown, where: string): boolean {
  if (typeof v !== "boolean") fail(where, `expected true or false, got ${describe(v)}`);
  return v;
}

function optBool(v: unknown, where: string): boolean | undefined {
  return v === undefined ? undefined : bool(v, where);
}

function int(v: unknown, where: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    fail(where, `expected an integer from ${min} to ${max}, got ${describe(v)}`);
  return v;
}

function arr(v: unknown, where: string, max: number): unknown[] {
  if (!Array.isArray(v)) fail(where, `expected an array, got ${describe(v)}`);
  if (v.length > max) fail(where, `more than ${max} items`);
  return v;
}

function strArray(v: unknown, where: string, max = 10_000): string[] {
  return arr(v, where, max).map((x, i) => str(x, `${where}[${i}]`));
}

function pairs(v: unknown, where: string): [string, string][] {
  return arr(v, where, 10_000).map((p, i) => {
    const a = arr(p, `${where}[${i}]`, 2);
    if (a.length !== 2) fail(`${where}[${i}]`, "expected a [name, value] pair");
    return [str(a[0], `${where}[${i}][0]`), str(a[1], `${where}[${i}][1]`)];
  });
}

function strRecord(v: unknown, where: string, keyRe?: RegExp): Record<string, string> {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    fail(where, `expected an object of strings, got ${describe(v)}`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (keyRe && !keyRe.test(k)) fail(where, `"${k}" is not a valid variable name`);
    out[k] = str(val, `${where}.${k}`);
  }
  return out;
}

function oneOf<T extends string>(v: unknown, where: string, options: readonly T[]): T {
  if (typeof v !== "string" || !options.includes(v as T))
    fail(where, `expected one of ${options.join(", ")}, got ${describe(v)}`);
  return v as T;
}

/** A relative entry path: `/`-separated segments, none empty, `.` or `..`; never absolute. */
export function checkRelPath(p: unknown, where: string): string {
  const s = str(p, where, LIMITS.pathBytes);
  if (s === "") fail(where, "empty path");
  if (s.startsWith("/")) fail(where, `path ${JSON.stringify(s)} is absolute; entry paths are relative to their input`);
  for (const seg of s.split("/")) {
    if (seg === "..") fail(where, `path ${JSON.stringify(s)} contains ".."`);
    if (seg === "" || seg === ".") fail(where, `path ${JSON.stringify(s)} has an empty or "." segment`);
  }
  return s;
}

/** An absolute image path; one whose `..` would climb above `/` is cleaned (`/../../x` → `/x`), as `Image.plan` does. */
function absImagePath(v: unknown, where: string): string {
  const s = str(v, where, LIMITS.pathBytes);
  if (!s.startsWith("/")) fail(where, `expected an absolute path in the image, got ${JSON.stringify(s)}`);
  return clampImagePath(s);
}

function entry(v: unknown, where: string): WireEntry {
  const o = obj(v, where, ["path", "type", "mode", "uid", "gid", "size", "digest", "target"]);
  const path = checkRelPath(o.path, `${where}.path`);
  const type = oneOf(o.type, `${where}.type`, ["file", "dir", "symlink"] as const);
  const e: WireEntry = {
    path,
    type,
    mode: int(o.mode, `${where}.mode`, 0, 0o7777),
    uid: int(o.uid, `${where}.uid`, 0, 0xfffffffe),
    gid: int(o.gid, `${where}.gid`, 0, 0xfffffffe),
  };
  if (type === "file") {
    e.size = int(o.size, `${where}.size`, 0, Number.MAX_SAFE_INTEGER);
    const d = str(o.digest, `${where}.digest`, 80);
    if (!DIGEST_RE.test(d)) fail(`${where}.digest`, `expected sha256:<64 lowercase hex digits>, got ${describe(d)}`);
    e.digest = d;
    if (o.target !== undefined) fail(`${where}.target`, "only symlinks have a target");
  } else if (type === "symlink") {
    const t = str(o.target, `${where}.target`, LIMITS.pathBytes);
    if (t === "") fail(`${where}.target`, "empty symlink target");
    e.target = t;
    if (o.digest !== undefined || o.size !== undefined)
      fail(where, "a symlink has no size or digest (its target is sent instead)");
  } else if (o.digest !== undefined || o.size !== undefined || o.target !== undefined) {
    fail(where, "a directory has no size, digest or target");
  }
  return e;
}

/** Entries within the request's budget, each path listed once; with the type of each path. */
function uniqueEntries(
  v: unknown,
  where: string,
  budget: { left: number },
): { out: WireEntry[]; types: Map<string, WireEntry["type"]> } {
  const list = arr(v, where, LIMITS.entries);
  budget.left -= list.length;
  if (budget.left < 0) fail(where, `more than ${LIMITS.entries} entries in the request`);
  const out = list.map((e, i) => entry(e, `${where}[${i}]`));
  const types = new Map<string, WireEntry["type"]>();
  for (const e of out) {
    if (types.has(e.path)) fail(where, `path ${JSON.stringify(e.path)} is listed twice`);
    types.set(e.path, e.type);
  }
  return { out, types };
}

/** Validates a tree's entries: unique paths, every parent listed as a directory. Returns them sorted bytewise. */
function entries(v: unknown, where: string, budget: { left: number }): WireEntry[] {
  const { out, types } = uniqueEntries(v, where, budget);
  for (const e of out) {
    const slash = e.path.lastIndexOf("/");
    if (slash < 0) continue;
    const parent = e.path.slice(0, slash);
    if (types.get(parent) !== "dir")
      fail(
        where,
        `the parent directory ${JSON.stringify(parent)} of ${JSON.stringify(e.path)} is not listed as a directory`,
      );
  }
  return sortEntries(out);
}

/** Sorts entries bytewise by path (the order a context walk produces). */
export function sortEntries(list: WireEntry[]): WireEntry[] {
  return list
    .map((e) => ({ k: Buffer.from(e.path, "utf8"), e }))
    .sort((a, b) => Buffer.compare(a.k, b.k))
    .map((x) => x.e);
}

function optInt(v: unknown, where: string, min: number, max: number): number | undefined {
  return v === undefined ? undefined : int(v, where, min, max);
}

/**
 * A path in the image: absolute, or (Dockerfile steps) relative to the WORKDIR. An absolute one is clamped like
 * {@link absImagePath}; a relative one is resolved when the step runs, where `..` stops at `/` too.
 */
function imagePath(v: unknown, where: string, absolute: boolean): string {
  if (absolute) return absImagePath(v, where);
  const s = str(v, where, LIMITS.pathBytes);
  if (s === "") fail(where, "empty path");
  return clampImagePath(s);
}

/** A cache or secret mount's optional `mode`, `uid` and `gid`, onto `m`. */
function ownership(o: Obj, where: string, m: { mode?: number; uid?: number; gid?: number }): void {
  const mode = optInt(o.mode, `${where}.mode`, 0, 0o7777);
  if (mode !== undefined) m.mode = mode;
  const uid = optInt(o.uid, `${where}.uid`, 0, 0xfffffffe);
  if (uid !== undefined) m.uid = uid;
  const gid = optInt(o.gid, `${where}.gid`, 0, 0xfffffffe);
  if (gid !== undefined) m.gid = gid;
}

function mount(v: unknown, where: string): RunMount {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    fail(where, `expected a mount object, got ${describe(v)}`);
  const type = oneOf((v as Obj).type, `${where}.type`, ["bind", "cache", "secret", "tmpfs"] as const);
  switch (type) {
    case "bind": {
      const o = obj(v, where, ["type", "source", "target", "readonly"]);
      return {
        type: "bind",
        source: str(o.source, `${where}.source`, 256),
        target: imagePath(o.target, `${where}.target`, false),
        readonly: bool(o.readonly, `${where}.readonly`),
      };
    }
    case "cache": {
      const o = obj(v, where, ["type", "id", "target", "sharing", "readonly", "mode", "uid", "gid"]);
      const m: Extract<RunMount, { type: "cache" }> = {
        type: "cache",
        id: str(o.id, `${where}.id`, LIMITS.pathBytes),
        target: imagePath(o.target, `${where}.target`, false),
        sharing: oneOf(o.sharing, `${where}.sharing`, ["shared", "private", "locked"] as const),
      };
      if (m.id === "") fail(`${where}.id`, "empty cache id");
      const readonly = optBool(o.readonly, `${where}.readonly`);
      if (readonly !== undefined) m.readonly = readonly;
      ownership(o, where, m);
      return m;
    }
    case "secret": {
      const o = obj(v, where, ["type", "id", "target", "env", "required", "mode", "uid", "gid"]);
      const id = str(o.id, `${where}.id`, 256);
      if (!NAME_RE.test(id)) fail(`${where}.id`, `"${id}" is not a valid secret name`);
      const m: Extract<RunMount, { type: "secret" }> = { type: "secret", id };
      if (o.target !== undefined) m.target = imagePath(o.target, `${where}.target`, false);
      if (o.env !== undefined) {
        m.env = str(o.env, `${where}.env`, 256);
        if (!NAME_RE.test(m.env)) fail(`${where}.env`, `"${m.env}" is not a valid variable name`);
      }
      const required = optBool(o.required, `${where}.required`);
      if (required !== undefined) m.required = required;
      ownership(o, where, m);
      return m;
    }
    case "tmpfs": {
      const o = obj(v, where, ["type", "target", "size"]);
      const m: Extract<RunMount, { type: "tmpfs" }> = {
        type: "tmpfs",
        target: imagePath(o.target, `${where}.target`, false),
      };
      const size = optInt(o.size, `${where}.size`, 0, Number.MAX_SAFE_INTEGER);
      if (size !== undefined) m.size = size;
      return m;
    }
  }
}

function argv(v: unknown, where: string): string[] {
  return strArray(v, where, 10_000);
}

const COPY_FIELDS = [
  "op",
  "source",
  "dest",
  "sources",
  "inputs",
  "from",
  "chown",
  "chmod",
  "link",
  "exclude",
  "parents",
] as const;

/** COPY/ADD: the SDK form (`source` input, absolute `dest`) or the Dockerfile form (`sources` as written, more inputs, flags). */
function copyInstruction(o: Obj, op: "COPY" | "ADD", where: string): Instruction {
  const dockerfile = o.sources !== undefined;
  const ins: Extract<Instruction, { op: "COPY" }> = {
    op: "COPY",
    source: str(o.source, `${where}.source`, 256),
    dest: imagePath(o.dest, `${where}.dest`, !dockerfile),
  };
  if (dockerfile)
    ins.sources = strArray(o.sources, `${where}.sources`, LIMITS.patterns).map((x, i) =>
      str(x, `${where}.sources[${i}]`, LIMITS.patternBytes),
    );
  if (o.inputs !== undefined)
    ins.inputs = strArray(o.inputs, `${where}.inputs`, LIMITS.inputsPerStep).map((x, i) =>
      str(x, `${where}.inputs[${i}]`, 256),
    );
  const from = optStr(o.from, `${where}.from`, 2048);
  if (from !== undefined) ins.from = from;
  const chown = optStr(o.chown, `${where}.chown`, 256);
  if (chown !== undefined) ins.chown = chown;
  const chmod = optStr(o.chmod, `${where}.chmod`, 256);
  if (chmod !== undefined) ins.chmod = chmod;
  const link = optBool(o.link, `${where}.link`);
  if (link !== undefined) ins.link = link;
  if (o.exclude !== undefined) ins.exclude = patternList(o.exclude, `${where}.exclude`);
  const parents = optBool(o.parents, `${where}.parents`);
  if (parents !== undefined) ins.parents = parents;
  if (!dockerfile) {
    for (const k of ["inputs", "from", "chown", "chmod", "link", "exclude", "parents"] as const) {
      if (o[k] !== undefined) fail(`${where}.${k}`, `only a Dockerfile ${op} (with "sources") has this field`);
    }
  }
  if (op === "COPY") return ins;
  const add: Extract<Instruction, { op: "ADD" }> = { ...ins, op: "ADD" };
  const unpack = optBool(o.unpack, `${where}.unpack`);
  if (unpack !== undefined) add.unpack = unpack;
  const checksum = optStr(o.checksum, `${where}.checksum`, 256);
  if (checksum !== undefined) add.checksum = checksum;
  return add;
}

const OPS = [
  "RUN",
  "COPY",
  "ADD",
  "ENV",
  "WORKDIR",
  "USER",
  "ENTRYPOINT",
  "CMD",
  "SHELL",
  "LABEL",
  "ARG",
  "EXPOSE",
  "VOLUME",
  "STOPSIGNAL",
  "HEALTHCHECK",
  "ONBUILD",
  "MAINTAINER",
] as const;

function instruction(v: unknown, where: string): Instruction {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    fail(where, `expected an instruction object, got ${describe(v)}`);
  const op = oneOf((v as Obj).op, `${where}.op`, OPS);
  switch (op) {
    case "RUN": {
      const o = obj(v, where, ["op", "command", "mounts", "network"]);
      const command = Array.isArray(o.command)
        ? argv(o.command, `${where}.command`)
        : str(o.command, `${where}.command`);
      const ins: Extract<Instruction, { op: "RUN" }> = { op: "RUN", command };
      if (o.mounts !== undefined)
        ins.mounts = arr(o.mounts, `${where}.mounts`, 64).map((m, i) => mount(m, `${where}.mounts[${i}]`));
      if (o.network !== undefined) ins.network = oneOf(o.network, `${where}.network`, ["host", "none"] as const);
      return ins;
    }
    case "COPY":
      return copyInstruction(obj(v, where, COPY_FIELDS), "COPY", where);
    case "ADD":
      return copyInstruction(obj(v, where, [...COPY_FIELDS, "unpack", "checksum"]), "ADD", where);
    case "ENV": {
      const o = obj(v, where, ["op", "vars"]);
      return { op: "ENV", vars: pairs(o.vars, `${where}.vars`) };
    }
    case "WORKDIR": {
      const o = obj(v, where, ["op", "path", "create"]);
      const create = optBool(o.create, `${where}.create`);
      // A Dockerfile WORKDIR may be relative to the previous one.
      const ins: Extract<Instruction, { op: "WORKDIR" }> = {
        op: "WORKDIR",
        path: imagePath(o.path, `${where}.path`, create === undefined),
      };
      if (create !== undefined) ins.create = create;
      return ins;
    }
    case "USER": {
      const o = obj(v, where, ["op", "user"]);
      return { op: "USER", user: str(o.user, `${where}.user`, 256) };
    }
    case "ENTRYPOINT": {
      const o = obj(v, where, ["op", "argv", "keepCmd", "shell"]);
      const ins: Extract<Instruction, { op: "ENTRYPOINT" }> = { op: "ENTRYPOINT", argv: argv(o.argv, `${where}.argv`) };
      if (o.keepCmd !== undefined) ins.keepCmd = bool(o.keepCmd, `${where}.keepCmd`);
      if (o.shell !== undefined) ins.shell = bool(o.shell, `${where}.shell`);
      return ins;
    }
    case "CMD": {
      const o = obj(v, where, ["op", "argv", "shell"]);
      const ins: Extract<Instruction, { op: "CMD" }> = { op: "CMD", argv: argv(o.argv, `${where}.argv`) };
      if (o.shell !== undefined) ins.shell = bool(o.shell, `${where}.shell`);
      return ins;
    }
    case "SHELL": {
      const o = obj(v, where, ["op", "argv"]);
      return { op, argv: argv(o.argv, `${where}.argv`) };
    }
    case "LABEL": {
      const o = obj(v, where, ["op", "labels"]);
      return { op: "LABEL", labels: pairs(o.labels, `${where}.labels`) };
    }
    case "ARG": {
      const o = obj(v, where, ["op", "names"]);
      return {
        op: "ARG",
        names: strArray(o.names, `${where}.names`, 1000).map((n, i) => str(n, `${where}.names[${i}]`, 256)),
      };
    }
    case "EXPOSE": {
      const o = obj(v, where, ["op", "ports"]);
      return {
        op: "EXPOSE",
        ports: strArray(o.ports, `${where}.ports`, 1000).map((n, i) => str(n, `${where}.ports[${i}]`, 64)),
      };
    }
    case "VOLUME": {
      const o = obj(v, where, ["op", "paths"]);
      return {
        op: "VOLUME",
        paths: strArray(o.paths, `${where}.paths`, 1000).map((n, i) =>
          str(n, `${where}.paths[${i}]`, LIMITS.pathBytes),
        ),
      };
    }
    case "STOPSIGNAL": {
      const o = obj(v, where, ["op", "signal"]);
      return { op: "STOPSIGNAL", signal: str(o.signal, `${where}.signal`, 64) };
    }
    case "HEALTHCHECK": {
      const o = obj(v, where, ["op", "test", "interval", "timeout", "startPeriod", "startInterval", "retries"]);
      const ins: Extract<Instruction, { op: "HEALTHCHECK" }> = {
        op: "HEALTHCHECK",
        test: argv(o.test, `${where}.test`),
      };
      for (const k of ["interval", "timeout", "startPeriod", "startInterval", "retries"] as const) {
        const n = optInt(o[k], `${where}.${k}`, 0, Number.MAX_SAFE_INTEGER);
        if (n !== undefined) ins[k] = n;
      }
      return ins;
    }
    case "ONBUILD": {
      const o = obj(v, where, ["op", "expression"]);
      const expression = optStr(o.expression, `${where}.expression`, 64 * 1024);
      return expression === undefined ? { op: "ONBUILD" } : { op: "ONBUILD", expression };
    }
    case "MAINTAINER": {
      const o = obj(v, where, ["op", "name"]);
      return { op: "MAINTAINER", name: str(o.name, `${where}.name`, 1024) };
    }
  }
}

function base(v: unknown, where: string): WireBase {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    fail(where, `expected a base object, got ${describe(v)}`);
  const kind = oneOf((v as Obj).kind, `${where}.kind`, ["scratch", "debian", "registry", "image"] as const);
  switch (kind) {
    case "scratch":
      obj(v, where, ["kind"]);
      return { kind: "scratch" };
    case "debian": {
      // The recipe is the server's (builders/<version>.json): a client names the Python series and nothing else.
      const o = obj(v, where, ["kind", "python"]);
      const python = str(o.python, `${where}.python`, 32);
      if (!/^[0-9]+\.[0-9]+$/.test(python))
        fail(`${where}.python`, `expected a Python series such as "3.11", got ${describe(python)}`);
      return { kind: "debian", python };
    }
    case "registry": {
      const o = obj(v, where, ["kind", "ref", "insecure"]);
      const b: WireBase = { kind: "registry", ref: str(o.ref, `${where}.ref`, 2048) };
      const insecure = optBool(o.insecure, `${where}.insecure`);
      if (insecure !== undefined) b.insecure = insecure;
      return b;
    }
    case "image": {
      const o = obj(v, where, ["kind", "imageId"]);
      return { kind: "image", imageId: str(o.imageId, `${where}.imageId`, 80) };
    }
  }
}

/** Where a step may refer to nested plans: indexes below `plans` (earlier plans only, so references never cycle). */
interface Scope {
  budget: { left: number };
  plans: number;
}

function patternList(v: unknown, where: string): string[] {
  return arr(v, where, LIMITS.patterns).map((x, i) => str(x, `${where}[${i}]`, LIMITS.patternBytes));
}

function location(v: unknown, where: string): WireLocation {
  const o = obj(v, where, ["file", "line", "column"]);
  return {
    file: str(o.file, `${where}.file`, LIMITS.pathBytes),
    line: int(o.line, `${where}.line`, 0, 1e9),
    column: int(o.column, `${where}.column`, 0, 1e9),
  };
}

function planRef(v: unknown, where: string, scope: Scope): number {
  if (scope.plans === 0)
    fail(where, 'no nested plan can be named here (a plan may only name plans listed before it in "plans")');
  return int(v, where, 0, scope.plans - 1);
}

function selectRoot(v: unknown, where: string, scope: Scope): WireSelectRoot {
  if (typeof v !== "object" || v === null || Array.isArray(v))
    fail(where, `expected a select root object, got ${describe(v)}`);
  const kind = oneOf((v as Obj).kind, `${where}.kind`, ["context", "stage", "image"] as const);
  switch (kind) {
    case "context": {
      const o = obj(v, where, ["kind", "source"]);
      const source = optStr(o.source, `${where}.source`, LIMITS.pathBytes);
      return source === undefined ? { kind: "context" } : { kind: "context", source };
    }
    case "stage": {
      const o = obj(v, where, ["kind", "stage", "plan"]);
      return {
        kind: "stage",
        stage: str(o.stage, `${where}.stage`, 256),
        plan: planRef(o.plan, `${where}.plan`, scope),
      };
    }
    case "image": {
      const o = obj(v, where, ["kind", "ref", "insecure"]);
      const ref = str(o.ref, `${where}.ref`, 2048);
      if (ref === "") fail(`${where}.ref`, "empty image reference");
      const insecure = optBool(o.insecure, `${where}.insecure`);
      return insecure === undefined ? { kind: "image", ref } : { kind: "image", ref, insecure };
    }
  }
}

/**
 * A context selection's entries: unique paths, and a listed ancestor of a path is a directory (ancestors need not be
 * listed: a glob's matches come without their parents). Returns them sorted bytewise.
 */
function selectionEntries(v: unknown, where: string, budget: { left: number }): WireEntry[] {
  const { out, types } = uniqueEntries(v, where, budget);
  for (const e of out) {
    for (let slash = e.path.lastIndexOf("/"); slash > 0; slash = e.path.lastIndexOf("/", slash - 1)) {
      const t = types.get(e.path.slice(0, slash));
      if (t !== undefined && t !== "dir")
        fail(
          where,
          `${JSON.stringify(e.path)} is below ${JSON.stringify(e.path.slice(0, slash))}, which is a ${t}, not a directory`,
        );
    }
  }
  return sortEntries(out);
}

/** The parent directories of `entries` that are not listed themselves (the server makes them to hold the tree). */
export function unlistedParents(entries: readonly WireEntry[]): string[] {
  const listed = new Set(entries.map((e) => e.path));
  const out = new Set<string>();
  for (const e of entries) {
    for (let slash = e.path.lastIndexOf("/"); slash > 0; slash = e.path.lastIndexOf("/", slash - 1)) {
      const p = e.path.slice(0, slash);
      if (!listed.has(p)) out.add(p);
    }
  }
  return [...out].sort();
}

const under = (p: string, dir: string) => dir === "" || p.startsWith(dir + "/");

function contextSelection(
  o: Obj,
  where: string,
  budget: { left: number },
  parents: boolean,
): { matches: WireMatch[]; entries: WireEntry[] } {
  const entries = selectionEntries(o.entries, `${where}.entries`, budget);
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const matches = arr(o.matches, `${where}.matches`, LIMITS.entries).map((m, i): WireMatch => {
    const w = `${where}.matches[${i}]`;
    const mo = obj(m, w, ["path", "type", "parents"]);
    const path = mo.path === "" ? "" : checkRelPath(mo.path, `${w}.path`);
    const type = oneOf(mo.type, `${w}.type`, ["file", "dir"] as const);
    const p = optBool(mo.parents, `${w}.parents`);
    if (Boolean(p) !== parents)
      fail(
        `${w}.parents`,
        parents
          ? "every match of a --parents selection is a pivot (parents: true)"
          : "only a --parents selection has pivot matches",
      );
    if (p) {
      if (type !== "dir") fail(`${w}.type`, "a --parents pivot is a directory");
    } else if (path === "") {
      if (type !== "dir") fail(`${w}.type`, "the context itself is a directory");
    } else if (byPath.get(path)?.type !== type) {
      fail(`${w}.path`, `the matched ${type} ${JSON.stringify(path)} is not listed as a ${type} in the entries`);
    }
    return p ? { path, type, parents: true } : { path, type };
  });
  // Every entry belongs to a match (is it, or is below a directory match) ...
  const dirs = matches.filter((m) => m.type === "dir").map((m) => m.path);
  const files = new Set(matches.filter((m) => m.type === "file").map((m) => m.path));
  for (const e of entries) {
    if (!files.has(e.path) && !dirs.some((d) => e.path === d || under(e.path, d)))
      fail(`${where}.entries`, `${JSON.stringify(e.path)} is not a matched source or below one`);
  }
  // ... and the directories the server adds to hold the tree are never inside a matched directory (they would be
  // selected there too, and the server's selection would differ from the client's).
  for (const p of unlistedParents(entries)) {
    const d = dirs.find((d) => under(p, d));
    if (d !== undefined)
      fail(
        `${where}.entries`,
        `directory ${JSON.stringify(p)} is below the matched directory ${JSON.stringify(d || ".")} but not listed`,
      );
  }
  return { matches, entries };
}

function input(v: unknown, where: string, scope: Scope): WireInput {
  const budget = scope.budget;
  if (typeof v !== "object" || v === null || Array.isArray(v))
    fail(where, `expected an input object, got ${describe(v)}`);
  const kind = oneOf((v as Obj).kind, `${where}.kind`, ["dir", "file", "inline", "select", "url", "stages"] as const);
  const name = (o: Obj) => {
    const n = str(o.name, `${where}.name`, 128);
    if (!INPUT_NAME_RE.test(n) && !(kind !== "dir" && kind !== "file" && /^<<[A-Za-z0-9_.-]{1,126}$/.test(n)))
      fail(`${where}.name`, `"${n}" is not a valid input name`);
    if (n === "." || n === "..")
      fail(`${where}.name`, `"${n}" is not a valid input name (it names a directory, not an input)`);
    return n;
  };
  switch (kind) {
    case "dir": {
      const o = obj(v, where, ["kind", "name", "source", "entries"]);
      const i: WireInput = { kind: "dir", name: name(o), entries: entries(o.entries, `${where}.entries`, budget) };
      const source = optStr(o.source, `${where}.source`, LIMITS.pathBytes);
      if (source !== undefined) i.source = source;
      return i;
    }
    case "file": {
      const o = obj(v, where, ["kind", "name", "source", "entry"]);
      const e = entry(o.entry, `${where}.entry`);
      if (e.type !== "file") fail(`${where}.entry.type`, `a file input's entry must be a regular file, got ${e.type}`);
      if (e.path.includes("/"))
        fail(`${where}.entry.path`, `a file input's entry path is the file's name, got ${JSON.stringify(e.path)}`);
      budget.left -= 1;
      const i: WireInput = { kind: "file", name: name(o), entry: e };
      const source = optStr(o.source, `${where}.source`, LIMITS.pathBytes);
      if (source !== undefined) i.source = source;
      return i;
    }
    case "inline": {
      const o = obj(v, where, ["kind", "name", "content", "mode"]);
      return {
        kind: "inline",
        name: name(o),
        content: str(o.content, `${where}.content`, MAX_JSON_BYTES),
        mode: int(o.mode, `${where}.mode`, 0, 0o7777),
      };
    }
    case "select": {
      const o = obj(v, where, [
        "kind",
        "name",
        "root",
        "patterns",
        "exclude",
        "parents",
        "location",
        "matches",
        "entries",
        "excluded",
      ]);
      const root = selectRoot(o.root, `${where}.root`, scope);
      const i: Extract<WireInput, { kind: "select" }> = {
        kind: "select",
        name: name(o),
        root,
        patterns: patternList(o.patterns, `${where}.patterns`),
      };
      if (i.patterns.length === 0) fail(`${where}.patterns`, "a selection needs at least one pattern");
      if (o.exclude !== undefined) i.exclude = patternList(o.exclude, `${where}.exclude`);
      const parents = optBool(o.parents, `${where}.parents`);
      if (parents !== undefined) i.parents = parents;
      if (o.location !== undefined) i.location = location(o.location, `${where}.location`);
      if (root.kind === "context") {
        const sel = contextSelection(o, where, budget, Boolean(parents));
        i.matches = sel.matches;
        i.entries = sel.entries;
        if (o.excluded !== undefined) {
          i.excluded = arr(o.excluded, `${where}.excluded`, LIMITS.entries).map((m, k): WireMatch => {
            const w = `${where}.excluded[${k}]`;
            const mo = obj(m, w, ["path", "type"]);
            return {
              path: checkRelPath(mo.path, `${w}.path`),
              type: oneOf(mo.type, `${w}.type`, ["file", "dir"] as const),
            };
          });
        }
      } else if (o.matches !== undefined || o.entries !== undefined || o.excluded !== undefined) {
        fail(
          where,
          `a selection from ${root.kind === "stage" ? "a stage" : "an image"} is resolved by the server: send no matches or entries`,
        );
      }
      return i;
    }
    case "url": {
      const o = obj(v, where, ["kind", "name", "url", "checksum", "location", "help"]);
      const url = str(o.url, `${where}.url`, LIMITS.urlBytes);
      if (!/^https?:\/\/[^/\s]/i.test(url))
        fail(`${where}.url`, `expected an http:// or https:// URL, got ${describe(url)}`);
      const i: Extract<WireInput, { kind: "url" }> = { kind: "url", name: name(o), url };
      const checksum = optStr(o.checksum, `${where}.checksum`, 256);
      if (checksum !== undefined) i.checksum = checksum;
      if (o.location !== undefined) i.location = location(o.location, `${where}.location`);
      const help = optStr(o.help, `${where}.help`, 64 * 1024);
      if (help !== undefined) i.help = help;
      return i;
    }
    case "stages": {
      const o = obj(v, where, ["kind", "name", "plans"]);
      return {
        kind: "stages",
        name: name(o),
        plans: arr(o.plans, `${where}.plans`, LIMITS.plans).map((p, i) => planRef(p, `${where}.plans[${i}]`, scope)),
      };
    }
  }
}

function step(v: unknown, where: string, first: boolean, scope: Scope): WireStep {
  const o = obj(v, where, [
    "method",
    "description",
    "base",
    "instructions",
    "inputs",
    "secrets",
    "secretsAsEnv",
    "env",
    "buildArgs",
    "proxyEnv",
    "forceBuild",
    "timeoutMs",
    "extra",
  ]);
  const s: WireStep = {
    method: str(o.method, `${where}.method`, 128),
    description: str(o.description, `${where}.description`, 64 * 1024),
    instructions: arr(o.instructions, `${where}.instructions`, LIMITS.instructionsPerStep).map((x, i) =>
      instruction(x, `${where}.instructions[${i}]`),
    ),
    inputs: arr(o.inputs, `${where}.inputs`, LIMITS.inputsPerStep).map((x, i) =>
      input(x, `${where}.inputs[${i}]`, scope),
    ),
    secrets: strArray(o.secrets, `${where}.secrets`, 256),
    // Sorted: the key sorts env entries too, so their order must not separate otherwise identical builds.
    env: Object.fromEntries(
      Object.entries(strRecord(o.env, `${where}.env`, NAME_RE)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    ),
    forceBuild: bool(o.forceBuild, `${where}.forceBuild`),
    extra: pairs(o.extra, `${where}.extra`),
  };
  for (const [i, [name]] of s.extra.entries()) {
    if (isDerivedExtra(name))
      fail(
        `${where}.extra[${i}]`,
        `"${name}" is derived by the server from what the step runs (its base, instructions and env); do not send it`,
      );
  }
  if (o.base !== undefined) s.base = base(o.base, `${where}.base`);
  if (first && !s.base)
    fail(where, "the first step must carry the base (fromScratch, debianSlim, fromRegistry or fromId)");
  if (!first && s.base) fail(`${where}.base`, "only the first step may carry a base");
  if (o.timeoutMs !== undefined) s.timeoutMs = int(o.timeoutMs, `${where}.timeoutMs`, 1, 7 * 24 * 3600 * 1000);
  const secretsAsEnv = optBool(o.secretsAsEnv, `${where}.secretsAsEnv`);
  if (secretsAsEnv !== undefined) s.secretsAsEnv = secretsAsEnv;
  if (o.buildArgs !== undefined) s.buildArgs = pairs(o.buildArgs, `${where}.buildArgs`);
  if (o.proxyEnv !== undefined) s.proxyEnv = pairs(o.proxyEnv, `${where}.proxyEnv`);
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
        fail(
          `${where}.${field}`,
          `a debian base step carries only its Python series: the server derives the rest from builders/<version>.json; send an empty ${field}`,
        );
    }
  }
  for (const n of s.secrets) if (!NAME_RE.test(n)) fail(`${where}.secrets`, `"${n}" is not a valid secret name`);
  if (new Set(s.secrets).size !== s.secrets.length) fail(`${where}.secrets`, "a secret name is listed twice");
  const names = s.inputs.map((i) => i.name);
  if (new Set(names).size !== names.length) fail(`${where}.inputs`, "two inputs have the same name");
  return s;
}

/** Secret values per step, matching each step's declared names. */
function stepSecrets(
  v: unknown,
  where: string,
  steps: WireStep[],
  stepsWhere: string,
): (Record<string, string> | null)[] | undefined {
  const list =
    v === undefined
      ? undefined
      : arr(v, where, steps.length).map((s, i) => (s === null ? null : strRecord(s, `${where}[${i}]`, NAME_RE)));
  for (const [i, s] of steps.entries()) {
    const given = Object.keys(list?.[i] ?? {}).sort();
    const names = [...s.secrets].sort();
    if (given.join("\0") !== names.join("\0")) {
      fail(
        `${where}[${i}]`,
        `values given for [${given.join(", ")}] but ${stepsWhere === "steps" ? "step " + i : `${stepsWhere}[${i}]`} declares secrets [${names.join(", ")}]`,
      );
    }
  }
  return list;
}

function builderVersionName(v: unknown, where: string): string {
  const b = str(v, where, 64);
  if (!/^[A-Za-z0-9._-]+$/.test(b)) fail(where, `"${b}" is not a builder version name`);
  return b;
}

function nestedPlan(v: unknown, where: string, scope: Scope, stepBudget: { left: number }): WirePlan {
  const o = obj(v, where, ["builderVersion", "steps", "secrets"]);
  const stepsIn = arr(o.steps, `${where}.steps`, LIMITS.steps);
  if (stepsIn.length === 0) fail(`${where}.steps`, "a plan needs at least one step (its base)");
  stepBudget.left -= stepsIn.length;
  if (stepBudget.left < 0) fail(`${where}.steps`, `more than ${LIMITS.steps} steps in the request`);
  const steps = stepsIn.map((s, i) => step(s, `${where}.steps[${i}]`, i === 0, scope));
  const p: WirePlan = { builderVersion: builderVersionName(o.builderVersion, `${where}.builderVersion`), steps };
  const secrets = stepSecrets(o.secrets, `${where}.secrets`, steps, `${where}.steps`);
  if (secrets) p.secrets = secrets;
  return p;
}

function deferred(v: unknown, where: string, budget: { left: number }): WireDeferred {
  const o = obj(v, where, ["kind", "source", "remotePath", "ignore", "entries"]);
  const d: WireDeferred = {
    kind: oneOf(o.kind, `${where}.kind`, ["dir", "file"] as const),
    remotePath: absImagePath(o.remotePath, `${where}.remotePath`),
    ignore: strArray(o.ignore, `${where}.ignore`),
    entries: entries(o.entries, `${where}.entries`, budget),
  };
  const source = optStr(o.source, `${where}.source`, LIMITS.pathBytes);
  if (source !== undefined) d.source = source;
  if (
    d.kind === "file" &&
    (d.entries.length !== 1 || d.entries[0]!.type !== "file" || d.entries[0]!.path.includes("/"))
  ) {
    fail(`${where}.entries`, "a file mount has exactly one regular-file entry named after the file");
  }
  return d;
}

/** Validates a parsed `POST /v1/images` body. Throws {@link WireError} naming the first offending field. */
export function parseBuildRequest(v: unknown): BuildRequest {
  const o = obj(v, "request", [
    "format",
    "builderVersion",
    "steps",
    "deferred",
    "plans",
    "secrets",
    "forceBuild",
    "ignoreCache",
    "chainName",
    "limits",
  ]);
  if (o.format === undefined) {
    fail(
      "format",
      `missing: this server speaks ${WIRE_FORMAT}, and a request without "format" comes from an older Strata client (strata-build/2 or earlier, whose debian bases sent their own recipe); upgrade the client to this server's release`,
    );
  }
  if (o.format !== WIRE_FORMAT)
    fail(
      "format",
      `${describe(o.format)} is not a request format this server speaks (${WIRE_FORMAT}); use a Strata client of the same release as the server`,
    );
  const budget = { left: LIMITS.entries };
  const stepBudget = { left: LIMITS.steps };
  const builderVersion = builderVersionName(o.builderVersion, "builderVersion");
  const plans: WirePlan[] = [];
  if (o.plans !== undefined) {
    for (const [i, p] of arr(o.plans, "plans", LIMITS.plans).entries()) {
      const plan = nestedPlan(p, `plans[${i}]`, { budget, plans: i }, stepBudget);
      if (plan.builderVersion !== builderVersion)
        fail(`plans[${i}].builderVersion`, `"${plan.builderVersion}" differs from the request's "${builderVersion}"`);
      plans.push(plan);
    }
  }
  const stepsIn = arr(o.steps, "steps", LIMITS.steps);
  if (stepsIn.length === 0) fail("steps", "a build needs at least one step (its base)");
  stepBudget.left -= stepsIn.length;
  if (stepBudget.left < 0) fail("steps", `more than ${LIMITS.steps} steps in the request (nested plans included)`);
  const scope = { budget, plans: plans.length };
  const steps = stepsIn.map((s, i) => step(s, `steps[${i}]`, i === 0, scope));
  const req: BuildRequest = {
    format: WIRE_FORMAT,
    builderVersion,
    steps,
    deferred:
      o.deferred === undefined
        ? []
        : arr(o.deferred, "deferred", LIMITS.deferred).map((d, i) => deferred(d, `deferred[${i}]`, budget)),
  };
  if (plans.length) req.plans = plans;
  const secrets = stepSecrets(o.secrets, "secrets", steps, "steps");
  if (secrets) req.secrets = secrets;
  requestSecretValues(req, true);
  const forceBuild = optBool(o.forceBuild, "forceBuild");
  const ignoreCache = optBool(o.ignoreCache, "ignoreCache");
  if (forceBuild !== undefined) req.forceBuild = forceBuild;
  if (ignoreCache !== undefined) req.ignoreCache = ignoreCache;
  const chainName = optStr(o.chainName, "chainName", 4096);
  if (chainName !== undefined) req.chainName = chainName;
  if (o.limits !== undefined) {
    const l = obj(o.limits, "limits", ["memoryBytes", "pids", "cpus"]);
    const limits: NonNullable<BuildRequest["limits"]> = {};
    const memoryBytes = optInt(l.memoryBytes, "limits.memoryBytes", 1, Number.MAX_SAFE_INTEGER);
    const pids = optInt(l.pids, "limits.pids", 1, 2 ** 31);
    if (memoryBytes !== undefined) limits.memoryBytes = memoryBytes;
    if (pids !== undefined) limits.pids = pids;
    if (l.cpus !== undefined) {
      if (typeof l.cpus !== "number" || !Number.isFinite(l.cpus) || l.cpus <= 0 || l.cpus > 4096)
        fail("limits.cpus", `expected a number of CPUs above 0, got ${describe(l.cpus)}`);
      limits.cpus = l.cpus;
    }
    req.limits = limits;
  }
  return req;
}

/** Validates a `POST /v1/blobs/check` body. */
export function parseBlobCheck(v: unknown): string[] {
  const o = obj(v, "request", ["digests"]);
  const list = strArray(o.digests, "digests", 1_000_000);
  for (const [i, d] of list.entries())
    if (!DIGEST_RE.test(d)) fail(`digests[${i}]`, `expected sha256:<64 lowercase hex digits>, got ${describe(d)}`);
  return list;
}

export function isDigestString(s: string): boolean {
  return DIGEST_RE.test(s);
}

// ---------------------------------------------------------------------------------------------------------------
// Identity

/** Every step of a request: its own, then those of its nested plans. */
export function allSteps(req: BuildRequest): WireStep[] {
  return [...req.steps, ...(req.plans ?? []).flatMap((p) => p.steps)];
}

/**
 * The build's secret values: every step's (and nested plan's) values, by name. One name has one value in a build; with
 * `validating`, two different values are a WireError naming both places (else the first wins: the request was validated).
 */
export function requestSecretValues(req: BuildRequest, validating = false): Record<string, string> {
  const out: Record<string, string> = {};
  const where = new Map<string, string>();
  const lists: [string, BuildRequest["secrets"]][] = [
    ["secrets", req.secrets],
    ...(req.plans ?? []).map((p, i): [string, BuildRequest["secrets"]] => [`plans[${i}].secrets`, p.secrets]),
  ];
  for (const [at, list] of lists) {
    for (const [i, values] of (list ?? []).entries()) {
      for (const [name, value] of Object.entries(values ?? {})) {
        if (!Object.hasOwn(out, name)) {
          out[name] = value;
          where.set(name, `${at}[${i}]`);
        } else if (out[name] !== value && validating) {
          fail(
            `${at}[${i}].${name}`,
            `secret ${name} has another value than at ${where.get(name)}; a build has one value per secret name`,
          );
        }
      }
    }
  }
  return out;
}

/** Every secret value a request carries (its steps' and its nested plans'), for redaction. */
export function allSecretValues(req: BuildRequest): string[] {
  return [req.secrets, ...(req.plans ?? []).map((p) => p.secrets)].flatMap((list) =>
    (list ?? []).flatMap((s) => Object.values(s ?? {})),
  );
}

/** Every content digest a request refers to (files of inputs, context selections and deferred mounts), deduplicated. */
export function referencedDigests(req: BuildRequest): string[] {
  const out = new Set<string>();
  const add = (e: WireEntry) => {
    if (e.digest) out.add(e.digest);
  };
  for (const s of allSteps(req)) {
    for (const i of s.inputs) {
      if (i.kind === "dir") i.entries.forEach(add);
      else if (i.kind === "file") add(i.entry);
      else if (i.kind === "select") i.entries?.forEach(add);
    }
  }
  for (const d of req.deferred) d.entries.forEach(add);
  return [...out];
}

/** Whether every build of this request must run its steps again (so it never joins an earlier build). */
export function alwaysRebuilds(req: BuildRequest): boolean {
  return Boolean(req.forceBuild || req.ignoreCache || allSteps(req).some((s) => s.forceBuild));
}

/**
 * Whether a finished build of this request may be reused while its cache entries stand: not when it read something
 * that can change behind the same request (a registry tag, an image selection, a URL).
 */
export function reusable(req: BuildRequest): boolean {
  return !allSteps(req).some(
    (s) =>
      s.base?.kind === "registry" ||
      s.inputs.some((i) => i.kind === "url" || (i.kind === "select" && i.root.kind === "image")),
  );
}

/** A step as identified: client paths (log text only) left out. */
function identity(s: WireStep): unknown {
  const inputs = s.inputs.map((i) =>
    i.kind === "dir"
      ? { kind: i.kind, name: i.name, entries: i.entries }
      : i.kind === "file"
        ? { kind: i.kind, name: i.name, entry: i.entry }
        : i.kind === "select" && i.root.kind === "context"
          ? { ...i, root: { kind: "context" } }
          : i,
  );
  return { ...s, inputs };
}

/**
 * The definition hash: what the build is, without secret values, client paths or chain names. Identical requests
 * have the same hash; `nonce` separates builds that must not be joined (forced, ignoring the cache, or a retry).
 */
export function definitionHash(req: BuildRequest, nonce?: string): string {
  const h = createHash("sha256");
  h.update(WIRE_FORMAT + "\n");
  h.update(JSON.stringify(req.builderVersion) + "\n");
  for (const [i, p] of (req.plans ?? []).entries()) {
    h.update(`plan ${i}\n`);
    for (const s of p.steps) h.update(JSON.stringify(identity(s)) + "\n");
  }
  h.update("steps\n");
  for (const s of req.steps) h.update(JSON.stringify(identity(s)) + "\n");
  for (const d of req.deferred)
    h.update(JSON.stringify({ kind: d.kind, remotePath: d.remotePath, ignore: d.ignore, entries: d.entries }) + "\n");
  h.update(`force ${Boolean(req.forceBuild)} ignore ${Boolean(req.ignoreCache)}\n`);
  if (req.limits)
    h.update(
      `limits ${JSON.stringify([req.limits.memoryBytes ?? null, req.limits.pids ?? null, req.limits.cpus ?? null])}\n`,
    );
  if (nonce !== undefined) h.update(`nonce ${nonce}\n`);
  return h.digest("hex");
}
