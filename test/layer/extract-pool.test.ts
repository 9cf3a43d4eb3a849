// Layer extraction on worker threads (src/layer/extract-pool.ts): the same result and the same errors as on the
// calling thread, backpressure and failure handling of the sink, more jobs than workers, the in-thread setting; and
// the tar header's numeric fast path against its general definition.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fsp, readdirSync, lstatSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { encodeHeader, endOfArchive, padding, type TarEntry } from "../../src/layer/tar-header.js";
import { extractLayerFileOffThread, extractLayerOffThread, openExtraction } from "../../src/layer/extract-pool.js";
import { extractLayer, UnsafeLayerError } from "../../src/layer/tar-extract.js";
import { sha256Bytes } from "../../src/util/digest.js";

let work: string;
before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-extract-pool-"));
});
after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

let n = 0;
async function freshRoot(): Promise<string> {
  const root = path.join(work, `root-${++n}`);
  await fsp.mkdir(root);
  return root;
}

type Item = [Partial<TarEntry> & { name: string; type: TarEntry["type"] }, Buffer?];

function tarOf(items: Item[]): Buffer {
  const parts: Buffer[] = [];
  for (const [e, data = Buffer.alloc(0)] of items) {
    parts.push(
      encodeHeader({
        mode: e.type === "directory" ? 0o755 : 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        size: e.type === "file" ? data.length : 0,
        ...e,
      }),
    );
    if (e.type === "file") parts.push(data, padding(data.length));
  }
  parts.push(endOfArchive());
  return Buffer.concat(parts);
}

/** A layer of `files` files in a few directories, with a symlink, a hardlink and a whiteout. */
function sampleLayer(files: number): Buffer {
  const items: Item[] = [[{ name: "usr/", type: "directory" }], [{ name: "usr/lib/", type: "directory", mode: 0o750 }]];
  for (let i = 0; i < files; i++)
    items.push([
      { name: `usr/lib/d${i % 7}/f${i}.txt`, type: "file", mode: i % 3 ? 0o644 : 0o755 },
      randomBytes(i % 5000),
    ]);
  items.push([{ name: "usr/lib/link", type: "symlink", linkname: "d0/f0.txt" }]);
  items.push([{ name: "usr/lib/hard", type: "link", linkname: "usr/lib/d1/f1.txt" }]);
  items.push([{ name: "etc/.wh.gone", type: "file" }]);
  return tarOf(items);
}

/** Path → type, mode, size, mtime and content digest of everything below `root`. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(root, r));
      const content = st.isFile() ? sha256Bytes(readFileSync(path.join(root, r))) : "";
      // Directories without an entry of their own and whiteouts are made now: their mtime is not the layer's.
      const mtime = st.isDirectory() || st.isCharacterDevice() ? "" : String(st.mtimeMs);
      out.set(r, `${st.mode.toString(8)} ${st.size} ${mtime} ${st.rdev} ${content}`);
      if (st.isDirectory()) walk(r);
    }
  };
  walk("");
  return out;
}

/** Chunks of `size` bytes (the last shorter), as a download delivers them. */
function chunked(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

describe("extraction on worker threads", () => {
  test("the same tree and diffID as on the calling thread, from one chunk or many small ones", async () => {
    const layer = sampleLayer(400);
    const gz = gzipSync(layer);
    const here = await freshRoot();
    const diffHere = await extractLayer(Readable.from([gz]), here, { gzip: true });
    assert.equal(diffHere, sha256Bytes(layer));
    const there = await freshRoot();
    assert.equal(await extractLayerOffThread(Readable.from(chunked(gz, 1000)), there, { gzip: true }), diffHere);
    assert.deepEqual(snapshot(there), snapshot(here));
    const whiteout = lstatSync(path.join(there, "etc/gone"));
    assert.ok(whiteout.isCharacterDevice() && whiteout.rdev === 0, "the whiteout is a 0/0 character device");
  });

  test("a layer file is read by the worker itself: the same tree and diffID; a missing file and an unsafe entry are the usual errors", async () => {
    const layer = sampleLayer(300);
    const file = path.join(work, `layer-${++n}.tar.gz`);
    await fsp.writeFile(file, gzipSync(layer));
    const here = await freshRoot();
    const there = await freshRoot();
    assert.equal(
      await extractLayerFileOffThread(file, there, { gzip: true }),
      await extractLayer(Readable.from([gzipSync(layer)]), here, { gzip: true }),
    );
    assert.deepEqual(snapshot(there), snapshot(here));
    await assert.rejects(
      extractLayerFileOffThread(path.join(work, "no-such-layer"), await freshRoot()),
      (e: unknown) => (e as NodeJS.ErrnoException).code === "ENOENT",
    );
    const evil = path.join(work, `evil-${++n}.tar`);
    await fsp.writeFile(evil, tarOf([[{ name: "a/../../x", type: "file" }, Buffer.from("x")]]));
    await assert.rejects(extractLayerFileOffThread(evil, await freshRoot()), UnsafeLayerError);
  });

  test("a sink fed owned chunks (handed over, not copied) and copied views of one buffer gives the same result", async () => {
    const layer = sampleLayer(200);
    const a = await freshRoot();
    const sa = await openExtraction(a);
    for (const c of chunked(layer, 4096)) await sa.write(new Uint8Array(c), true); // each its own ArrayBuffer
    const b = await freshRoot();
    const sb = await openExtraction(b);
    for (const c of chunked(layer, 777)) await sb.write(c); // views into one buffer: copied
    assert.equal(await sa.end(), sha256Bytes(layer));
    assert.equal(await sb.end(), sha256Bytes(layer));
    assert.deepEqual(snapshot(a), snapshot(b));
  });

  test("an unsafe entry is an UnsafeLayerError with its entry and reason, and warnings come back", async () => {
    const root = await freshRoot();
    const warnings: string[] = [];
    const evil = tarOf([
      [{ name: "dev/sda", type: "block-device", devmajor: 8, devminor: 0 }],
      [{ name: "../escape", type: "file" }, Buffer.from("x")],
    ]);
    await assert.rejects(
      extractLayerOffThread(Readable.from([evil]), root, { onWarning: (l) => warnings.push(l) }),
      (e: unknown) => {
        assert.ok(e instanceof UnsafeLayerError, String(e));
        assert.equal(e.entry, "../escape");
        assert.equal(e.why, "path escapes the layer root");
        assert.equal(e.code, "UNSAFE_LAYER");
        return true;
      },
    );
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /skipped block device dev\/sda \(8:0\)/);
  });

  test("fs errors keep their code; a bad gzip stream its zlib code; limits apply on the worker", async () => {
    const root = await freshRoot();
    await assert.rejects(
      extractLayerOffThread(Readable.from([Buffer.from("not gzip at all")]), root, { gzip: true }),
      (e: unknown) => (e as NodeJS.ErrnoException).code === "Z_DATA_ERROR",
    );
    await assert.rejects(
      extractLayerOffThread(Readable.from([sampleLayer(10)]), path.join(work, "no-such-dir")),
      (e: unknown) => (e as NodeJS.ErrnoException).code === "ENOENT",
    );
    await assert.rejects(
      extractLayerOffThread(Readable.from([sampleLayer(50)]), await freshRoot(), { maxEntries: 20 }),
      /more than 20 entries/,
    );
  });

  test("an input that fails mid-way rejects with its own error, after the worker has stopped; the pool still works", async () => {
    const layer = sampleLayer(300);
    const root = await freshRoot();
    async function* broken(): AsyncGenerator<Buffer> {
      yield layer.subarray(0, 50_000);
      throw new Error("connection reset");
    }
    await assert.rejects(extractLayerOffThread(Readable.from(broken()), root), /connection reset/);
    // Nothing writes into root any more: removing it now leaves it removed.
    await fsp.rm(root, { recursive: true, force: true });
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(fsp.stat(root), { code: "ENOENT" });
    const again = await freshRoot();
    assert.equal(await extractLayerOffThread(Readable.from([layer]), again), sha256Bytes(layer));
  });

  test("abort stops a sink; writes after a failure are dropped and end reports the failure", async () => {
    const root = await freshRoot();
    const s = await openExtraction(root);
    await s.write(sampleLayer(20).subarray(0, 3000));
    await s.abort(new Error("stop"));
    assert.equal(s.failed, true);
    const r2 = await freshRoot();
    const bad = await openExtraction(r2);
    await bad.write(tarOf([[{ name: "../x", type: "file" }, Buffer.from("x")]]));
    for (let i = 0; i < 20 && !bad.failed; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(bad.failed, true);
    await bad.write(Buffer.alloc(100)); // dropped
    await assert.rejects(bad.end(), UnsafeLayerError);
  });

  test("more concurrent extractions than workers all finish, each with its own diffID", async () => {
    const layers = Array.from({ length: 9 }, (_, i) => sampleLayer(60 + i));
    const roots = await Promise.all(layers.map(() => freshRoot()));
    const diffs = await Promise.all(
      layers.map((l, i) => extractLayerOffThread(Readable.from(chunked(gzipSync(l), 4096)), roots[i]!, { gzip: true })),
    );
    assert.deepEqual(
      diffs,
      layers.map((l) => sha256Bytes(l)),
    );
  });

  test("STRATA_EXTRACT_WORKERS=0 extracts on the calling thread; a bad value is a clear error", () => {
    const script = `
      import { Readable } from "node:stream";
      const { extractLayerOffThread, extractWorkerCount } = await import(${JSON.stringify(new URL("../../src/layer/extract-pool.js", import.meta.url).href)});
      const fs = await import("node:fs");
      const root = process.argv[1];
      fs.mkdirSync(root);
      try {
        await extractLayerOffThread(Readable.from([Buffer.alloc(1024)]), root);
        console.log("ok", extractWorkerCount());
      } catch (e) { console.log("error", e.message); }`;
    const run = (value: string): string =>
      execFileSync(process.execPath, ["--input-type=module", "-e", script, path.join(work, `env-${++n}`)], {
        env: { ...process.env, STRATA_EXTRACT_WORKERS: value },
        encoding: "utf8",
      }).trim();
    assert.equal(run("0"), "ok 0");
    assert.equal(run("2"), "ok 1");
    assert.match(run("lots"), /^error STRATA_EXTRACT_WORKERS="lots" is not a whole number/);
  });
});
