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
  chmodSync, closeSync, fchmodSync, fchownSync, fstatSync, futimesSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, rmSync, symlinkSync,
  writeSync, type Stats,
} from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { StrataError } from "../errors.js";
import type { Digest } from "../util/digest.js";
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from "./tar-header.js";

export class UnsafeLayerError extends StrataError {
  override readonly code = "UNSAFE_LAYER";
  constructor(readonly entry: string, readonly why: string) {
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
  if (rel === ".." || rel.startsWith("../") || rel.split("/").includes("..")) throw new UnsafeLayerError(name, "path escapes the layer root");
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
// Tar parsing: a synchronous, streaming reader of ustar / GNU / PAX archives with tar-stream's semantics (the
// header checksum is checked; ustar prefixes, GNU long names and PAX `path`, `linkpath` and `size` apply; a global
// PAX header is merged into the next per-entry one; a zero block is skipped; an archive that ends inside a header,
// an entry or its padding is an error). Parsing in one synchronous pass over each decompressed chunk, instead of a
// stream per entry, is what makes a 50,000-file layer cheap.

/** A decoded entry header (the fields the extractor uses, named as tar-stream names them). */
export interface TarHeader {
  name: string;
  mode: number | null;
  uid: number | null;
  gid: number | null;
  size: number | null;
  /** Seconds since the epoch. */
  mtime: number | null;
  type: string | null;
  linkname: string | null;
  devmajor: number | null;
  devminor: number | null;
}

/** What the parser reports: an entry header, or a piece of the current entry's content (`last` on its final piece). */
type TarEvent = { kind: "entry"; header: TarHeader } | { kind: "data"; chunk: Buffer; last: boolean };

const MAX_LONG_HEADER = 4 * 1024 * 1024;
const TYPES: Record<number, string> = {
  0: "file",
  1: "link",
  2: "symlink",
  3: "character-device",
  4: "block-device",
  5: "directory",
  6: "fifo",
  7: "contiguous-file",
  72: "pax-header",
  55: "pax-global-header",
  27: "gnu-long-link-path",
  28: "gnu-long-path",
  30: "gnu-long-path",
};

function parse256(buf: Buffer): number | null {
  let positive: boolean;
  if (buf[0] === 0x80) positive = true;
  else if (buf[0] === 0xff) positive = false;
  else return null;
  let sum = 0;
  for (let i = buf.length - 1, k = 0; i > 0; i--, k++) sum += (positive ? buf[i]! : 0xff - buf[i]!) * Math.pow(256, k);
  return positive ? sum : -1 * sum;
}

/** A numeric header field: octal text (as tar-stream reads it: leading spaces, then NULs) or base-256. Exported for tests. */
export function decodeOct(block: Buffer, offset: number, length: number): number | null {
  // Fast path for the usual field (optional leading spaces or NULs, octal digits, then a NUL or space), read from
  // the bytes without a string; anything else takes the general path below, which has parseInt's semantics.
  const end = offset + length;
  let i = offset;
  if (!(block[i]! & 0x80)) {
    while (i < end && block[i] === 32) i++;
    while (i < end && block[i] === 0) i++;
    if (i === end) return 0;
    let n = 0;
    let k = i;
    for (; k < end; k++) {
      const c = block[k]!;
      if (c < 48 || c > 55) break;
      n = n * 8 + (c - 48);
    }
    if (k > i && (k === end || block[k] === 0 || block[k] === 32)) return n;
  }
  return decodeOctSlow(block, offset, length);
}

/** `decodeOct` through strings and parseInt: the definition the fast path must agree with. Exported for tests. */
export function decodeOctSlow(block: Buffer, offset: number, length: number): number | null {
  const val = block.subarray(offset, offset + length);
  if (val[0]! & 0x80) return parse256(val);
  let i = 0;
  while (i < val.length && val[i] === 32) i++;
  let end = val.indexOf(32, i);
  if (end < 0) end = val.length;
  while (i < end && val[i] === 0) i++;
  if (end === i) return 0;
  return parseInt(val.toString("latin1", i, end), 8);
}

function decodeStr(block: Buffer, offset: number, length: number): string {
  let end = block.indexOf(0, offset);
  if (end < 0 || end > offset + length) end = offset + length;
  return block.toString("utf8", offset, end);
}

const USTAR_MAGIC = Buffer.from("ustar\0", "latin1");
const GNU_MAGIC = Buffer.from("ustar ", "latin1");
const GNU_VERSION = Buffer.from(" \0", "latin1");

/** Decodes one 512-byte header block; null for a zero block (end-of-archive marker). */
function decodeHeader(block: Buffer): TarHeader | null {
  let sum = 8 * 32;
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < 512; i++) sum += block[i]!;
  if (sum === 8 * 32) return null;
  if (sum !== decodeOct(block, 148, 8)) throw new Error("Invalid tar header. Maybe the tar is corrupted or it needs to be gunzipped?");
  let typeflag = block[156] === 0 ? 0 : block[156]! - 48;
  let name = decodeStr(block, 0, 100);
  if (block.compare(USTAR_MAGIC, 0, 6, 257, 263) === 0) {
    if (block[345]) name = decodeStr(block, 345, 155) + "/" + name;
  } else if (!(block.compare(GNU_MAGIC, 0, 6, 257, 263) === 0 && block.compare(GNU_VERSION, 0, 2, 263, 265) === 0)) {
    throw new Error("Invalid tar header: unknown format.");
  }
  if (typeflag === 0 && name && name[name.length - 1] === "/") typeflag = 5;
  return {
    name,
    mode: decodeOct(block, 100, 8),
    uid: decodeOct(block, 108, 8),
    gid: decodeOct(block, 116, 8),
    size: decodeOct(block, 124, 12),
    mtime: decodeOct(block, 136, 12),
    type: TYPES[typeflag] ?? null,
    linkname: block[157] === 0 ? null : decodeStr(block, 157, 100),
    devmajor: decodeOct(block, 329, 8),
    devminor: decodeOct(block, 337, 8),
  };
}

function decodePax(buf: Buffer): Record<string, string> {
  const result: Record<string, string> = {};
  while (buf.length) {
    let i = 0;
    while (i < buf.length && buf[i] !== 32) i++;
    const len = parseInt(buf.toString("utf8", 0, i), 10);
    if (!len) return result;
    const b = buf.toString("utf8", i + 1, len - 1);
    const k = b.indexOf("=");
    if (k === -1) return result;
    result[b.slice(0, k)] = b.slice(k + 1);
    buf = buf.subarray(len);
  }
  return result;
}

class TarParser {
  /** Bytes of an incomplete header block (or long header) carried over to the next chunk. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Content bytes of the current entry still to come; they are reported (`emit`) or collected (a long header). */
  private dataLeft = 0;
  private emit = false;
  private long: { type: string; size: number } | undefined;
  private padLeft = 0;
  private pax: Record<string, string> | null = null;
  private paxGlobal: Record<string, string> | null = null;
  private gnuLongPath: string | null = null;
  private gnuLongLinkPath: string | null = null;

  /** The events of one chunk, in order; the caller handles each before asking for the next. */
  *feed(chunk: Buffer): Generator<TarEvent> {
    let off = 0;
    const len = chunk.length;
    while (off < len) {
      if (this.dataLeft > 0 && !this.long) {
        const n = Math.min(this.dataLeft, len - off);
        const piece = chunk.subarray(off, off + n);
        off += n;
        this.dataLeft -= n;
        if (this.emit) yield { kind: "data", chunk: piece, last: this.dataLeft === 0 };
        continue;
      }
      if (this.padLeft > 0) {
        const n = Math.min(this.padLeft, len - off);
        off += n;
        this.padLeft -= n;
        continue;
      }
      // A header block, or the body of a long header: both are collected whole before being decoded.
      const need = this.long ? this.long.size : 512;
      let block: Buffer;
      if (this.pendingBytes === 0 && len - off >= need) {
        block = chunk.subarray(off, off + need);
        off += need;
      } else {
        const n = Math.min(need - this.pendingBytes, len - off);
        this.pending.push(Buffer.from(chunk.subarray(off, off + n)));
        this.pendingBytes += n;
        off += n;
        if (this.pendingBytes < need) return;
        block = Buffer.concat(this.pending, this.pendingBytes);
        this.pending = [];
        this.pendingBytes = 0;
      }
      if (this.long) {
        const { type, size } = this.long;
        this.long = undefined;
        this.dataLeft = 0;
        this.padLeft = overflow(size);
        if (type === "gnu-long-path") this.gnuLongPath = decodeStr(block, 0, block.length);
        else if (type === "gnu-long-link-path") this.gnuLongLinkPath = decodeStr(block, 0, block.length);
        else if (type === "pax-global-header") this.paxGlobal = decodePax(block);
        else this.pax = this.paxGlobal === null ? decodePax(block) : Object.assign({}, this.paxGlobal, decodePax(block));
        continue;
      }
      const h = decodeHeader(block);
      if (!h) continue;
      if (h.type === "gnu-long-path" || h.type === "gnu-long-link-path" || h.type === "pax-global-header" || h.type === "pax-header") {
        const size = h.size ?? 0;
        if (size > MAX_LONG_HEADER) throw new Error("Header exceeds max size");
        if (size > 0) {
          this.long = { type: h.type, size };
          this.dataLeft = size;
        } else {
          // An empty long header still resets what it would have set.
          if (h.type === "pax-header") this.pax = this.paxGlobal === null ? {} : Object.assign({}, this.paxGlobal);
          else if (h.type === "pax-global-header") this.paxGlobal = {};
        }
        continue;
      }
      if (this.gnuLongPath) h.name = this.gnuLongPath;
      if (this.gnuLongLinkPath) h.linkname = this.gnuLongLinkPath;
      this.gnuLongPath = this.gnuLongLinkPath = null;
      if (this.pax) {
        if (this.pax["path"]) h.name = this.pax["path"];
        if (this.pax["linkpath"]) h.linkname = this.pax["linkpath"];
        if (this.pax["size"]) h.size = parseInt(this.pax["size"], 10);
        this.pax = null;
      }
      if (!(h.size !== null && h.size >= 0)) throw new Error("Invalid header");
      // A directory's content (size > 0 is malformed) is skipped, as GNU tar does.
      this.emit = h.type !== "directory";
      this.dataLeft = h.size;
      this.padLeft = overflow(h.size);
      yield { kind: "entry", header: h };
    }
  }

  /** Throws unless the archive ended on an entry boundary. */
  end(): void {
    if (this.dataLeft > 0 || this.padLeft > 0 || this.pendingBytes > 0 || this.long) throw new Error("Unexpected end of data");
  }
}

function overflow(size: number): number {
  const rem = size % 512;
  return rem && 512 - rem;
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
    if (!st.isDirectory()) throw new UnsafeLayerError(entry, `parent ${path.relative(root, cur)} is ${st.isSymbolicLink() ? "a symlink" : "not a directory"}; following it could leave the root`);
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

  constructor(private readonly root: string, private readonly opts: ExtractOptions) {
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
      if (chown) fchownSync(fd, h.uid ?? 0, h.gid ?? 0);
      let exact = mode & 0o7000 ? false : this.exactModes.get(mode);
      if (exact === undefined) {
        exact = (fstatSync(fd).mode & 0o7777) === mode;
        this.exactModes.set(mode, exact);
      }
      if (!exact) fchmodSync(fd, mode);
      const t = h.mtime ?? 0;
      futimesSync(fd, t, t);
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
      if (!st) mkdirSync(abs, { mode: 0o755 }); // inherits setgid from a setgid parent
      else if (st.isSymbolicLink()) throw new UnsafeLayerError(rel, `parent ${cur} is a symlink; writing through it could leave the root`);
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
    if (++this.entries > this.maxEntries) throw new UnsafeLayerError(h.name, `the layer has more than ${this.maxEntries} entries (maxEntries); refusing it as a possible decompression bomb`);
    if ((h.size ?? 0) > this.maxBytes) throw new UnsafeLayerError(h.name, `the entry claims ${h.size} bytes, more than the ${this.maxBytes}-byte limit (maxBytes)`);
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
    if ((h.type === "character-device" || h.type === "block-device") && !this.opts.allowDevices && !(h.type === "character-device" && !h.devmajor && !h.devminor)) {
      this.warn(`skipped ${h.type === "character-device" ? "character" : "block"} device ${h.name} (${h.devmajor ?? 0}:${h.devminor ?? 0}): device nodes from untrusted layers are not created`);
      return;
    }
    const mode = (h.mode ?? 0o644) & 0o7777;
    const uid = h.uid ?? 0;
    const gid = h.gid ?? 0;
    const mtime = h.mtime ?? 0;
    switch (h.type) {
      case "directory":
        this.create(rel, target, true, () => mkdirSync(target, { mode }));
        chmodSync(target, mode);
        lchownSync(target, uid, gid);
        this.dirs.set(rel, (mode & 0o2000) !== 0);
        this.dirTimes.push([target, mtime]);
        return;
      case "file":
      case "contiguous-file": {
        let fd = -1;
        this.create(rel, target, false, () => {
          fd = openSync(target, "wx", mode);
        });
        const slash = rel.lastIndexOf("/");
        const chown = uid !== this.euid || gid !== this.egid || this.dirs.get(slash < 0 ? "" : rel.slice(0, slash)) !== false;
        this.file = { fd, h, mode, chown };
        if ((h.size ?? 0) === 0) this.finishFile();
        return;
      }
      case "symlink":
        this.create(rel, target, false, () => symlinkSync(h.linkname ?? "", target));
        lchownSync(target, uid, gid);
        lutimesSync(target, mtime, mtime);
        return;
      case "link": {
        const existing = lstatMaybe(target);
        if (existing) this.remove(rel, target);
        const linkRel = safeEntryPath(h.linkname ?? "");
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
        throw new UnsafeLayerError(h.name, `unsupported entry type ${h.type}`);
    }
  }

  /** Device nodes and fifos: made by mknod / mkfifo. */
  private async special(h: TarHeader, rel: string, target: string, mode: number, uid: number, gid: number, mtime: number): Promise<void> {
    if (lstatMaybe(target)) this.remove(rel, target);
    const { execa } = await import("execa");
    if (h.type === "fifo") await execa("mkfifo", ["-m", mode.toString(8), target]);
    else await execa("mknod", ["-m", mode.toString(8), target, h.type === "character-device" ? "c" : "b", String(h.devmajor ?? 0), String(h.devminor ?? 0)]);
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
        if (total > maxBytes) throw new UnsafeLayerError("(layer)", `the uncompressed layer is larger than the ${maxBytes}-byte limit (maxBytes); refusing it as a possible decompression bomb`);
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
      if (!st.isDirectory()) throw new UnsafeLayerError(o, "an opaque-directory marker's directory was replaced by a non-directory");
    }
    opaque.push(o);
  }
  // setfattr takes many paths: one process per few hundred opaque directories, not one each.
  for (let i = 0; i < opaque.length; i += 200) await execa!("setfattr", ["-h", "-n", "trusted.overlay.opaque", "-v", "y", ...opaque.slice(i, i + 200)]);
  // Directory mtimes last, since creating children changes them.
  for (const [d, t] of x.dirTimes.reverse()) {
    // A later entry may have replaced the directory with a symlink: never follow it.
    if (lstatMaybe(d)?.isDirectory()) lutimesSync(d, t, t);
  }
  return ("sha256:" + hash.digest("hex")) as Digest;
}
