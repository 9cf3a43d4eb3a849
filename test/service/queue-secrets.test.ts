// Queued builds keep no secret value at rest. A build service (in this process) queues builds in a real Redis that
// requires a password and speaks only TLS (rediss://, a self-signed certificate made by the test); a `strata worker`
// child process runs them on the same local store. While a build holding secret value S runs a step that sleeps,
// every Redis key and every file under the store (the service's and the worker's work dirs) and Redis's dir is
// scanned: no S, in any of the forms the redactor knows (base64 …), not even the file of a secret the step mounts
// (its tmpfs lives under /run, not in the store). The step still gets S (it prints its hash); the
// lines where it prints S in base64 and %XX form arrive redacted. Attacks on the workers' secrets endpoint (no token,
// a client's token, a wrong job token, a job whose request was changed in Redis) get nothing; a job whose service
// restarted fails with SECRETS_GONE and a resubmit succeeds; an open Redis is refused.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { secretForms } from "../../src/engine/secret-forms.js";
import { Secret } from "../../src/index.js";
import { requestDigest } from "../../src/service/job-secrets.js";
import type { BuildJobData } from "../../src/service/queue.js";
import { checkRedis, openRedis } from "../../src/service/redis-connect.js";
import { BuildService } from "../../src/service/server.js";
import { LocalStore } from "../../src/store/local.js";
import { reapStaleContainers } from "../../src/sandbox/runc.js";
import { SECRETS_ROOT } from "../../src/sandbox/secret-dir.js";
import { startRedis, type TestRedis } from "../support/redis.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, raw, startService, type TestService } from "../support/service.js";
import { nonce, tempDir } from "../support/strata.js";
import { spawnWorker as startWorker, type WorkerProc } from "../support/worker.js";

const WORKER_TOKEN = randomBytes(32).toString("hex");
const CLIENT_TOKEN = randomBytes(16).toString("hex");
const prefix = `qsecrets-${nonce()}`;
let redis: TestRedis;
let home: string;
let service: TestService;
let redisClient: Redis;
const children: ChildProcess[] = [];
const dirs: string[] = [];

/** `strata worker` in a child process on the shared local store; resolves once it takes jobs. */
function spawnWorker(env: Record<string, string>, args: string[] = []): Promise<WorkerProc> {
  const base = {
    STRATA_HOME: home,
    STRATA_REDIS_URL: redis.url,
    STRATA_REDIS_CA: redis.ca!,
    STRATA_REDIS_PREFIX: prefix,
  };
  return startWorker({ ...base, STRATA_WORKER_TOKEN: WORKER_TOKEN, ...env }, args, children);
}

/** Every value in Redis: all keys (SCAN), read by type. */
async function redisDump(r: Redis): Promise<{ keys: number; text: string }> {
  let cursor = "0";
  const keys: string[] = [];
  do {
    const [next, batch] = await r.scan(cursor, "COUNT", 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  const parts: string[] = [];
  for (const k of keys) {
    const type = await r.type(k);
    parts.push(`${type} ${k}`);
    if (type === "string") parts.push((await r.get(k)) ?? "");
    else if (type === "hash") parts.push(JSON.stringify(await r.hgetall(k)));
    else if (type === "list") parts.push(JSON.stringify(await r.lrange(k, 0, -1)));
    else if (type === "set") parts.push(JSON.stringify(await r.smembers(k)));
    else if (type === "zset") parts.push(JSON.stringify(await r.zrange(k, "0", "-1")));
    else if (type === "stream") parts.push(JSON.stringify(await r.xrange(k, "-", "+")));
    else parts.push(`(unread type ${type})`);
  }
  return { keys: keys.length, text: parts.join("\n") };
}

/** Every regular file under `dir` (no symlinks followed), with its bytes. */
async function filesUnder(dir: string): Promise<{ file: string; bytes: Buffer }[]> {
  const out: { file: string; bytes: Buffer }[] = [];
  const walk = async (d: string) => {
    const entries = await fsp.readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const bytes = await fsp.readFile(p).catch(() => undefined);
        if (bytes) out.push({ file: p, bytes });
      }
    }
  };
  await walk(dir);
  return out;
}

/** The forms of `s` worth looking for (long enough not to occur by chance). */
function needles(s: string): Buffer[] {
  return secretForms(s)
    .filter((f) => f.length >= 8)
    .map((f) => Buffer.from(f));
}

function findIn(haystack: Buffer, s: string): string | undefined {
  return needles(s)
    .find((n) => haystack.includes(n))
    ?.toString();
}

before(async () => {
  redis = await startRedis({ tls: true });
  home = await tempDir("strata-qsecrets-");
  redisClient = new Redis(redis.url, { tls: { ca: await fsp.readFile(redis.ca!) }, maxRetriesPerRequest: 3 });
  service = await startService({
    home,
    token: CLIENT_TOKEN,
    redisUrl: redis.url,
    redisCaFile: redis.ca!,
    redisPrefix: prefix,
    workerToken: WORKER_TOKEN,
  });
});

after(async () => {
  await service?.close().catch(() => undefined);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await reapStaleContainers();
  redisClient?.disconnect();
  await redis?.stop();
  for (const d of [...dirs, home]) if (d) await fsp.rm(d, { recursive: true, force: true }).catch(() => undefined);
});

test("a queued build holding secret S, mid-step: no S in Redis or the store; the step gets S; encoded S is redacted", async () => {
  const worker = await spawnWorker({ STRATA_SERVICE_URL: service.url });
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const tag = nonce();
  const S = `s3cr3t-${randomBytes(12).toString("hex")}/+?&=`;
  // S reaches the step twice: in its environment (`env=`), and as a file (`--mount=type=secret` without `env=`, at
  // /run/secrets/TOKEN), whose tmpfs must live outside the store while the step runs.
  const script = [
    `echo "hash=$(printf %s "$TOKEN" | busybox sha256sum | busybox cut -d' ' -f1)"`,
    `echo "filehash=$(busybox sha256sum < /run/secrets/TOKEN | busybox cut -d' ' -f1)"`,
    `echo "b64=$(printf %s "$TOKEN" | busybox base64)"`,
    `echo "b64x=$(printf x%s "$TOKEN" | busybox base64)"`,
    `echo "pct=$(printf %s "$TOKEN" | busybox od -An -tx1 | busybox tr -d ' \\n' | sed 's/../%&/g')"`,
    `echo raw=$TOKEN`,
    `echo started-${tag}`,
    "sleep 6",
    "echo done > /done",
  ].join("; ");
  const image = base.dockerfileCommands(
    [`RUN --mount=type=secret,id=TOKEN,env=TOKEN --mount=type=secret,id=TOKEN ${script}`],
    {
      secrets: [Secret.fromObject({ TOKEN: S })],
    },
  );
  const lines: string[] = [];
  const build = remoteBuildImage(image, {
    server: service.url,
    token: CLIENT_TOKEN,
    statCache: false,
    log: (l) => lines.push(l),
  }).then(
    (r) => r,
    (e: unknown) => e as Error,
  );
  const t0 = Date.now();
  while (!lines.some((l) => l.trim() === `started-${tag}`)) {
    if (Date.now() - t0 > 60_000) throw new Error(`the sleeping step never started:\n${lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const active = service.service.builds.active;
  assert.equal(active.length, 1, "one build is running");
  // The job is named by its join key (an HMAC), the build by a random id: look for the job.
  const buildId = active[0]!.jobId ?? active[0]!.id;

  // The scan, while the step sleeps.
  const dump = await redisDump(redisClient);
  assert.ok(dump.keys > 0 && dump.text.includes(buildId), "the job is in Redis");
  assert.equal(findIn(Buffer.from(dump.text), S), undefined, "no form of S in any Redis key");
  const files = [...(await filesUnder(home)), ...(await filesUnder(redis.dir)), ...(await filesUnder(dir))];
  assert.ok(files.length > 10, `scanned ${files.length} files`);
  for (const f of files) assert.equal(findIn(f.bytes, S), undefined, `no form of S in ${f.file}`);
  process.stderr.write(`# mid-build scan: ${dump.keys} Redis keys, ${files.length} files: no form of S\n`);

  // Attacks on the workers' endpoint, with the job as Redis has it.
  const job = JSON.parse((await redisClient.hget(`${prefix}:bull:builds:${buildId}`, "data"))!) as BuildJobData;
  assert.equal(job.hasSecrets, true);
  assert.ok(!JSON.stringify(job).includes(S), "the job data holds no S");
  const ask = (token: string | undefined, body: unknown) =>
    raw(service.url, "POST", `/v1/internal/jobs/${buildId}/secrets`, {
      body: JSON.stringify(body),
      ...(token ? { token } : {}),
      headers: { "content-type": "application/json" },
    });
  const right = { token: job.token, request: requestDigest(job.request) };
  const noToken = await ask(undefined, right);
  assert.equal(noToken.status, 401);
  const clientToken = await ask(CLIENT_TOKEN, right);
  assert.equal(clientToken.status, 401, "a client's token does not open the workers' endpoint");
  assert.ok(!clientToken.text.includes(S));
  const wrongJob = await ask(WORKER_TOKEN, { ...right, token: "00".repeat(8) });
  assert.equal(wrongJob.status, 404);
  // A job changed in Redis (one more step that would print the values) no longer matches what was queued.
  const tampered = structuredClone(job.request);
  tampered.steps.push({ ...tampered.steps[tampered.steps.length - 1]!, description: "runCommands cat" });
  const changed = await ask(WORKER_TOKEN, { ...right, request: requestDigest(tampered) });
  assert.equal(changed.status, 404);
  assert.equal(changed.json().error.code, "SECRETS_GONE");
  for (const r of [noToken, clientToken, wrongJob, changed]) assert.ok(!r.text.includes(S));
  const ok = await ask(WORKER_TOKEN, right);
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.headers["cache-control"], "no-store");
  assert.ok(ok.text.includes(JSON.stringify(S).slice(1, -1)), "the worker's own request gets the values");

  const result = await build;
  assert.ok(!(result instanceof Error), `the build succeeded: ${String(result)}\n${lines.join("\n")}`);
  const hash = createHash("sha256").update(S).digest("hex");
  assert.ok(
    lines.some((l) => l.trim() === `hash=${hash}`),
    `the step got S (it printed its hash):\n${lines.join("\n")}`,
  );
  assert.ok(
    lines.some((l) => l.trim() === `filehash=${hash}`),
    `the step got S as a file (it printed its hash):\n${lines.join("\n")}`,
  );
  // The secret file's tmpfs went with the step.
  const left = await fsp.readdir(SECRETS_ROOT).catch(() => [] as string[]);
  assert.deepEqual(
    left.filter((n) => n.startsWith(`strata-${worker.child.pid}-`)),
    [],
    "no secrets dir of the worker is left",
  );
  for (const key of ["b64", "b64x", "pct", "raw"]) {
    const line = lines.find((l) => l.trim().startsWith(`${key}=`));
    assert.ok(line?.includes("***"), `the ${key} line is redacted: ${line}`);
  }
  for (const l of lines) assert.equal(findIn(Buffer.from(l), S), undefined, `no form of S in the log line ${l}`);
  // After the build: the saved record and everything else.
  for (const f of await filesUnder(home)) assert.equal(findIn(f.bytes, S), undefined, `no form of S in ${f.file}`);
  assert.equal(findIn(Buffer.from((await redisDump(redisClient)).text), S), undefined);
  assert.equal(service.service.queue!.secrets.size, 0, "the service let go of the values");
  worker.child.kill("SIGTERM");
  assert.equal(await worker.exited, 0, worker.stderr());
});

test("a job whose service restarted fails with SECRETS_GONE (resubmit); the resubmitted build succeeds", async () => {
  // A prefix no worker serves yet: the job waits in Redis while its service goes away.
  const p2 = `${prefix}-restart`;
  const home2 = await tempDir("strata-qsecrets-restart-");
  dirs.push(home2);
  const opts = {
    redisUrl: redis.url,
    redisCaFile: redis.ca!,
    redisPrefix: p2,
    workerToken: WORKER_TOKEN,
    log: () => undefined,
  };
  const first = await BuildService.create({ ...opts, store: await LocalStore.open(home2) });
  const firstUrl = await first.listen(0, "127.0.0.1");
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const image = base.runCommands('test -n "$TOKEN" && echo ok > /ok', {
    secrets: [Secret.fromObject({ TOKEN: `gone-${nonce()}` })],
  });
  const lost = remoteBuildImage(image, { server: firstUrl, statCache: false, log: () => undefined }).then(
    () => undefined,
    (e: unknown) => e,
  );
  const t0 = Date.now();
  while ((await first.queue!.counts()).waiting !== 1) {
    if (Date.now() - t0 > 30_000) throw new Error("the job never reached the queue");
    await new Promise((r) => setTimeout(r, 50));
  }
  await first.close(1000);
  await lost;
  // The service comes back (a new process would be the same: nothing of the values survives it).
  const again = await BuildService.create({ ...opts, store: await LocalStore.open(home2) });
  const url = await again.listen(0, "127.0.0.1");
  try {
    const worker = await spawnWorker({ STRATA_HOME: home2, STRATA_REDIS_PREFIX: p2, STRATA_SERVICE_URL: url });
    let done: { status: string; failure?: { code: string; message: string } } | undefined;
    while (!done) {
      if (Date.now() - t0 > 60_000) throw new Error(`no outcome for the orphaned job:\n${worker.stderr()}`);
      const [, keys] = await redisClient.scan("0", "MATCH", `${p2}:build:*`, "COUNT", 1000);
      for (const k of keys) {
        for (const [, fields] of await redisClient.xrange(k, "-", "+"))
          if (fields[1] === "done") done = JSON.parse(fields[3]!) as typeof done;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(done!.status, "failed");
    assert.equal(done!.failure?.code, "SECRETS_GONE");
    assert.match(done!.failure!.message, /no build service holds their values any more.*submit the build again/);
    const built = await remoteBuildImage(image, { server: url, statCache: false, log: () => undefined });
    assert.ok(built.imageId, "the resubmitted build succeeded");
    worker.child.kill("SIGTERM");
    assert.equal(await worker.exited, 0, worker.stderr());
  } finally {
    await again.close(2000);
  }
});

test("Redis without a password is refused (service and worker), unless --insecure-redis", async () => {
  const open = await startRedis({ password: false });
  const store = await LocalStore.open(await tempDir("strata-qsecrets-open-"));
  dirs.push(store.root);
  try {
    const create = (redisUrl: string, extra: { insecureRedis?: boolean } = {}) =>
      BuildService.create({ store, redisUrl, workerToken: WORKER_TOKEN, log: () => undefined, ...extra });
    await assert.rejects(create(open.url), /has no password.*requirepass.*--insecure-redis/s);
    // A password in the URL proves nothing when Redis ignores it.
    await assert.rejects(
      create(`redis://:not-checked@127.0.0.1:${open.port}`),
      /answers commands without a password.*requirepass/s,
    );
    await (await create(open.url, { insecureRedis: true })).close(1000);
    // The right Redis, but the URL lacks the password; or the certificate is not trusted.
    await assert.rejects(
      BuildService.create({
        store,
        redisUrl: redis.urlWithoutPassword,
        redisCaFile: redis.ca!,
        workerToken: WORKER_TOKEN,
        log: () => undefined,
      }),
      /refused the connection without a password of STRATA_REDIS_URL/,
    );
    const untrusted = openRedis(redis.url, "untrusted");
    await assert.rejects(checkRedis(untrusted, redis.url, 2000), /last error: self-signed certificate/);
    untrusted.disconnect();
    // Queue mode needs a worker token of its own.
    await assert.rejects(
      BuildService.create({ store, redisUrl: redis.url, redisCaFile: redis.ca!, log: () => undefined }),
      /set STRATA_WORKER_TOKEN/,
    );
    await assert.rejects(
      BuildService.create({
        store,
        redisUrl: redis.url,
        redisCaFile: redis.ca!,
        token: WORKER_TOKEN,
        workerToken: WORKER_TOKEN,
        log: () => undefined,
      }),
      /same as STRATA_TOKEN/,
    );
    await assert.rejects(
      BuildService.create({
        store,
        redisUrl: redis.url,
        redisCaFile: redis.ca!,
        workerToken: "short",
        log: () => undefined,
      }),
      /at least 32/,
    );
    const refused = await spawnWorker({
      STRATA_REDIS_URL: open.url,
      STRATA_REDIS_CA: "",
      STRATA_SERVICE_URL: service.url,
    }).then(
      () => assert.fail("the worker started against an open Redis"),
      (e: unknown) => String(e),
    );
    assert.match(refused, /exited \(1\)[\s\S]*has no password/);
    const w = await spawnWorker({ STRATA_REDIS_URL: open.url, STRATA_REDIS_CA: "", STRATA_SERVICE_URL: service.url }, [
      "--insecure-redis",
    ]);
    w.child.kill("SIGTERM");
    assert.equal(await w.exited, 0, w.stderr());
    const noService = await spawnWorker({ STRATA_SERVICE_URL: "" }).then(
      () => assert.fail("the worker started without a service"),
      (e: unknown) => String(e),
    );
    assert.match(noService, /exited \(2\)[\s\S]*STRATA_SERVICE_URL/);
  } finally {
    await open.stop();
  }
});
