/**
 * A build worker (`strata worker`): takes build jobs from the queue (BullMQ on Redis) and runs them with the
 * engine on the shared store, reporting log lines and the outcome through the job's event stream (see queue.ts).
 *
 * - Step keys are locked in Redis (RedisLockingStore), so workers on several machines build each layer once.
 * - A failed build is a result, not a job failure: it is reported and never retried. A job is retried (by any
 *   worker, from the start; finished steps are cache hits) only when its worker dies — BullMQ's stalled-job check
 *   notices the lock it stopped renewing — or gives it back while shutting down.
 * - A job's data holds no secret values: a job that has some fetches them from the build service that queued it
 *   (job-secrets-client.ts, with the worker token) when it starts, and they stay in this process's memory.
 * - A job runs only when the service's MAC of it verifies, and every event is signed (queue-signing.ts, a key derived
 *   from the worker token): write access to Redis neither changes what a worker builds nor forges what it reports.
 * - On close, the worker stops taking jobs and lets running builds finish for a grace period; builds still running
 *   then are stopped (their sandboxes killed) and their jobs go back to the queue.
 */
import { RuncExecutor, servicePolicy, type ServiceSandboxOptions } from "../sandbox/runc.js";
import { UnrecoverableError, Worker, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { Executor } from "../sandbox/runc.js";
import { ScopedStore } from "../store/scoped.js";
import type { NamedStore } from "../store/store.js";
import { runBuildRequest } from "./builds.js";
import { fetchJobSecrets, type JobSecretsSource } from "./job-secrets-client.js";
import { JobSecretsError, joinSecrets, requestDigest } from "./job-secrets.js";
import type { BuildOutcome } from "./outcome.js";
import { EventWriter, processName, RedisKeys, type BuildJobData } from "./queue.js";
import { EventSigner, queueSigningKey, verifyJob } from "./queue-signing.js";
import {
  bullConnection,
  checkRedis,
  openRedis,
  redactUrl,
  requireRedisAuth,
  type RedisTarget,
} from "./redis-connect.js";
import { RedisLockingStore } from "./redis-lock.js";
import { InputTrees } from "./trees.js";
import { FetchPolicy } from "../net/fetch-policy.js";
import { serviceConfig } from "../net/fetch-rules.js";

export interface BuildWorkerOptions {
  /** `redis://:password@host:port` or `rediss://…` (STRATA_REDIS_URL). */
  redisUrl: string;
  /**
   * The worker token (STRATA_WORKER_TOKEN), as the service has it: jobs are checked and events signed with a key
   * derived from it.
   */
  workerToken: string;
  /** PEM file of the CA of Redis's TLS certificate (STRATA_REDIS_CA). Default: the system's CAs. */
  redisCaFile?: string;
  /** Use a Redis that answers without a password (`--insecure-redis`). Default false: refused. */
  insecureRedis?: boolean;
  /**
   * The build services to fetch a job's secret values from, and the worker token (STRATA_SERVICE_URL,
   * STRATA_WORKER_TOKEN). Without it, a build with secrets fails with a message saying so.
   */
  secretsFrom?: JobSecretsSource;
  /** The store shared with the server and the other workers (S3, or one local store on one machine). */
  store: NamedStore;
  /** Key prefix in Redis (STRATA_REDIS_PREFIX). Default `strata`. */
  prefix?: string;
  /** Builds run at once by this worker. Default 2. */
  concurrency?: number;
  /** How long a job's lock lasts without renewal (BullMQ lockDuration): a dead worker's job is retried after it. Default 30 s. */
  jobLockMs?: number;
  /** How often this worker looks for stalled jobs (of dead workers). Default 15 s. */
  stalledIntervalMs?: number;
  /** A job whose workers died this many times fails. Default 2. */
  maxStalledCount?: number;
  /** How long a dead worker's step lock outlives it. Default 30 s. */
  stepLockMs?: number;
  /** Name in logs. Default `<host>:<pid>`. */
  name?: string;
  /** Runs the steps. Default: runc under `servicePolicy(sandbox)`. */
  executor?: Executor;
  /** The sandbox policy of the default executor (as `strata serve`'s: set both the same). */
  sandbox?: ServiceSandboxOptions;
  /** The worker's own diagnostics. Default: stderr. */
  log?: (line: string) => void;
  /** The operator's fetch policy (as `strata serve`'s: set both the same). Default: the service's, no allowances. */
  fetchPolicy?: FetchPolicy;
}

function redisTarget(opts: BuildWorkerOptions): RedisTarget {
  return {
    url: opts.redisUrl,
    ...(opts.redisCaFile ? { caFile: opts.redisCaFile } : {}),
    ...(opts.insecureRedis ? { insecure: true } : {}),
  };
}

export class BuildWorker {
  readonly name: string;
  readonly keys: RedisKeys;
  readonly store: RedisLockingStore;
  /** Jobs this worker finished (any outcome). */
  jobsDone = 0;
  readonly #redis: Redis;
  readonly #trees: InputTrees;
  readonly #worker: Worker<BuildJobData, BuildOutcome>;
  readonly #aborts = new Set<AbortController>();
  readonly #log: (line: string) => void;
  readonly #executor?: Executor;
  readonly #secretsFrom?: JobSecretsSource;
  readonly #fetchPolicy: FetchPolicy;
  readonly #signingKey: Buffer;
  /** One scoped view of the store per tenant scope. */
  readonly #views = new Map<string, ScopedStore>();
  #closing = false;

  private constructor(opts: BuildWorkerOptions, redis: Redis, trees: InputTrees) {
    this.name = opts.name ?? processName();
    this.#secretsFrom = opts.secretsFrom;
    this.#signingKey = queueSigningKey(opts.workerToken);
    this.keys = new RedisKeys(opts.prefix);
    this.#redis = redis;
    this.#trees = trees;
    this.#log = opts.log ?? ((l) => process.stderr.write(`${new Date().toISOString()} ${l}\n`));
    this.#executor = opts.executor ?? new RuncExecutor(servicePolicy(opts.sandbox));
    this.#fetchPolicy = opts.fetchPolicy ?? new FetchPolicy(serviceConfig());
    this.store = new RedisLockingStore(opts.store, redis, {
      keys: this.keys,
      ...(opts.stepLockMs !== undefined ? { ttlMs: opts.stepLockMs } : {}),
      onLost: (key) =>
        this.#log(
          `worker ${this.name}: lost the Redis lock of step ${key} before finishing it (was this worker stalled?); another worker may build it too`,
        ),
    });
    const jobLockMs = opts.jobLockMs ?? 30_000;
    this.#worker = new Worker<BuildJobData, BuildOutcome>(this.keys.queueName, (job) => this.#process(job), {
      connection: bullConnection(redisTarget(opts), `strata-worker-queue:${this.name}`),
      prefix: this.keys.bullPrefix,
      concurrency: Math.max(1, opts.concurrency ?? 2),
      lockDuration: jobLockMs,
      stalledInterval: opts.stalledIntervalMs ?? Math.max(1000, Math.floor(jobLockMs / 2)),
      maxStalledCount: opts.maxStalledCount ?? 2,
      drainDelay: 1,
      autorun: false,
    });
    this.#worker.on("error", (e) =>
      this.#log(`worker ${this.name}: queue error: ${e instanceof Error ? e.message : String(e)}`),
    );
    this.#worker.on("stalled", (id) =>
      this.#log(`worker ${this.name}: job ${id} stalled (its worker stopped responding): back in the queue`),
    );
  }

  /** Connects to Redis, reclaims what killed builds left in the local cache, and starts taking jobs. */
  static async start(opts: BuildWorkerOptions): Promise<BuildWorker> {
    const target = redisTarget(opts);
    const redis = openRedis(target, `strata-worker:${opts.name ?? processName()}`);
    try {
      await checkRedis(redis, opts.redisUrl);
      await requireRedisAuth(target);
      await opts.store.recover(async () => (await import("../sandbox/runc.js")).reapStaleContainers());
      const trees = await InputTrees.open(opts.store);
      const w = new BuildWorker(opts, redis, trees);
      void w.#worker
        .run()
        .catch((e: unknown) =>
          w.#log(`worker ${w.name}: stopped taking jobs: ${e instanceof Error ? e.message : String(e)}`),
        );
      await w.#worker.waitUntilReady();
      w.#log(
        `worker ${w.name}: taking builds from ${redactUrl(opts.redisUrl)} (store ${opts.store.root}, ${opts.concurrency ?? 2} at a time)`,
      );
      return w;
    } catch (e) {
      redis.disconnect();
      throw e;
    }
  }

  /** The job's secret values, from the service that queued it (kept in memory only). */
  #fetchSecrets(d: BuildJobData, signal: AbortSignal) {
    if (!this.#secretsFrom)
      throw new JobSecretsError(
        "SECRETS_UNAVAILABLE",
        `build ${d.buildId} uses secrets, and worker ${this.name} has no build service to fetch them from: start it with STRATA_SERVICE_URL and STRATA_WORKER_TOKEN`,
      );
    return fetchJobSecrets(
      this.#secretsFrom,
      { buildId: d.buildId, token: d.token, requestDigest: requestDigest(d.request) },
      signal,
    );
  }

  /** Builds running now. */
  get running(): number {
    return this.#aborts.size;
  }

  async #process(job: Job<BuildJobData, BuildOutcome>): Promise<BuildOutcome> {
    const d = job.data;
    if (d?.format !== "strata-job/3" || !d.request)
      throw new UnrecoverableError(
        `job ${job.id} is not a Strata build job of this version (format ${String(d?.format)}, expected strata-job/3); upgrade the workers and the service together`,
      );
    const claims = {
      buildId: d.buildId,
      token: d.token,
      requestDigest: requestDigest(d.request),
      hasSecrets: d.hasSecrets,
      ...(d.scope !== undefined ? { scope: d.scope } : {}),
    };
    if (job.id !== d.buildId || !verifyJob(this.#signingKey, claims, d.mac)) {
      // Nothing is reported into the job's stream: the service that follows it would not take it anyway.
      this.#log(
        `worker ${this.name}: refused job ${job.id}: its MAC does not verify (someone with write access to Redis wrote or changed it, or the service has another STRATA_WORKER_TOKEN than this worker)`,
      );
      throw new UnrecoverableError(`job ${job.id} is not signed by a build service of this worker`);
    }
    const events = new EventWriter(
      this.#redis,
      this.keys.events(d.buildId, d.token),
      new EventSigner(this.#signingKey, { buildId: d.buildId, token: d.token }),
    );
    const attempt = Math.max(1, job.attemptsStarted || job.attemptsMade + 1);
    const t0 = Date.now();
    await events.start(this.name, attempt);
    this.#log(`worker ${this.name}: build ${d.buildId} started (attempt ${attempt})`);
    const ac = new AbortController();
    this.#aborts.add(ac);
    try {
      let request = d.request;
      if (d.hasSecrets) {
        try {
          request = joinSecrets(request, await this.#fetchSecrets(d, ac.signal));
        } catch (e) {
          if (!(e instanceof JobSecretsError)) throw e;
          const outcome: BuildOutcome = { status: "failed", failure: { code: e.code, message: e.message } };
          await events.done(outcome);
          this.jobsDone++;
          this.#log(`worker ${this.name}: build ${d.buildId} failed: ${e.message}`);
          return outcome;
        }
      }
      const outcome = await runBuildRequest(request, {
        store: this.#storeFor(d.scope),
        trees: this.#trees.forScope(d.scope),
        log: (line) => events.line(line),
        terminating: () => this.#closing && ac.signal.aborted,
        signal: ac.signal,
        ...(this.#executor ? { executor: this.#executor } : {}),
        fetchPolicy: this.#fetchPolicy,
        internalError: (e) =>
          this.#log(
            `worker ${this.name}: build ${d.buildId} failed with an internal error: ${e instanceof Error ? e.stack : String(e)}`,
          ),
      });
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (outcome.status === "terminated" && !lastAttempt) {
        events.line(`=> Worker ${this.name} is shutting down: the build goes back to the queue`);
        await events.flush();
        this.#log(`worker ${this.name}: build ${d.buildId} given back to the queue (shutting down)`);
        throw new Error(`worker ${this.name} shut down during the build`);
      }
      await events.done(outcome);
      this.jobsDone++;
      this.#log(
        `worker ${this.name}: build ${d.buildId} ${outcome.status} in ${((Date.now() - t0) / 1000).toFixed(1)}s`,
      );
      return outcome;
    } finally {
      this.#aborts.delete(ac);
    }
  }

  /** The store as a job's tenant sees it: its scoped view, or the (Redis-locking) store itself. */
  #storeFor(scope: string | undefined): NamedStore {
    if (scope === undefined) return this.store;
    let v = this.#views.get(scope);
    if (!v) this.#views.set(scope, (v = new ScopedStore(this.store, scope)));
    return v;
  }

  /**
   * Stops taking jobs, waits up to `graceMs` for running builds, then stops those (their jobs go back to the
   * queue for another worker) and disconnects.
   */
  async close(graceMs = 30_000): Promise<void> {
    this.#closing = true;
    const timer = setTimeout(() => this.abortRunning(), graceMs);
    try {
      await this.#worker.close();
    } finally {
      clearTimeout(timer);
      this.#redis.disconnect();
    }
  }

  /** Stops running builds now (their jobs go back to the queue). */
  abortRunning(): void {
    this.#closing = true;
    for (const ac of this.#aborts) ac.abort();
  }
}
