/**
 * The client of the service's image endpoints (`wire/images.ts`): names, resolving a ref, reading an image's record,
 * blobs and step logs, copying an image into a local store (only what the store lacks), and pushes the service makes.
 *
 * Content is never taken on trust: a config or manifest is accepted only when its bytes hash to the digest asked for,
 * an image record only when its config and manifest (verified) describe exactly its layers, and a layer only when the
 * store's verified write (`putBlobFile`) finds its digest — so a server can lie about nothing it sends, short of the
 * step metadata (description, key inputs) no digest covers.
 */
import { createWriteStream, promises as fsp } from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
import { DigestMismatchError, NotFoundError, StoreError } from "../errors.js";
import type { ImageConfig, Manifest } from "../oci/types.js";
import type { BlobStore, HistoryStore, ImageRecord, ImageStore, WorkSpace } from "../store/store.js";
import { isDigest, sha256Bytes, type Digest } from "../util/digest.js";
import { RemoteBuildError, ServiceClient } from "./client.js";
import type { NameInfo, PushRequest, PushResponse, ResolveResponse } from "./wire/images.js";

/** An image reader over a build service, for one tenant (its token). */
export class ServiceImages {
  readonly client: ServiceClient;

  constructor(
    readonly server: string,
    token?: string,
  ) {
    this.client = new ServiceClient(server, token ?? process.env.STRATA_TOKEN);
  }

  close(): void {
    this.client.close();
  }

  /** Where images come from, for messages. */
  get where(): string {
    return `the build server ${this.server}`;
  }

  /** The image `ref` (a name, an id or an id prefix) names for this tenant; a NotFoundError when none. */
  async resolve(ref: string): Promise<ResolveResponse> {
    return notFoundAsError(this.client.json<ResolveResponse>("GET", `/v1/resolve/${encodeURIComponent(ref)}`));
  }

  /** An image's record, checked to be the image asked for. */
  async record(id: Digest): Promise<ImageRecord> {
    const rec = await notFoundAsError(this.client.json<ImageRecord>("GET", `/v1/images/${id}/record`));
    if (rec.id !== id || rec.configDigest !== id)
      throw new DigestMismatchError(id, String(rec.configDigest), `the record the build server sent for image ${id}`);
    return rec;
  }

  /** An image's record when the tenant holds it, else undefined. */
  async getImage(id: Digest): Promise<ImageRecord | undefined> {
    return this.record(id).catch((e: unknown) => {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    });
  }

  /** A (small: a config or manifest, at most `maxBytes`, default 16 MiB) blob's bytes, verified against its digest. */
  async readBlob(digest: Digest, maxBytes = 16 * 1024 * 1024): Promise<Buffer> {
    const res = await notFoundAsError(this.client.open(`/v1/blobs/${digest}`));
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res) {
      n += (c as Buffer).length;
      if (n > maxBytes) {
        res.destroy();
        throw new DigestMismatchError(digest, `more than ${maxBytes} bytes`, `blob ${digest} from ${this.where}`);
      }
      chunks.push(c as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    const actual = sha256Bytes(bytes);
    if (actual !== digest) throw new DigestMismatchError(digest, actual, `blob ${digest} from ${this.where}`);
    return bytes;
  }

  /**
   * Writes a blob into `file`, refusing more than `size` bytes (the size the verified manifest gives). The caller
   * verifies the digest (the store's `putBlobFile` does).
   */
  async downloadBlob(digest: Digest, file: string, size: number): Promise<void> {
    const res = await notFoundAsError(this.client.open(`/v1/blobs/${digest}`));
    let n = 0;
    const cap = new Transform({
      transform(chunk: Buffer, _enc, done) {
        n += chunk.length;
        if (n > size) done(new DigestMismatchError(digest, `more than ${size} bytes`, `blob ${digest}`));
        else done(null, chunk);
      },
    });
    await pipeline(res, cap, createWriteStream(file, { mode: 0o600 }));
  }

  /** An image's stored (redacted) build log, undefined when it has none. */
  async getLog(id: Digest): Promise<string | undefined> {
    try {
      const res = await this.client.open(`/v1/images/${id}/logs`);
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString("utf8");
    } catch (e) {
      if (e instanceof RemoteBuildError && e.status === 404) return undefined;
      throw e;
    }
  }

  /** The image `ref` names, read from the service (what `strata inspect` and `strata logs` need). */
  async resolveImage(ref: string): Promise<ImageRecord> {
    return this.record((await this.resolve(ref)).imageId as Digest);
  }

  async names(): Promise<NameInfo[]> {
    return (await this.client.json<{ names: NameInfo[] }>("GET", "/v1/names")).names;
  }

  /** Names an image the tenant holds on the service. */
  async tag(name: string, imageId: Digest): Promise<NameInfo> {
    return notFoundAsError(this.client.json<NameInfo>("PUT", `/v1/names/${encodeURIComponent(name)}`, { imageId }));
  }

  /** Removes a name on the service; a NotFoundError when there is none. */
  async untag(name: string): Promise<NameInfo> {
    return notFoundAsError(this.client.json<NameInfo>("DELETE", `/v1/names/${encodeURIComponent(name)}`));
  }

  /** Asks the service to push an image it holds (the request's login is used for this push only). */
  async push(req: PushRequest): Promise<PushResponse> {
    return notFoundAsError(this.client.json<PushResponse>("POST", "/v1/push", req));
  }
}

/** A 404 from the service as the NotFoundError a local store would throw, with the server's message. */
async function notFoundAsError<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof RemoteBuildError && e.status === 404) throw new NotFoundError(e.message);
    throw e;
  }
}

/**
 * Checks that a record describes exactly the config and manifest it names (both already verified by digest): the
 * manifest names the config and the record's layers (digest and size, in order), and the config's diffIDs are the
 * record's. Throws a StoreError saying what differs.
 */
export function checkRecordContent(rec: ImageRecord, config: ImageConfig, manifest: Manifest): void {
  const bad = (what: string) => new StoreError(`the build server's record of image ${rec.id} ${what}; refusing it`);
  if (manifest.config?.digest !== rec.configDigest) throw bad("names another config than its manifest does");
  const ml = manifest.layers ?? [];
  if (ml.length !== rec.layers.length) throw bad(`has ${rec.layers.length} layers where its manifest has ${ml.length}`);
  ml.forEach((d, i) => {
    const l = rec.layers[i]!;
    if (d.digest !== l.digest || d.size !== l.size || !isDigest(l.digest))
      throw bad(`differs from its manifest at layer ${i}`);
  });
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== rec.layers.length || diffIds.some((d, i) => d !== rec.layers[i]!.diffId))
    throw bad("has other diffIDs than its config");
}

export interface FetchImageOptions {
  /** Also copy the image's ancestors (records, their blobs, their logs) and its own log: `strata pull`. */
  chain?: boolean;
  /** A line per blob fetched. */
  log?: (line: string) => void;
}

/** What a fetch copied. */
export interface FetchedImage {
  image: ImageRecord;
  blobsFetched: number;
  bytesFetched: number;
}

/**
 * Copies image `id` from the service into `store`: its config and manifest (verified by digest, and against the
 * record), then every layer blob the store lacks (verified by the store's write), then its record. Nothing is
 * recorded unless all of it checked out.
 */
export async function fetchImage(
  images: ServiceImages,
  store: BlobStore & ImageStore & HistoryStore & WorkSpace,
  id: Digest,
  opts: FetchImageOptions = {},
): Promise<FetchedImage> {
  const out = { blobsFetched: 0, bytesFetched: 0 };
  const copyOne = async (imageId: Digest): Promise<ImageRecord> => {
    const local = await store.getImage(imageId);
    if (local) return local;
    const rec = await images.record(imageId);
    const small = async (d: Digest) => {
      if (await store.hasBlob(d)) return store.readBlob(d);
      const bytes = await images.readBlob(d);
      if ((await store.putBlobBytes(bytes)) !== d) throw new DigestMismatchError(d, sha256Bytes(bytes), `blob ${d}`);
      out.blobsFetched++;
      out.bytesFetched += bytes.length;
      return bytes;
    };
    const config = JSON.parse((await small(rec.configDigest)).toString("utf8")) as ImageConfig;
    const manifest = JSON.parse((await small(rec.manifestDigest)).toString("utf8")) as Manifest;
    checkRecordContent(rec, config, manifest);
    const tmp = await store.tempDir("fetch");
    try {
      for (const l of rec.layers) {
        if (await store.hasBlob(l.digest)) continue;
        const file = path.join(tmp, "blob");
        await images.downloadBlob(l.digest, file, l.size);
        await store.putBlobFile(file, l.digest);
        opts.log?.(`fetched ${l.digest.slice(7, 19)} (${l.size} bytes)`);
        out.blobsFetched++;
        out.bytesFetched += l.size;
      }
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
    await store.putImage(rec);
    return rec;
  };
  const image = await copyOne(id);
  if (opts.chain) {
    const seen = new Set<string>();
    for (let cur: ImageRecord | undefined = image; cur && !seen.has(cur.id); ) {
      seen.add(cur.id);
      if ((await store.getLog(cur.id)) === undefined) {
        const text = await images.getLog(cur.id);
        if (text !== undefined) await store.putLog(cur.id, text);
      }
      cur = cur.parent ? await copyOne(cur.parent).catch(ignoreNotFound) : undefined;
    }
  }
  return { image, ...out };
}

function ignoreNotFound(e: unknown): undefined {
  if (e instanceof NotFoundError) return undefined;
  throw e;
}
