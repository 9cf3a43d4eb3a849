/**
 * The service's builds: get-or-create by definition hash, execution through the engine with a per-build log, and
 * the log buffer clients stream and resume from.
 *
 * - Identical requests (same definition hash) get the same build while it is queued or running, and the same
 *   finished result while every step's cache entry still points at the image it produced — exactly when a local
 *   build would be all cache hits with the same ids. A forced or cache-ignoring request, or a retry of a failed
 *   build, gets a build of its own (a nonce in its id); the engine's in-process single flight still runs each step
 *   key once across all of them.
 * - A build's log lines are numbered from 1 (the cursor). The newest lines are kept in memory, bounded; a finished
 *   build's record and log are saved in the store (under `sha256:<build id>` in the log namespace), so they outlive
 *   eviction from memory and restarts. Secret values are redacted from every line and message.
 * - With a queue (scale-out, `STRATA_REDIS_URL`), builds run on `strata worker` processes instead (queue.ts,
 *   worker.ts, both through {@link runBuildRequest}); their lines come back through Redis and are numbered here, so
 *   cursors, records and get-or-create work the same.
 */
import { setMaxListeners } from "node:events";
import path from "node:path";
import { buildPlan, type BuiltImage } from "../engine/build.js";
import { redactor } from "../engine/log.js";
import { StrataError } from "../errors.js";
import type { Plan, Step, StepInput } from "../plan/step.js";
import type { Executor } from "../sandbox/runc.js";
import type { DeferredMount } from "../plan/step.js";
import type { Store } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { debianBaseStep } from "./bases.js";
import { Build, type PersistedBuild } from "./build-record.js";
import { toFailure, type BuildOutcome } from "./outcome.js";
import type { BuildQueue } from "./queue.js";
import type { InputTrees, TreeLease } from "./trees.js";
import { FairSlots } from "./fair-slots.js";
import type { TenantQuotas } from "./quotas.js";
import { DEFAULT_TENANT, type TenantId } from "./tenant.js";
import {
  allSecretValues,
  alwaysRebuilds,
  requestSecretValues,
  definitionHash,
  referencedDigests,
  sortEntries,
  unlistedParents,
  type BuildRequest,
  type BuildStatus,
  type ImageInfo,
  type WireDeferred,
  type WireEntry,
  type WireMatch,
  type WireResult,
  type WireStep,
} from "./wire.js";

export interface BuildsOptions {
  store: Store;
  trees: InputTrees;
  /** Builds running at once (more wait, `queued`). Default 8. */
  maxConcurrent?: number;
  /** Builds queued or running at most; creating one more throws BusyError. Default 512. */
  maxActive?: number;
  /** Finished builds kept in memory (older ones are read back from the store). Default 1000. */
  maxFinished?: number;
  /** Log lines / bytes kept in memory per build (older lines are dropped first). Defaults 20,000 / 8 MiB. */
  maxLogLines?: number;
  maxLogBytes?: number;
  executor?: Executor;
  /**
   * Run builds on `strata worker` processes through this queue (BullMQ on Redis) instead of in this process. The
   * workers must share the store (S3, or one local store on one machine) with the server.
   */
  queue?: BuildQueue;
  /** The server's own diagnostics. */
  log: (line: string) => void;
  /** Per-tenant quotas: a new build (forced ones too; not a join) is admitted by them. Default: none. */
  quotas?: TenantQuotas;
  /** The most builds one tenant runs at once (the rest wait as `queued`). Default: all `maxConcurrent`. */
  maxRunningPerTenant?: (tenant: TenantId) => number;
  /** Told when a build has finished (after its record is saved). */
  onFinished?: (b: Build) => void;
}

/** Thrown by get-or-create when referenced content has not been uploaded. */
export class MissingBlobsError extends StrataError {
  override readonly code = "MISSING_BLOBS";
  override readonly fault = "user";
  constructor(readonly missing: string[]) {
    super(
      `${missing.length} content blob(s) the request refers to are not on the server (first: ${missing[0]}); upload them with PUT /v1/blobs/<digest> and retry`,
    );
    this.name = "MissingBlobsError";
  }
}

/** Too many builds are queued or running to accept another. */
class BusyError extends StrataError {
  override readonly code = "BUSY";
  constructor(n: number) {
    super(`the build server has ${n} builds queued or running, its limit; try again later`);
    this.name = "BusyError";
  }
}

/** The build was stopped because the server is shutting down. */
class TerminatedError extends StrataError {
  override readonly code = "TERMINATED";
  constructor() {
    super("the build was terminated because the build server shut down; please try again");
    this.name = "TerminatedError";
  }
}

export class Builds {
  readonly #store: Store;
  readonly #trees: InputTrees;
  readonly #slots: FairSlots;
  readonly #builds = new Map<string, Build>();
  /** Definition hash → the build identical requests join or reuse. */
  readonly #defs = new Map<string, Build>();
  /** Definition hash → a creation in progress (blob check), so concurrent identical requests share it. */
  readonly #creating = new Map<string, Promise<Build>>();
  readonly #finishedOrder: string[] = [];
  readonly #abort = new AbortController();
  readonly #limits: { lines: number; bytes: number };
  readonly #maxFinished: number;
  readonly #maxActive: number;
  #activeCount = 0;
  readonly #log: (line: string) => void;
  readonly #executor?: Executor;
  readonly #queue?: BuildQueue;
  readonly #quotas?: TenantQuotas;
  readonly #onFinished?: (b: Build) => void;
  #closing = false;

  constructor(opts: BuildsOptions) {
    this.#store = opts.store;
    this.#trees = opts.trees;
    const slots = opts.maxConcurrent ?? 8;
    const perTenant = opts.maxRunningPerTenant;
    this.#slots = new FairSlots(slots, perTenant ? (t) => Math.min(slots, perTenant(t)) : () => slots);
    this.#quotas = opts.quotas;
    this.#onFinished = opts.onFinished;
    this.#limits = { lines: opts.maxLogLines ?? 20_000, bytes: opts.maxLogBytes ?? 8 * 1024 * 1024 };
    this.#maxFinished = opts.maxFinished ?? 1000;
    this.#maxActive = opts.maxActive ?? 512;
    this.#log = opts.log;
    this.#executor = opts.executor;
    this.#queue = opts.queue;
    // Every running build listens for the shutdown on this one signal.
    setMaxListeners(0, this.#abort.signal);
  }

  /** Builds currently queued or running. */
  get active(): Build[] {
    return [...this.#builds.values()].filter((b) => !b.finished);
  }

  /**
   * Get-or-create: the build for this request — a running one it joins, a finished one still valid, or a new one.
   * `joined` is false only for a build this call created.
   */
  async getOrCreate(req: BuildRequest, tenant: TenantId = DEFAULT_TENANT): Promise<{ build: Build; joined: boolean }> {
    if (this.#closing) throw new TerminatedError();
    const defHash = definitionHash(req);
    if (alwaysRebuilds(req)) return { build: await this.#create(req, defHash, randomNonce(), tenant), joined: false };
    for (;;) {
      const cur = this.#defs.get(defHash);
      if (cur && !cur.finished) return this.#join(cur, req);
      if (cur?.status === "succeeded") {
        const valid = await this.#stillValid(cur);
        if (this.#defs.get(defHash) !== cur) continue; // someone replaced it meanwhile: look again
        if (valid) return this.#join(cur, req);
      }
      let creating = this.#creating.get(defHash);
      if (!creating) {
        // The first build of a definition gets the definition hash as its id; a rebuild (failed or stale) a new one.
        const p = this.#create(req, defHash, cur ? randomNonce() : undefined, tenant);
        creating = p;
        this.#creating.set(defHash, p);
        p.then(
          (b) => {
            this.#defs.set(defHash, b);
            this.#creating.delete(defHash);
          },
          () => this.#creating.delete(defHash),
        );
        const build = await p;
        return { build, joined: false };
      }
      return this.#join(await creating, req);
    }
  }

  #join(b: Build, req: BuildRequest): { build: Build; joined: boolean } {
    if (req.chainName && !req.ignoreCache && !b.chainNames.has(req.chainName)) {
      b.chainNames.add(req.chainName);
      if (b.status === "succeeded") void this.#putChains(b, [req.chainName]);
    }
    return { build: b, joined: true };
  }

  /** A finished build is reused only while every step's cache entry still names the image it produced. */
  async #stillValid(b: Build): Promise<boolean> {
    if (!b.result || !b.revalidation?.reusable) return false;
    try {
      const checks = b.result.steps.map(async (s, i) => {
        if (b.revalidation!.skip[i]) return true;
        const entry = await this.#store.getIndex(s.key);
        return entry?.imageId === s.imageId;
      });
      return (await Promise.all(checks)).every(Boolean);
    } catch {
      return false;
    }
  }

  async #create(req: BuildRequest, defHash: string, nonce: string | undefined, tenant: TenantId): Promise<Build> {
    if (this.#activeCount >= this.#maxActive) throw new BusyError(this.#activeCount);
    // A tenant's quota counts every build it creates, forced ones included (they never join).
    const releaseQuota = (await this.#quotas?.admitBuild(tenant)) ?? (() => undefined);
    try {
      await this.#checkBlobs(req);
      if (this.#closing) throw new TerminatedError();
      if (this.#activeCount >= this.#maxActive) throw new BusyError(this.#activeCount);
    } catch (e) {
      releaseQuota();
      throw e;
    }
    const id = nonce === undefined ? defHash : definitionHash(req, nonce);
    const steps = req.steps.map((s, index) => ({ index, description: s.description }));
    if (req.deferred.length)
      steps.push({
        index: steps.length,
        description: `add local files (${req.deferred.map((d) => `${d.source ?? "<context>"} → ${d.remotePath}`).join(", ")})`,
      });
    const b = new Build(id, defHash, Boolean(req.forceBuild), Boolean(req.ignoreCache), steps, this.#limits);
    b.tenant = tenant;
    b.request = req;
    if (req.chainName && !req.ignoreCache) b.chainNames.add(req.chainName);
    this.#builds.set(id, b);
    this.#activeCount++;
    void (this.#queue ? this.#executeQueued(b, req, this.#queue) : this.#execute(b, req))
      .catch((e: unknown) => this.#log(`build ${id}: ${e instanceof Error ? e.stack : String(e)}`))
      .finally(() => {
        this.#activeCount--;
        releaseQuota();
        this.#onFinished?.(b);
      });
    return b;
  }

  /** Every referenced blob must be in the store before a build starts (a clear 4xx now, not a failed build later). */
  async #checkBlobs(req: BuildRequest): Promise<void> {
    const missing = await missingBlobs(this.#store, referencedDigests(req));
    if (missing.length) throw new MissingBlobsError(missing);
  }

  async #execute(b: Build, req: BuildRequest): Promise<void> {
    const releaseSlot = await this.#slots.acquire(b.tenant);
    try {
      const outcome = await runBuildRequest(req, {
        store: this.#store,
        trees: this.#trees,
        log: (line) => b.append(line),
        onStart: () => {
          if (this.#closing) throw new TerminatedError();
          b.status = "building";
          b.startedAt = new Date().toISOString();
        },
        terminating: () => this.#closing,
        ...(this.#executor ? { executor: this.#executor } : {}),
        signal: this.#abort.signal,
        internalError: (e) =>
          this.#log(`build ${b.id} failed with an internal error: ${e instanceof Error ? e.stack : String(e)}`),
      });
      if (outcome.status === "succeeded" && outcome.result && b.chainNames.size)
        await this.#putChains(b, [...b.chainNames], outcome.result);
      b.finish(outcome.status, outcome);
    } finally {
      releaseSlot();
      await this.#settle(b);
    }
  }

  /** A build run by the workers: its log and result come back through the queue. */
  async #executeQueued(b: Build, req: BuildRequest, queue: BuildQueue): Promise<void> {
    try {
      const outcome = await queue.run(b.id, req, {
        line: (line) => b.append(line),
        started: (worker, attempt) => {
          if (b.status === "queued") {
            b.status = "building";
            b.startedAt = new Date().toISOString();
          }
          b.append(
            attempt > 1
              ? `=> Worker ${worker} took the build over (attempt ${attempt}): the worker that had it stopped or gave it back; the steps it finished are cache hits`
              : `=> Worker ${worker} took the build`,
          );
        },
        signal: this.#abort.signal,
      });
      if (outcome.status === "succeeded" && outcome.result && b.chainNames.size)
        await this.#putChains(b, [...b.chainNames], outcome.result);
      b.finish(outcome.status, outcome);
    } catch (e) {
      if (this.#closing) {
        b.finish("terminated", {
          failure: {
            code: "TERMINATED",
            message: `${new TerminatedError().message} (the workers may still finish it; ask again to join it)`,
          },
        });
      } else {
        const failure = toFailure(e, (t) => t);
        if (failure.code === "INTERNAL")
          this.#log(`queued build ${b.id} failed: ${e instanceof Error ? e.stack : String(e)}`);
        b.finish("failed", { failure });
      }
    } finally {
      await this.#settle(b);
    }
  }

  /** After a build ended: save its record, then tell its subscribers, then let memory forget it in time. */
  async #settle(b: Build): Promise<void> {
    if (!b.finished) b.finish("failed", { failure: { code: "INTERNAL", message: "the build ended without a result" } });
    // Saved before anyone hears the result, so a client that got it can always read the record back.
    await this.#persist(b);
    b.announce();
    this.#finishedOrder.push(b.id);
    this.#evictFinished();
  }

  async #putChains(b: Build, names: string[], result = b.result): Promise<void> {
    if (!result) return;
    for (const name of names) {
      await this.#store
        .putChain({ name, builtAt: new Date().toISOString(), imageIds: result.steps.map((s) => s.imageId as Digest) })
        .catch((e: unknown) => this.#log(`could not record chain ${name}: ${String(e)}`));
    }
  }

  async #persist(b: Build): Promise<void> {
    try {
      await this.#store.putLog(persistKey(b.id), JSON.stringify(b.persisted()));
    } catch (e) {
      this.#log(`could not save the record of build ${b.id}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Drops the oldest finished builds from memory (their records are in the store) beyond the count and byte limits. */
  #evictFinished(): void {
    let bytes = 0;
    for (const id of this.#finishedOrder) bytes += this.#builds.get(id)?.logBytes ?? 0;
    while (
      this.#finishedOrder.length > this.#maxFinished ||
      (bytes > FINISHED_LOG_BUDGET && this.#finishedOrder.length > 1)
    ) {
      const id = this.#finishedOrder.shift()!;
      const b = this.#builds.get(id);
      if (!b?.finished || this.#finishedOrder.includes(id)) continue;
      bytes -= b.logBytes;
      this.#builds.delete(id);
      if (this.#defs.get(b.defHash) === b) this.#defs.delete(b.defHash);
    }
  }

  /** A build by id: in memory, else its saved record. */
  async get(id: string): Promise<Build | undefined> {
    if (!/^[0-9a-f]{64}$/.test(id)) return undefined;
    const mem = this.#builds.get(id);
    if (mem) return mem;
    const text = await this.#store.getLog(persistKey(id)).catch(() => undefined);
    if (!text) return undefined;
    let p: PersistedBuild;
    try {
      p = JSON.parse(text) as PersistedBuild;
    } catch {
      return undefined;
    }
    if (p.format !== "strata-service-build/1" || p.buildId !== id) return undefined;
    const b = this.#builds.get(id) ?? Build.fromPersisted(p, this.#limits);
    if (!this.#builds.has(id)) {
      this.#builds.set(id, b);
      this.#finishedOrder.push(id);
      this.#evictFinished();
    }
    return b;
  }

  /** The stored image behind an id: config, layers. */
  async image(imageId: string): Promise<ImageInfo | undefined> {
    const rec = await this.#store.getImage(imageId as Digest);
    if (!rec) return undefined;
    const config = JSON.parse((await this.#store.readBlob(rec.configDigest)).toString()) as unknown;
    const info: ImageInfo = { imageId: rec.id, manifestDigest: rec.manifestDigest, config, layers: rec.layers };
    if (rec.parent) info.parent = rec.parent;
    return info;
  }

  /** Stops accepting builds, terminates running ones (their sandboxes are killed) and waits up to `graceMs`. */
  async close(graceMs = 30_000): Promise<void> {
    this.#closing = true;
    this.#abort.abort();
    const running = [...this.#builds.values()].map((b) => b.done);
    await Promise.race([Promise.all(running), new Promise((r) => setTimeout(r, graceMs).unref())]);
  }
}

export interface RunBuildOptions {
  store: Store;
  trees: InputTrees;
  /** Receives each log line (secret values already redacted, server paths rewritten to the client's). */
  log: (line: string) => void;
  /** Called once the build starts running (after any wait for a slot); may throw to refuse it. */
  onStart?: () => void;
  /** True when a failure should be reported as `terminated` (the process is shutting down). */
  terminating?: () => boolean;
  executor?: Executor;
  signal?: AbortSignal;
  /** Told about failures that are not the build's fault (code INTERNAL). */
  internalError?: (e: unknown) => void;
}

/**
 * Runs one build request through the engine: materialises its inputs from the blob store, builds, and returns the
 * outcome (never throws for a failed build). The server runs this in-process; `strata worker` runs it for a job.
 */
export async function runBuildRequest(req: BuildRequest, opts: RunBuildOptions): Promise<BuildOutcome> {
  const leases: TreeLease[] = [];
  const secretValues = allSecretValues(req);
  const redact = redactor(secretValues);
  const rewrites: [string, string][] = [];
  const rewrite = (line: string) => {
    let out = line;
    for (const [from, to] of rewrites) if (out.includes(from)) out = out.split(from).join(to);
    return out;
  };
  try {
    opts.onStart?.();
    const plan = await planForRequest(req, opts.trees, leases, rewrites);
    const built: BuiltImage = await buildPlan(plan, {
      store: opts.store,
      secrets: requestSecretValues(req),
      log: (line) => opts.log(redact(rewrite(line))),
      forceBuild: Boolean(req.forceBuild),
      ignoreCache: Boolean(req.ignoreCache),
      ...(req.limits ? { limits: req.limits } : {}),
      ...(opts.executor ? { executor: opts.executor } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const result: WireResult = {
      imageId: built.imageId,
      steps: built.steps.map((s) => ({
        index: s.index,
        description: rewrite(s.description),
        cached: s.cached,
        seconds: s.seconds,
        key: s.key,
        imageId: s.imageId,
        ...(s.layer ? { layer: s.layer } : {}),
      })),
    };
    return { status: "succeeded", result };
  } catch (e) {
    let failure = toFailure(e, (t) => redact(rewrite(t)));
    const terminating = opts.terminating?.() ?? false;
    const status: BuildStatus = terminating ? "terminated" : failure.timedOut ? "timeout" : "failed";
    if (status === "terminated" && failure.code !== "TERMINATED") {
      failure = {
        code: "TERMINATED",
        message: `${new TerminatedError().message} (${failure.message.split("\n")[0]})`,
        ...(failure.step !== undefined ? { step: failure.step } : {}),
      };
    }
    if (failure.code === "INTERNAL") opts.internalError?.(e);
    return { status, failure };
  } finally {
    for (const l of leases) l.release();
  }
}

/**
 * The engine's plan for a request: inputs materialised as local trees, nested plans rebuilt (each once, shared by
 * every step that reads it); steps name their secrets, whose values are the request's {@link requestSecretValues}.
 */
export async function planForRequest(
  req: BuildRequest,
  trees: InputTrees,
  leases: TreeLease[],
  rewrites: [string, string][],
): Promise<Plan> {
  const tree = async (entries: Parameters<InputTrees["acquire"]>[0], source: string | undefined, file?: string) => {
    const lease = await trees.acquire(entries);
    leases.push(lease);
    const local = file === undefined ? lease.dir : path.join(lease.dir, file);
    if (source) rewrites.push([local, source]);
    return local;
  };
  const plans: Plan[] = [];
  const planOf = async (builderVersion: string, wireSteps: WireStep[], wireDeferred: WireDeferred[]): Promise<Plan> => {
    const steps: Step[] = [];
    for (const s of wireSteps) {
      if (s.base?.kind === "debian") {
        // Made from this server's builder file, never from the request (which names only the Python series).
        steps.push(debianBaseStep(builderVersion, { ...s, base: s.base }));
        continue;
      }
      const inputs: StepInput[] = [];
      for (const inp of s.inputs) {
        switch (inp.kind) {
          case "inline":
            inputs.push({ kind: "inline", name: inp.name, content: inp.content, mode: inp.mode });
            break;
          case "dir":
            inputs.push({ kind: "dir", name: inp.name, localPath: await tree(inp.entries, inp.source), ignore: [] });
            break;
          case "file":
            inputs.push({
              kind: "file",
              name: inp.name,
              localPath: await tree([inp.entry], inp.source, inp.entry.path),
            });
            break;
          case "select": {
            const common = {
              kind: "select" as const,
              name: inp.name,
              ...(inp.location ? { location: inp.location } : {}),
            };
            if (inp.root.kind === "context") {
              // The client's selection, materialised and selected again by literal paths: the same matches and entries
              // (validated: every entry belongs to a match; the directories added to hold the tree lie outside them).
              const matches = inp.matches ?? [];
              const dir = await tree(selectionTree(inp.entries ?? []), inp.root.source);
              const parents = matches.some((m) => m.parents);
              const excludedMatches = (inp.excluded ?? []).map((m) => ({ rel: m.path, type: m.type }));
              inputs.push({
                ...common,
                root: { kind: "context", localPath: dir, ignore: [] },
                patterns: matches.map(literalPattern),
                ...(parents ? { parents: true } : {}),
                ...(excludedMatches.length ? { excludedMatches } : {}),
              });
            } else {
              const root =
                inp.root.kind === "stage"
                  ? { kind: "stage" as const, stage: inp.root.stage, plan: plans[inp.root.plan]! }
                  : {
                      kind: "image" as const,
                      ref: inp.root.ref,
                      ...(inp.root.insecure !== undefined ? { insecure: inp.root.insecure } : {}),
                    };
              inputs.push({
                ...common,
                root,
                patterns: inp.patterns,
                ...(inp.exclude ? { exclude: inp.exclude } : {}),
                ...(inp.parents !== undefined ? { parents: inp.parents } : {}),
              });
            }
            break;
          }
          case "url":
            inputs.push({
              kind: "url",
              name: inp.name,
              url: inp.url,
              ...(inp.checksum !== undefined ? { checksum: inp.checksum } : {}),
              ...(inp.location ? { location: inp.location } : {}),
              ...(inp.help !== undefined ? { help: inp.help } : {}),
            });
            break;
          case "stages":
            inputs.push({ kind: "stages", name: inp.name, plans: inp.plans.map((k) => plans[k]!) });
            break;
        }
      }
      const step: Step = {
        method: s.method,
        description: s.description,
        instructions: s.instructions,
        inputs,
        secrets: [...s.secrets].sort(),
        env: s.env,
        forceBuild: s.forceBuild,
        extra: s.extra,
      };
      if (s.base) step.base = s.base;
      if (s.timeoutMs !== undefined) step.timeoutMs = s.timeoutMs;
      if (s.secretsAsEnv !== undefined) step.secretsAsEnv = s.secretsAsEnv;
      if (s.buildArgs) step.buildArgs = s.buildArgs;
      if (s.proxyEnv) step.proxyEnv = s.proxyEnv;
      steps.push(step);
    }
    const deferred: DeferredMount[] = [];
    for (const d of wireDeferred) {
      const localPath =
        d.kind === "dir" ? await tree(d.entries, d.source) : await tree(d.entries, d.source, d.entries[0]!.path);
      deferred.push({ kind: d.kind, localPath, remotePath: d.remotePath, ignore: d.ignore });
    }
    return { builderVersion, steps, deferred };
  };
  for (const p of req.plans ?? []) plans.push(await planOf(p.builderVersion, p.steps, []));
  const plan = await planOf(req.builderVersion, req.steps, req.deferred);
  // Longest first, so a file inside a tree is rewritten before the tree's directory.
  rewrites.sort((a, b) => b[0].length - a[0].length);
  return plan;
}

/** A context selection's entries plus the directories that hold them (a glob's matches come without their parents). */
function selectionTree(entries: readonly WireEntry[]): WireEntry[] {
  const parents = unlistedParents(entries).map(
    (p): WireEntry => ({ path: p, type: "dir", mode: 0o755, uid: 0, gid: 0 }),
  );
  return parents.length ? sortEntries([...entries, ...parents]) : [...entries];
}

/**
 * The source pattern that selects exactly one of the client's matches again: its path with wildcard characters
 * escaped (`.` for the context itself), or for a `--parents` pivot everything below it.
 */
export function literalPattern(m: WireMatch): string {
  if (m.parents) return m.path === "" ? "**" : `${m.path}/./**`;
  if (m.path === "") return ".";
  return m.path
    .split("/")
    .map((seg) => seg.replace(/[*?[\\]/g, (c) => "\\" + c))
    .join("/");
}

/** Log bytes of finished builds kept in memory, all together. */
const FINISHED_LOG_BUDGET = 256 * 1024 * 1024;

function persistKey(buildId: string): Digest {
  return `sha256:${buildId}` as Digest;
}

function randomNonce(): string {
  return `${Date.now()}-${Math.random().toString(36).slice(2)}-${process.hrtime.bigint()}`;
}

/** Digests not in the store (checked with bounded concurrency). */
export async function missingBlobs(store: Store, digests: readonly string[]): Promise<string[]> {
  const unique = [...new Set(digests)];
  const present = new Array<boolean>(unique.length);
  let next = 0;
  const worker = async () => {
    while (next < unique.length) {
      const i = next++;
      present[i] = await store.hasBlob(unique[i]! as Digest);
    }
  };
  await Promise.all(Array.from({ length: Math.min(32, unique.length) }, worker));
  return unique.filter((_, i) => !present[i]);
}
