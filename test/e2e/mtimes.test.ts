// Copies keep their sources' modification times (issue 12 item 15), as BuildKit's COPY does, in the layer dir a later
// RUN sees and in the layer's tar; keys still ignore mtimes (an mtime-only change is a cache hit that returns the
// layer built before), and layers stay reproducible: the same context on two stores gives the same digests.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { after, describe, test } from "node:test";
import { Image, LocalStore } from "../../src/index.js";
import { loadBuilderVersion } from "../../src/builder-version.js";
import type { Digest } from "../../src/util/digest.js";
import { makeBusyboxTree } from "../support/strata.js";

const roots: string[] = [];
after(async () => {
  for (const r of roots) await fsp.rm(r, { recursive: true, force: true });
});

async function tmp(prefix: string): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), `strata-mtimes-${prefix}-`));
  roots.push(d);
  return d;
}

/** A project whose prebuilt object is newer than its source, and two equal files with different mtimes. */
async function makeProject(dir: string): Promise<void> {
  await fsp.mkdir(path.join(dir, "inc"), { recursive: true });
  await fsp.writeFile(path.join(dir, "a.c"), "int main(void) { return 0; }\n");
  await fsp.writeFile(path.join(dir, "a.o"), "prebuilt\n");
  await fsp.writeFile(path.join(dir, "same-1.txt"), "identical content\n");
  await fsp.writeFile(path.join(dir, "same-2.txt"), "identical content\n");
  await fsp.writeFile(path.join(dir, "inc/a.h"), "#define A 1\n");
  await fsp.symlink("a.c", path.join(dir, "main.c"));
  const times: [string, number][] = [
    ["a.c", 1_600_000_000],
    ["a.o", 1_600_000_100],
    ["same-1.txt", 1_600_000_300],
    ["same-2.txt", 1_800_000_000],
    ["inc/a.h", 1_600_000_400],
    ["main.c", 1_600_000_500],
    ["inc", 1_600_000_600],
  ];
  for (const [rel, t] of times) await fsp.lutimes(path.join(dir, rel), t, t);
}

/** name → [type flag, mtime] of every entry of a stored gzip'd layer tar. */
async function tarTimes(store: LocalStore, digest: Digest): Promise<Map<string, [string, number]>> {
  const tar = gunzipSync(await store.readBlob(digest));
  const out = new Map<string, [string, number]>();
  for (let off = 0; off + 512 <= tar.length; ) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const field = (a: number, n: number) =>
      h
        .subarray(a, a + n)
        .toString("latin1")
        .replace(/\0.*$/s, "");
    const name = [field(345, 155), field(0, 100)].filter(Boolean).join("/");
    const size = parseInt(field(124, 12).trim() || "0", 8);
    out.set(name.replace(/\/$/, ""), [field(156, 1), parseInt(field(136, 12).trim(), 8)]);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

const mtimeOf = async (p: string) => Math.floor((await fsp.lstat(p)).mtimeMs / 1000);

describe("copies keep mtimes", () => {
  test("addLocalDir: the layer dir and its tar keep every mtime, equal files included; a RUN sees a.o newer than a.c", async () => {
    const root = await tmp("sdk");
    const bb = path.join(root, "bb");
    await makeBusyboxTree(bb);
    const project = path.join(root, "project");
    await makeProject(project);
    const store = await LocalStore.open(path.join(root, "store"));
    const image = Image.fromScratch()
      .addLocalDir(bb, "/", { copy: true })
      .addLocalDir(project, "/app", { copy: true })
      .runCommands("test /app/a.o -nt /app/a.c && test ! /app/a.c -nt /app/a.o && echo up-to-date > /make-check");
    const built = await image.build({ store, log: () => undefined });
    const copy = built.steps[2]!;
    assert.ok(copy.layer, "the addLocalDir step has a layer");
    const tar = await tarTimes(store, copy.layer);
    const epoch = loadBuilderVersion().sourceDateEpoch;
    assert.deepEqual(Object.fromEntries(tar), {
      app: ["5", epoch], // made for the copy (no source of its own): the epoch
      "app/a.c": ["0", 1_600_000_000],
      "app/a.o": ["0", 1_600_000_100],
      "app/inc": ["5", 1_600_000_600],
      "app/inc/a.h": ["0", 1_600_000_400],
      "app/main.c": ["2", 1_600_000_500],
      "app/same-1.txt": ["0", 1_600_000_300],
      // Same content, mode and owner as same-1.txt: the content pool must not give both one inode (and one mtime).
      "app/same-2.txt": ["0", 1_800_000_000],
    });
    // The layer dir (what a later RUN's overlay shows) holds the same times.
    const rec = await store.getImage(built.steps[2]!.imageId);
    const dir = store.layout.layerDir(rec!.layers[rec!.layers.length - 1]!.diffId);
    assert.equal(await mtimeOf(path.join(dir, "app/a.o")), 1_600_000_100);
    assert.equal(await mtimeOf(path.join(dir, "app/same-2.txt")), 1_800_000_000);
    const run = await store.getImage(built.imageId);
    const top = store.layout.layerDir(run!.layers[run!.layers.length - 1]!.diffId);
    assert.equal(await fsp.readFile(path.join(top, "make-check"), "utf8"), "up-to-date\n");
  });

  test("an mtime-only change is a cache hit that returns the layer built before, with its mtimes", async () => {
    const root = await tmp("hit");
    const bb = path.join(root, "bb");
    await makeBusyboxTree(bb);
    const project = path.join(root, "project");
    await makeProject(project);
    const store = await LocalStore.open(path.join(root, "store"));
    const image = Image.fromScratch().addLocalDir(bb, "/", { copy: true }).addLocalDir(project, "/app", { copy: true });
    const first = await image.build({ store, log: () => undefined });
    await fsp.utimes(path.join(project, "a.c"), 1_700_000_000, 1_700_000_000);
    const second = await image.build({ store, log: () => undefined });
    assert.ok(
      second.steps.every((s) => s.cached),
      "touching a context file keeps every step cached",
    );
    assert.equal(second.imageId, first.imageId);
    assert.equal(second.steps[2]!.layer, first.steps[2]!.layer);
    const tar = await tarTimes(store, second.steps[2]!.layer!);
    assert.deepEqual(tar.get("app/a.c"), ["0", 1_600_000_000], "the recorded mtime, not the new one");
  });

  test("two stores give the same layer digests, a COPY --from of a RUN's output included", async () => {
    const root = await tmp("repro");
    const context = path.join(root, "context");
    await makeBusyboxTree(path.join(context, "rootfs"));
    await makeProject(path.join(context, "project"));
    const dockerfile = path.join(root, "Dockerfile");
    await fsp.writeFile(
      dockerfile,
      [
        "FROM scratch AS gen",
        "COPY rootfs/ /",
        "RUN echo generated > /gen.txt",
        "FROM scratch",
        "COPY rootfs/ /",
        "COPY project/ /app/",
        "COPY --from=gen /gen.txt /app/gen.txt",
        "",
      ].join("\n"),
    );
    const digests: Digest[][] = [];
    let last: { store: LocalStore; layer: Digest } | undefined;
    for (const name of ["a", "b"]) {
      // A second apart at least: the RUN's output gets a different mtime in each store's layer dir.
      if (name === "b") await new Promise((r) => setTimeout(r, 1100));
      const store = await LocalStore.open(path.join(root, `store-${name}`));
      const built = await Image.fromDockerfile(dockerfile, { contextDir: context }).build({
        store,
        log: () => undefined,
      });
      const rec = await store.getImage(built.imageId);
      digests.push(rec!.layers.map((l) => l.digest));
      last = { store, layer: built.steps[built.steps.length - 1]!.layer! };
    }
    assert.deepEqual(digests[1], digests[0]);
    // The RUN's file is read as its layer's tar holds it: clamped to the builder's epoch.
    const tar = await tarTimes(last!.store, last!.layer);
    assert.deepEqual(tar.get("app/gen.txt"), ["0", loadBuilderVersion().sourceDateEpoch]);
  });
});
