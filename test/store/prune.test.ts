// `strata cache prune` (src/store/prune.ts) against both backends: a LocalStore in a temp dir and an S3Store on a real
// s3rver (loopback). Each test writes "old" objects, waits for a whole-second boundary (S3's Last-Modified has
// one-second resolution) that becomes the cutoff, writes "recent" objects, and prunes: what nothing recent reaches
// goes, in an order that never leaves an index entry or record pointing at something missing.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { ContextEntry } from "../../src/context/walk.js";
import { opaqueDirsOf, UpperTarget } from "../../src/layer/copy-target.js";
import { MediaType } from "../../src/oci/types.js";
import { LocalStore } from "../../src/store/local.js";
import { ScopedStore } from "../../src/store/scoped.js";
import { formatBytes, parseDuration, pruneStore, type PruneReport } from "../../src/store/prune.js";
import { S3Store } from "../../src/store/s3/index.js";
import type { ImageRecord, LayerRecord, Store } from "../../src/store/store.js";
import { digestHex, sha256Bytes, type Digest } from "../../src/util/digest.js";
import { startS3, type TestS3 } from "../support/s3.js";
import { REPO_ROOT } from "../support/strata.js";

let work: string;
let s3: TestS3;
const s3Stores: S3Store[] = [];
let n = 0;

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-prune-test-"));
  s3 = await startS3();
});
after(async () => {
  for (const s of s3Stores) s.close();
  await s3?.stop();
  await fsp.rm(work, { recursive: true, force: true });
});

async function openLocal(): Promise<LocalStore> {
  return LocalStore.open(path.join(work, `local-${++n}`));
}

async function openS3(): Promise<S3Store> {
  const i = ++n;
  const store = await S3Store.open({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: s3.credentials,
    prefix: `prune/${i}`,
    localRoot: path.join(work, `s3cache-${i}`),
    maxAttempts: 3,
    retryBaseDelayMs: 20,
  });
  s3Stores.push(store);
  return store;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for the next whole second (plus a little) and returns it: objects written before were written before it. */
async function secondBoundary(): Promise<number> {
  await sleep(1100);
  const boundary = Math.ceil(Date.now() / 1000) * 1000;
  await sleep(boundary - Date.now() + 20);
  return boundary;
}

/** An image record on `parent` adding one layer (its blobs stored); `sharedLayer` is added too when given. */
async function image(store: Store, tag: string, parent?: ImageRecord, sharedLayer?: LayerRecord): Promise<ImageRecord> {
  const configDigest = await store.putBlobBytes(Buffer.from(`{"config":"${tag}"}`));
  const manifestDigest = await store.putBlobBytes(Buffer.from(`{"manifest":"${tag}"}`));
  const digest = await store.putBlobBytes(Buffer.from(`layer ${tag}`));
  const layer: LayerRecord = { digest, diffId: sha256Bytes(`diff ${tag}`), size: 7, mediaType: MediaType.ociLayerGzip };
  const layers = [...(parent?.layers ?? []), ...(sharedLayer ? [sharedLayer] : []), layer];
  const rec: ImageRecord = {
    id: configDigest,
    configDigest,
    configSize: 10,
    manifestDigest,
    manifestSize: 10,
    layers,
    ...(parent ? { parent: parent.id } : {}),
  };
  await store.putImage(rec);
  await store.putLog(rec.id, `log of ${tag}`);
  return rec;
}

/** Prune options whose cutoff is exactly `cutoff` (however long the prune takes to start). */
const at = (cutoff: number) => ({ olderThanMs: 3600_000, now: cutoff + 3600_000 });

const blobsOf = (r: ImageRecord) => [r.configDigest, r.manifestDigest, ...r.layers.map((l) => l.digest)];

/** Every index entry names an existing record, and every record every blob it names. */
async function assertConsistent(store: Store): Promise<void> {
  for (const o of await store.listStored!("index")) {
    const entry = await store.getIndex(o.name);
    assert.ok(entry, `index entry ${o.name} resolves to an image record`);
  }
  for (const o of await store.listStored!("images")) {
    const rec = await store.getImage(`sha256:${o.name}` as Digest);
    assert.ok(rec);
    for (const d of blobsOf(rec)) assert.ok(await store.hasBlob(d), `blob ${d} of image ${o.name} exists`);
  }
}

interface Scenario {
  old: {
    a1: ImageRecord;
    a2: ImageRecord;
    a3: ImageRecord;
    b1: ImageRecord;
    b2: ImageRecord;
    orphan: Digest;
    shared: LayerRecord;
  };
  recent: { r: ImageRecord; orphan: Digest };
  cutoff: number;
}

/**
 * Old: chain A (a1 ← a2 ← a3, a3 carries `shared`), chain B (b1 ← b2), an orphan blob, a dangling index entry and a
 * chain record. Recent: r on b1 (so b1 stays, b2 goes) also carrying `shared`, an orphan blob, a chain record.
 */
async function scenario(store: Store, beforeRecent?: () => Promise<void>): Promise<Scenario> {
  const a1 = await image(store, "a1");
  const a2 = await image(store, "a2", a1);
  const sharedDigest = await store.putBlobBytes(Buffer.from("shared layer"));
  const shared: LayerRecord = {
    digest: sharedDigest,
    diffId: sha256Bytes("diff shared"),
    size: 12,
    mediaType: MediaType.ociLayerGzip,
  };
  const a3 = await image(store, "a3", a2, shared);
  const b1 = await image(store, "b1");
  const b2 = await image(store, "b2", b1);
  const orphan = await store.putBlobBytes(Buffer.from("old orphan"));
  const oldAt = new Date(Date.now() - 3600_000).toISOString();
  for (const [key, rec] of [
    ["ka1", a1],
    ["ka2", a2],
    ["ka3", a3],
    ["kb1", b1],
    ["kb2", b2],
  ] as const)
    await store.putIndex({ key, imageId: rec.id, createdAt: oldAt });
  await store.putIndex({ key: "kdangling", imageId: `sha256:${"e".repeat(64)}` as Digest, createdAt: oldAt });
  await store.putChain({ name: "old.ts#default", builtAt: oldAt, imageIds: [a1.id, a2.id, a3.id] });
  await beforeRecent?.();
  const cutoff = await secondBoundary();
  const r = await image(store, "r", b1, shared);
  await store.putIndex({ key: "kr", imageId: r.id, createdAt: new Date().toISOString() });
  const recentOrphan = await store.putBlobBytes(Buffer.from("recent orphan"));
  await store.putChain({ name: "new.ts#default", builtAt: new Date().toISOString(), imageIds: [b1.id, r.id] });
  return { old: { a1, a2, a3, b1, b2, orphan, shared }, recent: { r, orphan: recentOrphan }, cutoff };
}

async function checkPruned(store: Store, sc: Scenario, report: PruneReport): Promise<void> {
  const { a1, a2, a3, b1, b2, orphan, shared } = sc.old;
  const { r } = sc.recent;
  const keys = (await store.listStored!("index")).map((o) => o.name).sort();
  assert.deepEqual(
    keys,
    ["kb1", "kr"],
    "old entries of pruned images (and the dangling one) are gone; b1's old entry stays with b1",
  );
  const images = (await store.listStored!("images")).map((o) => o.name).sort();
  assert.deepEqual(images, [b1.id, r.id].map(digestHex).sort(), "r and the chain it stands on stay");
  const blobs = new Set((await store.listStored!("blobs")).map((o) => o.name));
  for (const d of [...blobsOf(b1), ...blobsOf(r), shared.digest, sc.recent.orphan])
    assert.ok(blobs.has(d), `kept blob ${d}`);
  for (const d of [...blobsOf(a1), ...blobsOf(a2), ...blobsOf(a3), ...blobsOf(b2), orphan].filter(
    (d) => d !== shared.digest && !blobsOf(b1).includes(d),
  )) {
    assert.ok(!blobs.has(d), `pruned blob ${d}`);
  }
  const logs = (await store.listStored!("logs")).map((o) => o.name).sort();
  assert.deepEqual(logs, [b1.id, r.id].map(digestHex).sort());
  assert.equal((await store.listStored!("chains")).length, 1);
  assert.equal(await store.getChain("old.ts#default"), undefined);
  assert.ok(await store.getChain("new.ts#default"));
  assert.equal(report.removed.index, 5);
  assert.equal(report.removed.images, 4);
  assert.equal(report.removed.logs, 4);
  assert.equal(report.removed.chains, 1);
  assert.equal(report.removed.blobs, 4 * 3 + 1, "config, manifest and own layer of a1, a2, a3, b2, and the orphan");
  assert.equal(report.skipped, 0, `nothing left in place: ${JSON.stringify(report)}`);
  assert.equal((await store.getIndex("kr"))?.imageId, r.id);
  await assertConsistent(store);
}

/** Sets the mtime of every file under the store's object directories `ms` into the past. */
async function backdate(root: string, ms: number): Promise<void> {
  const when = new Date(Date.now() - ms);
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) await fsp.utimes(p, when, when);
    }
  };
  for (const d of ["index", "images", "blobs", "logs", "chains"]) await walk(path.join(root, d));
}

describe("prune: durations", () => {
  test("parseDuration takes s, m, h, d, w and combinations; refuses the rest", () => {
    assert.equal(parseDuration("30d"), 30 * 86_400_000);
    assert.equal(parseDuration("12h"), 12 * 3_600_000);
    assert.equal(parseDuration("90m"), 90 * 60_000);
    assert.equal(parseDuration("45s"), 45_000);
    assert.equal(parseDuration("2w"), 14 * 86_400_000);
    assert.equal(parseDuration("1d12h"), 36 * 3_600_000);
    for (const bad of ["", "30", "d", "30x", "1h 2m", "-1d"])
      assert.throws(() => parseDuration(bad), /invalid duration/, bad);
    assert.equal(formatBytes(1536), "1.5 KiB");
  });
});

for (const [name, open] of [
  ["LocalStore", openLocal],
  ["S3Store (s3rver)", openS3],
] as const) {
  describe(`prune: ${name}`, () => {
    test("named images (of any scope) are roots, however old: they and their chains stay until `rmi`", async () => {
      const store = await open();
      const a1 = await image(store, "n-a1");
      const a2 = await image(store, "n-a2", a1);
      const b1 = await image(store, "n-b1");
      const c1 = await image(store, "n-c1");
      const oldAt = new Date(Date.now() - 3600_000).toISOString();
      await store.putName({ name: "app:v1", imageId: a2.id, createdAt: oldAt });
      await new ScopedStore(store, "tenant-x").putName({ name: "theirs:latest", imageId: c1.id, createdAt: oldAt });
      const cutoff = await secondBoundary();
      await pruneStore(store, at(cutoff));
      const images = (await store.listStored!("images")).map((o) => o.name).sort();
      assert.deepEqual(images, [a1.id, a2.id, c1.id].map(digestHex).sort(), "named images and their parents stay");
      for (const d of [...blobsOf(a2), ...blobsOf(c1)]) assert.ok(await store.hasBlob(d), `kept blob ${d}`);
      assert.equal(await store.getLog(a1.id), "log of n-a1", "their step logs stay");
      assert.equal(await store.getImage(b1.id), undefined, "an unnamed old image goes");
      assert.equal((await store.resolveImage("app:v1")).id, a2.id);
      // Once the name is removed, the image goes with the next prune like any other.
      await store.deleteName("app:v1");
      await pruneStore(store, at(cutoff));
      assert.equal(await store.getImage(a2.id), undefined);
      assert.ok(await store.getImage(c1.id), "the other scope's named image stays");
      await assertConsistent(store);
    });

    test("removes what nothing recent references, keeps chains recent images stand on; a dry run removes nothing", async () => {
      const store = await open();
      const sc = await scenario(store);
      const before = await Promise.all(
        (["index", "images", "blobs", "logs", "chains"] as const).map(
          async (ns) => (await store.listStored!(ns)).length,
        ),
      );
      const dry = await pruneStore(store, { ...at(sc.cutoff), dryRun: true });
      const afterDry = await Promise.all(
        (["index", "images", "blobs", "logs", "chains"] as const).map(
          async (ns) => (await store.listStored!(ns)).length,
        ),
      );
      assert.deepEqual(afterDry, before, "a dry run removes nothing");
      const lines: string[] = [];
      const report = await pruneStore(store, { ...at(sc.cutoff), log: (l) => lines.push(l) });
      assert.equal(report.skipped, 0, lines.join("\n"));
      assert.deepEqual(
        { ...dry.removed, layers: 0 },
        { ...report.removed, layers: 0 },
        "the dry run reported what the real one removed",
      );
      await checkPruned(store, sc, report);
      // Again: nothing more to do.
      const again = await pruneStore(store, at(sc.cutoff));
      assert.equal(
        again.removed.index + again.removed.images + again.removed.blobs + again.removed.logs + again.removed.chains,
        0,
      );
    });

    test("never removes an object written after the cutoff, even one that was a candidate when listed", async () => {
      const store = await open();
      const old = await store.putBlobBytes(Buffer.from(`rewritten ${name}`));
      await store.putIndex({
        key: "krewritten",
        imageId: (await image(store, `x-${name}`)).id,
        createdAt: new Date(0).toISOString(),
      });
      const cutoff = await secondBoundary();
      // Rewritten after the cutoff (a force build replacing an entry; a blob uploaded again after a local delete).
      const rec = await image(store, `y-${name}`);
      await store.putIndex({ key: "krewritten", imageId: rec.id, createdAt: new Date(0).toISOString() });
      assert.equal(await store.deleteStored!("index", "krewritten", { ifModifiedBefore: cutoff }), false);
      assert.equal(await store.deleteStored!("blobs", old, { ifModifiedBefore: cutoff }), true, "an old blob goes");
      assert.equal(await store.hasBlob(old), false);
      assert.equal(await store.deleteStored!("blobs", old), false, "deleting what is gone is fine");
      const report = await pruneStore(store, at(cutoff));
      assert.equal((await store.getIndex("krewritten"))?.imageId, rec.id, "the rewritten entry and its image stay");
      assert.equal(report.removed.index, 0);
      await assertConsistent(store);
    });
  });
}

/** Every path under `dir` (relative, sorted), for "a dry run removes nothing". */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      out.push(`${rel}${e.name}`);
      if (e.isDirectory()) await walk(path.join(d, e.name), `${rel}${e.name}/`);
    }
  };
  await walk(dir, "");
  return out.sort();
}

/** Sets the mtime (and atime) of each path `ms` into the past, in order (so list a directory after its contents). */
async function age(ms: number, ...paths: string[]): Promise<void> {
  const when = new Date(Date.now() - ms);
  for (const p of paths) await fsp.utimes(p, when, when);
}

const HOUR = 3600_000;

/**
 * The scenario plus unpacked layers: a1's (`l1`, pruned) and b1's (`lb`, kept), each holding a file, adopted before a
 * fresh cutoff; after it, r2 on r (so r, b1 and lb stay). `fill(dir, which)` runs on each layer dir before adoption.
 */
async function withLayers(
  store: LocalStore,
  fill: (dir: string, which: "l1" | "lb") => Promise<void>,
  beforeCutoff?: (l: { l1: string; lb: string }) => Promise<void>,
) {
  const sc = await scenario(store);
  const mk = async (rec: ImageRecord, which: "l1" | "lb") => {
    const dir = path.join(await store.tempDir("mk"), "root");
    await fsp.mkdir(dir);
    await fsp.writeFile(path.join(dir, "f"), rec.id);
    await fill(dir, which);
    return store.adoptLayerDir(rec.layers[rec.layers.length - 1]!.diffId, dir);
  };
  const l = { l1: await mk(sc.old.a1, "l1"), lb: await mk(sc.old.b1, "lb") };
  await beforeCutoff?.(l);
  const cutoff = await secondBoundary();
  const r2 = await image(store, "r2", sc.recent.r);
  await store.putIndex({ key: "kr2", imageId: r2.id, createdAt: new Date().toISOString() });
  return { sc, cutoff, ...l };
}

/** Runs a dry prune then a real one; checks the dry run changed nothing under `root` and reported what the real one did. */
async function dryThenReal(
  store: LocalStore,
  cutoff: number,
): Promise<{ dry: PruneReport; report: PruneReport; lines: string[] }> {
  const before = await tree(store.root);
  const dry = await pruneStore(store, { ...at(cutoff), dryRun: true });
  assert.deepEqual(await tree(store.root), before, "a dry run removes nothing");
  const lines: string[] = [];
  const report = await pruneStore(store, { ...at(cutoff), log: (l) => lines.push(l) });
  assert.equal(report.skipped, 0, lines.join("\n"));
  assert.deepEqual(dry.removed, report.removed, "the dry run reported what the real one removed");
  await assertConsistent(store);
  return { dry, report, lines };
}

describe("prune: LocalStore specifics", () => {
  test("unpacked layers of pruned images go, unless a running build has them mounted (linked from its work dir)", async () => {
    const store = await openLocal();
    const sc = await scenario(store);
    // Unpacked layers: a1's (pruned, unused), a2's (pruned, but a live work dir links it as a lowerdir), b1's (kept).
    const mk = async (rec: ImageRecord) => {
      const dir = path.join(await store.tempDir("mk"), "root");
      await fsp.mkdir(dir);
      await fsp.writeFile(path.join(dir, "f"), rec.id);
      return store.adoptLayerDir(rec.layers[rec.layers.length - 1]!.diffId, dir);
    };
    const [l1, l2, lb] = [await mk(sc.old.a1), await mk(sc.old.a2), await mk(sc.old.b1)];
    const work = await store.tempDir("step");
    await fsp.mkdir(path.join(work, "l"));
    await fsp.symlink(l2, path.join(work, "l", "0"));
    // The layers were adopted after the cutoff of `scenario`: prune with a later cutoff (everything before now is old
    // except r's records, which are recent relative to the scenario's cutoff only) — so use a fresh boundary.
    const cutoff = await secondBoundary();
    const r2 = await image(store, "r2", sc.recent.r);
    await store.putIndex({ key: "kr2", imageId: r2.id, createdAt: new Date().toISOString() });
    const report = await pruneStore(store, at(cutoff));
    assert.ok(!existsSync(l1), "a pruned image's unpacked layer is removed");
    assert.ok(existsSync(l2), "a layer mounted by a running build stays");
    assert.ok(existsSync(lb), "a kept image's unpacked layer stays");
    assert.equal(report.removed.layers, 1);
    assert.ok(await store.getImage(sc.recent.r.id), "r is reachable from r2");
    await assertConsistent(store);
    // Nothing under tmp/ is left by the prune itself (doomed layers are moved there, then deleted).
    assert.deepEqual(
      (await fsp.readdir(path.join(store.root, "tmp"))).filter((f) => f.startsWith("prune-")),
      [],
    );
  });

  test("`strata cache prune` (cmdCache) on STRATA_HOME: --json report, usage errors exit 2", async () => {
    const store = await openLocal();
    // The old objects are backdated by an hour, so "--older-than 30m" holds however long the child takes to start.
    const sc = await scenario(store, () => backdate(store.root, 3600_000));
    const olderThan = "30m";
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const script = `import(${JSON.stringify(path.join(REPO_ROOT, "dist/src/cli/cache.js"))}).then((m) => m.cmdCache(${JSON.stringify(args)})).then((c) => process.exit(c), (e) => { console.error(e); process.exit(70); });`;
        const env: NodeJS.ProcessEnv = { ...process.env, STRATA_HOME: store.root };
        delete env.STRATA_S3_BUCKET;
        const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
          env,
          stdio: ["ignore", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
        child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
        child.on("exit", (code) => resolve({ code, stdout, stderr }));
      });
    assert.equal((await run(["prune"])).code, 2, "--older-than is required");
    const bad = await run(["prune", "--older-than", "soon"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid duration "soon"/);
    assert.equal((await run(["vacuum"])).code, 2);
    const dry = await run(["prune", "--older-than", olderThan, "--dry-run", "--json"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal((JSON.parse(dry.stdout) as PruneReport).removed.images, 4);
    assert.ok(await store.getImage(sc.old.a1.id), "the dry run removed nothing");
    const real = await run(["prune", "--older-than", olderThan, "--json"]);
    assert.equal(real.code, 0, real.stderr);
    const report = JSON.parse(real.stdout) as PruneReport;
    assert.match(real.stderr, /removed 5 index entries, 4 image records, 13 blobs/);
    await checkPruned(store, sc, report);
  });

  test("content pool: files no layer links any more go (after their layers); linked, recent and young ones stay", async () => {
    const store = await openLocal();
    const pool = path.join(store.root, "files");
    await fsp.mkdir(pool, { recursive: true });
    const name = (tag: string, suffix = "644") => `${digestHex(sha256Bytes(tag))}-${suffix}`;
    const p = {
      onlyPruned: path.join(pool, name("only in l1")), // linked from l1 only: goes with it
      kept: path.join(pool, name("in lb")), // linked from the kept layer: stays
      both: path.join(pool, name("in both", "755")), // linked from both: stays
      orphan: path.join(pool, name("orphan", "600-1000-1000")), // no layer links it, old: goes
      young: path.join(pool, name("young")), // no layer links it, but just written: stays
      foreign: path.join(pool, "notes.txt"), // not a pool name: never touched
    };
    const { cutoff, l1, lb } = await withLayers(store, async (dir, which) => {
      const link = async (file: string, pooled: string) => {
        if (!existsSync(pooled)) await fsp.writeFile(file, `content of ${path.basename(pooled)}`);
        else await fsp.link(pooled, file);
        if (!existsSync(pooled)) await fsp.link(file, pooled);
      };
      if (which === "l1") await link(path.join(dir, "a"), p.onlyPruned);
      else await link(path.join(dir, "b"), p.kept);
      await link(path.join(dir, "shared"), p.both);
    });
    for (const f of [p.orphan, p.young, p.foreign]) await fsp.writeFile(f, "x".repeat(100));
    await age(2 * HOUR, p.onlyPruned, p.kept, p.both, p.orphan, p.foreign);
    const size = (f: string) => `content of ${path.basename(f)}`.length;

    const { report, lines } = await dryThenReal(store, cutoff);
    assert.ok(!existsSync(l1), "a1's layer is pruned");
    assert.ok(!existsSync(p.onlyPruned), "a pool file only the pruned layer linked is removed in the same prune");
    assert.ok(!existsSync(p.orphan), "an old pool file no layer links is removed");
    assert.ok(existsSync(p.kept), "a pool file linked from a kept layer survives");
    assert.ok(existsSync(p.both), "a pool file still linked from a kept layer survives the pruning of another");
    assert.equal(await fsp.readFile(path.join(lb, "b"), "utf8"), `content of ${path.basename(p.kept)}`);
    assert.ok(existsSync(p.young), "a pool file written in the last minutes stays");
    assert.ok(existsSync(p.foreign));
    assert.equal(report.removed.files, 2);
    assert.equal(report.removed.fileBytes, size(p.onlyPruned) + 100);
    assert.equal(report.kept.files, 3);
    assert.equal(report.kept.fileBytes, size(p.kept) + size(p.both) + 100);
    assert.match(lines.at(-1)!, /, 2 pool files \(/);

    // --older-than shorter than the young-file window: everything else goes (the kept layer too, so its two pool
    // files with it), but the window still holds.
    const tiny = await pruneStore(store, { olderThanMs: 1 });
    assert.ok(!existsSync(lb));
    assert.equal(tiny.removed.files, 2);
    assert.ok(!existsSync(p.kept) && !existsSync(p.both));
    assert.ok(existsSync(p.young), "a pool file written in the last minutes stays whatever --older-than says");
  });

  test("layer sidecars of gone layers and cached selections pointing into them (or old) go", async () => {
    const store = await openLocal();
    const meta = path.join(store.root, "layer-meta");
    const selects = path.join(store.root, "selects");
    const hexOf = (dir: string) => path.basename(dir);
    const sel = (n: number) => path.join(selects, `${digestHex(sha256Bytes(`select ${n}`))}.json`);
    const deadTmp = `.tmp-999999999-${Date.now().toString(36)}-0123abcd`; // writeFileAtomic's, of a dead process
    const files: Record<string, string> = {};
    const { cutoff, l1, lb } = await withLayers(
      store,
      async () => undefined,
      async ({ l1, lb }) => {
        await fsp.mkdir(meta, { recursive: true });
        await fsp.mkdir(selects, { recursive: true });
        Object.assign(files, {
          metaPruned: path.join(meta, `${hexOf(l1)}.opaque.json`), // its layer goes in this prune: goes
          metaKept: path.join(meta, `${hexOf(lb)}.opaque.json`), // its layer stays: stays
          metaNoLayer: path.join(meta, `${"d".repeat(64)}.opaque.json`), // no such layer: goes
          metaYoung: path.join(meta, `${"c".repeat(64)}.opaque.json`), // no such layer, but just written: stays
          metaDeadTmp: path.join(meta, `${"d".repeat(64)}.opaque.json${deadTmp}`), // a dead writer's temp file: goes
          metaLiveTmp: path.join(meta, `${"c".repeat(64)}.opaque.json.tmp-${process.pid}-x-0123abcd`), // a live one's: stays
          s1: sel(1), // its layer dirs stay, recent: stays
          s2: sel(2), // points into l1: goes
          s3: sel(3), // old: goes
          s4: sel(4), // points into a dir that does not exist: goes
          s5: sel(5), // unreadable, recent: stays (builds ignore it and rewrite it)
        });
        for (const k of ["metaPruned", "metaKept", "metaNoLayer", "metaYoung", "metaDeadTmp", "metaLiveTmp"])
          await fsp.writeFile(files[k]!, '["/opaque"]');
        const record = (dirs: string[]) => JSON.stringify({ dirs, entries: [], matches: [] });
        await fsp.writeFile(files.s1!, record([lb]));
        await fsp.writeFile(files.s2!, record([lb, l1]));
        await fsp.writeFile(files.s3!, record([lb]));
        await fsp.writeFile(files.s4!, record([path.join(store.root, "layers", "b".repeat(64))]));
        await fsp.writeFile(files.s5!, "{ not json");
        await age(
          2 * HOUR,
          files.metaPruned!,
          files.metaKept!,
          files.metaNoLayer!,
          files.metaDeadTmp!,
          files.metaLiveTmp!,
          files.s3!,
        );
      },
    );

    const { report, lines } = await dryThenReal(store, cutoff);
    assert.ok(!existsSync(l1) && existsSync(lb));
    const left = (k: string) => existsSync(files[k]!);
    for (const k of ["metaPruned", "metaNoLayer", "metaDeadTmp", "s2", "s3", "s4"])
      assert.ok(!left(k), `${k} is removed`);
    for (const k of ["metaKept", "metaYoung", "metaLiveTmp", "s1", "s5"]) assert.ok(left(k), `${k} stays`);
    assert.equal(report.removed.layerMeta, 3);
    assert.equal(report.removed.layerMetaBytes, 3 * '["/opaque"]'.length);
    assert.equal(report.kept.layerMeta, 2, "the live writer's temp file is not counted");
    assert.equal(report.removed.selects, 3);
    assert.equal(report.kept.selects, 2);
    assert.ok(report.removed.selectBytes > 0);
    assert.match(lines.at(-1)!, /, 3 layer sidecars, 3 cached selections \(/);
  });

  test("COPY --link layer records neither written nor reused since the cutoff go", async () => {
    const store = await openLocal();
    const dir = path.join(store.root, "link-layers");
    const rec = (n: string) => path.join(dir, `${n.repeat(32)}.json`);
    const { cutoff } = await withLayers(
      store,
      async () => undefined,
      async () => {
        await fsp.mkdir(dir, { recursive: true });
        for (const n of ["a", "b", "c"])
          await fsp.writeFile(rec(n), JSON.stringify({ digest: "sha256:" + "0".repeat(64) }));
        await age(2 * HOUR, rec("a"), rec("b"));
        // "b" was reused since: a reuse sets the record's mtime.
        const now = new Date();
        await fsp.utimes(rec("b"), now, now);
      },
    );
    const { report, lines } = await dryThenReal(store, cutoff);
    assert.ok(!existsSync(rec("a")), "an old record goes");
    assert.ok(existsSync(rec("b")) && existsSync(rec("c")), "reused and recent records stay");
    assert.equal(report.removed.linkLayers, 1);
    assert.equal(report.kept.linkLayers, 2);
    assert.match(lines.at(-1)!, /, 1 --link layer records, /);
  });

  test("lazy image trees nothing was written into since the cutoff go; leftover temp dirs of dead builds go from the rest", async () => {
    const store = await openLocal();
    const lazy = path.join(store.root, "lazy");
    /** A tree as lazy-root.ts leaves it: rootfs/etc/f, a marker, and the given temp dirs (each holding one file). */
    const mkTree = async (tag: string, tmps: string[] = []) => {
      const home = path.join(lazy, digestHex(sha256Bytes(tag)));
      await fsp.mkdir(path.join(home, "rootfs", "etc"), { recursive: true });
      await fsp.writeFile(path.join(home, "rootfs", "etc", "f"), "0123456789");
      await fsp.mkdir(path.join(home, "done"));
      await fsp.writeFile(path.join(home, "done", "a".repeat(64)), "ref\n");
      await fsp.mkdir(path.join(home, "tmp"));
      for (const t of tmps) {
        await fsp.mkdir(path.join(home, "tmp", t));
        await fsp.writeFile(path.join(home, "tmp", t, "0"), "12345");
      }
      return home;
    };
    /** Backdates everything in a tree, contents before their directories. */
    const ageTree = async (home: string, ms: number) =>
      age(ms, ...[...(await tree(home))].reverse().map((rel) => path.join(home, rel)), home);
    const old = await mkTree("old"); // nothing written for 2h: goes whole
    await ageTree(old, 2 * HOUR);
    const recent = await mkTree("recent", ["999999999-0a0a0a0a0a0a"]); // written now: stays; its dead build's temp dir goes
    await age(
      2 * HOUR,
      path.join(recent, "tmp", "999999999-0a0a0a0a0a0a", "0"),
      path.join(recent, "tmp", "999999999-0a0a0a0a0a0a"),
    );
    const fetching = await mkTree("fetching", [`${process.pid}-0b0b0b0b0b0b`]); // old, but a live process is fetching into it
    await ageTree(fetching, 2 * HOUR);
    const crashed = await mkTree("crashed", ["999999999-0c0c0c0c0c0c"]); // old, a dead pid's temp dir, but less than an hour old
    await ageTree(crashed, 2 * HOUR);
    await age(30 * 60_000, path.join(crashed, "tmp", "999999999-0c0c0c0c0c0c"));
    await fsp.writeFile(path.join(lazy, "notes.txt"), "not a tree");
    await age(2 * HOUR, path.join(lazy, "notes.txt"));
    const cutoff = await secondBoundary();

    const { report, lines } = await dryThenReal(store, cutoff);
    assert.ok(!existsSync(old), "a tree nothing was written into since the cutoff is removed");
    assert.ok(
      existsSync(path.join(recent, "rootfs", "etc", "f")) && existsSync(path.join(recent, "done")),
      "a recent tree stays",
    );
    assert.deepEqual(
      await fsp.readdir(path.join(recent, "tmp")),
      [],
      "a dead build's temp dir older than an hour is removed",
    );
    assert.ok(
      existsSync(path.join(fetching, "tmp", `${process.pid}-0b0b0b0b0b0b`, "0")),
      "a tree a live process is fetching into stays whole",
    );
    assert.ok(
      existsSync(path.join(crashed, "tmp", "999999999-0c0c0c0c0c0c")),
      "a young temp dir keeps its tree, even of a pid we cannot see",
    );
    assert.ok(existsSync(path.join(lazy, "notes.txt")));
    assert.equal(report.removed.lazy, 1);
    assert.equal(report.removed.lazyTmp, 1);
    assert.equal(report.removed.lazyBytes, 10 + 4 + 5);
    assert.equal(report.kept.lazy, 3);
    assert.equal(report.kept.lazyTmp, 2);
    assert.match(lines.at(-1)!, /, 1 lazy image trees and 1 leftover temp dirs in others \(19 B\)/);
    assert.deepEqual(
      (await fsp.readdir(path.join(store.root, "tmp"))).filter((f) => f.startsWith("prune-")),
      [],
      "the doomed tree is deleted, not just moved",
    );
  });

  test("with a real COPY (UpperTarget) and its sidecars: what only a pruned layer used goes, what a kept one links stays", async () => {
    const store = await openLocal();
    const src = await fsp.mkdtemp(path.join(work, "copy-src-"));
    const entry = async (name: string, content: string): Promise<ContextEntry> => {
      const absPath = path.join(src, name);
      await fsp.writeFile(absPath, content);
      return {
        relPath: name,
        type: "file",
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: content.length,
        sha256: sha256Bytes(content),
        absPath,
        mtimeMs: 1_700_000_000_000,
      };
    };
    const own = {
      l1: await entry("only-a1", "copied only into a1's layer"),
      lb: await entry("only-b1", "copied only into b1's layer"),
    };
    const shared = await entry("shared", "copied into both");
    const pool = path.join(store.root, "files");
    const meta = path.join(store.root, "layer-meta");
    const { cutoff, l1, lb } = await withLayers(
      store,
      async (dir, which) => {
        // The layer dir is the upper dir of a COPY-only step over no lowers, as Executor#copyOnly makes it.
        const target = new UpperTarget(dir, [], { poolDir: pool, hashedAfterMs: 0, epochMs: 0, opaque: [] });
        target.mkdir("/app", 0o755, 0, 0);
        target.copyFile("/app/own", own[which], 0o644, 0, 0);
        target.copyFile("/app/shared", shared, 0o644, 0, 0);
      },
      async ({ l1, lb }) => {
        for (const l of [l1, lb]) assert.deepEqual([...(await opaqueDirsOf(l, meta))], []);
        await age(
          2 * HOUR,
          ...(await fsp.readdir(pool)).map((f) => path.join(pool, f)),
          ...(await fsp.readdir(meta)).map((f) => path.join(meta, f)),
        );
      },
    );
    // Pool names carry the mtime (µs) the file was copied with: hard links share one.
    const pooled = (e: ContextEntry) => path.join(pool, `${e.sha256.slice(7)}-644-t${e.mtimeMs * 1000}`);
    for (const e of [own.l1, own.lb, shared]) assert.ok(existsSync(pooled(e)), `COPY put ${e.relPath} in the pool`);

    const { report } = await dryThenReal(store, cutoff);
    assert.ok(!existsSync(l1) && existsSync(lb));
    assert.ok(!existsSync(pooled(own.l1)), "content only the pruned layer linked is gone from the pool");
    assert.ok(existsSync(pooled(own.lb)) && existsSync(pooled(shared)), "content the kept layer links stays");
    assert.equal((await fsp.lstat(pooled(shared))).nlink, 2);
    assert.ok(!existsSync(path.join(meta, `${path.basename(l1)}.opaque.json`)), "the pruned layer's sidecar is gone");
    assert.ok(existsSync(path.join(meta, `${path.basename(lb)}.opaque.json`)), "the kept layer's sidecar stays");
    assert.equal(report.removed.files, 1);
    assert.equal(report.removed.layerMeta, 1);
  });
});
