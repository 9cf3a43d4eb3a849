/**
 * The service's builds: get-or-create by definition hash, execution through the engine with a per-build log, and
 * the log buffer clients stream and resume from.
 *
 * - Builds belong to a tenant (tenants.ts): another tenant's build is not found, and each tenant's builds run on its
 *   scoped view of the store (`../store/scoped.ts`: its own index, chains, cache mounts) and its own input trees.
 * - Build ids are random. Identical requests of one tenant — same definition hash *and* same secret values, compared
 *   as an HMAC keyed by the server's join secret, never as values — get the same build while it is queued or running,
 *   and the same finished result while every step's cache entry still points at the image it produced (exactly when
 *   a local build would be all cache hits with the same ids). A forced or cache-ignoring request, or a retry of a
 *   failed build, gets a build of its own; the engine's in-process single flight still runs each step key once
 *   across all of a tenant's builds.
 * - A build's log lines are numbered from 1 (the cursor). The newest lines are kept in memory, bounded; a finished
 *   build's record and log are saved in the store (under `sha256:<build id>` in the log namespace), so they outlive
 *   eviction from memory and restarts. Secret values are redacted from every line and message.
 * - With a queue (scale-out, `STRATA_REDIS_URL`), builds run on `strata worker` processes instead (queue.ts,
 *   worker.ts, both through {@link runBuildRequest}); their lines come back through Redis and are numbered here, so
 *   cursors, records and get-or-create work the same.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { setMaxListeners } from "node:events";
import { buildPlan, type BuiltImage } from "../engine/build.js";
import { redactor } from "../engine/log.js";
import { StrataError } from "../errors.js";
import type { Executor } from "../sandbox/runc.js";
import { ScopedStore } from "../store/scoped.js";
import { isImageName, parseImageName } from "../util/image-name.js";
import type { NamedStore, Store } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { Build, type PersistedBuild } from "./build-record.js";
import { toFailure, type BuildOutcome } from "./outcome.js";
import type { BuildQueue } from "./queue.js";
import { DEFAULT_TENANT, type Tenant, type TenantId } from "./tenants.js";
import type { InputTrees, TreeLease, TreeSource } from "./trees.js";
import { Visibility } from "./visibility.js";
import { FetchPolicy } from "../net/fetch-policy.js";
import { serviceConfig } from "../net/fetch-rules.js";
import { planForRequest } from "./wire/decode.js";
import { allSecretValues, alwaysRebuilds, definitionHash, referencedDigests, requestSecretValues } from "./wire/id.js";
import type { BuildStatus, ImageInfo, WireResult } from "./wire/responses.js";
import type { BuildRequest } from "./wire/schema.js";
import { FairSlots } from "./fair-slots.js";
import type { TenantQuotas } from "./quotas.js";

export interface BuildsOptions {
  store: NamedStore;
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
  /** The operator's fetch policy for in-process builds (see BuildServiceOptions.fetchPolicy). */
  fetchPolicy?: FetchPolicy;
  /**
   * Keys the HMACs that decide joins (secret values, and the queue's job ids). Servers sharing a queue share it.
   * Default: random, for this process only.
   */
  joinSecret?: Buffer;
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

/** `ref` as a normalised image name, or "" when it is not one (then no name record matches it). */
function normalName(ref: string): string {
  return isImageName(ref) ? parseImageName(ref).full : "";
}

/** A request names an image (`fromId`) the tenant does not hold (or that does not exist). */
export class MissingImageError extends StrataError {
  override readonly code = "MISSING_IMAGE";
  override readonly fault = "user";
  constructor(readonly imageId: string) {
    super(
      `image ${imageId} (fromId) is not in the server's store: name one of your image names on this server, or the full id of an image a build of yours produced`,
    );
    this.name = "MissingImageError";
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
  readonly #store: NamedStore;
  readonly #trees: InputTrees;
  readonly #slots: FairSlots;
  readonly #builds = new Map<string, Build>();
  /** Join key (tenant, definition hash, secret values) → the build identical requests join or reuse. */
  readonly #defs = new Map<string, Build>();
  /** Join key → a creation in progress (blob check), so concurrent identical requests share it. */
  readonly #creating = new Map<string, Promise<Build>>();
  readonly #joinSecret: Buffer;
  /** One scoped view per tenant scope (each keeps its layout; cheap, but made once). */
  readonly #views = new Map<string, ScopedStore>();
  /** Which blobs and images each tenant may name. */
  readonly visibility: Visibility;
  readonly #finishedOrder: string[] = [];
  readonly #abort = new AbortController();
  readonly #limits: { lines: number; bytes: number };
  readonly #maxFinished: number;
  readonly #maxActive: number;
  #activeCount = 0;
  readonly #log: (line: string) => void;
  readonly #executor?: Executor;
  readonly #fetchPolicy?: FetchPolicy;
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
    this.#fetchPolicy = opts.fetchPolicy;
    this.#queue = opts.queue;
    this.#joinSecret = opts.joinSecret ?? randomBytes(32);
    this.visibility = new Visibility(opts.store);
    // Every running build listens for the shutdown on this one signal.
    setMaxListeners(0, this.#abort.signal);
  }

  /** Builds currently queued or running. */
  get active(): Build[] {
    return [...this.#builds.values()].filter((b) => !b.finished);
  }

  /** The store as `tenant` sees it: the store itself (unscoped), else the tenant's scoped view. */
  storeFor(tenant: Tenant): NamedStore {
    if (tenant.scope === undefined) return this.#store;
    let v = this.#views.get(tenant.scope);
    if (!v) this.#views.set(tenant.scope, (v = new ScopedStore(this.#store, tenant.scope)));
    return v;
  }

  /** HMAC of the request's secret values (one value per name, sorted), keyed by the join secret. */
  #secretsMac(req: BuildRequest): Buffer {
    const values = Object.entries(requestSecretValues(req)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return createHmac("sha256", this.#joinSecret).update("strata-secrets/1\n").update(JSON.stringify(values)).digest();
  }

  /** What identical requests of one tenant are found by (and, with a queue, the job every server runs them as). */
  #joinKey(tenant: Tenant, defHash: string, secretsMac: Buffer): string {
    return createHmac("sha256", this.#joinSecret)
      .update(`strata-join/1\n${tenant.id}\n${tenant.scope ?? ""}\n${defHash}\n`)
      .update(secretsMac)
      .digest("hex");
  }

  /**
   * Get-or-create: the build for this request of `tenant` — a running one it joins, a finished one still valid, or a
   * new one. `joined` is false only for a build this call created.
   */
  async getOrCreate(req: BuildRequest, tenant: Tenant = DEFAULT_TENANT): Promise<{ build: Build; joined: boolean }> {
    if (this.#closing) throw new TerminatedError();
    const defHash = definitionHash(req);
    const secretsMac = this.#secretsMac(req);
    if (alwaysRebuilds(req)) return { build: await this.#create(req, tenant, "", secretsMac), joined: false };
    const joinKey = this.#joinKey(tenant, defHash, secretsMac);
    for (;;) {
      const cur = this.#defs.get(joinKey);
      if (cur && !cur.finished) return this.#join(cur, req, tenant, secretsMac);
      if (cur?.status === "succeeded") {
        const valid = await this.#stillValid(cur);
        if (this.#defs.get(joinKey) !== cur) continue; // someone replaced it meanwhile: look again
        if (valid) return this.#join(cur, req, tenant, secretsMac);
      }
      let creating = this.#creating.get(joinKey);
      if (!creating) {
        // A first build runs as the job of its join key (servers sharing the queue join it); a rebuild (failed or
        // stale) as a job of its own.
        const p = this.#create(req, tenant, joinKey, secretsMac, cur ? undefined : joinKey);
        creating = p;
        this.#creating.set(joinKey, p);
        p.then(
          (b) => {
            this.#defs.set(joinKey, b);
            this.#creating.delete(joinKey);
          },
          () => this.#creating.delete(joinKey),
        );
        const build = await p;
        return { build, joined: false };
      }
      return this.#join(await creating, req, tenant, secretsMac);
    }
  }

  #join(b: Build, req: BuildRequest, tenant: Tenant, secretsMac: Buffer): { build: Build; joined: boolean } {
    // The join key already covers both; checked again so no future change to the key can join across them.
    if (!b.belongsTo(tenant) || !b.secretsMac || !timingSafeEqual(b.secretsMac, secretsMac))
      throw new Error(`build ${b.id}: a join across tenants or secret values was attempted (refused)`);
    if (req.chainName && !req.ignoreCache && !b.chainNames.has(req.chainName)) {
      b.chainNames.add(req.chainName);
      if (b.status === "succeeded") void this.#putChains(b, [req.chainName]);
    }
    return { build: b, joined: true };
  }

  /** A finished build is reused only while every step's cache entry still names the image it produced. */
  async #stillValid(b: Build): Promise<boolean> {
    if (!b.result || !b.revalidation?.reusable) return false;
    const store = this.storeFor(b.tenant);
    try {
      const checks = b.result.steps.map(async (s, i) => {
        if (b.revalidation!.skip[i]) return true;
        const entry = await store.getIndex(s.key);
        return entry?.imageId === s.imageId;
      });
      return (await Promise.all(checks)).every(Boolean);
    } catch {
      return false;
    }
  }

  async #create(
    req: BuildRequest,
    tenant: Tenant,
    joinKey: string,
    secretsMac: Buffer,
    jobId = randomBytes(32).toString("hex"),
  ): Promise<Build> {
    if (this.#activeCount >= this.#maxActive) throw new BusyError(this.#activeCount);
    // A tenant's quota counts every build it creates, forced ones included (they never join).
    const releaseQuota = (await this.#quotas?.admitBuild(tenant.id)) ?? (() => undefined);
    try {
      await this.#checkBlobs(req, tenant);
      if (this.#closing) throw new TerminatedError();
      if (this.#activeCount >= this.#maxActive) throw new BusyError(this.#activeCount);
    } catch (e) {
      releaseQuota();
      throw e;
    }
    // Random: an id says nothing about the definition, and knowing a definition does not find its build.
    const id = randomBytes(32).toString("hex");
    const steps = req.steps.map((s, index) => ({ index, description: s.description }));
    if (req.deferred.length)
      steps.push({
        index: steps.length,
        description: `add local files (${req.deferred.map((d) => `${d.source ?? "<context>"} → ${d.remotePath}`).join(", ")})`,
      });
    const b = new Build(id, joinKey, Boolean(req.forceBuild), Boolean(req.ignoreCache), steps, this.#limits);
    b.tenant = tenant;
    b.secretsMac = secretsMac;
    b.jobId = jobId;
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

  /**
   * Every blob a request names must be one its tenant may name (uploaded by it, or in an image it holds), and every
   * image it builds on (`fromId`) one it holds, before a build starts: a clear 4xx now, not a failed build later.
   * Another tenant's blob or image is reported exactly as a missing one.
   */
  async #checkBlobs(req: BuildRequest, tenant: Tenant): Promise<void> {
    const missing = await this.visibility.missing(tenant, referencedDigests(req));
    if (missing.length) throw new MissingBlobsError(missing);
    const store = this.storeFor(tenant);
    for (const s of [...(req.plans ?? []).flatMap((p) => p.steps), ...req.steps]) {
      if (s.base?.kind !== "image") continue;
      const ref = s.base.imageId;
      if (tenant.scope === undefined) {
        if (!(await store.resolveImage(ref).catch(() => undefined))) throw new MissingImageError(ref);
      } else {
        // A full id the tenant holds, or a name of its own (which names an image it held when it gave the name).
        const named = /^sha256:[0-9a-f]{64}$/.test(ref)
          ? undefined
          : await store.getName(normalName(ref)).catch(() => undefined);
        const id = named?.imageId ?? ref;
        if (!/^sha256:[0-9a-f]{64}$/.test(id) || !(await this.visibility.image(tenant, id as Digest)))
          throw new MissingImageError(ref);
      }
    }
  }

  async #execute(b: Build, req: BuildRequest): Promise<void> {
    const releaseSlot = await this.#slots.acquire(b.tenant.id);
    try {
      const outcome = await runBuildRequest(req, {
        store: this.storeFor(b.tenant),
        trees: this.#trees.forScope(b.tenant.scope),
        log: (line) => b.append(line),
        onStart: () => {
          if (this.#closing) throw new TerminatedError();
          b.status = "building";
          b.startedAt = new Date().toISOString();
        },
        terminating: () => this.#closing,
        ...(this.#executor ? { executor: this.#executor } : {}),
        ...(this.#fetchPolicy ? { fetchPolicy: this.#fetchPolicy } : {}),
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
      const outcome = await queue.run(b.jobId ?? b.id, req, {
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
        ...(b.tenant.scope !== undefined ? { scope: b.tenant.scope } : {}),
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
    // The tenant holds what it built (or hit in its own index), before it hears of it.
    if (b.status === "succeeded" && b.result) {
      const ids = [b.result.imageId, ...b.result.steps.map((s) => s.imageId)] as Digest[];
      await this.visibility
        .grantImages(b.tenant, ids)
        .catch((e: unknown) => this.#log(`build ${b.id}: could not record its images as the tenant's: ${String(e)}`));
    }
    // Saved before anyone hears the result, so a client that got it can always read the record back.
    await this.#persist(b);
    b.announce();
    this.#finishedOrder.push(b.id);
    this.#evictFinished();
  }

  async #putChains(b: Build, names: string[], result = b.result): Promise<void> {
    if (!result) return;
    for (const name of names) {
      await this.storeFor(b.tenant)
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
      if (this.#defs.get(b.joinKey) === b) this.#defs.delete(b.joinKey);
    }
  }

  /** A build of `tenant` by id: in memory, else its saved record. Another tenant's build is not found. */
  async get(id: string, tenant: Tenant = DEFAULT_TENANT): Promise<Build | undefined> {
    const b = await this.#get(id);
    return b?.belongsTo(tenant) ? b : undefined;
  }

  async #get(id: string): Promise<Build | undefined> {
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

  /** The stored image behind an id (config, layers), if `tenant` holds it. */
  async image(imageId: string, tenant: Tenant = DEFAULT_TENANT): Promise<ImageInfo | undefined> {
    const rec = await this.visibility.image(tenant, imageId as Digest);
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
  /** The store as the build's tenant sees it (a scoped view, or the store itself). */
  store: Store;
  /** The tenant's input trees. */
  trees: TreeSource;
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
  /** The operator's fetch policy. Default: the service's, with no allowances. */
  fetchPolicy?: FetchPolicy;
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
      fetchPolicy: opts.fetchPolicy ?? new FetchPolicy(serviceConfig()),
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

/** Log bytes of finished builds kept in memory, all together. */
const FINISHED_LOG_BUDGET = 256 * 1024 * 1024;

function persistKey(buildId: string): Digest {
  return `sha256:${buildId}` as Digest;
}
