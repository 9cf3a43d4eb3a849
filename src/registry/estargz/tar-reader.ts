/**
 * A streaming tar reader that keeps each entry's raw header bytes (PAX and GNU long-name blocks included), so the
 * eStargz writer can pass headers through unchanged: the converted layer carries exactly the metadata of the
 * original (xattrs, user names, long names) without re-encoding it.
 */
import { UnsupportedImageError } from "../errors.js";

const BLOCK = 512;

export type RawEntryType = "file" | "link" | "symlink" | "character-device" | "block-device" | "directory" | "fifo";

export interface RawTarEntry {
  /** Every header block of this entry (PAX `x` header + records, GNU `L`/`K` blocks, the main header). */
  raw: Buffer;
  name: string;
  type: RawEntryType;
  /** Permission bits plus setuid/setgid/sticky (what the header's mode field holds). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Seconds since the epoch (whole seconds). */
  mtime: number;
  size: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** `SCHILY.xattr.<name>` PAX records: name → raw value bytes. */
  xattrs: Map<string, Buffer>;
}

/** Pulls exact byte counts out of an async byte stream. */
export class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>;
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  /** Bytes handed out so far. */
  consumed = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<void> {
    const parts: Buffer[] = [this.buf];
    let have = this.buf.length;
    while (have < n && !this.done) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        break;
      }
      const b = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      parts.push(b);
      have += b.length;
    }
    if (parts.length > 1) this.buf = Buffer.concat(parts, have);
  }

  /** Exactly `n` bytes, or fewer at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    if (this.buf.length < n) await this.fill(n);
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    this.consumed += out.length;
    return out;
  }

  /** Up to `max` bytes (at least 1 unless the stream ended), without waiting for more than one source chunk. */
  async readSome(max: number): Promise<Buffer> {
    if (this.buf.length === 0) await this.fill(1);
    const out = this.buf.subarray(0, Math.min(max, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    this.consumed += out.length;
    return out;
  }

  /** Reads and discards the rest of the stream. */
  async drain(): Promise<void> {
    this.consumed += this.buf.length;
    this.buf = Buffer.alloc(0);
    while (!this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.consumed += r.value.byteLength;
    }
  }
}

function cstring(b: Buffer, off: number, len: number): Buffer {
  const s = b.subarray(off, off + len);
  const nul = s.indexOf(0);
  return nul === -1 ? s : s.subarray(0, nul);
}

/** A numeric header field: octal (NUL/space terminated), or GNU base-256 when the high bit of the first byte is set. */
function numeric(b: Buffer, off: number, len: number, field: string, where: string): number {
  const f = b.subarray(off, off + len);
  if (f[0]! & 0x80) {
    if (f[0] === 0xff) throw new UnsupportedImageError(`${where}: negative base-256 ${field} in a tar header`);
    let v = f[0]! & 0x7f;
    for (let i = 1; i < f.length; i++) {
      v = v * 256 + f[i]!;
      if (!Number.isSafeInteger(v)) throw new UnsupportedImageError(`${where}: ${field} in a tar header is too large`);
    }
    return v;
  }
  const s = f.toString("latin1").replace(/[\0 ]+$/, "").replace(/^[ \0]+/, "").split("\0")[0]!.trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new UnsupportedImageError(`${where}: ${field} field "${s}" of a tar header is not octal`);
  return Number.parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = numeric(h, 148, 8, "checksum", "tar");
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

/** PAX records (`<len> key=value\n`); values stay raw bytes (xattr values are binary). */
function parsePax(data: Buffer, where: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) break;
    const sp = data.indexOf(0x20, i);
    if (sp === -1) throw new UnsupportedImageError(`${where}: malformed PAX record`);
    const len = Number(data.toString("latin1", i, sp));
    if (!Number.isSafeInteger(len) || len <= sp - i || i + len > data.length || data[i + len - 1] !== 0x0a) throw new UnsupportedImageError(`${where}: malformed PAX record`);
    const rec = data.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq === -1) throw new UnsupportedImageError(`${where}: PAX record without "="`);
    out.set(rec.toString("utf8", 0, eq), rec.subarray(eq + 1));
    i += len;
  }
  return out;
}

const TYPES: Record<string, RawEntryType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "link",
  "2": "symlink",
  "3": "character-device",
  "4": "block-device",
  "5": "directory",
  "6": "fifo",
};

/**
 * Reads tar entries from `src`. For each entry the caller must consume exactly `entry.size` content bytes plus
 * padding via `readContent`/`skipContent` before asking for the next one. Ends at the end-of-archive marker (or at a
 * clean end of stream); anything after the marker is drained.
 */
export class RawTarReader {
  constructor(
    private readonly src: ByteReader,
    private readonly where: string,
  ) {}

  async next(): Promise<RawTarEntry | undefined> {
    const raw: Buffer[] = [];
    let pax: Map<string, Buffer> | undefined;
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const h = await this.src.read(BLOCK);
      if (h.length === 0 && raw.length === 0) return undefined;
      if (h.length < BLOCK) throw new UnsupportedImageError(`${this.where}: the tar stream ends inside a header`);
      if (h.every((b) => b === 0)) {
        if (raw.length) throw new UnsupportedImageError(`${this.where}: the tar stream ends after an extended header`);
        await this.src.drain();
        return undefined;
      }
      if (!checksumOk(h)) throw new UnsupportedImageError(`${this.where}: tar header checksum mismatch at byte ${this.src.consumed - BLOCK}; the layer is corrupt or not a tar`);
      const flag = String.fromCharCode(h[156]!);
      const size = numeric(h, 124, 12, "size", this.where);
      if (flag === "x" || flag === "L" || flag === "K") {
        if (size > 1 << 20) throw new UnsupportedImageError(`${this.where}: a ${flag} extended header of ${size} bytes is larger than 1 MiB`);
        const body = await this.src.read(size + ((BLOCK - (size % BLOCK)) % BLOCK));
        if (body.length < size) throw new UnsupportedImageError(`${this.where}: the tar stream ends inside an extended header`);
        raw.push(h, body);
        const data = body.subarray(0, size);
        if (flag === "x") pax = new Map([...(pax ?? []), ...parsePax(data, this.where)]);
        else if (flag === "L") longName = cstring(data, 0, data.length).toString("utf8");
        else longLink = cstring(data, 0, data.length).toString("utf8");
        continue;
      }
      if (flag === "g") throw new UnsupportedImageError(`${this.where}: the layer has a PAX global header, which eStargz conversion does not support`);
      const type = TYPES[flag];
      if (!type) throw new UnsupportedImageError(`${this.where}: unsupported tar entry type ${JSON.stringify(flag)}`);
      raw.push(h);
      const ustar = h.toString("latin1", 257, 262) === "ustar";
      let name = cstring(h, 0, 100).toString("utf8");
      if (ustar) {
        const prefix = cstring(h, 345, 155).toString("utf8");
        if (prefix) name = `${prefix}/${name}`;
      }
      const entry: RawTarEntry = {
        raw: Buffer.concat(raw),
        name: longName ?? name,
        type: flag === "\0" && (longName ?? name).endsWith("/") ? "directory" : type,
        mode: numeric(h, 100, 8, "mode", this.where),
        uid: numeric(h, 108, 8, "uid", this.where),
        gid: numeric(h, 116, 8, "gid", this.where),
        uname: ustar ? cstring(h, 265, 32).toString("utf8") : "",
        gname: ustar ? cstring(h, 297, 32).toString("utf8") : "",
        mtime: numeric(h, 136, 12, "mtime", this.where),
        size,
        linkname: longLink ?? cstring(h, 157, 100).toString("utf8"),
        devmajor: ustar ? numeric(h, 329, 8, "devmajor", this.where) : 0,
        devminor: ustar ? numeric(h, 337, 8, "devminor", this.where) : 0,
        xattrs: new Map(),
      };
      for (const [k, v] of pax ?? []) {
        const s = v.toString("utf8");
        if (k === "path") entry.name = s;
        else if (k === "linkpath") entry.linkname = s;
        else if (k === "size" || k === "uid" || k === "gid") {
          if (!/^\d+$/.test(s) || !Number.isSafeInteger(Number(s))) throw new UnsupportedImageError(`${this.where}: PAX ${k} "${s}" is not a number`);
          entry[k] = Number(s);
        } else if (k === "uname") entry.uname = s;
        else if (k === "gname") entry.gname = s;
        else if (k === "mtime") {
          const t = Number(s);
          if (!Number.isFinite(t)) throw new UnsupportedImageError(`${this.where}: PAX mtime "${s}" is not a number`);
          entry.mtime = Math.floor(t);
        } else if (k.startsWith("SCHILY.xattr.")) entry.xattrs.set(k.slice("SCHILY.xattr.".length), v);
      }
      if (entry.type !== "file" && entry.size !== 0) {
        throw new UnsupportedImageError(`${this.where}: tar entry ${JSON.stringify(entry.name)} of type ${entry.type} claims ${entry.size} bytes of content`);
      }
      return entry;
    }
  }

  /** Streams `size` content bytes in pieces of at most `max` bytes, then consumes the padding. */
  async *content(size: number, max = 1 << 20): AsyncGenerator<Buffer> {
    let left = size;
    while (left > 0) {
      const b = await this.src.readSome(Math.min(max, left));
      if (b.length === 0) throw new UnsupportedImageError(`${this.where}: the tar stream ends inside a file's content`);
      left -= b.length;
      yield b;
    }
    await this.skipPadding(size);
  }

  async skipPadding(size: number): Promise<void> {
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if (pad && (await this.src.read(pad)).length < pad) throw new UnsupportedImageError(`${this.where}: the tar stream ends inside padding`);
  }
}
