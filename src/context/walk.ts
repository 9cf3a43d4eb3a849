/**
 * Walking and hashing local build-context files.
 *
 * A walk lists every file, directory and symlink under a root (symlinks are never followed),
 * skipping what the ignore patterns exclude, and hashes file contents with bounded concurrency.
 * A persistent {@link StatCache} remembers (path, size, mtime, inode, ctime) -> sha256 so an
 * unchanged file is not read again. Entries carry their mtime (a copy keeps it, as BuildKit's COPY
 * does), but it is never part of a key: keys cover names, types, modes, owners and content only.
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
  /**
   * Modification time in ms since the epoch (`st.mtimeMs`): what a copy gives the entry it writes. Never keyed. Inline
   * content (heredocs) has no source and 0 here: it is written with the layer's epoch.
   */
  mtimeMs: number;
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
// Hashing and fs helpers
//
// Measured on the 2,000-file / 12 MB benchmark tree, in a fresh process (the CLI's case): an
// async lstat or small-file read costs 3-5x its synchronous twin (promise + thread-pool round trip
// + cold JIT), which dominates a warm walk. So each directory's entries are lstat'ed, and files of
// up to SYNC_HASH_MAX bytes read, synchronously; directories are listed asynchronously (the event
// loop gets a turn between directories), and bigger files are read asynchronously in CHUNK-sized
// pieces, at most HASH_CONCURRENCY at a time.

/** Files up to this size are read whole, synchronously. */
const SYNC_HASH_MAX = 64 * 1024;
/** Bigger files are read in chunks of this size. */
const CHUNK = 1 << 20;
/** Concurrent asynchronous hashes of big files (each holds a CHUNK buffer). */
const HASH_CONCURRENCY = 8;

type Limit = <T>(fn: () => Promise<T>) => Promise<T>;

/** A minimal concurrency limiter (a freed slot is handed straight to the next waiter). */
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

interface Hashed {
  digest: string;
  bytes: number;
}

function sha256Hex(data: string | Uint8Array): string {
  return "sha256:" + createHash("sha256").update(data).digest("hex");
}

function hashSmallSync(absPath: string): Hashed {
  const buf = fs.readFileSync(absPath);
  filesHashed++;
  return { digest: sha256Hex(buf), bytes: buf.length };
}

function openAsync(p: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(p, "r", (e, fd) => (e ? reject(e) : resolve(fd))));
}

function readAsync(fd: number, buf: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.read(fd, buf, 0, buf.length, position, (e, n) => (e ? reject(e) : resolve(n))),
  );
}

function closeAsync(fd: number): Promise<void> {
  return new Promise((resolve) => fs.close(fd, () => resolve()));
}

async function hashLargeAsync(absPath: string): Promise<Hashed> {
  const fd = await openAsync(absPath);
  try {
    const h = createHash("sha256");
    const buf = Buffer.allocUnsafe(CHUNK);
    let bytes = 0;
    for (;;) {
      const n = await readAsync(fd, buf, bytes);
      if (n === 0) break;
      h.update(n === buf.length ? buf : buf.subarray(0, n));
      bytes += n;
    }
    filesHashed++;
    return { digest: "sha256:" + h.digest("hex"), bytes };
  } finally {
    await closeAsync(fd);
  }
}

function errCode(e: unknown): string | undefined {
  return isRecord(e) && typeof e.code === "string" ? e.code : undefined;
}

function readError(absPath: string, e: unknown, hint?: string): LocalPathError {
  const code = errCode(e);
  const why = code === "EACCES" || code === "EPERM" ? "permission denied" : e instanceof Error ? e.message : String(e);
  return new LocalPathError(absPath, `cannot read ${absPath}: ${why}${hint ? ` (${hint})` : ""}`, { cause: e });
}

function resolvedNote(given: string, abs: string): string {
  return path.isAbsolute(given)
    ? ""
    : ` (relative paths are resolved against the current directory ${process.cwd()}, giving ${abs})`;
}

interface Digester {
  cache: StatCache | undefined;
  hashLimit: Limit;
  /** wall-clock time no later than any stat of this walk (for the stat cache's race check) */
  startedAt: number;
  restat: (absPath: string) => Stats;
}

/**
 * The digest of a regular file with stat `st`: from the cache when the stat still matches, else
 * read synchronously (small files) and returned directly, or a promise (big files, or a file
 * that changed while it was read, which gets one more look).
 */
function fileDigest(
  absPath: string,
  st: Stats,
  dg: Digester,
  hint: string | undefined,
): { st: Stats; digest: string } | Promise<{ st: Stats; digest: string }> {
  const cached = dg.cache?.get(absPath, st);
  if (cached !== undefined) return { st, digest: cached };
  if (st.size <= SYNC_HASH_MAX) {
    let r: Hashed;
    try {
      r = hashSmallSync(absPath);
    } catch (e) {
      throw readError(absPath, e, hint);
    }
    if (r.bytes === st.size) {
      dg.cache?.set(absPath, st, r.digest, dg.startedAt);
      return { st, digest: r.digest };
    }
  }
  return fileDigestSlow(absPath, st, dg, hint, st.size <= SYNC_HASH_MAX ? 1 : 0);
}

async function fileDigestSlow(
  absPath: string,
  st: Stats,
  dg: Digester,
  hint: string | undefined,
  attempt: number,
): Promise<{ st: Stats; digest: string }> {
  let statTakenAt = dg.startedAt;
  for (; ; attempt++) {
    if (attempt > 0) {
      // The file changed between stat and read: look again once, then give up.
      if (attempt > 1) {
        throw new LocalPathError(
          absPath,
          `${absPath} changed while it was being read; try again once nothing is writing to it`,
        );
      }
      statTakenAt = Date.now();
      try {
        st = dg.restat(absPath);
      } catch (e) {
        throw readError(absPath, e, hint);
      }
      if (!st.isFile()) throw new LocalPathError(absPath, `${absPath} was replaced while it was being read; try again`);
    }
    let r: Hashed;
    try {
      r = await dg.hashLimit(() => hashLargeAsync(absPath));
    } catch (e) {
      throw readError(absPath, e, hint);
    }
    if (r.bytes === st.size) {
      dg.cache?.set(absPath, st, r.digest, statTakenAt);
      return { st, digest: r.digest };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Pruning ignored directories when there are exclusions

/**
 * For an ignored directory, whether some exclusion pattern could re-include a path at or below
 * it. Conservative: says yes whenever unsure (`**`, classes, escapes).
 */
function reincludeChecker(matcher: PatternMatcher): (dirRel: string) => boolean {
  type Seg = string | RegExp | null; // literal, single-segment glob, or "could be anything"
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

function dirEntry(relPath: string, absPath: string, st: Stats): ContextEntry {
  const { uid, gid, mtimeMs } = st;
  return { relPath, type: "dir", mode: st.mode & 0o7777, uid, gid, size: 0, sha256: "", absPath, mtimeMs };
}

function fileEntry(relPath: string, absPath: string, st: Stats, digest: string): ContextEntry {
  return {
    relPath,
    type: "file",
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    sha256: digest,
    absPath,
    mtimeMs: st.mtimeMs,
  };
}

const lstatSync = (p: string): Stats => fs.lstatSync(p);

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
      throw new LocalPathError(root, `context directory ${root} does not exist${resolvedNote(root, absRoot)}`, {
        cause: e,
      });
    }
    throw readError(absRoot, e);
  }
  if (!rootStat.isDirectory()) {
    throw new LocalPathError(
      root,
      `context directory ${root} is not a directory${resolvedNote(root, absRoot)}; use a single-file step for files`,
    );
  }

  const matcher = opts.ignore;
  const canReinclude = matcher?.hasExclusions ? reincludeChecker(matcher) : () => false;
  const dg: Digester = {
    cache: opts.statCache,
    hashLimit: limiter(HASH_CONCURRENCY),
    startedAt: Date.now(),
    restat: lstatSync,
  };
  const out: ContextEntry[] = [];
  const hint = (rel: string): string => `fix its permissions or add ${JSON.stringify(rel)} to the ignore patterns`;

  /**
   * Lists one directory; resolves to whether anything in it was included. `ignoredDir`: an
   * ignored directory entered only to look for re-included paths (read errors there are ignored).
   */
  const visitDir = async (absDir: string, relDir: string, ignoredDir: boolean): Promise<boolean> => {
    let dirents: Dirent[];
    try {
      dirents = await fsp.readdir(absDir, { withFileTypes: true });
    } catch (e) {
      const code = errCode(e);
      if (code === "ENOENT" || code === "ENOTDIR" || ignoredDir) return false; // gone, or not ours to report
      throw readError(absDir, e, hint(relDir));
    }
    const prefixAbs = absDir.endsWith(path.sep) ? absDir : absDir + path.sep;
    const prefixRel = relDir === "" ? "" : relDir + "/";
    const pending: Array<Promise<boolean>> = [];
    let any = false;

    for (const d of dirents) {
      const abs = prefixAbs + d.name;
      const rel = prefixRel + d.name;

      if (matcher?.matches(rel)) {
        if (d.isDirectory() && canReinclude(rel)) pending.push(visitIgnoredDir(abs, rel));
        continue;
      }

      let st: Stats | undefined;
      try {
        st = fs.lstatSync(abs, { throwIfNoEntry: false });
      } catch (e) {
        throw readError(abs, e, hint(rel));
      }
      if (st === undefined) continue; // vanished since readdir

      if (st.isDirectory()) {
        out.push(dirEntry(rel, abs, st));
        any = true;
        pending.push(visitDir(abs, rel, false));
      } else if (st.isFile()) {
        const r = fileDigest(abs, st, dg, hint(rel));
        any = true;
        if (r instanceof Promise) pending.push(r.then((v) => (out.push(fileEntry(rel, abs, v.st, v.digest)), true)));
        else out.push(fileEntry(rel, abs, r.st, r.digest));
      } else if (st.isSymbolicLink()) {
        let target: string;
        try {
          target = fs.readlinkSync(abs);
        } catch (e) {
          const code = errCode(e);
          if (code === "ENOENT" || code === "EINVAL") continue; // gone, or no longer a symlink
          throw readError(abs, e, hint(rel));
        }
        out.push({
          relPath: rel,
          type: "symlink",
          mode: st.mode & 0o7777,
          uid: st.uid,
          gid: st.gid,
          size: 0,
          sha256: sha256Hex(target),
          linkTarget: target,
          absPath: abs,
          mtimeMs: st.mtimeMs,
        });
        any = true;
      }
      // else: socket, FIFO or device, which have no place in a build context
    }
    if (pending.length === 0) return any;
    const results = await Promise.all(pending);
    return any || results.includes(true);
  };

  /** An ignored directory that an exclusion may re-include parts of: listed only if it does. */
  const visitIgnoredDir = async (abs: string, rel: string): Promise<boolean> => {
    let st: Stats | undefined;
    try {
      st = fs.lstatSync(abs, { throwIfNoEntry: false });
    } catch {
      return false;
    }
    if (st === undefined || !st.isDirectory()) return false;
    const any = await visitDir(abs, rel, true);
    if (any) out.push(dirEntry(rel, abs, st));
    return any;
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
    throw new LocalPathError(
      file,
      `${file} is a directory, not a file${resolvedNote(file, abs)}; use a directory step for directories`,
    );
  }
  if (!st.isFile()) {
    throw new LocalPathError(file, `${file} is not a regular file${resolvedNote(file, abs)}`);
  }
  const dg: Digester = { cache: opts.statCache, hashLimit: limiter(1), startedAt, restat: (p) => fs.statSync(p) };
  const r = await fileDigest(abs, st, dg, undefined);
  return { ...fileEntry(path.basename(abs), abs, r.st, r.digest) };
}
