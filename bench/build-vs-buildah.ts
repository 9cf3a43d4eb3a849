/**
 * Benchmark: Strata vs `buildah bud --layers` building the same image from the same Debian base.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/build-vs-buildah.js [--runs N] [--apt] [--keep] [--no-profile]
 *
 * Needs root, buildah, runc (/usr/sbin/runc), mmdebstrap and overlayfs. Everything lives in one mkdtemp dir that is
 * removed at the end (buildah's storage is emptied and unmounted first). See bench/README.md.
 *
 * Scenarios (each run N times, median reported):
 *   cold          Strata: a store holding only the debianSlim base; buildah: storage holding only that base
 *                 (the Strata base exported as an OCI layout and pulled into buildah's private storage).
 *   fully cached  the identical build again.
 *   one-file edit one context file's content changed (same size), then the build again.
 */
import { randomBytes } from "node:crypto";
import { promises as fsp, readFileSync } from "node:fs";
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
  apt: boolean;
  keep: boolean;
  profile: boolean;
  python: string;
  tmp: string;
  baseCache?: string;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: "string", default: "3" },
      files: { type: "string", default: "2000" },
      mb: { type: "string", default: "12" },
      apt: { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      "no-profile": { type: "boolean", default: false },
      python: { type: "string", default: "3.11" },
      tmp: { type: "string", default: os.tmpdir() },
      "base-cache": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      "usage: node dist/bench/build-vs-buildah.js [--runs N] [--files N] [--mb N] [--apt] [--python 3.11] [--tmp DIR] [--keep] [--no-profile]\n" +
        "  --apt         first step is `apt-get update && apt-get install -y jq` (network-dependent) instead of local work\n" +
        "  --keep        keep the temporary directory (buildah storage is still emptied and unmounted)\n" +
        "  --no-profile  skip the Strata cached-build breakdown (phase probe + CPU profile)\n" +
        "  --base-cache DIR  keep the built debianSlim base (store snapshot + OCI layout) in DIR and reuse it next time\n" +
        "                (saves the ~45 s mmdebstrap; the base is never part of the timings either way)\n",
    );
    process.exit(0);
  }
  const runs = Number(values.runs);
  const files = Number(values.files);
  const mb = Number(values.mb);
  if (!Number.isInteger(runs) || runs < 1) throw new Error("--runs must be a positive integer");
  if (!Number.isInteger(files) || files < 1) throw new Error("--files must be a positive integer");
  if (!(mb > 0)) throw new Error("--mb must be positive");
  return {
    runs,
    files,
    bytes: Math.round(mb * 1024 * 1024),
    apt: values.apt!,
    keep: values.keep!,
    profile: !values["no-profile"],
    python: values.python!,
    tmp: values.tmp!,
    baseCache: values["base-cache"] ? path.resolve(values["base-cache"]) : undefined,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Paths

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository root: this file is dist/bench/build-vs-buildah.js (or bench/build-vs-buildah.ts). */
const REPO = path.basename(path.dirname(HERE)) === "dist" ? path.resolve(HERE, "../..") : path.resolve(HERE, "..");
const STRATA_BIN = path.join(REPO, "bin", "strata.js");
const RUNC = "/usr/sbin/runc";

// ---------------------------------------------------------------------------------------------------------------
// Child processes

// ---------------------------------------------------------------------------------------------------------------
// Deterministic build context

const TEXT: TextStyle = {
  words: (
    "import export const let function return if else for while class interface type async await new this " +
    "strata layer image build cache key digest context file walk hash store index record step plan sandbox " +
    "runc overlay mount upper lower merged config manifest blob tar gzip debian python node module value"
  ).split(" "),
  indent: "  ",
  levels: 4,
  lineEnd: ";",
};

interface CtxFile {
  rel: string;
  size: number;
  binary: boolean;
}

/**
 * Lays out `nFiles` files totalling exactly `totalBytes` in a nested tree (depth up to 5) under `root`.
 * Sizes are log-uniformly skewed (many small files, a few large ones); ~15% of files are binary.
 */
async function generateContext(root: string, nFiles: number, totalBytes: number, seed = 0x5eed): Promise<CtxFile[]> {
  const rnd = prng(seed);
  const dirs: { rel: string; depth: number }[] = [{ rel: "", depth: 0 }];
  const nDirs = Math.max(1, Math.round(nFiles / 16));
  for (let i = 0; i < nDirs; i++) {
    const candidates = dirs.filter((d) => d.depth < 5);
    const parent = candidates[Math.floor(rnd() * candidates.length)]!;
    const name = `${["src", "lib", "pkg", "data", "assets", "test", "docs", "mod"][Math.floor(rnd() * 8)]}${i}`;
    dirs.push({ rel: parent.rel ? `${parent.rel}/${name}` : name, depth: parent.depth + 1 });
  }
  const weights = Array.from({ length: nFiles }, () => Math.exp(rnd() * 7));
  const wsum = weights.reduce((a, b) => a + b, 0);
  const minSize = 16;
  const spare = totalBytes - minSize * nFiles;
  if (spare < 0) throw new Error("context too small for that many files");
  const sizes = weights.map((w) => minSize + Math.floor((w / wsum) * spare));
  sizes[sizes.length - 1]! += totalBytes - sizes.reduce((a, b) => a + b, 0);
  const exts = ["ts", "py", "json", "md", "txt", "js", "yaml", "c", "h", "css"];
  const files: CtxFile[] = [];
  for (let i = 0; i < nFiles; i++) {
    const dir = dirs[Math.floor(rnd() * dirs.length)]!;
    const binary = rnd() < 0.15;
    const name = `f${String(i).padStart(4, "0")}.${binary ? "bin" : exts[Math.floor(rnd() * exts.length)]}`;
    files.push({ rel: dir.rel ? `${dir.rel}/${name}` : name, size: sizes[i]!, binary });
  }
  for (const d of dirs) await fsp.mkdir(path.join(root, d.rel), { recursive: true });
  for (const f of files) {
    const content = f.binary ? binaryContent(rnd, f.size) : textContent(rnd, f.size, TEXT);
    await fsp.writeFile(path.join(root, f.rel), content, { mode: rnd() < 0.1 ? 0o755 : 0o644 });
  }
  // Fixed modes on directories too (independent of the umask).
  for (const d of dirs) await fsp.chmod(path.join(root, d.rel), 0o755);
  return files;
}

/** Rewrites one file with different content of the same size. */
async function editFile(root: string, f: CtxFile, run: number): Promise<void> {
  const rnd = prng(0xed17 + run);
  await fsp.writeFile(path.join(root, f.rel), f.binary ? binaryContent(rnd, f.size) : textContent(rnd, f.size, TEXT));
}

// ---------------------------------------------------------------------------------------------------------------
// The image, twice

const GEN_CMD =
  `python3 -c 'import hashlib, random; r = random.Random(7); ` +
  `print(chr(10).join(hashlib.sha256(str(r.random()).encode()).hexdigest() for _ in range(100000)))' > /gen.txt`;
const APT_CMD = "apt-get update && apt-get install -y jq";
const WORK_CMD = "mkdir -p /work && echo ok > /work/ok";
const COUNT_CMD = "find /ctx -type f | wc -l > /count";

function strataDefinition(o: Options): string {
  const first = o.apt ? `.aptInstall("jq")` : `.runCommands(${JSON.stringify(GEN_CMD)})`;
  return [
    `// Generated by bench/build-vs-buildah.ts; equivalent to the Dockerfile beside it.`,
    `import { Image } from "strata";`,
    ``,
    `export default Image.debianSlim({ pythonVersion: ${JSON.stringify(o.python)} })`,
    `  ${first}`,
    `  .runCommands(${JSON.stringify(WORK_CMD)})`,
    `  .addLocalDir("./ctx", "/ctx", { copy: true })`,
    `  .runCommands(${JSON.stringify(COUNT_CMD)})`,
    `  .env({ BENCH: "1" })`,
    `  .workdir("/work")`,
    `  .cmd(["cat", "/count"]);`,
    ``,
  ].join("\n");
}

const BASE_DEFINITION = (python: string) =>
  `import { Image } from "strata";\nexport default Image.debianSlim({ pythonVersion: ${JSON.stringify(python)} });\n`;

const BASE_NAME = "localhost/strata-bench-base:latest";

function dockerfile(o: Options): string {
  return [
    `# Generated by bench/build-vs-buildah.ts; equivalent to strata.ts beside it.`,
    `FROM ${BASE_NAME}`,
    `RUN ${o.apt ? APT_CMD : GEN_CMD}`,
    `RUN ${WORK_CMD}`,
    `COPY ctx /ctx`,
    `RUN ${COUNT_CMD}`,
    `ENV BENCH=1`,
    `WORKDIR /work`,
    `CMD ["cat", "/count"]`,
    ``,
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------------------------
// Builders

interface StrataStep {
  index: number;
  description: string;
  cached: boolean;
  seconds: number;
  layer: string | null;
  key: string;
  imageId: string;
}
interface StrataBuild {
  imageId: string;
  steps: StrataStep[];
  seconds: number;
}

class Bench {
  readonly tmp: string;
  readonly project: string;
  readonly ctx: string;
  readonly strataHome: string;
  readonly strataTemplate: string;
  readonly baseOci: string;
  readonly buildahRoot: string;
  readonly buildahRunroot: string;
  readonly buildahTmp: string;
  isolation: string[] = [];
  notes: string[] = [];

  constructor(tmp: string) {
    this.tmp = tmp;
    this.project = path.join(tmp, "project");
    this.ctx = path.join(this.project, "ctx");
    this.strataHome = path.join(tmp, "strata-home");
    this.strataTemplate = path.join(tmp, "strata-home.base");
    this.baseOci = path.join(tmp, "base-oci");
    this.buildahRoot = path.join(tmp, "buildah", "root");
    this.buildahRunroot = path.join(tmp, "buildah", "runroot");
    this.buildahTmp = path.join(tmp, "buildah", "tmp");
  }

  strata(args: string[], what: string, extraNodeArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
    return run(process.execPath, [...extraNodeArgs, STRATA_BIN, ...args], {
      env: { STRATA_HOME: this.strataHome, ...env },
      what,
    });
  }

  async strataBuild(def: string, what: string): Promise<StrataBuild> {
    const r = await this.strata(["build", def, "--json"], what);
    const last = r.stdout.trim().split("\n").pop() ?? "";
    let parsed: { imageId: string; steps: StrataStep[] };
    try {
      parsed = JSON.parse(last) as typeof parsed;
    } catch {
      throw new Error(`${what}: last stdout line is not JSON: ${last}`);
    }
    return { ...parsed, seconds: r.seconds };
  }

  buildah(args: string[], what: string, check = true): Promise<RunResult> {
    return run(
      "buildah",
      ["--root", this.buildahRoot, "--runroot", this.buildahRunroot, "--storage-driver", "overlay", ...args],
      {
        env: { TMPDIR: this.buildahTmp, BUILDAH_LAYERS: "true" },
        what,
        check,
      },
    );
  }

  budArgs(): string[] {
    return [
      "bud",
      "--layers",
      "--runtime",
      RUNC,
      ...this.isolation,
      "--pull=never",
      "--network=host",
      "-f",
      path.join(this.project, "Dockerfile"),
      "-t",
      "bench:latest",
      this.project,
    ];
  }

  async buildahBuild(what: string): Promise<RunResult> {
    const r = await this.buildah(this.budArgs(), what, this.isolation.length > 0);
    if (r.code === 0) return r;
    // runc failed: fall back to chroot isolation once, and say so.
    const tail = (r.stderr + r.stdout).trim().split("\n").slice(-8).join("\n");
    this.notes.push(
      `buildah with --runtime ${RUNC} failed (exit ${r.code}); fell back to --isolation chroot. Its output ended:\n${tail}`,
    );
    this.isolation = ["--isolation", "chroot"];
    await this.resetBuildah();
    return this.buildah(this.budArgs(), what);
  }

  /** Empties buildah's storage and pulls the base again (untimed). */
  async resetBuildah(): Promise<void> {
    await this.buildah(["rm", "-a"], "buildah rm -a", false);
    await this.buildah(["rmi", "-a", "-f"], "buildah rmi -a", false);
    const left = (await this.buildah(["images", "-a", "-q"], "buildah images")).stdout.trim();
    if (left) throw new Error(`buildah storage not empty after rmi -a: ${left}`);
    const pulled = await this.buildah(["pull", "--quiet", `oci:${this.baseOci}:latest`], "buildah pull base");
    const id = pulled.stdout.trim().split("\n").pop()!;
    await this.buildah(["tag", id, BASE_NAME], "buildah tag base");
  }

  /** Restores the Strata store to "only the debianSlim base" (untimed). */
  async resetStrata(): Promise<void> {
    await fsp.rm(this.strataHome, { recursive: true, force: true });
    await run("cp", ["-a", "--reflink=auto", this.strataTemplate, this.strataHome], { what: "copy store template" });
  }

  async cleanup(keep: boolean): Promise<void> {
    if (
      await fsp.access(this.buildahRoot).then(
        () => true,
        () => false,
      )
    ) {
      await this.buildah(["rm", "-a"], "buildah rm -a", false).catch(() => undefined);
      await this.buildah(["rmi", "-a", "-f"], "buildah rmi -a", false).catch(() => undefined);
    }
    await unmountUnder(this.tmp);
    if (keep) {
      process.stderr.write(`kept ${this.tmp}\n`);
      return;
    }
    await fsp.rm(this.tmp, { recursive: true, force: true });
  }
}

/**
 * mkdtemp with a lowercase name: buildah derives an image name from an `oci:` path, and names must be lowercase.
 */
async function makeTempDir(parent: string): Promise<string> {
  for (;;) {
    const dir = path.join(path.resolve(parent), `strata-bench-${randomBytes(5).toString("hex")}`);
    if (/[A-Z]/.test(dir))
      throw new Error(
        `--tmp ${parent}: buildah needs a lowercase path for the base OCI layout; pick another directory`,
      );
    try {
      await fsp.mkdir(dir, { mode: 0o700 });
      return dir;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
}

/** Unmounts every mount point at or below `dir`, deepest first (buildah's overlay storage leaves some). */
async function unmountUnder(dir: string): Promise<void> {
  for (let pass = 0; pass < 3; pass++) {
    const mounts = readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .map((l) =>
        (l.split(" ")[1] ?? "").replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))),
      )
      .filter((mp) => mp === dir || mp.startsWith(dir + "/"));
    if (mounts.length === 0) return;
    for (const mp of [...new Set(mounts)].sort((a, b) => b.length - a.length)) {
      const r = await run("umount", [mp], { check: false });
      if (r.code !== 0) await run("umount", ["-l", mp], { check: false });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics and printing

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function medianIndex(xs: number[]): number {
  const s = xs.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
  return s[Math.floor((s.length - 1) / 2)]![1];
}

function table(header: string[], rows: string[][], align: ("l" | "r")[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => (align[i] === "r" ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [fmt(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(fmt)].join("\n");
}

const log = (s = "") => process.stdout.write(s + "\n");
const progress = (s: string) => process.stderr.write(`[bench] ${s}\n`);

// ---------------------------------------------------------------------------------------------------------------
// Cached-build breakdown: a phase probe (run in a fresh process, as the CLI is) and a CPU profile.

interface Phase {
  name: string;
  ms: number;
}

/** `node dist/bench/build-vs-buildah.js __probe <def>`: times the phases of a cached build in one fresh process. */
async function probe(def: string): Promise<void> {
  const phases: Phase[] = [{ name: "node bootstrap (process start → first bench line)", ms: performance.now() }];
  let t = performance.now();
  const mark = (name: string) => {
    const now = performance.now();
    phases.push({ name, ms: now - t });
    t = now;
  };
  const { LocalStore } = await import("../src/store/local.js");
  mark("import store/local.js");
  const store = await LocalStore.open();
  mark("LocalStore.open (mkdirs)");
  const { loadDefinition } = await import("../src/load/definition.js");
  mark("import load/definition.js");
  const image = await loadDefinition(def, path.join(store.root, "defs"));
  mark("loadDefinition (def cache check + import sdk + def)");
  const { buildPlan } = await import("../src/engine/build.js");
  mark("import engine/build.js");
  const { initKeys } = await import("../src/keys/step-key.js");
  await initKeys();
  mark("initKeys (xxhash wasm)");
  await store.recover(async () => (await import("../src/sandbox/runc.js")).reapStaleContainers());
  mark("store.recover (reaps containers only if stale work dirs)");
  const { StatCache, walkContext } = await import("../src/context/walk.js");
  const statCache = await StatCache.load(path.join(store.root, "statcache.json"));
  mark(`StatCache.load (${statCache.size} entries)`);
  const plan = image.plan();
  const dirInput = plan.steps.flatMap((s) => s.inputs).find((i) => i.kind === "dir");
  if (dirInput && dirInput.kind === "dir") {
    const entries = await walkContext(dirInput.localPath, { statCache });
    mark(`walkContext ctx (${entries.length} entries, ${statCache.hits} stat-cache hits, ${statCache.misses} misses)`);
  }
  const r = await buildPlan(image.plan(), {
    secrets: image.secretValues(),
    store,
    log: () => undefined,
    chainName: `${path.resolve(def)}#default`,
  });
  mark(`buildPlan, all ${r.steps.length} steps (repeats init, recover, statcache load, walk; warm JIT)`);
  phases.push({ name: "steps (inside buildPlan)", ms: -1 });
  for (const s of r.steps)
    phases.push({ name: `  step ${s.index} ${s.cached ? "cached" : "BUILT"}: ${s.description}`, ms: s.seconds * 1000 });
  process.stdout.write(JSON.stringify(phases) + "\n");
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Self time per function and per file (ms) from a .cpuprofile. */
function summariseProfile(p: CpuProfile): {
  total: number;
  byFile: [string, number][];
  byFn: [string, number][];
  inclusive: [string, number][];
} {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++)
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i + 1] ?? 0) / 1000);
  const short = (url: string) => {
    if (!url) return "";
    const u = url.replace(/^file:\/\//, "");
    if (u.startsWith(REPO + "/")) return u.slice(REPO.length + 1);
    if (u.includes("/strata-home/defs/")) return "<definition bundle>";
    return u;
  };
  const category = (url: string, fn: string) => {
    if (fn === "(idle)" || fn === "(program)" || fn === "(garbage collector)" || fn === "(root)") return fn;
    const s = short(url);
    if (!s) return "(native / no url)";
    if (s.startsWith("node:")) return "node: internals";
    if (s.startsWith("node_modules/"))
      return s
        .split("/")
        .slice(0, s.startsWith("node_modules/@") ? 3 : 2)
        .join("/");
    return s;
  };
  const files = new Map<string, number>();
  const fns = new Map<string, number>();
  let total = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id)!;
    total += ms;
    const cat = category(n.callFrame.url, n.callFrame.functionName);
    files.set(cat, (files.get(cat) ?? 0) + ms);
    const fn = `${n.callFrame.functionName || "(anonymous)"} ${short(n.callFrame.url)}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ""}`;
    fns.set(fn, (fns.get(fn) ?? 0) + ms);
  }
  // Inclusive time: each sample counts once for every distinct Strata / dependency function on its stack, and for
  // "ESM module loading" if any module-loader frame is on it.
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const ms = (p.timeDeltas[i + 1] ?? 0) / 1000;
    const seen = new Set<string>();
    for (let id: number | undefined = p.samples[i]!; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame;
      const s = short(f.url);
      if (s.startsWith("node:internal/modules/esm") || s.startsWith("node:internal/modules/run_main"))
        seen.add("[ESM module loading: resolve/compile/link/evaluate]");
      else if (s.startsWith("dist/") || s.startsWith("node_modules/"))
        seen.add(`${f.functionName || "(anonymous)"} ${s}:${f.lineNumber + 1}`);
    }
    for (const k of seen) incl.set(k, (incl.get(k) ?? 0) + ms);
  }
  const top = (m: Map<string, number>, k: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, k);
  return { total, byFile: top(files, 14), byFn: top(fns, 16), inclusive: top(incl, 16) };
}

async function cachedBreakdown(b: Bench, def: string): Promise<void> {
  log("\n## Where a fully cached Strata build spends its time\n");
  const samples = async (cmd: string, args: string[], n = 5, env: NodeJS.ProcessEnv = {}) => {
    const xs: number[] = [];
    for (let i = 0; i < n; i++) xs.push((await run(cmd, args, { env })).seconds);
    return median(xs);
  };
  const bare = await samples(process.execPath, ["-e", "0"]);
  const help = await samples(process.execPath, [STRATA_BIN, "--help"]);
  const images = await samples(process.execPath, [STRATA_BIN, "images", "--json"], 5, { STRATA_HOME: b.strataHome });
  const cached = await samples(process.execPath, [STRATA_BIN, "build", def, "--json"], 5, {
    STRATA_HOME: b.strataHome,
  });
  log(
    table(
      ["process (median of 5)", "seconds"],
      [
        ["node -e 0 (bare node start-up)", bare.toFixed(3)],
        ["strata --help (CLI module only)", help.toFixed(3)],
        ["strata images --json (store open + list)", images.toFixed(3)],
        ["strata build (fully cached)", cached.toFixed(3)],
      ],
      ["l", "r"],
    ),
  );

  const probeRun = await run(process.execPath, [fileURLToPath(import.meta.url), "__probe", def], {
    env: { STRATA_HOME: b.strataHome },
    what: "phase probe",
  });
  const phases = JSON.parse(probeRun.stdout.trim().split("\n").pop()!) as Phase[];
  log(
    `\nphases of one cached build in a fresh process (bench probe calling the engine's modules; whole process ${probeRun.seconds.toFixed(3)} s):\n`,
  );
  log(
    table(
      ["phase", "ms"],
      phases.map((p) => [p.name.length > 100 ? p.name.slice(0, 97) + "..." : p.name, p.ms < 0 ? "" : p.ms.toFixed(1)]),
      ["l", "r"],
    ),
  );

  const profDir = path.join(b.tmp, "cpuprof");
  await fsp.mkdir(profDir, { recursive: true });
  const profRun = await b.strata(["build", def, "--json"], "profiled cached build", [
    "--cpu-prof",
    "--cpu-prof-dir",
    profDir,
    "--cpu-prof-interval",
    "100",
  ]);
  const profFile = (await fsp.readdir(profDir)).find((f) => f.endsWith(".cpuprofile"));
  if (!profFile) {
    log("\n(no .cpuprofile written)");
    return;
  }
  const prof = JSON.parse(await fsp.readFile(path.join(profDir, profFile), "utf8")) as CpuProfile;
  const s = summariseProfile(prof);
  log(
    `\nnode --cpu-prof of \`strata build\` (fully cached; ${profRun.seconds.toFixed(3)} s wall with profiling, ${s.total.toFixed(0)} ms sampled after V8 start):\n`,
  );
  log(
    table(
      ["self time by file / category", "ms", "%"],
      s.byFile.map(([k, v]) => [k, v.toFixed(1), ((100 * v) / s.total).toFixed(1)]),
      ["l", "r", "r"],
    ),
  );
  log("");
  log(
    table(
      ["self time by function", "ms"],
      s.byFn.map(([k, v]) => [k.length > 110 ? k.slice(0, 107) + "..." : k, v.toFixed(1)]),
      ["l", "r"],
    ),
  );
  log("");
  log(
    table(
      ["inclusive time (Strata and dependency functions)", "ms"],
      s.inclusive.map(([k, v]) => [k.length > 110 ? k.slice(0, 107) + "..." : k, v.toFixed(1)]),
      ["l", "r"],
    ),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Main

async function verifySame(b: Bench, strataId: string): Promise<void> {
  // Same files (paths, modes, owners, sizes, contents) and same config in both images.
  const script =
    "echo cwd=$(pwd) && cd /ctx && echo files=$(cat /count) && echo ok=$(cat /work/ok) && echo BENCH=$BENCH && " +
    "echo tree=$(find . -printf '%M %U %G %p\\n' | sort | sha256sum | cut -c1-16) && " +
    "echo content=$(find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16) && " +
    "echo gen=$(sha256sum /gen.txt 2>/dev/null | cut -c1-16)";
  const s = await b.strata(["run", strataId, "--", "sh", "-c", script], "strata run (verify)");
  const ctr = (await b.buildah(["from", "--pull=never", "bench:latest"], "buildah from")).stdout
    .trim()
    .split("\n")
    .pop()!;
  let bOut: RunResult;
  try {
    bOut = await b.buildah(
      ["run", "--runtime", RUNC, ...b.isolation, "--network=host", ctr, "--", "sh", "-c", script],
      "buildah run (verify)",
    );
  } finally {
    await b.buildah(["rm", ctr], "buildah rm", false);
  }
  const sx = s.stdout.trim();
  const bx = bOut.stdout.trim();
  if (sx === bx) log(`equivalence check: both images agree (${sx.split("\n").join(", ")})`);
  else {
    log(
      `equivalence check: MISMATCH\n  strata:  ${sx.split("\n").join(", ")}\n  buildah: ${bx.split("\n").join(", ")}`,
    );
    b.notes.push("the two images differ (see the equivalence check)");
  }
}

async function main(): Promise<void> {
  if (process.argv[2] === "__probe") return probe(process.argv[3]!);
  const o = parseOptions(process.argv.slice(2));
  if (process.getuid?.() !== 0)
    throw new Error("run as root (Strata and buildah both need it for overlay mounts and runc)");
  await fsp.access(STRATA_BIN).catch(() => {
    throw new Error(`${STRATA_BIN} not found`);
  });
  await fsp.access(path.join(REPO, "dist", "src", "cli", "main.js")).catch(() => {
    throw new Error("dist/ is missing: run `npx tsc -p tsconfig.json` first");
  });
  const versions = await run("buildah", ["--version"], { what: "buildah --version" }).catch((e: Error) => {
    throw new Error(`buildah is required: ${e.message}`);
  });

  await fsp.mkdir(o.tmp, { recursive: true });
  const b = new Bench(await makeTempDir(o.tmp));
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    progress(`${sig}: stopping and cleaning up ${b.tmp}`);
    killCurrentChild();
    void b.cleanup(o.keep).finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    progress(`working in ${b.tmp}`);
    const logs = path.join(b.tmp, "logs");
    await fsp.mkdir(logs, { recursive: true });
    setLogDir(logs);
    await fsp.mkdir(b.ctx, { recursive: true });
    await fsp.mkdir(b.buildahTmp, { recursive: true });
    const tGen = performance.now();
    const files = await generateContext(b.ctx, o.files, o.bytes);
    progress(
      `generated context: ${files.length} files, ${(o.bytes / 1048576).toFixed(1)} MiB in ${((performance.now() - tGen) / 1000).toFixed(2)} s`,
    );
    const def = path.join(b.project, "strata.ts");
    await fsp.writeFile(def, strataDefinition(o));
    await fsp.writeFile(path.join(b.project, "Dockerfile"), dockerfile(o));
    const baseDef = path.join(b.tmp, "base.ts");
    await fsp.writeFile(baseDef, BASE_DEFINITION(o.python));
    // The file the edit scenario changes: a text file in a nested directory, deterministic.
    const edited = files.filter((f) => !f.binary && f.rel.split("/").length >= 3)[0] ?? files[0]!;

    // ---- shared base (untimed) ----
    const baseCache = o.baseCache;
    if (
      baseCache &&
      (await fsp.access(path.join(baseCache, "base-id")).then(
        () => true,
        () => false,
      ))
    ) {
      progress(`reusing the debianSlim base from ${baseCache}`);
      await run("cp", ["-a", path.join(baseCache, "strata-home.base"), b.strataTemplate], {
        what: "copy cached base store",
      });
      await run("cp", ["-a", path.join(baseCache, "base-oci"), b.baseOci], { what: "copy cached base layout" });
      await b.resetStrata();
      // The cached base must still be a cache hit for this Strata (same builder version and base recipe).
      const base = await b.strataBuild(baseDef, "strata build base (cached)");
      if (
        !base.steps.every((x) => x.cached) ||
        base.imageId !== (await fsp.readFile(path.join(baseCache, "base-id"), "utf8")).trim()
      ) {
        throw new Error(
          `the base in ${baseCache} is stale for this Strata (it was rebuilt); delete ${baseCache} and run again`,
        );
      }
    } else {
      progress("building the Strata debianSlim base (mmdebstrap, ~45 s)…");
      const base = await b.strataBuild(baseDef, "strata build base");
      progress(
        `base ${base.imageId.slice(7, 19)} in ${base.seconds.toFixed(1)} s; exporting as OCI layout for buildah`,
      );
      await b.strata(["export", base.imageId, "--oci", b.baseOci], "strata export base");
      await run("cp", ["-a", b.strataHome, b.strataTemplate], { what: "snapshot base store" });
      if (baseCache) {
        await fsp.rm(baseCache, { recursive: true, force: true });
        await fsp.mkdir(baseCache, { recursive: true });
        await run("cp", ["-a", b.strataTemplate, path.join(baseCache, "strata-home.base")], {
          what: "save base store",
        });
        await run("cp", ["-a", b.baseOci, path.join(baseCache, "base-oci")], { what: "save base layout" });
        await fsp.writeFile(path.join(baseCache, "base-id"), base.imageId + "\n");
      }
    }
    await b.resetBuildah();

    const times = {
      cold: { s: [] as number[], b: [] as number[] },
      cached: { s: [] as number[], b: [] as number[] },
      edit: { s: [] as number[], b: [] as number[] },
    };
    const editBuilds: StrataBuild[] = [];
    const coldBuilds: StrataBuild[] = [];
    let lastStrata: StrataBuild | undefined;

    // ---- 1. cold ----
    for (let i = 0; i < o.runs; i++) {
      await b.resetStrata();
      await b.resetBuildah();
      const s = await b.strataBuild(def, `strata cold build #${i + 1}`);
      if (s.steps[0]?.cached !== true || s.steps.slice(1).some((x) => x.cached))
        b.notes.push(
          `strata cold run ${i + 1}: expected base cached and every other step built; got ${s.steps.map((x) => (x.cached ? "C" : "B")).join("")}`,
        );
      const r = await b.buildahBuild(`buildah cold build #${i + 1}`);
      times.cold.s.push(s.seconds);
      coldBuilds.push(s);
      times.cold.b.push(r.seconds);
      lastStrata = s;
      progress(`cold #${i + 1}: strata ${s.seconds.toFixed(2)} s, buildah ${r.seconds.toFixed(2)} s`);
    }
    await verifySame(b, lastStrata!.imageId);

    // ---- 2. fully cached ----
    for (let i = 0; i < o.runs; i++) {
      const s = await b.strataBuild(def, `strata cached build #${i + 1}`);
      if (s.steps.some((x) => !x.cached))
        b.notes.push(
          `strata cached run ${i + 1}: not every step was cached (${s.steps.map((x) => (x.cached ? "C" : "B")).join("")})`,
        );
      if (s.imageId !== lastStrata!.imageId) b.notes.push(`strata cached run ${i + 1}: image id changed`);
      const r = await b.buildahBuild(`buildah cached build #${i + 1}`);
      if (!/Using cache/.test(r.stdout + r.stderr))
        b.notes.push(`buildah cached run ${i + 1}: no "Using cache" in its output`);
      times.cached.s.push(s.seconds);
      times.cached.b.push(r.seconds);
      progress(`cached #${i + 1}: strata ${s.seconds.toFixed(3)} s, buildah ${r.seconds.toFixed(3)} s`);
    }

    // ---- 3. one-file edit ----
    for (let i = 0; i < o.runs; i++) {
      await editFile(b.ctx, edited, i);
      const s = await b.strataBuild(def, `strata edit build #${i + 1}`);
      const r = await b.buildahBuild(`buildah edit build #${i + 1}`);
      times.edit.s.push(s.seconds);
      times.edit.b.push(r.seconds);
      editBuilds.push(s);
      progress(`edit #${i + 1}: strata ${s.seconds.toFixed(2)} s, buildah ${r.seconds.toFixed(2)} s`);
    }

    // ---- report ----
    const kernel = os.release();
    log(
      `\n# Strata vs buildah — ${o.files} files / ${(o.bytes / 1048576).toFixed(0)} MiB context, ${o.runs} run(s) per scenario, median`,
    );
    log(
      `${versions.stdout.trim()}; runc ${RUNC}${b.isolation.length ? " (" + b.isolation.join(" ") + ")" : ""}; node ${process.version}; kernel ${kernel}; ${os.cpus().length} CPUs`,
    );
    log(
      `first step: ${o.apt ? APT_CMD : "python3 local work (100k sha256 lines → /gen.txt)"}; edited file: ctx/${edited.rel} (${edited.size} B)\n`,
    );
    const targets = { cold: 1.0, cached: 0.3, edit: 0.5 };
    const label = { cold: "cold (base only)", cached: "fully cached", edit: "one-file edit" };
    const rows = (["cold", "cached", "edit"] as const).map((k) => {
      const sm = median(times[k].s);
      const bm = median(times[k].b);
      const ratio = sm / bm;
      return [
        label[k],
        sm.toFixed(3),
        bm.toFixed(3),
        ratio.toFixed(2) + "x",
        `<= ${targets[k].toFixed(1)}x`,
        ratio <= targets[k] ? "PASS" : "MISS",
      ];
    });
    log(
      table(["scenario", "strata s", "buildah s", "strata/buildah", "target", "result"], rows, [
        "l",
        "r",
        "r",
        "r",
        "r",
        "l",
      ]),
    );
    log("\nall runs (seconds):");
    log(
      table(
        ["scenario", "strata runs", "buildah runs"],
        (["cold", "cached", "edit"] as const).map((k) => [
          label[k],
          times[k].s.map((x) => x.toFixed(3)).join(" "),
          times[k].b.map((x) => x.toFixed(3)).join(" "),
        ]),
        ["l", "l", "l"],
      ),
    );

    const stepTable = (title: string, build: StrataBuild) => {
      log(`\n${title}: ${build.seconds.toFixed(3)} s wall, step seconds from --json\n`);
      const stepSum = build.steps.reduce((a, x) => a + x.seconds, 0);
      log(
        table(
          ["#", "step", "cached", "seconds"],
          [
            ...build.steps.map((x) => [
              String(x.index),
              x.description.length > 70 ? x.description.slice(0, 67) + "..." : x.description,
              x.cached ? "yes" : "no",
              x.seconds.toFixed(3),
            ]),
            ["", "sum of steps", "", stepSum.toFixed(3)],
            [
              "",
              "outside steps (node start-up, definition load/compile, init, records)",
              "",
              (build.seconds - stepSum).toFixed(3),
            ],
          ],
          ["r", "l", "l", "r"],
        ),
      );
    };
    const mi = medianIndex(times.edit.s);
    stepTable(`Strata per-step timings, one-file edit (median run, #${mi + 1} of ${o.runs})`, editBuilds[mi]!);
    const ci = medianIndex(times.cold.s);
    stepTable(`Strata per-step timings, cold (median run, #${ci + 1} of ${o.runs})`, coldBuilds[ci]!);

    if (o.profile) await cachedBreakdown(b, def);

    if (b.notes.length) {
      log("\nnotes:");
      for (const n of b.notes) log(`- ${n}`);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (!interrupted) {
      progress("cleaning up");
      await b.cleanup(o.keep);
    }
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`build-vs-buildah: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
