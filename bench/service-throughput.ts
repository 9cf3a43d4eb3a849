/**
 * Benchmark: throughput of distinct cold builds through the build service with 1 vs 2 `strata worker` processes.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/service-throughput.js [--builds 24] [--concurrency 2] [--runs 1] [--store s3|local]
 *
 * Needs root, runc and /usr/bin/redis-server. Per round: a fresh Redis (loopback), a fresh store (an s3rver bucket
 * prefix on loopback, or one local store shared by every process), a build service in this process with its queue
 * in that Redis, and K worker child processes (`--concurrency` builds each). A busybox base is built first (not
 * timed); then N distinct builds, each two small RUN steps on that base, are requested at once and timed until the
 * last one finished. Prints builds/s for K = 1 and K = 2 (median over --runs) and the ratio.
 */
import { randomBytes } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Image } from "../src/sdk/image.js";
import { remoteBuildImage } from "../test/support/remote-image.js";
import { BuildService } from "../src/service/server.js";
import { LocalStore } from "../src/store/local.js";
import { S3Store } from "../src/store/s3/index.js";
import type { NamedStore } from "../src/store/store.js";
import { startRedis } from "../test/support/redis.js";
import { startS3, type TestS3 } from "../test/support/s3.js";
import { makeBusyboxTree, nonce } from "../test/support/strata.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));

const { values } = parseArgs({
  options: {
    builds: { type: "string", default: "24" },
    concurrency: { type: "string", default: "2" },
    runs: { type: "string", default: "1" },
    store: { type: "string", default: "s3" },
  },
});
const N = Number(values.builds);
const CONCURRENCY = Number(values.concurrency);
const RUNS = Number(values.runs);
const STORE = values.store === "local" ? "local" : "s3";

interface Round {
  workers: number;
  seconds: number;
  buildsPerSecond: number;
  sandboxes: number[];
}

async function round(work: string, s3: TestS3 | undefined, workerCount: number): Promise<Round> {
  const redis = await startRedis();
  const prefix = `bench-${nonce()}`;
  const dir = path.join(work, `round-${prefix}`);
  await fsp.mkdir(dir, { recursive: true });
  const sharedHome = path.join(dir, "shared-home");
  const storeEnv: Record<string, string> = s3
    ? {
        STRATA_S3_BUCKET: s3.bucket,
        STRATA_S3_ENDPOINT: s3.endpoint,
        STRATA_S3_PREFIX: prefix,
        AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
        AWS_REGION: s3.region,
      }
    : { STRATA_HOME: sharedHome };
  const store: NamedStore = s3
    ? await S3Store.open({
        bucket: s3.bucket,
        endpoint: s3.endpoint,
        region: s3.region,
        credentials: s3.credentials,
        prefix,
        localRoot: path.join(dir, "server"),
      })
    : await LocalStore.open(sharedHome);
  const workerToken = randomBytes(32).toString("hex");
  const service = await BuildService.create({ store, redisUrl: redis.url, workerToken, log: () => undefined });
  const url = await service.listen(0, "127.0.0.1");
  const children: { child: ChildProcess; counter: string; exited: Promise<unknown> }[] = [];
  try {
    for (let i = 0; i < workerCount; i++) {
      const home = path.join(dir, `worker-${i}`);
      await fsp.mkdir(home, { recursive: true });
      const counter = path.join(home, "sandboxes");
      await fsp.writeFile(counter, "");
      const script = `import(${JSON.stringify(path.join(REPO, "dist/src/cli/worker.js"))}).then((m) => m.cmdWorker(["--concurrency", ${JSON.stringify(String(CONCURRENCY))}])).then((c) => process.exit(c));`;
      const env = {
        ...process.env,
        ...storeEnv,
        STRATA_REDIS_URL: redis.url,
        STRATA_WORKER_TOKEN: workerToken,
        STRATA_SERVICE_URL: url,
        STRATA_SANDBOX_COUNTER: counter,
        ...(s3 ? { STRATA_HOME: home, STRATA_S3_CACHE_DIR: path.join(home, "cache") } : {}),
      };
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let err = "";
      child.stderr!.on("data", (c: Buffer) => (err += c.toString()));
      const exited = new Promise((r) => child.on("exit", r));
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once("data", () => resolve());
        void exited.then(() => reject(new Error(`worker exited early:\n${err}`)));
      });
      children.push({ child, counter, exited });
    }
    const project = path.join(dir, "project");
    await makeBusyboxTree(path.join(project, "rootfs"));
    const base = Image.fromScratch()
      .addLocalDir(path.join(project, "rootfs"), "/", { copy: true })
      .env({ BENCH: prefix });
    await remoteBuildImage(base, { server: url, statCache: false, log: () => undefined });
    const images = Array.from({ length: N }, (_, i) =>
      base.runCommands(`echo ${i} > /i`).runCommands(`echo $((${i} * 2)) > /j`),
    );
    const t0 = process.hrtime.bigint();
    await Promise.all(
      images.map((img) => remoteBuildImage(img, { server: url, statCache: false, log: () => undefined })),
    );
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const sandboxes = await Promise.all(
      children.map(async (c) => (await fsp.readFile(c.counter, "utf8")).split("\n").filter(Boolean).length),
    );
    return { workers: workerCount, seconds, buildsPerSecond: N / seconds, sandboxes };
  } finally {
    await service.close(5000);
    for (const c of children) c.child.kill("SIGTERM");
    await Promise.all(children.map((c) => c.exited));
    if (store instanceof S3Store) store.close();
    await redis.stop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-bench-throughput-"));
  const s3 = STORE === "s3" ? await startS3() : undefined;
  try {
    process.stderr.write(
      `service throughput: ${N} distinct cold builds (2 RUN steps each on a busybox base), store ${STORE}, ${CONCURRENCY} builds per worker, ${os.cpus().length} CPUs\n`,
    );
    const results: Record<number, Round[]> = { 1: [], 2: [] };
    for (let r = 0; r < RUNS; r++) {
      for (const k of [1, 2]) {
        const res = await round(work, s3, k);
        results[k]!.push(res);
        process.stderr.write(
          `  run ${r + 1}: ${k} worker(s): ${res.seconds.toFixed(2)} s, ${res.buildsPerSecond.toFixed(2)} builds/s, sandboxes per worker ${JSON.stringify(res.sandboxes)}\n`,
        );
      }
    }
    const one = median(results[1]!.map((x) => x.buildsPerSecond));
    const two = median(results[2]!.map((x) => x.buildsPerSecond));
    process.stdout.write(`workers  builds/s  (${N} distinct cold builds, median of ${RUNS})\n`);
    process.stdout.write(
      `1        ${one.toFixed(2)}\n2        ${two.toFixed(2)}\nratio 2/1: ${(two / one).toFixed(2)}x\n`,
    );
  } finally {
    await s3?.stop();
    await fsp.rm(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
