// S3Store behaviour beyond the Store contract, against a real s3rver on loopback: the object layout, a second
// machine (empty local cache) seeing everything, multipart uploads and ranged downloads, HEAD-first uploads,
// LRU eviction of the local cache, retries through a fault-injecting proxy, and clear errors when S3 is down.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { DeleteObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { DigestMismatchError, NotFoundError, StoreError } from "../../src/errors.js";
import { MediaType } from "../../src/oci/types.js";
import { S3Store, parseByteSize, isS3NotFound, isS3Retryable, type S3StoreOptions } from "../../src/store/s3/index.js";
import { openStoreFromEnv, s3Configured } from "../../src/store/s3/open.js";
import type { LayerRecord } from "../../src/store/store.js";
import { digestHex, sha256Bytes, type Digest } from "../../src/util/digest.js";
import { closedPort, startFaultProxy, startS3, type TestS3 } from "../support/s3.js";
import { makeLayer, storedImage } from "../support/store-conformance.js";

const MiB = 1024 * 1024;

let s3: TestS3;
let work: string;
let admin: S3Client;
let n = 0;
const stores: S3Store[] = [];

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-s3-test-"));
  s3 = await startS3();
  admin = new S3Client({ endpoint: s3.endpoint, region: s3.region, credentials: s3.credentials, forcePathStyle: true });
});
after(async () => {
  for (const s of stores) s.close();
  admin?.destroy();
  await s3?.stop();
  await fsp.rm(work, { recursive: true, force: true });
});

/** A store on the test server with its own empty local cache; `prefix` picks the shared namespace. */
async function openStore(prefix: string, opts: Partial<S3StoreOptions> = {}): Promise<S3Store> {
  const store = await S3Store.open({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: s3.credentials,
    prefix,
    localRoot: path.join(work, `cache-${++n}`),
    maxAttempts: 3,
    retryBaseDelayMs: 20,
    ...opts,
  });
  stores.push(store);
  return store;
}

async function bucketKeys(prefix: string): Promise<string[]> {
  const r = await admin.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix }));
  return (r.Contents ?? []).map((o) => o.Key!).sort();
}

async function tempFile(store: S3Store, content: Buffer): Promise<string> {
  const file = path.join(await store.tempDir("test"), "blob");
  await fsp.writeFile(file, content);
  return file;
}

describe("object layout", () => {
  test("blobs, index entries, image records, chains and logs live under the prefix with the documented keys", async () => {
    const store = await openStore("layout/one/");
    assert.equal(store.prefix, "layout/one/");
    assert.equal(store.location, `s3://${s3.bucket}/layout/one/`);
    const rec = await storedImage(store, "layout");
    await store.putImage(rec);
    const key = "0123456789abcdef0123456789abcdef";
    await store.putIndex({ key, imageId: rec.id, createdAt: "2026-01-01T00:00:00Z" });
    await store.putChain({ name: "examples/hello.ts#default", builtAt: "t", imageIds: [rec.id] });
    await store.putLog(rec.id, "log");
    const blobs = [rec.configDigest, rec.manifestDigest, rec.layers[0]!.digest].map(
      (d) => `layout/one/blobs/sha256/${digestHex(d)}`,
    );
    assert.deepEqual(
      await bucketKeys("layout/one/"),
      [
        ...blobs,
        `layout/one/chains/${digestHex(sha256Bytes("examples/hello.ts#default"))}.json`,
        `layout/one/images/${digestHex(rec.id)}.json`,
        `layout/one/index/${key}.json`,
        `layout/one/logs/${digestHex(rec.id)}.log`,
      ].sort(),
    );
  });

  test("prefixes are normalised and an empty prefix means the bucket root", async () => {
    assert.equal((await openStore("/a/b//")).prefix, "a/b/");
    assert.equal((await openStore("")).prefix, "");
  });
});

describe("a second store with an empty local cache", () => {
  test("sees every record the first wrote, fetches blobs into its cache, and unpacks layers from fetched blobs", async () => {
    const first = await openStore("shared/");
    const { tar, gz } = await makeLayer(await first.tempDir("scratch"), {
      "etc/motd": "from S3\n",
      "bin/tool": "#!/bin/sh\n",
    });
    const layerDigest = await first.putBlobBytes(gz);
    const layer: LayerRecord = {
      digest: layerDigest,
      diffId: sha256Bytes(tar),
      size: gz.length,
      mediaType: MediaType.ociLayerGzip,
    };
    const configDigest = await first.putBlobBytes(Buffer.from('{"config":{}}'));
    const manifestDigest = await first.putBlobBytes(Buffer.from('{"manifest":1}'));
    const rec = { id: configDigest, configDigest, configSize: 13, manifestDigest, manifestSize: 14, layers: [layer] };
    await first.putImage(rec);
    const key = "abcdefabcdefabcdefabcdefabcdef00";
    await first.putIndex({ key, imageId: rec.id, createdAt: "2026-01-01T00:00:00Z" });
    await first.putChain({ name: "chain", builtAt: "t", imageIds: [rec.id] });
    await first.putLog(rec.id, "built it");

    const second = await openStore("shared/");
    assert.notEqual(second.root, first.root);
    assert.equal(await second.cache.usedBytes(), 0, "the second cache starts empty");
    assert.deepEqual(await second.getIndex(key), { key, imageId: rec.id, createdAt: "2026-01-01T00:00:00Z" });
    assert.deepEqual(await second.getImage(rec.id), rec);
    assert.deepEqual(await second.listImages(), [rec]);
    assert.deepEqual(await second.resolveImage(digestHex(rec.id).slice(0, 10)), rec);
    assert.deepEqual(await second.getChain("chain"), { name: "chain", builtAt: "t", imageIds: [rec.id] });
    assert.equal(await second.getLog(rec.id), "built it");
    assert.ok(await second.hasBlob(layerDigest));

    assert.ok(!existsSync(second.cache.blobFile(configDigest)));
    assert.equal((await second.readBlob(configDigest)).toString(), '{"config":{}}');
    assert.ok(existsSync(second.cache.blobFile(configDigest)), "the fetched blob is now in the local cache");
    assert.equal(second.stats.blobsFetched, 1);
    await second.readBlob(configDigest);
    assert.equal(second.stats.blobsFetched, 1, "a cached blob is not fetched again");

    const dir = await second.layerDir(layer);
    assert.ok(dir.startsWith(second.root + path.sep), dir);
    assert.equal(await fsp.readFile(path.join(dir, "etc/motd"), "utf8"), "from S3\n");
    assert.equal(second.stats.blobsFetched, 2, "the layer's blob was fetched to unpack it");
    assert.equal(second.stats.blobsUploaded, 0);
  });

  test("blobPath and openBlob fetch too; concurrent readers of one missing blob share one download", async () => {
    const first = await openStore("shared-2/");
    const data = randomBytes(300 * 1024);
    const d = await first.putBlobBytes(data);
    const second = await openStore("shared-2/");
    const results = await Promise.all([
      second.readBlob(d),
      second.readBlob(d),
      second.blobPath(d).then((p) => fsp.readFile(p)),
    ]);
    for (const r of results) assert.ok(r.equals(data));
    assert.equal(second.stats.blobsFetched, 1);
    const chunks: Buffer[] = [];
    for await (const c of await second.openBlob(d)) chunks.push(c as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
  });

  test("a blob corrupted in S3 is refused on fetch (DigestMismatchError) and not cached", async () => {
    const first = await openStore("corrupt-blob/");
    const d = await first.putBlobBytes(Buffer.from("good bytes"));
    await admin.send(
      new PutObjectCommand({ Bucket: s3.bucket, Key: `corrupt-blob/blobs/sha256/${digestHex(d)}`, Body: "evil bytes" }),
    );
    const second = await openStore("corrupt-blob/");
    await assert.rejects(
      second.readBlob(d),
      (e: unknown) =>
        e instanceof DigestMismatchError && e.message.includes(`s3://${s3.bucket}/corrupt-blob/blobs/sha256/`),
    );
    assert.ok(!existsSync(second.cache.blobFile(d)));
  });

  test("a corrupt record is a StoreError naming its S3 key", async () => {
    const store = await openStore("corrupt-record/");
    const id = sha256Bytes("corrupt");
    await admin.send(
      new PutObjectCommand({
        Bucket: s3.bucket,
        Key: `corrupt-record/images/${digestHex(id)}.json`,
        Body: "{not json",
      }),
    );
    await assert.rejects(store.getImage(id), (e: unknown) => {
      assert.ok(e instanceof StoreError);
      assert.ok(e.message.includes(`s3://${s3.bucket}/corrupt-record/images/${digestHex(id)}.json`), e.message);
      assert.match(e.message, /corrupt record/);
      assert.ok(e.cause instanceof SyntaxError);
      return true;
    });
  });
});

describe("uploads", () => {
  test("existing blobs are not uploaded again (HEAD first), from this store or another", async () => {
    const first = await openStore("dedup/");
    const data = Buffer.from("uploaded once");
    const d = await first.putBlobBytes(data);
    await first.putBlobBytes(data);
    assert.equal(first.stats.blobsUploaded, 1);
    const second = await openStore("dedup/");
    await second.putBlobBytes(data);
    await second.putBlobFile(await tempFile(second, data), d);
    assert.equal(second.stats.blobsUploaded, 0);
    assert.equal(second.stats.blobsAlreadyPresent, 2);
    assert.ok((await second.readBlob(d)).equals(data));
    assert.equal(second.stats.blobsFetched, 0, "the second store kept its own copy in its cache");
  });

  test("a blob above the threshold is uploaded in parallel parts, verified, and fetched back by ranged GETs", async () => {
    const opts = { multipartThreshold: 5 * MiB, partSize: 5 * MiB, concurrency: 3 };
    const first = await openStore("multipart/", opts);
    const data = randomBytes(12 * MiB);
    const d = sha256Bytes(data);
    const tmp = await tempFile(first, data);
    await first.putBlobFile(tmp, d);
    assert.ok(!existsSync(tmp));
    assert.equal(first.stats.multipartUploads, 1);
    assert.equal(first.stats.partsUploaded, 3, "12 MiB in 5 MiB parts");
    assert.equal(first.stats.bytesUploaded, 12 * MiB);
    assert.ok(await first.hasBlob(d));

    const second = await openStore("multipart/", opts);
    const back = await second.readBlob(d);
    assert.equal(second.stats.rangedFetches, 1);
    assert.equal(sha256Bytes(back), d);
    assert.ok(back.equals(data));

    // The same through putBlobBytes.
    const bytes = randomBytes(6 * MiB);
    const d2 = await first.putBlobBytes(bytes);
    assert.equal(first.stats.multipartUploads, 2);
    assert.ok((await second.readBlob(d2)).equals(bytes));
  });

  test("a multipart upload whose content does not match its digest is never completed", async () => {
    const store = await openStore("multipart-bad/", { multipartThreshold: 5 * MiB, partSize: 5 * MiB });
    const data = randomBytes(11 * MiB);
    const claimed = sha256Bytes("not this");
    const tmp = await tempFile(store, data);
    await assert.rejects(store.putBlobFile(tmp, claimed), (e: unknown) => {
      assert.ok(e instanceof DigestMismatchError);
      assert.equal(e.actual, sha256Bytes(data));
      return true;
    });
    assert.ok(!existsSync(tmp));
    assert.equal(await store.hasBlob(claimed), false);
    assert.deepEqual(await bucketKeys("multipart-bad/"), []);
  });

  test("concurrent puts of one big blob upload it once", async () => {
    const store = await openStore("multipart-concurrent/", { multipartThreshold: 5 * MiB, partSize: 5 * MiB });
    const data = randomBytes(6 * MiB);
    const d = sha256Bytes(data);
    await Promise.all([
      store.putBlobBytes(data),
      store.putBlobBytes(data),
      tempFile(store, data).then((f) => store.putBlobFile(f, d)),
      tempFile(store, data).then((f) => store.putBlobFile(f, d, { verified: true })),
    ]);
    assert.equal(store.stats.blobsUploaded, 1);
    assert.ok((await store.readBlob(d)).equals(data));
  });

  test("putImage checks S3 itself, not the local cache", async () => {
    const store = await openStore("putimage-head/");
    const rec = await storedImage(store, "headcheck");
    await admin.send(
      new DeleteObjectCommand({
        Bucket: s3.bucket,
        Key: `putimage-head/blobs/sha256/${digestHex(rec.manifestDigest)}`,
      }),
    );
    assert.ok(existsSync(store.cache.blobFile(rec.manifestDigest)), "the local cache still has a copy");
    await assert.rejects(
      store.putImage(rec),
      (e: unknown) => e instanceof StoreError && e.message.includes(`blob ${rec.manifestDigest} is missing`),
    );
    assert.equal(await store.getImage(rec.id), undefined);
  });
});

describe("local cache eviction", () => {
  test("the cache stays under its bound and evicted blobs are fetched again transparently", async () => {
    const bound = 3 * MiB + 1024;
    const store = await openStore("evict/", { maxLocalBytes: bound, evictGraceMs: 0 });
    const blobs: Array<{ d: Digest; data: Buffer }> = [];
    for (let i = 0; i < 6; i++) {
      const data = randomBytes(MiB);
      blobs.push({ d: await store.putBlobBytes(data), data });
      assert.ok(
        (await store.cache.usedBytes()) <= bound,
        `after blob ${i}: ${await store.cache.usedBytes()} > ${bound}`,
      );
    }
    assert.ok(store.cache.evictions >= 3, `evictions: ${store.cache.evictions}`);
    assert.ok(!existsSync(store.cache.blobFile(blobs[0]!.d)), "the least recently used blob went first");
    assert.ok(existsSync(store.cache.blobFile(blobs[5]!.d)), "the most recent one stays");
    for (const { d, data } of blobs) {
      assert.ok((await store.readBlob(d)).equals(data));
      assert.ok((await store.cache.usedBytes()) <= bound);
    }
    assert.ok(store.stats.blobsFetched >= 3, `fetched ${store.stats.blobsFetched}`);
    assert.equal(store.cache.lastEvictionError, undefined);
  });

  test("recently used entries are kept (LRU, not FIFO)", async () => {
    const bound = 2 * MiB + 1024;
    const store = await openStore("evict-lru/", { maxLocalBytes: bound, evictGraceMs: 0 });
    const a = await store.putBlobBytes(randomBytes(MiB));
    await new Promise((r) => setTimeout(r, 20));
    const b = await store.putBlobBytes(randomBytes(MiB));
    await new Promise((r) => setTimeout(r, 20));
    await store.readBlob(a); // a is now more recent than b
    await new Promise((r) => setTimeout(r, 20));
    await store.putBlobBytes(randomBytes(MiB));
    assert.ok(existsSync(store.cache.blobFile(a)));
    assert.ok(!existsSync(store.cache.blobFile(b)));
  });

  test("entries used within the grace window are not evicted", async () => {
    const store = await openStore("evict-grace/", { maxLocalBytes: MiB, evictGraceMs: 60_000 });
    const ds = [await store.putBlobBytes(randomBytes(MiB)), await store.putBlobBytes(randomBytes(MiB))];
    for (const d of ds) assert.ok(existsSync(store.cache.blobFile(d)));
    assert.equal(store.cache.evictions, 0);
  });

  test("pinned entries and layer dirs a live build links to survive; unpinned ones go and are unpacked again", async () => {
    const store = await openStore("evict-layers/", { maxLocalBytes: 2 * MiB + 1024, evictGraceMs: 0 });
    const { tar, gz } = await makeLayer(await store.tempDir("scratch"), {
      "big.bin": randomBytes(MiB).toString("base64").slice(0, MiB),
    });
    const layer: LayerRecord = {
      digest: await store.putBlobBytes(gz),
      diffId: sha256Bytes(tar),
      size: gz.length,
      mediaType: MediaType.ociLayerGzip,
    };
    const dir = await store.layerDir(layer);

    const unpin = store.pin([layer]);
    for (let i = 0; i < 3; i++) await store.putBlobBytes(randomBytes(MiB));
    assert.ok(existsSync(dir), "a pinned layer dir is kept");
    assert.ok(existsSync(store.cache.blobFile(layer.digest)), "a pinned layer's blob is kept");
    unpin();

    // A running step's overlay work dir links to its lowerdirs (src/layer/overlay.ts): tmp/<work>/l/<n> → layer.
    const workDir = await store.tempDir("step");
    await fsp.mkdir(path.join(workDir, "l"));
    await fsp.symlink(dir, path.join(workDir, "l", "0"));
    for (let i = 0; i < 3; i++) await store.putBlobBytes(randomBytes(MiB));
    assert.ok(existsSync(dir), "a layer dir in use by a mount is kept");

    await fsp.rm(workDir, { recursive: true });
    for (let i = 0; i < 2; i++) await store.putBlobBytes(randomBytes(MiB));
    assert.ok(!existsSync(dir), "an unused layer dir is evicted");
    assert.ok(!existsSync(store.cache.blobFile(layer.digest)));
    assert.deepEqual(
      (await fsp.readdir(path.join(store.root, "tmp"))).filter((f) => f.startsWith("evict-")),
      [],
    );

    const again = await store.layerDir(layer);
    assert.equal(again, dir);
    assert.equal((await fsp.readFile(path.join(again, "big.bin"), "utf8")).length, MiB);
    assert.ok((await store.cache.usedBytes()) <= 2 * MiB + 1024 + MiB, "over the bound by at most the layer in use");
  });
});

describe("failures", () => {
  test("with S3 unreachable, operations fail promptly with a StoreError naming the bucket, key and cause", async () => {
    const port = await closedPort();
    const store = await S3Store.open({
      bucket: "down-bucket",
      endpoint: `http://127.0.0.1:${port}`,
      region: "us-east-1",
      credentials: s3.credentials,
      localRoot: path.join(work, `cache-${++n}`),
      maxAttempts: 3,
      retryBaseDelayMs: 10,
      connectTimeoutMs: 1000,
      socketTimeoutMs: 2000,
    });
    stores.push(store);
    const t0 = Date.now();
    const d = sha256Bytes("whatever");
    const check = (what: string) => (e: unknown) => {
      assert.ok(e instanceof StoreError, `${what}: ${String(e)}`);
      assert.ok(e.message.includes("s3://down-bucket/"), `${what}: ${e.message}`);
      assert.match(e.message, /ECONNREFUSED/, what);
      assert.match(e.message, /after 3 attempts/, what);
      assert.match(e.message, /STRATA_S3_ENDPOINT/, what);
      assert.ok(e.cause !== undefined);
      return true;
    };
    await assert.rejects(
      store.hasBlob(d),
      (e: unknown) => check("hasBlob")(e) && (e as Error).message.includes(`blobs/sha256/${digestHex(d)}`),
    );
    await assert.rejects(store.putBlobBytes(Buffer.from("x")), check("putBlobBytes"));
    await assert.rejects(store.readBlob(d), check("readBlob"));
    await assert.rejects(
      store.getIndex("0123456789abcdef0123456789abcdef"),
      (e: unknown) =>
        check("getIndex")(e) && (e as Error).message.includes("index/0123456789abcdef0123456789abcdef.json"),
    );
    await assert.rejects(
      store.putImage({ id: d, configDigest: d, configSize: 0, manifestDigest: d, manifestSize: 0, layers: [] }),
      check("putImage"),
    );
    await assert.rejects(store.listImages(), check("listImages"));
    await assert.rejects(store.check(), check("check"));
    assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
  });

  test("a missing bucket is a StoreError saying so", async () => {
    const store = await openStore("", { bucket: "no-such-bucket" });
    await assert.rejects(
      store.putLog(sha256Bytes("x"), "log"),
      (e: unknown) => e instanceof StoreError && /bucket "no-such-bucket" does not exist/.test(e.message),
    );
    await assert.rejects(store.check(), StoreError);
  });

  test("5xx, SlowDown and connection resets are retried with backoff; builds' operations still succeed", async () => {
    // Every other request fails, cycling through the three faults.
    const faults = ["500", "503-slowdown", "reset"] as const;
    const proxy = await startFaultProxy(s3.endpoint, (i) => (i % 2 === 0 ? faults[(i / 2) % 3]! : "pass"));
    try {
      const opts = {
        endpoint: proxy.endpoint,
        maxAttempts: 6,
        retryBaseDelayMs: 5,
        multipartThreshold: 5 * MiB,
        partSize: 5 * MiB,
      };
      const store = await openStore("flaky/", opts);
      const rec = await storedImage(store, "flaky");
      const big = randomBytes(11 * MiB);
      const bigDigest = await store.putBlobBytes(big);
      rec.layers.push({ digest: bigDigest, diffId: bigDigest, size: big.length, mediaType: MediaType.ociLayerTar });
      await store.putImage(rec);
      await store.putIndex({ key: "00112233445566778899aabbccddeeff", imageId: rec.id, createdAt: "t" });
      const other = await openStore("flaky/", opts);
      assert.equal((await other.getIndex("00112233445566778899aabbccddeeff"))?.imageId, rec.id);
      assert.ok((await other.readBlob(bigDigest)).equals(big));
      assert.equal((await other.readBlob(rec.configDigest)).toString(), '{"config":"flaky"}');
      assert.ok(
        proxy.counts["500"] > 0 && proxy.counts["503-slowdown"] > 0 && proxy.counts.reset > 0,
        JSON.stringify(proxy.counts),
      );
    } finally {
      await proxy.stop();
    }
  });

  test("when every attempt fails, the error says how many attempts and what S3 answered", async () => {
    const proxy = await startFaultProxy(s3.endpoint, () => "500");
    try {
      const store = await openStore("always-500/", { endpoint: proxy.endpoint, maxAttempts: 4, retryBaseDelayMs: 5 });
      await assert.rejects(store.putChain({ name: "c", builtAt: "t", imageIds: [] }), (e: unknown) => {
        assert.ok(e instanceof StoreError);
        assert.match(
          e.message,
          /^S3 PUT s3:\/\/strata-test\/always-500\/chains\/[0-9a-f]{64}\.json failed after 4 attempts: InternalError \(HTTP 500\)/,
        );
        return true;
      });
      assert.equal(proxy.counts["500"], 4);
    } finally {
      await proxy.stop();
    }
  });
});

describe("configuration", () => {
  test("fromEnv reads STRATA_S3_* and the SDK's default credential chain; an endpoint implies path-style", async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = s3.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.credentials.secretAccessKey;
    try {
      const cacheDir = path.join(work, "env-cache");
      const store = await S3Store.fromEnv({
        STRATA_S3_BUCKET: s3.bucket,
        STRATA_S3_ENDPOINT: s3.endpoint,
        STRATA_S3_PREFIX: "from-env",
        STRATA_S3_CACHE_DIR: cacheDir,
        STRATA_S3_CACHE_SIZE: "2G",
      });
      stores.push(store);
      assert.equal(store.bucket, s3.bucket);
      assert.equal(store.prefix, "from-env/");
      assert.equal(store.root, cacheDir);
      assert.equal(store.cache.maxBytes, 2 * 1024 * MiB);
      assert.equal(await store.client.config.forcePathStyle, true);
      const d = await store.putBlobBytes(Buffer.from("env"));
      assert.deepEqual(await bucketKeys("from-env/"), [`from-env/blobs/sha256/${digestHex(d)}`]);
      await store.check();
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });

  test("fromEnv without STRATA_S3_BUCKET is a StoreError naming the variable", async () => {
    await assert.rejects(
      S3Store.fromEnv({}),
      (e: unknown) => e instanceof StoreError && e.message.includes("STRATA_S3_BUCKET"),
    );
  });

  test("openStoreFromEnv picks the S3 store when STRATA_S3_BUCKET is set", async () => {
    assert.equal(s3Configured({}), false);
    assert.equal(s3Configured({ STRATA_S3_BUCKET: "b" }), true);
    const store = await openStoreFromEnv({
      STRATA_S3_BUCKET: s3.bucket,
      STRATA_S3_ENDPOINT: s3.endpoint,
      STRATA_S3_CACHE_DIR: path.join(work, "pick"),
    });
    assert.ok(store instanceof S3Store);
    store.close();
  });

  test("parseByteSize", () => {
    assert.equal(parseByteSize("1024"), 1024);
    assert.equal(parseByteSize("20G"), 20 * 1024 * MiB);
    assert.equal(parseByteSize("512MiB"), 512 * MiB);
    assert.equal(parseByteSize("1.5k"), 1536);
    assert.throws(() => parseByteSize("lots"), StoreError);
  });

  test("SDK error classification", () => {
    assert.equal(isS3NotFound({ name: "NoSuchKey", $metadata: { httpStatusCode: 404 } }), true);
    assert.equal(isS3NotFound({ name: "NotFound", $metadata: { httpStatusCode: 404 } }), true);
    assert.equal(isS3NotFound({ name: "NoSuchBucket", $metadata: { httpStatusCode: 404 } }), false);
    assert.equal(isS3Retryable({ name: "InternalError", $metadata: { httpStatusCode: 500 } }), true);
    assert.equal(isS3Retryable({ name: "SlowDown", $metadata: { httpStatusCode: 503 } }), true);
    assert.equal(isS3Retryable(Object.assign(new Error("x"), { code: "ECONNRESET" })), true);
    assert.equal(
      isS3Retryable(new AggregateError([Object.assign(new Error("x"), { code: "ECONNREFUSED" })], "connect failed")),
      true,
    );
    assert.equal(isS3Retryable({ name: "AccessDenied", $metadata: { httpStatusCode: 403 } }), false);
    assert.equal(isS3Retryable(new NotFoundError("x")), false);
  });
});
