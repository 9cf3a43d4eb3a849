/**
 * A Store whose blobs and records live in S3 (or any S3-compatible server), with the local disk as a bounded
 * cache in front. Object keys, under an optional prefix:
 *   blobs/sha256/<hex>      layer tar.gz, config and manifest JSON (content-addressed, immutable)
 *   index/<key>.json        cache index: key → image id
 *   images/<hex>.json       image records
 *   chains/<hash>.json      most recent build of each named chain (hash = sha256 of the name)
 *   logs/<hex>.log          step logs, secrets redacted
 *   names/<hex>.json        image names (hex = sha256 of `repository:tag`) → image id
 *
 * Ordering is what keeps a crash harmless: a blob is uploaded and verified (sha256 computed while uploading;
 * a multipart upload is only completed when it matches) before it is reported stored, `putImage` HEADs every
 * blob a record names and refuses the record if one is missing, and `getIndex` ignores an entry whose image
 * record is missing. An S3 PUT is atomic, so a half-written object is never visible.
 *
 * The local side is a LocalStore directory (`localRoot`): blob files fetched or written, unpacked layers
 * (overlay lowerdirs), temp dirs, and locks. Everything in it is also in S3 and may be evicted (LRU, bounded by
 * `maxLocalBytes`, see LocalCache); a blob evicted locally is fetched again when next needed.
 */
import { createHash } from "node:crypto";
import { createWriteStream, promises as fsp } from "node:fs";
import path from "node:path";
import { type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { DigestMismatchError, NotFoundError, StoreError } from "../../errors.js";
import { digestHex, sha256Bytes, sha256File, type Digest } from "../../util/digest.js";
import { exists } from "../../util/fs.js";
import { LocalStore } from "../local.js";
import { StoreLayout } from "../layout.js";
import { checkNameRecord, nameRecordHex, parseNameRecord, resolveImageRef } from "../names.js";
import type {
  ChainRecord,
  ImageRecord,
  IndexEntry,
  LayerRecord,
  NameRecord,
  NamedStore,
  StoreMaintenance,
  StoreNamespace,
  StoredObject,
} from "../store.js";
import { DEFAULT_RETRY, withS3Retry, type RetryPolicy, type S3Where } from "./errors.js";
import { LocalCache } from "./local-cache.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix inside the bucket ("team/strata"); a trailing slash is added. Default: none. */
  prefix?: string;
  /** S3-compatible endpoint URL (MinIO, s3rver, …). Implies path-style addressing unless forcePathStyle is false. */
  endpoint?: string;
  /** Default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1 with an endpoint, else the SDK's config files. */
  region?: string;
  forcePathStyle?: boolean;
  /** Default: the SDK's default credential chain (env, profile, SSO, web identity, instance metadata, …). */
  credentials?: S3Credentials;
  /** The local cache directory (also the Store's `root`). Default: `<STRATA_HOME>/s3/<bucket>`. */
  localRoot?: string;
  /** Bound on cached blobs + unpacked layers. Default 20 GiB. */
  maxLocalBytes?: number;
  /** Entries used within this window are never evicted (they may be about to be mounted). Default 5 minutes. */
  evictGraceMs?: number;
  /** Blobs at least this big are uploaded in parts and downloaded by parallel ranged GETs. Default 64 MiB. */
  multipartThreshold?: number;
  /** Part size (raised as needed to stay under 10,000 parts; S3's minimum is 5 MiB). Default 16 MiB. */
  partSize?: number;
  /** Parts in flight per blob. Default 4. */
  concurrency?: number;
  /** Attempts per S3 request, including the first. Default 6. */
  maxAttempts?: number;
  retryBaseDelayMs?: number;
  retryMaxDelayMs?: number;
  /** TCP connect timeout. Default 5 s. */
  connectTimeoutMs?: number;
  /** A request whose socket is idle this long fails (and is retried). Default 60 s. */
  socketTimeoutMs?: number;
  /** A preconfigured client (the options above that configure a client are then ignored). */
  client?: S3Client;
}

/** Counters of what this store instance did (tests, benchmarks, diagnostics). */
export interface S3StoreStats {
  blobsUploaded: number;
  bytesUploaded: number;
  multipartUploads: number;
  partsUploaded: number;
  /** Uploads skipped because S3 already had the blob (HEAD first). */
  blobsAlreadyPresent: number;
  blobsFetched: number;
  bytesFetched: number;
  rangedFetches: number;
}

/** Parses a size like "20G", "512M", "1.5GiB" or a plain byte count. */
export function parseByteSize(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(s);
  if (!m) throw new StoreError(`invalid size "${s}": expected a byte count or a number with K, M, G or T (e.g. 20G)`);
  const unit = { "": 1, k: 1024, m: MiB, g: GiB, t: 1024 * GiB }[m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"];
  return Math.floor(Number(m[1]) * unit);
}

function normalizePrefix(p: string | undefined): string {
  const trimmed = (p ?? "").replace(/^\/+|\/+$/g, "");
  return trimmed ? `${trimmed}/` : "";
}

const INDEX_KEY_RE = /^[0-9a-z-]+$/;
const IMAGE_KEY_RE = /images\/([0-9a-f]{64})\.json$/;

/** Runs `fn` over `items` with at most `limit` in flight; rejects with the first failure after all settle. */
async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { e: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i);
      } catch (e) {
        failure ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw failure.e;
}

const md5Base64 = (b: Uint8Array) => createHash("md5").update(b).digest("base64");

export class S3Store implements NamedStore, StoreMaintenance {
  /** The local cache directory (where statcache, definitions and temp dirs live). */
  readonly root: string;
  /** The layout of the local cache directory. */
  readonly layout: StoreLayout;
  readonly bucket: string;
  readonly prefix: string;
  readonly endpoint: string | undefined;
  readonly client: S3Client;
  readonly cache: LocalCache;
  readonly stats: S3StoreStats = {
    blobsUploaded: 0,
    bytesUploaded: 0,
    multipartUploads: 0,
    partsUploaded: 0,
    blobsAlreadyPresent: 0,
    blobsFetched: 0,
    bytesFetched: 0,
    rangedFetches: 0,
  };
  readonly #local: LocalStore;
  readonly #ownsClient: boolean;
  readonly #retry: RetryPolicy;
  readonly #where: S3Where;
  readonly #multipartThreshold: number;
  readonly #partSize: number;
  readonly #concurrency: number;
  /** Blobs known to be in S3 (uploaded or HEADed by this process). S3 objects are never changed, only pruned. */
  readonly #remoteBlobs = new Set<string>();
  /** Image records by id (immutable once written). */
  readonly #images = new Map<string, ImageRecord>();
  readonly #uploading = new Map<string, Promise<boolean>>();
  readonly #fetching = new Map<string, Promise<void>>();
  readonly #unpacking = new Map<string, Promise<string>>();

  private constructor(local: LocalStore, opts: S3StoreOptions) {
    this.#local = local;
    this.root = local.root;
    this.layout = local.layout;
    this.bucket = opts.bucket;
    this.prefix = normalizePrefix(opts.prefix);
    this.endpoint = opts.endpoint;
    this.#where = { bucket: opts.bucket, ...(opts.endpoint ? { endpoint: opts.endpoint } : {}) };
    this.#retry = {
      attempts: Math.max(1, opts.maxAttempts ?? DEFAULT_RETRY.attempts),
      baseDelayMs: opts.retryBaseDelayMs ?? DEFAULT_RETRY.baseDelayMs,
      maxDelayMs: opts.retryMaxDelayMs ?? DEFAULT_RETRY.maxDelayMs,
    };
    this.#multipartThreshold = Math.max(1, opts.multipartThreshold ?? 64 * MiB);
    this.#partSize = Math.max(5 * MiB, opts.partSize ?? 16 * MiB);
    this.#concurrency = Math.max(1, opts.concurrency ?? 4);
    this.cache = new LocalCache(local, {
      maxBytes: opts.maxLocalBytes ?? 20 * GiB,
      graceMs: opts.evictGraceMs ?? 5 * 60_000,
    });
    this.#ownsClient = !opts.client;
    this.client = opts.client ?? S3Store.#makeClient(opts);
  }

  static #makeClient(opts: S3StoreOptions): S3Client {
    const region =
      opts.region ??
      (process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || (opts.endpoint ? "us-east-1" : undefined));
    return new S3Client({
      ...(region ? { region } : {}),
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      forcePathStyle: opts.forcePathStyle ?? Boolean(opts.endpoint),
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      // Retries are ours (withS3Retry): exponential backoff with jitter and no retry quota, so a flaky link slows
      // a build down instead of failing it, and the final error says how many attempts were made.
      maxAttempts: 1,
      // Plain payloads (no aws-chunked CRC trailers), which every S3-compatible server understands; integrity
      // comes from Content-MD5 on uploads and our own sha256 over every blob written or read.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      requestHandler: {
        connectionTimeout: opts.connectTimeoutMs ?? 5000,
        socketTimeout: opts.socketTimeoutMs ?? 60_000,
        httpAgent: { keepAlive: true, maxSockets: 64 },
        httpsAgent: { keepAlive: true, maxSockets: 64 },
      },
    });
  }

  /** Opens a store on `opts.bucket`, creating the local cache directory. Makes no request (see `check()`). */
  static async open(opts: S3StoreOptions): Promise<S3Store> {
    if (!opts.bucket) throw new StoreError("S3 store: no bucket given (set STRATA_S3_BUCKET)");
    const localRoot = opts.localRoot ?? StoreLayout.default().s3CacheDir(opts.bucket);
    return new S3Store(await LocalStore.open(localRoot), opts);
  }

  /**
   * Opens the store configured by the environment: STRATA_S3_BUCKET (required), STRATA_S3_ENDPOINT (path-style
   * addressing when set), STRATA_S3_PREFIX, STRATA_S3_CACHE_DIR (local cache, default `<STRATA_HOME>/s3/<bucket>`),
   * STRATA_S3_CACHE_SIZE (e.g. 20G), and the standard AWS variables through the SDK's default chain.
   */
  static async fromEnv(
    env: NodeJS.ProcessEnv = process.env,
    overrides: Partial<S3StoreOptions> = {},
  ): Promise<S3Store> {
    const bucket = env.STRATA_S3_BUCKET;
    if (!bucket) throw new StoreError("STRATA_S3_BUCKET is not set: it names the bucket of the S3 store");
    const endpoint = env.STRATA_S3_ENDPOINT || undefined;
    const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined;
    return S3Store.open({
      bucket,
      ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
      ...(env.STRATA_S3_PREFIX ? { prefix: env.STRATA_S3_PREFIX } : {}),
      ...(region ? { region } : {}),
      ...(env.STRATA_S3_CACHE_DIR ? { localRoot: path.resolve(env.STRATA_S3_CACHE_DIR) } : {}),
      ...(env.STRATA_S3_CACHE_SIZE ? { maxLocalBytes: parseByteSize(env.STRATA_S3_CACHE_SIZE) } : {}),
      ...overrides,
    });
  }

  /** `s3://bucket/prefix` */
  get location(): string {
    return `s3://${this.bucket}/${this.prefix}`;
  }

  /** Verifies that the bucket is reachable with the configured credentials (a clear StoreError if not). */
  async check(): Promise<void> {
    try {
      await this.#s3("HeadBucket", "", () => this.client.send(new HeadBucketCommand({ Bucket: this.bucket })));
    } catch (e) {
      // HEAD responses have no body, so a missing bucket is a bare 404.
      if (e instanceof NotFoundError)
        throw new StoreError(
          `S3 bucket "${this.bucket}" does not exist${this.endpoint ? ` at ${this.endpoint}` : ""}: create it, or set STRATA_S3_BUCKET to an existing bucket`,
        );
      throw e;
    }
  }

  /** Releases the client's sockets (when the store created the client). */
  close(): void {
    if (this.#ownsClient) this.client.destroy();
  }

  /**
   * Keeps the local copies of these blobs and layers (and the blobs of these layers) from being evicted until
   * the returned function is called. A build should pin the layers of the image it builds on for its duration.
   */
  pin(refs: Iterable<Digest | LayerRecord>): () => void {
    const paths: string[] = [];
    for (const r of refs) {
      if (typeof r === "string") paths.push(this.cache.blobFile(r));
      else paths.push(this.cache.blobFile(r.digest), this.cache.layerPath(r.diffId));
    }
    return this.cache.pin(paths);
  }

  // ---- S3 plumbing ---------------------------------------------------------------------------------------------

  #key(rel: string): string {
    return this.prefix + rel;
  }

  #blobKey(d: Digest): string {
    return this.#key(`blobs/sha256/${digestHex(d)}`);
  }

  #s3<T>(op: string, key: string, fn: (attempt: number) => Promise<T>): Promise<T> {
    return withS3Retry(this.#where, op, key, this.#retry, fn);
  }

  /** HEAD an object: its size, or undefined if it does not exist. */
  async #head(key: string): Promise<number | undefined> {
    try {
      const r = await this.#s3("HEAD", key, () =>
        this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key })),
      );
      return r.ContentLength ?? 0;
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  async #getText(key: string): Promise<string | undefined> {
    try {
      return await this.#s3("GET", key, async () => {
        const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
        if (!r.Body) return "";
        return r.Body.transformToString("utf8");
      });
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  async #getJson<T>(key: string): Promise<T | undefined> {
    const text = await this.#getText(key);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw new StoreError(
        `corrupt record s3://${this.bucket}/${key}: ${(e as Error).message} (delete it to let Strata rebuild it)`,
        { cause: e },
      );
    }
  }

  async #put(key: string, body: string | Uint8Array, contentType: string): Promise<void> {
    const bytes = typeof body === "string" ? Buffer.from(body) : body;
    await this.#s3("PUT", key, () =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: bytes,
          ContentLength: bytes.length,
          ContentMD5: md5Base64(bytes),
          ContentType: contentType,
        }),
      ),
    );
  }

  /** Every key under `rel` (paginated). */
  async #list(rel: string): Promise<string[]> {
    const prefix = this.#key(rel);
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const r = await this.#s3("LIST", prefix, () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            ...(token ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      for (const o of r.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  // ---- blobs ---------------------------------------------------------------------------------------------------

  /** True when S3 has the blob (the local cache is not the authority: it only holds copies). */
  async hasBlob(d: Digest): Promise<boolean> {
    const hex = digestHex(d);
    if (this.#remoteBlobs.has(hex)) return true;
    const found = (await this.#head(this.#blobKey(d))) !== undefined;
    if (found) this.#remoteBlobs.add(hex);
    return found;
  }

  async openBlob(d: Digest): Promise<Readable> {
    const release = this.pin([d]);
    try {
      for (let attempt = 0; ; attempt++) {
        const file = await this.#ensureBlob(d);
        // Open before returning: eviction may unlink the file afterwards, the open descriptor keeps reading it.
        const fh = await fsp.open(file, "r").catch((e: NodeJS.ErrnoException) => {
          if (e.code === "ENOENT" && attempt === 0) return undefined; // evicted by another process meanwhile
          throw e;
        });
        if (fh) return fh.createReadStream();
      }
    } finally {
      release();
    }
  }

  async readBlob(d: Digest): Promise<Buffer> {
    const release = this.pin([d]);
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          return await fsp.readFile(await this.#ensureBlob(d));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT" || attempt > 0) throw e;
        }
      }
    } finally {
      release();
    }
  }

  async blobPath(d: Digest): Promise<string> {
    const release = this.pin([d]);
    try {
      return await this.#ensureBlob(d);
    } finally {
      release();
    }
  }

  /** The blob's path in the local cache, fetching it from S3 first if it is not there. */
  async #ensureBlob(d: Digest): Promise<string> {
    const file = this.cache.blobFile(d);
    if (await exists(file)) {
      await this.cache.touch(file);
      return file;
    }
    const hex = digestHex(d);
    let p = this.#fetching.get(hex);
    if (!p) {
      p = this.#fetchBlob(d).finally(() => this.#fetching.delete(hex));
      this.#fetching.set(hex, p);
    }
    await p;
    return file;
  }

  async #fetchBlob(d: Digest): Promise<void> {
    const key = this.#blobKey(d);
    const size = await this.#head(key);
    if (size === undefined)
      throw new NotFoundError(`blob ${d} is not in the store at ${this.location} (local cache ${this.root})`);
    this.#remoteBlobs.add(digestHex(d));
    const tmp = await this.#local.tempDir("fetch");
    const file = path.join(tmp, "blob");
    try {
      let actual: Digest;
      if (size >= this.#multipartThreshold && size > this.#partSize) {
        await this.#fetchRanges(key, file, size);
        actual = await sha256File(file);
        this.stats.rangedFetches++;
      } else {
        actual = await this.#s3("GET", key, async () => {
          const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
          const h = createHash("sha256");
          const hashing = new Transform({
            transform(chunk: Buffer, _enc, cb) {
              h.update(chunk);
              cb(null, chunk);
            },
          });
          await pipeline(r.Body as Readable, hashing, createWriteStream(file));
          return ("sha256:" + h.digest("hex")) as Digest;
        });
      }
      if (actual !== d)
        throw new DigestMismatchError(
          d,
          actual,
          `s3://${this.bucket}/${key} (the object in S3 is corrupt: delete it and rebuild)`,
        );
      this.stats.blobsFetched++;
      this.stats.bytesFetched += size;
      const dest = this.cache.blobFile(d);
      await this.#local.putBlobFile(file, d, { verified: true });
      await this.cache.touch(dest);
      await this.cache.evict([dest], size);
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }

  /** Downloads a large object by parallel ranged GETs into `file`. */
  async #fetchRanges(key: string, file: string, size: number): Promise<void> {
    const fh = await fsp.open(file, "w");
    try {
      const ranges: Array<[number, number]> = [];
      for (let off = 0; off < size; off += this.#partSize) ranges.push([off, Math.min(size, off + this.#partSize) - 1]);
      await forEachLimit(ranges, this.#concurrency, async ([start, end]) => {
        const buf = await this.#s3(`GET bytes=${start}-${end}`, key, async () => {
          const r = await this.client.send(
            new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end}` }),
          );
          const bytes = await r.Body!.transformToByteArray();
          if (bytes.length !== end - start + 1)
            throw new StoreError(
              `S3 GET s3://${this.bucket}/${key} bytes=${start}-${end} returned ${bytes.length} bytes (the server may not support ranged reads)`,
            );
          return bytes;
        });
        await fh.write(buf, 0, buf.length, start);
      });
    } finally {
      await fh.close();
    }
  }

  async putBlobBytes(data: Uint8Array): Promise<Digest> {
    const d = sha256Bytes(data);
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    await this.#upload(d, data.length, async (off, len) => buf.subarray(off, off + len));
    // Keep a copy: a blob just written is usually read again soon (configs, manifests, layers of the next step).
    const file = this.cache.blobFile(d);
    const had = await exists(file);
    await this.#local.putBlobBytes(data);
    await this.cache.touch(file);
    await this.cache.evict([file], had ? 0 : data.length);
    return d;
  }

  async putBlobFile(tempPath: string, d: Digest, opts: { verified?: boolean } = {}): Promise<void> {
    const fh = await fsp.open(tempPath, "r");
    let uploadedHere: boolean;
    let size: number;
    try {
      size = (await fh.stat()).size;
      uploadedHere = await this.#upload(d, size, (off, len) => readExactly(fh, off, len));
    } catch (e) {
      if (e instanceof DigestMismatchError) await fsp.rm(tempPath, { force: true });
      throw e;
    } finally {
      await fh.close();
    }
    // Into the local cache. An upload from this file verified its digest; if S3 already had the blob, nothing
    // read the file yet, so LocalStore verifies it unless the caller vouches for it.
    const file = this.cache.blobFile(d);
    const had = await exists(file);
    await this.#local.putBlobFile(tempPath, d, { verified: opts.verified === true || uploadedHere });
    await this.cache.touch(file);
    await this.cache.evict([file], had ? 0 : size);
  }

  /**
   * Makes sure S3 has blob `d` with `size` bytes read by `read`: HEAD first (nothing is uploaded twice), else a
   * single PUT or a parallel multipart upload, hashing the bytes as they go and refusing (before the object
   * becomes visible) if they do not hash to `d`. True when this call uploaded (and so verified) the bytes.
   */
  async #upload(d: Digest, size: number, read: (offset: number, length: number) => Promise<Buffer>): Promise<boolean> {
    const hex = digestHex(d);
    for (;;) {
      // One upload per blob at a time in this process; a waiter re-checks afterwards (the first may have failed).
      const running = this.#uploading.get(hex);
      if (running) {
        await running.catch(() => undefined);
        continue;
      }
      const attempt = (async () => {
        if (this.#remoteBlobs.has(hex) || (await this.hasBlob(d))) return false;
        await this.#uploadNow(d, size, read);
        this.#remoteBlobs.add(hex);
        return true;
      })();
      this.#uploading.set(hex, attempt);
      try {
        const uploaded = await attempt;
        if (!uploaded) this.stats.blobsAlreadyPresent++;
        return uploaded;
      } finally {
        if (this.#uploading.get(hex) === attempt) this.#uploading.delete(hex);
      }
    }
  }

  async #uploadNow(d: Digest, size: number, read: (offset: number, length: number) => Promise<Buffer>): Promise<void> {
    const key = this.#blobKey(d);
    const where = `blob upload to s3://${this.bucket}/${key}`;
    if (size < this.#multipartThreshold) {
      const body = await read(0, size);
      const actual = sha256Bytes(body);
      if (actual !== d) throw new DigestMismatchError(d, actual, where);
      await this.#put(key, body, "application/octet-stream");
      this.stats.blobsUploaded++;
      this.stats.bytesUploaded += size;
      return;
    }
    const partSize = Math.max(this.#partSize, Math.ceil(size / 10_000));
    const created = await this.#s3("CreateMultipartUpload", key, () =>
      this.client.send(
        new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ContentType: "application/octet-stream" }),
      ),
    );
    const uploadId = created.UploadId;
    if (!uploadId) throw new StoreError(`S3 CreateMultipartUpload s3://${this.bucket}/${key} returned no upload id`);
    const hash = createHash("sha256");
    const etags: string[] = [];
    const inflight = new Set<Promise<void>>();
    let failure: { e: unknown } | undefined;
    try {
      // Parts are read (and hashed) in order; up to `concurrency` of them are on the wire at once.
      for (let part = 1, off = 0; off < size && !failure; part++, off += partSize) {
        const len = Math.min(partSize, size - off);
        const chunk = await read(off, len);
        hash.update(chunk);
        const n = part;
        const p: Promise<void> = this.#s3(`UploadPart ${n}`, key, () =>
          this.client.send(
            new UploadPartCommand({
              Bucket: this.bucket,
              Key: key,
              UploadId: uploadId,
              PartNumber: n,
              Body: chunk,
              ContentLength: len,
              ContentMD5: md5Base64(chunk),
            }),
          ),
        )
          .then((r) => {
            if (!r.ETag) throw new StoreError(`S3 UploadPart ${n} s3://${this.bucket}/${key} returned no ETag`);
            etags[n - 1] = r.ETag;
            this.stats.partsUploaded++;
          })
          .catch((e: unknown) => {
            failure ??= { e };
          })
          .finally(() => inflight.delete(p));
        inflight.add(p);
        if (inflight.size >= this.#concurrency) await Promise.race(inflight);
      }
      await Promise.all(inflight);
      if (failure) throw failure.e;
      const actual = ("sha256:" + hash.digest("hex")) as Digest;
      if (actual !== d) throw new DigestMismatchError(d, actual, where);
      await this.#s3("CompleteMultipartUpload", key, () =>
        this.client.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: key,
            UploadId: uploadId,
            MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
          }),
        ),
      );
      this.stats.multipartUploads++;
      this.stats.blobsUploaded++;
      this.stats.bytesUploaded += size;
    } catch (e) {
      await Promise.allSettled(inflight);
      // Best effort: an upload left behind is invisible (never completed) and a bucket lifecycle rule or a
      // later prune reclaims it.
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }))
        .catch(() => undefined);
      throw e;
    }
  }

  // ---- index, images, chains, logs -----------------------------------------------------------------------------

  #indexKey(key: string): string {
    if (!INDEX_KEY_RE.test(key)) throw new StoreError(`invalid cache key "${key}"`);
    return this.#key(`index/${key}.json`);
  }

  async getIndex(key: string): Promise<IndexEntry | undefined> {
    const entry = await this.#getJson<IndexEntry>(this.#indexKey(key));
    // An entry is only trusted if its image record (and so every blob it names) exists.
    if (entry && !(await this.getImage(entry.imageId))) return undefined;
    return entry;
  }

  async putIndex(entry: IndexEntry): Promise<void> {
    await this.#put(this.#indexKey(entry.key), JSON.stringify(entry), "application/json");
  }

  #imageKey(id: Digest): string {
    return this.#key(`images/${digestHex(id)}.json`);
  }

  async getImage(id: Digest): Promise<ImageRecord | undefined> {
    const hex = digestHex(id);
    const cached = this.#images.get(hex);
    if (cached) return structuredClone(cached);
    const rec = await this.#getJson<ImageRecord>(this.#imageKey(id));
    if (rec) this.#rememberImage(hex, rec);
    return rec;
  }

  #rememberImage(hex: string, rec: ImageRecord): void {
    if (this.#images.size >= 10_000) this.#images.delete(this.#images.keys().next().value!);
    this.#images.set(hex, structuredClone(rec));
  }

  async putImage(record: ImageRecord): Promise<void> {
    const digests = [...new Set([record.configDigest, record.manifestDigest, ...record.layers.map((l) => l.digest)])];
    // Always HEAD (not the in-process memo): the record must never name a blob S3 does not have right now.
    const missing: Digest[] = [];
    await forEachLimit(digests, 8, async (d) => {
      if ((await this.#head(this.#blobKey(d))) === undefined) {
        missing.push(d);
        // Pruned since this process saw it: the next upload of it must not be skipped.
        this.#remoteBlobs.delete(digestHex(d));
      } else this.#remoteBlobs.add(digestHex(d));
    });
    if (missing.length) {
      const first = digests.find((d) => missing.includes(d))!;
      throw new StoreError(`refusing to record image ${record.id}: blob ${first} is missing from ${this.location}`);
    }
    await this.#put(this.#imageKey(record.id), JSON.stringify(record), "application/json");
    this.#rememberImage(digestHex(record.id), record);
  }

  async listImages(): Promise<ImageRecord[]> {
    const ids = (await this.#list("images/"))
      .map((k) => IMAGE_KEY_RE.exec(k)?.[1])
      .filter((h): h is string => h !== undefined);
    const out: Array<ImageRecord | undefined> = new Array(ids.length);
    await forEachLimit(ids, 16, async (hex, i) => {
      out[i] = await this.getImage(("sha256:" + hex) as Digest);
    });
    return out.filter((r): r is ImageRecord => r !== undefined);
  }

  async resolveImage(ref: string): Promise<ImageRecord> {
    return resolveImageRef(ref, this, (id) => this.#resolveId(id), this.location);
  }

  async #resolveId(ref: string): Promise<ImageRecord> {
    const hex = ref.replace(/^sha256:/, "").toLowerCase();
    if (!/^[0-9a-f]{6,64}$/.test(hex))
      throw new NotFoundError(
        `"${ref}" is not an image id (expected sha256:<hex> or a prefix of at least 6 hex digits)`,
      );
    if (hex.length === 64) {
      const r = await this.getImage(("sha256:" + hex) as Digest);
      if (!r)
        throw new NotFoundError(
          `image ${ref} is not in the store at ${this.location} (list images with \`strata images\`)`,
        );
      return r;
    }
    const matches = (await this.#list(`images/${hex}`))
      .map((k) => IMAGE_KEY_RE.exec(k)?.[1])
      .filter((h): h is string => h !== undefined);
    if (matches.length === 0)
      throw new NotFoundError(
        `no image id starts with ${hex} in the store at ${this.location} (list images with \`strata images\`)`,
      );
    if (matches.length > 1)
      throw new NotFoundError(`image id prefix ${hex} is ambiguous (${matches.length} images); give more digits`);
    const r = await this.getImage(("sha256:" + matches[0]) as Digest);
    if (!r) throw new NotFoundError(`image sha256:${matches[0]} disappeared from the store at ${this.location}`);
    return r;
  }

  #chainKey(name: string): string {
    return this.#key(`chains/${digestHex(sha256Bytes(name))}.json`);
  }

  async getChain(name: string): Promise<ChainRecord | undefined> {
    return this.#getJson<ChainRecord>(this.#chainKey(name));
  }

  async putChain(chain: ChainRecord): Promise<void> {
    await this.#put(this.#chainKey(chain.name), JSON.stringify(chain), "application/json");
  }

  #logKey(id: Digest): string {
    return this.#key(`logs/${digestHex(id)}.log`);
  }

  async putLog(imageId: Digest, text: string): Promise<void> {
    await this.#put(this.#logKey(imageId), text, "text/plain; charset=utf-8");
  }

  async getLog(imageId: Digest): Promise<string | undefined> {
    return this.#getText(this.#logKey(imageId));
  }

  #nameKey(name: string): string {
    return this.#key(`names/${nameRecordHex(name)}.json`);
  }

  async getName(name: string): Promise<NameRecord | undefined> {
    const text = await this.#getText(this.#nameKey(name));
    if (text === undefined) return undefined;
    const rec = parseNameRecord(text, `s3://${this.bucket}/${this.#nameKey(name)}`);
    return rec.name === name ? rec : undefined;
  }

  async putName(record: NameRecord): Promise<void> {
    checkNameRecord(record, /^scope:[a-z0-9-]+:/.exec(record.name)?.[0]);
    if (!(await this.getImage(record.imageId)))
      throw new StoreError(`refusing to name image ${record.imageId} ${record.name}: it is not in ${this.location}`);
    await this.#put(this.#nameKey(record.name), JSON.stringify(record), "application/json");
  }

  async deleteName(name: string): Promise<boolean> {
    if (!(await this.getName(name))) return false;
    const key = this.#nameKey(name);
    await this.#s3("DELETE", key, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })));
    return true;
  }

  async listNames(): Promise<NameRecord[]> {
    const keys = (await this.#list("names/")).filter((k) => /names\/[0-9a-f]{64}\.json$/.test(k));
    const out: Array<NameRecord | undefined> = new Array(keys.length);
    await forEachLimit(keys, 16, async (key, i) => {
      const text = await this.#getText(key);
      if (text !== undefined) out[i] = parseNameRecord(text, `s3://${this.bucket}/${key}`);
    });
    return out.filter((r): r is NameRecord => r !== undefined);
  }

  // ---- maintenance (strata cache prune) --------------------------------------------------------------------------

  /** The object key of a stored object (see StoredObject for the names). */
  #storedKey(ns: StoreNamespace, name: string): string {
    switch (ns) {
      case "index":
        return this.#indexKey(name);
      case "blobs":
        if (!/^sha256:[0-9a-f]{64}$/.test(name)) throw new StoreError(`invalid blob digest "${name}"`);
        return this.#blobKey(name as Digest);
      default:
        if (!/^[0-9a-f]{64}$/.test(name)) throw new StoreError(`invalid ${ns} name "${name}"`);
        return this.#key(`${ns}/${name}${ns === "logs" ? ".log" : ".json"}`);
    }
  }

  async listStored(ns: StoreNamespace): Promise<StoredObject[]> {
    const rel = ns === "blobs" ? "blobs/sha256/" : `${ns}/`;
    const prefix = this.#key(rel);
    const re =
      ns === "index"
        ? /^([0-9a-z-]+)\.json$/
        : ns === "blobs"
          ? /^([0-9a-f]{64})$/
          : ns === "logs"
            ? /^([0-9a-f]{64})\.log$/
            : /^([0-9a-f]{64})\.json$/;
    const out: StoredObject[] = [];
    let token: string | undefined;
    do {
      const r = await this.#s3("LIST", prefix, () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            ...(token ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      for (const o of r.Contents ?? []) {
        const m = o.Key ? re.exec(o.Key.slice(prefix.length)) : null;
        if (!m) continue;
        out.push({
          name: ns === "blobs" ? `sha256:${m[1]}` : m[1]!,
          modifiedMs: lastModifiedMs(o.LastModified),
          size: o.Size ?? 0,
        });
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async deleteStored(ns: StoreNamespace, name: string, opts: { ifModifiedBefore?: number } = {}): Promise<boolean> {
    const key = this.#storedKey(ns, name);
    let exists = true;
    try {
      const h = await this.#s3("HEAD", key, () =>
        this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key })),
      );
      if (opts.ifModifiedBefore !== undefined && lastModifiedMs(h.LastModified) >= opts.ifModifiedBefore) return false;
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
      exists = false;
    }
    if (exists)
      await this.#s3("DELETE", key, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })));
    // Forget what this process remembered about it. A local cache copy of a blob stays until LRU eviction: its
    // content is still right, and putImage checks S3 itself, so no record can name the blob while S3 lacks it.
    if (ns === "blobs") this.#remoteBlobs.delete(digestHex(name));
    if (ns === "images") this.#images.delete(name);
    return exists;
  }

  // ---- local: unpacked layers, temp dirs, locks, recovery -------------------------------------------------------

  async layerDir(layer: LayerRecord): Promise<string> {
    const dir = this.cache.layerPath(layer.diffId);
    if (await exists(dir)) {
      await this.cache.touch(dir);
      return dir;
    }
    const hex = digestHex(layer.diffId);
    let p = this.#unpacking.get(hex);
    if (!p) {
      p = this.#unpack(layer).finally(() => this.#unpacking.delete(hex));
      this.#unpacking.set(hex, p);
    }
    return p;
  }

  async #unpack(layer: LayerRecord): Promise<string> {
    const release = this.pin([layer]);
    try {
      await this.#ensureBlob(layer.digest);
      // The blob is local (and pinned): LocalStore unpacks it and checks the diffID.
      const dir = await this.#local.layerDir(layer);
      await this.cache.touch(dir);
      await this.cache.evict([dir]);
      return dir;
    } finally {
      release();
    }
  }

  async adoptLayerDir(diffId: Digest, dir: string): Promise<string> {
    const target = await this.#local.adoptLayerDir(diffId, dir);
    await this.cache.touch(target);
    await this.cache.evict([target]);
    return target;
  }

  tempDir(prefix: string): Promise<string> {
    return this.#local.tempDir(prefix);
  }

  /**
   * Build locks are local to this machine (lock files in the cache directory): two machines sharing a bucket
   * may build the same key at the same time. That is safe — blobs are content-addressed, records are whole-object
   * PUTs and the last index write wins — only wasteful. Cross-machine coordination is the worker queue's job.
   */
  lock(key: string): Promise<() => Promise<void>> {
    return this.#local.lock(key);
  }

  recover(beforeReclaim?: () => Promise<void>): Promise<void> {
    return this.#local.recover(beforeReclaim);
  }
}

/**
 * When an object was last written, as the latest moment its Last-Modified allows: S3 reports whole seconds, and a
 * prune must never take an object written just after its cutoff for an older one.
 */
function lastModifiedMs(d: Date | undefined): number {
  return d ? d.getTime() + 999 : Number.MAX_SAFE_INTEGER;
}

async function readExactly(fh: fsp.FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) throw new StoreError(`file ended early: expected ${length} bytes at offset ${offset}`);
    done += bytesRead;
  }
  return buf;
}
