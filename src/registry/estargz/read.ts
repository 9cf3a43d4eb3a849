/**
 * eStargz reader: footer and TOC by ranged reads, the TOC checked against the descriptor's `toc.digest` annotation,
 * then either a few files (only the gzip members holding them are fetched; every chunk digest and file digest is
 * checked) or the whole layer (ranges fetched in parallel, gzip members decompressed concurrently on the thread pool,
 * emitted in order as the layer's tar stream; blob digest and diffID checked at the end).
 *
 * Reads go through a `RangeSource` (`range-source.ts`): a registry blob, a file, or a buffer. Nothing here trusts the
 * blob beyond what the digests prove.
 */
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { gunzip as gunzipCb, type ZlibOptions } from "node:zlib";
import pLimit from "p-limit";
import { DigestMismatchError } from "../../errors.js";
import type { Descriptor } from "../../oci/types.js";
import { isDigest, type Digest } from "../../util/digest.js";
import type { RegistryClient } from "../client.js";
import { decodeHeader } from "../../layer/tar-decode.js";
import { UnsupportedImageError } from "../errors.js";
import {
  checkTocEntry,
  checkTocLayout,
  chunkLength,
  cleanEntryName,
  FOOTER_SIZE,
  parseFooter,
  parseTocEntries,
  TOC_DIGEST_ANNOTATION,
  TOC_TAR_NAME,
  UNCOMPRESSED_SIZE_ANNOTATION,
  type Toc,
  type TocEntry,
} from "./format.js";
import { registrySource, type RangeSource } from "./range-source.js";

const gunzipAsync = promisify<Buffer, ZlibOptions, Buffer>(gunzipCb);
/** Smallest output chunk of a TOC's decompression: a TOC of 50k entries is megabytes, and each chunk is a callback and a copy. */
const TOC_INFLATE_CHUNK = 1024 * 1024;

/** True when a layer descriptor carries a valid eStargz TOC digest annotation. */
export function isEstargzLayer(d: Descriptor): boolean {
  const v = d.annotations?.[TOC_DIGEST_ANNOTATION];
  return v !== undefined && isDigest(v);
}

/** A file (or directory, link, device) of an eStargz layer, as `fetchFiles` returns it. */
export interface FetchedFile {
  /** Clean path inside the layer, no leading `/` (`etc/passwd`). */
  path: string;
  /** The TOC entry (type, mode, uid/gid, modtime, linkName, xattrs, devMajor/devMinor). */
  entry: TocEntry;
  /** Content of a regular file or of a hardlink's target (verified against every chunk digest and the file digest). */
  content?: Buffer;
}

export interface OpenOptions {
  /** The descriptor's `toc.digest` annotation; the TOC must hash to it. */
  tocDigest: Digest;
  /** Names the layer in messages. */
  where?: string;
  /** Bytes read from the end of the blob in the first request (default 64 KiB): usually footer and TOC at once. */
  tailBytes?: number;
  /** Largest TOC JSON accepted (default 64 MiB). */
  maxTocBytes?: number;
  /**
   * Parse the TOC on first use and check its content as it is used, instead of all of it in `open` (default false).
   * `open` still checks the TOC digest; an inconsistent entry is reported when a lookup returns it or its content is
   * fetched. For callers that may never consult this layer, or only a few of its files, such as a lazy image.
   */
  deferParse?: boolean;
}

export interface FetchFilesOptions {
  /** Include everything below requested directories (default false). */
  recursive?: boolean;
  /** Concurrent range requests (default 4). */
  concurrency?: number;
  /** Neighbouring members closer than this many bytes are fetched in one request (default 16 KiB). */
  gapBytes?: number;
}

export interface FetchAllOptions {
  /** Concurrent range requests (and decompressions) (default 4). */
  concurrency?: number;
  /** Target size of one range request, cut at member boundaries (default 4 MiB). */
  rangeBytes?: number;
  /** The blob must hash to this (default: not checked here). */
  digest?: Digest;
  /** The decompressed stream must hash to this (default: not checked). */
  diffId?: Digest;
  /** Also write the compressed blob to this file (e.g. to put it in the store once verified). */
  blobFile?: string;
}

export interface FetchAllResult {
  digest: Digest;
  diffId: Digest;
  size: number;
  uncompressedSize: number;
}

/** The payload of one gzip member: where it starts in the blob, where the next member starts. */
interface Span {
  start: number;
  end: number;
}

/**
 * The lookup structures of a parsed TOC. Payloads and member spans are not indexed: both follow from an entry's
 * position, since a file's chunks come right after it and payload offsets increase (`checkTocLayout`).
 */
interface TocIndex {
  /** Names and types checked (`parseTocEntries`); other fields only once `checked` says so. */
  entries: TocEntry[];
  /** Position in `entries` of each metadata entry, by clean path (chunks not included; the last of a name wins, as in the tar). */
  byPath: Map<string, number>;
  /** Every ancestor directory of an entry (directories may be implied without an entry of their own). */
  impliedDirs: Set<string>;
  /** Per entry: its fields checked (`checkTocEntry`). */
  checked: Uint8Array;
  /** Every entry and the whole payload layout checked. */
  complete: boolean;
}

function indexToc(entries: TocEntry[]): TocIndex {
  const byPath = new Map<string, number>();
  const impliedDirs = new Set<string>([""]);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.type === "chunk") continue;
    const p = cleanEntryName(e.name);
    byPath.set(p, i);
    for (let j = p.lastIndexOf("/"); j > 0; j = p.lastIndexOf("/", j - 1)) {
      const dir = p.slice(0, j);
      if (impliedDirs.has(dir)) break;
      impliedDirs.add(dir);
    }
  }
  return { entries, byPath, impliedDirs, checked: new Uint8Array(entries.length), complete: false };
}

/** True for an entry whose content sits in a gzip member of its own (`reg` with content, `chunk`). */
function hasPayload(e: TocEntry): boolean {
  return e.type === "chunk" || (e.type === "reg" && (e.size ?? 0) > 0);
}

/**
 * An open eStargz layer: its verified TOC and the means to fetch files from it.
 *
 * The TOC's bytes are checked against its digest in `open`. Its content is checked either there (the default: every
 * entry and the payload layout, `parseToc`) or, with `deferParse`, as it is used: names and types when the TOC is
 * first indexed, an entry's fields when a lookup returns it, a file's payload layout when its content is fetched,
 * and everything before the whole TOC is handed out (`toc`) or the whole layer fetched (`fetchAll`).
 */
export class EstargzReader {
  /** The parsed TOC and its lookup structures; until first use, the verified JSON. */
  private index: TocIndex | undefined;
  private json: Buffer | undefined;

  private constructor(
    readonly source: RangeSource,
    json: Buffer,
    readonly tocDigest: Digest,
    readonly tocOffset: number,
    readonly where: string,
    deferParse: boolean,
  ) {
    this.json = json;
    if (!deferParse) this.complete();
  }

  /** Parses and indexes the TOC the first time it is needed. */
  private indexed(): TocIndex {
    if (!this.index) {
      this.index = indexToc(parseTocEntries(this.json!, this.where));
      this.json = undefined;
    }
    return this.index;
  }

  /** Every entry and the whole payload layout, checked. */
  private complete(): TocIndex {
    const index = this.indexed();
    if (!index.complete) {
      for (let i = 0; i < index.entries.length; i++) this.entry(i);
      checkTocLayout(index.entries, this.tocOffset, this.where);
      index.complete = true;
    }
    return index;
  }

  /** Entry `i`, its fields checked. */
  private entry(i: number): TocEntry {
    const index = this.indexed();
    const e = index.entries[i]!;
    if (!index.checked[i]) {
      checkTocEntry(e, i, this.where);
      index.checked[i] = 1;
    }
    return e;
  }

  /** The verified TOC. */
  get toc(): Toc {
    return { version: 1, entries: this.complete().entries };
  }

  /** Position of the metadata entry at clean path `p`. */
  private positionOf(p: string): number | undefined {
    return this.indexed().byPath.get(p);
  }

  /** The metadata entry at clean path `p`, checked. */
  private entryAt(p: string): TocEntry | undefined {
    const i = this.positionOf(p);
    return i === undefined ? undefined : this.entry(i);
  }

  /**
   * Positions of the payload entries (`reg` with content, then its `chunk`s) of the regular file at position `i`,
   * in order, with the file's layout checked.
   */
  private payloadsOf(i: number): number[] {
    const entries = this.indexed().entries;
    this.entry(i);
    let last = i;
    while (last + 1 < entries.length && entries[last + 1]!.type === "chunk") this.entry(++last);
    checkTocLayout(entries, this.tocOffset, this.where, i, last + 1);
    const out: number[] = [];
    for (let j = i; j <= last; j++) if (hasPayload(entries[j]!)) out.push(j);
    return out;
  }

  /**
   * The gzip member holding the payload at position `i` (checked): it ends where the next payload with a larger
   * offset starts, or at the TOC.
   */
  private spanOf(i: number): Span {
    const entries = this.indexed().entries;
    const start = entries[i]!.offset!;
    for (let j = i + 1; j < entries.length; j++) {
      const e = this.entry(j);
      if (hasPayload(e) && e.offset !== undefined && e.offset > start)
        return { start, end: Math.min(e.offset, this.tocOffset) };
    }
    return { start, end: this.tocOffset };
  }

  /**
   * Reads the footer and TOC (one ranged read from the end, a second one only for a TOC larger than `tailBytes`),
   * checks the TOC digest and (unless `deferParse`) the TOC's consistency.
   */
  static async open(source: RangeSource, opts: OpenOptions): Promise<EstargzReader> {
    const where = opts.where ?? "eStargz layer";
    const size = source.size;
    if (size < FOOTER_SIZE)
      throw new UnsupportedImageError(`${where} is ${size} bytes, too small for an eStargz footer`);
    const tailStart = Math.max(0, size - (opts.tailBytes ?? 64 * 1024));
    let tail = await source.read(tailStart, size);
    const { tocOffset, footerSize } = parseFooter(tail, where);
    const tocEnd = size - footerSize;
    if (tocOffset >= tocEnd)
      throw new UnsupportedImageError(
        `${where}: the footer puts the TOC at ${tocOffset}, past the end of the content (${tocEnd})`,
      );
    const maxToc = opts.maxTocBytes ?? 64 * 1024 * 1024;
    if (tocEnd - tocOffset > maxToc)
      throw new UnsupportedImageError(
        `${where}: the compressed TOC is ${tocEnd - tocOffset} bytes, more than the ${maxToc}-byte limit`,
      );
    if (tocOffset < tailStart) {
      tail = Buffer.concat([await source.read(tocOffset, tailStart), tail]);
    }
    const member = tail.subarray(tocOffset - Math.min(tocOffset, tailStart), tail.length - footerSize);
    let tar: Buffer;
    try {
      // A gzip member ends with its uncompressed size (mod 2^32): inflating into one chunk of that size (bounded,
      // since it is untrusted) leaves nothing to concatenate.
      const isize = member.length >= 18 ? member.readUInt32LE(member.length - 4) : 0;
      const chunkSize = Math.min(maxToc + 4096, Math.max(TOC_INFLATE_CHUNK, isize + 1024));
      tar = await gunzipAsync(member, { maxOutputLength: maxToc + 4096, chunkSize });
    } catch (e) {
      throw new UnsupportedImageError(
        `${where}: the TOC member at ${tocOffset} is not valid gzip (${(e as Error).message})`,
        { cause: e },
      );
    }
    const header =
      tar.length >= 512 ? decodeHeader(tar.subarray(0, 512), { offset: 0, where: `${where}: the TOC member` }) : null;
    if (!header || cleanEntryName(header.name) !== TOC_TAR_NAME)
      throw new UnsupportedImageError(`${where}: the TOC member does not start with a ${TOC_TAR_NAME} tar entry`);
    const jsonLen = header.size;
    if (512 + jsonLen > tar.length)
      throw new UnsupportedImageError(`${where}: the ${TOC_TAR_NAME} entry has an invalid size`);
    const json = tar.subarray(512, 512 + jsonLen);
    const actual = ("sha256:" + createHash("sha256").update(json).digest("hex")) as Digest;
    if (actual !== opts.tocDigest)
      throw new DigestMismatchError(opts.tocDigest, actual, `TOC (stargz.index.json) of ${where}`);
    return new EstargzReader(source, json, actual, tocOffset, where, opts.deferParse === true);
  }

  /** Opens the eStargz layer `d` of a registry repository; the TOC digest comes from the descriptor's annotation. */
  static async openRegistry(
    client: RegistryClient,
    d: Descriptor,
    opts: Omit<OpenOptions, "tocDigest"> = {},
  ): Promise<EstargzReader> {
    const tocDigest = d.annotations?.[TOC_DIGEST_ANNOTATION];
    if (tocDigest === undefined || !isDigest(tocDigest))
      throw new UnsupportedImageError(
        `layer ${d.digest} has no valid ${TOC_DIGEST_ANNOTATION} annotation; it is not an eStargz layer`,
      );
    return EstargzReader.open(registrySource(client, d), {
      where: `layer ${d.digest} of ${client.reference}`,
      ...opts,
      tocDigest,
    });
  }

  /** The decompressed size the TOC implies is not stored; this is the descriptor annotation's value, if any. */
  static uncompressedSize(d: Descriptor): number | undefined {
    const v = d.annotations?.[UNCOMPRESSED_SIZE_ANNOTATION];
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
  }

  get size(): number {
    return this.source.size;
  }

  /** Bytes read from the source so far. */
  get bytesRead(): number {
    return this.source.bytesRead;
  }

  /** The entry at `path` (any form: `/etc/passwd`, `etc/passwd`, `./etc/`), or undefined. Directories implied by
   * deeper entries but absent from the TOC come back as a synthetic `dir` entry with mode 0755. */
  lookup(path: string): TocEntry | undefined {
    const p = cleanEntryName(path);
    const e = this.entryAt(p);
    if (e) return e;
    if (this.indexed().impliedDirs.has(p)) return { name: p === "" ? "./" : `${p}/`, type: "dir", mode: 0o755 };
    return undefined;
  }

  /** Clean paths of every entry (landmarks included), in TOC order. */
  paths(): string[] {
    return [...this.indexed().byPath.keys()];
  }

  /** The content of the regular file (or hardlink) at `path`, verified. */
  async readFile(path: string): Promise<Buffer> {
    const { files, missing } = await this.fetchFiles([path]);
    if (missing.length || files[0]?.content === undefined)
      throw new UnsupportedImageError(`${this.where} has no regular file ${cleanEntryName(path)}`);
    return files[0].content;
  }

  /**
   * Fetches the given paths (directories with `recursive`), transferring only the gzip members holding their
   * content: neighbouring members are merged into one range request, requests run `concurrency` at a time, and
   * each chunk is checked against its `chunkDigest`, each file against its `digest`.
   */
  async fetchFiles(
    paths: readonly string[],
    opts: FetchFilesOptions = {},
  ): Promise<{ files: FetchedFile[]; missing: string[] }> {
    const chosen = new Map<string, TocEntry>();
    const missing: string[] = [];
    for (const raw of paths) {
      const p = cleanEntryName(raw);
      const e = this.lookup(p);
      if (!e) {
        missing.push(p);
        continue;
      }
      chosen.set(p, e);
      if (opts.recursive && e.type === "dir") {
        const prefix = p === "" ? "" : `${p}/`;
        for (const [k, i] of this.indexed().byPath) if (k.startsWith(prefix) && k !== "") chosen.set(k, this.entry(i));
      }
    }
    // Which regular file (by TOC position) supplies each path's content (hardlinks resolve to their target, at most 8 levels).
    const source = new Map<string, number>();
    for (const [p, e] of chosen) {
      let at = this.positionOf(p);
      let cur: TocEntry | undefined = e;
      for (let hops = 0; cur && cur.type === "hardlink" && hops < 8; hops++) {
        at = this.positionOf(cleanEntryName(cur.linkName ?? ""));
        cur = at === undefined ? undefined : this.entry(at);
      }
      if (e.type === "hardlink" && cur?.type !== "reg")
        throw new UnsupportedImageError(
          `${this.where}: hardlink ${p} points at ${e.linkName}, which is not a regular file of this layer`,
        );
      if (cur?.type === "reg" && at !== undefined) source.set(p, at);
    }
    const contents = await this.fetchContents([...new Set(source.values())], opts);
    const files: FetchedFile[] = [];
    for (const [p, e] of chosen) {
      const src = source.get(p);
      files.push(src !== undefined ? { path: p, entry: e, content: contents.get(src)! } : { path: p, entry: e });
    }
    return { files, missing };
  }

  /**
   * Contents of the regular files at the given TOC positions, fetching the members they need (merged into ranges)
   * and verifying every digest.
   */
  private async fetchContents(regs: readonly number[], opts: FetchFilesOptions): Promise<Map<number, Buffer>> {
    const entries = this.indexed().entries;
    const out = new Map<number, Buffer>();
    const spans = new Map<number, Span>();
    const payloads = new Map<number, number[]>();
    for (const r of regs) {
      const ps = this.payloadsOf(r);
      payloads.set(r, ps);
      for (const p of ps) {
        const s = this.spanOf(p);
        spans.set(s.start, s);
      }
    }
    // Merge members into ranges.
    const sorted = [...spans.values()].sort((a, b) => a.start - b.start);
    const gap = opts.gapBytes ?? 16 * 1024;
    const ranges: { start: number; end: number; members: Span[] }[] = [];
    for (const s of sorted) {
      const last = ranges[ranges.length - 1];
      if (last && s.start - last.end <= gap) {
        last.end = Math.max(last.end, s.end);
        last.members.push(s);
      } else ranges.push({ start: s.start, end: s.end, members: [s] });
    }
    const limit = pLimit(Math.max(1, opts.concurrency ?? 4));
    const decompressed = new Map<number, Buffer>();
    await Promise.all(
      ranges.map((r) =>
        limit(async () => {
          const bytes = await this.source.read(r.start, r.end);
          await Promise.all(
            r.members.map(async (m) => {
              decompressed.set(
                m.start,
                await this.inflate(bytes.subarray(m.start - r.start, m.end - r.start), m.start),
              );
            }),
          );
        }),
      ),
    );
    for (const ri of regs) {
      const r = entries[ri]!;
      const size = r.size ?? 0;
      const file = Buffer.alloc(size);
      for (const pi of payloads.get(ri)!) {
        const p = entries[pi]!;
        const member = decompressed.get(p.offset!)!;
        const len = chunkLength(p, size);
        const inner = p.innerOffset ?? 0;
        const chunk = member.subarray(inner, inner + len);
        if (chunk.length !== len)
          throw new UnsupportedImageError(
            `${this.where}: the member at ${p.offset} holds ${member.length - inner} bytes, not the ${len} of ${r.name}'s chunk at ${p.chunkOffset ?? 0}`,
          );
        if (p.chunkDigest !== undefined) {
          const got = sha(chunk);
          if (got !== p.chunkDigest)
            throw new DigestMismatchError(
              p.chunkDigest,
              got,
              `chunk ${p.chunkOffset ?? 0} of ${r.name} in ${this.where}`,
            );
        }
        chunk.copy(file, p.chunkOffset ?? 0);
      }
      if (r.digest !== undefined) {
        const got = sha(file);
        if (got !== r.digest) throw new DigestMismatchError(r.digest, got, `${r.name} in ${this.where}`);
      }
      out.set(ri, file);
    }
    return out;
  }

  private async inflate(member: Buffer, offset: number): Promise<Buffer> {
    try {
      return await gunzipAsync(member, {});
    } catch (e) {
      throw new UnsupportedImageError(
        `${this.where}: the gzip member at ${offset} is corrupt (${(e as Error).message})`,
        { cause: e },
      );
    }
  }

  /**
   * The whole layer as its tar stream: ranges of about `rangeBytes` (cut at member boundaries) fetched
   * `concurrency` at a time, each decompressed as soon as it arrives (members are independent, so decompression
   * runs in parallel on the thread pool), emitted in order. `result` settles once the stream has ended: it rejects
   * (and the stream errors) if the blob digest or the diffID do not match the ones given.
   */
  fetchAll(opts: FetchAllOptions = {}): { tar: Readable; result: Promise<FetchAllResult> } {
    const size = this.source.size;
    // Member starts: payload offsets increase along the TOC (parseToc checks it), so they come sorted.
    const starts = [0];
    for (const e of this.complete().entries)
      if (hasPayload(e) && e.offset! > starts[starts.length - 1]!) starts.push(e.offset!);
    if (this.tocOffset > starts[starts.length - 1]!) starts.push(this.tocOffset);
    const target = Math.max(1, opts.rangeBytes ?? 4 * 1024 * 1024);
    const ranges: Span[] = [];
    let from = 0;
    for (let i = 1; i < starts.length; i++) {
      if (starts[i]! - from >= target) {
        ranges.push({ start: from, end: starts[i]! });
        from = starts[i]!;
      }
    }
    ranges.push({ start: from, end: size });
    const concurrency = Math.max(1, opts.concurrency ?? 4);
    const jobs: (Promise<{ compressed: Buffer; plain: Buffer }> | undefined)[] = [];
    const start = (i: number): void => {
      const r = ranges[i];
      if (!r || jobs[i]) return;
      jobs[i] = (async () => {
        const compressed = await this.source.read(r.start, r.end);
        return { compressed, plain: await this.inflate(compressed, r.start) };
      })();
      jobs[i]!.catch(() => undefined); // surfaced when awaited in order
    };
    let settle!: { resolve: (r: FetchAllResult) => void; reject: (e: unknown) => void };
    const result = new Promise<FetchAllResult>((resolve, reject) => (settle = { resolve, reject }));
    result.catch(() => undefined);
    const self = this;
    async function* produce(): AsyncGenerator<Buffer> {
      const blobHash = createHash("sha256");
      const diffHash = createHash("sha256");
      let plainSize = 0;
      const fh = opts.blobFile ? await fsp.open(opts.blobFile, "w", 0o644) : undefined;
      try {
        for (let i = 0; i < concurrency; i++) start(i);
        for (let i = 0; i < ranges.length; i++) {
          const { compressed, plain } = await jobs[i]!;
          start(i + concurrency);
          blobHash.update(compressed);
          if (fh) await fh.write(compressed);
          diffHash.update(plain);
          plainSize += plain.length;
          if (plain.length) yield plain;
        }
        const digest = ("sha256:" + blobHash.digest("hex")) as Digest;
        const diffId = ("sha256:" + diffHash.digest("hex")) as Digest;
        if (opts.digest !== undefined && digest !== opts.digest)
          throw new DigestMismatchError(opts.digest, digest, self.where);
        if (opts.diffId !== undefined && diffId !== opts.diffId)
          throw new DigestMismatchError(opts.diffId, diffId, `uncompressed content (diffID) of ${self.where}`);
        settle.resolve({ digest, diffId, size, uncompressedSize: plainSize });
      } catch (e) {
        settle.reject(e);
        throw e;
      } finally {
        await fh?.close();
        await Promise.allSettled(jobs.filter(Boolean));
      }
    }
    const tar = Readable.from(produce(), { objectMode: false });
    tar.once("close", () => settle.reject(new Error(`the tar stream of ${this.where} was closed before its end`)));
    return { tar, result };
  }
}

function sha(b: Buffer): Digest {
  return ("sha256:" + createHash("sha256").update(b).digest("hex")) as Digest;
}

/**
 * Downloads an eStargz layer blob into `file` the parallel way — TOC read and verified first, then ranges of about
 * `rangeBytes` fetched `concurrency` at a time, gzip members decompressed concurrently — checking the blob digest
 * and the diffID before returning. A drop-in for a plain blob download of a layer carrying the TOC annotation (the
 * seam for `pullImage`); on any error the file is removed.
 */
export async function downloadEstargzBlob(
  client: RegistryClient,
  d: Descriptor,
  diffId: Digest,
  file: string,
  opts: Omit<FetchAllOptions, "digest" | "diffId" | "blobFile"> = {},
): Promise<FetchAllResult> {
  try {
    const reader = await EstargzReader.openRegistry(client, d);
    const { tar, result } = reader.fetchAll({ ...opts, digest: d.digest, diffId, blobFile: file });
    tar.resume();
    return await result;
  } catch (e) {
    await fsp.rm(file, { force: true });
    throw e;
  }
}
