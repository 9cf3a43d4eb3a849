// layerDirs: an image's layer directories as overlay lowers (base first, a repeated layer only at its topmost place),
// layers unpacked concurrently, each diffID once, and a failure reported only after every unpack has settled — against
// a real LocalStore with real layer blobs. topmostOnly: the pure rule that drops the repeats.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, promises as fsp, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { NotFoundError } from "../../src/errors.js";
import { encodeHeader, endOfArchive, padding } from "../../src/layer/tar-header.js";
import { LocalStore } from "../../src/store/local.js";
import { layerDirs, topmostOnly, type LayerRecord } from "../../src/store/store.js";
import { sha256Bytes, type Digest } from "../../src/util/digest.js";

let work: string;
let store: LocalStore;
before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-layer-dirs-"));
  store = await LocalStore.open(path.join(work, "store"));
});
after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

/** A layer blob in the store holding `files` (name → content). */
async function layer(files: Record<string, string>): Promise<LayerRecord> {
  const parts: Buffer[] = [];
  for (const [name, content] of Object.entries(files)) {
    const data = Buffer.from(content);
    parts.push(
      encodeHeader({ name, type: "file", mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: 1_700_000_000 }),
      data,
      padding(data.length),
    );
  }
  parts.push(endOfArchive());
  const tar = Buffer.concat(parts);
  const gz = gzipSync(tar);
  const digest = await store.putBlobBytes(gz);
  return {
    digest,
    diffId: sha256Bytes(tar),
    size: gz.length,
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
  };
}

test("topmostOnly keeps each item at its last (topmost) place, in order; input without repeats is unchanged", () => {
  assert.deepEqual(topmostOnly(["a", "b", "c"]), ["a", "b", "c"]);
  assert.deepEqual(topmostOnly([]), []);
  assert.deepEqual(topmostOnly(["a", "a"]), ["a"]);
  // Two empty layers (one diffID) between others.
  assert.deepEqual(topmostOnly(["base", "e", "e", "x"]), ["base", "e", "x"]);
  // X, Y (deletes something of X's), X again: the lower X goes, Y stays below the upper X.
  assert.deepEqual(topmostOnly(["base", "x", "y", "x"]), ["base", "y", "x"]);
  assert.deepEqual(topmostOnly(["a", "b", "a", "c", "b", "a"]), ["c", "b", "a"]);
  const input = ["p", "q", "p"];
  topmostOnly(input);
  assert.deepEqual(input, ["p", "q", "p"], "the input is not modified");
});

test("the directories come back in the layers' order; a repeated diffID is unpacked once and named once, at its topmost place", async () => {
  const a = await layer({ "a.txt": "A" });
  const b = await layer(Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`b/${i}.txt`, `B${i}`])));
  const c = await layer({ "c.txt": "C" });
  // Cold: the repeated layer is unpacked once, concurrently with the others.
  const dirs = await layerDirs(store, [a, b, a, c]);
  const [da, db, dc] = await Promise.all([a, b, c].map((l) => store.layerDir(l)));
  // An overlay must not name one lower dir twice (the mount fails with ELOOP); the upper copy shadows the lower one.
  assert.deepEqual(dirs, [db, da, dc], "what layerDir gives one by one, a's at its topmost place");
  assert.equal(readFileSync(path.join(da!, "a.txt"), "utf8"), "A");
  assert.equal(readFileSync(path.join(db!, "b/299.txt"), "utf8"), "B299");
  assert.equal(readFileSync(path.join(dc!, "c.txt"), "utf8"), "C");
  assert.deepEqual(await layerDirs(store, [a, b, c]), [da, db, dc]);
  assert.deepEqual(await layerDirs(store, [a, a, a]), [da]);
  assert.deepEqual(await layerDirs(store, []), []);
});

test("a layer that cannot be unpacked fails the call after the others have finished; nothing is left half-made", async () => {
  const good = await layer({ "good.txt": "fine" });
  const missing: LayerRecord = {
    ...good,
    digest: `sha256:${"e".repeat(64)}` as Digest,
    diffId: `sha256:${"f".repeat(64)}` as Digest,
  };
  await assert.rejects(layerDirs(store, [missing, good]), NotFoundError);
  // The good layer was unpacked all the same (its unpack was not abandoned mid-way), and no temp dir is left.
  assert.ok(existsSync(path.join(await store.layerDir(good), "good.txt")));
  assert.deepEqual(await fsp.readdir(path.join(store.root, "tmp")), []);
});
