// Malicious layers (fixtures/extract-safety.json: the reference note's umoci table plus whiteouts with "..", device
// nodes, decompression bombs and cross-layer symlink attacks). Every case runs in a sandbox holding an "outside"
// directory on the host; after each case nothing outside the extraction roots may have changed. Layers are
// extracted as the store does — each into its own empty directory — and, when overlayfs can be mounted, the
// layers are stacked and the merged view checked too.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import tar from "tar-stream";
import { StrataError } from "../../src/errors.js";
import { extractLayerOffThread } from "../../src/layer/extract-pool.js";
import { mountOverlay, unmountOverlay } from "../../src/layer/overlay.js";
import {
  DEFAULT_MAX_LAYER_BYTES,
  DEFAULT_MAX_LAYER_ENTRIES,
  extractLayer,
  UnsafeLayerError,
  type ExtractOptions,
} from "../../src/layer/tar-extract.js";

type HeaderArg = Partial<tar.Header> & { name: string };

interface FixtureEntry {
  name?: string;
  type?: tar.Header["type"];
  content?: string;
  linkname?: string;
  mode?: string;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
  generate?: "files" | "bigfile" | "zeros";
  count?: number;
  size?: number;
}

interface Expected {
  type: "file" | "directory" | "symlink" | "whiteout" | "fifo" | "character-device";
  content?: string;
  linkname?: string;
  mode?: string;
  opaque?: boolean;
  devmajor?: number;
  devminor?: number;
}

interface Case {
  name: string;
  source?: string;
  umoci?: string;
  options?: { allowDevices?: boolean; maxBytes?: number; maxEntries?: number; gzip?: boolean };
  layers: FixtureEntry[][];
  expect: {
    outcome: "refused" | "extracted";
    error?: string;
    files?: Record<string, Expected>;
    layerFiles?: Record<string, Expected>[];
    merged?: Record<string, Expected>;
    absent?: string[];
    warnings?: number;
  };
}

function fixture(rel: string): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, "fixtures", rel);
    if (existsSync(candidate)) return candidate;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`fixtures/${rel} not found above ${import.meta.url}`);
    dir = up;
  }
}

const TABLE = JSON.parse(readFileSync(fixture("extract-safety.json"), "utf8")) as { cases: Case[] };

let work: string;
let overlayWorks = false;
before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-extract-safety-"));
  // Can this machine stack layers with overlayfs (root, kernel support)? If not, the merged-view checks are skipped.
  if (process.getuid?.() === 0) {
    const probe = path.join(work, "probe");
    await fsp.mkdir(path.join(probe, "lower"), { recursive: true });
    try {
      const dirs = await mountOverlay(probe, [path.join(probe, "lower")]);
      console.log("# overlayfs available: merged views are checked");
      await unmountOverlay(dirs);
      overlayWorks = true;
    } catch {
      overlayWorks = false;
    }
  }
});
after(async () => {
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

const HOST_PATHS = ["/pwned", "/tmp/pwned", "/evil", "/dotdot-escape", "/pax-escape", "/abs-file", "/x"];

function subst(s: string, outside: string): string {
  return s.replaceAll("$OUTSIDE", outside);
}

async function toBuffer(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A tar made with tar-stream (which writes whatever names it is given) from fixture entries. */
async function layerTar(entries: FixtureEntry[], outside: string): Promise<Buffer> {
  const p = tar.pack();
  const out = toBuffer(p as unknown as Readable);
  const add = (h: HeaderArg, body: Buffer): Promise<void> =>
    new Promise((resolve, reject) => p.entry(h, body, (err) => (err ? reject(err) : resolve())));
  for (const e of entries) {
    if (e.generate === "files") {
      for (let i = 0; i < e.count!; i++)
        await add({ name: `gen/${i}`, type: "file", mode: 0o644 }, Buffer.from(String(i)));
      continue;
    }
    if (e.generate === "bigfile") {
      await add({ name: "big", type: "file", mode: 0o644 }, Buffer.alloc(e.size!));
      continue;
    }
    if (e.generate === "zeros") {
      const piece = Buffer.alloc(64 * 1024);
      for (let i = 0; i < e.size! / piece.length; i++)
        await add({ name: `zeros/${i}`, type: "file", mode: 0o644 }, piece);
      continue;
    }
    const h: HeaderArg = {
      name: subst(e.name!, outside),
      type: e.type ?? "file",
      mode: e.mode ? Number.parseInt(e.mode, 8) : e.type === "directory" ? 0o755 : 0o644,
    };
    if (e.linkname !== undefined) h.linkname = subst(e.linkname, outside);
    if (e.devmajor !== undefined) h.devmajor = e.devmajor;
    if (e.devminor !== undefined) h.devminor = e.devminor;
    if (e.pax) h.pax = e.pax;
    await add(h, Buffer.from(e.content ?? ""));
  }
  p.finalize();
  return out;
}

const getOpaque = (p: string): string | undefined => {
  try {
    return execFileSync("getfattr", ["--only-values", "-h", "-n", "trusted.overlay.opaque", p], {
      stdio: ["ignore", "pipe", "ignore"],
    }).toString();
  } catch {
    return undefined;
  }
};

async function checkFiles(
  root: string,
  files: Record<string, Expected>,
  outside: string,
  where: string,
): Promise<void> {
  for (const [rawRel, want] of Object.entries(files)) {
    const rel = subst(rawRel, outside);
    const p = path.join(root, rel);
    const st = await fsp.lstat(p).catch(() => undefined);
    assert.ok(st, `${where}: ${rel} missing`);
    switch (want.type) {
      case "file":
        assert.ok(st.isFile(), `${where}: ${rel} is not a file`);
        if (want.content !== undefined) assert.equal(await fsp.readFile(p, "utf8"), want.content, `${where}: ${rel}`);
        break;
      case "directory":
        assert.ok(st.isDirectory(), `${where}: ${rel} is not a directory`);
        break;
      case "symlink":
        assert.ok(st.isSymbolicLink(), `${where}: ${rel} is not a symlink`);
        if (want.linkname !== undefined) assert.equal(await fsp.readlink(p), subst(want.linkname, outside));
        break;
      case "whiteout":
        assert.ok(st.isCharacterDevice() && st.rdev === 0, `${where}: ${rel} is not an overlay whiteout (char 0/0)`);
        break;
      case "fifo":
        assert.ok(st.isFIFO(), `${where}: ${rel} is not a fifo`);
        break;
      case "character-device":
        assert.ok(st.isCharacterDevice(), `${where}: ${rel} is not a character device`);
        if (want.devmajor !== undefined) assert.equal(Math.floor(st.rdev / 256) & 0xfff, want.devmajor);
        if (want.devminor !== undefined) assert.equal(st.rdev & 0xff, want.devminor);
        break;
    }
    if (want.mode !== undefined)
      assert.equal(st.mode & 0o7777, Number.parseInt(want.mode, 8), `${where}: mode of ${rel}`);
    if (want.opaque) assert.equal(getOpaque(p), "y", `${where}: ${rel} lacks the opaque xattr`);
  }
}

/** Nothing outside the extraction roots changed: the sandbox holds only what the test made, the victim is intact. */
async function checkOutside(box: string, outside: string, victim: string, where: string): Promise<void> {
  assert.deepEqual(
    (await fsp.readdir(box)).sort(),
    ["layers", "outside", ...(existsSync(path.join(box, "ovl")) ? ["ovl"] : [])].sort(),
    `${where}: unexpected files in the sandbox`,
  );
  assert.deepEqual(await fsp.readdir(outside), ["victim"], `${where}: the outside directory changed`);
  const st = await fsp.lstat(victim);
  assert.ok(st.isFile());
  assert.equal(st.nlink, 1, `${where}: the victim was hardlinked`);
  assert.equal(await fsp.readFile(victim, "utf8"), "precious");
  assert.equal(getOpaque(outside), undefined, `${where}: an xattr was set outside`);
  for (const p of HOST_PATHS) assert.ok(!existsSync(p), `${where}: ${p} was created on the host`);
}

let n = 0;
describe("extraction of malicious layers (fixtures/extract-safety.json)", () => {
  test("the table covers the reference note's umoci rows and the issue's list", () => {
    assert.ok(TABLE.cases.filter((c) => c.source === "umoci").length >= 7);
    for (const word of ["../", "absolute", "symlink then", "hardlink", "whiteout", "device", "bomb", "across layers"]) {
      assert.ok(
        TABLE.cases.some((c) => c.name.includes(word)),
        `no case about ${word}`,
      );
    }
  });

  // Pulls extract on worker threads: the table runs both ways, and the worker's errors must be the same errors.
  for (const [how, extract] of [
    ["", extractLayer],
    [" (on a worker thread)", extractLayerOffThread],
  ] as const) {
    for (const c of TABLE.cases) {
      test(c.name + how, async () => {
        const box = path.join(work, `case-${++n}`);
        const outside = path.join(box, "outside");
        const victim = path.join(outside, "victim");
        await fsp.mkdir(path.join(box, "layers"), { recursive: true });
        await fsp.mkdir(outside);
        await fsp.writeFile(victim, "precious");
        const warnings: string[] = [];
        const opts: ExtractOptions = { onWarning: (l) => warnings.push(l) };
        if (c.options?.allowDevices) opts.allowDevices = true;
        if (c.options?.maxBytes !== undefined) opts.maxBytes = c.options.maxBytes;
        if (c.options?.maxEntries !== undefined) opts.maxEntries = c.options.maxEntries;
        if (c.options?.gzip) opts.gzip = true;

        const roots: string[] = [];
        let error: unknown;
        for (const [i, entries] of c.layers.entries()) {
          const root = path.join(box, "layers", String(i));
          await fsp.mkdir(root, { mode: 0o700 });
          roots.push(root);
          let t = await layerTar(entries, outside);
          if (opts.gzip) t = gzipSync(t);
          try {
            await extract(Readable.from([t]), root, opts);
          } catch (e) {
            error = e;
            break;
          }
        }

        if (c.expect.outcome === "refused") {
          assert.ok(
            error instanceof UnsafeLayerError && error instanceof StrataError && error.code === "UNSAFE_LAYER",
            `expected the layer to be refused, got ${String(error)}`,
          );
          if (c.expect.error)
            assert.ok(
              (error as Error).message.includes(c.expect.error),
              `"${(error as Error).message}" does not mention ${c.expect.error}`,
            );
        } else {
          assert.equal(error, undefined, `extraction failed: ${String(error)}`);
          if (c.expect.files) await checkFiles(roots.at(-1)!, c.expect.files, outside, c.name);
          for (const [i, files] of (c.expect.layerFiles ?? []).entries())
            await checkFiles(roots[i]!, files, outside, `${c.name} (layer ${i})`);
          for (const rel of c.expect.absent ?? [])
            assert.ok(!existsSync(path.join(roots.at(-1)!, rel)), `${rel} was created`);
          if (c.expect.warnings !== undefined) assert.equal(warnings.length, c.expect.warnings, warnings.join("\n"));
          // Stack the layers as a build would and look through the merged view.
          if (c.expect.merged && overlayWorks) {
            const dirs = await mountOverlay(path.join(box, "ovl"), roots);
            try {
              await checkFiles(dirs.merged, c.expect.merged, outside, `${c.name} (merged)`);
              // Writing through the merged view lands in the upper dir, never outside.
              await fsp.writeFile(path.join(dirs.merged, Object.keys(c.expect.merged)[0]!), "rewritten");
            } finally {
              await unmountOverlay(dirs);
            }
          }
        }
        await checkOutside(box, outside, victim, c.name);
      });
    }
  }

  test("limits have sane defaults", () => {
    assert.equal(DEFAULT_MAX_LAYER_BYTES, 64 * 1024 ** 3);
    assert.equal(DEFAULT_MAX_LAYER_ENTRIES, 10_000_000);
  });
});
