// The Store contract as a reusable suite: every Store implementation runs it (test/store/conformance-*.test.ts).
// It only uses the Store interface (plus tempDir's directory for the recover() test), so it says nothing about
// where a backend keeps things; backend-specific behaviour is tested next to each backend.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, promises as fsp } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { DigestMismatchError, NotFoundError, StoreError } from "../../src/errors.js";
import { packDir } from "../../src/layer/tar-pack.js";
import { MediaType } from "../../src/oci/types.js";
import { ScopedStore } from "../../src/store/scoped.js";
import type { ImageRecord, LayerRecord, NamedStore, Store } from "../../src/store/store.js";
import { sha256Bytes, type Digest } from "../../src/util/digest.js";

const fakeId = (h: string) => ("sha256:" + h) as Digest;

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
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
export async function storedImage(store: Store, tag: string, id?: Digest): Promise<ImageRecord> {
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

/** A real layer: `files` packed deterministically; returns the tar bytes and the gzipped blob. */
export async function makeLayer(scratch: string, files: Record<string, string>): Promise<{ tar: Buffer; gz: Buffer }> {
  const src = await fsp.mkdtemp(path.join(scratch, "layer-src-"));
  for (const [name, content] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(src, name)), { recursive: true });
    await fsp.writeFile(path.join(src, name), content);
  }
  const tar = await readAll(packDir(src, { epoch: 1767225600 }));
  await fsp.rm(src, { recursive: true, force: true });
  return { tar, gz: gzipSync(tar) };
}

/** A temp file holding `content`, in a temp dir of the store (where the engine writes blobs before putBlobFile). */
async function tempFile(store: Store, content: string | Buffer): Promise<string> {
  const file = path.join(await store.tempDir("test"), "blob");
  await fsp.writeFile(file, content, { mode: 0o600 });
  return file;
}

/**
 * Registers the Store contract tests under `describe(name)`. `open` must return a fresh, empty store each time
 * (tests write overlapping content and expect to see only their own).
 */
export function storeConformance(name: string, open: () => Promise<NamedStore>): void {
  describe(`Store conformance: ${name}`, () => {
    describe("blobs", () => {
      test("putBlobBytes stores content under its sha256, is idempotent, and reads back every way", async () => {
        const store = await open();
        const data = Buffer.from("hello blob");
        const d1 = await store.putBlobBytes(data);
        const d2 = await store.putBlobBytes(data);
        assert.equal(d1, d2);
        assert.equal(d1, "sha256:" + createHash("sha256").update(data).digest("hex"));
        assert.ok(await store.hasBlob(d1));
        assert.ok((await store.readBlob(d1)).equals(data));
        assert.ok((await readAll(await store.openBlob(d1))).equals(data));
        const p = await store.blobPath(d1);
        assert.ok(path.isAbsolute(p));
        assert.ok((await fsp.readFile(p)).equals(data));
      });

      test("an empty blob is a blob", async () => {
        const store = await open();
        const d = await store.putBlobBytes(new Uint8Array(0));
        assert.equal(d, sha256Bytes(""));
        assert.ok(await store.hasBlob(d));
        assert.equal((await store.readBlob(d)).length, 0);
      });

      test("concurrent putBlobBytes of the same content agree and leave one readable blob", async () => {
        const store = await open();
        const data = Buffer.alloc(256 * 1024, 7);
        const ds = await Promise.all(Array.from({ length: 8 }, () => store.putBlobBytes(data)));
        assert.equal(new Set(ds).size, 1);
        assert.ok((await store.readBlob(ds[0]!)).equals(data));
      });

      test("putBlobFile with the right digest takes the file in", async () => {
        const store = await open();
        const tmp = await tempFile(store, "file blob");
        const d = sha256Bytes("file blob");
        await store.putBlobFile(tmp, d);
        assert.ok(!existsSync(tmp), "the temp file is consumed");
        assert.ok(await store.hasBlob(d));
        assert.equal((await store.readBlob(d)).toString(), "file blob");
        assert.equal((await fsp.readFile(await store.blobPath(d))).toString(), "file blob");
      });

      test("putBlobFile of an already stored blob just removes the temp file", async () => {
        const store = await open();
        const d = await store.putBlobBytes(Buffer.from("dup"));
        const tmp = await tempFile(store, "dup");
        await store.putBlobFile(tmp, d);
        assert.ok(!existsSync(tmp));
        assert.equal((await store.readBlob(d)).toString(), "dup");
      });

      test("putBlobFile with a wrong digest throws DigestMismatchError and stores nothing", async () => {
        const store = await open();
        const tmp = await tempFile(store, "actual content");
        const claimed = sha256Bytes("something else");
        await assert.rejects(store.putBlobFile(tmp, claimed), (e: unknown) => {
          assert.ok(e instanceof DigestMismatchError, String(e));
          assert.equal(e.expected, claimed);
          assert.equal(e.actual, sha256Bytes("actual content"));
          return true;
        });
        assert.equal(await store.hasBlob(claimed), false);
        assert.equal(await store.hasBlob(sha256Bytes("actual content")), false);
        await assert.rejects(store.readBlob(claimed), NotFoundError);
        assert.ok(!existsSync(tmp), "the rejected temp file is removed");
      });

      test("putBlobFile of a stored digest with different content is still refused", async () => {
        const store = await open();
        const d = await store.putBlobBytes(Buffer.from("the real thing"));
        const tmp = await tempFile(store, "an impostor");
        await assert.rejects(store.putBlobFile(tmp, d), DigestMismatchError);
        assert.equal((await store.readBlob(d)).toString(), "the real thing");
      });

      test("putBlobFile with verified: true trusts the caller's digest", async () => {
        const store = await open();
        const tmp = await tempFile(store, "x");
        const d = sha256Bytes("x");
        await store.putBlobFile(tmp, d, { verified: true });
        assert.ok(await store.hasBlob(d));
        assert.equal((await store.readBlob(d)).toString(), "x");
      });

      test("missing blobs are NotFoundError (naming the digest) for openBlob, readBlob and blobPath", async () => {
        const store = await open();
        const d = sha256Bytes("absent");
        assert.equal(await store.hasBlob(d), false);
        await assert.rejects(store.openBlob(d), NotFoundError);
        await assert.rejects(store.readBlob(d), (e: unknown) => e instanceof NotFoundError && e.message.includes(d));
        await assert.rejects(store.blobPath(d), NotFoundError);
      });
    });

    describe("images, index, chains, logs", () => {
      test("putImage and getImage round-trip a record; listImages lists it", async () => {
        const store = await open();
        const rec = await storedImage(store, "a");
        rec.parent = sha256Bytes("parent");
        await store.putImage(rec);
        assert.deepEqual(await store.getImage(rec.id), rec);
        assert.deepEqual(await store.listImages(), [rec]);
      });

      test("listImages of an empty store is empty; getImage of an unknown id is undefined", async () => {
        const store = await open();
        assert.deepEqual(await store.listImages(), []);
        assert.equal(await store.getImage(sha256Bytes("nope")), undefined);
      });

      for (const which of ["configDigest", "manifestDigest", "layer"] as const) {
        test(`putImage refuses a record whose ${which} blob is missing (StoreError) and records nothing`, async () => {
          const store = await open();
          const rec = await storedImage(store, "b");
          const missing = sha256Bytes(`missing ${which}`);
          if (which === "layer") rec.layers = [...rec.layers, { ...rec.layers[0]!, digest: missing }];
          else rec[which] = missing;
          await assert.rejects(store.putImage(rec), (e: unknown) => {
            assert.ok(e instanceof StoreError, String(e));
            assert.match(e.message, new RegExp(`refusing to record image .*blob ${missing} is missing`));
            return true;
          });
          assert.equal(await store.getImage(rec.id), undefined);
          assert.deepEqual(await store.listImages(), []);
        });
      }

      test("getIndex returns an entry whose image record exists; putIndex replaces it", async () => {
        const store = await open();
        const rec = await storedImage(store, "c");
        await store.putImage(rec);
        const entry = { key: "0123456789abcdef0123456789abcdef", imageId: rec.id, createdAt: "2026-01-01T00:00:00Z" };
        await store.putIndex(entry);
        assert.deepEqual(await store.getIndex(entry.key), entry);
        const rec2 = await storedImage(store, "c2");
        await store.putImage(rec2);
        const entry2 = { ...entry, imageId: rec2.id, createdAt: "2026-01-02T00:00:00Z" };
        await store.putIndex(entry2);
        assert.deepEqual(await store.getIndex(entry.key), entry2);
      });

      test("getIndex ignores an entry whose image record is missing (crash between writes)", async () => {
        const store = await open();
        const entry = {
          key: "fedcba9876543210fedcba9876543210",
          imageId: sha256Bytes("never recorded"),
          createdAt: "2026-01-01T00:00:00Z",
        };
        await store.putIndex(entry);
        assert.equal(await store.getIndex(entry.key), undefined);
      });

      test("getIndex of an unknown key is undefined", async () => {
        const store = await open();
        assert.equal(await store.getIndex("00000000000000000000000000000000"), undefined);
      });

      test("index keys that could escape the index are refused", async () => {
        const store = await open();
        for (const key of ["../evil", "a/b", "ABC", "", "x.json"]) {
          await assert.rejects(store.getIndex(key), StoreError, key);
          await assert.rejects(store.putIndex({ key, imageId: sha256Bytes("x"), createdAt: "" }), StoreError, key);
        }
      });

      test("chains round-trip by name (any characters); unknown chains are undefined", async () => {
        const store = await open();
        const chain = {
          name: "examples/demo.ts#default",
          builtAt: "2026-01-01T00:00:00Z",
          imageIds: [sha256Bytes("1"), sha256Bytes("2")],
        };
        await store.putChain(chain);
        assert.deepEqual(await store.getChain(chain.name), chain);
        assert.equal(await store.getChain("other"), undefined);
        const newer = { ...chain, builtAt: "2026-01-02T00:00:00Z", imageIds: [sha256Bytes("3")] };
        await store.putChain(newer);
        assert.deepEqual(await store.getChain(chain.name), newer);
      });

      test("logs round-trip (UTF-8 intact); a missing log is undefined", async () => {
        const store = await open();
        const id = sha256Bytes("img");
        assert.equal(await store.getLog(id), undefined);
        await store.putLog(id, "line 1\nline 2 — ünïcødé ✓");
        assert.equal(await store.getLog(id), "line 1\nline 2 — ünïcødé ✓");
      });
    });

    describe("resolveImage", () => {
      const hexA = "abcdef01" + "1".repeat(56);
      const hexB = "abcdef01" + "2".repeat(56);
      const hexC = "12345678" + "3".repeat(56);
      let shared: Promise<{ store: Store; a: ImageRecord; b: ImageRecord; c: ImageRecord }> | undefined;
      const fixture = () =>
        (shared ??= (async () => {
          const store = await open();
          const a = await storedImage(store, "a", fakeId(hexA));
          const b = await storedImage(store, "b", fakeId(hexB));
          const c = await storedImage(store, "c", fakeId(hexC));
          for (const r of [a, b, c]) await store.putImage(r);
          return { store, a, b, c };
        })());

      test("resolves a full id, a bare id in any case, and unique prefixes", async () => {
        const { store, a, b, c } = await fixture();
        assert.deepEqual(await store.resolveImage(`sha256:${hexC}`), c);
        assert.deepEqual(await store.resolveImage(hexA), a);
        assert.deepEqual(await store.resolveImage(hexA.toUpperCase()), a);
        assert.deepEqual(await store.resolveImage("12345678"), c);
        assert.deepEqual(await store.resolveImage("sha256:123456"), c);
        assert.deepEqual(await store.resolveImage("abcdef011"), a);
        assert.deepEqual(await store.resolveImage("abcdef012"), b);
      });

      test("an ambiguous prefix says how many images match", async () => {
        const { store } = await fixture();
        await assert.rejects(store.resolveImage("abcdef01"), (e: unknown) => {
          assert.ok(e instanceof NotFoundError);
          assert.match(e.message, /image id prefix abcdef01 is ambiguous \(2 images\); give more digits/);
          return true;
        });
      });

      test("unknown prefixes and ids are NotFoundError mentioning `strata images`", async () => {
        const { store } = await fixture();
        await assert.rejects(
          store.resolveImage("99999999"),
          (e: unknown) =>
            e instanceof NotFoundError &&
            /no image id starts with 99999999/.test(e.message) &&
            e.message.includes("`strata images`"),
        );
        await assert.rejects(
          store.resolveImage("sha256:" + "9".repeat(64)),
          (e: unknown) => e instanceof NotFoundError && e.message.includes("`strata images`"),
        );
      });

      test("references that are not ids or are too short are refused", async () => {
        const { store } = await fixture();
        for (const ref of ["abc", "12345", "xyz12345", "sha256:", "", "sha512:" + "1".repeat(64), "1".repeat(65)]) {
          await assert.rejects(
            store.resolveImage(ref),
            (e: unknown) => e instanceof NotFoundError && /is not an image id/.test(e.message),
            ref,
          );
        }
      });
    });

    describe("layers", () => {
      test("layerDir unpacks a gzipped layer blob once and reuses it", async () => {
        const store = await open();
        const { tar, gz } = await makeLayer(await store.tempDir("scratch"), { "hello.txt": "hi", "sub/dir/f": "deep" });
        const digest = await store.putBlobBytes(gz);
        const layer: LayerRecord = {
          digest,
          diffId: sha256Bytes(tar),
          size: gz.length,
          mediaType: MediaType.ociLayerGzip,
        };
        const dir = await store.layerDir(layer);
        assert.equal(await fsp.readFile(path.join(dir, "hello.txt"), "utf8"), "hi");
        assert.equal(await fsp.readFile(path.join(dir, "sub/dir/f"), "utf8"), "deep");
        assert.equal(await store.layerDir(layer), dir);
      });

      test("layerDir handles uncompressed tar layers", async () => {
        const store = await open();
        const { tar } = await makeLayer(await store.tempDir("scratch"), { "plain.txt": "plain" });
        const digest = await store.putBlobBytes(tar);
        const dir = await store.layerDir({
          digest,
          diffId: digest,
          size: tar.length,
          mediaType: MediaType.ociLayerTar,
        });
        assert.equal(await fsp.readFile(path.join(dir, "plain.txt"), "utf8"), "plain");
      });

      test("layerDir of a layer whose blob is missing is a NotFoundError", async () => {
        const store = await open();
        const d = sha256Bytes("no blob");
        await assert.rejects(
          store.layerDir({ digest: d, diffId: d, size: 0, mediaType: MediaType.ociLayerGzip }),
          NotFoundError,
        );
      });

      test("layerDir refuses a blob whose uncompressed content does not match the diffId", async () => {
        const store = await open();
        const { gz } = await makeLayer(await store.tempDir("scratch"), { x: "x" });
        const digest = await store.putBlobBytes(gz);
        const claimed = sha256Bytes("some other layer");
        await assert.rejects(
          store.layerDir({ digest, diffId: claimed, size: 0, mediaType: MediaType.ociLayerGzip }),
          (e: unknown) => e instanceof DigestMismatchError && e.expected === claimed,
        );
      });

      test("adoptLayerDir moves a directory in; a second adoption of the same diffId discards the newcomer", async () => {
        const store = await open();
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
        // An adopted layer is what layerDir returns for its diffId.
        assert.equal(
          await store.layerDir({ digest: sha256Bytes("unused"), diffId, size: 0, mediaType: MediaType.ociLayerGzip }),
          t1,
        );
      });
    });

    describe("temp dirs, recover(), locks", () => {
      test("tempDir gives fresh private dirs named with the prefix and this pid", async () => {
        const store = await open();
        const d1 = await store.tempDir("step");
        const d2 = await store.tempDir("step");
        assert.notEqual(d1, d2);
        assert.match(path.basename(d1), new RegExp(`^step-${process.pid}-`));
        assert.deepEqual(await fsp.readdir(d1), []);
      });

      test("recover() reclaims temp dirs of dead processes, keeps live ones, and runs beforeReclaim first", async () => {
        const store = await open();
        const live = await store.tempDir("step");
        await fsp.writeFile(path.join(live, "f"), "x");
        const deadDir = path.join(path.dirname(live), `step-${await deadPid()}-abc-1234`);
        await fsp.mkdir(path.join(deadDir, "nested"), { recursive: true });
        await fsp.writeFile(path.join(deadDir, "nested/f"), "x");
        let calls = 0;
        await store.recover(async () => {
          calls++;
          assert.ok(existsSync(deadDir), "beforeReclaim runs before anything is removed");
        });
        assert.equal(calls, 1);
        assert.ok(!existsSync(deadDir));
        assert.ok(existsSync(live));
        // Nothing left to reclaim: beforeReclaim is not called.
        await store.recover(async () => {
          calls++;
        });
        assert.equal(calls, 1);
      });

      test("lock() excludes other holders of the same key until released; other keys are independent", async () => {
        const store = await open();
        const events: string[] = [];
        const release1 = await store.lock("conformance-k1");
        const second = store.lock("conformance-k1").then((release) => {
          events.push("acquired 2");
          return release;
        });
        const other = await store.lock("conformance-k2");
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(events.length, 0);
        events.push("releasing 1");
        await release1();
        const release2 = await second;
        assert.deepEqual(events, ["releasing 1", "acquired 2"]);
        await release2();
        await other();
      });

      test("concurrent lockers of one key hold it one at a time, round after round", async () => {
        const store = await open();
        // Many rounds of several in-process waiters: a hand-off that lets a waiter see the lock between its
        // creation and its registration, or a release that removes the next holder's file, shows up here.
        let holders = 0;
        let max = 0;
        for (let round = 0; round < 6; round++) {
          await Promise.all(
            Array.from({ length: 5 }, async () => {
              const release = await store.lock(`conformance-k3-${round % 3}`);
              holders++;
              max = Math.max(max, holders);
              await new Promise((r) => setImmediate(r));
              holders--;
              await release();
            }),
          );
        }
        assert.equal(max, 1);
      });
    });

    describe("names", () => {
      const at = "2026-12-01T00:00:00.000Z";
      test("a name is stored, read back, listed, repointed and removed", async () => {
        const store = await open();
        const a = await storedImage(store, "name-a");
        const b = await storedImage(store, "name-b");
        await store.putImage(a);
        await store.putImage(b);
        await store.putName({ name: "team/app:v1", imageId: a.id, createdAt: at });
        assert.deepEqual(await store.getName("team/app:v1"), { name: "team/app:v1", imageId: a.id, createdAt: at });
        assert.equal(await store.getName("team/app:v2"), undefined);
        await store.putName({ name: "team/app:v1", imageId: b.id, createdAt: at });
        assert.equal((await store.getName("team/app:v1"))?.imageId, b.id);
        await store.putName({ name: "localhost:5000/x/y:latest", imageId: a.id, createdAt: at });
        assert.deepEqual((await store.listNames()).map((n) => n.name).sort(), [
          "localhost:5000/x/y:latest",
          "team/app:v1",
        ]);
        assert.equal(await store.deleteName("team/app:v1"), true);
        assert.equal(await store.deleteName("team/app:v1"), false);
        assert.deepEqual(
          (await store.listNames()).map((n) => n.name),
          ["localhost:5000/x/y:latest"],
        );
      });

      test("a name is refused for an image the store lacks, and when not normalised", async () => {
        const store = await open();
        const missing = await storedImage(store, "name-missing");
        await assert.rejects(store.putName({ name: "app:latest", imageId: missing.id, createdAt: at }), StoreError);
        await store.putImage(missing);
        await assert.rejects(store.putName({ name: "app", imageId: missing.id, createdAt: at }), StoreError);
        assert.equal(await store.getName("app:latest"), undefined);
      });

      test("resolveImage takes a name (tag latest by default) before an id prefix, and says what is missing", async () => {
        const store = await open();
        const a = await storedImage(store, "resolve-a");
        const b = await storedImage(store, "resolve-b");
        await store.putImage(a);
        await store.putImage(b);
        await store.putName({ name: "resolve-me:latest", imageId: a.id, createdAt: at });
        assert.equal((await store.resolveImage("resolve-me")).id, a.id);
        assert.equal((await store.resolveImage("resolve-me:latest")).id, a.id);
        // A name that is also a hex prefix of another image: the name wins.
        const prefix = b.id.slice(7, 15);
        await store.putName({ name: `${prefix}:latest`, imageId: a.id, createdAt: at });
        assert.equal((await store.resolveImage(prefix)).id, a.id);
        assert.equal((await store.resolveImage(`sha256:${prefix}`)).id, b.id);
        await assert.rejects(store.resolveImage("resolve-me:v9"), (e: Error) => {
          assert.ok(e instanceof NotFoundError);
          assert.match(e.message, /no image is named resolve-me:v9/);
          return true;
        });
        await assert.rejects(store.resolveImage("Not A Ref!"), NotFoundError);
      });

      test("a scoped view has names of its own; the store's names are not its own", async () => {
        const store = await open();
        const a = await storedImage(store, "scoped-a");
        const b = await storedImage(store, "scoped-b");
        await store.putImage(a);
        await store.putImage(b);
        const red = new ScopedStore(store, "red");
        const blue = new ScopedStore(store, "blue");
        await red.putName({ name: "shared:latest", imageId: a.id, createdAt: at });
        await store.putName({ name: "shared:latest", imageId: b.id, createdAt: at });
        assert.equal((await red.resolveImage("shared")).id, a.id);
        assert.equal((await store.resolveImage("shared")).id, b.id);
        await assert.rejects(blue.resolveImage("shared"), NotFoundError);
        assert.deepEqual(
          (await red.listNames()).map((n) => n.name),
          ["shared:latest"],
        );
        assert.deepEqual(await blue.listNames(), []);
        assert.equal(await blue.deleteName("shared:latest"), false);
        assert.equal((await red.getName("shared:latest"))?.imageId, a.id);
        // The store lists every scope's names, the scoped ones prefixed (what prune keeps).
        assert.deepEqual((await store.listNames()).map((n) => n.name).sort(), [
          "scope:red:shared:latest",
          "shared:latest",
        ]);
      });
    });
  });
}
