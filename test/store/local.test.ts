import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { defaultStoreRoot, LocalStore } from "../../src/store/local.js";
import type { ImageRecord, LayerRecord } from "../../src/store/store.js";
import { DigestMismatchError, NotFoundError, StoreError } from "../../src/errors.js";
import { sha256Bytes, type Digest } from "../../src/util/digest.js";
import { MediaType } from "../../src/oci/types.js";
import { packDir } from "../../src/layer/tar-pack.js";

let work: string;
before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-store-test-"));
});
after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

let n = 0;
async function openStore(): Promise<LocalStore> {
  return LocalStore.open(path.join(work, `store-${++n}`));
}

const hex = (d: string) => d.slice("sha256:".length);
const fakeId = (h: string) => ("sha256:" + h) as Digest;

async function packBytes(dir: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const ch of packDir(dir, { epoch: 1767225600 })) chunks.push(ch as Buffer);
  return Buffer.concat(chunks);
}

/** A dead pid: spawn `true`, wait for it to exit, return its pid. */
async function deadPid(): Promise<number> {
  const child = spawn("true", { stdio: "ignore" });
  const pid = child.pid!;
  await new Promise<void>((resolve, reject) => {
    child.on("exit", () => resolve());
    child.on("error", reject);
  });
  return pid;
}

/** Stores config, manifest and layer blobs and returns an image record naming them. */
async function storedImage(store: LocalStore, tag: string, id?: Digest): Promise<ImageRecord> {
  const configDigest = await store.putBlobBytes(Buffer.from(`{"config":"${tag}"}`));
  const layerDigest = await store.putBlobBytes(Buffer.from(`layer ${tag}`));
  const manifestDigest = await store.putBlobBytes(Buffer.from(`{"manifest":"${tag}"}`));
  const layer: LayerRecord = {
    digest: layerDigest,
    diffId: sha256Bytes(`diff ${tag}`),
    size: 7,
    mediaType: MediaType.ociLayerGzip,
  };
  return { id: id ?? configDigest, configDigest, configSize: 10, manifestDigest, manifestSize: 10, layers: [layer] };
}

// ---- blobs ---------------------------------------------------------------------------------------------------

describe("blobs", () => {
  test("open creates the store layout", async () => {
    const store = await openStore();
    for (const d of ["blobs/sha256", "index", "images", "chains", "layers", "tmp", "locks", "logs"]) {
      assert.ok((await fsp.stat(path.join(store.root, d))).isDirectory(), d);
    }
    // Opening again is harmless.
    await LocalStore.open(store.root);
  });

  test("putBlobBytes stores content under its sha256 and is idempotent", async () => {
    const store = await openStore();
    const data = Buffer.from("hello blob");
    const d1 = await store.putBlobBytes(data);
    const d2 = await store.putBlobBytes(data);
    assert.equal(d1, d2);
    assert.equal(d1, "sha256:" + createHash("sha256").update(data).digest("hex"));
    assert.deepEqual(await fsp.readdir(path.join(store.root, "blobs/sha256")), [hex(d1)]);
    assert.ok((await store.readBlob(d1)).equals(data));
    assert.ok(await store.hasBlob(d1));
    assert.equal(await store.blobPath(d1), path.join(store.root, "blobs/sha256", hex(d1)));
    const chunks: Buffer[] = [];
    for await (const c of await store.openBlob(d1)) chunks.push(c as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
  });

  test("concurrent putBlobBytes of the same content leave exactly one blob and no temp files", async () => {
    const store = await openStore();
    const data = Buffer.alloc(256 * 1024, 7);
    const ds = await Promise.all(Array.from({ length: 8 }, () => store.putBlobBytes(data)));
    assert.equal(new Set(ds).size, 1);
    assert.deepEqual(await fsp.readdir(path.join(store.root, "blobs/sha256")), [hex(ds[0]!)]);
  });

  test("putBlobFile with the right digest moves the file in (mode 0644)", async () => {
    const store = await openStore();
    const tmp = path.join(await store.tempDir("test"), "blob");
    await fsp.writeFile(tmp, "file blob", { mode: 0o600 });
    const d = sha256Bytes("file blob");
    await store.putBlobFile(tmp, d);
    assert.ok(!existsSync(tmp));
    assert.equal((await store.readBlob(d)).toString(), "file blob");
    assert.equal((await fsp.stat(await store.blobPath(d))).mode & 0o777, 0o644);
  });

  test("putBlobFile of an already stored blob just removes the temp file", async () => {
    const store = await openStore();
    const d = await store.putBlobBytes(Buffer.from("dup"));
    const tmp = path.join(await store.tempDir("test"), "blob");
    await fsp.writeFile(tmp, "dup");
    await store.putBlobFile(tmp, d);
    assert.ok(!existsSync(tmp));
    assert.equal((await store.readBlob(d)).toString(), "dup");
  });

  test("putBlobFile with a wrong digest throws DigestMismatchError and stores nothing", async () => {
    const store = await openStore();
    const tmp = path.join(await store.tempDir("test"), "blob");
    await fsp.writeFile(tmp, "actual content");
    const claimed = sha256Bytes("something else");
    await assert.rejects(store.putBlobFile(tmp, claimed), (e: unknown) => {
      assert.ok(e instanceof DigestMismatchError);
      assert.equal(e.expected, claimed);
      assert.equal(e.actual, sha256Bytes("actual content"));
      assert.equal(e.code, "DIGEST_MISMATCH");
      assert.match(e.message, /digest mismatch/);
      return true;
    });
    assert.deepEqual(await fsp.readdir(path.join(store.root, "blobs/sha256")), []);
    assert.equal(await store.hasBlob(claimed), false);
    assert.equal(await store.hasBlob(sha256Bytes("actual content")), false);
    assert.ok(!existsSync(tmp), "the rejected temp file is removed");
  });

  test("putBlobFile with verified: true trusts the caller's digest", async () => {
    const store = await openStore();
    const tmp = path.join(await store.tempDir("test"), "blob");
    await fsp.writeFile(tmp, "x");
    const d = sha256Bytes("x");
    await store.putBlobFile(tmp, d, { verified: true });
    assert.ok(await store.hasBlob(d));
  });

  test("missing blobs are NotFoundError for openBlob, readBlob and blobPath", async () => {
    const store = await openStore();
    const d = sha256Bytes("absent");
    assert.equal(await store.hasBlob(d), false);
    await assert.rejects(store.openBlob(d), NotFoundError);
    await assert.rejects(
      store.readBlob(d),
      (e: unknown) => e instanceof NotFoundError && e.message.includes(d) && e.message.includes(store.root),
    );
    await assert.rejects(store.blobPath(d), NotFoundError);
  });
});

// ---- images and index ------------------------------------------------------------------------------------------

describe("images and the cache index", () => {
  test("putImage and getImage round-trip a record", async () => {
    const store = await openStore();
    const rec = await storedImage(store, "a");
    await store.putImage(rec);
    assert.deepEqual(await store.getImage(rec.id), rec);
    assert.deepEqual(await store.listImages(), [rec]);
  });

  test("getImage of an unknown id is undefined", async () => {
    const store = await openStore();
    assert.equal(await store.getImage(sha256Bytes("nope")), undefined);
  });

  for (const which of ["configDigest", "manifestDigest", "layer"] as const) {
    test(`putImage refuses a record whose ${which} blob is missing (StoreError) and writes nothing`, async () => {
      const store = await openStore();
      const rec = await storedImage(store, "b");
      const missing = sha256Bytes(`missing ${which}`);
      if (which === "layer") rec.layers = [...rec.layers, { ...rec.layers[0]!, digest: missing }];
      else rec[which] = missing;
      await assert.rejects(store.putImage(rec), (e: unknown) => {
        assert.ok(e instanceof StoreError);
        assert.match(e.message, new RegExp(`refusing to record image .*blob ${missing} is missing`));
        return true;
      });
      assert.equal(await store.getImage(rec.id), undefined);
      assert.deepEqual(await fsp.readdir(path.join(store.root, "images")), []);
    });
  }

  test("getIndex returns an entry whose image record exists", async () => {
    const store = await openStore();
    const rec = await storedImage(store, "c");
    await store.putImage(rec);
    const entry = { key: "0123456789abcdef0123456789abcdef", imageId: rec.id, createdAt: "2026-01-01T00:00:00Z" };
    await store.putIndex(entry);
    assert.deepEqual(await store.getIndex(entry.key), entry);
    assert.ok(existsSync(path.join(store.root, "index", "01", `${entry.key}.json`)));
  });

  test("getIndex returns undefined for an entry whose image record is missing (crash between writes)", async () => {
    const store = await openStore();
    const entry = {
      key: "fedcba9876543210fedcba9876543210",
      imageId: sha256Bytes("never recorded"),
      createdAt: "2026-01-01T00:00:00Z",
    };
    await store.putIndex(entry);
    assert.equal(await store.getIndex(entry.key), undefined);
  });

  test("getIndex of an unknown key is undefined", async () => {
    const store = await openStore();
    assert.equal(await store.getIndex("00000000000000000000000000000000"), undefined);
  });

  test("index keys that could escape the index directory are refused", async () => {
    const store = await openStore();
    for (const key of ["../evil", "a/b", "ABC", "", "x.json"]) {
      await assert.rejects(store.getIndex(key), StoreError, key);
      await assert.rejects(store.putIndex({ key, imageId: sha256Bytes("x"), createdAt: "" }), StoreError, key);
    }
  });

  test("a corrupt image record is a StoreError naming the file", async () => {
    const store = await openStore();
    const id = sha256Bytes("corrupt");
    const file = path.join(store.root, "images", `${hex(id)}.json`);
    await fsp.writeFile(file, "{not json");
    await assert.rejects(store.getImage(id), (e: unknown) => {
      assert.ok(e instanceof StoreError);
      assert.ok(e.message.includes(file), e.message);
      assert.match(e.message, /corrupt record/);
      assert.match(e.message, /delete it/);
      assert.ok(e.cause instanceof SyntaxError);
      return true;
    });
  });

  test("a corrupt index entry is a StoreError naming the file", async () => {
    const store = await openStore();
    const key = "abababababababababababababababab";
    const file = path.join(store.root, "index", "ab", `${key}.json`);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, "");
    await assert.rejects(store.getIndex(key), (e: unknown) => e instanceof StoreError && e.message.includes(file));
  });

  test("a corrupt chain record is a StoreError", async () => {
    const store = await openStore();
    await store.putChain({ name: "demo", builtAt: "t", imageIds: [] });
    const [f] = await fsp.readdir(path.join(store.root, "chains"));
    await fsp.writeFile(path.join(store.root, "chains", f!), "[");
    await assert.rejects(store.getChain("demo"), StoreError);
  });

  test("chains round-trip by name; unknown chains are undefined", async () => {
    const store = await openStore();
    const chain = {
      name: "examples/demo.ts#default",
      builtAt: "2026-01-01T00:00:00Z",
      imageIds: [sha256Bytes("1"), sha256Bytes("2")],
    };
    await store.putChain(chain);
    assert.deepEqual(await store.getChain(chain.name), chain);
    assert.equal(await store.getChain("other"), undefined);
  });

  test("logs round-trip; a missing log is undefined", async () => {
    const store = await openStore();
    const id = sha256Bytes("img");
    assert.equal(await store.getLog(id), undefined);
    await store.putLog(id, "line 1\nline 2");
    assert.equal(await store.getLog(id), "line 1\nline 2");
  });
});

// ---- resolveImage --------------------------------------------------------------------------------------------

describe("resolveImage", () => {
  let store: LocalStore;
  let a: ImageRecord;
  let b: ImageRecord;
  let c: ImageRecord;
  const hexA = "abcdef01" + "1".repeat(56);
  const hexB = "abcdef01" + "2".repeat(56);
  const hexC = "12345678" + "3".repeat(56);

  before(async () => {
    store = await openStore();
    a = await storedImage(store, "a", fakeId(hexA));
    b = await storedImage(store, "b", fakeId(hexB));
    c = await storedImage(store, "c", fakeId(hexC));
    for (const r of [a, b, c]) await store.putImage(r);
  });

  test("resolves a full sha256:<hex> id", async () => {
    assert.deepEqual(await store.resolveImage(`sha256:${hexC}`), c);
  });

  test("resolves a bare 64-digit hex id (any case)", async () => {
    assert.deepEqual(await store.resolveImage(hexA), a);
    assert.deepEqual(await store.resolveImage(hexA.toUpperCase()), a);
  });

  test("resolves a unique 8-digit prefix, with or without sha256:", async () => {
    assert.deepEqual(await store.resolveImage("12345678"), c);
    assert.deepEqual(await store.resolveImage("sha256:123456"), c);
  });

  test("resolves a longer unique prefix where the 8-digit one is ambiguous", async () => {
    assert.deepEqual(await store.resolveImage("abcdef011"), a);
    assert.deepEqual(await store.resolveImage("abcdef012"), b);
  });

  test("an ambiguous prefix is an error saying how many images match", async () => {
    await assert.rejects(store.resolveImage("abcdef01"), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.match(e.message, /image id prefix abcdef01 is ambiguous \(2 images\); give more digits/);
      return true;
    });
  });

  test("an unknown prefix is an error mentioning `strata images`", async () => {
    await assert.rejects(store.resolveImage("99999999"), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.match(e.message, /no image id starts with 99999999/);
      assert.ok(e.message.includes("`strata images`"), e.message);
      return true;
    });
  });

  test("an unknown full id is an error mentioning `strata images`", async () => {
    await assert.rejects(
      store.resolveImage("sha256:" + "9".repeat(64)),
      (e: unknown) => e instanceof NotFoundError && e.message.includes("`strata images`"),
    );
  });

  test("references that are not ids or are too short are refused", async () => {
    for (const ref of ["abc", "12345", "xyz12345", "sha256:", "", "sha512:" + "1".repeat(64), "1".repeat(65)]) {
      await assert.rejects(
        store.resolveImage(ref),
        (e: unknown) => e instanceof NotFoundError && /is not an image id/.test(e.message),
        ref,
      );
    }
  });

  test("temp files of interrupted record writes are not matched by prefix", async () => {
    const s = await openStore();
    const rec = await storedImage(s, "t", fakeId("77777777" + "7".repeat(56)));
    await s.putImage(rec);
    await fsp.writeFile(path.join(s.root, "images", `${hex(rec.id)}.json.tmp-1-x-y`), "partial");
    assert.deepEqual(await s.resolveImage("77777777"), rec);
  });
});

// ---- layers ----------------------------------------------------------------------------------------------------

describe("layers", () => {
  test("layerDir unpacks a gzipped layer blob once and reuses it", async () => {
    const store = await openStore();
    const src = path.join(work, `layer-src-${++n}`);
    await fsp.mkdir(src);
    await fsp.writeFile(path.join(src, "hello.txt"), "hi");
    const chunks: Buffer[] = [];
    for await (const ch of packDir(src, { epoch: 1767225600 })) chunks.push(ch as Buffer);
    const tarBytes = Buffer.concat(chunks);
    const digest = await store.putBlobBytes(gzipSync(tarBytes));
    const layer: LayerRecord = { digest, diffId: sha256Bytes(tarBytes), size: 0, mediaType: MediaType.ociLayerGzip };
    const dir = await store.layerDir(layer);
    assert.equal(dir, path.join(store.root, "layers", hex(layer.diffId)));
    assert.equal(await fsp.readFile(path.join(dir, "hello.txt"), "utf8"), "hi");
    assert.equal(await store.layerDir(layer), dir);
    assert.deepEqual(await fsp.readdir(path.join(store.root, "tmp")), []);
  });

  test("layerDir handles uncompressed tar layers", async () => {
    const store = await openStore();
    const src = path.join(work, `layer-src-${++n}`);
    await fsp.mkdir(src);
    await fsp.writeFile(path.join(src, "plain.txt"), "plain");
    const chunks: Buffer[] = [];
    for await (const ch of packDir(src, { epoch: 1767225600 })) chunks.push(ch as Buffer);
    const tarBytes = Buffer.concat(chunks);
    const digest = await store.putBlobBytes(tarBytes);
    const dir = await store.layerDir({
      digest,
      diffId: digest,
      size: tarBytes.length,
      mediaType: MediaType.ociLayerTar,
    });
    assert.equal(await fsp.readFile(path.join(dir, "plain.txt"), "utf8"), "plain");
  });

  test("adoptLayerDir moves a directory in; a second adoption of the same diffId discards the newcomer", async () => {
    const store = await openStore();
    const diffId = sha256Bytes("adopt");
    const d1 = await store.tempDir("adopt");
    await fsp.writeFile(path.join(d1, "first"), "1");
    const d2 = await store.tempDir("adopt");
    await fsp.writeFile(path.join(d2, "second"), "2");
    const t1 = await store.adoptLayerDir(diffId, d1);
    const t2 = await store.adoptLayerDir(diffId, d2);
    assert.equal(t1, t2);
    assert.deepEqual(await fsp.readdir(t1), ["first"]);
    assert.ok(!existsSync(d1));
    assert.ok(!existsSync(d2));
  });

  test("layerDir of a layer whose blob is missing rejects and leaves no temp dir", async () => {
    const store = await openStore();
    const d = sha256Bytes("no blob");
    await assert.rejects(store.layerDir({ digest: d, diffId: d, size: 0, mediaType: MediaType.ociLayerGzip }));
    assert.deepEqual(await fsp.readdir(path.join(store.root, "tmp")), []);
    assert.deepEqual(await fsp.readdir(path.join(store.root, "layers")), []);
  });

  test("layerDir of a layer whose blob is missing is a NotFoundError", async () => {
    const store = await openStore();
    const d = sha256Bytes("no blob");
    await assert.rejects(
      store.layerDir({ digest: d, diffId: d, size: 0, mediaType: MediaType.ociLayerGzip }),
      NotFoundError,
    );
  });

  test("layerDir decides compression by content, not by the claimed media type", async () => {
    const store = await openStore();
    const src = path.join(work, `layer-src-${++n}`);
    await fsp.mkdir(src);
    await fsp.writeFile(path.join(src, "g.txt"), "gz");
    const tarBytes = await packBytes(src);
    const gzDigest = await store.putBlobBytes(gzipSync(tarBytes));
    // Gzipped content labelled as an uncompressed tar.
    const dir = await store.layerDir({
      digest: gzDigest,
      diffId: sha256Bytes(tarBytes),
      size: 0,
      mediaType: MediaType.ociLayerTar,
    });
    assert.equal(await fsp.readFile(path.join(dir, "g.txt"), "utf8"), "gz");
  });

  test("layerDir refuses a blob whose uncompressed content does not match the diffId, and adopts nothing", async () => {
    const store = await openStore();
    const src = path.join(work, `layer-src-${++n}`);
    await fsp.mkdir(src);
    await fsp.writeFile(path.join(src, "x"), "x");
    const digest = await store.putBlobBytes(gzipSync(await packBytes(src)));
    const claimed = sha256Bytes("some other layer");
    await assert.rejects(
      store.layerDir({ digest, diffId: claimed, size: 0, mediaType: MediaType.ociLayerGzip }),
      (e: unknown) => {
        assert.ok(e instanceof DigestMismatchError);
        assert.equal(e.expected, claimed);
        return true;
      },
    );
    assert.deepEqual(await fsp.readdir(path.join(store.root, "layers")), []);
    assert.deepEqual(await fsp.readdir(path.join(store.root, "tmp")), []);
  });
});

// ---- temp dirs and recover -------------------------------------------------------------------------------------

describe("temp dirs and recover()", () => {
  test("tempDir names carry the prefix and this process's pid", async () => {
    const store = await openStore();
    const d = await store.tempDir("step");
    assert.match(path.basename(d), new RegExp(`^step-${process.pid}-`));
    assert.equal(path.dirname(d), path.join(store.root, "tmp"));
    assert.notEqual(await store.tempDir("step"), d);
  });

  test("recover() removes temp dirs of dead processes but not of live ones", async () => {
    const store = await openStore();
    const dead = await deadPid();
    const tmp = path.join(store.root, "tmp");
    const deadDir = path.join(tmp, `step-${dead}-abc-1234`);
    await fsp.mkdir(path.join(deadDir, "nested/deeper"), { recursive: true });
    await fsp.writeFile(path.join(deadDir, "nested/deeper/f"), "x");
    const liveDir = await store.tempDir("step");
    await fsp.writeFile(path.join(liveDir, "f"), "x");
    const parentLive = path.join(tmp, `unpack-${process.ppid}-abc-1234`);
    await fsp.mkdir(parentLive);
    const odd = path.join(tmp, "not-a-temp-dir");
    await fsp.mkdir(odd);
    await store.recover();
    assert.ok(!existsSync(deadDir), "dead process's dir removed");
    assert.ok(existsSync(liveDir), "this process's dir kept");
    assert.ok(existsSync(parentLive), "another live process's dir kept");
    assert.ok(existsSync(odd), "unrecognised names are left alone");
  });

  test("recover() on an empty tmp dir is a no-op", async () => {
    const store = await openStore();
    await store.recover();
    assert.deepEqual(await fsp.readdir(path.join(store.root, "tmp")), []);
  });
});

// ---- locks -----------------------------------------------------------------------------------------------------

describe("lock()", () => {
  test("lock() writes this process's pid into the lock file and release removes it", async () => {
    const store = await openStore();
    const release = await store.lock("k1");
    const file = path.join(store.root, "locks", "k1.lock");
    assert.match(await fsp.readFile(file, "utf8"), new RegExp(`^${process.pid} \\S+$`));
    await release();
    assert.ok(!existsSync(file));
  });

  test("a second lock() in the same process waits until the first is released", async () => {
    const store = await openStore();
    const events: string[] = [];
    const release1 = await store.lock("k2");
    events.push("acquired 1");
    const second = store.lock("k2").then((release) => {
      events.push("acquired 2");
      return release;
    });
    // Let the waiter try (and fail) at least once; the assertion below does not depend on how long this is.
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(events, ["acquired 1"]);
    events.push("releasing 1");
    await release1();
    const release2 = await second;
    assert.deepEqual(events, ["acquired 1", "releasing 1", "acquired 2"]);
    await release2();
  });

  test("three waiters acquire one at a time", async () => {
    const store = await openStore();
    let holders = 0;
    let maxHolders = 0;
    const order: number[] = [];
    await Promise.all(
      [1, 2, 3].map(async (i) => {
        const release = await store.lock("k3");
        holders++;
        maxHolders = Math.max(maxHolders, holders);
        order.push(i);
        await new Promise((r) => setImmediate(r));
        holders--;
        await release();
      }),
    );
    assert.equal(maxHolders, 1);
    assert.deepEqual([...order].sort(), [1, 2, 3]);
  });

  test("locks on different keys do not block each other", async () => {
    const store = await openStore();
    const r1 = await store.lock("ka");
    const r2 = await store.lock("kb");
    await r1();
    await r2();
  });

  test("a lock file holding a dead pid is broken", async () => {
    const store = await openStore();
    const file = path.join(store.root, "locks", "k4.lock");
    await fsp.writeFile(file, String(await deadPid()));
    const release = await store.lock("k4");
    assert.match(await fsp.readFile(file, "utf8"), new RegExp(`^${process.pid} `));
    await release();
    // No stale leftovers.
    assert.deepEqual(await fsp.readdir(path.join(store.root, "locks")), []);
  });

  for (const [what, content] of [
    ["an empty lock file", ""],
    ["a lock file without a valid pid", "garbage"],
  ] as const) {
    test(`${what} (owner crashed between create and write) is broken once it is old`, async () => {
      const store = await openStore();
      const file = path.join(store.root, "locks", "k5.lock");
      await fsp.writeFile(file, content);
      const old = Date.now() / 1000 - 60;
      await fsp.utimes(file, old, old);
      const pending = store.lock("k5");
      let timer: NodeJS.Timeout | undefined;
      try {
        const release = await Promise.race([
          pending,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`lock() still waiting after 3 s on ${what} a minute old`)), 3000);
          }),
        ]);
        assert.match(await fsp.readFile(file, "utf8"), new RegExp(`^${process.pid} `));
        await release();
      } finally {
        clearTimeout(timer);
        // Unblock the waiter (if it is still waiting) so the process can exit.
        await fsp.rm(file, { force: true });
        const release = await pending;
        await release();
      }
    });
  }
});

describe("lock() edge cases", () => {
  test("release does not remove a lock that was broken and re-taken by someone else", async () => {
    const store = await openStore();
    const file = path.join(store.root, "locks", "k7.lock");
    const release = await store.lock("k7");
    await fsp.writeFile(file, "999999 someone-else");
    await release();
    assert.equal(await fsp.readFile(file, "utf8"), "999999 someone-else");
    await fsp.rm(file);
  });

  test("a stale lock file carrying this process's pid (left by an earlier process with the same pid) is broken", async () => {
    const store = await openStore();
    const file = path.join(store.root, "locks", "k6.lock");
    await fsp.writeFile(file, String(process.pid));
    const pending = store.lock("k6");
    let timer: NodeJS.Timeout | undefined;
    try {
      const release = await Promise.race([
        pending,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("lock() still waiting after 3 s on a lock this process never took")),
            3000,
          );
        }),
      ]);
      await release();
    } finally {
      clearTimeout(timer);
      await fsp.rm(file, { force: true });
      const release = await pending;
      await release();
    }
  });
});

describe("lock() across processes and after crashes", () => {
  test("a lock held by another live process blocks until that process releases it", async () => {
    const store = await openStore();
    const file = path.join(store.root, "locks", "kx.lock");
    // Another live process holds the lock: its pid is in the file. `sleep` is alive until we kill it.
    const holder = spawn("sleep", ["30"], { stdio: "ignore" });
    try {
      await fsp.mkdir(path.dirname(file), { recursive: true });
      await fsp.writeFile(file, `${holder.pid} other-process`);
      let acquired = false;
      const pending = store.lock("kx").then((release) => {
        acquired = true;
        return release;
      });
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(acquired, false, "a live holder's lock is not taken");
      // The holder releases (removes its file): the waiter takes the lock on its next look.
      await fsp.rm(file);
      const release = await pending;
      assert.match(await fsp.readFile(file, "utf8"), new RegExp(`^${process.pid} `));
      await release();
    } finally {
      holder.kill("SIGKILL");
    }
  });

  test("release twice is harmless and does not free the next holder's lock", async () => {
    const store = await openStore();
    const release1 = await store.lock("ky");
    const second = store.lock("ky");
    await release1();
    const release2 = await second;
    await release1();
    const file = path.join(store.root, "locks", "ky.lock");
    assert.match(await fsp.readFile(file, "utf8"), new RegExp(`^${process.pid} `), "the second holder still holds it");
    await release2();
    assert.ok(!existsSync(file));
  });

  test("recover() removes lock drafts and broken locks of dead processes, keeps live ones and lock files", async () => {
    const store = await openStore();
    const locks = path.join(store.root, "locks");
    const dead = await deadPid();
    await fsp.mkdir(locks, { recursive: true });
    const names = [
      `k.lock.${dead}-mabc-0123abcd.new`,
      `k.lock.stale-${dead}-mabc-0123abcd`,
      `k.lock.${process.pid}-mabc-0123abcd.new`,
      "k.lock",
    ];
    for (const name of names) await fsp.writeFile(path.join(locks, name), "x");
    await store.recover();
    assert.deepEqual((await fsp.readdir(locks)).sort(), [names[3], names[2]].sort());
  });
});

// ---- defaultStoreRoot ------------------------------------------------------------------------------------------

describe("defaultStoreRoot", () => {
  test("STRATA_HOME wins, else XDG_CACHE_HOME/strata, else ~/.cache/strata", () => {
    const saved = { home: process.env.STRATA_HOME, xdg: process.env.XDG_CACHE_HOME };
    try {
      process.env.STRATA_HOME = "rel/store";
      assert.equal(defaultStoreRoot(), path.resolve("rel/store"));
      delete process.env.STRATA_HOME;
      process.env.XDG_CACHE_HOME = "/x/cache";
      assert.equal(defaultStoreRoot(), "/x/cache/strata");
      delete process.env.XDG_CACHE_HOME;
      assert.equal(defaultStoreRoot(), path.join(os.homedir(), ".cache", "strata"));
    } finally {
      if (saved.home === undefined) delete process.env.STRATA_HOME;
      else process.env.STRATA_HOME = saved.home;
      if (saved.xdg === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved.xdg;
    }
  });
});
