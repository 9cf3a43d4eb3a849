/**
 * Downloading one blob of a pull, verified before anyone sees it (sha256, size, and for layers the diffID):
 *
 *  - `fetchBlobBytes` reads a small blob (a config) into memory.
 *  - `downloadBlob` streams one layer to a temp file while hashing; a connection that drops mid-blob is resumed with
 *    `Range: bytes=N-` (the 206 `Content-Range` is checked; a server that ignores Range gets a full restart); 429/5xx
 *    are retried with backoff (`Retry-After` honoured).
 *  - `downloadEstargz` replaces `downloadBlob` for layers carrying a TOC digest: parallel ranges.
 *  - With `unpack`, each layer is also extracted while it downloads (`InlineUnpack`), so the bytes are read,
 *    decompressed and hashed once.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream, promises as fsp } from "node:fs";
import path from "node:path";
import { finished } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createGunzip, type Gunzip } from "node:zlib";
import { DigestMismatchError, StrataError } from "../errors.js";
import { extractLayerOffThread, openExtraction, type ExtractionSink } from "../layer/extract-pool.js";
import { MediaType, type Descriptor } from "../oci/types.js";
import type { LayerRecord } from "../store/store.js";
import { digestHex, isDigest, sha256Bytes, type Digest } from "../util/digest.js";
import type { RegistryClient } from "./client.js";
import { RegistryError, UnsupportedImageError } from "./errors.js";
import { downloadEstargzBlob, EstargzReader } from "./estargz/read.js";
import {
  abortReason,
  discard,
  displayUrl,
  errorFromResponse,
  formatSize,
  isFsError,
  networkError,
  readBody,
  shortDigest,
} from "./http.js";
import type { ImageReference } from "./reference.js";

const GZIP_LAYER_TYPES = new Set<string>([MediaType.ociLayerGzip, MediaType.dockerLayerGzip]);
const TAR_LAYER_TYPES = new Set<string>([MediaType.ociLayerTar, "application/vnd.docker.image.rootfs.diff.tar"]);
/** Resumes after a dropped connection that made progress; each one is cheap, but a server that always drops is not. */
const MAX_RESUMES = 50;

export type LayerKind = "gzip" | "tar";

export function layerKind(d: Descriptor, index: number, ref: ImageReference): LayerKind {
  if (GZIP_LAYER_TYPES.has(d.mediaType)) return "gzip";
  if (TAR_LAYER_TYPES.has(d.mediaType)) return "tar";
  if (/zstd/.test(d.mediaType)) {
    throw new UnsupportedImageError(
      `layer ${index} of ${ref} (${d.digest}) is zstd-compressed (${d.mediaType}); zstd layers are not supported yet — use a gzip-compressed variant of the image`,
    );
  }
  throw new UnsupportedImageError(
    `layer ${index} of ${ref} (${d.digest}) has unsupported media type "${d.mediaType || "(none)"}" (expected a tar or tar+gzip layer)`,
  );
}

function tooLargeBlob(d: Descriptor, where: string): () => StrataError {
  return () => new DigestMismatchError(`${d.digest} (${d.size} bytes)`, `more than ${d.size} bytes`, where);
}

export async function fetchBlobBytes(client: RegistryClient, d: Descriptor, cap: number): Promise<Buffer> {
  const where = `blob ${d.digest} of ${client.reference}`;
  if (d.size > cap)
    throw new UnsupportedImageError(
      `${where} is ${formatSize(d.size)}, larger than the ${formatSize(cap)} limit for this kind of blob`,
    );
  const bytes = await client.withRetries(async () => {
    const { res, url } = await client.fetch(client.url("blobs", d.digest));
    if (!res.ok) throw await errorFromResponse(res, url, where, blobNotFoundHint(client));
    checkBlobHeaders(res, d, where, d.size);
    return readBody(res, d.size, where, tooLargeBlob(d, where));
  });
  if (bytes.length !== d.size)
    throw new DigestMismatchError(`${d.digest} (${d.size} bytes)`, `${bytes.length} bytes`, where);
  const actual = sha256Bytes(bytes);
  if (actual !== d.digest) throw new DigestMismatchError(d.digest, actual, where);
  return bytes;
}

function blobNotFoundHint(client: RegistryClient): string {
  return `the manifest of ${client.reference} lists a blob the registry does not have; the image in the registry is broken (re-push it)`;
}

/** Content-Encoding must be identity; Content-Length must be what we expect; Docker-Content-Digest must agree. */
function checkBlobHeaders(res: Response, d: Descriptor, where: string, expectedLength: number): void {
  const encoding = res.headers.get("content-encoding");
  if (encoding && encoding.toLowerCase() !== "identity") {
    throw new RegistryError(
      `${where} was served with Content-Encoding: ${encoding} despite Accept-Encoding: identity, so its bytes cannot be verified; a proxy or CDN in between is re-encoding blobs`,
      {
        status: res.status,
      },
    );
  }
  const len = res.headers.get("content-length");
  if (len !== null && /^\d+$/.test(len) && Number(len) !== expectedLength) {
    throw new DigestMismatchError(
      `${d.digest} (${expectedLength} bytes${expectedLength !== d.size ? ` of ${d.size}` : ""})`,
      `${len} bytes (Content-Length)`,
      where,
    );
  }
  const headerDigest = res.headers.get("docker-content-digest");
  if (headerDigest && isDigest(headerDigest) && headerDigest !== d.digest)
    throw new DigestMismatchError(d.digest, headerDigest, `${where} (Docker-Content-Digest header)`);
}

/** `bytes <start>-<end>/<total|*>` → numbers, or undefined when malformed. */
export function parseContentRange(
  value: string | null,
): { start: number; end: number; total: number | undefined } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec((value ?? "").trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === "*" ? undefined : Number(m[3]) };
}

/** A verified blob file and, when the layer was unpacked on the way, its (equally verified) unpacked directory. */
export interface Downloaded {
  file: string;
  root?: string;
}

export async function downloadEstargz(
  client: RegistryClient,
  d: Descriptor,
  layer: LayerRecord,
  tmpDir: string,
  progress: (line: string) => void,
  unpack: boolean,
): Promise<Downloaded> {
  const file = path.join(tmpDir, `${digestHex(layer.digest)}.estargz`);
  if (unpack) {
    const root = path.join(tmpDir, `${digestHex(layer.digest)}.root`);
    if (await fetchEstargzUnpacked(client, d, layer, file, root)) {
      progress(`fetched eStargz layer ${shortDigest(layer.digest)} by parallel ranges`);
      return { file, root };
    }
  }
  await downloadEstargzBlob(client, d, layer.diffId, file);
  progress(`fetched eStargz layer ${shortDigest(layer.digest)} by parallel ranges`);
  return { file };
}

/**
 * `downloadEstargzBlob`, extracting the layer's tar stream into `root` as the ranges arrive. True when both the
 * download (blob digest, diffID) and the extraction succeeded; false when only the extraction failed (the caller
 * then downloads the blob the plain way and `store.layerDir` reports the problem); download errors are thrown.
 */
async function fetchEstargzUnpacked(
  client: RegistryClient,
  d: Descriptor,
  layer: LayerRecord,
  file: string,
  root: string,
): Promise<boolean> {
  const cleanup = () => Promise.all([fsp.rm(file, { force: true }), fsp.rm(root, { recursive: true, force: true })]);
  try {
    await fsp.mkdir(root, { mode: 0o700 });
    const reader = await EstargzReader.openRegistry(client, d);
    const { tar, result } = reader.fetchAll({ digest: d.digest, diffId: layer.diffId, blobFile: file });
    const [extracted, fetched] = await Promise.allSettled([extractLayerOffThread(tar, root), result]);
    if (extracted.status === "fulfilled") {
      if (fetched.status === "rejected") throw fetched.reason;
      if (extracted.value === layer.diffId) return true;
    }
  } catch (e) {
    await cleanup();
    throw e;
  }
  await cleanup();
  return false;
}

/**
 * A layer unpacked while it downloads: the bytes appended to the blob file are also handed, with backpressure, to an
 * extraction (`openExtraction`: a worker thread) into a directory under the pull's temp dir. Only an optimisation:
 * anything that goes wrong abandons it (the extractor's error is dropped; `store.layerDir` meets it again on the
 * verified blob and reports it).
 */
class InlineUnpack {
  readonly root: string;
  private sink: ExtractionSink | undefined;
  private head: Buffer[] = [];
  private headBytes = 0;
  private failed = false;
  /** The diffID, once the extraction finished. */
  done: Digest | undefined;

  constructor(
    tmpDir: string,
    layer: LayerRecord,
    private readonly gzip: boolean,
  ) {
    this.root = path.join(tmpDir, `${digestHex(layer.digest)}.root`);
  }

  /** Takes the next bytes of the blob; the chunk's memory is handed over (the caller must not use it again). */
  async write(chunk: Buffer): Promise<void> {
    if (this.failed) return;
    if (!this.sink) {
      // Compression is decided by content, as `store.layerDir` does; content that disagrees with the media type
      // takes the normal path (and its errors).
      this.head.push(chunk);
      this.headBytes += chunk.length;
      if (this.headBytes < 2) return;
      chunk = this.head.length === 1 ? chunk : Buffer.concat(this.head, this.headBytes);
      this.head = [];
      if ((chunk[0] === 0x1f && chunk[1] === 0x8b) !== this.gzip) {
        this.failed = true;
        return;
      }
      await fsp.mkdir(this.root, { mode: 0o700 });
      this.sink = await openExtraction(this.root, { gzip: this.gzip });
    }
    if (this.sink.failed) {
      this.failed = true;
      return;
    }
    await this.sink.write(chunk, true);
  }

  /** Ends the input and waits for the extraction: its diffID, or undefined when it was abandoned or failed. */
  async finish(): Promise<Digest | undefined> {
    if (this.failed || !this.sink) {
      await this.abandon();
      return undefined;
    }
    const d = await this.sink.end().catch(() => undefined);
    if (d === undefined) await this.abandon();
    this.done = d;
    return d;
  }

  /** Stops the extraction and removes what it wrote. */
  async abandon(): Promise<void> {
    this.failed = true;
    this.done = undefined;
    await this.sink?.abort(new Error("the download was abandoned"));
    await fsp.rm(this.root, { recursive: true, force: true });
  }
}

/** The diffID of a gzip blob file, by reading it again (when it was not computed during the download). */
async function diffIdOfFile(file: string, where: string): Promise<Digest> {
  const diff = new DiffIdHasher();
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) await diff.write(chunk as Buffer);
    return await diff.end(where);
  } finally {
    diff.destroy();
  }
}

/** What one request of a download left behind: was any of it appended to a partial file from a ranged response? */
interface AttemptState {
  /** True once bytes from a 206 response were appended after earlier bytes (so a final mismatch may be ours). */
  resumed: boolean;
}

/**
 * Streams one layer blob into a file under `tmpDir`, checking size and sha256 as it goes and, for gzip layers,
 * that the uncompressed stream hashes to the config's diffID. Returns the verified file.
 *
 * A transfer that breaks off keeps its bytes: the next attempt re-hashes them and asks for the rest with
 * `Range: bytes=N-`. A 206 must carry `Content-Range: bytes N-<size-1>/<size>`; a 200 (Range ignored) restarts from
 * zero with that response; a 416 restarts from zero. Attempts that made progress do not count against the retry
 * budget. A digest mismatch after a resumed transfer is retried once from zero; otherwise it is final.
 */
export async function downloadBlob(
  client: RegistryClient,
  layer: LayerRecord,
  kind: LayerKind,
  tmpDir: string,
  signal: AbortSignal,
  progress: (line: string) => void,
  unpack: boolean,
  onBytes: (received: number) => void,
): Promise<Downloaded> {
  const where = `layer ${layer.digest} of ${client.reference}`;
  const file = path.join(tmpDir, `${digestHex(layer.digest)}.partial`);
  await fsp.writeFile(file, "", { flag: "wx", mode: 0o600 });
  const state: AttemptState = { resumed: false };
  let failures = 0;
  let resumes = 0;
  let restartedAfterMismatch = false;
  // Unpacking on the way only for a transfer from the first byte; a resumed one is unpacked from the blob later.
  let inline: InlineUnpack | undefined;
  try {
    for (;;) {
      const have = (await fsp.stat(file)).size;
      inline = unpack && have === 0 ? new InlineUnpack(tmpDir, layer, kind === "gzip") : undefined;
      try {
        await downloadAttempt(client, layer, kind, file, have, where, signal, state, progress, onBytes, inline);
        return inline?.done ? { file, root: inline.root } : { file };
      } catch (e) {
        await inline?.abandon();
        inline = undefined;
        if (signal.aborted) throw abortReason(signal, e);
        if (e instanceof DigestMismatchError && state.resumed && !restartedAfterMismatch) {
          restartedAfterMismatch = true;
          state.resumed = false;
          await fsp.truncate(file, 0);
          progress(
            `${shortDigest(layer.digest)} did not verify after a resumed transfer; downloading it again from the start`,
          );
          continue;
        }
        if (!(e instanceof RegistryError) || !e.temporary) throw e;
        const now = (await fsp.stat(file)).size;
        if (now > have && now < layer.size && resumes < MAX_RESUMES) {
          resumes++;
          failures = 0;
          progress(
            `${shortDigest(layer.digest)} transfer broke off after ${formatSize(now)} of ${formatSize(layer.size)}; resuming`,
          );
          continue;
        }
        failures++;
        if (failures >= client.attempts) {
          if (client.attempts === 1) throw e;
          throw new RegistryError(`${e.message} (gave up after ${failures} attempts)`, {
            status: e.status,
            codes: [...e.codes],
            temporary: true,
            url: e.url,
            cause: e.cause,
          });
        }
        await client.backoff(failures, e.retryAfterMs, signal);
      }
    }
  } catch (e) {
    await inline?.abandon();
    await fsp.rm(file, { force: true });
    throw e;
  }
}

async function downloadAttempt(
  client: RegistryClient,
  layer: LayerRecord,
  kind: LayerKind,
  file: string,
  have: number,
  where: string,
  signal: AbortSignal,
  state: AttemptState,
  progress: (line: string) => void,
  onBytes: (received: number) => void,
  inline: InlineUnpack | undefined,
): Promise<void> {
  let hash = createHash("sha256");
  // With an inline unpack, its extraction computes the diffID (one decompression instead of two).
  let diff = kind === "gzip" && !inline ? new DiffIdHasher() : undefined;
  let offset = have;
  try {
    // Node's hash state cannot be saved, so bytes kept from an earlier attempt are hashed again.
    if (offset > 0) {
      for await (const chunk of createReadStream(file, { start: 0, end: offset - 1 })) {
        hash.update(chunk as Buffer);
        if (diff) await diff.write(chunk as Buffer);
      }
    }
    if (offset < layer.size) {
      const blobUrl = client.url("blobs", layer.digest);
      let { res, url } = await client.fetch(blobUrl, offset > 0 ? { range: `bytes=${offset}-` } : {}, signal);
      if (offset > 0 && res.status === 416) {
        // Never read a 416 body (2.8.2 announces the whole blob's length and sends 33 bytes); start again.
        await discard(res);
        await fsp.truncate(file, 0);
        progress(
          `${shortDigest(layer.digest)}: the server refused to resume (416); downloading it again from the start`,
        );
        offset = 0;
        hash = createHash("sha256");
        diff?.destroy();
        diff = kind === "gzip" ? new DiffIdHasher() : undefined;
        ({ res, url } = await client.fetch(blobUrl, {}, signal));
      }
      if (!res.ok) throw await errorFromResponse(res, url, where, blobNotFoundHint(client));
      if (offset > 0 && res.status === 200) {
        // The server ignored the Range header: this response is the whole blob, so start over with it.
        progress(
          `${shortDigest(layer.digest)}: the server ignored the Range request; downloading it again from the start`,
        );
        await fsp.truncate(file, 0);
        offset = 0;
        hash = createHash("sha256");
        diff?.destroy();
        diff = kind === "gzip" ? new DiffIdHasher() : undefined;
      } else if (offset > 0) {
        const range = parseContentRange(res.headers.get("content-range"));
        if (
          res.status !== 206 ||
          !range ||
          range.start !== offset ||
          range.end !== layer.size - 1 ||
          (range.total !== undefined && range.total !== layer.size)
        ) {
          await discard(res);
          await fsp.truncate(file, 0);
          throw new RegistryError(
            `${where}: asked ${displayUrl(url)} for bytes ${offset}- to resume, got ${res.status} with Content-Range ${JSON.stringify(res.headers.get("content-range"))}; downloading again from the start`,
            { status: res.status, url: displayUrl(url), temporary: true },
          );
        }
        state.resumed = true;
      } else if (res.status !== 200) {
        await discard(res);
        throw new RegistryError(`${where}: ${displayUrl(url)} answered ${res.status} to a plain GET (expected 200)`, {
          status: res.status,
          url: displayUrl(url),
          temporary: true,
        });
      }
      checkBlobHeaders(res, layer, where, layer.size - offset);
      if (!res.body)
        throw new RegistryError(`${displayUrl(url)} returned no body for ${where}`, {
          status: res.status,
          url: displayUrl(url),
          temporary: true,
        });

      // Each chunk is written before it is hashed, and writes are awaited, so when the connection drops the
      // partial file holds exactly the bytes hashed so far and the next attempt can resume after them.
      let n = offset;
      const fh = await fsp.open(file, "a", 0o600);
      try {
        for await (const c of res.body as WebReadableStream<Uint8Array>) {
          const chunk = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
          if (n + chunk.length > layer.size)
            throw new DigestMismatchError(
              `${layer.digest} (${layer.size} bytes)`,
              `more than ${layer.size} bytes`,
              where,
            );
          await fh.write(chunk);
          n += chunk.length;
          hash.update(chunk);
          onBytes(n);
          if (diff) await diff.write(chunk);
          if (inline) await inline.write(chunk);
        }
      } catch (e) {
        if (signal.aborted) throw abortReason(signal, e);
        if (e instanceof StrataError || isFsError(e)) throw e;
        throw networkError(
          url,
          e,
          client.insecure,
          `the download of ${where} broke off after ${formatSize(n)} of ${formatSize(layer.size)}`,
        );
      } finally {
        await fh.close();
      }
      offset = n;
      if (offset < layer.size) {
        throw new RegistryError(
          `${where}: ${displayUrl(url)} ended the body after ${formatSize(offset)} of ${formatSize(layer.size)}`,
          { url: displayUrl(url), temporary: true },
        );
      }
    }
    const actual = ("sha256:" + hash.digest("hex")) as Digest;
    if (actual !== layer.digest) {
      await fsp.truncate(file, 0);
      throw new DigestMismatchError(layer.digest, actual, where);
    }
    const inlined = inline ? await inline.finish() : undefined;
    // An abandoned inline unpack leaves the diffID to compute from the verified file.
    const diffId =
      inlined ?? (diff ? await diff.end(where) : kind === "gzip" ? await diffIdOfFile(file, where) : actual);
    diff = undefined;
    if (diffId !== layer.diffId)
      throw new DigestMismatchError(layer.diffId, diffId, `uncompressed content (diffID) of ${where}`);
  } finally {
    diff?.destroy();
  }
}

/** Feeds compressed bytes through gunzip and hashes the output (the layer's diffID). */
class DiffIdHasher {
  private readonly gunzip: Gunzip = createGunzip({ chunkSize: 256 * 1024 });
  private readonly hash: Hash = createHash("sha256");
  private error: Error | undefined;

  constructor() {
    this.gunzip.on("data", (c: Buffer) => this.hash.update(c));
    this.gunzip.on("error", (e: Error) => {
      this.error ??= e;
    });
  }

  write(chunk: Buffer): Promise<void> {
    if (this.error) return Promise.reject(this.gzipError(this.error));
    if (this.gunzip.write(chunk)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onDrain = (): void => {
        this.gunzip.off("error", onError);
        resolve();
      };
      const onError = (e: Error): void => {
        this.gunzip.off("drain", onDrain);
        reject(this.gzipError(e));
      };
      this.gunzip.once("drain", onDrain);
      this.gunzip.once("error", onError);
    });
  }

  async end(where: string): Promise<Digest> {
    this.gunzip.end();
    try {
      await finished(this.gunzip);
    } catch (e) {
      throw new UnsupportedImageError(`${where} is not valid gzip: ${(e as Error).message}`, { cause: e });
    }
    if (this.error)
      throw new UnsupportedImageError(`${where} is not valid gzip: ${this.error.message}`, { cause: this.error });
    return ("sha256:" + this.hash.digest("hex")) as Digest;
  }

  destroy(): void {
    this.gunzip.destroy();
  }

  private gzipError(e: Error): UnsupportedImageError {
    return new UnsupportedImageError(`layer is not valid gzip: ${e.message}`, { cause: e });
  }
}
