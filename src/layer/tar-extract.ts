/**
 * Unpacks a layer tar into a directory in overlay lowerdir form: OCI whiteouts become overlay whiteouts (char 0/0)
 * and opaque-directory xattrs. Names are confined to the target: absolute names, `..`, and writes through symlinks
 * are refused, hardlinks must point inside the layer.
 *
 * Untrusted (pulled) layers: whiteout names must name a sibling (`.wh.`, `.wh..`, `.wh...` are refused), AUFS
 * metadata (`.wh..wh.*` other than the opaque marker) is skipped, device nodes other than overlay whiteouts (char
 * 0/0) are skipped with a warning unless `allowDevices`, and `maxBytes` / `maxEntries` bound decompression bombs.
 * Each layer is extracted into its own empty directory and only ever combined by overlayfs, so a symlink left by a
 * lower layer is never followed while extracting an upper one. `test/layer/extract-safety.test.ts` runs the
 * malicious-layer table in `fixtures/extract-safety.json`.
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
  /**
   * Create character and block device nodes (default false: they are skipped with a warning, as a pulled layer could
   * otherwise plant a world-writable `/dev/sda` node in the store). Char 0/0 entries (overlay whiteouts) are always
   * created. Pass true only for layers the builder made itself.
   */
  allowDevices?: boolean;
  /** Most uncompressed tar bytes read before the layer is refused (default 64 GiB). */
  maxBytes?: number;
  /** Most tar entries before the layer is refused (default 10,000,000). */
  maxEntries?: number;
  /** Receives one line per skipped entry (device nodes, AUFS metadata). Default: silent. */
  onWarning?: (line: string) => void;
}

/** Default `maxBytes`: 64 GiB of uncompressed tar. */
export const DEFAULT_MAX_LAYER_BYTES = 64 * 1024 * 1024 * 1024;
/** Default `maxEntries`. */
export const DEFAULT_MAX_LAYER_ENTRIES = 10_000_000;

/** The name a whiteout hides: refuses `.wh.` (empty), `.wh..`, `.wh...` and anything with a separator. */
function whiteoutTarget(entry: string, base: string): string {
  const hidden = base.slice(WHITEOUT_PREFIX.length);
  if (hidden === "" || hidden === "." || hidden === ".." || hidden.includes("/") || hidden.includes("\0")) {
    throw new UnsafeLayerError(entry, `whiteout names "${hidden}", which is not a sibling entry`);
  }
  return hidden;
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
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_LAYER_BYTES;
  const maxEntries = opts.maxEntries ?? DEFAULT_MAX_LAYER_ENTRIES;
  const warn = opts.onWarning ?? (() => undefined);
  let entries = 0;
  const consume = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      if (++entries > maxEntries) throw new UnsafeLayerError(h.name, `the layer has more than ${maxEntries} entries (maxEntries); refusing it as a possible decompression bomb`);
      if ((h.size ?? 0) > maxBytes) throw new UnsafeLayerError(h.name, `the entry claims ${h.size} bytes, more than the ${maxBytes}-byte limit (maxBytes)`);
      const rel = safeEntryPath(h.name);
      const base = path.posix.basename(rel);
      const target = path.join(root, rel);
      if (rel === "") {
        entry.resume();
        continue;
      }
      const aufs = `${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`;
      if (rel.split("/")[0]!.startsWith(aufs) && rel !== OPAQUE_WHITEOUT) {
        // AUFS metadata (/.wh..wh.plnk/…, /.wh..wh.aufs): not content, as Docker treats it.
        warn(`skipped AUFS metadata entry ${h.name}`);
        entry.resume();
        continue;
      }
      let hidden: string | undefined;
      if (base !== OPAQUE_WHITEOUT && base.startsWith(WHITEOUT_PREFIX)) {
        if (base.startsWith(aufs)) {
          warn(`skipped unknown whiteout metadata entry ${h.name}`);
          entry.resume();
          continue;
        }
        hidden = whiteoutTarget(h.name, base);
      }
      await ensureParents(root, rel);
      if (base === OPAQUE_WHITEOUT) {
        opaques.push(path.dirname(target));
        entry.resume();
        continue;
      }
      if (hidden !== undefined) {
        whiteouts.push(path.join(path.dirname(target), hidden));
        entry.resume();
        continue;
      }
      if ((h.type === "character-device" || h.type === "block-device") && !opts.allowDevices && !(h.type === "character-device" && !h.devmajor && !h.devminor)) {
        warn(`skipped ${h.type === "character-device" ? "character" : "block"} device ${h.name} (${h.devmajor ?? 0}:${h.devminor ?? 0}): device nodes from untrusted layers are not created`);
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
  })().catch((e: unknown) => {
    // Stop reading: the pipeline fails too instead of waiting for a consumer that is gone.
    extract.destroy(e instanceof Error ? e : new Error(String(e)));
    throw e;
  });
  const hash = createHash("sha256");
  let total = 0;
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      if (total > maxBytes) {
        cb(new UnsafeLayerError("(layer)", `the uncompressed layer is larger than the ${maxBytes}-byte limit (maxBytes); refusing it as a possible decompression bomb`));
        return;
      }
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const stages: NodeJS.ReadWriteStream[] = opts.gzip ? [createGunzip(), hasher] : [hasher];
  await Promise.all([pipeline([input, ...stages, extract as unknown as NodeJS.WritableStream]), consume]).catch(async (e: unknown) => {
    // Report the first cause (a limit or an unsafe entry), not the "stream destroyed" that follows it.
    const settled = await Promise.allSettled([consume]);
    const first = settled[0].status === "rejected" ? settled[0].reason : undefined;
    throw e instanceof UnsafeLayerError || !(first instanceof UnsafeLayerError) ? e : first;
  });
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
