/**
 * The build service's wire format (`POST /v1/images` and friends), shared by the client and the server: JSON types,
 * a strict validator (every field checked, unknown fields refused, paths confined), and the build id — a content hash
 * of the request's definition, so identical requests get the same id and join one build.
 *
 * A request is a compiled {@link Plan} whose local inputs are replaced by the entries the client walked (path,
 * type, mode, owner, content digest or link target); file contents travel separately as blobs
 * (`POST /v1/blobs/check`, `PUT /v1/blobs/sha256:<hex>`). Secret values travel per step and never enter the id,
 * a log or the store.
 */
import { createHash } from "node:crypto";
import type { Instruction, RunMount } from "../plan/instructions.js";
import type { BaseSpec } from "../plan/step.js";

/** Version of this wire format; part of every build id. */
export const WIRE_FORMAT = "strata-build/1";

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

/** A step input as sent: walked entries instead of a local path (`source` is the client's path, for log text only). */
export type WireInput =
  | { kind: "dir"; name: string; source?: string; entries: WireEntry[] }
  | { kind: "file"; name: string; source?: string; entry: WireEntry }
  | { kind: "inline"; name: string; content: string; mode: number };

export interface WireStep {
  method: string;
  description: string;
  base?: BaseSpec;
  instructions: Instruction[];
  inputs: WireInput[];
  /** Secret names (values travel in {@link BuildRequest.secrets}). */
  secrets: string[];
  env: Record<string, string>;
  forceBuild: boolean;
  timeoutMs?: number;
  extra: [string, string][];
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
  builderVersion: string;
  steps: WireStep[];
  deferred: WireDeferred[];
  /** Secret values per step (index-aligned with `steps`; `null`/missing for a step without secrets). */
  secrets?: (Record<string, string> | null)[];
  forceBuild?: boolean;
  ignoreCache?: boolean;
  /** Name under which the build is remembered for `strata explain` on the server. */
  chainName?: string;
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
  for (const k of Object.keys(v)) if (!allowed.includes(k)) fail(where, `unknown field "${k}" (allowed: ${allowed.join(", ")})`);
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
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) fail(where, `expected an integer from ${min} to ${max}, got ${describe(v)}`);
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
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(where, `expected an object of strings, got ${describe(v)}`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (keyRe && !keyRe.test(k)) fail(where, `"${k}" is not a valid variable name`);
    out[k] = str(val, `${where}.${k}`);
  }
  return out;
}

function oneOf<T extends string>(v: unknown, where: string, options: readonly T[]): T {
  if (typeof v !== "string" || !options.includes(v as T)) fail(where, `expected one of ${options.join(", ")}, got ${describe(v)}`);
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

function absImagePath(v: unknown, where: string): string {
  const s = str(v, where, LIMITS.pathBytes);
  if (!s.startsWith("/")) fail(where, `expected an absolute path in the image, got ${JSON.stringify(s)}`);
  return s;
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
    if (o.digest !== undefined || o.size !== undefined) fail(where, "a symlink has no size or digest (its target is sent instead)");
  } else if (o.digest !== undefined || o.size !== undefined || o.target !== undefined) {
    fail(where, "a directory has no size, digest or target");
  }
  return e;
}

/** Validates a tree's entries: unique paths, every parent listed as a directory. Returns them sorted bytewise. */
function entries(v: unknown, where: string, budget: { left: number }): WireEntry[] {
  const list = arr(v, where, LIMITS.entries);
  budget.left -= list.length;
  if (budget.left < 0) fail(where, `more than ${LIMITS.entries} entries in the request`);
  const out = list.map((e, i) => entry(e, `${where}[${i}]`));
  const types = new Map<string, WireEntry["type"]>();
  for (const e of out) {
    if (types.has(e.path)) fail(where, `path ${JSON.stringify(e.path)} is listed twice`);
    types.set(e.path, e.type);
  }
  for (const e of out) {
    const slash = e.path.lastIndexOf("/");
    if (slash < 0) continue;
    const parent = e.path.slice(0, slash);
    if (types.get(parent) !== "dir") fail(where, `the parent directory ${JSON.stringify(parent)} of ${JSON.stringify(e.path)} is not listed as a directory`);
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

function mount(v: unknown, where: string): RunMount {
  const o = obj(v, where, ["type", "source", "target", "readonly"]);
  if (o.type !== "bind") fail(`${where}.type`, `expected "bind"`);
  if (o.readonly !== true) fail(`${where}.readonly`, "expected true");
  return { type: "bind", source: str(o.source, `${where}.source`, 256), target: absImagePath(o.target, `${where}.target`), readonly: true };
}

function argv(v: unknown, where: string): string[] {
  return strArray(v, where, 10_000);
}

function instruction(v: unknown, where: string): Instruction {
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(where, `expected an instruction object, got ${describe(v)}`);
  const op = oneOf((v as Obj).op, `${where}.op`, ["RUN", "COPY", "ENV", "WORKDIR", "USER", "ENTRYPOINT", "CMD", "SHELL", "LABEL"] as const);
  switch (op) {
    case "RUN": {
      const o = obj(v, where, ["op", "command", "mounts", "network"]);
      const command = Array.isArray(o.command) ? argv(o.command, `${where}.command`) : str(o.command, `${where}.command`);
      const ins: Extract<Instruction, { op: "RUN" }> = { op: "RUN", command };
      if (o.mounts !== undefined) ins.mounts = arr(o.mounts, `${where}.mounts`, 64).map((m, i) => mount(m, `${where}.mounts[${i}]`));
      if (o.network !== undefined) ins.network = oneOf(o.network, `${where}.network`, ["host", "none"] as const);
      return ins;
    }
    case "COPY": {
      const o = obj(v, where, ["op", "source", "dest"]);
      return { op: "COPY", source: str(o.source, `${where}.source`, 256), dest: absImagePath(o.dest, `${where}.dest`) };
    }
    case "ENV": {
      const o = obj(v, where, ["op", "vars"]);
      return { op: "ENV", vars: pairs(o.vars, `${where}.vars`) };
    }
    case "WORKDIR": {
      const o = obj(v, where, ["op", "path"]);
      return { op: "WORKDIR", path: absImagePath(o.path, `${where}.path`) };
    }
    case "USER": {
      const o = obj(v, where, ["op", "user"]);
      return { op: "USER", user: str(o.user, `${where}.user`, 256) };
    }
    case "ENTRYPOINT": {
      const o = obj(v, where, ["op", "argv", "keepCmd"]);
      const ins: Extract<Instruction, { op: "ENTRYPOINT" }> = { op: "ENTRYPOINT", argv: argv(o.argv, `${where}.argv`) };
      if (o.keepCmd !== undefined) ins.keepCmd = bool(o.keepCmd, `${where}.keepCmd`);
      return ins;
    }
    case "CMD":
    case "SHELL": {
      const o = obj(v, where, ["op", "argv"]);
      return { op, argv: argv(o.argv, `${where}.argv`) };
    }
    case "LABEL": {
      const o = obj(v, where, ["op", "labels"]);
      return { op: "LABEL", labels: pairs(o.labels, `${where}.labels`) };
    }
  }
}

function base(v: unknown, where: string): BaseSpec {
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(where, `expected a base object, got ${describe(v)}`);
  const kind = oneOf((v as Obj).kind, `${where}.kind`, ["scratch", "debian", "registry", "image"] as const);
  switch (kind) {
    case "scratch":
      obj(v, where, ["kind"]);
      return { kind: "scratch" };
    case "debian": {
      const o = obj(v, where, ["kind", "python", "suite", "mirror", "variant", "packages", "cmd"]);
      return {
        kind: "debian",
        python: str(o.python, `${where}.python`, 32),
        suite: str(o.suite, `${where}.suite`, 64),
        mirror: str(o.mirror, `${where}.mirror`, 2048),
        variant: str(o.variant, `${where}.variant`, 64),
        packages: strArray(o.packages, `${where}.packages`),
        cmd: argv(o.cmd, `${where}.cmd`),
      };
    }
    case "registry": {
      const o = obj(v, where, ["kind", "ref", "insecure"]);
      const b: BaseSpec = { kind: "registry", ref: str(o.ref, `${where}.ref`, 2048) };
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

function input(v: unknown, where: string, budget: { left: number }): WireInput {
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(where, `expected an input object, got ${describe(v)}`);
  const kind = oneOf((v as Obj).kind, `${where}.kind`, ["dir", "file", "inline"] as const);
  const name = (o: Obj) => {
    const n = str(o.name, `${where}.name`, 128);
    if (!INPUT_NAME_RE.test(n)) fail(`${where}.name`, `"${n}" is not a valid input name`);
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
      if (e.path.includes("/")) fail(`${where}.entry.path`, `a file input's entry path is the file's name, got ${JSON.stringify(e.path)}`);
      budget.left -= 1;
      const i: WireInput = { kind: "file", name: name(o), entry: e };
      const source = optStr(o.source, `${where}.source`, LIMITS.pathBytes);
      if (source !== undefined) i.source = source;
      return i;
    }
    case "inline": {
      const o = obj(v, where, ["kind", "name", "content", "mode"]);
      return { kind: "inline", name: name(o), content: str(o.content, `${where}.content`, MAX_JSON_BYTES), mode: int(o.mode, `${where}.mode`, 0, 0o7777) };
    }
  }
}

function step(v: unknown, where: string, first: boolean, budget: { left: number }): WireStep {
  const o = obj(v, where, ["method", "description", "base", "instructions", "inputs", "secrets", "env", "forceBuild", "timeoutMs", "extra"]);
  const s: WireStep = {
    method: str(o.method, `${where}.method`, 128),
    description: str(o.description, `${where}.description`, 64 * 1024),
    instructions: arr(o.instructions, `${where}.instructions`, LIMITS.instructionsPerStep).map((x, i) => instruction(x, `${where}.instructions[${i}]`)),
    inputs: arr(o.inputs, `${where}.inputs`, LIMITS.inputsPerStep).map((x, i) => input(x, `${where}.inputs[${i}]`, budget)),
    secrets: strArray(o.secrets, `${where}.secrets`, 256),
    // Sorted: the key sorts env entries too, so their order must not separate otherwise identical builds.
    env: Object.fromEntries(Object.entries(strRecord(o.env, `${where}.env`, NAME_RE)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    forceBuild: bool(o.forceBuild, `${where}.forceBuild`),
    extra: pairs(o.extra, `${where}.extra`),
  };
  if (o.base !== undefined) s.base = base(o.base, `${where}.base`);
  if (first && !s.base) fail(where, "the first step must carry the base (fromScratch, debianSlim, fromRegistry or fromId)");
  if (!first && s.base) fail(`${where}.base`, "only the first step may carry a base");
  if (o.timeoutMs !== undefined) s.timeoutMs = int(o.timeoutMs, `${where}.timeoutMs`, 1, 7 * 24 * 3600 * 1000);
  for (const n of s.secrets) if (!NAME_RE.test(n)) fail(`${where}.secrets`, `"${n}" is not a valid secret name`);
  if (new Set(s.secrets).size !== s.secrets.length) fail(`${where}.secrets`, "a secret name is listed twice");
  const names = s.inputs.map((i) => i.name);
  if (new Set(names).size !== names.length) fail(`${where}.inputs`, "two inputs have the same name");
  return s;
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
  if (d.kind === "file" && (d.entries.length !== 1 || d.entries[0]!.type !== "file" || d.entries[0]!.path.includes("/"))) {
    fail(`${where}.entries`, "a file mount has exactly one regular-file entry named after the file");
  }
  return d;
}

/** Validates a parsed `POST /v1/images` body. Throws {@link WireError} naming the first offending field. */
export function parseBuildRequest(v: unknown): BuildRequest {
  const o = obj(v, "request", ["builderVersion", "steps", "deferred", "secrets", "forceBuild", "ignoreCache", "chainName"]);
  const budget = { left: LIMITS.entries };
  const builderVersion = str(o.builderVersion, "builderVersion", 64);
  if (!/^[A-Za-z0-9._-]+$/.test(builderVersion)) fail("builderVersion", `"${builderVersion}" is not a builder version name`);
  const stepsIn = arr(o.steps, "steps", LIMITS.steps);
  if (stepsIn.length === 0) fail("steps", "a build needs at least one step (its base)");
  const steps = stepsIn.map((s, i) => step(s, `steps[${i}]`, i === 0, budget));
  const req: BuildRequest = {
    builderVersion,
    steps,
    deferred: o.deferred === undefined ? [] : arr(o.deferred, "deferred", LIMITS.deferred).map((d, i) => deferred(d, `deferred[${i}]`, budget)),
  };
  if (o.secrets !== undefined) {
    const list = arr(o.secrets, "secrets", steps.length);
    req.secrets = list.map((s, i) => (s === null ? null : strRecord(s, `secrets[${i}]`, NAME_RE)));
  }
  for (const [i, s] of steps.entries()) {
    const given = Object.keys(req.secrets?.[i] ?? {}).sort();
    const names = [...s.secrets].sort();
    if (given.join("\0") !== names.join("\0")) {
      fail(`secrets[${i}]`, `values given for [${given.join(", ")}] but step ${i} declares secrets [${names.join(", ")}]`);
    }
  }
  const forceBuild = optBool(o.forceBuild, "forceBuild");
  const ignoreCache = optBool(o.ignoreCache, "ignoreCache");
  if (forceBuild !== undefined) req.forceBuild = forceBuild;
  if (ignoreCache !== undefined) req.ignoreCache = ignoreCache;
  const chainName = optStr(o.chainName, "chainName", 4096);
  if (chainName !== undefined) req.chainName = chainName;
  return req;
}

/** Validates a `POST /v1/blobs/check` body. */
export function parseBlobCheck(v: unknown): string[] {
  const o = obj(v, "request", ["digests"]);
  const list = strArray(o.digests, "digests", 1_000_000);
  for (const [i, d] of list.entries()) if (!DIGEST_RE.test(d)) fail(`digests[${i}]`, `expected sha256:<64 lowercase hex digits>, got ${describe(d)}`);
  return list;
}

export function isDigestString(s: string): boolean {
  return DIGEST_RE.test(s);
}

// ---------------------------------------------------------------------------------------------------------------
// Identity

/** Every content digest a request refers to (files of inputs and deferred mounts), deduplicated. */
export function referencedDigests(req: BuildRequest): string[] {
  const out = new Set<string>();
  const add = (e: WireEntry) => {
    if (e.digest) out.add(e.digest);
  };
  for (const s of req.steps) {
    for (const i of s.inputs) {
      if (i.kind === "dir") i.entries.forEach(add);
      else if (i.kind === "file") add(i.entry);
    }
  }
  for (const d of req.deferred) d.entries.forEach(add);
  return [...out];
}

/** Whether every build of this request must run its steps again (so it never joins an earlier build). */
export function alwaysRebuilds(req: BuildRequest): boolean {
  return Boolean(req.forceBuild || req.ignoreCache || req.steps.some((s) => s.forceBuild));
}

/**
 * The definition hash: what the build is, without secret values, client paths or chain names. Identical requests
 * have the same hash; `nonce` separates builds that must not be joined (forced, ignoring the cache, or a retry).
 */
export function definitionHash(req: BuildRequest, nonce?: string): string {
  const h = createHash("sha256");
  h.update(WIRE_FORMAT + "\n");
  h.update(JSON.stringify(req.builderVersion) + "\n");
  for (const s of req.steps) {
    const inputs = s.inputs.map((i) => (i.kind === "dir" ? { kind: i.kind, name: i.name, entries: i.entries } : i.kind === "file" ? { kind: i.kind, name: i.name, entry: i.entry } : i));
    h.update(JSON.stringify({ ...s, inputs }) + "\n");
  }
  for (const d of req.deferred) h.update(JSON.stringify({ kind: d.kind, remotePath: d.remotePath, ignore: d.ignore, entries: d.entries }) + "\n");
  h.update(`force ${Boolean(req.forceBuild)} ignore ${Boolean(req.ignoreCache)}\n`);
  if (nonce !== undefined) h.update(`nonce ${nonce}\n`);
  return h.digest("hex");
}
