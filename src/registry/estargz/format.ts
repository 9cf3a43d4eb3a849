/**
 * The eStargz format (stargz-snapshotter `estargz/{types,gzip}.go`, v0.12): the 51-byte footer, the TOC
 * (`stargz.index.json`) and its JSON encoding, annotation keys and landmark names. Pure: no I/O.
 *
 * The TOC JSON is encoded the way Go's `json.MarshalIndent(toc, "", "\t")` encodes the reference writer's `JTOC`
 * (field order, `omitempty`, HTML-safe string escapes, base64 xattrs), so the same entries give the same bytes —
 * and so the same `toc.digest` — as the reference implementation.
 */
import { UnsupportedImageError } from "../errors.js";
import { isDigest, type Digest } from "../../util/digest.js";

/** Annotation on the layer descriptor: sha256 of the uncompressed TOC JSON. */
export const TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest";
/** Annotation on the layer descriptor: decimal size of the decompressed layer (the tar the diffID is taken of). */
export const UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size";
export const TOC_TAR_NAME = "stargz.index.json";
export const PREFETCH_LANDMARK = ".prefetch.landmark";
export const NO_PREFETCH_LANDMARK = ".no.prefetch.landmark";
/** A landmark file's single byte of content. */
export const LANDMARK_CONTENTS = 0x0f;
export const FOOTER_SIZE = 51;
export const LEGACY_FOOTER_SIZE = 47;
/** The reference writer's default chunk size (4 MiB). */
export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;

export type TocEntryType = "dir" | "reg" | "symlink" | "hardlink" | "char" | "block" | "fifo" | "chunk";

/** One TOC entry (the reference's `TOCEntry`); optional fields are absent when zero. */
export interface TocEntry {
  /** The name as stored in the tar (directories keep their trailing `/`). */
  name: string;
  type: TocEntryType;
  /** Size of a `reg` file (absent for empty files). */
  size?: number;
  /** RFC 3339, UTC, whole seconds; absent for Unix 0. */
  modtime?: string;
  linkName?: string;
  /** Permission bits plus setuid/setgid/sticky, as in the tar header. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Emitted only on the first entry with a given uid (readers carry it forward). */
  userName?: string;
  groupName?: string;
  /** Byte offset in the blob of the gzip member holding this `reg`/`chunk` payload. */
  offset?: number;
  /** Offset of the payload inside the decompressed member (several payloads in one member; absent = 0). */
  innerOffset?: number;
  devMajor?: number;
  devMinor?: number;
  /** xattr name → base64 of the value. */
  xattrs?: Record<string, string>;
  /** `sha256:` of the whole file (`reg` only, empty files included). */
  digest?: string;
  chunkOffset?: number;
  /** Decompressed size of this chunk; absent on a last chunk shorter than the chunk size. */
  chunkSize?: number;
  chunkDigest?: string;
}

export interface Toc {
  version: number;
  entries: TocEntry[];
}

// ---------------------------------------------------------------------------------------------------------------
// Footer

/**
 * The 51-byte footer: an empty gzip member whose Extra field holds subfield `SG` with `%016x` of the TOC offset
 * followed by `STARGZ` (`estargz/gzip.go gzipFooterBytes`).
 */
export function footerBytes(tocOffset: number): Buffer {
  if (!Number.isSafeInteger(tocOffset) || tocOffset < 0) throw new RangeError(`invalid TOC offset ${tocOffset}`);
  const b = Buffer.alloc(FOOTER_SIZE);
  Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff]).copy(b, 0);
  b.writeUInt16LE(26, 10); // XLEN
  b.write("SG", 12, "latin1");
  b.writeUInt16LE(22, 14); // subfield LEN
  b.write(tocOffset.toString(16).padStart(16, "0") + "STARGZ", 16, "latin1");
  Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff]).copy(b, 38); // an empty final stored block
  // CRC32 and ISIZE of the empty payload: 8 zero bytes (already zero).
  return b;
}

/** The TOC offset named by a footer (the last 51 bytes of the blob; the 47-byte legacy stargz footer is also read). */
export function parseFooter(tail: Uint8Array, where: string): { tocOffset: number; footerSize: number } {
  const buf = Buffer.from(tail.buffer, tail.byteOffset, tail.byteLength);
  const bad = (why: string): UnsupportedImageError =>
    new UnsupportedImageError(
      `${where} has no valid eStargz footer (${why}); it is not an eStargz layer or it is truncated`,
    );
  const hexOffset = (s: string): number => {
    if (!/^[0-9a-f]{16}$/.test(s)) throw bad(`TOC offset "${s}" is not 16 hex digits`);
    const v = Number.parseInt(s, 16);
    if (!Number.isSafeInteger(v)) throw bad("TOC offset out of range");
    return v;
  };
  if (buf.length >= FOOTER_SIZE) {
    const f = buf.subarray(buf.length - FOOTER_SIZE);
    if (
      f[0] === 0x1f &&
      f[1] === 0x8b &&
      f[2] === 0x08 &&
      (f[3]! & 0x04) !== 0 &&
      f.readUInt16LE(10) === 26 &&
      f.toString("latin1", 12, 14) === "SG" &&
      f.readUInt16LE(14) === 22
    ) {
      if (f.toString("latin1", 32, 38) !== "STARGZ") throw bad('subfield "SG" does not end with "STARGZ"');
      return { tocOffset: hexOffset(f.toString("latin1", 16, 32)), footerSize: FOOTER_SIZE };
    }
  }
  if (buf.length >= LEGACY_FOOTER_SIZE) {
    const f = buf.subarray(buf.length - LEGACY_FOOTER_SIZE);
    if (
      f[0] === 0x1f &&
      f[1] === 0x8b &&
      f[2] === 0x08 &&
      (f[3]! & 0x04) !== 0 &&
      f.readUInt16LE(10) === 22 &&
      f.toString("latin1", 28, 34) === "STARGZ"
    ) {
      return { tocOffset: hexOffset(f.toString("latin1", 12, 28)), footerSize: LEGACY_FOOTER_SIZE };
    }
  }
  throw bad("the last 51 bytes are not a gzip member with an SG extra field");
}

// ---------------------------------------------------------------------------------------------------------------
// TOC JSON, encoded as Go's encoding/json MarshalIndent does

const HEX = "0123456789abcdef";

/** A JSON string literal as Go's encoding/json writes it (HTML-safe: `<`, `>`, `&`, U+2028, U+2029 escaped). */
export function goJsonString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || ch === "<" || ch === ">" || ch === "&") out += "\\u00" + HEX[c >> 4]! + HEX[c & 0xf]!;
    else if (c === 0x2028 || c === 0x2029) out += `\\u${c.toString(16)}`;
    else if (c >= 0xd800 && c <= 0xdfff)
      out += "\\ufffd"; // a lone surrogate is not valid UTF-8
    else out += ch;
  }
  return out + '"';
}

/** TOCEntry fields in Go struct order; all but name/type are `omitempty`. */
const FIELD_ORDER: readonly (keyof TocEntry)[] = [
  "name",
  "type",
  "size",
  "modtime",
  "linkName",
  "mode",
  "uid",
  "gid",
  "userName",
  "groupName",
  "offset",
  "innerOffset",
  "devMajor",
  "devMinor",
  "xattrs",
  "digest",
  "chunkOffset",
  "chunkSize",
  "chunkDigest",
];

const byBytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));

function encodeEntry(e: TocEntry, indent: string): string {
  const inner = indent + "\t";
  const parts: string[] = [];
  for (const k of FIELD_ORDER) {
    const v = e[k];
    if (k !== "name" && k !== "type") {
      if (v === undefined || v === 0 || v === "") continue;
      if (k === "xattrs" && Object.keys(v as Record<string, string>).length === 0) continue;
    }
    let value: string;
    if (k === "xattrs") {
      const x = v as Record<string, string>;
      const keys = Object.keys(x).sort(byBytes);
      value = `{\n${keys.map((name) => `${inner}\t${goJsonString(name)}: ${goJsonString(x[name]!)}`).join(",\n")}\n${inner}}`;
    } else if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new RangeError(`TOC field ${k} of ${e.name} is not an integer: ${v}`);
      value = String(v);
    } else {
      value = goJsonString(String(v ?? ""));
    }
    parts.push(`${inner}${goJsonString(k)}: ${value}`);
  }
  return `${indent}{\n${parts.join(",\n")}\n${indent}}`;
}

/** The TOC's JSON bytes, identical to the reference writer's `json.MarshalIndent(toc, "", "\t")` (no trailing newline). */
export function encodeToc(toc: Toc): Buffer {
  const entries =
    toc.entries.length === 0 ? "[]" : `[\n${toc.entries.map((e) => encodeEntry(e, "\t\t")).join(",\n")}\n\t]`;
  return Buffer.from(`{\n\t"version": ${toc.version},\n\t"entries": ${entries}\n}`, "utf8");
}

/** RFC 3339 as Go's `time.RFC3339` formats a UTC time with whole seconds; undefined for Unix 0 (omitted). */
export function formatModtime(seconds: number): string | undefined {
  if (seconds === 0 || !Number.isFinite(seconds)) return undefined;
  return new Date(Math.floor(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

const NEEDS_CLEANING = /^\/|\/\/|(^|\/)\.\.?(\/|$)/;

/** `clean("/" + name)` without the leading `/` (how readers key entries; `""` is the root). */
export function cleanEntryName(name: string): string {
  // Fast path (every name our writer and the reference writer emit): relative, no `.`/`..`/empty segments.
  if (!NEEDS_CLEANING.test(name)) return name.endsWith("/") ? name.slice(0, -1) : name;
  const out: string[] = [];
  for (const p of name.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") out.pop();
    else out.push(p);
  }
  return out.join("/");
}

// ---------------------------------------------------------------------------------------------------------------
// TOC parsing and validation (untrusted input)

const TYPES = new Set<string>(["dir", "reg", "symlink", "hardlink", "char", "block", "fifo", "chunk"]);
const INT_FIELDS = [
  "size",
  "mode",
  "uid",
  "gid",
  "offset",
  "innerOffset",
  "devMajor",
  "devMinor",
  "chunkOffset",
  "chunkSize",
] as const;
const STRING_FIELDS = ["modtime", "linkName", "userName", "groupName", "digest", "chunkDigest"] as const;
const INT_FIELD_SET = new Set<string>(INT_FIELDS);
const STRING_FIELD_SET = new Set<string>(STRING_FIELDS);

/** The error for a TOC that breaks the format. */
function invalidToc(where: string, why: string): UnsupportedImageError {
  return new UnsupportedImageError(`${where}: invalid eStargz TOC (${why})`);
}

/**
 * Parses and checks TOC JSON from an untrusted layer: known entry types, integer fields, digests in
 * `sha256:<hex>` form, payload offsets inside `[0, tocOffset)` and increasing, chunks contiguous and covering
 * their file, a `chunkDigest` (or, for unchunked files, a `digest`) on every payload.
 */
export function parseToc(json: Buffer, tocOffset: number, where: string): Toc {
  const entries = parseTocEntries(json, where);
  for (let i = 0; i < entries.length; i++) checkTocEntry(entries[i]!, i, where);
  checkTocLayout(entries, tocOffset, where);
  return { version: 1, entries };
}

/**
 * The first step of `parseToc`, for readers that check entries as they use them: the JSON parsed, its top level
 * checked, and each entry an object with a string name and a known type. Other fields are not checked yet:
 * `checkTocEntry` (per entry) and `checkTocLayout` (payload layout) must run before they are used.
 */
export function parseTocEntries(json: Buffer, where: string): TocEntry[] {
  let raw: unknown;
  try {
    raw = JSON.parse(json.toString("utf8"));
  } catch (e) {
    throw invalidToc(where, `not JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalidToc(where, "not a JSON object");
  const r = raw as Record<string, unknown>;
  if (typeof r["version"] !== "number" || r["version"] !== 1)
    throw invalidToc(where, `version ${JSON.stringify(r["version"])}; only version 1 is supported`);
  if (!Array.isArray(r["entries"])) throw invalidToc(where, "no entries array");
  const list = r["entries"] as unknown[];
  for (let i = 0; i < list.length; i++) {
    const v = list[i];
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw invalidToc(where, `entry ${i} is not an object`);
    const o = v as Record<string, unknown>;
    if (typeof o["name"] !== "string") throw invalidToc(where, `entry ${i} has no name`);
    if (typeof o["type"] !== "string" || !TYPES.has(o["type"]))
      throw invalidToc(where, `entry ${i} (${o["name"]}) has unknown type ${JSON.stringify(o["type"])}`);
  }
  return list as TocEntry[];
}

/**
 * Checks the fields of entry `i` (as `parseTocEntries` returned it) in place, not by copying (a TOC of 50k entries
 * is read on every lazy open): zero numbers and empty strings become undefined, as the reference writer omits them;
 * fields this reader does not know are ignored.
 */
export function checkTocEntry(e: TocEntry, i: number, where: string): void {
  const o = e as unknown as Record<string, unknown>;
  for (const k in o) {
    if (INT_FIELD_SET.has(k)) {
      const n = o[k];
      if (n === undefined || n === null || n === 0) o[k] = undefined;
      else if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0)
        throw invalidToc(where, `entry ${i} (${e.name}) has invalid ${k} ${JSON.stringify(n)}`);
    } else if (STRING_FIELD_SET.has(k)) {
      const s = o[k];
      if (s === undefined || s === null || s === "") o[k] = undefined;
      else if (typeof s !== "string") throw invalidToc(where, `entry ${i} (${e.name}) has invalid ${k}`);
    } else if (k === "xattrs") {
      const x = o[k];
      if (x === undefined || x === null) {
        o[k] = undefined;
        continue;
      }
      if (typeof x !== "object" || Array.isArray(x))
        throw invalidToc(where, `entry ${i} (${e.name}) has invalid xattrs`);
      let any = false;
      for (const [name, val] of Object.entries(x as Record<string, unknown>)) {
        if (typeof val !== "string") throw invalidToc(where, `entry ${i} (${e.name}) has a non-string xattr ${name}`);
        any = true;
      }
      if (!any) o[k] = undefined;
    }
  }
  if (e.digest !== undefined && !isDigest(e.digest))
    throw invalidToc(
      where,
      `entry ${i} (${e.name}) has digest ${JSON.stringify(e.digest)}; only sha256:<64 hex> is supported`,
    );
  if (e.chunkDigest !== undefined && !isDigest(e.chunkDigest))
    throw invalidToc(
      where,
      `entry ${i} (${e.name}) has chunkDigest ${JSON.stringify(e.chunkDigest)}; only sha256:<64 hex> is supported`,
    );
}

/**
 * Checks the payload layout of `entries[from, to)` (entries already checked by `checkTocEntry`; `from` starts a
 * file, not one of its chunks): offsets inside the content area and increasing, chunks contiguous and covering their
 * file, every payload verifiable. The whole list for a whole layer; one file and its chunks for a single read.
 */
export function checkTocLayout(
  entries: readonly TocEntry[],
  tocOffset: number,
  where: string,
  from = 0,
  to = entries.length,
): void {
  const bad = (why: string): UnsupportedImageError => invalidToc(where, why);
  let lastOffset = -1;
  let open: { entry: TocEntry; covered: number; size: number } | undefined;
  const closeOpen = (): void => {
    if (open && open.covered !== open.size)
      throw bad(`the chunks of ${open.entry.name} cover ${open.covered} of its ${open.size} bytes`);
    open = undefined;
  };
  for (let i = from; i < to; i++) {
    const e = entries[i]!;
    const payload = (e.type === "reg" && (e.size ?? 0) > 0) || e.type === "chunk";
    if (e.type === "chunk") {
      if (!open || cleanEntryName(open.entry.name) !== cleanEntryName(e.name))
        throw bad(`chunk entry ${e.name} does not follow its file`);
      if ((e.chunkOffset ?? 0) !== open.covered)
        throw bad(`chunk of ${e.name} at ${e.chunkOffset ?? 0}, expected ${open.covered}`);
    } else {
      closeOpen();
    }
    if (!payload) {
      if (e.offset !== undefined && e.type !== "reg") throw bad(`${e.type} entry ${e.name} has a payload offset`);
      continue;
    }
    if (e.offset === undefined) throw bad(`${e.name} has content but no offset`);
    if (e.offset >= tocOffset) throw bad(`${e.name} has offset ${e.offset}, at or after the TOC (${tocOffset})`);
    if (e.offset < lastOffset || (e.offset === lastOffset && (e.innerOffset ?? 0) === 0))
      throw bad(`offsets are not increasing at ${e.name} (${e.offset})`);
    lastOffset = e.offset;
    if (e.type === "reg") {
      if ((e.chunkOffset ?? 0) !== 0) throw bad(`${e.name} starts at chunk offset ${e.chunkOffset}`);
      open = { entry: e, covered: 0, size: e.size! };
    }
    const len = chunkLength(e, open!.size);
    if (len <= 0 || open!.covered + len > open!.size)
      throw bad(
        `chunk of ${e.name} at ${e.chunkOffset ?? 0} with size ${e.chunkSize ?? "(rest)"} does not fit its ${open!.size}-byte file`,
      );
    open!.covered += len;
    if (e.chunkDigest === undefined && !(e.type === "reg" && e.digest !== undefined && len === e.size))
      throw bad(`${e.name} has no chunkDigest, so its content cannot be verified`);
  }
  closeOpen();
}

/** Decompressed length of a `reg`/`chunk` payload: `chunkSize`, or the rest of the file when absent. */
export function chunkLength(e: TocEntry, fileSize: number): number {
  return e.chunkSize !== undefined && e.chunkSize > 0 ? e.chunkSize : fileSize - (e.chunkOffset ?? 0);
}

export function isTocDigest(s: string | undefined): s is Digest {
  return s !== undefined && isDigest(s);
}
