// layerDirsInUse: the one scan of which layer dirs a running build uses, read by both `strata cache prune` and the S3
// store's cache eviction. StoreLayout: the paths of the on-disk layout, and which layer dir a path lies in.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { layerDirsInUse } from "../../src/store/layers-in-use.js";
import { StoreLayout } from "../../src/store/layout.js";
import type { Digest } from "../../src/util/digest.js";

const hex = (c: string) => c.repeat(64);

let work: string;
let layout: StoreLayout;
before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-in-use-"));
  layout = new StoreLayout(path.join(work, "store"));
  for (const c of "abcdef") await fsp.mkdir(path.join(layout.layersDir, hex(c), "usr", "bin"), { recursive: true });
});
after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

/** A work dir `tmp/<name>/l/` with one link per target. */
async function workDir(name: string, targets: string[]): Promise<void> {
  const links = path.join(layout.tmpDir, name, "l");
  await fsp.mkdir(links, { recursive: true });
  for (const [i, t] of targets.entries()) await fsp.symlink(t, path.join(links, i.toString(36)));
}

describe("layerDirsInUse", () => {
  test("a link to a layer dir keeps it; so does a relative link", async () => {
    await workDir("build-1-x", [
      layout.layerDir(`sha256:${hex("a")}` as Digest),
      path.join("..", "..", "..", "layers", hex("b")),
    ]);
    const used = await layerDirsInUse(layout, "/nonexistent");
    assert.ok(used.has(path.join(layout.layersDir, hex("a"))));
    assert.ok(used.has(path.join(layout.layersDir, hex("b"))));
  });

  // The case where prune and the S3 cache's eviction used to differ: eviction kept only the exact link target, so a
  // COPY-only step's link to a file inside a layer dir (or a link to a subdirectory) did not keep the layer dir.
  test("a link to a path inside a layer dir keeps the whole layer dir (not just the path)", async () => {
    await workDir("copy-2-y", [
      path.join(layout.layersDir, hex("c"), "usr", "bin"),
      path.join(layout.layersDir, hex("d"), "usr/bin/tool"),
    ]);
    const used = await layerDirsInUse(layout, "/nonexistent");
    assert.ok(used.has(path.join(layout.layersDir, hex("c"))), [...used].join("\n"));
    assert.ok(used.has(path.join(layout.layersDir, hex("d"))));
    assert.ok(![...used].some((u) => u.includes("usr")), "only layer dirs, never paths inside them");
  });

  test("links outside layers/, dangling or odd names are ignored; a mount naming a layer dir keeps it", async () => {
    await workDir("run-3-z", [path.join(work, "elsewhere"), path.join(layout.layersDir, "not-a-digest")]);
    const mounts = path.join(work, "mounts");
    const e = path.join(layout.layersDir, hex("e"));
    await fsp.writeFile(
      mounts,
      `overlay /x overlay rw,lowerdir=l/0:l/1,upperdir=u 0 0\n/dev/sda1 ${e}/usr\\040bin ext4 rw 0 0\n`,
    );
    const used = await layerDirsInUse(layout, mounts);
    assert.ok(used.has(e));
    assert.ok(!used.has(path.join(layout.layersDir, hex("f"))));
    assert.ok(![...used].some((u) => u.includes("not-a-digest") || u.includes("elsewhere")));
  });
});

describe("StoreLayout", () => {
  test("layerDirContaining names the layer dir of a path in it, and nothing for other paths", () => {
    const l = new StoreLayout("/s");
    assert.equal(l.layerDirContaining(`/s/layers/${hex("a")}`), `/s/layers/${hex("a")}`);
    assert.equal(l.layerDirContaining(`/s/layers/${hex("a")}/etc/passwd`), `/s/layers/${hex("a")}`);
    assert.equal(l.layerDirContaining(`/s/layers/${hex("a")}x/etc`), undefined);
    assert.equal(l.layerDirContaining("/s/layers/abc"), undefined);
    assert.equal(l.layerDirContaining(`/s/lazy/${hex("a")}`), undefined);
    assert.equal(l.layerDirContaining(`/other/layers/${hex("a")}`), undefined);
  });

  test("the documented layout (cache/README.md)", () => {
    const l = new StoreLayout("/s");
    const d = `sha256:${hex("1")}` as Digest;
    assert.equal(l.blobFile(d), `/s/blobs/sha256/${hex("1")}`);
    assert.equal(l.indexFile("abcdef"), "/s/index/ab/abcdef.json");
    assert.equal(l.imageFile(d), `/s/images/${hex("1")}.json`);
    assert.equal(l.layerDir(d), `/s/layers/${hex("1")}`);
    assert.equal(l.statCacheFile, "/s/statcache.json");
    assert.equal(l.definitionsDir, "/s/defs");
    assert.equal(l.selectFile("h"), "/s/selects/h.json");
    assert.equal(l.linkLayerFile("k"), "/s/link-layers/k.json");
    assert.equal(l.cacheMountDir("h"), "/s/cache-mounts/h");
    assert.equal(l.lazyImageDir(d), `/s/lazy/${hex("1")}`);
    assert.equal(l.estargzFile(d, 4096, 9), `/s/estargz/${hex("1")}.4096.9.json`);
    assert.equal(l.registrySourcesFile(d), `/s/registry-sources/11/${hex("1")}.json`);
    assert.equal(l.serviceTreesDir, "/s/service/trees");
    assert.equal(l.s3CacheDir("my bucket"), "/s/s3/my_bucket");
  });
});
