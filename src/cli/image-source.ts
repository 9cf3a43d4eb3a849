/**
 * Where the CLI finds the image a command names: the local store, or — with STRATA_SERVER set — the build service
 * first (the caller's tenant: its names, and the images it holds), then the local store. Commands that read only
 * records, configs and logs (`inspect`, `logs`) read them from where the image is; commands that need its layers
 * (`run`, `export`, `push`, `pull`) get it copied into the local store, fetching only what the store lacks (an image
 * the store has by its full id needs no question to the service). A service that cannot be reached leaves the local
 * store, with a line on stderr saying so.
 */
import { NotFoundError } from "../errors.js";
import type { FetchImageOptions, ServiceImages } from "../service/image-client.js";
import type { ImageRecord, NamedStore } from "../store/store.js";
import type { Digest } from "../util/digest.js";

/** What `inspect` and `logs` read: a store, or the service. */
export interface ImageReader {
  resolveImage(ref: string): Promise<ImageRecord>;
  getImage(id: Digest): Promise<ImageRecord | undefined>;
  readBlob(digest: Digest): Promise<Buffer>;
  getLog(id: Digest): Promise<string | undefined>;
}

/** The store the environment names (S3 with STRATA_S3_BUCKET, else STRATA_HOME). */
export async function openStore(): Promise<NamedStore> {
  const { openStoreFromEnv } = await import("../store/s3/open.js");
  return openStoreFromEnv();
}

/** The build service's image endpoints when STRATA_SERVER is set (with STRATA_TOKEN), else undefined. */
export async function serviceImagesFromEnv(): Promise<ServiceImages | undefined> {
  const { remoteServerFromEnv } = await import("../build.js");
  const remote = remoteServerFromEnv();
  if (!remote) return undefined;
  const { ServiceImages } = await import("../service/image-client.js");
  return new ServiceImages(remote.server, remote.token);
}

/**
 * Runs `fn` with the image `ref` names and a reader for it: the service's when STRATA_SERVER is set and the service
 * has it, else the local store's. Not found in either: the service's message, saying the local store lacks it too.
 */
export async function withImage<T>(
  ref: string,
  fn: (reader: ImageReader, image: ImageRecord) => Promise<T>,
): Promise<T> {
  const service = await serviceImagesFromEnv();
  try {
    if (service) {
      const found = await ask(service, () => service.resolveImage(ref));
      if (!(found instanceof NotFoundError)) return await fn(service, found);
      const store = await openStore();
      const local = await store.resolveImage(ref).catch(() => undefined);
      if (!local) throw new NotFoundError(`${found.message} (nor is it in the local store at ${store.root})`);
      return await fn(store, local);
    }
    const store = await openStore();
    return await fn(store, await store.resolveImage(ref));
  } finally {
    service?.close();
  }
}

/**
 * The image `ref` names, in the local store: with STRATA_SERVER set, copied from the service when it has it (only
 * what the store lacks, verified), else the local store's own.
 */
export async function localImage(
  ref: string,
  opts: FetchImageOptions = {},
): Promise<{ store: NamedStore; image: ImageRecord; fromService: boolean; name?: string }> {
  const store = await openStore();
  const service = await serviceImagesFromEnv();
  if (!service) return { store, image: await store.resolveImage(ref), fromService: false };
  try {
    const full = /^sha256:[0-9a-f]{64}$/.test(ref) ? await store.getImage(ref as Digest) : undefined;
    if (full && !opts.chain) return { store, image: full, fromService: false };
    const resolved = await ask(service, () => service.resolve(ref));
    if (resolved instanceof NotFoundError) {
      const local = await store.resolveImage(ref).catch(() => undefined);
      if (!local) throw new NotFoundError(`${resolved.message} (nor is it in the local store at ${store.root})`);
      return { store, image: local, fromService: false };
    }
    const { fetchImage } = await import("../service/image-client.js");
    const fetched = await fetchImage(service, store, resolved.imageId as Digest, opts);
    return { store, image: fetched.image, fromService: true, ...(resolved.name ? { name: resolved.name } : {}) };
  } finally {
    service.close();
  }
}

/**
 * What the service answers, or its not-found as a value (the caller tries the local store); a service that cannot be
 * reached is a not-found too, after a line on stderr.
 */
async function ask<T>(service: ServiceImages, question: () => Promise<T>): Promise<T | NotFoundError> {
  try {
    return await question();
  } catch (e) {
    if (e instanceof NotFoundError) return e;
    const { RemoteBuildError } = await import("../service/client.js");
    if (!(e instanceof RemoteBuildError && e.code === "UNREACHABLE")) throw e;
    process.stderr.write(`strata: ${e.message}; looking in the local store only\n`);
    return new NotFoundError(`${service.where} could not be reached`);
  }
}
