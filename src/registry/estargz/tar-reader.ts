/**
 * A streaming tar reader that keeps each entry's raw header bytes (PAX and GNU long-name blocks included), so the
 * eStargz writer can pass headers through unchanged: the converted layer carries exactly the metadata of the
 * original (xattrs, user names, long names) without re-encoding it. Headers are decoded by `layer/tar-decode.ts`,
 * with its rules for malformed fields (a `TarFormatError`); what is refused here is what conversion does not support.
 */
import {
  BLOCK,
  decodeHeader,
  extendedHeaderSize,
  isExtendedHeader,
  isZeroBlock,
  TarExtensions,
} from "../../layer/tar-decode.js";
import { UnsupportedImageError } from "../errors.js";

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
    const ext = new TarExtensions();
    for (;;) {
      const at = { offset: this.src.consumed, where: this.where };
      const block = await this.src.read(BLOCK);
      if (block.length === 0 && raw.length === 0) return undefined;
      if (block.length < BLOCK) throw new UnsupportedImageError(`${this.where}: the tar stream ends inside a header`);
      if (isZeroBlock(block)) {
        if (raw.length) throw new UnsupportedImageError(`${this.where}: the tar stream ends after an extended header`);
        await this.src.drain();
        return undefined;
      }
      const h = decodeHeader(block, at)!;
      if (h.type === "pax-global-header")
        throw new UnsupportedImageError(
          `${this.where}: the layer has a PAX global header, which eStargz conversion does not support`,
        );
      if (isExtendedHeader(h.type)) {
        const size = extendedHeaderSize(h, at);
        const body = await this.src.read(size + ((BLOCK - (size % BLOCK)) % BLOCK));
        if (body.length < size)
          throw new UnsupportedImageError(`${this.where}: the tar stream ends inside an extended header`);
        raw.push(block, body);
        ext.add(h, body.subarray(0, size), at);
        continue;
      }
      if (h.type === "unknown")
        throw new UnsupportedImageError(`${this.where}: unsupported tar entry type ${JSON.stringify(h.typeflag)}`);
      raw.push(block);
      ext.apply(h, at);
      return { ...h, type: h.type as RawEntryType, raw: Buffer.concat(raw), xattrs: h.xattrs ?? new Map() };
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
    if (pad && (await this.src.read(pad)).length < pad)
      throw new UnsupportedImageError(`${this.where}: the tar stream ends inside padding`);
  }
}
