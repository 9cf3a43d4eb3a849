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
import {
  chmodSync,
  closeSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  rmSync,
  symlinkSync,
  writeSync,
  type Stats,
} from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { StrataError } from "../errors.js";
import type { Digest } from "../util/digest.js";
import type { TarHeader } from "./tar-decode.js";
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from "./tar-header.js";
import { TarParser, type TarEvent } from "./tar-parser.js";

export class UnsafeLayerError extends StrataError {
  override readonly code = "UNSAFE_LAYER";
  constructor(
    readonly entry: string,
    readonly why: string,
  ) {
    super(`refusing layer entry "${entry}": ${why}`);
    this.name = "UnsafeLayerError";
  }
}

/** A name with an absolute start, an empty segment, or a `.` / `..` segment (everything else is already clean). */
const NEEDS_CLEANING = /^\/|\/\/|(^|\/)\.\.?(\/|$)/;

/** Normalises a tar entry name to a relative path, or throws if it would leave the root. */
export function safeEntryPath(name: string): string {
  // Fast path (nearly every name in a layer): nothing to normalise but a directory's trailing slash.
  if (!NEEDS_CLEANING.test(name)) return name.endsWith("/") ? name.slice(0, -1) : name;
  const cleaned = path.posix.normalize(name.replace(/^\.\/+/, "")).replace(/\/+$/, "");
  // Absolute names are read relative to the root (as Docker does), after normalisation.
  const rel = cleaned.replace(/^\/+/, "");
  if (rel === ".." || rel.startsWith("../") || rel.split("/").includes(".."))
    throw new UnsafeLayerError(name, "path escapes the layer root");
  return rel === "." ? "" : rel;
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

// ---------------------------------------------------------------------------------------------------------------
// Extraction

function lstatMaybe(p: string): Stats | undefined {
  return lstatSync(p, { throwIfNoEntry: false });
}

function writeAll(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
}

/** Throws unless every existing parent of `rel` inside `root` is a real directory (never creates anything). */
function checkParents(root: string, rel: string, entry: string): void {
  let cur = root;
  for (const p of rel.split("/").slice(0, -1)) {
    cur = path.join(cur, p);
    const st = lstatMaybe(cur);
    if (!st) return;
    if (!st.isDirectory())
      throw new UnsafeLayerError(
        entry,
        `parent ${path.relative(root, cur)} is ${st.isSymbolicLink() ? "a symlink" : "not a directory"}; following it could leave the root`,
      );
  }
}

/** One layer being extracted: entries are written with synchronous calls as the parser reports them. */
class Extractor {
  readonly whiteouts: string[] = [];
  readonly opaques: string[] = [];
  /** Directories and their mtimes (seconds), set last since creating children changes them. */
  readonly dirTimes: [string, number][] = [];
  private entries = 0;
  /**
   * Directories (relative; "" is the root) this extraction made or found to be real directories, so parents are not
   * lstat'ed again for every entry, each with whether it is setgid (new files in it take its group). Whatever
   * replaces a path removes it and everything below it.
   */
  private readonly dirs = new Map<string, boolean>();
  /** The regular file whose content is being written, and whether it needs a chown (else it has the owner already). */
  private file: { fd: number; h: TarHeader; mode: number; chown: boolean } | undefined;
  /** Per requested mode: whether a file created with it has exactly that mode (the umask takes nothing away). */
  private readonly exactModes = new Map<number, boolean>();
  private readonly euid = process.geteuid?.() ?? -1;
  private readonly egid = process.getegid?.() ?? -1;
  private readonly maxBytes: number;
  private readonly maxEntries: number;
  private readonly warn: (line: string) => void;

  constructor(
    private readonly root: string,
    private readonly opts: ExtractOptions,
  ) {
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_LAYER_BYTES;
    this.maxEntries = opts.maxEntries ?? DEFAULT_MAX_LAYER_ENTRIES;
    this.warn = opts.onWarning ?? (() => undefined);
    this.dirs.set("", (lstatSync(root).mode & 0o2000) !== 0);
  }

  /** Handles one parser event; returns a promise only for the rare entries that need a child process. */
  handle(ev: TarEvent): void | Promise<void> {
    if (ev.kind === "data") {
      if (this.file) {
        writeAll(this.file.fd, ev.chunk);
        if (ev.last) this.finishFile();
      }
      return;
    }
    return this.entry(ev.header);
  }

  /** Closes a file left open by an error. */
  close(): void {
    if (this.file) closeSync(this.file.fd);
    this.file = undefined;
  }

  private finishFile(): void {
    const { fd, h, mode, chown } = this.file!;
    this.file = undefined;
    try {
      // A file created by its owner-to-be, outside setgid directories, already has its owner; a mode without
      // special bits that the umask leaves alone is already exact. Otherwise chown, then chmod (chown clears setuid).
      if (chown) fchownSync(fd, h.uid, h.gid);
      let exact = mode & 0o7000 ? false : this.exactModes.get(mode);
      if (exact === undefined) {
        exact = (fstatSync(fd).mode & 0o7777) === mode;
        this.exactModes.set(mode, exact);
      }
      if (!exact) fchmodSync(fd, mode);
      futimesSync(fd, h.mtime, h.mtime);
    } finally {
      closeSync(fd);
    }
  }

  /** Ensures every parent of `rel` is a real directory (not a symlink), creating missing ones. */
  private ensureParents(rel: string): void {
    const slash = rel.lastIndexOf("/");
    if (slash < 0 || this.dirs.has(rel.slice(0, slash))) return;
    let cur = "";
    let setgid = this.dirs.get("")!;
    for (const p of rel.slice(0, slash).split("/")) {
      cur = cur ? `${cur}/${p}` : p;
      const known = this.dirs.get(cur);
      if (known !== undefined) {
        setgid = known;
        continue;
      }
      const abs = `${this.root}/${cur}`;
      const st = lstatMaybe(abs);
      if (!st)
        mkdirSync(abs, { mode: 0o755 }); // inherits setgid from a setgid parent
      else if (st.isSymbolicLink())
        throw new UnsafeLayerError(rel, `parent ${cur} is a symlink; writing through it could leave the root`);
      else if (!st.isDirectory()) throw new UnsafeLayerError(rel, `parent ${cur} is not a directory`);
      else setgid = (st.mode & 0o2000) !== 0;
      this.dirs.set(cur, setgid);
    }
  }

  /** Removes what is at `rel` (a later entry replaces an earlier one of the same name). */
  private remove(rel: string, target: string): void {
    rmSync(target, { recursive: true, force: true });
    this.dirs.delete(rel);
    const prefix = `${rel}/`;
    for (const d of this.dirs.keys()) if (d.startsWith(prefix)) this.dirs.delete(d);
  }

  /** Runs `create`; if something is already at `target`, removes it (keeping a directory for a directory) and retries. */
  private create(rel: string, target: string, isDir: boolean, create: () => void): boolean {
    try {
      create();
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const existing = lstatMaybe(target);
    if (existing?.isDirectory() && isDir) return false;
    if (existing) this.remove(rel, target);
    create();
    return true;
  }

  private entry(h: TarHeader): void | Promise<void> {
    if (++this.entries > this.maxEntries)
      throw new UnsafeLayerError(
        h.name,
        `the layer has more than ${this.maxEntries} entries (maxEntries); refusing it as a possible decompression bomb`,
      );
    if (h.size > this.maxBytes)
      throw new UnsafeLayerError(
        h.name,
        `the entry claims ${h.size} bytes, more than the ${this.maxBytes}-byte limit (maxBytes)`,
      );
    const rel = safeEntryPath(h.name);
    if (rel === "") return;
    const base = rel.slice(rel.lastIndexOf("/") + 1);
    const target = `${this.root}/${rel}`; // rel is clean and relative, root absolute without a trailing slash
    const aufs = `${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`;
    if (rel.startsWith(aufs) && rel !== OPAQUE_WHITEOUT) {
      // AUFS metadata (/.wh..wh.plnk/…, /.wh..wh.aufs): not content, as Docker treats it.
      this.warn(`skipped AUFS metadata entry ${h.name}`);
      return;
    }
    let hidden: string | undefined;
    if (base !== OPAQUE_WHITEOUT && base.startsWith(WHITEOUT_PREFIX)) {
      if (base.startsWith(aufs)) {
        this.warn(`skipped unknown whiteout metadata entry ${h.name}`);
        return;
      }
      hidden = whiteoutTarget(h.name, base);
    }
    this.ensureParents(rel);
    if (base === OPAQUE_WHITEOUT) {
      this.opaques.push(path.dirname(target));
      return;
    }
    if (hidden !== undefined) {
      this.whiteouts.push(path.join(path.dirname(target), hidden));
      return;
    }
    if (
      (h.type === "character-device" || h.type === "block-device") &&
      !this.opts.allowDevices &&
      !(h.type === "character-device" && !h.devmajor && !h.devminor)
    ) {
      this.warn(
        `skipped ${h.type === "character-device" ? "character" : "block"} device ${h.name} (${h.devmajor}:${h.devminor}): device nodes from untrusted layers are not created`,
      );
      return;
    }
    const mode = h.mode & 0o7777;
    const { uid, gid, mtime } = h;
    switch (h.type) {
      case "directory":
        this.create(rel, target, true, () => mkdirSync(target, { mode }));
        chmodSync(target, mode);
        lchownSync(target, uid, gid);
        this.dirs.set(rel, (mode & 0o2000) !== 0);
        this.dirTimes.push([target, mtime]);
        return;
      case "file": {
        let fd = -1;
        this.create(rel, target, false, () => {
          fd = openSync(target, "wx", mode);
        });
        const slash = rel.lastIndexOf("/");
        const chown =
          uid !== this.euid || gid !== this.egid || this.dirs.get(slash < 0 ? "" : rel.slice(0, slash)) !== false;
        this.file = { fd, h, mode, chown };
        if (h.size === 0) this.finishFile();
        return;
      }
      case "symlink":
        this.create(rel, target, false, () => symlinkSync(h.linkname, target));
        lchownSync(target, uid, gid);
        lutimesSync(target, mtime, mtime);
        return;
      case "link": {
        const existing = lstatMaybe(target);
        if (existing) this.remove(rel, target);
        const linkRel = safeEntryPath(h.linkname);
        // The target's parents must be real directories too, or `s -> /outside` + `h -> s/victim` would link an
        // outside file into the layer.
        checkParents(this.root, linkRel, h.name);
        const src = linkRel === "" ? this.root : `${this.root}/${linkRel}`;
        const st = lstatMaybe(src);
        if (!st) throw new UnsafeLayerError(h.name, `hardlink target ${h.linkname} is not in this layer`);
        if (st.isDirectory()) throw new UnsafeLayerError(h.name, `hardlink target ${h.linkname} is a directory`);
        linkSync(src, target);
        return;
      }
      case "character-device":
      case "block-device":
      case "fifo":
        return this.special(h, rel, target, mode, uid, gid, mtime);
      default:
        throw new UnsafeLayerError(h.name, `unsupported entry type ${JSON.stringify(h.typeflag)}`);
    }
  }

  /** Device nodes and fifos: made by mknod / mkfifo. */
  private async special(
    h: TarHeader,
    rel: string,
    target: string,
    mode: number,
    uid: number,
    gid: number,
    mtime: number,
  ): Promise<void> {
    if (lstatMaybe(target)) this.remove(rel, target);
    const { execa } = await import("execa");
    if (h.type === "fifo") await execa("mkfifo", ["-m", mode.toString(8), target]);
    else
      await execa("mknod", [
        "-m",
        mode.toString(8),
        target,
        h.type === "character-device" ? "c" : "b",
        String(h.devmajor),
        String(h.devminor),
      ]);
    lchownSync(target, uid, gid);
    lutimesSync(target, mtime, mtime);
  }
}

/** Decompressed chunk size: large chunks mean fewer callbacks for the same bytes. */
const GUNZIP_CHUNK = 256 * 1024;

/**
 * Extracts a (possibly gzipped) layer tar stream into `root`, which must exist and be empty. Returns the diffID
 * (sha256 of the uncompressed tar) so callers can check the layer is what its config claims.
 */
export async function extractLayer(input: Readable, root: string, opts: ExtractOptions = {}): Promise<Digest> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_LAYER_BYTES;
  const x = new Extractor(path.resolve(root), opts);
  const parser = new TarParser();
  const hash = createHash("sha256");
  let total = 0;
  let failure: unknown;
  const consume = async (source: AsyncIterable<Buffer>): Promise<void> => {
    try {
      for await (const chunk of source) {
        total += chunk.length;
        if (total > maxBytes)
          throw new UnsafeLayerError(
            "(layer)",
            `the uncompressed layer is larger than the ${maxBytes}-byte limit (maxBytes); refusing it as a possible decompression bomb`,
          );
        hash.update(chunk);
        for (const ev of parser.feed(chunk)) {
          const pending = x.handle(ev);
          if (pending) await pending;
        }
      }
      parser.end();
    } catch (e) {
      failure ??= e;
      throw e;
    } finally {
      x.close();
    }
  };
  try {
    if (opts.gzip) await pipeline(input, createGunzip({ chunkSize: GUNZIP_CHUNK }), consume);
    else await pipeline(input, consume);
  } catch (e) {
    // Report the first cause (a limit, an unsafe entry, bad gzip), not the abort that tearing down the pipeline causes.
    throw failure ?? e;
  }
  // Whiteouts and opaque markers are applied last; entries after them may have put a symlink where their parent
  // directory was, so the parents are checked again now and nothing is followed.
  const { execa } = x.whiteouts.length || x.opaques.length ? await import("execa") : { execa: undefined };
  const whiteouts = [...new Set(x.whiteouts)];
  for (const w of whiteouts) {
    checkParents(root, path.relative(root, w), w);
    rmSync(w, { recursive: true, force: true });
  }
  // mknod makes one node per call: one shell per few hundred whiteouts, not one process each.
  for (let i = 0; i < whiteouts.length; i += 200) {
    await execa!("sh", ["-c", 'for p do mknod "$p" c 0 0 || exit 1; done', "sh", ...whiteouts.slice(i, i + 200)]);
  }
  const opaque: string[] = [];
  for (const o of x.opaques) {
    const rel = path.relative(root, o);
    if (rel !== "") {
      checkParents(root, rel, o);
      const st = lstatSync(o);
      if (!st.isDirectory())
        throw new UnsafeLayerError(o, "an opaque-directory marker's directory was replaced by a non-directory");
    }
    opaque.push(o);
  }
  // setfattr takes many paths: one process per few hundred opaque directories, not one each.
  for (let i = 0; i < opaque.length; i += 200)
    await execa!("setfattr", ["-h", "-n", "trusted.overlay.opaque", "-v", "y", ...opaque.slice(i, i + 200)]);
  // Directory mtimes last, since creating children changes them.
  for (const [d, t] of x.dirTimes.reverse()) {
    // A later entry may have replaced the directory with a symlink: never follow it.
    if (lstatMaybe(d)?.isDirectory()) lutimesSync(d, t, t);
  }
  return ("sha256:" + hash.digest("hex")) as Digest;
}
