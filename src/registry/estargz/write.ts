/**
 * Our own deterministic eStargz writer (the layout of stargz-snapshotter's `estargz.Writer`, v0.12):
 *
 *   member 0            landmark header (`.no.prefetch.landmark`)
 *   member @offset      each non-empty regular file's payload — one member per chunk of `chunkSize` bytes — plus the
 *                       tar padding and the headers of the entries that follow, up to the next payload
 *   member @tocOffset   tar header `stargz.index.json` + the TOC JSON + padding + the end-of-archive blocks
 *   footer              51 bytes: an empty gzip member naming tocOffset
 *
 * Input entries keep their original header bytes (PAX records, xattrs, long names pass through unchanged); an input
 * `stargz.index.json` or landmark is dropped, since the writer makes its own. The decompressed blob is one valid tar
 * (the original entries, the landmark first and the TOC entry last), so the diffID changes: it is returned, with
 * the layer digest, the TOC digest and the descriptor annotations.
 *
 * Members are compressed independently on libuv's thread pool (`concurrency` at a time) and written in order, so
 * the output depends only on the input, `chunkSize` and the gzip `level` — not on timing.
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { Readable, type Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { promisify } from "node:util";
import { createGunzip, gzip as gzipCb, gzipSync, type ZlibOptions } from "node:zlib";
import { encodeHeader, endOfArchive, padding } from "../../layer/tar-header.js";
import { gzipLevel } from "../../layer/commit.js";
import type { Digest } from "../../util/digest.js";
import { UnsupportedImageError } from "../errors.js";
import {
  DEFAULT_CHUNK_SIZE,
  encodeToc,
  footerBytes,
  formatModtime,
  cleanEntryName,
  LANDMARK_CONTENTS,
  NO_PREFETCH_LANDMARK,
  PREFETCH_LANDMARK,
  TOC_DIGEST_ANNOTATION,
  TOC_TAR_NAME,
  UNCOMPRESSED_SIZE_ANNOTATION,
  type Toc,
  type TocEntry,
} from "./format.js";
import { ByteReader, RawTarReader, type RawTarEntry } from "./tar-reader.js";

const gzipAsync = promisify<Buffer, ZlibOptions, Buffer>(gzipCb);
/** Members smaller than this are compressed synchronously. */
const SYNC_MEMBER_BYTES = 128 * 1024;

export interface EstargzWriteOptions {
  /** Largest decompressed chunk of a file in one gzip member (default 4 MiB, as the reference writer). */
  chunkSize?: number;
  /** gzip level (default: `STRATA_GZIP_LEVEL`, as layer commits). The same level always gives the same bytes. */
  level?: number;
  /** gzip members compressed at once on the thread pool (default 4). Does not change the output. */
  concurrency?: number;
  /** Names the layer in error messages. */
  where?: string;
}

export interface EstargzResult {
  /** sha256 of the eStargz blob (the layer descriptor's digest). */
  digest: Digest;
  /** Size of the blob in bytes. */
  size: number;
  /** sha256 of the decompressed blob (the config's `rootfs.diff_ids` entry); differs from the input's diffID. */
  diffId: Digest;
  uncompressedSize: number;
  /** sha256 of the TOC JSON (the `containerd.io/snapshot/stargz/toc.digest` annotation). */
  tocDigest: Digest;
  tocOffset: number;
  toc: Toc;
  /** The annotations the layer descriptor must carry. */
  annotations: Record<string, string>;
  /** sha256 of the uncompressed input (the original layer's diffID), for checking the input was what it claimed. */
  inputDiffId: Digest;
}

type Sink = (chunk: Buffer) => Promise<void>;

/** Members compressed concurrently, written in order; records each member's offset in the blob. */
class MemberPipeline {
  private pieces: Buffer[] | undefined;
  private piecesLen = 0;
  private readonly inflight: { index: number; job: Promise<Buffer> | Buffer }[] = [];
  private count = 0;
  readonly offsets: number[] = [];
  written = 0;
  readonly blobHash = createHash("sha256");
  readonly diffHash = createHash("sha256");
  uncompressed = 0;

  constructor(
    private readonly sink: Sink,
    private readonly level: number,
    private readonly concurrency: number,
  ) {}

  /** Index of the open member, opening one if none is. */
  open(): number {
    if (!this.pieces) {
      this.pieces = [];
      this.piecesLen = 0;
      this.count++;
    }
    return this.count - 1;
  }

  write(b: Buffer): void {
    if (b.length === 0) return;
    this.open();
    this.pieces!.push(b);
    this.piecesLen += b.length;
    this.diffHash.update(b);
    this.uncompressed += b.length;
  }

  async close(): Promise<void> {
    if (!this.pieces) return;
    const data = Buffer.concat(this.pieces, this.piecesLen);
    this.pieces = undefined;
    // Small members are compressed at once on this thread (a thread-pool round trip costs more than deflating a
    // few KiB); large ones on the pool, `concurrency` at a time. Either way each member is compressed on its own,
    // so the bytes are the same.
    if (data.length < SYNC_MEMBER_BYTES)
      this.inflight.push({ index: this.count - 1, job: gzipSync(data, { level: this.level }) });
    else this.inflight.push({ index: this.count - 1, job: gzipAsync(data, { level: this.level }) });
    while (this.inflight.length && (Buffer.isBuffer(this.inflight[0]!.job) || this.inflight.length >= this.concurrency))
      await this.flushOne();
  }

  private async flushOne(): Promise<void> {
    const head = this.inflight.shift()!;
    const out = Buffer.isBuffer(head.job) ? head.job : await head.job;
    this.offsets[head.index] = this.written;
    await this.emit(out);
  }

  async emit(out: Buffer): Promise<void> {
    this.blobHash.update(out);
    this.written += out.length;
    await this.sink(out);
  }

  async drain(): Promise<void> {
    await this.close();
    while (this.inflight.length) await this.flushOne();
  }

  /** Settles every pending job (after an error), so no rejection goes unhandled. */
  async abandon(): Promise<void> {
    await Promise.allSettled(this.inflight.map((j) => Promise.resolve(j.job)));
    this.inflight.length = 0;
  }
}

/** The input as an uncompressed tar byte stream (gzip detected by its magic; zstd refused). */
async function* uncompressed(
  src: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  where: string,
): AsyncGenerator<Uint8Array> {
  const it =
    Symbol.asyncIterator in src
      ? src[Symbol.asyncIterator]()
      : (async function* () {
          yield* src;
        })();
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < 4 && !ended) {
    const r = await it.next();
    if (r.done) ended = true;
    else head = Buffer.concat([head, r.value]);
  }
  async function* rest(): AsyncGenerator<Uint8Array> {
    if (head.length) yield head;
    if (ended) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) {
    throw new UnsupportedImageError(
      `${where} is zstd-compressed; eStargz conversion reads tar or tar+gzip layers only`,
    );
  }
  if (head[0] !== 0x1f || head[1] !== 0x8b) {
    yield* rest();
    return;
  }
  const input = Readable.from(rest());
  const gunzip = createGunzip();
  input.on("error", (e) => gunzip.destroy(e));
  input.pipe(gunzip);
  try {
    for await (const c of gunzip) yield c as Buffer;
  } catch (e) {
    if (e instanceof UnsupportedImageError) throw e;
    throw new UnsupportedImageError(`${where} is not valid gzip: ${(e as Error).message}`, { cause: e });
  } finally {
    input.destroy();
  }
}

async function* hashed(
  src: AsyncIterable<Uint8Array>,
  hash: ReturnType<typeof createHash>,
): AsyncGenerator<Uint8Array> {
  for await (const c of src) {
    hash.update(c);
    yield c;
  }
}

function tocType(e: RawTarEntry): TocEntry["type"] {
  switch (e.type) {
    case "file":
      return "reg";
    case "link":
      return "hardlink";
    case "symlink":
      return "symlink";
    case "directory":
      return "dir";
    case "character-device":
      return "char";
    case "block-device":
      return "block";
    case "fifo":
      return "fifo";
  }
}

const sha = (b: Buffer | ReturnType<typeof createHash>): Digest =>
  ("sha256:" + (Buffer.isBuffer(b) ? createHash("sha256").update(b) : b).digest("hex")) as Digest;

/**
 * Converts a layer (an uncompressed tar or a tar+gzip stream) into an eStargz blob written to `output` (a path or a
 * writable stream, ended on success). Deterministic for a given input, `chunkSize` and `level`.
 */
export async function writeEstargz(
  input: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  output: string | Writable,
  opts: EstargzWriteOptions = {},
): Promise<EstargzResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1)
    throw new RangeError(`invalid eStargz chunk size ${chunkSize}`);
  const level = opts.level ?? gzipLevel();
  const where = opts.where ?? "the layer";
  const out: Writable = typeof output === "string" ? createWriteStream(output, { mode: 0o644 }) : output;
  let outError: Error | undefined;
  out.on("error", (e: Error) => (outError ??= e));
  const sink: Sink = async (chunk) => {
    if (outError) throw outError;
    if (!out.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          out.off("error", onErr);
          resolve();
        };
        const onErr = (e: Error): void => {
          out.off("drain", onDrain);
          reject(e);
        };
        out.once("drain", onDrain);
        out.once("error", onErr);
      });
    }
  };
  const m = new MemberPipeline(sink, level, Math.max(1, opts.concurrency ?? 4));
  // TOC entries whose `offset` is a member index until the members are written.
  const pendingOffsets = new Map<TocEntry, number>();
  const entries: TocEntry[] = [];
  const lastUser = new Map<number, string>();
  const lastGroup = new Map<number, string>();
  const nameIfChanged = (names: Map<number, string>, id: number, name: string): string | undefined => {
    if (name === "" || names.get(id) === name) return undefined;
    names.set(id, name);
    return name;
  };

  /** Writes a regular file's payload: one new member per chunk, the padding after the last. */
  const writePayload = async (
    first: TocEntry,
    name: string,
    size: number,
    body: AsyncIterable<Buffer>,
  ): Promise<void> => {
    // A file of one chunk has digest == chunkDigest: hash it once.
    const single = size <= chunkSize;
    const fileHash = createHash("sha256");
    let ent: TocEntry = first;
    let written = 0;
    let pending: Buffer[] = [];
    let pendingLen = 0;
    const it = body[Symbol.asyncIterator]();
    while (written < size) {
      await m.close();
      const len = Math.min(chunkSize, size - written);
      if (len === chunkSize) ent.chunkSize = chunkSize; // absent only on a shorter last chunk, as the reference writer
      if (written > 0) ent.chunkOffset = written;
      pendingOffsets.set(ent, m.open());
      const chunkHash = createHash("sha256");
      let got = 0;
      while (got < len) {
        let b: Buffer;
        if (pendingLen > 0) {
          b = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingLen);
          pending = [];
          pendingLen = 0;
        } else {
          const r = await it.next();
          if (r.done) throw new UnsupportedImageError(`${where}: the content of ${name} ends early`);
          b = r.value;
        }
        const take = Math.min(b.length, len - got);
        const piece = b.subarray(0, take);
        if (take < b.length) {
          pending = [b.subarray(take)];
          pendingLen = b.length - take;
        }
        chunkHash.update(piece);
        if (!single) fileHash.update(piece);
        m.write(piece);
        got += take;
      }
      ent.chunkDigest = sha(chunkHash);
      entries.push(ent);
      written += len;
      ent = { name, type: "chunk" };
    }
    // Consume the generator to its end (it skips the tar padding).
    for (let r = await it.next(); !r.done; r = await it.next()) {
      if (r.value.length)
        throw new UnsupportedImageError(`${where}: the content of ${name} is longer than its header says`);
    }
    m.write(padding(size));
    first.digest = single ? first.chunkDigest! : sha(fileHash);
  };

  try {
    // The landmark: no prioritized files, so the whole layer is fetched on demand.
    {
      const landmark: TocEntry = { name: NO_PREFETCH_LANDMARK, type: "reg", size: 1 };
      m.open();
      m.write(encodeHeader({ name: NO_PREFETCH_LANDMARK, type: "file", mode: 0, uid: 0, gid: 0, size: 1, mtime: 0 }));
      await writePayload(
        landmark,
        NO_PREFETCH_LANDMARK,
        1,
        (async function* () {
          yield Buffer.from([LANDMARK_CONTENTS]);
        })(),
      );
    }

    const inputHash = createHash("sha256");
    const src = new ByteReader(hashed(uncompressed(input, where), inputHash));
    const tar = new RawTarReader(src, where);
    for (let e = await tar.next(); e; e = await tar.next()) {
      const clean = cleanEntryName(e.name);
      if (clean === TOC_TAR_NAME || clean === PREFETCH_LANDMARK || clean === NO_PREFETCH_LANDMARK) {
        for await (const _ of tar.content(e.size)) void _;
        continue;
      }
      const ent: TocEntry = { name: e.name, type: tocType(e) };
      if (e.type === "file" && e.size > 0) ent.size = e.size;
      const modtime = formatModtime(e.mtime);
      if (modtime) ent.modtime = modtime;
      if (e.type === "link" || e.type === "symlink") ent.linkName = e.linkname;
      if (e.mode) ent.mode = e.mode;
      if (e.uid) ent.uid = e.uid;
      if (e.gid) ent.gid = e.gid;
      const user = nameIfChanged(lastUser, e.uid, e.uname);
      if (user) ent.userName = user;
      const group = nameIfChanged(lastGroup, e.gid, e.gname);
      if (group) ent.groupName = group;
      if (e.type === "character-device" || e.type === "block-device") {
        if (e.devmajor) ent.devMajor = e.devmajor;
        if (e.devminor) ent.devMinor = e.devminor;
      }
      if (e.xattrs.size) ent.xattrs = Object.fromEntries([...e.xattrs].map(([k, v]) => [k, v.toString("base64")]));
      m.open();
      m.write(e.raw);
      if (e.type === "file" && e.size > 0) {
        await writePayload(ent, e.name, e.size, tar.content(e.size));
      } else {
        if (e.type === "file") ent.digest = sha(Buffer.alloc(0));
        entries.push(ent);
      }
    }

    await m.drain();
    for (const [ent, index] of pendingOffsets) ent.offset = m.offsets[index]!;
    const tocOffset = m.written;
    const toc: Toc = { version: 1, entries };
    const json = encodeToc(toc);
    m.write(encodeHeader({ name: TOC_TAR_NAME, type: "file", mode: 0, uid: 0, gid: 0, size: json.length, mtime: 0 }));
    m.write(json);
    m.write(padding(json.length));
    m.write(endOfArchive());
    await m.drain();
    await m.emit(footerBytes(tocOffset));
    if (typeof output === "string") {
      out.end();
      await finished(out);
    } else {
      await new Promise<void>((resolve, reject) => {
        out.end(() => resolve());
        out.once("error", reject);
      });
    }
    if (outError) throw outError;
    const tocDigest = sha(json);
    return {
      digest: sha(m.blobHash),
      size: m.written,
      diffId: sha(m.diffHash),
      uncompressedSize: m.uncompressed,
      tocDigest,
      tocOffset,
      toc,
      annotations: { [TOC_DIGEST_ANNOTATION]: tocDigest, [UNCOMPRESSED_SIZE_ANNOTATION]: String(m.uncompressed) },
      inputDiffId: sha(inputHash),
    };
  } catch (e) {
    await m.abandon();
    out.destroy();
    throw e;
  }
}
