/**
 * The build queue shared by `strata serve` and `strata worker` processes (BullMQ on Redis).
 *
 * - A build is one BullMQ job whose job id is the build id, so a request for a build that is already queued or
 *   running anywhere joins it (BullMQ ignores an `add` with the id of an existing job). Jobs are removed from Redis
 *   when they finish. Their data holds the request without its secret values: the service holds those in memory
 *   and the worker fetches them when it starts the job (job-secrets.ts).
 * - The worker that takes a job writes what happens to a Redis stream, `<prefix>:build:<build id>:<token>` (the
 *   token is the job's own, so a later job with the same id never mixes with an earlier one's stream): `start`
 *   entries (a worker took the job; again on a retry), `line` entries (log lines, already redacted), and one `done`
 *   entry with the outcome. The server reads the stream from its start and numbers the lines itself, so
 *   `GET /v1/images/:id/logs?after=<cursor>` works exactly as for an in-process build.
 * - A worker that dies (even `kill -9`) stops renewing its job lock; BullMQ's stalled-job check in the other workers
 *   puts the job back in the queue and another worker runs it from the start, where every step the dead worker
 *   finished is a cache hit. A job that cannot finish (stalled too often) disappears without a `done` entry: the
 *   server notices from the job's state and fails the build with a clear message.
 * - Jobs and events are signed with a key derived from the worker token (queue-signing.ts): a worker runs only a job
 *   the service signed, and the service takes only entries a worker signed for that job. An entry that does not
 *   verify is ignored and logged; a build whose job left the queue with only such a `done` fails, saying so.
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import { Queue, type JobsOptions } from "bullmq";
import type { Redis } from "ioredis";
import { HeldSecrets, requestDigest, splitSecrets } from "./job-secrets.js";
import type { BuildOutcome } from "./outcome.js";
import { type EventSigner, EventVerifier, signJob } from "./queue-signing.js";
import {
  bullConnection,
  checkRedis,
  openRedis,
  QueueError,
  redactUrl,
  requireRedisAuth,
  toTarget,
  type RedisTarget,
} from "./redis-connect.js";
import type { BuildRequest } from "./wire/schema.js";

/** What a job carries. */
export interface BuildJobData {
  format: "strata-job/3";
  buildId: string;
  /** Names the job's event stream (see the module comment), and its secret values at the service. */
  token: string;
  /** The request without secret values. */
  request: BuildRequest;
  /** The request has secret values: fetch them from the service (job-secrets.ts) before building. */
  hasSecrets: boolean;
  /** The store scope (tenant) the build runs in; absent: the store's own names. */
  scope?: string;
  enqueuedAt: string;
  /** The service's MAC of the job (queue-signing.ts `signJob`): a worker runs no job whose MAC does not verify. */
  mac: string;
}

export { bullConnection, checkRedis, openRedis, QueueError, redactUrl, type RedisTarget } from "./redis-connect.js";

/** Names of everything the service keeps in Redis, under one prefix (STRATA_REDIS_PREFIX, default `strata`). */
export class RedisKeys {
  constructor(readonly prefix = "strata") {}
  /** BullMQ's own key prefix. */
  get bullPrefix(): string {
    return `${this.prefix}:bull`;
  }
  readonly queueName = "builds";
  events(buildId: string, token: string): string {
    return `${this.prefix}:build:${buildId}:${token}`;
  }
  stepLock(key: string): string {
    return `${this.prefix}:lock:${key}`;
  }
  /** The join secret every server of this queue keys its join HMACs (and so its job ids) with. */
  get joinSecret(): string {
    return `${this.prefix}:join-secret`;
  }
}

/** Default job options: removed when finished; retried (from the start) when a worker gives a job back. */
export const JOB_OPTIONS: JobsOptions = {
  removeOnComplete: true,
  removeOnFail: true,
  attempts: 3,
  backoff: { type: "fixed", delay: 500 },
};

/** What the server hears while a queued build runs. */
export interface QueuedRunHandlers {
  /** A log line (in order; lines of a retried attempt follow the earlier attempt's). */
  line(line: string): void;
  /** The store scope (tenant) of the build. */
  scope?: string;
  /** A worker took the job. */
  started(worker: string, attempt: number): void;
  signal?: AbortSignal;
}

interface Follow {
  id: string;
  buildId: string;
  key: string;
  lastId: string;
  handlers: QueuedRunHandlers;
  resolve(o: BuildOutcome): void;
  reject(e: unknown): void;
  lastStateCheck: number;
  /** Consecutive state checks that found no job (and no `done`). */
  missing: number;
  /** Checks the stream's entries (signed by the job's workers). */
  verifier: EventVerifier;
  /** Entries ignored because they did not verify. */
  rejected: number;
  /** One of them was a `done`. */
  rejectedDone: boolean;
}

/** How many ignored entries of one stream are logged one by one (a flood of forged entries is summed up). */
const REJECTS_LOGGED = 5;

/** How often a followed build's job state is checked (to notice a job that vanished without a result). */
const STATE_CHECK_MS = 2000;

/** The server's side of the queue: enqueue builds, follow their streams. */
export class BuildQueue {
  readonly keys: RedisKeys;
  readonly url: string;
  /** Secret values of the jobs this service queued and follows, for their workers (job-secrets.ts). */
  readonly secrets = new HeldSecrets();
  readonly #queue: Queue<BuildJobData, BuildOutcome>;
  readonly #redis: Redis;
  readonly #reader: Redis;
  readonly #follows = new Map<string, Follow>();
  #loop?: Promise<void>;
  #closed = false;
  readonly #log: (line: string) => void;
  /** Signs jobs and checks events (queue-signing.ts). */
  readonly #signingKey: Buffer;

  private constructor(target: RedisTarget, keys: RedisKeys, log: (line: string) => void, signingKey: Buffer) {
    this.url = target.url;
    this.keys = keys;
    this.#log = log;
    this.#signingKey = signingKey;
    this.#redis = openRedis(target, "strata-serve");
    this.#reader = openRedis(target, "strata-serve-reader", { blocking: true });
    // Connection options, not a client: BullMQ then owns (and closes) the connections it makes.
    this.#queue = new Queue<BuildJobData, BuildOutcome>(keys.queueName, {
      connection: bullConnection(target, "strata-serve-queue"),
      prefix: keys.bullPrefix,
    });
    this.#queue.on("error", (e) => this.#log(`build queue: ${e instanceof Error ? e.message : String(e)}`));
  }

  /**
   * Connects to Redis (fails clearly if it does not answer, or answers without a password and the target is not
   * `insecure`: see redis-connect.ts). `signingKey` is `queueSigningKey(<worker token>)`, as the workers have it.
   */
  static async connect(
    target: RedisTarget | string,
    opts: { prefix?: string; log?: (line: string) => void; signingKey: Buffer },
  ): Promise<BuildQueue> {
    const t = toTarget(target);
    const log = opts.log ?? ((l: string) => process.stderr.write(l + "\n"));
    const q = new BuildQueue(t, new RedisKeys(opts.prefix), log, opts.signingKey);
    try {
      await checkRedis(q.#redis, t.url);
      await requireRedisAuth(t);
    } catch (e) {
      await q.close();
      throw e;
    }
    return q;
  }

  /**
   * The join secret shared by every server of this queue (made by the first, kept in Redis): identical requests of
   * a tenant on two servers then get the same join key, so one job. Only a server's own HMACs use it.
   */
  async joinSecret(): Promise<Buffer> {
    const key = this.keys.joinSecret;
    await this.#redis.set(key, randomBytes(32).toString("hex"), "NX");
    const hex = await this.#redis.get(key);
    if (!hex || !/^[0-9a-f]{64}$/.test(hex))
      throw new QueueError(
        `the join secret in Redis (${key}) is missing or malformed; delete it and restart the servers`,
      );
    return Buffer.from(hex, "hex");
  }

  /** Jobs waiting, running, … (for tests and diagnostics). */
  async counts(): Promise<Record<string, number>> {
    return this.#queue.getJobCounts("waiting", "active", "delayed", "completed", "failed", "prioritized");
  }

  /**
   * Runs a build on the workers: enqueues it (or joins the job of that id already queued or running) and follows
   * its stream until the outcome. Rejects only when Redis fails or `signal` aborts.
   */
  async run(buildId: string, request: BuildRequest, handlers: QueuedRunHandlers): Promise<BuildOutcome> {
    if (this.#closed) throw new QueueError("the build queue is closed");
    const mine = randomBytes(8).toString("hex");
    const { request: stripped, secrets } = splitSecrets(request);
    // Held before the job exists, so a worker that takes it at once finds them; released when we stop following.
    if (secrets) this.secrets.hold(buildId, mine, requestDigest(stripped), secrets);
    try {
      for (let attempt = 1; ; attempt++) {
        const claims = {
          buildId,
          token: mine,
          requestDigest: requestDigest(stripped),
          hasSecrets: Boolean(secrets),
          ...(handlers.scope !== undefined ? { scope: handlers.scope } : {}),
        };
        const data: BuildJobData = {
          format: "strata-job/3",
          buildId,
          token: mine,
          request: stripped,
          hasSecrets: claims.hasSecrets,
          ...(handlers.scope !== undefined ? { scope: handlers.scope } : {}),
          enqueuedAt: new Date().toISOString(),
          mac: signJob(this.#signingKey, claims),
        };
        try {
          await this.#queue.add("build", data, { ...JOB_OPTIONS, jobId: buildId });
        } catch (e) {
          throw new QueueError(
            `could not queue build ${buildId} in Redis at ${redactUrl(this.url)}: ${e instanceof Error ? e.message : String(e)}`,
            { cause: e },
          );
        }
        // The job that has this id now: ours, or one that was already there (its token names its stream).
        const job = await this.#queue.getJob(buildId);
        const token =
          job?.data?.token ?? ((await this.#redis.exists(this.keys.events(buildId, mine))) ? mine : undefined);
        if (token) {
          // Joined a job another request queued: its worker fetches that request's values, not ours.
          if (token !== mine) this.secrets.release(buildId, mine);
          return await this.#follow(buildId, token, handlers);
        }
        // The job finished and was removed between our add and our look: queue it again (all cache hits by now).
        if (attempt >= 5)
          throw new QueueError(
            `build ${buildId}: its job kept disappearing from the queue before it could be followed`,
          );
      }
    } finally {
      this.secrets.release(buildId, mine);
    }
  }

  #follow(buildId: string, token: string, handlers: QueuedRunHandlers): Promise<BuildOutcome> {
    const key = this.keys.events(buildId, token);
    return new Promise<BuildOutcome>((resolve, reject) => {
      const id = `${key}#${randomBytes(4).toString("hex")}`;
      const done = () => {
        this.#follows.delete(id);
        handlers.signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        done();
        reject(handlers.signal?.reason ?? new QueueError("stopped following the build"));
      };
      if (handlers.signal?.aborted) return onAbort();
      handlers.signal?.addEventListener("abort", onAbort, { once: true });
      this.#follows.set(id, {
        id,
        buildId,
        key,
        lastId: "0",
        handlers,
        resolve: (o) => {
          done();
          resolve(o);
        },
        reject: (e) => {
          done();
          reject(e);
        },
        lastStateCheck: Date.now(),
        missing: 0,
        verifier: new EventVerifier(this.#signingKey, { buildId, token }),
        rejected: 0,
        rejectedDone: false,
      });
      this.#loop ??= this.#readLoop().finally(() => (this.#loop = undefined));
    });
  }

  /** One reader for every followed stream: XREAD BLOCK over all of them, dispatching entries in order. */
  async #readLoop(): Promise<void> {
    let failures = 0;
    while (!this.#closed && this.#follows.size) {
      const follows = [...this.#follows.values()];
      let reply: [string, [string, string[]][]][] | null;
      try {
        reply = (await this.#reader.xread(
          "COUNT",
          1000,
          "BLOCK",
          250,
          "STREAMS",
          ...follows.map((f) => f.key),
          ...follows.map((f) => f.lastId),
        )) as [string, [string, string[]][]][] | null;
        failures = 0;
      } catch (e) {
        if (this.#closed) return;
        if (++failures >= 50) {
          for (const f of follows)
            f.reject(
              new QueueError(
                `lost Redis at ${redactUrl(this.url)} while following builds: ${e instanceof Error ? e.message : String(e)}`,
                { cause: e },
              ),
            );
          return;
        }
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      const byKey = new Map(reply?.map(([k, entries]) => [k, entries]) ?? []);
      for (const f of follows) {
        if (!this.#follows.has(f.id)) continue;
        const entries = byKey.get(f.key) ?? [];
        for (const [entryId, fields] of entries) {
          f.lastId = entryId;
          if (this.#dispatch(f, fields)) break;
        }
      }
      await this.#checkStates();
    }
  }

  /** Handles one stream entry; true when the build is over. An entry that does not verify is logged and ignored. */
  #dispatch(f: Follow, fields: string[]): boolean {
    const checked = f.verifier.check(fields);
    if (!checked.ok) {
      if (checked.type === "done") f.rejectedDone = true;
      if (++f.rejected <= REJECTS_LOGGED)
        this.#log(
          `build ${f.buildId}: ignored ${checked.type ? `a \`${checked.type}\`` : "an"} entry of its event stream in Redis (${f.key}): its MAC does not verify (${checked.reason}). Someone with write access to Redis wrote it, or a worker whose STRATA_WORKER_TOKEN is not this service's${f.rejected === REJECTS_LOGGED ? "; further ignored entries of this build are counted, not logged" : ""}`,
        );
      return false;
    }
    const { type, data } = checked;
    try {
      if (type === "line") f.handlers.line(data);
      else if (type === "start") {
        const s = JSON.parse(data) as { worker: string; attempt: number };
        f.handlers.started(s.worker, s.attempt);
      } else if (type === "done") {
        const outcome = JSON.parse(data) as BuildOutcome;
        this.#logRejected(f);
        f.resolve(outcome);
        return true;
      }
    } catch (e) {
      f.reject(
        new QueueError(
          `build ${f.buildId}: unreadable entry in its event stream: ${e instanceof Error ? e.message : String(e)}`,
        ),
      );
      return true;
    }
    return false;
  }

  /** At the end of a build, how many entries were ignored past those logged one by one. */
  #logRejected(f: Follow): void {
    if (f.rejected > REJECTS_LOGGED)
      this.#log(
        `build ${f.buildId}: ignored ${f.rejected} entries of its event stream in all (their MACs did not verify)`,
      );
  }

  /** Fails builds whose job vanished (or failed) without a `done` entry. */
  async #checkStates(): Promise<void> {
    const now = Date.now();
    for (const f of [...this.#follows.values()]) {
      if (now - f.lastStateCheck < STATE_CHECK_MS) continue;
      f.lastStateCheck = now;
      let state: string;
      try {
        state = await this.#queue.getJobState(f.buildId);
      } catch {
        continue;
      }
      if (state !== "unknown" && state !== "failed") {
        f.missing = 0;
        continue;
      }
      // The worker writes `done` before the job finishes, so one more read tells a finished build from a lost one.
      if (++f.missing < 2) continue;
      const reply = (await this.#redis.xrange(f.key, `(${f.lastId}`, "+").catch(() => [])) as [string, string[]][];
      let over = false;
      for (const [entryId, fields] of reply) {
        f.lastId = entryId;
        if ((over = this.#dispatch(f, fields))) break;
      }
      if (over || !this.#follows.has(f.id)) continue;
      this.#logRejected(f);
      f.resolve({
        status: "failed",
        failure: f.rejectedDone
          ? {
              code: "UNVERIFIED_RESULT",
              message: `build ${f.buildId} left the queue with a result that did not verify: its \`done\` record in Redis is not signed with this service's worker key, so it was ignored. Either someone with write access to Redis forged it, or the worker that ran the build has another STRATA_WORKER_TOKEN than this service; check the workers' STRATA_WORKER_TOKEN and who can write to Redis, then try again`,
            }
          : {
              code: "WORKER_LOST",
              message: `build ${f.buildId} left the queue without a result: the workers running it stopped responding too often (or failed it); see the workers' logs, then try again`,
            },
      });
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const f of [...this.#follows.values()]) f.reject(new QueueError("the build queue was closed"));
    this.#reader.disconnect();
    await this.#loop?.catch(() => undefined);
    await this.#queue.close().catch(() => undefined);
    this.#redis.disconnect();
  }
}

/** This process's name in logs: `<host>:<pid>`. */
export function processName(): string {
  return `${os.hostname()}:${process.pid}`;
}

/**
 * Appends a build's events to its stream, batching log lines (one round trip per batch, in order). The stream
 * expires a day after its last write, an hour after `done`.
 */
export class EventWriter {
  #pending: string[][] = [];
  #flushing: Promise<void> = Promise.resolve();
  #timer?: NodeJS.Timeout;
  #failed?: unknown;

  constructor(
    private readonly redis: Redis,
    readonly key: string,
    private readonly signer: EventSigner,
  ) {}

  line(line: string): void {
    this.#push(this.signer.fields("line", line));
  }

  start(worker: string, attempt: number): Promise<void> {
    this.#push(this.signer.fields("start", JSON.stringify({ worker, attempt })));
    return this.flush();
  }

  /** Writes the outcome (after every pending line) and lets the stream expire an hour later. */
  async done(outcome: BuildOutcome): Promise<void> {
    this.#push(this.signer.fields("done", JSON.stringify(outcome)));
    await this.flush();
    if (this.#failed) throw this.#failed;
    await this.redis.expire(this.key, 3600);
  }

  #push(fields: string[]): void {
    this.#pending.push(fields);
    if (this.#pending.length >= 200) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), 50);
  }

  /** Sends what is pending; resolves once it (and every earlier batch) is written. */
  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#pending;
    this.#pending = [];
    if (!batch.length) return this.#flushing;
    this.#flushing = this.#flushing
      .then(async () => {
        const p = this.redis.pipeline();
        for (const fields of batch) p.xadd(this.key, "MAXLEN", "~", 200_000, "*", ...fields);
        p.expire(this.key, 24 * 3600);
        const results = await p.exec();
        const err = results?.find(([e]) => e)?.[0];
        if (err) throw err;
      })
      .catch((e: unknown) => {
        this.#failed ??= e;
      });
    return this.#flushing;
  }
}
