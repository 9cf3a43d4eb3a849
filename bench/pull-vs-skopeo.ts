/**
 * Benchmark: pulling and unpacking a ~250 MB / 50,000-file image from a loopback registry — `strata pull` vs
 * `skopeo copy` + `umoci raw unpack` — and an eStargz lazy one-file read vs a full `strata pull` of the eStargz image.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/pull-vs-skopeo.js [--runs N] [--files N] [--mb N] [--layers N] [--keep]
 *
 * Needs skopeo, umoci and Debian's docker-registry (/usr/bin/docker-registry). Everything lives in one mkdtemp dir
 * (plus the registry's own, removed by its stop()), removed at the end or on Ctrl-C. See bench/README.md.
 *
 * Timed per run, each with a fresh store / directory ("the image is unpacked on disk" on both sides):
 *   strata     `strata pull <ref>`: manifest, config, layers downloaded and verified (digest + diffID), each layer
 *              unpacked into the store's layers/<diffID>/ (the overlay lowerdirs a build or run uses).
 *   peer       `skopeo copy docker://<ref> oci:<dir>:bench` then `umoci raw unpack --image <dir>:bench <rootfs>`.
 *   lazy       a fresh node process: `openLazyImage(<estargz ref>).readFile(<small file>)`.
 *   full       `strata pull <estargz ref>` (the same eStargz image, pulled and unpacked entirely).
 * Bytes on the wire for lazy and full are measured once, untimed, through a counting HTTP proxy.
 */
import { createHash } from "node:crypto";
import { mkdirSync, promises as fsp, readdirSync, lstatSync, symlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { killCurrentChild, run, setLogDir, type RunResult } from "./child.js";
import { binaryContent, prng, textContent, type TextStyle } from "./content.js";

// ---------------------------------------------------------------------------------------------------------------
// Options

interface Options {
  runs: number;
  files: number;
  bytes: number;
  layers: number;
  keep: boolean;
  tmp: string;
  breakdown: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: "string", default: "3" },
      files: { type: "string", default: "50000" },
      mb: { type: "string", default: "250" },
      layers: { type: "string", default: "5" },
      keep: { type: "boolean", default: false },
      tmp: { type: "string", default: os.tmpdir() },
      "no-breakdown": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      "usage: node dist/bench/pull-vs-skopeo.js [--runs N] [--files N] [--mb N] [--layers N] [--tmp DIR] [--keep] [--no-breakdown]\n" +
        "  --files/--mb/--layers  size of the generated image (default 50000 files, 250 MiB, 5 layers)\n" +
        "  --keep          keep the temporary directory (source trees, store, logs)\n" +
        "  --no-breakdown  skip the in-process download / unpack split of one Strata pull\n",
    );
    process.exit(0);
  }
  const runs = Number(values.runs);
  const files = Number(values.files);
  const mb = Number(values.mb);
  const layers = Number(values.layers);
  if (!Number.isInteger(runs) || runs < 1) throw new Error("--runs must be a positive integer");
  if (!Number.isInteger(files) || files < 100) throw new Error("--files must be an integer ≥ 100");
  if (!Number.isInteger(layers) || layers < 1 || layers > 20) throw new Error("--layers must be 1..20");
  if (!(mb > 0)) throw new Error("--mb must be positive");
  return {
    runs,
    files,
    bytes: Math.round(mb * 1024 * 1024),
    layers,
    keep: values.keep!,
    tmp: values.tmp!,
    breakdown: !values["no-breakdown"],
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Paths and child processes

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository root: this file is dist/bench/pull-vs-skopeo.js (or bench/pull-vs-skopeo.ts). */
const REPO = path.basename(path.dirname(HERE)) === "dist" ? path.resolve(HERE, "../..") : path.resolve(HERE, "..");
const STRATA_BIN = path.join(REPO, "bin", "strata.js");
const DIST = path.basename(path.dirname(HERE)) === "dist" ? path.dirname(HERE) : path.join(REPO, "dist");

const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const log = (line: string) => process.stdout.write(line + "\n");

// ---------------------------------------------------------------------------------------------------------------
// Deterministic image content

const TEXT: TextStyle = {
  words: (
    "import export const let function return if else for while class interface type async await new this " +
    "usr lib share include python site packages module value self def none true false print string bytes list " +
    "config manifest blob tar gzip debian node locale zoneinfo license copyright version build test data"
  ).split(" "),
  indent: "    ",
  levels: 3,
  lineEnd: "",
};

interface LayerSpec {
  dir: string;
  files: number;
  bytes: number;
  symlinks: number;
  dirs: number;
  whiteouts: number;
  /** A small text file of this layer (for the lazy read), with its content's sha256. */
  sample?: { rel: string; size: number; sha256: string };
}

const TOPS = ["usr/lib", "usr/share", "usr/local/lib", "opt/app", "var/lib"];

/**
 * Writes layer `index` of the image into `dir`: `nFiles` regular files totalling `bytes`, in a nested tree (depth up
 * to 6 below a few common top directories), ~85% text and ~15% binary by count plus two large binaries (~15% of the
 * bytes), ~2% symlinks; the top layer (when there are several) also deletes a few files of layer 0 (overlay
 * whiteouts, char 0/0). Synchronous writes: generation is not timed.
 */
function generateLayer(
  dir: string,
  index: number,
  nFiles: number,
  bytes: number,
  deleteFrom: string[] | undefined,
): LayerSpec {
  const rnd = prng(0x5eed + index * 7919);
  const dirs: { rel: string; depth: number }[] = TOPS.map((t) => ({ rel: `${t}/pkg${index}`, depth: 2 }));
  const nDirs = Math.max(1, Math.round(nFiles / 14));
  for (let i = 0; i < nDirs; i++) {
    const candidates = dirs.filter((d) => d.depth < 7);
    const parent = candidates[Math.floor(rnd() * candidates.length)]!;
    const name = `${["src", "lib", "pkg", "data", "assets", "test", "docs", "mod", "include", "locale"][Math.floor(rnd() * 10)]}${i}`;
    dirs.push({ rel: `${parent.rel}/${name}`, depth: parent.depth + 1 });
  }
  for (const d of dirs) mkdirSync(path.join(dir, d.rel), { recursive: true, mode: 0o755 });

  const large = Math.floor(bytes * 0.15);
  const small = bytes - large;
  const nSmall = nFiles - 2;
  const weights = Array.from({ length: nSmall }, () => Math.exp(rnd() * 7));
  const wsum = weights.reduce((a, b) => a + b, 0);
  const minSize = 32;
  const spare = small - minSize * nSmall;
  if (spare < 0) throw new Error("too many files for that many bytes");
  const sizes = weights.map((w) => minSize + Math.floor((w / wsum) * spare));
  sizes[sizes.length - 1]! += small - sizes.reduce((a, b) => a + b, 0);
  const exts = ["py", "pyc", "so.txt", "json", "md", "txt", "js", "h", "mo", "conf"];
  const spec: LayerSpec = { dir, files: nFiles, bytes, symlinks: 0, dirs: dirs.length, whiteouts: 0 };
  const written: string[] = [];
  for (let i = 0; i < nSmall; i++) {
    const d = dirs[Math.floor(rnd() * dirs.length)]!;
    const binary = rnd() < 0.15;
    const rel = `${d.rel}/f${i}.${binary ? "bin" : exts[Math.floor(rnd() * exts.length)]}`;
    const content = binary ? binaryContent(rnd, sizes[i]!) : textContent(rnd, sizes[i]!, TEXT);
    writeFileSync(path.join(dir, rel), content, { mode: rnd() < 0.1 ? 0o755 : 0o644 });
    written.push(rel);
    if (!spec.sample && !binary && content.length >= 512 && content.length <= 4096 && d.depth >= 4) {
      spec.sample = { rel, size: content.length, sha256: createHash("sha256").update(content).digest("hex") };
    }
  }
  writeFileSync(
    path.join(dir, `${TOPS[0]}/pkg${index}/libbig${index}.so`),
    binaryContent(rnd, Math.floor(large * 0.6)),
    { mode: 0o755 },
  );
  writeFileSync(
    path.join(dir, `${TOPS[1]}/pkg${index}/blob${index}.dat`),
    binaryContent(rnd, large - Math.floor(large * 0.6)),
    { mode: 0o644 },
  );
  // Symlinks to sibling files (relative) and to absolute paths inside the image, ~2% of entries.
  const nLinks = Math.round(nFiles * 0.02);
  for (let i = 0; i < nLinks; i++) {
    const target = written[Math.floor(rnd() * written.length)]!;
    const link = `${target}.link${i}`;
    symlinkSync(rnd() < 0.5 ? path.posix.basename(target) : `/${target}`, path.join(dir, link));
    spec.symlinks++;
  }
  // Deletions of lower-layer files: overlay whiteouts that packDir turns into `.wh.` entries.
  for (const rel of deleteFrom ?? []) {
    mkdirSync(path.join(dir, path.dirname(rel)), { recursive: true, mode: 0o755 });
    spec.whiteouts++;
    whiteoutRels.push(path.join(dir, rel));
  }
  return spec;
}

/** Whiteout devices to create (mknod needs a child process; done in bulk after generation). */
const whiteoutRels: string[] = [];

/** The first `n` regular files of a generated layer, in walk order (what the top layer deletes). */
function firstFiles(dir: string, n: number): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(dir, rel)).sort()) {
      if (out.length >= n) return;
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(path.join(dir, r));
      if (st.isDirectory()) walk(r);
      else if (st.isFile() && r.split("/").length >= 5) out.push(r);
    }
  };
  walk("");
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// A counting proxy (bytes on the wire for the lazy read and the full pull)

interface CountingProxy {
  host: string;
  bytes: () => number;
  requests: () => number;
  reset(): void;
  close(): Promise<void>;
}

async function startCountingProxy(target: string): Promise<CountingProxy> {
  const [th, tp] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  let bytes = 0;
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    const up = http.request({ host: th, port: tp, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.on("data", (c: Buffer) => {
        bytes += c.length;
      });
      ur.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    bytes: () => bytes,
    requests: () => requests,
    reset() {
      bytes = 0;
      requests = 0;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Child modes (a fresh node process, like the CLI): the lazy read, and an in-process pull/unpack split

async function childMain(mode: string, rest: string[]): Promise<void> {
  if (mode === "lazy") {
    const [ref, file] = rest as [string, string];
    const t0 = performance.now();
    const { openLazyImage } = (await import(
      path.join(DIST, "src/registry/estargz/lazy.js")
    )) as typeof import("../src/registry/estargz/lazy.js");
    const img = await openLazyImage(ref);
    const tOpen = performance.now();
    const data = await img.readFile(file);
    const t1 = performance.now();
    process.stdout.write(
      JSON.stringify({
        seconds: (t1 - t0) / 1000,
        openSeconds: (tOpen - t0) / 1000,
        bytesRead: img.bytesRead,
        layerBytes: img.layerBytes,
        length: data.length,
        sha256: createHash("sha256").update(data).digest("hex"),
      }) + "\n",
    );
    return;
  }
  if (mode === "breakdown") {
    // Blobs only (unpack: false), then store.layerDir for each layer (the two-pass path), then a default pull that
    // unpacks while downloading, each into a fresh store.
    const [ref, home] = rest as [string, string];
    const { pullImage } = (await import(
      path.join(DIST, "src/registry/pull.js")
    )) as typeof import("../src/registry/pull.js");
    const { LocalStore } = (await import(
      path.join(DIST, "src/store/local.js")
    )) as typeof import("../src/store/local.js");
    const store = await LocalStore.open(path.join(home, "two-pass"));
    const t0 = performance.now();
    const pulled = await pullImage(ref, store, { unpack: false });
    const t1 = performance.now();
    const per: number[] = [];
    for (const l of pulled.layers) {
      const s = performance.now();
      await store.layerDir(l);
      per.push((performance.now() - s) / 1000);
    }
    const t2 = performance.now();
    const inline = await LocalStore.open(path.join(home, "one-pass"));
    const t3 = performance.now();
    const again = await pullImage(ref, inline);
    for (const l of again.layers) await inline.layerDir(l);
    const t4 = performance.now();
    process.stdout.write(
      JSON.stringify({
        blobsSeconds: (t1 - t0) / 1000,
        unpackSeconds: (t2 - t1) / 1000,
        perLayer: per,
        onePassSeconds: (t4 - t3) / 1000,
      }) + "\n",
    );
    return;
  }
  throw new Error(`unknown child mode ${mode}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Checks

interface TreeCount {
  files: number;
  bytes: number;
  symlinks: number;
  dirs: number;
  other: number;
}

function countTree(root: string): TreeCount {
  const c: TreeCount = { files: 0, bytes: 0, symlinks: 0, dirs: 0, other: 0 };
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      const st = lstatSync(p);
      if (st.isDirectory()) {
        c.dirs++;
        walk(p);
      } else if (st.isFile()) {
        c.files++;
        c.bytes += st.size;
      } else if (st.isSymbolicLink()) c.symlinks++;
      else c.other++;
    }
  };
  walk(root);
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Report helpers

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

function table(head: string[], rows: string[][], align: ("l" | "r")[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => (align[i] === "r" ? c.padStart(w[i]!) : c.padEnd(w[i]!)))
      .join("  ")
      .trimEnd();
  return [fmt(head), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(fmt)].join("\n");
}

// ---------------------------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--child") return childMain(argv[1]!, argv.slice(2));
  const o = parseOptions(argv);
  await fsp.access(path.join(DIST, "src", "cli", "main.js")).catch(() => {
    throw new Error("dist/ is missing: run `npx tsc -p tsconfig.json` first");
  });
  const versions: string[] = [];
  for (const [cmd, args] of [
    ["skopeo", ["--version"]],
    ["umoci", ["--version"]],
  ] as const) {
    versions.push(
      (
        await run(cmd, [...args]).catch((e: Error) => {
          throw new Error(`${cmd} is required (scripts/setup-system.sh installs it): ${e.message}`);
        })
      ).stdout.trim(),
    );
  }

  const { startRegistry } = (await import(
    path.join(DIST, "test/support/registry.js")
  )) as typeof import("../test/support/registry.js");
  const { LocalStore } = (await import(
    path.join(DIST, "src/store/local.js")
  )) as typeof import("../src/store/local.js");
  const { commitLayer } = (await import(
    path.join(DIST, "src/layer/commit.js")
  )) as typeof import("../src/layer/commit.js");
  const { pushImage } = (await import(
    path.join(DIST, "src/registry/push.js")
  )) as typeof import("../src/registry/push.js");
  const { MediaType } = (await import(path.join(DIST, "src/oci/types.js"))) as typeof import("../src/oci/types.js");

  await fsp.mkdir(o.tmp, { recursive: true });
  const tmp = await fsp.mkdtemp(path.join(path.resolve(o.tmp), "strata-pullbench-"));
  const logs = path.join(tmp, "logs");
  await fsp.mkdir(logs, { recursive: true });
  setLogDir(logs);
  let registry: Awaited<ReturnType<typeof startRegistry>> | undefined;
  let proxy: CountingProxy | undefined;
  const cleanup = async () => {
    await proxy?.close().catch(() => undefined);
    await registry?.stop().catch(() => undefined);
    if (o.keep) progress(`kept ${tmp}`);
    else await fsp.rm(tmp, { recursive: true, force: true });
  };
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    progress(`${sig}: stopping and cleaning up ${tmp}`);
    killCurrentChild();
    void cleanup().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    progress(`working in ${tmp}`);
    // ---- the image (untimed) ----
    const tGen = performance.now();
    const specs: LayerSpec[] = [];
    const perLayerFiles = Math.floor(o.files / o.layers);
    const perLayerBytes = Math.floor(o.bytes / o.layers);
    for (let i = 0; i < o.layers; i++) {
      const dir = path.join(tmp, "src", `layer${i}`);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      const nFiles = i === o.layers - 1 ? o.files - perLayerFiles * (o.layers - 1) : perLayerFiles;
      const nBytes = i === o.layers - 1 ? o.bytes - perLayerBytes * (o.layers - 1) : perLayerBytes;
      const deletes = i === o.layers - 1 && o.layers > 1 ? firstFiles(specs[0]!.dir, 10) : undefined;
      specs.push(generateLayer(dir, i, nFiles, nBytes, deletes));
    }
    for (const w of whiteoutRels) await run("mknod", [w, "c", "0", "0"], { what: "mknod whiteout" });
    progress(
      `generated ${o.layers} layer trees: ${o.files} files, ${mib(o.bytes)}, ${specs.reduce((a, s) => a + s.symlinks, 0)} symlinks, ${whiteoutRels.length} whiteouts in ${((performance.now() - tGen) / 1000).toFixed(1)} s`,
    );

    const srcStore = await LocalStore.open(path.join(tmp, "source-store"));
    const tCommit = performance.now();
    const layers = [];
    for (const s of specs) layers.push(await commitLayer(srcStore, s.dir, { epoch: 1_700_000_000, overlay: true }));
    const created = "2024-01-01T00:00:00Z";
    const config = {
      created,
      architecture: "amd64",
      os: "linux",
      config: { Cmd: ["/bin/sh"], Env: ["PATH=/usr/bin:/bin"] },
      rootfs: { type: "layers" as const, diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({ created, created_by: `pull-vs-skopeo layer ${i}` })),
    };
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDigest = await srcStore.putBlobBytes(configBytes);
    const manifest = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: configDigest, size: configBytes.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    const manifestDigest = await srcStore.putBlobBytes(manifestBytes);
    const record = {
      id: configDigest,
      configDigest,
      configSize: configBytes.length,
      manifestDigest,
      manifestSize: manifestBytes.length,
      layers,
    };
    await srcStore.putImage(record);
    const blobBytes = layers.reduce((a, l) => a + l.size, 0);
    progress(
      `committed ${layers.length} layers (${mib(blobBytes)} gzip) in ${((performance.now() - tCommit) / 1000).toFixed(1)} s`,
    );

    registry = await startRegistry();
    const ref = `${registry.host}/bench/pull:v1`;
    const eref = `${registry.host}/bench/pull-estargz:v1`;
    const tPush = performance.now();
    await pushImage(srcStore, record, ref);
    await pushImage(srcStore, record, eref, { estargz: true });
    progress(`pushed ${ref} and ${eref} (eStargz) in ${((performance.now() - tPush) / 1000).toFixed(1)} s`);
    // The source store stays until the end like everything else: see "Nothing is deleted until the end" below.

    // The lazily read file: a small text file deep in the middle layer.
    const sampleLayer = specs[Math.floor(o.layers / 2)]!;
    const sample = sampleLayer.sample!;
    const expectMerged = {
      files: specs.reduce((a, s) => a + s.files, 0) - whiteoutRels.length,
      symlinks: specs.reduce((a, s) => a + s.symlinks, 0),
    };

    // ---- timed runs ----
    // Nothing is deleted until the end. Without a journal (as on these machines), ext4 skips inodes freed in the last
    // 60 s (300 s while their inode table block is dirty) when it allocates new ones, looking each candidate up in
    // the buffer cache (recently_deleted() in fs/ext4/ialloc.c): after a mass deletion, creating a file costs several
    // times more for minutes. Deleting 50,000 files between runs would slow whichever side comes next; a run right
    // after another benchmark's cleanup is slowed on both sides (wait five minutes for representative numbers).
    const t = {
      strata: [] as number[],
      skopeo: [] as number[],
      umoci: [] as number[],
      lazy: [] as number[],
      full: [] as number[],
    };
    const notes: string[] = [];
    let lazyInfo:
      | { seconds: number; openSeconds: number; bytesRead: number; layerBytes: number; length: number; sha256: string }
      | undefined;
    for (let r = 0; r < o.runs; r++) {
      const work = path.join(tmp, `run${r}`);
      await fsp.mkdir(work);
      const home = path.join(work, "strata-home");
      const ociDir = path.join(work, "oci");
      const rootfs = path.join(work, "rootfs");
      const ehome = path.join(work, "strata-home-estargz");

      const strataPull = async () => {
        await run("sync", []);
        const s = await run(process.execPath, [STRATA_BIN, "pull", ref], {
          env: { STRATA_HOME: home },
          what: `strata pull #${r + 1}`,
        });
        if (r === 0) {
          const layerDirs = await fsp.readdir(path.join(home, "layers"));
          const files = layerDirs.map((d) => countTree(path.join(home, "layers", d))).reduce((a, c) => a + c.files, 0);
          if (layerDirs.length !== o.layers || files !== o.files)
            notes.push(
              `strata: expected ${o.layers} unpacked layers with ${o.files} files, found ${layerDirs.length} with ${files}`,
            );
        }
        return s;
      };
      const peerPull = async () => {
        await run("sync", []);
        const sk = await run(
          "skopeo",
          ["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", `docker://${ref}`, `oci:${ociDir}:bench`],
          { what: `skopeo copy #${r + 1}` },
        );
        const um = await run("umoci", ["raw", "unpack", "--image", `${ociDir}:bench`, rootfs], {
          what: `umoci raw unpack #${r + 1}`,
        });
        if (r === 0) {
          const c = countTree(rootfs);
          if (c.files !== expectMerged.files || c.symlinks !== expectMerged.symlinks)
            notes.push(
              `umoci: expected ${expectMerged.files} files and ${expectMerged.symlinks} symlinks, found ${c.files} and ${c.symlinks}`,
            );
        }
        return { sk, um };
      };
      // Alternate which side goes first, so neither always inherits the other's dirty state.
      let s: RunResult;
      let peer: { sk: RunResult; um: RunResult };
      if (r % 2 === 0) {
        s = await strataPull();
        peer = await peerPull();
      } else {
        peer = await peerPull();
        s = await strataPull();
      }
      const { sk, um } = peer;

      await run("sync", []);
      const lz = await run(
        process.execPath,
        [fileURLToPath(import.meta.url), "--child", "lazy", eref, `/${sample.rel}`],
        { what: `lazy read #${r + 1}` },
      );
      lazyInfo = JSON.parse(lz.stdout.trim().split("\n").pop()!) as typeof lazyInfo;
      if (lazyInfo!.sha256 !== sample.sha256)
        notes.push(`lazy read #${r + 1}: content of /${sample.rel} does not match the source`);

      await run("sync", []);
      const full = await run(process.execPath, [STRATA_BIN, "pull", eref], {
        env: { STRATA_HOME: ehome },
        what: `strata pull estargz #${r + 1}`,
      });

      t.strata.push(s.seconds);
      t.skopeo.push(sk.seconds);
      t.umoci.push(um.seconds);
      t.lazy.push(lz.seconds);
      t.full.push(full.seconds);
      progress(
        `run ${r + 1}/${o.runs}: strata ${s.seconds.toFixed(2)} s; skopeo ${sk.seconds.toFixed(2)} s + umoci ${um.seconds.toFixed(2)} s; ` +
          `lazy read ${lz.seconds.toFixed(2)} s; full eStargz pull ${full.seconds.toFixed(2)} s`,
      );
    }

    // ---- bytes on the wire (untimed, through a counting proxy) ----
    proxy = await startCountingProxy(registry.host);
    const pref = (r: string) => r.replace(registry!.host, proxy!.host);
    proxy.reset();
    await run(process.execPath, [fileURLToPath(import.meta.url), "--child", "lazy", pref(eref), `/${sample.rel}`], {
      what: "lazy read (proxied)",
    });
    const lazyWire = { bytes: proxy.bytes(), requests: proxy.requests() };
    proxy.reset();
    const bhome = path.join(tmp, "bytes-home");
    await run(process.execPath, [STRATA_BIN, "pull", pref(eref)], {
      env: { STRATA_HOME: bhome },
      what: "strata pull estargz (proxied)",
    });
    const fullWire = { bytes: proxy.bytes(), requests: proxy.requests() };
    await proxy.close();
    proxy = undefined;

    // ---- in-process breakdown of one Strata pull (untimed) ----
    let breakdown:
      | { blobsSeconds: number; unpackSeconds: number; perLayer: number[]; onePassSeconds: number }
      | undefined;
    if (o.breakdown) {
      await run("sync", []);
      const r = await run(
        process.execPath,
        [fileURLToPath(import.meta.url), "--child", "breakdown", ref, path.join(tmp, "breakdown")],
        { what: "breakdown" },
      );
      breakdown = JSON.parse(r.stdout.trim().split("\n").pop()!) as typeof breakdown;
    }

    // ---- report ----
    const sm = median(t.strata);
    const skm = median(t.skopeo);
    const umm = median(t.umoci);
    const peerRuns = t.skopeo.map((x, i) => x + t.umoci[i]!);
    const pm = median(peerRuns);
    const lm = median(t.lazy);
    const fm = median(t.full);
    log(
      `\n# Pull + unpack: strata pull vs skopeo copy + umoci raw unpack — ${o.files} files / ${mib(o.bytes)} in ${o.layers} layers, ${o.runs} run(s), median`,
    );
    log(
      `${versions.join("; ")}; docker-registry 2.8.2 on loopback; node ${process.version}; kernel ${os.release()}; ${os.cpus().length} CPUs`,
    );
    log(
      `image: ${mib(blobBytes)} of gzip layers (level ${process.env.STRATA_GZIP_LEVEL ?? "1"}), ${expectMerged.symlinks} symlinks, ${whiteoutRels.length} whiteouts; eStargz variant ${mib(lazyInfo?.layerBytes ?? 0)}\n`,
    );
    const pr = sm / pm;
    const lr = lm / fm;
    log(
      table(
        ["scenario", "strata s", "peer s", "ratio", "target", "result"],
        [
          [
            "pull + unpack (peer: skopeo + umoci)",
            sm.toFixed(2),
            pm.toFixed(2),
            pr.toFixed(2) + "x",
            "<= 0.5x",
            pr <= 0.5 ? "PASS" : "MISS",
          ],
          [
            "eStargz one-file read vs full pull",
            lm.toFixed(2),
            fm.toFixed(2),
            lr.toFixed(3) + "x",
            "<= 0.1x",
            lr <= 0.1 ? "PASS" : "MISS",
          ],
        ],
        ["l", "r", "r", "r", "r", "l"],
      ),
    );
    log(`\npeer split (median): skopeo copy ${skm.toFixed(2)} s, umoci raw unpack ${umm.toFixed(2)} s`);
    log(
      `lazy read: /${sample.rel} (${sample.size} B), ${lazyWire.bytes} B in ${lazyWire.requests} requests on the wire (${mib(lazyWire.bytes)}; eStargz reader counted ${lazyInfo?.bytesRead} B of layers + TOCs); in-process open ${lazyInfo?.openSeconds.toFixed(3)} s, total ${lazyInfo?.seconds.toFixed(3)} s`,
    );
    log(
      `full eStargz pull: ${fullWire.bytes} B in ${fullWire.requests} requests on the wire (${mib(fullWire.bytes)}); bytes ratio ${(lazyWire.bytes / fullWire.bytes).toFixed(4)}`,
    );
    if (breakdown) {
      log(
        `strata pull in process (library): blobs only (unpack: false) ${breakdown.blobsSeconds.toFixed(2)} s, then store.layerDir ${breakdown.unpackSeconds.toFixed(2)} s ` +
          `(per layer ${breakdown.perLayer.map((x) => x.toFixed(2)).join(", ")}); unpacked while downloading (default) ${breakdown.onePassSeconds.toFixed(2)} s`,
      );
    }
    log("\nall runs (seconds):");
    log(
      table(
        ["what", "runs"],
        [
          ["strata pull", t.strata.map((x) => x.toFixed(2)).join(" ")],
          ["skopeo copy", t.skopeo.map((x) => x.toFixed(2)).join(" ")],
          ["umoci raw unpack", t.umoci.map((x) => x.toFixed(2)).join(" ")],
          ["lazy one-file read", t.lazy.map((x) => x.toFixed(2)).join(" ")],
          ["strata pull (eStargz)", t.full.map((x) => x.toFixed(2)).join(" ")],
        ],
        ["l", "l"],
      ),
    );
    if (notes.length) {
      log("\nnotes:");
      for (const n of notes) log(`- ${n}`);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (!interrupted) {
      progress("cleaning up");
      await cleanup();
    }
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`pull-vs-skopeo: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
