/**
 * A small, deterministic tar (ustar + PAX) header encoder. Pure: entry metadata in, 512-byte blocks out. PAX
 * extended headers are written only when a field does not fit ustar (long names or link targets, large ids,
 * sizes over 8 GiB), so the same entries always give the same bytes.
 */

export type TarEntryType = "file" | "link" | "symlink" | "character-device" | "block-device" | "directory" | "fifo";

/** OCI whiteout names: `.wh.<name>` deletes `<name>`; this one makes its directory opaque. */
export const OPAQUE_WHITEOUT = ".wh..wh..opq";
export const WHITEOUT_PREFIX = ".wh.";

export interface TarEntry {
  name: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
}

const TYPEFLAG: Record<TarEntryType, string> = {
  file: "0",
  link: "1",
  symlink: "2",
  "character-device": "3",
  "block-device": "4",
  directory: "5",
  fifo: "6",
};

export const BLOCK = 512;
const MAX_OCTAL_8 = 0o7777777; // 7 digits + NUL
const MAX_OCTAL_12 = 0o77777777777; // 11 digits + NUL

function writeString(buf: Buffer, offset: number, length: number, value: Buffer): void {
  value.copy(buf, offset, 0, Math.min(length, value.length));
}

function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  const digits = Math.max(0, Math.floor(value))
    .toString(8)
    .padStart(length - 1, "0");
  buf.write(digits + "\0", offset, length, "ascii");
}

/** Splits a name into ustar prefix (≤155 bytes) and name (≤100 bytes) at a `/`, if possible. */
function splitName(name: Buffer): { prefix: Buffer; name: Buffer } | undefined {
  if (name.length <= 100) return { prefix: Buffer.alloc(0), name };
  if (name.length > 256) return undefined;
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== 0x2f) continue;
    const prefix = name.subarray(0, i);
    const rest = name.subarray(i + 1);
    if (prefix.length <= 155 && rest.length <= 100 && rest.length > 0) return { prefix, name: rest };
  }
  return undefined;
}

/** One PAX record: `<len> <key>=<value>\n`, where len counts the whole record including itself. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  let len = bodyLen + String(bodyLen).length;
  if (String(len).length !== String(bodyLen).length) len = bodyLen + String(len).length;
  return `${len}${body}`;
}

function ustarHeader(
  e: TarEntry,
  name: Buffer,
  prefix: Buffer,
  linkname: Buffer,
  typeflag: string,
  size: number,
): Buffer {
  const h = Buffer.alloc(BLOCK);
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, e.mode & 0o7777);
  writeOctal(h, 108, 8, Math.min(e.uid, MAX_OCTAL_8));
  writeOctal(h, 116, 8, Math.min(e.gid, MAX_OCTAL_8));
  writeOctal(h, 124, 12, Math.min(size, MAX_OCTAL_12));
  writeOctal(h, 136, 12, Math.min(Math.max(0, e.mtime), MAX_OCTAL_12));
  h.fill(0x20, 148, 156); // checksum placeholder: spaces
  h.write(typeflag, 156, 1, "ascii");
  writeString(h, 157, 100, linkname);
  h.write("ustar\0", 257, 6, "ascii");
  h.write("00", 263, 2, "ascii");
  // uname/gname stay empty: ids are numeric only.
  writeOctal(h, 329, 8, e.devmajor ?? 0);
  writeOctal(h, 337, 8, e.devminor ?? 0);
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "ascii");
  return h;
}

/** Padding after `size` bytes of content. */
export function padding(size: number): Buffer {
  const rem = size % BLOCK;
  return rem === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rem);
}

/** The header block(s) for an entry: an optional PAX header (+ its records) and the ustar header. */
export function encodeHeader(e: TarEntry): Buffer {
  const fullName = Buffer.from(e.name, "utf8");
  const link = Buffer.from(e.linkname ?? "", "utf8");
  const records: string[] = [];
  let split = splitName(fullName);
  if (!split) {
    records.push(paxRecord("path", fullName.toString("utf8")));
    split = { prefix: Buffer.alloc(0), name: fullName.subarray(0, 100) };
  }
  if (link.length > 100) records.push(paxRecord("linkpath", link.toString("utf8")));
  if (e.uid > MAX_OCTAL_8) records.push(paxRecord("uid", String(e.uid)));
  if (e.gid > MAX_OCTAL_8) records.push(paxRecord("gid", String(e.gid)));
  if (e.size > MAX_OCTAL_12) records.push(paxRecord("size", String(e.size)));
  const size = e.type === "file" ? e.size : 0;
  const main = ustarHeader(e, split.name, split.prefix, link.subarray(0, 100), TYPEFLAG[e.type], size);
  if (records.length === 0) return main;
  const pax = Buffer.from(records.sort().join(""), "utf8");
  const paxName = Buffer.from(
    `PaxHeaders/${fullName.toString("utf8").replace(/\/$/, "").split("/").pop() ?? ""}`.slice(0, 100),
    "utf8",
  );
  const paxHeader = ustarHeader(
    { ...e, mode: 0o644, uid: 0, gid: 0 },
    paxName,
    Buffer.alloc(0),
    Buffer.alloc(0),
    "x",
    pax.length,
  );
  return Buffer.concat([paxHeader, pax, padding(pax.length), main]);
}

/** The two zero blocks that end an archive. */
export function endOfArchive(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}
