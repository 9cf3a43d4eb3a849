/**
 * The build service's client: takes a Plan and its secret values, walks and hashes its local inputs, uploads only the
 * files the server lacks (by content digest), asks the server to get-or-create the build, streams its log
 * (reconnecting from the last cursor when the connection drops) and returns the result — or throws the same
 * errors a local build throws (a failing step is a StepFailedError).
 */
import { limitsFromEnv } from "../sandbox/step-limits.js";
import { createReadStream } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";
import type { BuiltImage, StepResult } from "../engine/build.js";
import { resolveInput } from "../engine/inputs.js";
import type { LogSink } from "../engine/log.js";
import { StatCache, type ContextEntry } from "../context/walk.js";
import { InvalidDefinitionError, NotFoundError, StepFailedError, StrataError } from "../errors.js";
import { loadBuilderVersion } from "../builder-version.js";
import { isDerivedExtra, stepExtra } from "../keys/step-extra.js";
import { debianSlimStep } from "../plan/debian-slim.js";
import { stepSecretValues } from "../plan/secrets.js";
import type { BaseSpec, Plan, SecretValues, Step, StepInput } from "../plan/step.js";
import { parseDigest } from "../util/digest.js";
import { serviceAgent, tlsHint } from "./tls.js";
import {
  WIRE_FORMAT,
  sortEntries,
  type BuildInfo,
  type BuildRequest,
  type BuildStatus,
  type CreateResponse,
  type ErrorBody,
  type WireBase,
  type WireEntry,
  type WireFailure,
  type WireInput,
  type WireMatch,
  type WirePlan,
  type WireResult,
  type WireStep,
} from "./wire.js";

export interface RemoteBuildOptions {
  /** Base URL of the build server, e.g. `http://builder:8080`. */
  server: string;
  /** Bearer token (default: STRATA_TOKEN). */
  token?: string;
  /** The build's secret values; each step's travel with it (the names it lists). Default: none. */
  secrets?: SecretValues;
  forceBuild?: boolean;
  ignoreCache?: boolean;
  /** Receives the build's log lines. Default: stderr. */
  log?: LogSink;
  chainName?: string;
  /** Stat cache for hashing local files: a file path, a cache, or false for none. Default: `<STRATA_HOME>/statcache.json`. */
  statCache?: string | StatCache | false;
  /** Parallel uploads. Default 8. */
  uploadConcurrency?: number;
  /** Consecutive failed reconnects of the log stream before giving up. Default 10. */
  maxReconnects?: number;
  signal?: AbortSignal;
}

export interface RemoteBuiltImage extends BuiltImage {
  buildId: string;
  /** Bytes of context files uploaded for this build (files the server already had are not sent). */
  uploadedBytes: number;
  uploadedFiles: number;
  /** True when the request joined a build that was already queued, running or finished. */
  joined: boolean;
}

/** The build server refused a request or failed a build with an error that has no local counterpart. */
export class RemoteBuildError extends StrataError {
  override readonly code: string;
  constructor(
    code: string,
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = code;
    this.name = "RemoteBuildError";
  }
}

const envFlag = (name: string) => ["1", "true", "yes"].includes((process.env[name] ?? "").toLowerCase());

/** Builds `plan` on a build server (with `opts.secrets`, the values of the secrets its steps name). */
export async function remoteBuild(plan: Plan, opts: RemoteBuildOptions): Promise<RemoteBuiltImage> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + "\n"));
  const client = new ServiceClient(opts.server, opts.token ?? process.env.STRATA_TOKEN, opts.signal);
  try {
    const statCache = await openStatCache(opts.statCache);
    const { request, files } = await compileRequest(plan, statCache, opts.secrets);
    await statCache?.save().catch(() => undefined);
    request.forceBuild = opts.forceBuild ?? envFlag("STRATA_FORCE_BUILD");
    request.ignoreCache = opts.ignoreCache ?? envFlag("STRATA_IGNORE_CACHE");
    // STRATA_STEP_MEMORY / _PIDS / _CPUS ask the service for this build's limits (it caps them at its maximum).
    const limits = limitsFromEnv();
    if (Object.keys(limits).length) request.limits = limits;
    if (opts.chainName) request.chainName = opts.chainName;

    const upload = { bytes: 0, files: 0 };
    await uploadMissing(client, files, [...files.keys()], upload, opts.uploadConcurrency ?? 8);
    let created: CreateResponse;
    try {
      created = await client.json<CreateResponse>("POST", "/v1/images", request);
    } catch (e) {
      // Content that vanished from the server between the check and the request: send it and ask again.
      if (!(e instanceof RemoteBuildError && e.code === "MISSING_BLOBS")) throw e;
      await uploadMissing(client, files, [...files.keys()], upload, opts.uploadConcurrency ?? 8);
      created = await client.json<CreateResponse>("POST", "/v1/images", request);
    }
    const extra = {
      buildId: created.buildId,
      uploadedBytes: upload.bytes,
      uploadedFiles: upload.files,
      joined: created.joined,
    };
    if (created.status === "succeeded" && created.result) {
      logCachedResult(created.result, log);
      return { ...toBuilt(created.result), ...extra };
    }
    const end = await followLogs(client, created.buildId, log, opts.maxReconnects ?? 10);
    if (end.status === "succeeded" && end.result) return { ...toBuilt(end.result), ...extra };
    throw failureError(end.status, end.failure, created.buildId);
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Compiling the request

async function openStatCache(opt: RemoteBuildOptions["statCache"]): Promise<StatCache | undefined> {
  if (opt === false) return undefined;
  if (opt instanceof StatCache) return opt;
  if (typeof opt === "string") return StatCache.load(opt);
  const { StoreLayout } = await import("../store/layout.js");
  return StatCache.load(StoreLayout.default().statCacheFile);
}

function toWireEntry(e: ContextEntry): WireEntry {
  const w: WireEntry = { path: e.relPath, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid };
  if (e.type === "file") {
    w.size = e.size;
    w.digest = e.sha256;
  } else if (e.type === "symlink") {
    w.target = e.linkTarget ?? "";
  }
  return w;
}

/** Step fields the wire format carries (see WireStep). */
const SENT_STEP_FIELDS = new Set([
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

/** A local file to upload under its digest. */
export interface LocalBlob {
  absPath: string;
  size: number;
}

/** Compiling one request: its nested plans (deduplicated by content) and the files behind its digests. */
interface Compiler {
  statCache?: StatCache;
  /** The build's secret values: each step's travel with it, index-aligned (the wire's per-step form). */
  secrets: SecretValues;
  files: Map<string, LocalBlob>;
  plans: WirePlan[];
  planIndex: Map<string, number>;
  /** Plans already compiled, by their JSON. */
  compiled: Map<string, Promise<number>>;
  /** Context selections already resolved in this request (a stage read by several steps repeats them). */
  selections: Map<string, Extract<WireInput, { kind: "select" }>>;
}

/**
 * The wire request for a plan (with the values of the secrets its steps name, from `secrets`; a missing one is a
 * MissingSecretError), and the local files behind every digest it names.
 */
export async function compileRequest(
  plan: Plan,
  statCache?: StatCache,
  secrets: SecretValues = {},
): Promise<{ request: BuildRequest; files: Map<string, LocalBlob> }> {
  const c: Compiler = {
    ...(statCache ? { statCache } : {}),
    secrets,
    files: new Map(),
    plans: [],
    planIndex: new Map(),
    compiled: new Map(),
    selections: new Map(),
  };
  const { steps, secrets: stepValues } = await compileSteps(c, plan);
  const deferred: BuildRequest["deferred"] = [];
  for (const d of plan.deferred) {
    const input: StepInput =
      d.kind === "dir"
        ? { kind: "dir", name: "deferred", localPath: d.localPath, ignore: d.ignore }
        : { kind: "file", name: "deferred", localPath: d.localPath };
    const resolved = await resolveInput(input, statCache);
    note(c, resolved.entries);
    deferred.push({
      kind: d.kind,
      source: d.localPath,
      remotePath: d.remotePath,
      ignore: d.ignore,
      entries: resolved.entries.map(toWireEntry),
    });
  }
  const request: BuildRequest = { format: WIRE_FORMAT, builderVersion: plan.builderVersion, steps, deferred };
  if (c.plans.length) request.plans = c.plans;
  if (stepValues.some((s) => s !== null)) request.secrets = stepValues;
  return { request, files: c.files };
}

function note(c: Compiler, entries: ContextEntry[]): ContextEntry[] {
  for (const e of entries)
    if (e.type === "file" && !c.files.has(e.sha256)) c.files.set(e.sha256, { absPath: e.absPath, size: e.size });
  return entries;
}

/** A nested plan's index in the request (added after the plans it reads, so references only point backwards). */
function planRef(c: Compiler, plan: Plan): Promise<number> {
  const memo = JSON.stringify(plan);
  let p = c.compiled.get(memo);
  if (!p) {
    p = compilePlan(c, plan);
    c.compiled.set(memo, p);
  }
  return p;
}

async function compilePlan(c: Compiler, plan: Plan): Promise<number> {
  if (plan.deferred.length)
    throw new InvalidDefinitionError(
      `a nested chain with copy: false files cannot be built remotely; build locally (unset STRATA_SERVER)`,
    );
  const { steps, secrets } = await compileSteps(c, plan);
  const wire: WirePlan = { builderVersion: plan.builderVersion, steps };
  if (secrets.some((s) => s !== null)) wire.secrets = secrets;
  const id = JSON.stringify(wire);
  let i = c.planIndex.get(id);
  if (i === undefined) {
    i = c.plans.length;
    c.plans.push(wire);
    c.planIndex.set(id, i);
  }
  return i;
}

async function compileSteps(
  c: Compiler,
  plan: Plan,
): Promise<{ steps: WireStep[]; secrets: (Record<string, string> | null)[] }> {
  const steps: WireStep[] = [];
  const secrets: (Record<string, string> | null)[] = [];
  for (const s of plan.steps) {
    // A field this client does not know how to send would be silently dropped, and the server would build
    // something else: refuse instead.
    for (const [k, v] of Object.entries(s)) {
      if (v !== undefined && !SENT_STEP_FIELDS.has(k))
        throw new InvalidDefinitionError(
          `step "${s.description}": remote builds do not support the step field "${k}" yet; build locally (unset STRATA_SERVER)`,
        );
    }
    if (s.base?.kind === "debian") {
      // The server builds the debian base from its builder file, knowing only the Python series.
      steps.push(debianWireStep(plan.builderVersion, { ...s, base: s.base }));
      secrets.push(null);
      continue;
    }
    const inputs: WireInput[] = [];
    for (const input of s.inputs) inputs.push(await compileInput(c, s, input));
    const step: WireStep = {
      method: s.method,
      description: s.description,
      instructions: s.instructions,
      inputs,
      secrets: [...s.secrets],
      env: s.env,
      forceBuild: s.forceBuild,
      // Derived extras are the engine's to compute (the server refuses them); they never change a local key either.
      extra: s.extra.filter(([name]) => !isDerivedExtra(name)),
    };
    if (s.base) step.base = wireBase(s, s.base);
    if (s.timeoutMs !== undefined) step.timeoutMs = s.timeoutMs;
    if (s.secretsAsEnv !== undefined) step.secretsAsEnv = s.secretsAsEnv;
    if (s.buildArgs?.length) step.buildArgs = s.buildArgs;
    if (s.proxyEnv?.length) step.proxyEnv = s.proxyEnv;
    steps.push(step);
    const values = stepSecretValues(s, c.secrets);
    secrets.push(Object.keys(values).length ? values : null);
  }
  return { steps, secrets };
}

async function compileInput(c: Compiler, s: Step, input: StepInput): Promise<WireInput> {
  switch (input.kind) {
    case "inline":
      return { kind: "inline", name: input.name, content: input.content, mode: input.mode };
    case "dir": {
      const resolved = await resolveInput(input, c.statCache);
      return {
        kind: "dir",
        name: input.name,
        source: input.localPath,
        entries: note(c, resolved.entries).map(toWireEntry),
      };
    }
    case "file": {
      const resolved = await resolveInput(input, c.statCache);
      return {
        kind: "file",
        name: input.name,
        source: input.localPath,
        entry: toWireEntry(note(c, resolved.entries)[0]!),
      };
    }
    case "select": {
      const common = {
        kind: "select" as const,
        name: input.name,
        patterns: input.patterns,
        ...(input.exclude?.length ? { exclude: input.exclude } : {}),
        ...(input.parents !== undefined ? { parents: input.parents } : {}),
        ...(input.location ? { location: input.location } : {}),
      };
      const root = input.root;
      if (root.kind === "image")
        return {
          ...common,
          root: { kind: "image", ref: root.ref, ...(root.insecure !== undefined ? { insecure: root.insecure } : {}) },
        };
      if (root.kind === "stage")
        return { ...common, root: { kind: "stage", stage: root.stage, plan: await planRef(c, root.plan) } };
      // The build context: selected here with the engine's own rules; the server gets exactly the selected entries.
      const memo = JSON.stringify(input);
      const known = c.selections.get(memo);
      if (known) return known;
      const resolved = await resolveInput(input, c.statCache);
      note(c, resolved.entries);
      const wire: Extract<WireInput, { kind: "select" }> = {
        ...common,
        root: { kind: "context", source: root.localPath },
        matches: (resolved.matches ?? [])
          .filter((m) => !m.excluded)
          .map(
            (m): WireMatch =>
              m.keep !== undefined
                ? { path: m.rel, type: wireMatchType(s, m.type), parents: true }
                : { path: m.rel, type: wireMatchType(s, m.type) },
          ),
        entries: sortEntries(resolved.entries.map(toWireEntry)),
      };
      // Sources dropped by --exclude by name: no entries, but they make COPY's destination (and are keyed).
      const excluded = (resolved.matches ?? [])
        .filter((m) => m.excluded)
        .map((m): WireMatch => ({ path: m.rel, type: m.type === "dir" ? "dir" : "file" }));
      if (excluded.length) wire.excluded = excluded;
      c.selections.set(memo, wire);
      return wire;
    }
    case "url":
      return {
        kind: "url",
        name: input.name,
        url: input.url,
        ...(input.checksum !== undefined ? { checksum: input.checksum } : {}),
        ...(input.location ? { location: input.location } : {}),
        ...(input.help !== undefined ? { help: input.help } : {}),
      };
    case "stages": {
      const plans: number[] = [];
      for (const p of input.plans) plans.push(await planRef(c, p));
      return { kind: "stages", name: input.name, plans };
    }
  }
}

/**
 * A debian base step as sent: its Python series only. The plan's step must be the one the builder version makes (the
 * server builds exactly that); a hand-made recipe cannot be built remotely.
 */
function debianWireStep(builderVersion: string, s: Step & { base: Extract<BaseSpec, { kind: "debian" }> }): WireStep {
  const official = debianSlimStep(loadBuilderVersion(builderVersion), {
    pythonVersion: s.base.python,
    forceBuild: s.forceBuild,
  });
  const recipe = (x: Step) =>
    JSON.stringify([x.base, x.instructions, stepExtra(x), x.secrets, x.buildArgs ?? [], x.inputs.length]);
  if (recipe(s) !== recipe(official)) {
    throw new InvalidDefinitionError(
      `step "${s.description}": this debian base differs from builder version ${builderVersion}'s debianSlim recipe; the build service builds only the recipes in builders/<version>.json; build locally (unset STRATA_SERVER)`,
    );
  }
  return {
    method: s.method,
    description: s.description,
    base: { kind: "debian", python: s.base.python },
    instructions: [],
    inputs: [],
    secrets: [],
    env: {},
    forceBuild: s.forceBuild,
    extra: [],
  };
}

/** Any other base as sent. A registry base logs in on the server the default way; ECR and GCP logins are not sent yet. */
function wireBase(s: Step, b: Exclude<BaseSpec, { kind: "debian" }>): WireBase {
  if (b.kind !== "registry") return b;
  if (b.login !== undefined && b.login !== "registry") {
    throw new InvalidDefinitionError(
      `step "${s.description}": remote builds do not support ${b.login === "ecr" ? "fromAwsEcr" : "fromGcpArtifactRegistry"} bases yet; build locally (unset STRATA_SERVER)`,
    );
  }
  return { kind: "registry", ref: b.ref, ...(b.insecure !== undefined ? { insecure: b.insecure } : {}) };
}

function wireMatchType(s: Step, t: "file" | "dir" | "symlink"): "file" | "dir" {
  if (t === "symlink")
    throw new InvalidDefinitionError(
      `step "${s.description}": a source matched a symlink the build cannot follow; build locally (unset STRATA_SERVER)`,
    );
  return t;
}

// ---------------------------------------------------------------------------------------------------------------
// Uploads

const CHECK_BATCH = 20_000;

async function uploadMissing(
  client: ServiceClient,
  files: Map<string, LocalBlob>,
  digests: string[],
  count: { bytes: number; files: number },
  concurrency: number,
): Promise<void> {
  const missing: string[] = [];
  for (let i = 0; i < digests.length; i += CHECK_BATCH) {
    const r = await client.json<{ missing: string[] }>("POST", "/v1/blobs/check", {
      digests: digests.slice(i, i + CHECK_BATCH),
    });
    missing.push(...r.missing);
  }
  let next = 0;
  const worker = async () => {
    while (next < missing.length) {
      const d = missing[next++]!;
      const f = files.get(d);
      if (!f)
        throw new RemoteBuildError(
          "MISSING_BLOBS",
          `the build server asks for ${d}, which is not one of this build's files`,
        );
      try {
        await client.upload(`/v1/blobs/${d}`, () => createReadStream(f.absPath), f.size);
      } catch (e) {
        if (e instanceof RemoteBuildError && e.code === "DIGEST_MISMATCH") {
          throw new RemoteBuildError(
            e.code,
            `${f.absPath} changed while it was being uploaded; run the build again (${e.message})`,
            e.status,
          );
        }
        throw e;
      }
      count.bytes += f.size;
      count.files++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, missing.length) }, worker));
}

// ---------------------------------------------------------------------------------------------------------------
// Following the log

interface StreamEnd {
  status: BuildStatus;
  result?: WireResult;
  failure?: WireFailure;
}

async function followLogs(
  client: ServiceClient,
  buildId: string,
  log: LogSink,
  maxReconnects: number,
): Promise<StreamEnd> {
  let cursor = 0;
  let failures = 0;
  let lastError: unknown;
  for (;;) {
    let end: StreamEnd | undefined;
    try {
      await client.events(`/v1/images/${buildId}/logs?after=${cursor}`, (ev) => {
        if (ev.event === "result") {
          end = JSON.parse(ev.data) as StreamEnd;
          return;
        }
        if (ev.event === "gap") {
          const g = JSON.parse(ev.data) as { dropped: number };
          log(`   … ${g.dropped} log lines no longer kept by the server …`);
        } else if (ev.event === "message") {
          log(JSON.parse(ev.data) as string);
        }
        if (ev.id !== undefined) {
          cursor = Number(ev.id);
          failures = 0;
        }
      });
    } catch (e) {
      if (client.aborted) throw e;
      if (e instanceof RemoteBuildError && e.status !== undefined && e.status < 500) throw e;
      lastError = e;
    }
    if (end) return end;
    if (++failures > maxReconnects) {
      // The stream is gone; the build may still have finished: ask once.
      const info = await client.json<BuildInfo>("GET", `/v1/images/${buildId}`).catch(() => undefined);
      if (info && info.status !== "queued" && info.status !== "building") return info;
      throw new RemoteBuildError(
        "STREAM_LOST",
        `lost the log stream of build ${buildId} after ${maxReconnects} reconnects: ${lastError instanceof Error ? lastError.message : "the server kept closing it"}`,
        undefined,
        { cause: lastError },
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** failures, 5000)));
  }
}

function logCachedResult(result: WireResult, log: LogSink): void {
  for (const s of result.steps) {
    log(`=> Step ${s.index}: ${s.description}`);
    log(`   cached in ${s.seconds.toFixed(2)}s → ${s.imageId.slice(7, 19)}`);
  }
  log(
    `=> Image ${result.imageId} (${result.steps.length} steps, 0 built, ${result.steps.length} cached) on the build server`,
  );
}

function toBuilt(r: WireResult): BuiltImage {
  const steps: StepResult[] = r.steps.map((s) => ({
    index: s.index,
    description: s.description,
    cached: s.cached,
    seconds: s.seconds,
    key: s.key,
    imageId: parseDigest(s.imageId),
    ...(s.layer ? { layer: parseDigest(s.layer) } : {}),
  }));
  return { imageId: parseDigest(r.imageId), steps };
}

/** The error a local build would have thrown for this failure. */
export function failureError(status: BuildStatus, f: WireFailure | undefined, buildId: string): StrataError {
  if (!f) return new RemoteBuildError(status.toUpperCase(), `remote build ${buildId} ended with status ${status}`);
  if (status === "terminated") return new RemoteBuildError("TERMINATED", f.message);
  if (f.code === "STEP_FAILED" && f.step !== undefined) {
    return new StepFailedError(
      f.step,
      f.description ?? "",
      f.command ?? "",
      f.exitCode ?? null,
      f.logTail ?? [],
      f.durationMs ?? 0,
      f.timedOut ?? status === "timeout",
      {
        ...(typeof f.timeoutMs === "number" ? { timeoutMs: f.timeoutMs } : {}),
        ...(typeof f.limit === "string" ? { limit: f.limit } : {}),
      },
    );
  }
  if (f.code === "INVALID_DEFINITION") return new InvalidDefinitionError(f.message);
  if (f.code === "NOT_FOUND") return new NotFoundError(f.message);
  return new RemoteBuildError(f.code, `remote build ${buildId} failed: ${f.message}`);
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/** A small keep-alive HTTP client for the service's endpoints. */
export class ServiceClient {
  readonly #base: URL;
  readonly #token?: string;
  readonly #agent: http.Agent;
  readonly #signal?: AbortSignal;

  constructor(server: string, token?: string, signal?: AbortSignal) {
    let base: URL;
    try {
      base = new URL(server.endsWith("/") ? server : server + "/");
    } catch {
      throw new RemoteBuildError(
        "BAD_SERVER",
        `STRATA_SERVER=${JSON.stringify(server)} is not a URL (expected e.g. http://builder:8080)`,
      );
    }
    if (base.protocol !== "http:" && base.protocol !== "https:")
      throw new RemoteBuildError("BAD_SERVER", `the build server URL ${server} must start with http:// or https://`);
    this.#base = base;
    this.#token = token;
    this.#agent = serviceAgent(base);
    this.#signal = signal;
  }

  close(): void {
    this.#agent.destroy();
  }

  #request(method: string, pathname: string, headers: Record<string, string | number> = {}): http.ClientRequest {
    const url = new URL(pathname.replace(/^\//, ""), this.#base);
    const mod = url.protocol === "https:" ? https : http;
    return mod.request(url, {
      method,
      agent: this.#agent,
      headers: { ...(this.#token ? { authorization: `Bearer ${this.#token}` } : {}), ...headers },
      ...(this.#signal ? { signal: this.#signal } : {}),
    });
  }

  #where(method: string, pathname: string): string {
    return `${method} ${new URL(pathname.replace(/^\//, ""), this.#base).href}`;
  }

  /** Sends a request and reads the whole response; a non-2xx status throws a RemoteBuildError with the server's message. */
  async #send(
    method: string,
    pathname: string,
    body?: Buffer | (() => Readable),
    headers: Record<string, string | number> = {},
  ): Promise<{ status: number; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const req = this.#request(method, pathname, headers);
      req.on("error", (e) => reject(unreachable(this.#where(method, pathname), e)));
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (e) => reject(unreachable(this.#where(method, pathname), e)));
        res.on("end", () => {
          const buf = Buffer.concat(chunks);
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve({ status, body: buf });
          else reject(httpError(this.#where(method, pathname), status, buf));
        });
      });
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        const src = body();
        src.on("error", (e) => {
          req.destroy(e);
          reject(new RemoteBuildError("LOCAL_READ", `could not read a file to upload: ${e.message}`));
        });
        src.pipe(req);
      }
    });
  }

  /**
   * A request, sent again once when a kept-alive connection turns out to be closed by the server (the classic reuse
   * race). Every endpoint tolerates that: uploads and checks are idempotent, and a second get-or-create joins the
   * build the first one created.
   */
  async #sendRetrying(
    method: string,
    pathname: string,
    body?: Buffer | (() => Readable),
    headers: Record<string, string | number> = {},
  ): Promise<{ status: number; body: Buffer }> {
    try {
      return await this.#send(method, pathname, body, headers);
    } catch (e) {
      const code =
        e instanceof RemoteBuildError && e.cause instanceof Error ? (e.cause as NodeJS.ErrnoException).code : undefined;
      if ((code !== "ECONNRESET" && code !== "EPIPE") || this.#signal?.aborted) throw e;
      return this.#send(method, pathname, body, headers);
    }
  }

  async json<T>(method: string, pathname: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const r = await this.#sendRetrying(
      method,
      pathname,
      payload,
      payload ? { "content-type": "application/json", "content-length": payload.length } : {},
    );
    return JSON.parse(r.body.toString("utf8")) as T;
  }

  async upload(pathname: string, open: () => Readable, size: number): Promise<void> {
    await this.#sendRetrying("PUT", pathname, open, {
      "content-type": "application/octet-stream",
      "content-length": size,
    });
  }

  get aborted(): boolean {
    return this.#signal?.aborted ?? false;
  }

  /**
   * Reads a server-sent event stream until the server ends it. Resolves when the stream ends (cleanly or not —
   * the caller decides from the events it saw); rejects on a non-2xx status or when the connection fails.
   */
  events(pathname: string, onEvent: (e: SseEvent) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = this.#request("GET", pathname, { accept: "text/event-stream" });
      req.on("error", (e) => reject(unreachable(this.#where("GET", pathname), e)));
      req.on("response", (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => reject(httpError(this.#where("GET", pathname), status, Buffer.concat(chunks))));
          res.on("error", (e) => reject(unreachable(this.#where("GET", pathname), e)));
          return;
        }
        res.setEncoding("utf8");
        let buf = "";
        let failed = false;
        res.on("data", (chunk: string) => {
          buf += chunk.replace(/\r\n?/g, "\n");
          let sep: number;
          while ((sep = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, sep);
            buf = buf.slice(sep + 2);
            const ev: SseEvent = { event: "message", data: "" };
            const data: string[] = [];
            let any = false;
            for (const line of block.split("\n")) {
              if (line === "" || line.startsWith(":")) continue;
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              if (field === "data") data.push(value);
              else if (field === "event") ev.event = value;
              else if (field === "id") ev.id = value;
              else continue;
              any = true;
            }
            if (!any) continue;
            ev.data = data.join("\n");
            try {
              onEvent(ev);
            } catch (e) {
              failed = true;
              res.destroy();
              reject(e);
              return;
            }
          }
        });
        res.on("end", () => {
          if (!failed) resolve();
        });
        res.on("error", (e) => {
          if (!failed) reject(unreachable(this.#where("GET", pathname), e));
        });
        // A connection cut mid-stream ends without an error on some paths: the caller sees no result and reconnects.
        res.on("close", () => {
          if (!failed) resolve();
        });
      });
      req.end();
    });
  }
}

function unreachable(where: string, e: Error): RemoteBuildError {
  const code = (e as NodeJS.ErrnoException).code;
  return new RemoteBuildError(
    "UNREACHABLE",
    `${where}: cannot reach the build server (${code ?? e.message})${tlsHint(code) || "; is `strata serve` running there and STRATA_SERVER right?"}`,
    undefined,
    { cause: e },
  );
}

function httpError(where: string, status: number, body: Buffer): RemoteBuildError {
  let code = `HTTP_${status}`;
  let message = body.toString("utf8").slice(0, 2000) || `HTTP ${status}`;
  try {
    const parsed = JSON.parse(body.toString("utf8")) as Partial<ErrorBody>;
    if (parsed.error?.message) {
      code = parsed.error.code ?? code;
      message = parsed.error.message;
    }
  } catch {
    // not JSON: keep the raw text
  }
  const hint = status === 401 ? " (set STRATA_TOKEN to the server's token)" : "";
  return new RemoteBuildError(code, `the build server refused ${where} (${status}): ${message}${hint}`, status);
}
