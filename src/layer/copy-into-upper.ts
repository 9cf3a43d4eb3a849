/**
 * COPY without an overlay mount, for steps that only copy files: entries are written straight into the new upper
 * dir, with files hard-linked from a content pool (`<store>/files/<sha256>-<mode>`, root-owned, read-only by
 * convention) so an unchanged file costs one link instead of a new inode and a copy. Only safe when no RUN of the
 * same step could modify a linked file in place, and only when the destination's parents are plain directories
 * in the merged view (a symlinked or deleted parent falls back to copying through the overlay).
 */
import { createHash } from "node:crypto";
import {
  chmodSync, chownSync, copyFileSync, lchownSync, linkSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, utimesSync, type Stats,
} from "node:fs";
import path from "node:path";
import type { ContextEntry } from "../context/walk.js";
import { LocalPathError } from "../errors.js";
import { lstatOrUndefined } from "../util/fs.js";

/** The topmost entry at `rel` across lowers (top layer first), or undefined if no layer has one. */
function topEntry(lowersTopFirst: readonly string[], rel: string): Stats | undefined {
  for (const l of lowersTopFirst) {
    const st = lstatOrUndefined(path.join(l, rel));
    if (st) return st;
  }
  return undefined;
}

/**
 * Whether `dest` (absolute in the image) and each of its parents is either absent from every lower layer or a
 * plain directory in the topmost layer that has it — the only case where writing into the upper dir directly is
 * indistinguishable from copying through the merged view.
 */
export function canCopyIntoUpper(lowersTopFirst: readonly string[], dest: string): boolean {
  const parts = dest.split("/").filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const st = topEntry(lowersTopFirst, parts.slice(0, i).join("/"));
    if (st && !st.isDirectory()) return false; // a file, a symlink to follow, or a whiteout
  }
  return true;
}

/** Creates `dest` and its parents in `upper`, copying the attributes of existing lower directories (as copy-up does). */
function ensureDirs(upper: string, lowersTopFirst: readonly string[], dest: string): void {
  const parts = dest.split("/").filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const rel = parts.slice(0, i).join("/");
    const target = path.join(upper, rel);
    if (lstatOrUndefined(target)) continue;
    const lower = topEntry(lowersTopFirst, rel);
    mkdirSync(target, { mode: 0o755 });
    if (lower) {
      chmodSync(target, lower.mode & 0o7777);
      chownSync(target, lower.uid, lower.gid);
      utimesSync(target, lower.atime, lower.mtime);
    } else {
      chmodSync(target, 0o755);
    }
  }
}

/**
 * Copies a context file to `to` (root-owned, its mode) and checks it is still the content the key was computed
 * from: a source untouched since `hashedAfterMs` (its ctime is older) is trusted, as the stat cache does; anything
 * newer is re-hashed.
 */
function copyVerified(e: ContextEntry, to: string, hashedAfterMs: number): void {
  copyFileSync(e.absPath, to);
  chownSync(to, 0, 0);
  chmodSync(to, e.mode);
  const src = lstatSync(e.absPath);
  const copied = lstatSync(to);
  let ok = copied.size === e.size && src.size === e.size;
  if (ok && src.ctimeMs >= hashedAfterMs) {
    ok = "sha256:" + createHash("sha256").update(readFileSync(to)).digest("hex") === e.sha256;
  }
  if (!ok) {
    rmSync(to, { force: true });
    throw new LocalPathError(e.absPath, `${e.absPath} changed while the build was reading it; run the build again`);
  }
}

/** Writes entries (relative to `dest`) into `upper`. Files come from the pool; a file seen twice is copied. */
export function copyIntoUpper(
  entries: readonly ContextEntry[],
  upper: string,
  lowersTopFirst: readonly string[],
  dest: string,
  poolDir: string,
  hashedAfterMs: number,
  single = false,
): void {
  mkdirSync(poolDir, { recursive: true });
  const linked = new Set<string>();
  const destDir = single ? path.posix.dirname(dest) : dest;
  ensureDirs(upper, lowersTopFirst, destDir);
  for (const e of entries) {
    const to = single ? path.join(upper, dest) : path.join(upper, dest, e.relPath);
    const existing = lstatOrUndefined(to);
    if (e.type === "dir") {
      if (existing && !existing.isDirectory()) rmSync(to, { recursive: true, force: true });
      if (!existing?.isDirectory()) mkdirSync(to, { mode: e.mode });
      chmodSync(to, e.mode);
      chownSync(to, 0, 0);
      continue;
    }
    if (existing) rmSync(to, { recursive: true, force: true });
    if (e.type === "symlink") {
      symlinkSync(e.linkTarget ?? "", to);
      lchownSync(to, 0, 0);
      continue;
    }
    const pooled = path.join(poolDir, `${e.sha256.slice(7)}-${e.mode.toString(8)}`);
    // Two names for one pool inode in one layer would become a tar hardlink: the second gets its own copy.
    if (!linked.has(pooled) && lstatOrUndefined(pooled)) {
      linkSync(pooled, to);
    } else {
      copyVerified(e, to, hashedAfterMs);
      if (!linked.has(pooled)) {
        try {
          linkSync(to, pooled);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        }
      }
    }
    linked.add(pooled);
  }
}
