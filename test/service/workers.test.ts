// Scale-out: two build services (in this process) queue builds in a real Redis (Debian's redis-server, loopback), and
// three `strata worker` child processes take them, all on one S3 store (s3rver, loopback). 30 mixed requests spread
// over both services complete, with every layer built once across the workers (sandboxes counted per worker with
// STRATA_SANDBOX_COUNTER); a worker killed with SIGKILL mid-build has its job retried by another worker, whose image
// is right (run it) and its secret reached both attempts (fetched from the service each time: Redis holds no values);
// a worker restarted on the dead one's cache reclaims what it left. Redis requires a password.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { promises as fsp, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { Secret } from "../../src/index.js";
import { reapStaleContainers } from "../../src/sandbox/runc.js";
import type { RemoteBuiltImage } from "../../src/service/client.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { BuildService } from "../../src/service/server.js";
import { S3Store } from "../../src/store/s3/index.js";
import { startRedis, type TestRedis } from "../support/redis.js";
import { closedPort, startS3, type TestS3 } from "../support/s3.js";
import { busyboxBase, registerImplicitToken, spawnServe, testTenantOptions } from "../support/service.js";
import { nonce, REPO_ROOT, strata } from "../support/strata.js";

let redis: TestRedis;
let s3: TestS3;
/** The services' and workers' shared credential for fetching builds' secret values. */
const WORKER_TOKEN = `worker-${nonce()}-${"w".repeat(32)}`;
let work: string;
const prefix = `workers-${nonce()}`;
const services: { url: string; log: string[]; stderr?: () => string; close: () => Promise<void> }[] = [];
const workers: WorkerProc[] = [];
const dirs: string[] = [];

interface WorkerProc {
  index: number;
  child: ChildProcess;
  name: string;
  pid: number;
  home: string;
  counter: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** The store environment every process of this test shares (the S3 bucket under this test's prefix). */
function s3Env(): Record<string, string> {
  return {
    STRATA_S3_BUCKET: s3.bucket,
    STRATA_S3_ENDPOINT: s3.endpoint,
    STRATA_S3_PREFIX: prefix,
    AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
    AWS_REGION: s3.region,
  };
}

/** `strata worker` (cmdWorker) as a child process with its own local cache and sandbox counter. */
async function spawnWorker(index: number, home?: string): Promise<WorkerProc> {
  const dir = home ?? path.join(work, `worker-${index}`);
  await fsp.mkdir(dir, { recursive: true });
  const counter = path.join(dir, "sandboxes");
  await fsp.appendFile(counter, "");
  const args = [
    "--concurrency",
    "3",
    "--job-lock",
    "3s",
    "--stalled-interval",
    "1s",
    "--step-lock",
    "4s",
    "--grace",
    "5s",
  ];
  const script = `import(${JSON.stringify(path.join(REPO_ROOT, "dist/src/cli/worker.js"))}).then((m) => m.cmdWorker(${JSON.stringify(args)})).then((c) => process.exit(c), (e) => { console.error(e); process.exit(70); });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: {
      ...process.env,
      ...s3Env(),
      STRATA_REDIS_URL: redis.url,
      STRATA_WORKER_TOKEN: WORKER_TOKEN,
      STRATA_SERVICE_URL: services.map((s) => s.url).join(","),
      STRATA_HOME: dir,
      STRATA_S3_CACHE_DIR: path.join(dir, "cache"),
      STRATA_SANDBOX_COUNTER: counter,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  const name = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /^(\S+)\n/m.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`strata worker exited (${code}) before taking jobs:\n${stderr}`)));
  });
  const w: WorkerProc = { index, child, name, pid: child.pid!, home: dir, counter, stderr: () => stderr, exited };
  workers.push(w);
  return w;
}

const sandboxes = (w: WorkerProc) => readFileSync(w.counter, "utf8").split("\n").filter(Boolean).length;

/** Service 0 in this process (BuildService with `redisUrl`), service 1 `strata serve` with STRATA_REDIS_URL. */
async function startServices(): Promise<void> {
  const store = await S3Store.open({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: s3.credentials,
    prefix,
    localRoot: path.join(work, "server-0"),
  });
  const log: string[] = [];
  const service = await BuildService.create({
    store,
    redisUrl: redis.url,
    workerToken: WORKER_TOKEN,
    log: (l) => log.push(l),
    ...testTenantOptions(),
  });
  services.push({
    url: registerImplicitToken(await service.listen(0, "127.0.0.1")),
    log,
    close: async () => {
      await service.close(5000);
      store.close();
    },
  });
  const home = path.join(work, "server-1");
  const served = await spawnServe({
    ...s3Env(),
    STRATA_REDIS_URL: redis.url,
    STRATA_WORKER_TOKEN: WORKER_TOKEN,
    STRATA_HOME: home,
    STRATA_S3_CACHE_DIR: path.join(home, "cache"),
  });
  services.push({
    url: served.url,
    log: [],
    stderr: served.stderr,
    close: async () => {
      served.child.kill("SIGTERM");
      assert.equal(await served.exited, 0, served.stderr());
    },
  });
}

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-workers-"));
  redis = await startRedis();
  s3 = await startS3();
  await startServices();
  for (let i = 0; i < 3; i++) await spawnWorker(i);
});

after(async () => {
  for (const s of services) await s.close().catch(() => undefined);
  for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGTERM");
  await Promise.all(workers.map((w) => Promise.race([w.exited, new Promise((r) => setTimeout(r, 10_000))])));
  for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
  // Containers of a killed worker that nothing restarted, and any mount left under our dirs.
  await reapStaleContainers();
  const mounts = (await fsp.readFile("/proc/self/mounts", "utf8"))
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .filter((m) => m.startsWith(work + "/"));
  for (const m of mounts.sort().reverse()) spawn("umount", ["-l", m], { stdio: "ignore" });
  await redis?.stop();
  await s3?.stop();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
});

test("30 mixed builds over two services and three workers: all complete, every layer built once", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const shared = base.runCommands("sleep 0.3; echo shared > /shared");
  const defs = Array.from({ length: 12 }, (_, d) =>
    shared
      .runCommands(`echo a${d % 4} > /a`)
      .runCommands(`echo b${d} > /b`)
      .cmd(["cat", "/b"]),
  );
  const before = workers.map(sandboxes);
  const t0 = Date.now();
  const results: RemoteBuiltImage[] = await Promise.all(
    // Definition i % 12 from service ⌊i / 12⌋ % 2: every definition is asked of both services.
    Array.from({ length: 30 }, (_, i) =>
      remoteBuildImage(defs[i % 12]!, {
        server: services[Math.floor(i / 12) % 2]!.url,
        statCache: false,
        log: () => undefined,
      }),
    ),
  );
  const seconds = (Date.now() - t0) / 1000;
  // The same definition got the same image, whichever service was asked.
  for (let d = 0; d < 12; d++) {
    const ids = new Set(results.filter((_, i) => i % 12 === d).map((r) => r.imageId));
    assert.equal(ids.size, 1, `definition ${d}: one image`);
  }
  assert.equal(new Set(results.map((r) => r.imageId)).size, 12);
  // Each step key has one image across all builds: no step was built twice (a rebuild gets a new id).
  const byKey = new Map<string, Set<string>>();
  for (const r of results) for (const s of r.steps) byKey.set(s.key, (byKey.get(s.key) ?? new Set()).add(s.imageId));
  for (const [key, ids] of byKey) assert.equal(ids.size, 1, `step ${key} has one image`);
  // Sandboxes across the workers: one per distinct RUN step (1 shared + 4 `a` variants + 12 `b` steps).
  const runKeys = new Set(
    results.flatMap((r) => r.steps.filter((s) => s.description.startsWith("runCommands")).map((s) => s.key)),
  );
  assert.equal(runKeys.size, 17);
  const ran = workers.map((w, i) => sandboxes(w) - before[i]!);
  assert.equal(
    ran.reduce((a, b) => a + b, 0),
    runKeys.size,
    `sandboxes per worker ${JSON.stringify(ran)}: each RUN step once`,
  );
  assert.ok(ran.filter((n) => n > 0).length >= 2, `the work was shared: ${JSON.stringify(ran)}`);
  // Both services queued each definition under the same job id: one job per definition ran.
  const jobs = workers.reduce((n, w) => n + (w.stderr().match(/: build [0-9a-f]{64} started/g)?.length ?? 0), 0);
  assert.equal(jobs, 12, "the two services' requests for a definition joined one job");
  assert.match(
    services[1]!.stderr!(),
    /builds run on `strata worker` processes: queue in Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+/,
  );
  process.stderr.write(
    `# 30 builds (12 definitions, 17 RUN steps) in ${seconds.toFixed(1)}s; ${jobs} jobs; sandboxes per worker ${JSON.stringify(ran)}\n`,
  );
  // The final images are in S3 and run.
  const home = await fsp.mkdtemp(path.join(work, "runner-"));
  for (const d of [0, 7]) {
    const r = await strata(["run", results[d]!.imageId, "--", "sh", "-c", "cat /shared /a /b"], {
      home,
      env: { ...s3Env(), STRATA_S3_CACHE_DIR: path.join(home, "cache") },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `shared\na${d % 4}\nb${d}\n`);
  }
});

test("a worker killed with SIGKILL mid-build: another worker retries its job and the image is right", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const tag = nonce();
  // The sleeping step uses a secret: the worker that takes the job over fetches its value from the service again.
  const killToken = `kill-${nonce()}`;
  const kt = createHash("sha256").update(killToken).digest("hex").slice(0, 16);
  const image = base
    .runCommands("echo before > /before")
    .runCommands(
      `echo "kt=$(printf %s "$KILL_TOKEN" | busybox sha256sum | busybox cut -c1-16)"; echo started-${tag}; sleep 6; echo after > /after`,
      { secrets: [Secret.fromObject({ KILL_TOKEN: killToken })] },
    )
    .runCommands("cat /before /after > /both");
  const lines: string[] = [];
  const build = remoteBuildImage(image, { server: services[0]!.url, statCache: false, log: (l) => lines.push(l) });
  const outcome = build.then(
    (r) => r,
    (e: unknown) => e,
  );
  const t0 = Date.now();
  while (!lines.some((l) => l.trim() === `started-${tag}`)) {
    if (Date.now() - t0 > 60_000) throw new Error(`the sleeping step never started:\n${lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const took = lines.map((l) => /^=> Worker (\S+) took the build$/.exec(l)?.[1]).find(Boolean);
  const victim = workers.find((w) => w.name === took);
  assert.ok(victim, `the build names the worker that took it (${took})`);
  victim.child.kill("SIGKILL");
  const killedAt = Date.now();
  const result = await outcome;
  assert.ok(!(result instanceof Error), `the build succeeded after the kill: ${String(result)}\n${lines.join("\n")}`);
  const built = result as RemoteBuiltImage;
  const over = lines.map((l) => /^=> Worker (\S+) took the build over \(attempt (\d+)\)/.exec(l)).find(Boolean);
  assert.ok(over, `the log says another worker took the build over:\n${lines.join("\n")}`);
  assert.notEqual(over[1], victim.name);
  assert.equal(
    lines.filter((l) => l.trim() === `started-${tag}`).length,
    2,
    "the interrupted step ran again on the new worker",
  );
  assert.equal(lines.filter((l) => l.trim() === `kt=${kt}`).length, 2, "both attempts got the secret's value");
  process.stderr.write(
    `# retried on ${over[1]} (attempt ${over[2]}); finished ${((Date.now() - killedAt) / 1000).toFixed(1)}s after the kill\n`,
  );
  const home = await fsp.mkdtemp(path.join(work, "runner-"));
  const r = await strata(["run", built.imageId, "--", "cat", "/both"], {
    home,
    env: { ...s3Env(), STRATA_S3_CACHE_DIR: path.join(home, "cache") },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "before\nafter\n");

  // A worker started on the dead one's machine (its cache dir) reclaims the dead build's work dir, mounts and container.
  assert.equal(await victim.exited, null);
  // Mid-RUN the step's files are mounted in its runc bundle (the user namespace's view), named after the worker's pid;
  // any builder on this machine may reap those once the worker is dead, so the debris this test can rely on is the
  // step's work dir in the dead worker's own store.
  const victimMounts = async () =>
    (await fsp.readFile("/proc/self/mounts", "utf8"))
      .split("\n")
      .filter((l) => l.includes(victim.home + "/") || l.includes(`/strata-bundles/strata-${victim.child.pid}-`)).length;
  const victimWorkDirs = async () => {
    const tmp = path.join(victim.home, "cache", "tmp");
    return (await fsp.readdir(tmp).catch(() => [] as string[])).filter((n) => n.includes(`-${victim.child.pid}-`))
      .length;
  };
  assert.ok((await victimWorkDirs()) >= 1, `the killed worker left its step's work dir (in ${victim.home}/cache/tmp)`);
  const replacement = await spawnWorker(3, victim.home);
  assert.ok(replacement.name);
  assert.equal(await victimMounts(), 0, "the replacement reclaimed the dead build's mounts");
  assert.equal(await victimWorkDirs(), 0, "the replacement reclaimed the dead build's work dir");
});

test("strata worker refuses to start without STRATA_REDIS_URL (exit 2) or with Redis unreachable (exit 1)", async () => {
  const run = (env: Record<string, string>) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const script = `import(${JSON.stringify(path.join(REPO_ROOT, "dist/src/cli/worker.js"))}).then((m) => m.cmdWorker([])).then((c) => process.exit(c));`;
      const e: NodeJS.ProcessEnv = {
        ...process.env,
        ...s3Env(),
        STRATA_HOME: path.join(work, "refused"),
        STRATA_WORKER_TOKEN: WORKER_TOKEN,
        STRATA_SERVICE_URL: services[0]!.url,
        ...env,
      };
      if (!env.STRATA_REDIS_URL) delete e.STRATA_REDIS_URL;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        env: e,
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
      child.on("exit", (code) => resolve({ code, stderr }));
    });
  const missing = await run({});
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /STRATA_REDIS_URL is not set/);
  const down = await run({ STRATA_REDIS_URL: `redis://127.0.0.1:${await closedPort()}` });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+/);
});

test("SIGTERM: a worker finishes its running build, then exits 0", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const tag = nonce();
  const lines: string[] = [];
  const build = remoteBuildImage(base.runCommands(`echo go-${tag}; sleep 1; echo done > /done`), {
    server: services[1]!.url,
    statCache: false,
    log: (l) => lines.push(l),
  });
  const t0 = Date.now();
  while (!lines.some((l) => l.trim() === `go-${tag}`)) {
    if (Date.now() - t0 > 60_000) throw new Error(`the build never started:\n${lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const took = lines.map((l) => /^=> Worker (\S+) took the build$/.exec(l)?.[1]).find(Boolean);
  const w = workers.find((x) => x.name === took && x.child.exitCode === null)!;
  assert.ok(w);
  w.child.kill("SIGTERM");
  const built = await build;
  assert.ok(built.imageId);
  assert.ok(!lines.some((l) => /took the build over/.test(l)), "finished by the same worker");
  assert.equal(await w.exited, 0, w.stderr());
  assert.match(w.stderr(), /SIGTERM: taking no more builds/);
});
