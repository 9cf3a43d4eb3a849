/**
 * Walking and hashing local build-context files.
 *
 * A walk lists every file, directory and symlink under a root (symlinks are never followed),
 * skipping what the ignore patterns exclude, and hashes file contents with bounded concurrency.
 * A persistent {@link StatCache} remembers (path, size, mtime, inode, ctime) -> sha256 so an
 * unchanged file is not read again; mtime is only ever a cache-validity check and never part of
 * the returned entries.
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { promises as fsp, type Dirent, type Stats } from "node:fs";
import * as path from "node:path";
import { LocalPathError } from "../errors.js";
import type { PatternMatcher } from "../ignore/pattern-matcher.js";

export interface ContextEntry {
  /** "/"-separated, relative to the root; the result of a walk is sorted bytewise on it */
  relPath: string;
  type: "file" | "dir" | "symlink";
  /** permission bits including setuid/setgid/sticky: st.mode & 0o7777 */
  mode: number;
  uid: number;
  gid: number;
  /** files only, else 0 */
  size: number;
  /** "sha256:<hex>" of the content for files, of the link target string for symlinks, "" for dirs */
  sha256: string;
  linkTarget?: string;
  absPath: string;
}

export interface WalkOptions {
  ignore?: PatternMatcher;
  statCache?: StatCache;
}

/** The stat fields a cached digest is valid for (an fs.Stats satisfies this). */
export interface StatKey {
  size: number;
  mtimeMs: number;
  ino: number;
  ctimeMs: number;
}

/** Files are read in chunks of at most this size. */
const CHUNK = 1 << 20;
/** Concurrent lstat/readdir/readlink calls; libuv has 4 threads by default, this just keeps them fed. */
const IO_CONCURRENCY = 64;
/** Concurrent file hashes (each holds a buffer of up to CHUNK bytes). */
const HASH_CONCURRENCY = 16;

let filesHashed = 0;

/** How many files this process has read and hashed (stat-cache hits are not counted). */
export function hashedFileCount(): number {
  return filesHashed;
}

// ---------------------------------------------------------------------------------------------
// Stat cache

type Row = [size: number, mtimeMs: number, ino: number, ctimeMs: number, sha256: string];

const CACHE_VERSION = 1;
const SHA_RE = /^sha256:[0-9a-f]{64}$/;

/**
 * How long after a file's last change (mtime or ctime) its digest may be cached. A change that
 * lands in the same timestamp tick as the one we saw would leave the stat unchanged, so digests of
 * files changed within one tick of the walk are not kept ("racily clean", as git calls it).
 * Filesystems with whole-second timestamps get a 2 s window; fine-grained ones 50 ms, which
 * covers the kernel's coarse (jiffy) timestamp clock with a wide margin.
 */
function racyWindowMs(st: StatKey): number {
  return st.mtimeMs % 1000 === 0 && st.ctimeMs % 1000 === 0 ? 2000 : 50;
}

/**
 * Persistent stat cache: (absPath, size, mtimeMs, ino, ctimeMs) -> sha256, so unchanged files are
 * not rehashed. Loading tolerates a missing or corrupt file (it starts empty); saving is atomic.
 */
export class StatCache {
  /** lookups answered from the cache / not, since this instance was created */
  hits = 0;
  misses = 0;
  readonly #file: string | undefined;
  readonly #entries: Map<string, Row>;
  readonly #touched = new Set<string>();
  readonly #maxEntries: number;
  #dirty = false;

  private constructor(file: string | undefined, entries: Map<string, Row>, maxEntries: number) {
    this.#file = file;
    this.#entries = entries;
    this.#maxEntries = maxEntries;
  }

  /** Loads the cache stored in `file`; a missing, unreadable or corrupt file gives an empty cache. */
  static async load(file: string, opts: { maxEntries?: number } = {}): Promise<StatCache> {
    const abs = path.resolve(file);
    const entries = new Map<string, Row>();
    try {
      const parsed: unknown = JSON.parse(await fsp.readFile(abs, "utf8"));
      if (isRecord(parsed) && parsed.version === CACHE_VERSION && isRecord(parsed.entries)) {
        for (const [key, row] of Object.entries(parsed.entries)) {
          if (isRow(row)) entries.set(key, row);
        }
      }
    } catch {
      // missing or corrupt: start empty, the next save replaces it
    }
    return new StatCache(abs, entries, opts.maxEntries ?? 200_000);
  }

  /** A cache that lives only in memory (save() is a no-op). */
  static inMemory(): StatCache {
    return new StatCache(undefined, new Map(), Number.POSITIVE_INFINITY);
  }

  /** The file this cache is loaded from and saved to, if any. */
  get file(): string | undefined {
    return this.#file;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The cached digest of `absPath` if its stat still matches, else undefined. */
  get(absPath: string, st: StatKey): string | undefined {
    const row = this.#entries.get(absPath);
    if (row && row[0] === st.size && row[1] === st.mtimeMs && row[2] === st.ino && row[3] === st.ctimeMs) {
      this.hits++;
      this.#touched.add(absPath);
      return row[4];
    }
    this.misses++;
    return undefined;
  }

  /**
   * Records the digest of `absPath` for stat `st`. `statTakenAtMs` is a wall-clock time no later
   * than when `st` was read; if the file changed too shortly before it, nothing is cached.
   */
  set(absPath: string, st: StatKey, sha256: string, statTakenAtMs: number = Date.now()): void {
    if (statTakenAtMs - Math.max(st.mtimeMs, st.ctimeMs) < racyWindowMs(st)) {
      if (this.#entries.delete(absPath)) this.#dirty = true;
      return;
    }
    this.#entries.set(absPath, [st.size, st.mtimeMs, st.ino, st.ctimeMs, sha256]);
    this.#touched.add(absPath);
    this.#dirty = true;
  }

  /** Writes the cache back to its file (temp file + rename), if anything changed. */
  async save(): Promise<void> {
    const file = this.#file;
    if (file === undefined || !this.#dirty) return;
    if (this.#entries.size > this.#maxEntries) {
      for (const key of this.#entries.keys()) if (!this.#touched.has(key)) this.#entries.delete(key);
    }
    const entries: Record<string, Row> = {};
    for (const [key, row] of this.#entries) entries[key] = row;
    const text = JSON.stringify({ version: CACHE_VERSION, entries });
    await fsp.mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
    try {
      await fsp.writeFile(tmp, text);
      await fsp.rename(tmp, file);
    } catch (e) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
    this.#dirty = false;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isRow(v: unknown): v is Row {
  return (
    Array.isArray(v) &&
    v.length === 5 &&
    typeof v[0] === "number" &&
    typeof v[1] === "number" &&
    typeof v[2] === "number" &&
    typeof v[3] === "number" &&
    typeof v[4] === "string" &&
    SHA_RE.test(v[4])
  );
}

// ---------------------------------------------------------------------------------------------
// Hashing and small fs helpers
//
// The callback fs API is used for per-entry calls: on small files fs.promises costs 2-3x more per
// call, which dominates a walk of a few thousand files.

type Limit = <T>(fn: () => Promise<T>) => Promise<T>;

/** A minimal concurrency limiter (a slot is handed straight to the next waiter). */
function limiter(concurrency: number): Limit {
  let active = 0;
  let waiting: Array<() => void> = [];
  let head = 0;
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active < concurrency) active++;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await fn();
    } finally {
      if (head < waiting.length) {
        const next = waiting[head++]!;
        if (head > 1024 && head * 2 > waiting.length) {
          waiting = waiting.slice(head);
          head = 0;
        }
        next();
      } else {
        active--;
      }
    }
  };
}

function lstatCb(p: string): Promise<Stats> {
  return new Promise((resolve, reject) => fs.lstat(p, (e, st) => (e ? reject(e) : resolve(st))));
}

function statCb(p: string): Promise<Stats> {
  return new Promise((resolve, reject) => fs.stat(p, (e, st) => (e ? reject(e) : resolve(st))));
}

function readlinkCb(p: string): Promise<string> {
  return new Promise((resolve, reject) => fs.readlink(p, (e, t) => (e ? reject(e) : resolve(t))));
}

function openCb(p: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(p, "r", (e, fd) => (e ? reject(e) : resolve(fd))));
}

function readCb(fd: number, buf: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.read(fd, buf, 0, buf.length, position, (e, n) => (e ? reject(e) : resolve(n))),
  );
}

function closeCb(fd: number): Promise<void> {
  return new Promise((resolve) => fs.close(fd, () => resolve()));
}

/** sha256 of a file's content, and how many bytes that was. `expectedSize` sizes the buffer. */
async function hashFile(absPath: string, expectedSize: number): Promise<{ digest: string; bytes: number }> {
  const fd = await openCb(absPath);
  try {
    const h = createHash("sha256");
    // One byte more than expected, so a single read both gets the content and shows EOF.
    const buf = Buffer.allocUnsafe(Math.min(expectedSize + 1, CHUNK));
    let bytes = 0;
    for (;;) {
      const n = await readCb(fd, buf, bytes);
      if (n === 0) break;
      h.update(n === buf.length ? buf : buf.subarray(0, n));
      bytes += n;
      // A short read that reaches the stat size is the end of a regular file.
      if (n < buf.length && bytes === expectedSize) break;
    }
    filesHashed++;
    return { digest: "sha256:" + h.digest("hex"), bytes };
  } finally {
    await closeCb(fd);
  }
}

function errCode(e: unknown): string | undefined {
  return isRecord(e) && typeof e.code === "string" ? e.code : undefined;
}

function readError(absPath: string, e: unknown, hint?: string): LocalPathError {
  const code = errCode(e);
  const why =
    code === "EACCES" || code === "EPERM"
      ? "permission denied"
      : e instanceof Error
        ? e.message
        : String(e);
  return new LocalPathError(absPath, `cannot read ${absPath}: ${why}${hint ? ` (${hint})` : ""}`, { cause: e });
}

function resolvedNote(given: string, abs: string): string {
  return path.isAbsolute(given) ? "" : ` (relative paths are resolved against the current directory ${process.cwd()}, giving ${abs})`;
}

/** The digest of a regular file, from the cache when its stat still matches. */
async function fileDigest(
  absPath: string,
  st: Stats,
  cache: StatCache | undefined,
  hashLimit: Limit,
  statTakenAtMs: number,
  restat: (absPath: string) => Promise<Stats>,
  hint?: string,
): Promise<{ st: Stats; digest: string }> {
  const cached = cache?.get(absPath, st);
  if (cached !== undefined) return { st, digest: cached };
  for (let attempt = 0; ; attempt++) {
    let result: { digest: string; bytes: number };
    try {
      result = await hashLimit(() => hashFile(absPath, st.size));
    } catch (e) {
      throw readError(absPath, e, hint);
    }
    if (result.bytes === st.size) {
      cache?.set(absPath, st, result.digest, statTakenAtMs);
      return { st, digest: result.digest };
    }
    // The file changed between stat and read: look again once, then give up.
    if (attempt >= 1) {
      throw new LocalPathError(absPath, `${absPath} changed while it was being read (size ${st.size}, read ${result.bytes} bytes); try again once it is no longer being written`);
    }
    statTakenAtMs = Date.now();
    try {
      st = await restat(absPath);
    } catch (e) {
      throw readError(absPath, e, hint);
    }
    if (!st.isFile()) throw new LocalPathError(absPath, `${absPath} was replaced while it was being read; try again`);
  }
}

// ---------------------------------------------------------------------------------------------
// Pruning ignored directories when there are exclusions

/**
 * For an ignored directory, whether some exclusion pattern could re-include a path at or below
 * it. Conservative: says yes whenever unsure (`**`, classes, escapes).
 */
function reincludeChecker(matcher: PatternMatcher): (dirRel: string) => boolean {
  type Seg = string | RegExp | null; // literal, single-segment glob, or "anything below"
  const exclusions: Seg[][] = [];
  for (const p of matcher.patterns) {
    if (!p.startsWith("!")) continue;
    const body = p.slice(1);
    if (body.includes("[") || body.includes("\\")) {
      exclusions.push([null]);
      continue;
    }
    exclusions.push(
      body.split("/").map((s): Seg => {
        if (s.includes("**")) return null;
        if (!/[*?]/.test(s)) return s;
        const src = Array.from(s, (ch) =>
          ch === "*" ? "[^/]*" : ch === "?" ? "[^/]" : `\\u{${ch.codePointAt(0)!.toString(16)}}`,
        ).join("");
        return new RegExp(`^${src}$`, "u");
      }),
    );
  }
  return (dirRel) => {
    const dirSegs = dirRel.split("/");
    outer: for (const segs of exclusions) {
      const n = Math.min(segs.length, dirSegs.length);
      for (let i = 0; i < n; i++) {
        const s = segs[i]!;
        if (s === null) return true;
        if (typeof s === "string" ? s !== dirSegs[i] : !s.test(dirSegs[i]!)) continue outer;
      }
      return true;
    }
    return false;
  };
}

// ---------------------------------------------------------------------------------------------
// Walking

function entryFor(relPath: string, absPath: string, st: Stats): ContextEntry {
  return {
    relPath,
    type: "dir",
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: 0,
    sha256: "",
    absPath,
  };
}

/**
 * Walks a directory (not following symlinks), skipping ignored paths. Ignored directories are
 * pruned unless an exclusion (`!pattern`) could re-include something inside them; such a
 * directory is listed only if something below it is. Directories are included (so empty ones
 * and their modes are known); the root itself is not. Sockets, FIFOs and devices are skipped.
 */
export async function walkContext(root: string, opts: WalkOptions = {}): Promise<ContextEntry[]> {
  const absRoot = path.resolve(root);
  let rootStat: Stats;
  try {
    rootStat = await fsp.stat(absRoot);
  } catch (e) {
    const code = errCode(e);
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new LocalPathError(root, `context directory ${root} does not exist${resolvedNote(root, absRoot)}`, { cause: e });
    }
    throw readError(absRoot, e);
  }
  if (!rootStat.isDirectory()) {
    throw new LocalPathError(root, `context directory ${root} is not a directory${resolvedNote(root, absRoot)}; use a single-file step for files`);
  }

  const matcher = opts.ignore;
  const cache = opts.statCache;
  const canReinclude = matcher?.hasExclusions ? reincludeChecker(matcher) : () => false;
  const startedAt = Date.now();
  const io = limiter(IO_CONCURRENCY);
  const hashLimit = limiter(HASH_CONCURRENCY);
  const out: ContextEntry[] = [];
  const hint = (rel: string): string => `fix its permissions or add ${JSON.stringify(rel)} to the ignore patterns`;

  const lstatOrNull = async (abs: string, rel: string): Promise<Stats | null> => {
    try {
      return await io(() => lstatCb(abs));
    } catch (e) {
      if (errCode(e) === "ENOENT") return null; // vanished since readdir
      throw readError(abs, e, hint(rel));
    }
  };

  /** `ignoredDir`: an ignored directory entered only to look for re-included paths. */
  const visitDir = async (absDir: string, relDir: string, ignoredDir: boolean): Promise<boolean> => {
    let dirents: Dirent[];
    try {
      dirents = await io(() => fsp.readdir(absDir, { withFileTypes: true }));
    } catch (e) {
      const code = errCode(e);
      // Gone since we listed it, or an ignored directory we only looked into for re-included paths.
      if (code === "ENOENT" || code === "ENOTDIR" || ignoredDir) return false;
      throw readError(absDir, e, hint(relDir));
    }
    const prefixAbs = absDir.endsWith(path.sep) ? absDir : absDir + path.sep;
    const prefixRel = relDir === "" ? "" : relDir + "/";
    const results = await Promise.all(
      dirents.map((d) => visit(prefixAbs + d.name, prefixRel + d.name, d)),
    );
    return results.includes(true);
  };

  const visit = async (abs: string, rel: string, d: Dirent): Promise<boolean> => {
    if (matcher !== undefined && matcher.matches(rel)) {
      if (!d.isDirectory() || !canReinclude(rel)) return false;
      const st = await lstatOrNull(abs, rel).catch(() => null);
      if (st === null || !st.isDirectory()) return false;
      const any = await visitDir(abs, rel, true);
      if (any) out.push(entryFor(rel, abs, st));
      return any;
    }
    const st = await lstatOrNull(abs, rel);
    if (st === null) return false;
    if (st.isDirectory()) {
      out.push(entryFor(rel, abs, st));
      await visitDir(abs, rel, false);
      return true;
    }
    if (st.isSymbolicLink()) {
      let target: string;
      try {
        target = await io(() => readlinkCb(abs));
      } catch (e) {
        if (errCode(e) === "ENOENT" || errCode(e) === "EINVAL") return false; // gone or replaced
        throw readError(abs, e, hint(rel));
      }
      out.push({
        relPath: rel,
        type: "symlink",
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        size: 0,
        sha256: "sha256:" + createHash("sha256").update(target).digest("hex"),
        linkTarget: target,
        absPath: abs,
      });
      return true;
    }
    if (st.isFile()) {
      const r = await fileDigest(abs, st, cache, hashLimit, startedAt, lstatCb, hint(rel));
      out.push({
        relPath: rel,
        type: "file",
        mode: r.st.mode & 0o7777,
        uid: r.st.uid,
        gid: r.st.gid,
        size: r.st.size,
        sha256: r.digest,
        absPath: abs,
      });
      return true;
    }
    return false; // socket, FIFO, device: not part of a build context
  };

  await visitDir(absRoot, "", false);

  const keyed = out.map((e) => ({ key: Buffer.from(e.relPath, "utf8"), e }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  return keyed.map((k) => k.e);
}

/**
 * A single file (for addLocalFile): its entry with relPath = basename. A symlink given here is
 * followed (the file it points to is what gets added).
 */
export async function statContextFile(file: string, opts: { statCache?: StatCache } = {}): Promise<ContextEntry> {
  const abs = path.resolve(file);
  const startedAt = Date.now();
  let st: Stats;
  try {
    st = await fsp.stat(abs);
  } catch (e) {
    const code = errCode(e);
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new LocalPathError(file, `file ${file} does not exist${resolvedNote(file, abs)}`, { cause: e });
    }
    throw readError(abs, e);
  }
  if (st.isDirectory()) {
    throw new LocalPathError(file, `${file} is a directory, not a file${resolvedNote(file, abs)}; use a directory step for directories`);
  }
  if (!st.isFile()) {
    throw new LocalPathError(file, `${file} is not a regular file${resolvedNote(file, abs)}`);
  }
  const r = await fileDigest(abs, st, opts.statCache, limiter(1), startedAt, statCb);
  return {
    relPath: path.basename(abs),
    type: "file",
    mode: r.st.mode & 0o7777,
    uid: r.st.uid,
    gid: r.st.gid,
    size: r.st.size,
    sha256: r.digest,
    absPath: abs,
  };
}
