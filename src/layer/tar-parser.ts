/**
 * A synchronous, streaming tar reader for layer extraction: fed decompressed chunks, it reports each entry's header
 * and the pieces of its content, in order. Headers are decoded by `tar-decode.ts` (its rules for malformed fields,
 * extended headers and entry types); this file only cuts the stream into blocks. A zero block is skipped; an archive
 * that ends inside a header, an extended header, an entry or its padding is an error. Parsing in one synchronous pass
 * over each chunk, instead of a stream per entry, is what makes a 50,000-file layer cheap.
 */
import { TarFormatError } from "../errors.js";
import {
  BLOCK,
  decodeHeader,
  extendedHeaderSize,
  isExtendedHeader,
  TarExtensions,
  type TarHeader,
} from "./tar-decode.js";

/** What the parser reports: an entry header, or a piece of the current entry's content (`last` on its final piece). */
export type TarEvent = { kind: "entry"; header: TarHeader } | { kind: "data"; chunk: Buffer; last: boolean };

export class TarParser {
  /** Bytes of an incomplete header block (or extended header body) carried over to the next chunk. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Content bytes of the current entry still to come. */
  private dataLeft = 0;
  /** The extended header whose body is being collected, and where it starts. */
  private long: { header: TarHeader; offset: number } | undefined;
  private padLeft = 0;
  private readonly extensions = new TarExtensions();
  /** Bytes of the archive consumed so far (the offset of the next byte). */
  private consumed = 0;
  /** Where the current header block starts. */
  private headerAt = 0;

  constructor(private readonly where?: string) {}

  /** The events of one chunk, in order; the caller handles each before asking for the next. */
  *feed(chunk: Buffer): Generator<TarEvent> {
    let off = 0;
    const len = chunk.length;
    while (off < len) {
      if (this.dataLeft > 0 && !this.long) {
        const n = Math.min(this.dataLeft, len - off);
        const piece = chunk.subarray(off, off + n);
        off += n;
        this.consumed += n;
        this.dataLeft -= n;
        yield { kind: "data", chunk: piece, last: this.dataLeft === 0 };
        continue;
      }
      if (this.padLeft > 0) {
        const n = Math.min(this.padLeft, len - off);
        off += n;
        this.consumed += n;
        this.padLeft -= n;
        continue;
      }
      // A header block, or the body of an extended header: both are collected whole before being decoded.
      const need = this.long ? this.long.header.size : BLOCK;
      if (this.pendingBytes === 0) this.headerAt = this.consumed;
      let block: Buffer;
      if (this.pendingBytes === 0 && len - off >= need) {
        block = chunk.subarray(off, off + need);
        off += need;
        this.consumed += need;
      } else {
        const n = Math.min(need - this.pendingBytes, len - off);
        this.pending.push(Buffer.from(chunk.subarray(off, off + n)));
        this.pendingBytes += n;
        off += n;
        this.consumed += n;
        if (this.pendingBytes < need) return;
        block = Buffer.concat(this.pending, this.pendingBytes);
        this.pending = [];
        this.pendingBytes = 0;
      }
      if (this.long) {
        const { header, offset } = this.long;
        this.long = undefined;
        this.padLeft = overflow(header.size);
        this.extensions.add(header, block, { offset, where: this.where });
        continue;
      }
      const at = { offset: this.headerAt, where: this.where };
      const h = decodeHeader(block, at);
      if (!h) continue;
      if (isExtendedHeader(h.type)) {
        const size = extendedHeaderSize(h, at);
        if (size > 0) this.long = { header: h, offset: this.headerAt };
        else this.extensions.add(h, Buffer.alloc(0), at);
        continue;
      }
      this.extensions.apply(h, at);
      this.dataLeft = h.size;
      this.padLeft = overflow(h.size);
      yield { kind: "entry", header: h };
    }
  }

  /** Throws unless the archive ended on an entry boundary. */
  end(): void {
    if (this.dataLeft > 0 || this.padLeft > 0 || this.pendingBytes > 0 || this.long || this.extensions.pending) {
      throw new TarFormatError(
        "end of archive",
        this.consumed,
        "comes inside a header, an extended header, an entry or its padding",
        this.where,
      );
    }
  }
}

function overflow(size: number): number {
  const rem = size % BLOCK;
  return rem && BLOCK - rem;
}
