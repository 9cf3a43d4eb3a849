/**
 * The one tar header decoder (ustar, GNU and PAX), for every reader: layer extraction (`tar-extract.ts`), the eStargz
 * writer's pass-through reader and the eStargz TOC entry. Pure: bytes in, fields out. One set of rules, each
 * violation a `TarFormatError` naming the field, the header's byte offset and the archive:
 *   - checksum: the header must sum (with its checksum field read as spaces) to the stored value, as unsigned bytes
 *     or, as some old tars wrote it, signed ones;
 *   - numbers, octal: leading spaces and NULs are skipped, then octal digits up to the end of the field or a NUL or
 *     space (what follows that terminator is not read); a field of only spaces and NULs is 0; any other byte is an
 *     error. Numbers, base-256 (GNU, the first byte's high bit set): big-endian two's complement; more than 2^53 is an
 *     error, and so is a negative value in any field but mtime (times before 1970 are valid);
 *   - strings: up to the first NUL, or the whole field; UTF-8;
 *   - format: magic `ustar\0` (POSIX; the prefix field applies), `ustar  \0` (GNU) or all NULs (v7); anything else is
 *     an error;
 *   - extended headers (PAX `x`, `g`; GNU `L`, `K`): at most 1 MiB each. A PAX record is `<len> <key>=<value>\n`
 *     with a decimal length that covers the record exactly; a NUL where a record would start ends them. PAX `size`,
 *     `uid` and `gid` must be decimal, `mtime` decimal seconds (a fraction is dropped); an empty value unsets the key.
 *     GNU long names end at their first NUL. Global records apply to every later entry, per-entry ones override them;
 *     PAX `path`/`linkpath` override GNU long names, which override the header's fields;
 *   - entries: a `0`/NUL entry whose name ends in `/` is a directory; only regular files carry content (any other
 *     entry with a non-zero size is an error, since readers disagree on whether to skip it); a type this decoder does
 *     not know is `unknown` (each reader says what it supports).
 */
import { TarFormatError } from "../errors.js";

export const BLOCK = 512;
/** The most bytes an extended header (PAX or GNU long name) may have. */
export const MAX_EXTENDED_HEADER_BYTES = 1 << 20;

export type TarEntryKind =
  | "file"
  | "link"
  | "symlink"
  | "character-device"
  | "block-device"
  | "directory"
  | "fifo"
  | "pax-header"
  | "pax-global-header"
  | "gnu-long-name"
  | "gnu-long-link"
  | "unknown";

/** A decoded header block; for an entry, with its extended headers applied (`applyExtensions`). */
export interface TarHeader {
  name: string;
  type: TarEntryKind;
  /** The raw type flag character. */
  typeflag: string;
  /** Permission bits plus setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch (whole seconds). */
  mtime: number;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  format: "ustar" | "gnu" | "v7";
  /** `SCHILY.xattr.<name>` PAX records (name → raw value bytes), when there are any. */
  xattrs?: Map<string, Buffer>;
}

/** Where a header is: its byte offset in the uncompressed archive, and the archive's name for messages. */
export interface TarPosition {
  offset: number;
  where?: string;
}

const fail = (at: TarPosition, field: string, problem: string) =>
  new TarFormatError(field, at.offset, problem, at.where);

const TYPES: Record<string, TarEntryKind> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "link",
  "2": "symlink",
  "3": "character-device",
  "4": "block-device",
  "5": "directory",
  "6": "fifo",
  x: "pax-header",
  g: "pax-global-header",
  L: "gnu-long-name",
  K: "gnu-long-link",
};

/** Whether entries of this kind are extended headers that describe the next entry. */
export function isExtendedHeader(type: TarEntryKind): boolean {
  return type === "pax-header" || type === "pax-global-header" || type === "gnu-long-name" || type === "gnu-long-link";
}

const show = (b: Buffer) => JSON.stringify(b.toString("latin1"));

/** A numeric field (see the module comment for the rules); `field` names it in errors. */
export function decodeNumber(block: Buffer, offset: number, length: number, field: string, at: TarPosition): number {
  const end = offset + length;
  const first = block[offset]!;
  if (first & 0x80) return decodeBase256(block.subarray(offset, end), field, at);
  let i = offset;
  while (i < end && (block[i] === 32 || block[i] === 0)) i++;
  let n = 0;
  let k = i;
  for (; k < end; k++) {
    const c = block[k]!;
    if (c < 48 || c > 55) break;
    n = n * 8 + (c - 48);
  }
  if (k === end || block[k] === 0 || block[k] === 32) {
    if (!Number.isSafeInteger(n)) throw fail(at, field, `${show(block.subarray(offset, end))} is too large`);
    return n;
  }
  throw fail(at, field, `${show(block.subarray(offset, end))} is not an octal number`);
}

function decodeBase256(f: Buffer, field: string, at: TarPosition): number {
  const negative = (f[0]! & 0x40) !== 0;
  const inv = negative ? 0xff : 0;
  let v = 0;
  for (let i = 0; i < f.length; i++) {
    const c = (f[i]! ^ inv) & (i === 0 ? 0x7f : 0xff);
    v = v * 256 + c;
    if (v > Number.MAX_SAFE_INTEGER) throw fail(at, field, "is a base-256 number too large to represent");
  }
  if (!negative) return v;
  if (field !== "mtime") throw fail(at, field, `is negative (base-256 ${-v - 1})`);
  return -v - 1;
}

/** A NUL-terminated string field (the whole field if it has no NUL), as UTF-8. */
export function decodeString(block: Buffer, offset: number, length: number): string {
  let end = block.indexOf(0, offset);
  if (end < 0 || end > offset + length) end = offset + length;
  return block.toString("utf8", offset, end);
}

const USTAR_MAGIC = Buffer.from("ustar\0", "latin1");
const GNU_MAGIC = Buffer.from("ustar  \0", "latin1");

/** Whether `block` holds only zeros (an end-of-archive block). */
export function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** Decodes one 512-byte header block; null for a zero block (the end-of-archive marker). */
export function decodeHeader(block: Buffer, at: TarPosition): TarHeader | null {
  let unsigned = 8 * 32;
  let signed = 8 * 32;
  for (let i = 0; i < BLOCK; i++) {
    if (i === 148) i = 156;
    const c = block[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  if (unsigned === 8 * 32 && block[148] === 0 && isZeroBlock(block)) return null;
  const stored = decodeNumber(block, 148, 8, "checksum", at);
  if (stored !== unsigned && stored !== signed)
    throw fail(at, "checksum", `is ${stored} but the header sums to ${unsigned}`);
  let format: TarHeader["format"];
  if (block.compare(USTAR_MAGIC, 0, 6, 257, 263) === 0) format = "ustar";
  else if (block.compare(GNU_MAGIC, 0, 8, 257, 265) === 0) format = "gnu";
  else if (block.subarray(257, 265).every((b) => b === 0)) format = "v7";
  else throw fail(at, "magic", `${show(block.subarray(257, 265))} is not ustar, GNU or v7`);
  const typeflag = String.fromCharCode(block[156]!);
  let name = decodeString(block, 0, 100);
  if (format === "ustar" && block[345] !== 0) name = `${decodeString(block, 345, 155)}/${name}`;
  const extended = format !== "v7";
  return {
    name,
    type: TYPES[typeflag] ?? "unknown",
    typeflag,
    mode: decodeNumber(block, 100, 8, "mode", at),
    uid: decodeNumber(block, 108, 8, "uid", at),
    gid: decodeNumber(block, 116, 8, "gid", at),
    size: decodeNumber(block, 124, 12, "size", at),
    mtime: decodeNumber(block, 136, 12, "mtime", at),
    linkname: decodeString(block, 157, 100),
    uname: extended ? decodeString(block, 265, 32) : "",
    gname: extended ? decodeString(block, 297, 32) : "",
    devmajor: extended ? decodeNumber(block, 329, 8, "devmajor", at) : 0,
    devminor: extended ? decodeNumber(block, 337, 8, "devminor", at) : 0,
    format,
  };
}

/** The size of an extended header's body, refused beyond `MAX_EXTENDED_HEADER_BYTES`. */
export function extendedHeaderSize(h: TarHeader, at: TarPosition): number {
  if (h.size > MAX_EXTENDED_HEADER_BYTES)
    throw fail(at, "size", `of a ${h.type} is ${h.size} bytes, more than the ${MAX_EXTENDED_HEADER_BYTES}-byte limit`);
  return h.size;
}

/** PAX records (`<len> <key>=<value>\n`), values as raw bytes (xattr values are binary). */
export function parsePaxRecords(data: Buffer, at: TarPosition): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < data.length && data[i] !== 0) {
    const sp = data.indexOf(0x20, i);
    const digits = sp < 0 ? "" : data.toString("latin1", i, sp);
    if (!/^[0-9]{1,8}$/.test(digits))
      throw fail(at, "PAX record", `at byte ${i} of the extended header has no decimal length`);
    const len = Number(digits);
    if (len <= sp - i + 1 || i + len > data.length)
      throw fail(at, "PAX record", `at byte ${i} of the extended header claims ${len} bytes, which does not fit`);
    if (data[i + len - 1] !== 0x0a)
      throw fail(at, "PAX record", `at byte ${i} of the extended header does not end with a newline`);
    const rec = data.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw fail(at, "PAX record", `at byte ${i} of the extended header has no key=value`);
    out.set(rec.toString("utf8", 0, eq), rec.subarray(eq + 1));
    i += len;
  }
  return out;
}

/**
 * What the extended headers read so far say about the next entry: `add` each one's body as it is read, then
 * `apply` to the entry's header (which clears the per-entry part; global PAX records stay).
 */
export class TarExtensions {
  #global: Map<string, Buffer> | undefined;
  #pax: Map<string, Buffer> | undefined;
  #longName: string | undefined;
  #longLink: string | undefined;

  /** Whether an extended header is waiting for its entry (an archive may not end there). */
  get pending(): boolean {
    return this.#pax !== undefined || this.#longName !== undefined || this.#longLink !== undefined;
  }

  /** Records the body (exactly `h.size` bytes) of the extended header `h`. */
  add(h: TarHeader, body: Buffer, at: TarPosition): void {
    if (h.type === "gnu-long-name") this.#longName = decodeString(body, 0, body.length);
    else if (h.type === "gnu-long-link") this.#longLink = decodeString(body, 0, body.length);
    else if (h.type === "pax-global-header")
      this.#global = new Map([...(this.#global ?? []), ...parsePaxRecords(body, at)]);
    else this.#pax = new Map([...(this.#pax ?? []), ...parsePaxRecords(body, at)]);
  }

  /** `h` (an entry's header, changed in place) with the pending extended headers applied and checked. */
  apply(h: TarHeader, at: TarPosition): TarHeader {
    if (this.#longName) h.name = this.#longName;
    if (this.#longLink) h.linkname = this.#longLink;
    const records = this.#global && this.#pax ? new Map([...this.#global, ...this.#pax]) : (this.#pax ?? this.#global);
    this.#pax = this.#longName = this.#longLink = undefined;
    if (records) applyPax(h, records, at);
    if ((h.typeflag === "0" || h.typeflag === "\0") && h.name.endsWith("/")) h.type = "directory";
    if (h.type !== "file" && h.type !== "unknown" && h.size !== 0)
      throw fail(
        at,
        "size",
        `claims ${h.size} bytes of content for ${h.type} ${JSON.stringify(h.name)}, which has none`,
      );
    return h;
  }
}

function applyPax(h: TarHeader, records: Map<string, Buffer>, at: TarPosition): void {
  for (const [k, v] of records) {
    if (v.length === 0) continue;
    const s = v.toString("utf8");
    if (k === "path") h.name = s;
    else if (k === "linkpath") h.linkname = s;
    else if (k === "uname") h.uname = s;
    else if (k === "gname") h.gname = s;
    else if (k === "size" || k === "uid" || k === "gid") {
      if (!/^[0-9]+$/.test(s) || !Number.isSafeInteger(Number(s)))
        throw fail(at, `PAX ${k}`, `${JSON.stringify(s)} is not a decimal number`);
      h[k] = Number(s);
    } else if (k === "mtime") {
      if (!/^-?[0-9]+(\.[0-9]*)?$/.test(s) || !Number.isSafeInteger(Math.floor(Number(s))))
        throw fail(at, "PAX mtime", `${JSON.stringify(s)} is not a decimal number of seconds`);
      h.mtime = Math.floor(Number(s));
    } else if (k.startsWith("SCHILY.xattr.")) (h.xattrs ??= new Map()).set(k.slice("SCHILY.xattr.".length), v);
  }
}
