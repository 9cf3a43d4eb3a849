/**
 * Unpacks a layer tar into a directory in overlay lowerdir form: OCI whiteouts become overlay whiteouts (char 0/0)
 * and opaque-directory xattrs. Names are confined to the target: absolute names, `..`, and writes through symlinks
 * are refused, hardlinks must point inside the layer.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createHash } from "node:crypto";
import { Transform, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { execa } from "execa";
import tar from "tar-stream";
import { StrataError } from "../errors.js";
import type { Digest } from "../util/digest.js";
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from "./tar-pack.js";

export class UnsafeLayerError extends StrataError {
  override readonly code = "UNSAFE_LAYER";
  constructor(readonly entry: string, why: string) {
    super(`refusing layer entry "${entry}": ${why}`);
    this.name = "UnsafeLayerError";
  }
}

/** Normalises a tar entry name to a relative path, or throws if it would leave the root. */
export function safeEntryPath(name: string): string {
  const cleaned = path.posix.normalize(name.replace(/^\.\/+/, "")).replace(/\/+$/, "");
  // Absolute names are read relative to the root (as Docker does), after normalisation.
  const rel = cleaned.replace(/^\/+/, "");
  if (rel === ".." || rel.startsWith("../") || rel.split("/").includes("..")) throw new UnsafeLayerError(name, "path escapes the layer root");
  return rel === "." ? "" : rel;
}

/** Ensures every parent of `rel` inside `root` is a real directory (not a symlink), creating missing ones. */
async function ensureParents(root: string, rel: string): Promise<void> {
  const parts = rel.split("/").slice(0, -1);
  let cur = root;
  for (const p of parts) {
    cur = path.join(cur, p);
    let st;
    try {
      st = await fsp.lstat(cur);
    } catch {
      await fsp.mkdir(cur, { mode: 0o755 });
      continue;
    }
    if (st.isSymbolicLink()) throw new UnsafeLayerError(rel, `parent ${path.relative(root, cur)} is a symlink; writing through it could leave the root`);
    if (!st.isDirectory()) throw new UnsafeLayerError(rel, `parent ${path.relative(root, cur)} is not a directory`);
  }
}

/** Throws unless every existing parent of `rel` inside `root` is a real directory (never creates anything). */
async function checkParents(root: string, rel: string, entry: string): Promise<void> {
  let cur = root;
  for (const p of rel.split("/").slice(0, -1)) {
    cur = path.join(cur, p);
    const st = await fsp.lstat(cur).catch(() => undefined);
    if (!st) return;
    if (!st.isDirectory()) throw new UnsafeLayerError(entry, `parent ${path.relative(root, cur)} is ${st.isSymbolicLink() ? "a symlink" : "not a directory"}; following it could leave the root`);
  }
}

export interface ExtractOptions {
  gzip?: boolean;
}

/**
 * Extracts a (possibly gzipped) layer tar stream into `root`, which must exist and be empty. Returns the diffID
 * (sha256 of the uncompressed tar) so callers can check the layer is what its config claims.
 */
export async function extractLayer(input: Readable, root: string, opts: ExtractOptions = {}): Promise<Digest> {
  const extract = tar.extract();
  const whiteouts: string[] = [];
  const opaques: string[] = [];
  const dirTimes: [string, Date][] = [];
  const consume = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      const rel = safeEntryPath(h.name);
      const base = path.posix.basename(rel);
      const target = path.join(root, rel);
      if (rel === "") {
        entry.resume();
        continue;
      }
      await ensureParents(root, rel);
      if (base === OPAQUE_WHITEOUT) {
        opaques.push(path.dirname(target));
        entry.resume();
        continue;
      }
      if (base.startsWith(WHITEOUT_PREFIX)) {
        whiteouts.push(path.join(path.dirname(target), base.slice(WHITEOUT_PREFIX.length)));
        entry.resume();
        continue;
      }
      // A later entry replaces an earlier one of the same name (never a directory with contents).
      const existing = await fsp.lstat(target).catch(() => undefined);
      if (existing && !(existing.isDirectory() && h.type === "directory")) await fsp.rm(target, { recursive: true, force: true });
      const mode = (h.mode ?? 0o644) & 0o7777;
      switch (h.type) {
        case "directory":
          if (!existing) await fsp.mkdir(target, { mode });
          await fsp.chmod(target, mode);
          break;
        case "file":
        case "contiguous-file": {
          const fh = await fsp.open(target, "wx", mode);
          try {
            for await (const chunk of entry) await fh.write(chunk as Buffer);
          } finally {
            await fh.close();
          }
          await fsp.chmod(target, mode);
          break;
        }
        case "symlink":
          await fsp.symlink(h.linkname ?? "", target);
          break;
        case "link": {
          const linkRel = safeEntryPath(h.linkname ?? "");
          // The target's parents must be real directories too, or `s -> /outside` + `h -> s/victim` would link an
          // outside file into the layer.
          await checkParents(root, linkRel, h.name);
          const src = path.join(root, linkRel);
          const st = await fsp.lstat(src).catch(() => undefined);
          if (!st) throw new UnsafeLayerError(h.name, `hardlink target ${h.linkname} is not in this layer`);
          if (st.isDirectory()) throw new UnsafeLayerError(h.name, `hardlink target ${h.linkname} is a directory`);
          await fsp.link(src, target);
          break;
        }
        case "character-device":
        case "block-device":
          await execa("mknod", ["-m", mode.toString(8), target, h.type === "character-device" ? "c" : "b", String(h.devmajor ?? 0), String(h.devminor ?? 0)]);
          break;
        case "fifo":
          await execa("mkfifo", ["-m", mode.toString(8), target]);
          break;
        default:
          throw new UnsafeLayerError(h.name, `unsupported entry type ${h.type}`);
      }
      entry.resume();
      if (h.type !== "link") await fsp.lchown(target, h.uid ?? 0, h.gid ?? 0);
      if (h.type === "file" || h.type === "contiguous-file") await fsp.chmod(target, mode); // chown clears setuid bits
      if (h.mtime) {
        if (h.type === "directory") dirTimes.push([target, h.mtime]);
        else if (h.type !== "link") await fsp.lutimes(target, h.mtime, h.mtime);
      }
    }
  })();
  const hash = createHash("sha256");
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const stages: NodeJS.ReadWriteStream[] = opts.gzip ? [createGunzip(), hasher] : [hasher];
  await Promise.all([pipeline([input, ...stages, extract as unknown as NodeJS.WritableStream]), consume]);
  // Whiteouts and opaque markers are applied last; entries after them may have put a symlink where their parent
  // directory was, so the parents are checked again now and nothing is followed.
  for (const w of whiteouts) {
    await checkParents(root, path.relative(root, w), w);
    await fsp.rm(w, { recursive: true, force: true });
    await execa("mknod", [w, "c", "0", "0"]);
  }
  for (const o of opaques) {
    const rel = path.relative(root, o);
    if (rel !== "") {
      await checkParents(root, rel, o);
      const st = await fsp.lstat(o);
      if (!st.isDirectory()) throw new UnsafeLayerError(o, "an opaque-directory marker's directory was replaced by a non-directory");
    }
    await execa("setfattr", ["-h", "-n", "trusted.overlay.opaque", "-v", "y", o]);
  }
  // Directory mtimes last, since creating children changes them.
  for (const [d, t] of dirTimes.reverse()) {
    // A later entry may have replaced the directory with a symlink: never follow it.
    const st = await fsp.lstat(d).catch(() => undefined);
    if (st?.isDirectory()) await fsp.lutimes(d, t, t);
  }
  return ("sha256:" + hash.digest("hex")) as Digest;
}
