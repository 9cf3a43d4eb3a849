// Fault injection between the build service and S3 (s3rver on loopback): a delaying proxy in front of a proxy that
// answers a share of requests with 500 / 503 SlowDown or resets them. Builds through the service still succeed (the
// store retries with backoff) and their images are whole in S3 (run from a fresh cache that talks to S3 directly).
// With S3 gone mid-build, the build fails with a message naming the S3 operation, the attempts and what to check —
// and no index entry in the bucket points at a record or blob that is not there.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { RemoteBuildError } from "../../src/service/client.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { BuildService } from "../../src/service/server.js";
import { S3Store } from "../../src/store/s3/index.js";
import type { ImageRecord, IndexEntry } from "../../src/store/store.js";
import { digestHex } from "../../src/util/digest.js";
import { startFaultProxy, startS3, type Fault, type FaultProxy, type TestS3 } from "../support/s3.js";
import { busyboxBase, registerImplicitToken, testTenantOptions } from "../support/service.js";
import { nonce, strata } from "../support/strata.js";

let s3: TestS3;
let faults: FaultProxy;
let delays: { endpoint: string; delayed: () => number; stop: () => Promise<void> };
let work: string;
let store: S3Store;
let service: BuildService;
let url: string;
let admin: S3Client;
const prefix = `faults-${nonce()}`;
const dirs: string[] = [];
let mode: "flaky" | "clean" | "down" = "flaky";

/** Every 9th request a 500, every 13th a reset, every 17th a 503 SlowDown (while flaky); everything reset when down. */
function decide(n: number): Fault {
  if (mode === "down") return "reset";
  if (mode === "clean") return "pass";
  if (n % 9 === 0) return "500";
  if (n % 13 === 0) return "reset";
  if (n % 17 === 0) return "503-slowdown";
  return "pass";
}

/** A loopback HTTP proxy that holds every 5th request back for 50–250 ms before forwarding it. */
async function startDelayProxy(target: string): Promise<typeof delays> {
  const t = new URL(target);
  let n = 0;
  let delayed = 0;
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const i = ++n;
    const wait = i % 5 === 0 ? 50 + ((i * 37) % 200) : 0;
    if (wait) delayed++;
    setTimeout(() => {
      const up = http.request(
        { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
        },
      );
      up.on("error", () => req.socket.destroy());
      req.pipe(up);
    }, wait);
  });
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    delayed: () => delayed,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-s3-faults-"));
  s3 = await startS3();
  faults = await startFaultProxy(s3.endpoint, (n) => decide(n));
  delays = await startDelayProxy(faults.endpoint);
  admin = new S3Client({ endpoint: s3.endpoint, region: s3.region, credentials: s3.credentials, forcePathStyle: true });
  store = await S3Store.open({
    bucket: s3.bucket,
    endpoint: delays.endpoint,
    region: s3.region,
    credentials: s3.credentials,
    prefix,
    localRoot: path.join(work, "server"),
    maxAttempts: 8,
    retryBaseDelayMs: 20,
    retryMaxDelayMs: 200,
    connectTimeoutMs: 1000,
    socketTimeoutMs: 5000,
  });
  service = await BuildService.create({ store, redisUrl: "", log: () => undefined, ...testTenantOptions() });
  url = registerImplicitToken(await service.listen(0, "127.0.0.1"));
});

after(async () => {
  await service?.close(5000);
  store?.close();
  admin?.destroy();
  await delays?.stop();
  await faults?.stop();
  await s3?.stop();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  await fsp.rm(work, { recursive: true, force: true });
});

/** Reads an object of the bucket directly (no proxy); undefined when missing. */
async function getJson<T>(key: string): Promise<T | undefined> {
  try {
    const r = await admin.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    return JSON.parse(await r.Body!.transformToString()) as T;
  } catch (e) {
    if ((e as { name?: string }).name === "NoSuchKey") return undefined;
    throw e;
  }
}

async function exists(key: string): Promise<boolean> {
  try {
    await admin.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
    return true;
  } catch {
    return false;
  }
}

/** Every raw index entry in the bucket names an image record, and every record every blob it names. */
async function assertIndexConsistent(): Promise<number> {
  const listed = await admin.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: `${prefix}/index/` }));
  let n = 0;
  for (const o of listed.Contents ?? []) {
    const entry = await getJson<IndexEntry>(o.Key!);
    assert.ok(entry, o.Key);
    const rec = await getJson<ImageRecord>(`${prefix}/images/${digestHex(entry.imageId)}.json`);
    assert.ok(rec, `index entry ${entry.key} names image ${entry.imageId}, which is in the bucket`);
    for (const d of [rec.configDigest, rec.manifestDigest, ...rec.layers.map((l) => l.digest)]) {
      assert.ok(
        await exists(`${prefix}/blobs/sha256/${digestHex(d)}`),
        `blob ${d} of image ${rec.id} is in the bucket`,
      );
    }
    n++;
  }
  return n;
}

test("500s, SlowDowns, resets and delays between the service and S3: builds still succeed and their images run", async () => {
  mode = "flaky";
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const images = [0, 1, 2].map((i) =>
    base.runCommands("echo shared > /shared").runCommands(`echo ${i} > /n`).cmd(["cat", "/n"]),
  );
  const results = await Promise.all(
    images.map((img) => remoteBuildImage(img, { server: url, statCache: false, log: () => undefined })),
  );
  assert.equal(new Set(results.map((r) => r.imageId)).size, 3);
  assert.ok(
    faults.counts["500"] > 0 && faults.counts.reset > 0 && faults.counts["503-slowdown"] > 0,
    `faults were injected: ${JSON.stringify(faults.counts)}`,
  );
  assert.ok(delays.delayed() > 0);
  process.stderr.write(`# injected ${JSON.stringify(faults.counts)}, ${delays.delayed()} delayed\n`);
  // The images are whole in S3: a fresh cache talking to s3rver directly runs one.
  const home = await fsp.mkdtemp(path.join(work, "runner-"));
  const env = {
    STRATA_S3_BUCKET: s3.bucket,
    STRATA_S3_ENDPOINT: s3.endpoint,
    STRATA_S3_PREFIX: prefix,
    AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
    AWS_REGION: s3.region,
    STRATA_S3_CACHE_DIR: path.join(home, "cache"),
  };
  const r = await strata(["run", results[2]!.imageId, "--", "sh", "-c", "cat /shared /n"], { home, env });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "shared\n2\n");
  assert.ok((await assertIndexConsistent()) >= 4);
});

test("S3 down mid-build: the build fails with a clear message and no index entry points at anything missing", async () => {
  mode = "clean";
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const tag = nonce();
  const lines: string[] = [];
  const build = remoteBuildImage(base.runCommands(`echo go-${tag}; sleep 1; echo x > /x`).runCommands("echo y > /y"), {
    server: url,
    statCache: false,
    log: (l) => lines.push(l),
  });
  const outcome = build.then(
    (r) => r,
    (e: unknown) => e,
  );
  const t0 = Date.now();
  while (!lines.some((l) => l.trim() === `go-${tag}`)) {
    if (Date.now() - t0 > 60_000) throw new Error(`the build never started:\n${lines.join("\n")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  mode = "down"; // every request from now on is reset
  const err = await outcome;
  mode = "clean";
  assert.ok(err instanceof RemoteBuildError, `the build failed: ${String(err)}`);
  assert.equal(err.code, "STORE");
  process.stderr.write(`# failure: ${err.message}\n`);
  assert.match(
    err.message,
    /S3 \S+ s3:\/\/strata-test\/\S+ failed after 8 attempts: .*is the S3 endpoint http:\/\/127\.0\.0\.1:\d+ reachable\?/,
  );
  await assertIndexConsistent();
  // The step that was running has no entry: the next build builds it (and succeeds, S3 being back).
  const again = await remoteBuildImage(
    base.runCommands(`echo go-${tag}; sleep 1; echo x > /x`).runCommands("echo y > /y"),
    { server: url, statCache: false, log: () => undefined },
  );
  assert.ok(!again.steps[again.steps.length - 2]!.cached, "the interrupted step was not published, so it is built now");
  await assertIndexConsistent();
});
