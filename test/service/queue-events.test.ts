// The worker → service channel of queued builds can be trusted. A build service (in this process) queues builds in a
// real Redis (password required) and `strata worker` child processes run them on the same local store.
//
// - Forged events: someone with Redis access appends a `done` claiming success with an image id of their choosing (and
//   a log line) to a running build's event stream, and replays a real, signed `done` of another build into it: the
//   service ignores all three (and says so in its log), and the client gets the image its worker really built.
// - A build whose only `done` is forged (its job then removed from the queue) fails with an error that says the
//   record did not verify, rather than handing out the forged image id or a generic "worker lost".
// - A worker fetches a queued build's secret values from an `https://` service whose certificate a private CA signed,
//   trusting it through STRATA_CA_FILE (the same setting as `strata build`'s).
// - A job rewritten in Redis (moved to another tenant's scope) is refused by the worker: the service signed the job.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import { after, before, test } from "node:test";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { Secret } from "../../src/index.js";
import type { BuildJobData } from "../../src/service/queue.js";
import { reapStaleContainers } from "../../src/sandbox/runc.js";
import { startRedis, type TestRedis } from "../support/redis.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, startService, type TestService } from "../support/service.js";
import { nonce, tempDir } from "../support/strata.js";
import { issueServerCert, makeTestCa } from "../support/tls.js";
import { spawnWorker as startWorker, type WorkerProc } from "../support/worker.js";

const WORKER_TOKEN = randomBytes(32).toString("hex");
const CLIENT_TOKEN = randomBytes(16).toString("hex");
const prefix = `qevents-${nonce()}`;
let redis: TestRedis;
let redisClient: Redis;
let home: string;
let service: TestService;
const children: ChildProcess[] = [];
const dirs: string[] = [];
const services: TestService[] = [];

/** `strata worker` in a child process on this file's store, Redis and prefix; resolves once it takes jobs. */
function spawnWorker(env: Record<string, string>): Promise<WorkerProc> {
  const base = { STRATA_HOME: home, STRATA_REDIS_URL: redis.url, STRATA_REDIS_PREFIX: prefix };
  return startWorker({ ...base, STRATA_WORKER_TOKEN: WORKER_TOKEN, ...env }, [], children);
}

async function stopWorker(w: WorkerProc): Promise<void> {
  w.child.kill("SIGTERM");
  assert.equal(await w.exited, 0, w.stderr());
}

/** The job of the one build `s` has queued or running, as Redis holds it (its id is the job id). */
async function queuedJob(s: TestService, redisPrefix: string): Promise<BuildJobData & { jobId: string }> {
  const t0 = Date.now();
  for (;;) {
    const b = s.service.builds.active[0];
    const jobId = b?.jobId ?? b?.id;
    const raw = jobId ? await redisClient.hget(`${redisPrefix}:bull:builds:${jobId}`, "data") : null;
    if (raw) return { ...(JSON.parse(raw) as BuildJobData), jobId: jobId! };
    if (Date.now() - t0 > 30_000) throw new Error("the build's job never appeared in Redis");
    await new Promise((r) => setTimeout(r, 50));
  }
}

const streamKey = (redisPrefix: string, job: { jobId: string; token: string }) =>
  `${redisPrefix}:build:${job.jobId}:${job.token}`;

/** A `done` entry claiming success with `imageId` (as a worker without the key would write it). */
function forgedDone(imageId: string): string[] {
  const outcome = {
    status: "succeeded",
    result: { imageId, steps: [{ index: 1, description: "forged", cached: true, seconds: 0, key: "k", imageId }] },
  };
  return ["t", "done", "d", JSON.stringify(outcome)];
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  redis = await startRedis();
  home = await tempDir("strata-qevents-");
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: 3 });
  service = await startService({
    home,
    token: CLIENT_TOKEN,
    redisUrl: redis.url,
    redisPrefix: prefix,
    workerToken: WORKER_TOKEN,
  });
  services.push(service);
});

after(async () => {
  for (const s of services) await s.close().catch(() => undefined);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await reapStaleContainers();
  redisClient?.disconnect();
  await redis?.stop();
  for (const d of [...dirs, home]) if (d) await fsp.rm(d, { recursive: true, force: true }).catch(() => undefined);
});

/** The `done` entry of a finished build's stream (fields as written). */
let signedDoneOfAnotherBuild: string[] | undefined;
let imageOfAnotherBuild: string | undefined;

test("forged and replayed `done` entries in a running build's stream are ignored: the client gets its real image", async () => {
  const worker = await spawnWorker({ STRATA_SERVICE_URL: service.url });
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const build = (cmd: string) => {
    const lines: string[] = [];
    const result = remoteBuildImage(base.runCommands(cmd), {
      server: service.url,
      token: CLIENT_TOKEN,
      statCache: false,
      log: (l) => lines.push(l),
    });
    return { lines, result };
  };

  // Another build first: its stream keeps a real, signed `done` (for an hour).
  const other = build(`echo other-${nonce()} > /o`);
  imageOfAnotherBuild = (await other.result).imageId;
  const [, streams] = await redisClient.scan("0", "MATCH", `${prefix}:build:*`, "COUNT", 1000);
  assert.equal(streams.length, 1, "one build's stream");
  const otherEntries = await redisClient.xrange(streams[0]!, "-", "+");
  signedDoneOfAnotherBuild = otherEntries.find(([, f]) => f[1] === "done")?.[1];
  assert.ok(signedDoneOfAnotherBuild, "the finished build's stream has its done entry");

  const tag = nonce();
  const victim = build(`echo started-${tag}; sleep 4; echo real-${tag} > /real`);
  await waitFor("the sleeping step", () => victim.lines.some((l) => l.trim() === `started-${tag}`));
  const job = await queuedJob(service, prefix);
  const key = streamKey(prefix, job);
  const forgedImage = `sha256:${"f".repeat(64)}`;
  await redisClient.xadd(key, "*", "t", "line", "d", `FORGED-${tag}`);
  await redisClient.xadd(key, "*", ...forgedDone(forgedImage));
  await redisClient.xadd(key, "*", ...signedDoneOfAnotherBuild);

  const built = await victim.result;
  assert.notEqual(built.imageId, forgedImage, "the forged image id was not handed out");
  assert.notEqual(built.imageId, imageOfAnotherBuild, "the replayed done of another build was not taken");
  assert.ok(
    built.steps.some((s) => s.description.includes(`real-${tag}`)),
    "the result is the worker's own",
  );
  assert.ok(!victim.lines.some((l) => l.includes(`FORGED-${tag}`)), "the forged log line was not shown");
  const ignored = service.serverLog.filter((l) => l.includes(job.jobId) && /does not verify/.test(l));
  assert.ok(ignored.length >= 1, `the service logged the ignored entries:\n${service.serverLog.join("\n")}`);
  await stopWorker(worker);
});

test("a build whose only `done` is forged fails with an error saying so (no worker runs it)", async () => {
  assert.ok(signedDoneOfAnotherBuild, "runs after the first test");
  const p2 = `${prefix}-noworker`;
  const s2 = await startService({
    token: CLIENT_TOKEN,
    redisUrl: redis.url,
    redisPrefix: p2,
    workerToken: WORKER_TOKEN,
  });
  services.push(s2);
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const built = remoteBuildImage(base.runCommands(`echo never-${nonce()} > /n`), {
    server: s2.url,
    token: CLIENT_TOKEN,
    statCache: false,
    log: () => undefined,
  }).then(
    (r) => r,
    (e: unknown) => e as Error,
  );
  const job = await queuedJob(s2, p2);
  const key = streamKey(p2, job);
  await redisClient.xadd(key, "*", "t", "start", "d", JSON.stringify({ worker: "forger", attempt: 1 }));
  await redisClient.xadd(key, "*", ...forgedDone(`sha256:${"e".repeat(64)}`));
  await redisClient.xadd(key, "*", ...signedDoneOfAnotherBuild!);
  // The job leaves the queue (as when a worker finishes it): the service decides from what the stream holds.
  const bull = new Queue("builds", {
    connection: { host: "127.0.0.1", port: redis.port, ...(redis.password ? { password: redis.password } : {}) },
    prefix: `${p2}:bull`,
  });
  try {
    await (await bull.getJob(job.jobId))?.remove();
  } finally {
    await bull.close();
  }
  const r = await built;
  assert.ok(r instanceof Error, `the build did not succeed: ${JSON.stringify(r)}`);
  assert.match(r.message, /did not verify/);
  assert.match(r.message, /STRATA_WORKER_TOKEN/);
  assert.doesNotMatch(r.message, /eeeeeeee/);
});

test("a job rewritten in Redis (moved to another tenant's scope) is refused by the worker", async () => {
  const p4 = `${prefix}-tamper`;
  const s4 = await startService({
    token: CLIENT_TOKEN,
    redisUrl: redis.url,
    redisPrefix: p4,
    workerToken: WORKER_TOKEN,
  });
  services.push(s4);
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const tag = nonce();
  const built = remoteBuildImage(base.runCommands(`echo moved-${tag} > /m`), {
    server: s4.url,
    token: CLIENT_TOKEN,
    statCache: false,
    log: () => undefined,
  }).then(
    (r) => r,
    (e: unknown) => e as Error,
  );
  const job = await queuedJob(s4, p4);
  const jobKey = `${p4}:bull:builds:${job.jobId}`;
  const { jobId: _, ...data } = job;
  await redisClient.hset(jobKey, "data", JSON.stringify({ ...data, scope: "victim" }));
  const worker = await spawnWorker({ STRATA_REDIS_PREFIX: p4, STRATA_SERVICE_URL: s4.url });
  const r = await built;
  assert.ok(r instanceof Error, `the rewritten job was not built: ${JSON.stringify(r)}`);
  assert.match(worker.stderr(), new RegExp(`refused job ${job.jobId}: its MAC does not verify`));
  assert.doesNotMatch(worker.stderr(), /started \(attempt/, "the worker never started it");
  await stopWorker(worker);
});

test("a worker fetches secrets from an https:// service signed by a private CA (STRATA_CA_FILE)", async () => {
  const p3 = `${prefix}-tls`;
  const caDir = await tempDir("strata-qevents-ca-");
  dirs.push(caDir);
  const ca = await makeTestCa(caDir);
  const cert = await issueServerCert(ca, "service");
  const home3 = await tempDir("strata-qevents-tls-");
  dirs.push(home3);
  const s3 = await startService({
    home: home3,
    token: CLIENT_TOKEN,
    redisUrl: redis.url,
    redisPrefix: p3,
    workerToken: WORKER_TOKEN,
    tls: { cert: await fsp.readFile(cert.certFile), key: await fsp.readFile(cert.keyFile) },
  });
  services.push(s3);
  assert.match(s3.url, /^https:\/\//);
  const worker = await spawnWorker({
    STRATA_HOME: home3,
    STRATA_REDIS_PREFIX: p3,
    STRATA_SERVICE_URL: s3.url,
    STRATA_CA_FILE: ca.caFile,
  });
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const S = `tls-secret-${randomBytes(8).toString("hex")}`;
  const image = base.runCommands(`echo "hash=$(printf %s "$TOKEN" | busybox sha256sum | busybox cut -d' ' -f1)"`, {
    secrets: [Secret.fromObject({ TOKEN: S })],
  });
  const lines: string[] = [];
  const before = process.env.STRATA_CA_FILE;
  process.env.STRATA_CA_FILE = ca.caFile; // the client's own trust of the service
  try {
    await remoteBuildImage(image, { server: s3.url, token: CLIENT_TOKEN, statCache: false, log: (l) => lines.push(l) });
  } catch (e) {
    throw new Error(`${String(e)}\n${lines.join("\n")}\nworker:\n${worker.stderr()}`);
  } finally {
    if (before === undefined) delete process.env.STRATA_CA_FILE;
    else process.env.STRATA_CA_FILE = before;
  }
  const hash = createHash("sha256").update(S).digest("hex");
  assert.ok(
    lines.some((l) => l.trim() === `hash=${hash}`),
    `the step got the secret:\n${lines.join("\n")}`,
  );
  await stopWorker(worker);
});
