/**
 * Where COPY writes, addressed by image paths (`/app/x`). One copier (SDK `COPY` and Dockerfile `COPY`/`ADD` alike)
 * works against either target:
 *  - `MountedTarget`: a mounted root (an overlay's merged dir): reads and writes go to the same tree.
 *  - `UpperTarget`: a fresh overlay upper dir over the parent's read-only layer dirs, without mounting anything. Reads
 *    see the merged view by overlayfs's rules (a whiteout hides, an opaque directory stops the layers below it, a
 *    non-directory hides everything under its path); writes go to the upper dir, copying parent directories up with
 *    their metadata as overlayfs does; files are hard-linked from the store's content pool (`<store>/files`), so an
 *    unchanged file costs one link instead of a copy. The resulting upper dir is what the same COPY through a mount
 *    would have left.
 * Callers resolve symlinks with `resolveInImage` before writing, so nothing is ever written through a symlink.
 * Written entries get mtimes by BuildKit's rules (`./copy-times.ts`): a copied entry keeps its source's, what the copy
 * makes without a source gets the layer's epoch; `finishTimes()` gives directories theirs once the copy is done.
 */
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  type Stats,
} from "node:fs";
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { ContextEntry } from "../context/walk.js";
import { LocalPathError, StrataError } from "../errors.js";
import { writeFileAtomic } from "../util/fs.js";
import { resolveInRoot } from "../util/resolve-path.js";
import { applyDirTimes, DirTimes, mtimeUs, setTimeUs } from "./copy-times.js";

/** A change an `UpperTarget` cannot express without a mount (the caller copies through an overlay mount instead). */
export class NeedsMountError extends StrataError {
  constructor(what: string) {
    super(`${what} needs an overlay mount`);
    this.name = "NeedsMountError";
  }
}

/** Read access to an image filesystem by image path. */
export interface ImageReader {
  /** The entry at `p` (absolute image path whose parents are already resolved), not following a final symlink. */
  lstat(p: string): Stats | undefined;
  readlink(p: string): string;
  /** The bytes of the file at `p` (resolved first, a final symlink followed inside the image), or undefined. */
  readFile(p: string): Buffer | undefined;
}

export interface CopyTarget extends ImageReader {
  /** Creates the directory `p` (its parent exists). */
  mkdir(p: string, mode: number, uid: number, gid: number): void;
  /** Sets mode and owner of the existing entry `p` (not following a symlink). */
  setMeta(p: string, mode: number, uid: number, gid: number): void;
  /** Removes whatever is at `p` (a directory with its contents). */
  remove(p: string): void;
  symlink(p: string, target: string, uid: number, gid: number): void;
  writeFile(p: string, data: string | Uint8Array, mode: number, uid: number, gid: number): void;
  /**
   * Writes a context entry's file at `p` with the entry's mtime, checking it is still the content its key was computed
   * from.
   */
  copyFile(p: string, e: ContextEntry, mode: number, uid: number, gid: number): void;
  /**
   * Gives the entry at `p` the mtime `mtimeMs` (a source's): a file or symlink at once, a directory when the copy
   * finishes (entries added to it meanwhile would change it). Entries made by `mkdir`, `symlink` and `writeFile`
   * without one get the layer's epoch.
   */
  setMtime(p: string, mtimeMs: number): void;
  /** Gives every directory the copy made or changed its mtime: the one set for it, else the layer's epoch. */
  finishTimes(): void;
  /** A host directory to extract an archive into, when the target can offer one (a mounted root). */
  hostDir?(p: string): string;
}

/** Where a mounted target's writes land, for `finishTimes`. */
export interface MountedTimes {
  /** The overlay upper dir of the mounted root. */
  upper: string;
  /** The mtime (ms) of entries made without a source: the builder's epoch. */
  epochMs: number;
}

/**
 * Resolves `unsafePath` inside the image: `..` never leaves the root, symlinks in the parents are followed (an
 * absolute target restarts at the image root), the last component is followed only with `followLast`.
 */
export function resolveInImage(r: ImageReader, unsafePath: string, followLast = false): string {
  const linkAt = (parts: readonly string[]): string | undefined => {
    const p = "/" + parts.join("/");
    return r.lstat(p)?.isSymbolicLink() ? r.readlink(p) : undefined;
  };
  const tooMany = () => new StrataError(`too many levels of symbolic links resolving ${unsafePath} in the image`);
  return "/" + resolveInRoot(unsafePath, followLast, linkAt, tooMany).join("/");
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

function fileChanged(e: ContextEntry): LocalPathError {
  return new LocalPathError(e.absPath, `${e.absPath} changed while the build was reading it; run the build again`);
}

/** A mounted root filesystem (an overlay's merged dir, or any plain tree). */
export class MountedTarget implements CopyTarget {
  readonly #dirTimes = new DirTimes();
  /** `times`: needed to write (mtimes); a target that only resolves paths goes without. */
  constructor(
    readonly root: string,
    readonly times?: MountedTimes,
  ) {}

  #created(h: string): void {
    if (this.times) setTimeUs(h, mtimeUs(this.times.epochMs));
  }

  #host(p: string): string {
    return path.join(this.root, p);
  }
  lstat(p: string): Stats | undefined {
    return lstatOrUndefined(this.#host(p));
  }
  readlink(p: string): string {
    return readlinkSync(this.#host(p));
  }
  readFile(p: string): Buffer | undefined {
    try {
      return readFileSync(this.#host(resolveInImage(this, p, true)));
    } catch {
      return undefined;
    }
  }
  mkdir(p: string, mode: number, uid: number, gid: number): void {
    mkdirSync(this.#host(p), { mode: 0o700 });
    this.setMeta(p, mode, uid, gid);
  }
  setMeta(p: string, mode: number, uid: number, gid: number): void {
    const h = this.#host(p);
    lchownSync(h, uid, gid);
    chmodSync(h, mode);
  }
  remove(p: string): void {
    if (this.lstat(p)?.isDirectory()) this.#dirTimes.forget(p);
    rmSync(this.#host(p), { recursive: true, force: true });
  }
  symlink(p: string, target: string, uid: number, gid: number): void {
    symlinkSync(target, this.#host(p));
    lchownSync(this.#host(p), uid, gid);
    this.#created(this.#host(p));
  }
  writeFile(p: string, data: string | Uint8Array, mode: number, uid: number, gid: number): void {
    writeFileSync(this.#host(p), data, { mode: 0o600 });
    this.setMeta(p, mode, uid, gid);
    this.#created(this.#host(p));
  }
  copyFile(p: string, e: ContextEntry, mode: number, uid: number, gid: number): void {
    const h = this.#host(p);
    copyFileSync(e.absPath, h);
    // The content must be what was hashed into the key; a file edited mid-build is an error, not a silent mismatch.
    if (lstatSync(h).size !== e.size) throw fileChanged(e);
    this.setMeta(p, mode, uid, gid);
    setTimeUs(h, mtimeUs(e.mtimeMs));
  }
  setMtime(p: string, mtimeMs: number): void {
    const h = this.#host(p);
    if (lstatSync(h).isDirectory()) this.#dirTimes.set(p, mtimeMs);
    else setTimeUs(h, mtimeUs(mtimeMs));
  }
  finishTimes(): void {
    if (!this.times) throw new StrataError("internal: a MountedTarget made without its upper dir cannot finish times");
    applyDirTimes(this.times.upper, this.#dirTimes, mtimeUs(this.times.epochMs), this.root);
  }
  hostDir(p: string): string {
    return this.#host(p);
  }
}

export interface UpperTargetOptions {
  /**
   * The content pool: `<sha256 hex>-<mode octal>[-<uid>-<gid>]-t<mtime µs>`, one inode per content, mode, owner and
   * mtime (hard links share their inode's mtime, so files whose mtimes differ cannot share one).
   */
  poolDir: string;
  /** The mtime (ms) of entries made without a source: the builder's epoch. */
  epochMs: number;
  /** Sources whose ctime is older than this (ms) are trusted to still hold the hashed content; newer ones are re-hashed. */
  hashedAfterMs: number;
  /** The opaque directories of each lower (image paths), in `lowersTopFirst` order. */
  opaque: readonly ReadonlySet<string>[];
}

/** A fresh upper dir over read-only lower layer dirs (see the module comment). */
export class UpperTarget implements CopyTarget {
  /** Lower layers contributing to each directory (indices into lowers, top first); [] when not a directory there. */
  readonly #dirLayers = new Map<string, number[]>();
  /** Paths whose lower entries (and everything under them) are hidden: removed, or replaced by a non-directory. */
  readonly #masked = new Set<string>();
  /** Pool files linked into this layer: a second name for one inode would become a tar hardlink, so it gets a copy. */
  readonly #linked = new Set<string>();
  /** Directories of the upper dir this target made or copied up (image paths), for `finishTimes`. */
  readonly #dirs = new Set<string>();
  readonly #dirTimes = new DirTimes();

  constructor(
    readonly upper: string,
    readonly lowersTopFirst: readonly string[],
    readonly opts: UpperTargetOptions,
  ) {
    mkdirSync(upper, { recursive: true });
    mkdirSync(opts.poolDir, { recursive: true });
  }

  #up(p: string): string {
    return path.join(this.upper, p);
  }

  #isMasked(p: string): boolean {
    for (let cur = p; ; cur = path.posix.dirname(cur)) {
      if (this.#masked.has(cur)) return true;
      if (cur === "/") return false;
    }
  }

  #lowerDirLayers(dir: string): number[] {
    const cached = this.#dirLayers.get(dir);
    if (cached) return cached;
    let out: number[];
    if (dir === "/") out = this.lowersTopFirst.map((_, i) => i);
    else {
      out = [];
      for (const i of this.#lowerDirLayers(path.posix.dirname(dir))) {
        const st = lstatOrUndefined(path.join(this.lowersTopFirst[i]!, dir));
        if (!st) continue;
        if (isWhiteout(st) || !st.isDirectory()) break;
        out.push(i);
        if (this.opts.opaque[i]!.has(dir)) break;
      }
    }
    this.#dirLayers.set(dir, out);
    return out;
  }

  /** The topmost lower entry at `p` by overlay rules, ignoring what this target wrote or masked. */
  #lowerEntry(p: string): { st: Stats; layer: number } | undefined {
    if (p === "/") return undefined;
    for (const i of this.#lowerDirLayers(path.posix.dirname(p))) {
      const st = lstatOrUndefined(path.join(this.lowersTopFirst[i]!, p));
      if (!st) continue;
      return isWhiteout(st) ? undefined : { st, layer: i };
    }
    return undefined;
  }

  lstat(p: string): Stats | undefined {
    const up = lstatOrUndefined(this.#up(p));
    if (up) return up;
    if (this.#isMasked(p)) return undefined;
    return this.#lowerEntry(p)?.st;
  }

  readlink(p: string): string {
    if (lstatOrUndefined(this.#up(p))) return readlinkSync(this.#up(p));
    const e = this.#lowerEntry(p);
    if (!e) throw new StrataError(`${p} is not in the image`);
    return readlinkSync(path.join(this.lowersTopFirst[e.layer]!, p));
  }

  readFile(p: string): Buffer | undefined {
    try {
      const r = resolveInImage(this, p, true);
      if (lstatOrUndefined(this.#up(r))) return readFileSync(this.#up(r));
      if (this.#isMasked(r)) return undefined;
      const e = this.#lowerEntry(r);
      return e?.st.isFile() ? readFileSync(path.join(this.lowersTopFirst[e.layer]!, r)) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Copies up the parents of `p` (directories of the merged view) that the upper dir does not have yet. */
  #copyUpParents(p: string): void {
    const parts = p.split("/").filter(Boolean);
    let cur = "";
    for (const part of parts.slice(0, -1)) {
      cur += "/" + part;
      this.#copyUp(cur);
    }
  }

  #copyUp(dir: string): void {
    const h = this.#up(dir);
    if (lstatOrUndefined(h)) return;
    const st = this.lstat(dir);
    if (!st?.isDirectory())
      throw new StrataError(`internal: ${dir} is not a directory of the image (resolve paths before writing)`);
    mkdirSync(h);
    chmodSync(h, st.mode & 0o7777);
    lchownSync(h, st.uid, st.gid);
    utimesSync(h, st.atime, st.mtime);
    this.#dirs.add(dir);
  }

  /** Prepares `p` for a new entry: parents copied up, an upper entry removed; lower ones stay hidden by the new one. */
  #prepare(p: string): string {
    this.#copyUpParents(p);
    const h = this.#up(p);
    const st = lstatOrUndefined(h);
    if (st?.isDirectory()) this.#dirTimes.forget(p);
    if (st) rmSync(h, { recursive: true, force: true });
    return h;
  }

  mkdir(p: string, mode: number, uid: number, gid: number): void {
    if (this.#isMasked(p) && this.#lowerEntry(p)?.st.isDirectory()) {
      // Replacing a lower directory by a new empty one would need an opaque marker; COPY never asks for it.
      throw new NeedsMountError(`recreating the directory ${p} of a lower layer`);
    }
    const h = this.#prepare(p);
    mkdirSync(h, { mode: 0o700 });
    lchownSync(h, uid, gid);
    chmodSync(h, mode);
    this.#dirs.add(p);
  }

  setMeta(p: string, mode: number, uid: number, gid: number): void {
    const st = this.lstat(p);
    if (!st) throw new StrataError(`internal: ${p} is not in the image`);
    if (st.isDirectory()) {
      // A lower directory deep in the tree (`COPY /python/. /usr/local` onto a base's /usr/local/bin) needs its parents.
      this.#copyUpParents(p);
      this.#copyUp(p);
    } else if (!lstatOrUndefined(this.#up(p)))
      throw new NeedsMountError(`changing the metadata of ${p} of a lower layer`);
    lchownSync(this.#up(p), uid, gid);
    if (!st.isSymbolicLink()) chmodSync(this.#up(p), mode);
  }

  remove(p: string): void {
    this.#copyUpParents(p);
    if (lstatOrUndefined(this.#up(p))?.isDirectory()) this.#dirTimes.forget(p);
    rmSync(this.#up(p), { recursive: true, force: true });
    this.#masked.add(p);
  }

  #placed(p: string, isDir: boolean): void {
    // A new non-directory hides every lower entry under its path.
    if (!isDir) this.#masked.add(p);
  }

  symlink(p: string, target: string, uid: number, gid: number): void {
    const h = this.#prepare(p);
    symlinkSync(target, h);
    lchownSync(h, uid, gid);
    setTimeUs(h, mtimeUs(this.opts.epochMs));
    this.#placed(p, false);
  }

  writeFile(p: string, data: string | Uint8Array, mode: number, uid: number, gid: number): void {
    const h = this.#prepare(p);
    writeFileSync(h, data, { mode: 0o600 });
    lchownSync(h, uid, gid);
    chmodSync(h, mode);
    setTimeUs(h, mtimeUs(this.opts.epochMs));
    this.#placed(p, false);
  }

  copyFile(p: string, e: ContextEntry, mode: number, uid: number, gid: number): void {
    const h = this.#prepare(p);
    const us = mtimeUs(e.mtimeMs);
    const pooled = path.join(
      this.opts.poolDir,
      `${e.sha256.slice(7)}-${mode.toString(8)}${uid || gid ? `-${uid}-${gid}` : ""}-t${us}`,
    );
    if (!this.#linked.has(pooled) && linkIfPresent(pooled, h)) {
      this.#linked.add(pooled);
    } else {
      copyVerified(e, h, mode, uid, gid, this.opts.hashedAfterMs);
      setTimeUs(h, us);
      if (!this.#linked.has(pooled)) {
        try {
          linkSync(h, pooled);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        }
        this.#linked.add(pooled);
      }
    }
    this.#placed(p, false);
  }

  setMtime(p: string, mtimeMs: number): void {
    const st = this.lstat(p);
    if (!st) throw new StrataError(`internal: ${p} is not in the image`);
    if (st.isDirectory()) {
      // A lower directory takes the source's mtime too (BuildKit restores it on an existing target); deep in the tree
      // it needs its parents copied up first, as in setMeta.
      this.#copyUpParents(p);
      this.#copyUp(p);
      this.#dirTimes.set(p, mtimeMs);
    } else if (lstatOrUndefined(this.#up(p))) setTimeUs(this.#up(p), mtimeUs(mtimeMs));
    else throw new NeedsMountError(`changing the mtime of ${p} of a lower layer`);
  }

  finishTimes(): void {
    const epoch = mtimeUs(this.opts.epochMs);
    for (const p of this.#dirs) {
      const h = this.#up(p);
      if (lstatOrUndefined(h)?.isDirectory()) setTimeUs(h, this.#dirTimes.get(p) ?? epoch);
    }
  }
}

/** Hard-links the pool file to `to`; false when the pool has no such file (yet, or pruned meanwhile). */
function linkIfPresent(pooled: string, to: string): boolean {
  try {
    linkSync(pooled, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/**
 * Copies a source file to `to` with the given mode and owner, and checks it is still the content the key was computed
 * from: a source untouched since `hashedAfterMs` (its ctime is older) is trusted, as the stat cache does; anything
 * newer is re-hashed.
 */
function copyVerified(
  e: ContextEntry,
  to: string,
  mode: number,
  uid: number,
  gid: number,
  hashedAfterMs: number,
): void {
  copyFileSync(e.absPath, to);
  lchownSync(to, uid, gid);
  chmodSync(to, mode);
  const src = lstatSync(e.absPath);
  const copied = lstatSync(to);
  let ok = copied.size === e.size && src.size === e.size;
  if (ok && src.ctimeMs >= hashedAfterMs) {
    ok = "sha256:" + createHash("sha256").update(readFileSync(to)).digest("hex") === e.sha256;
  }
  if (!ok) {
    rmSync(to, { force: true });
    throw fileChanged(e);
  }
}

/**
 * The opaque directories of a layer dir (image paths), from a sidecar cache `<metaDir>/<layer dir name>.opaque.json`
 * — a layer dir is named by its diffID, so its content, and the list, never change — or else from one `getfattr`
 * pass over the tree, then cached.
 */
export async function opaqueDirsOf(layerDir: string, metaDir: string): Promise<Set<string>> {
  const name = path.basename(layerDir);
  const cacheable = /^[0-9a-f]{64}$/.test(name);
  const file = path.join(metaDir, `${name}.opaque.json`);
  if (cacheable) {
    const cached = await fsp.readFile(file, "utf8").then(
      (s) => JSON.parse(s) as unknown,
      () => undefined,
    );
    if (Array.isArray(cached) && cached.every((x) => typeof x === "string")) return new Set(cached as string[]);
  }
  const { findOpaqueDirs } = await import("./tar-pack.js");
  const dirs = [...(await findOpaqueDirs(layerDir))].map((rel) => "/" + rel.split(path.sep).join("/")).sort();
  if (cacheable) await writeFileAtomic(file, JSON.stringify(dirs));
  return new Set(dirs);
}
