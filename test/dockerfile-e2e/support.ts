// Shared helpers for the Dockerfile end-to-end tests: fixture cases (fixtures/dockerfiles/<case>/{Dockerfile, context/,
// expected.json}), building them with Strata (Image.fromDockerfile) and with buildah, and dumping an image's final
// filesystem as a comparable tree.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { promises as fsp, readFileSync, existsSync, readdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Image, LocalStore } from "../../src/index.js";
import type { BuiltImage } from "../../src/engine/build.js";
import { mountOverlay, unmountOverlay } from "../../src/layer/overlay.js";
import { layerDirs, type Store } from "../../src/store/store.js";
import { makeBusyboxTree, REPO_ROOT } from "../support/strata.js";

const run = promisify(execFile);

export const FIXTURES = path.join(REPO_ROOT, "fixtures", "dockerfiles");
export const NEGATIVE_FIXTURES = path.join(REPO_ROOT, "fixtures", "dockerfiles-negative");

/** What a case expects of one path in the final image. */
export interface FileExpect {
  type?: "file" | "dir" | "symlink";
  /** octal string, e.g. "0644" */
  mode?: string;
  uid?: number;
  gid?: number;
  content?: string;
  contains?: string;
  target?: string;
  absent?: boolean;
  /** modification time, whole seconds since the Unix epoch */
  mtime?: number;
}

export interface CaseExpect {
  description?: string;
  buildArgs?: Record<string, string>;
  target?: string;
  secrets?: Record<string, string>;
  /** add a busybox tree at context/rootfs (default true) */
  busybox?: boolean;
  /** archives to create in the context: name → { compress, files: path → content, mtime of every entry (seconds) } */
  archives?: Record<
    string,
    { compress: "none" | "gzip" | "bzip2" | "xz"; files: Record<string, string>; mtime?: number }
  >;
  /** mtimes (seconds) to give context paths (`context/`-relative; a symlink itself) before the build */
  mtimes?: Record<string, number>;
  /** files served over HTTP during the build; the build gets the build arg BASE_URL */
  serve?: Record<string, string>;
  /** the Last-Modified header (an HTTP date) of the served files; none when absent */
  serveLastModified?: string;
  files?: Record<string, FileExpect>;
  /** exact listing of directories: path → sorted child names */
  ls?: Record<string, string[]>;
  /** image config fields (deep-equal per key); `Env` is compared as a set */
  config?: Record<string, unknown>;
  /** top-level config fields (e.g. author) */
  top?: Record<string, unknown>;
  /** compare with `buildah bud` */
  buildah?: boolean;
  /** documented deliberate differences from buildah: paths to leave out, config keys to skip */
  buildahIgnorePaths?: string[];
  buildahIgnoreConfig?: string[];
  /** documented deliberate differences: diff lines starting with one of these are expected */
  buildahAccept?: string[];
  /** why the case differs from buildah, if it does */
  buildahNote?: string;
}

export interface FixtureCase {
  name: string;
  dir: string;
  expect: CaseExpect;
}

export function loadCases(root = FIXTURES): FixtureCase[] {
  return readdirSync(root)
    .filter((n) => existsSync(path.join(root, n, "Dockerfile")))
    .sort()
    .map((name) => ({
      name,
      dir: path.join(root, name),
      expect: JSON.parse(readFileSync(path.join(root, name, "expected.json"), "utf8")) as CaseExpect,
    }));
}

export interface Prepared {
  root: string;
  dockerfile: string;
  context: string;
  buildArgs: Record<string, string>;
  close(): Promise<void>;
}

/** Copies a case to a temp dir (Dockerfile and siblings, context/), adds the busybox tree, archives, HTTP server. */
export async function prepare(c: FixtureCase): Promise<Prepared> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), `strata-df-${c.name}-`));
  for (const n of readdirSync(c.dir)) {
    if (n === "expected.json") continue;
    await fsp.cp(path.join(c.dir, n), path.join(root, n), {
      recursive: true,
      verbatimSymlinks: true,
      preserveTimestamps: true,
    });
  }
  const context = path.join(root, "context");
  await fsp.mkdir(context, { recursive: true });
  if (c.expect.busybox !== false) await makeBusyboxTree(path.join(context, "rootfs"));
  for (const [name, a] of Object.entries(c.expect.archives ?? {})) {
    const src = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-arch-"));
    for (const [p, content] of Object.entries(a.files)) {
      await fsp.mkdir(path.dirname(path.join(src, p)), { recursive: true });
      if (p.endsWith("/")) await fsp.mkdir(path.join(src, p), { recursive: true });
      else await fsp.writeFile(path.join(src, p), content, { mode: p.endsWith(".sh") ? 0o755 : 0o644 });
    }
    const flag = { none: "", gzip: "z", bzip2: "j", xz: "J" }[a.compress];
    await run("tar", [
      `-c${flag}f`,
      path.join(context, name),
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      ...(a.mtime !== undefined ? [`--mtime=@${a.mtime}`] : []),
      "-C",
      src,
      ".",
    ]);
    await fsp.rm(src, { recursive: true, force: true });
  }
  // Whole seconds everywhere (a layer's tar holds whole seconds; buildah rounds to the nearest one where BuildKit and
  // Strata truncate), then the case's own times. Giving an entry its time does not change its directory's.
  await wholeSecondTimes(context);
  for (const [rel, t] of Object.entries(c.expect.mtimes ?? {})) await fsp.lutimes(path.join(context, rel), t, t);
  const buildArgs = { ...(c.expect.buildArgs ?? {}) };
  let server: http.Server | undefined;
  if (c.expect.serve) {
    const files = c.expect.serve;
    server = http.createServer((req, res) => {
      const name = decodeURIComponent((req.url ?? "/").slice(1).split("?")[0]!);
      const body = files[name];
      if (body === undefined) {
        res.writeHead(404).end("not found");
        return;
      }
      const etag = `"${createHash("sha256").update(body).digest("hex").slice(0, 16)}"`;
      if (req.headers["if-none-match"] === etag) {
        res.writeHead(304).end();
        return;
      }
      const lastModified = c.expect.serveLastModified ? { "last-modified": c.expect.serveLastModified } : {};
      res.writeHead(200, { etag, "content-length": Buffer.byteLength(body), ...lastModified }).end(body);
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    buildArgs.BASE_URL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  return {
    root,
    dockerfile: path.join(root, "Dockerfile"),
    context,
    buildArgs,
    async close() {
      if (server) await new Promise<void>((r) => server!.close(() => r()));
      await fsp.rm(root, { recursive: true, force: true });
    },
  };
}

/** Truncates the mtime of everything under `dir` (and `dir`) to whole seconds. */
async function wholeSecondTimes(dir: string): Promise<void> {
  for (const d of await fsp.readdir(dir, { withFileTypes: true })) {
    if (d.isDirectory()) await wholeSecondTimes(path.join(dir, d.name));
    else await wholeSecondTimes1(path.join(dir, d.name));
  }
  await wholeSecondTimes1(dir);
}

async function wholeSecondTimes1(p: string): Promise<void> {
  const t = Math.floor((await fsp.lstat(p)).mtimeMs / 1000);
  await fsp.lutimes(p, t, t);
}

/** A private store for a test file (nothing cached from earlier runs can hide a regression). */
export async function privateStore(): Promise<{ store: LocalStore; home: string; cleanup(): Promise<void> }> {
  const home = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-store-"));
  const store = await LocalStore.open(home);
  return { store, home, cleanup: () => fsp.rm(home, { recursive: true, force: true }) };
}

export async function buildCase(p: Prepared, c: FixtureCase, store: Store, log: string[] = []): Promise<BuiltImage> {
  const img = Image.fromDockerfile(p.dockerfile, {
    contextDir: p.context,
    buildArgs: p.buildArgs,
    ...(c.expect.target ? { target: c.expect.target } : {}),
    // BuildKit's meaning (as docker build --secret): a secret reaches a RUN only through its mount.
    ...(c.expect.secrets ? { secrets: c.expect.secrets, secretsAsEnv: false } : {}),
  });
  return img.build({ store, log: (l) => log.push(l) });
}

/** One node of a filesystem tree. */
export interface TreeEntry {
  type: "file" | "dir" | "symlink" | "other";
  mode: string;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  /** UTF-8 content of small files */
  content?: string;
  target?: string;
  /** modification time, whole seconds */
  mtime: number;
}

export type Tree = Map<string, TreeEntry>;

/** Walks a directory into a Tree keyed by absolute image path ("/" excluded). */
export async function walkTree(dir: string): Promise<Tree> {
  const out: Tree = new Map();
  const visit = async (rel: string) => {
    const names = (await fsp.readdir(path.join(dir, rel))).sort();
    for (const n of names) {
      const r = rel === "" ? n : `${rel}/${n}`;
      const abs = path.join(dir, r);
      const st = await fsp.lstat(abs);
      const mode = (st.mode & 0o7777).toString(8).padStart(4, "0");
      const base = { mode, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isDirectory()) {
        out.set("/" + r, { type: "dir", ...base });
        await visit(r);
      } else if (st.isSymbolicLink()) {
        out.set("/" + r, { type: "symlink", ...base, target: await fsp.readlink(abs) });
      } else if (st.isFile()) {
        const buf = await fsp.readFile(abs);
        const e: TreeEntry = {
          type: "file",
          ...base,
          size: buf.length,
          sha256: createHash("sha256").update(buf).digest("hex"),
        };
        if (buf.length < 4096 && !buf.includes(0)) e.content = buf.toString("utf8");
        out.set("/" + r, e);
      } else {
        out.set("/" + r, { type: "other", ...base });
      }
    }
  };
  await visit("");
  return out;
}

/** The final filesystem of a Strata image (its layers merged by an overlay mount). */
export async function strataTree(store: Store, imageId: string): Promise<Tree> {
  const rec = await store.getImage(imageId as never);
  if (!rec) throw new Error(`no image ${imageId}`);
  const dirs = await layerDirs(store, rec.layers);
  if (dirs.length === 0) return new Map();
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-tree-"));
  const m = await mountOverlay(work, dirs);
  try {
    return await walkTree(m.merged);
  } finally {
    await unmountOverlay(m);
    await fsp.rm(work, { recursive: true, force: true });
  }
}

export async function strataConfig(store: Store, imageId: string): Promise<Record<string, unknown>> {
  const rec = await store.getImage(imageId as never);
  return JSON.parse((await store.readBlob(rec!.configDigest)).toString()) as Record<string, unknown>;
}

/** Checks a tree and config against a case's expectations; returns the failures. */
export function checkExpect(e: CaseExpect, tree: Tree, config: Record<string, unknown>): string[] {
  const errs: string[] = [];
  for (const [p, want] of Object.entries(e.files ?? {})) {
    const got = tree.get(p);
    if (want.absent) {
      if (got) errs.push(`${p}: expected absent, found ${got.type}`);
      continue;
    }
    if (!got) {
      errs.push(`${p}: missing`);
      continue;
    }
    if (want.type && got.type !== want.type) errs.push(`${p}: type ${got.type}, expected ${want.type}`);
    if (want.mode && got.mode !== want.mode.padStart(4, "0"))
      errs.push(`${p}: mode ${got.mode}, expected ${want.mode}`);
    if (want.uid !== undefined && got.uid !== want.uid) errs.push(`${p}: uid ${got.uid}, expected ${want.uid}`);
    if (want.gid !== undefined && got.gid !== want.gid) errs.push(`${p}: gid ${got.gid}, expected ${want.gid}`);
    if (want.content !== undefined && got.content !== want.content)
      errs.push(`${p}: content ${JSON.stringify(got.content)}, expected ${JSON.stringify(want.content)}`);
    if (want.contains !== undefined && !(got.content ?? "").includes(want.contains))
      errs.push(`${p}: content ${JSON.stringify(got.content)} lacks ${JSON.stringify(want.contains)}`);
    if (want.target !== undefined && got.target !== want.target)
      errs.push(`${p}: link target ${got.target}, expected ${want.target}`);
    if (want.mtime !== undefined && got.mtime !== want.mtime)
      errs.push(`${p}: mtime ${got.mtime}, expected ${want.mtime}`);
  }
  for (const [dir, names] of Object.entries(e.ls ?? {})) {
    const prefix = dir === "/" ? "/" : dir + "/";
    const got = [...tree.keys()]
      .filter((k) => k.startsWith(prefix) && !k.slice(prefix.length).includes("/"))
      .map((k) => k.slice(prefix.length))
      .sort();
    if (JSON.stringify(got) !== JSON.stringify([...names].sort()))
      errs.push(`ls ${dir}: ${JSON.stringify(got)}, expected ${JSON.stringify([...names].sort())}`);
  }
  const rc = (config.config ?? {}) as Record<string, unknown>;
  for (const [k, want] of Object.entries(e.config ?? {})) {
    const got = rc[k];
    const norm = (v: unknown) => (k === "Env" && Array.isArray(v) ? [...v].sort() : v);
    if (JSON.stringify(norm(got)) !== JSON.stringify(norm(want)))
      errs.push(`config.${k}: ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  }
  for (const [k, want] of Object.entries(e.top ?? {})) {
    if (JSON.stringify(config[k]) !== JSON.stringify(want))
      errs.push(`${k}: ${JSON.stringify(config[k])}, expected ${JSON.stringify(want)}`);
  }
  return errs;
}

// ---- buildah -------------------------------------------------------------------------------------------------

export interface Buildah {
  root: string;
  args: string[];
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

export function haveBuildah(): boolean {
  return existsSync("/usr/bin/buildah") && existsSync("/usr/sbin/runc");
}

/** A private buildah store (its own --root/--runroot and containers.conf). */
export async function privateBuildah(): Promise<Buildah> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-buildah-"));
  const conf = path.join(root, "containers.conf");
  await fsp.writeFile(conf, "[containers]\ndefault_ulimits = []\n");
  const args = [
    "--root",
    path.join(root, "root"),
    "--runroot",
    path.join(root, "runroot"),
    "--storage-driver",
    "overlay",
  ];
  const env = { CONTAINERS_CONF: conf };
  return {
    root,
    args,
    env,
    async cleanup() {
      await run("buildah", [...args, "rm", "--all"], { env: { ...process.env, ...env } }).catch(() => undefined);
      await run("buildah", [...args, "rmi", "--all", "--force"], { env: { ...process.env, ...env } }).catch(
        () => undefined,
      );
      await run("umount", ["-R", path.join(root, "root", "overlay")]).catch(() => undefined);
      await fsp.rm(root, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

async function buildahRun(b: Buildah, args: string[]): Promise<string> {
  const r = await run("buildah", [...b.args, ...args], { env: { ...process.env, ...b.env }, maxBuffer: 64 << 20 });
  return r.stdout;
}

/** Builds a case with `buildah bud --layers` and returns its tree and OCI config. */
export async function buildahCase(
  b: Buildah,
  p: Prepared,
  c: FixtureCase,
): Promise<{ tree: Tree; config: Record<string, unknown> }> {
  const tag = `localhost/strata-df-${c.name}:latest`;
  const args = [
    "bud",
    "--layers",
    "--format",
    "docker",
    "--runtime",
    "/usr/sbin/runc",
    "--isolation",
    "oci",
    "-f",
    p.dockerfile,
    "-t",
    tag,
  ];
  for (const [k, v] of Object.entries(p.buildArgs)) args.push("--build-arg", `${k}=${v}`);
  if (c.expect.target) args.push("--target", c.expect.target);
  for (const [k, v] of Object.entries(c.expect.secrets ?? {})) {
    const f = path.join(p.root, `.secret-${k}`);
    await fsp.writeFile(f, v);
    args.push("--secret", `id=${k},src=${f}`);
  }
  args.push(p.context);
  await buildahRun(b, args);
  const inspect = JSON.parse(await buildahRun(b, ["inspect", "--type", "image", tag])) as {
    Docker: Record<string, unknown>;
  };
  if (((inspect.Docker.config ?? {}) as { OnBuild?: unknown[] | null }).OnBuild?.length) {
    // `buildah from` would run the ONBUILD triggers: read the image through an OCI layout and umoci instead.
    const layout = path.join(p.root, ".buildah-layout");
    await buildahRun(b, ["push", tag, `oci:${layout}:img`]);
    const bundle = path.join(p.root, ".buildah-bundle");
    await run("umoci", ["unpack", "--image", `${layout}:img`, bundle]);
    return { tree: await walkTree(path.join(bundle, "rootfs")), config: inspect.Docker };
  }
  const ctr = (await buildahRun(b, ["from", tag])).trim().split("\n").pop()!.trim();
  try {
    const mnt = (await buildahRun(b, ["mount", ctr])).trim();
    return { tree: await walkTree(mnt), config: inspect.Docker };
  } finally {
    await buildahRun(b, ["umount", ctr]).catch(() => undefined);
    await buildahRun(b, ["rm", ctr]).catch(() => undefined);
  }
}

/** Drops the differences a case documents as deliberate (lines starting with one of `accept`). */
export function unexpected(diffs: readonly string[], accept: readonly string[] = []): string[] {
  return diffs.filter((d) => !accept.some((a) => d.startsWith(a)));
}

/**
 * What buildah's RUN leaves behind by design and Strata does not: empty mount-point directories (/dev, /proc, /sys,
 * /run) and empty /etc/hosts, /etc/hostname, /etc/resolv.conf it bind-mounts over. Only skipped when empty.
 */
const BUILDAH_MOUNT_POINTS = ["/dev", "/proc", "/sys", "/run"];
const BUILDAH_MOUNT_FILES = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/** JSON with object keys sorted, so key order never counts as a difference. */
export function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === "object" && !Array.isArray(x)
      ? Object.fromEntries(
          Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : x,
  );
}

/**
 * Differences between two trees (paths, types, modes, owners, link targets, contents, and regular files' mtimes).
 * An mtime is compared when buildah's predates `since` (seconds; the builds' start): a file from the context, an
 * archive or a download, whose time both builders keep. What a RUN made has the time it was made in buildah's tree;
 * Strata's `COPY --from` of it reads the time its layer's tar holds (the builder's epoch), so two stores agree.
 */
export function diffTrees(ours: Tree, theirs: Tree, ignore: readonly string[] = [], since = 0): string[] {
  const skip = (p: string) => ignore.some((i) => p === i || p.startsWith(i.endsWith("/") ? i : i + "/"));
  const out: string[] = [];
  for (const [p, t] of theirs) {
    if (skip(p) || ours.has(p)) continue;
    if (BUILDAH_MOUNT_POINTS.includes(p) && t.type === "dir" && ![...theirs.keys()].some((k) => k.startsWith(p + "/")))
      continue;
    if (BUILDAH_MOUNT_FILES.includes(p) && t.type === "file" && t.size === 0) continue;
    out.push(`only in buildah: ${p} (${t.type})`);
  }
  for (const [p, o] of ours) {
    if (skip(p)) continue;
    const t = theirs.get(p);
    if (!t) {
      out.push(`only in strata: ${p} (${o.type})`);
      continue;
    }
    for (const k of ["type", "mode", "uid", "gid", "target", "sha256"] as const) {
      if (o[k] !== t[k]) out.push(`${p}: ${k} strata=${JSON.stringify(o[k])} buildah=${JSON.stringify(t[k])}`);
    }
    if (o.type === "file" && t.type === "file" && o.mtime !== t.mtime && t.mtime < since)
      out.push(`${p}: mtime strata=${o.mtime} buildah=${t.mtime}`);
  }
  return out;
}

const CONFIG_KEYS = [
  "User",
  "Env",
  "Entrypoint",
  "Cmd",
  "WorkingDir",
  "Labels",
  "ExposedPorts",
  "Volumes",
  "StopSignal",
  "Shell",
  "Healthcheck",
  "OnBuild",
];

/** Config fields both builders set, compared (buildah's own label and defaults aside). */
export function diffConfigs(
  ours: Record<string, unknown>,
  theirs: Record<string, unknown>,
  ignore: readonly string[] = [],
): string[] {
  const a = (ours.config ?? {}) as Record<string, unknown>;
  const b = { ...((theirs.config ?? {}) as Record<string, unknown>) };
  const labels = { ...((b.Labels ?? {}) as Record<string, string>) };
  delete labels["io.buildah.version"];
  if (Object.keys(labels).length) b.Labels = labels;
  else delete b.Labels;
  const out: string[] = [];
  for (const k of CONFIG_KEYS) {
    if (ignore.includes(k)) continue;
    const norm = (v: unknown) =>
      v === null ||
      v === "" ||
      (Array.isArray(v) && v.length === 0) ||
      (typeof v === "object" && v !== null && Object.keys(v).length === 0)
        ? undefined
        : v;
    // WorkingDir "/" is what an unset one means at run time: BuildKit (and so Strata) sets it for `FROM scratch`,
    // buildah leaves it unset.
    const wd = (v: unknown) => (k === "WorkingDir" && v === "/" ? undefined : v);
    const x = canonical(norm(wd(a[k])));
    const y = canonical(norm(wd(b[k])));
    if (x !== y) out.push(`config.${k}: strata=${x} buildah=${y}`);
  }
  if (!ignore.includes("author") && (ours.author ?? undefined) !== (theirs.author ?? undefined))
    out.push(`author: strata=${JSON.stringify(ours.author)} buildah=${JSON.stringify(theirs.author)}`);
  return out;
}
