/**
 * Pushes an image from the store to an OCI distribution registry.
 *
 * Order: every blob (layers and config, in parallel, bounded) → the image manifest by digest → the tag.
 * Per blob: `HEAD` (present, or redirected to storage ⇒ skip); else a cross-repository mount
 * (`POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>`) when the blob is known to live in another repository
 * of the same registry (`opts.mountFrom`, or the record kept by pulls and pushes in `blob-sources.ts`); else one
 * upload session: `POST` then a monolithic `PUT ?digest=` with the body (blobs up to `monolithicLimit`), or one
 * streaming `PATCH` with the whole body followed by `PUT ?digest=` — never several PATCHes (ECR drops the later ones,
 * and 2.8.2 ignores Content-Range).
 *
 * Manifests: `format: "oci"` pushes the stored OCI manifest as it is (so the digest is the one the store has);
 * `format: "docker"` converts it to Docker v2 schema 2 (Docker media types for manifest, config and layers; the
 * config bytes, and so the image id, are unchanged).
 */
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import pLimit from "p-limit";
import { InvalidDefinitionError } from "../errors.js";
import { MediaType, type Descriptor } from "../oci/types.js";
import type { BlobStore, ImageRecord, WorkSpace } from "../store/store.js";
import { isDigest, sha256Bytes, type Digest } from "../util/digest.js";
import { repositoryScope } from "./auth.js";
import { blobSources, recordBlobSources } from "./blob-sources.js";
import { convertImage } from "./estargz/convert.js";
import { RegistryClient, type FetchResult, type RegistryOptions } from "./client.js";
import { discard, displayUrl, errorFromResponse, formatSize, shortDigest } from "./http.js";
import { RegistryError, UnsupportedImageError } from "./errors.js";
import { parseReference, type ImageReference } from "./reference.js";

export type PushFormat = "oci" | "docker";

export interface PushOptions extends RegistryOptions {
  /** Manifest format: OCI (default) or Docker v2 schema 2. */
  format?: PushFormat;
  /**
   * Write eStargz layers (lazy-pullable): each layer is converted by our writer (`estargz/write.ts`: landmark, one gzip
   * member per file chunk, TOC, 51-byte footer) into the store, its descriptor carries the
   * `containerd.io/snapshot/stargz/toc.digest` and `io.containers.estargz.uncompressed-size` annotations, and a new
   * config names the new diffIDs. OCI format only (Docker v2 manifests drop annotations). `true` uses the defaults
   * (4 MiB chunks, `STRATA_GZIP_LEVEL`).
   */
  estargz?: boolean | EstargzPushOptions;
  /** One line per blob (`pushed sha256:… 1.2 MB`, `mounted sha256:… from team/base`, `sha256:… already exists`), manifest and tag. */
  onProgress?: (line: string) => void;
  /** Concurrent blob uploads (default 3). */
  concurrency?: number;
  /** Repositories of the same registry to try mounting blobs from (besides those recorded by earlier pulls/pushes). */
  mountFrom?: readonly string[];
  /** Blobs up to this size go up with one monolithic PUT; larger ones with one streaming PATCH + PUT (default 64 MiB). */
  monolithicLimit?: number;
  /** Attempts for temporary failures (default 3). */
  attempts?: number;
  /** First backoff delay in ms, doubled per attempt (default 300). */
  retryDelayMs?: number;
}

export interface EstargzPushOptions {
  /** Largest decompressed chunk of a file per gzip member (default 4 MiB). */
  chunkSize?: number;
  /** gzip level (default `STRATA_GZIP_LEVEL`). */
  level?: number;
}

export interface PushedBlob {
  digest: Digest;
  size: number;
  /** `existing`: the registry had it; `mounted`: mounted from `from`; `uploaded`: sent. */
  how: "existing" | "mounted" | "uploaded";
  from?: string;
}

export interface PushResult {
  /** The target, as parsed (`registry/repository:tag`). */
  reference: ImageReference;
  manifestDigest: Digest;
  manifestSize: number;
  /** The pushed manifest's media type. */
  mediaType: string;
  blobs: PushedBlob[];
}

const DEFAULT_MONOLITHIC_LIMIT = 64 * 1024 * 1024;
const MAX_MOUNT_CANDIDATES = 3;
const STARGZ_ANNOTATION_PREFIX = "containerd.io/snapshot/stargz/";

/** Pushes `image` (blobs, manifest, tag) to `ref` (`host[:port]/repo[:tag]`; the tag defaults to `latest`). */
export async function pushImage(
  store: BlobStore & WorkSpace,
  image: ImageRecord,
  ref: string,
  opts: PushOptions = {},
): Promise<PushResult> {
  const reference = parseReference(ref);
  if (reference.digest !== undefined) {
    throw new InvalidDefinitionError(
      `push target "${ref}" names a digest; push to a tag (the manifest digest is decided by the content)`,
    );
  }
  const format = opts.format ?? "oci";
  if (format !== "oci" && format !== "docker")
    throw new InvalidDefinitionError(`unknown push format "${String(format)}" (expected "oci" or "docker")`);
  const progress = opts.onProgress ?? (() => undefined);
  const target = `${reference.registry}/${reference.repository}`;

  const { config, layers, storedOci } = await prepareLayers(store, image, opts);
  const manifest =
    format === "oci" && storedOci ? storedOci : buildManifest(config, layers, format, `image ${image.id}`);

  // Blobs to send (each once), and where each might be mounted from.
  const blobs = new Map<Digest, Descriptor>();
  for (const d of [...layers, config]) if (!blobs.has(d.digest)) blobs.set(d.digest, d);
  const candidates = new Map<Digest, string[]>();
  const mountRepos = new Set<string>();
  for (const digest of blobs.keys()) {
    const recorded = (await blobSources(store, digest))
      .filter((s) => s.registry === reference.registry)
      .map((s) => s.repository);
    const list = [...new Set([...(opts.mountFrom ?? []), ...recorded])]
      .filter((r) => r !== reference.repository)
      .slice(0, MAX_MOUNT_CANDIDATES);
    candidates.set(digest, list);
    for (const r of list) mountRepos.add(r);
  }

  const client = new RegistryClient(reference, {
    ...opts,
    scopes: [
      repositoryScope(reference.repository, ["pull", "push"]),
      ...[...mountRepos].map((r) => repositoryScope(r, ["pull"])),
    ],
  });

  const limit = pLimit(Math.max(1, opts.concurrency ?? 3));
  const pushed = await Promise.all(
    [...blobs.values()].map((d) =>
      limit(async (): Promise<PushedBlob> => {
        const r = await client.withRetries(() =>
          pushBlob(client, store, d, candidates.get(d.digest) ?? [], opts.monolithicLimit ?? DEFAULT_MONOLITHIC_LIMIT),
        );
        if (r.how === "existing") progress(`${shortDigest(d.digest)} already exists`);
        else if (r.how === "mounted") progress(`mounted ${shortDigest(d.digest)} from ${r.from}`);
        else progress(`pushed ${shortDigest(d.digest)} ${formatSize(d.size)}`);
        return r;
      }),
    ),
  );

  // The manifest by digest first (every blob it names is now present), then the tag.
  await putManifest(client, manifest.digest, manifest);
  progress(`pushed manifest ${shortDigest(manifest.digest)} (${format === "oci" ? "OCI" : "Docker v2 schema 2"})`);
  if (reference.tag !== undefined) {
    await putManifest(client, reference.tag, manifest);
    progress(`tagged ${target}:${reference.tag}`);
  }
  await recordBlobSources(store, blobs.keys(), reference.registry, reference.repository);
  return {
    reference,
    manifestDigest: manifest.digest,
    manifestSize: manifest.bytes.length,
    mediaType: manifest.mediaType,
    blobs: pushed,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Layers and manifests

interface PreparedImage {
  config: Descriptor;
  layers: Descriptor[];
  /** The stored manifest, when it can be pushed as it is for the OCI format (so its digest stays the same). */
  storedOci?: BuiltManifest;
}

/**
 * The config and layer descriptors to push, from the stored manifest. With `estargz`, every layer blob is converted
 * into the store (`estargz/convert.ts`) and the descriptors (eStargz annotations included) and a config whose
 * `rootfs.diff_ids` match are returned instead; the manifest is then built from them.
 */
async function prepareLayers(
  store: BlobStore & WorkSpace,
  image: ImageRecord,
  opts: PushOptions,
): Promise<PreparedImage> {
  if (opts.estargz && (opts.format ?? "oci") !== "oci") {
    throw new UnsupportedImageError(
      "eStargz layers need an OCI manifest (Docker v2 schema 2 manifests drop the layer annotations that carry the TOC digest); push --estargz with --format oci",
    );
  }
  const where = `the stored manifest ${image.manifestDigest} of image ${image.id}`;
  let json: { config?: unknown; layers?: unknown };
  try {
    json = JSON.parse((await store.readBlob(image.manifestDigest)).toString("utf8")) as typeof json;
  } catch (e) {
    throw new UnsupportedImageError(`${where} is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  const descriptor = (v: unknown, what: string): Descriptor => {
    const d = v as Partial<Descriptor> | undefined;
    if (
      !d ||
      typeof d.digest !== "string" ||
      !isDigest(d.digest) ||
      typeof d.size !== "number" ||
      typeof d.mediaType !== "string"
    ) {
      throw new UnsupportedImageError(`${where}: ${what} is not a valid descriptor`);
    }
    const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
    if (d.annotations && typeof d.annotations === "object") out.annotations = { ...d.annotations };
    return out;
  };
  const config = descriptor(json.config, "config");
  if (!Array.isArray(json.layers)) throw new UnsupportedImageError(`${where} has no layers array`);
  const layers = json.layers.map((l, i) => descriptor(l, `layer ${i}`));
  if (config.digest !== image.configDigest)
    throw new UnsupportedImageError(
      `${where} names config ${config.digest}, but the image record says ${image.configDigest}; the store is inconsistent`,
    );
  const mediaType = (json as { mediaType?: unknown }).mediaType;
  const isOci =
    (mediaType === MediaType.ociManifest || (mediaType === undefined && config.mediaType === MediaType.ociConfig)) &&
    config.mediaType === MediaType.ociConfig &&
    layers.every((l) => ociLayerType(l.mediaType) === l.mediaType);
  if (opts.estargz) {
    const es = opts.estargz === true ? {} : opts.estargz;
    const converted = await convertImage(store, image, layers, config, {
      ...es,
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    return { config: converted.config, layers: converted.layers };
  }
  const storedOci = isOci
    ? {
        digest: image.manifestDigest,
        bytes: await store.readBlob(image.manifestDigest),
        mediaType: MediaType.ociManifest,
      }
    : undefined;
  return { config, layers, ...(storedOci ? { storedOci } : {}) };
}

interface BuiltManifest {
  digest: Digest;
  bytes: Buffer;
  mediaType: string;
}

const DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar";

function dockerLayerType(mediaType: string, where: string): string {
  switch (mediaType) {
    case MediaType.ociLayerGzip:
    case MediaType.dockerLayerGzip:
      return MediaType.dockerLayerGzip;
    case MediaType.ociLayerTar:
    case DOCKER_LAYER_TAR:
      return DOCKER_LAYER_TAR;
    default:
      throw new UnsupportedImageError(
        `${where} has a layer of type ${mediaType}, which Docker v2 schema 2 manifests cannot carry; push with --format oci`,
      );
  }
}

function ociLayerType(mediaType: string): string {
  if (mediaType === MediaType.dockerLayerGzip) return MediaType.ociLayerGzip;
  if (mediaType === DOCKER_LAYER_TAR) return MediaType.ociLayerTar;
  return mediaType;
}

/** The manifest bytes to push: OCI (descriptors keep their annotations) or Docker v2 schema 2 (media types converted). */
export function buildManifest(
  config: Descriptor,
  layers: readonly Descriptor[],
  format: PushFormat,
  where: string,
): BuiltManifest {
  const desc = (d: Descriptor, mediaType: string, keepAnnotations: boolean): Record<string, unknown> => ({
    mediaType,
    digest: d.digest,
    size: d.size,
    ...(keepAnnotations && d.annotations && Object.keys(d.annotations).length ? { annotations: d.annotations } : {}),
  });
  let json: Record<string, unknown>;
  if (format === "docker") {
    for (const l of layers) {
      if (Object.keys(l.annotations ?? {}).some((k) => k.startsWith(STARGZ_ANNOTATION_PREFIX))) {
        throw new UnsupportedImageError(
          `${where} has eStargz layers, whose annotations Docker v2 schema 2 manifests drop; push with --format oci`,
        );
      }
    }
    json = {
      schemaVersion: 2,
      mediaType: MediaType.dockerManifest,
      config: desc(config, MediaType.dockerConfig, false),
      layers: layers.map((l) => desc(l, dockerLayerType(l.mediaType, where), false)),
    };
  } else {
    json = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: desc(config, MediaType.ociConfig, true),
      layers: layers.map((l) => desc(l, ociLayerType(l.mediaType), true)),
    };
  }
  const bytes = Buffer.from(JSON.stringify(json));
  return { digest: sha256Bytes(bytes), bytes, mediaType: json["mediaType"] as string };
}

async function putManifest(client: RegistryClient, ref: string, manifest: BuiltManifest): Promise<void> {
  const url = client.url("manifests", ref);
  const where = `manifest ${manifest.digest} for ${client.reference.registry}/${client.reference.repository}:${ref}`;
  await client.withRetries(async () => {
    const { res, url: finalUrl } = await client.request(url, {
      method: "PUT",
      headers: { "content-type": manifest.mediaType, "content-length": String(manifest.bytes.length) },
      body: () => manifest.bytes,
    });
    if (res.status !== 201 && res.status !== 200 && res.status !== 202) {
      throw await errorFromResponse(
        res,
        finalUrl,
        `pushing ${where}`,
        `the repository "${client.reference.repository}" does not exist on ${client.reference.registry} and the registry does not create repositories on push`,
        "PUT",
      );
    }
    const echoed = res.headers.get("docker-content-digest");
    await discard(res);
    if (echoed && isDigest(echoed) && echoed !== manifest.digest) {
      throw new RegistryError(
        `pushing ${where}: the registry stored it as ${echoed}; it rewrote the manifest, so the pushed digest would not be what Strata reports`,
        { status: res.status, url: displayUrl(finalUrl) },
      );
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Blobs

/** True when the registry has the blob: 200, or a redirect to its storage (never followed: presigned URLs refuse HEAD). */
async function blobExists(client: RegistryClient, d: Descriptor): Promise<boolean> {
  const { res, url } = await client.request(client.url("blobs", d.digest), { method: "HEAD", followRedirects: false });
  await discard(res);
  if (res.status === 200 || (res.status >= 300 && res.status < 400)) return true;
  if (res.status === 404) return false;
  throw await errorFromResponse(
    res,
    url,
    `checking for blob ${d.digest} in ${client.reference.registry}/${client.reference.repository}`,
    "",
    "HEAD",
  );
}

function locationOf(res: Response, url: URL, what: string): URL {
  const loc = res.headers.get("location");
  if (!loc)
    throw new RegistryError(`${what}: ${displayUrl(url)} answered ${res.status} without a Location header`, {
      status: res.status,
      url: displayUrl(url),
    });
  try {
    return new URL(loc, url);
  } catch {
    throw new RegistryError(`${what}: ${displayUrl(url)} answered with an invalid Location "${loc}"`, {
      status: res.status,
      url: displayUrl(url),
    });
  }
}

/** `<location>&digest=<digest>` (or `?digest=`), keeping the registry's own query (2.8.2's `_state`) byte for byte. */
function withDigest(location: URL, digest: Digest): URL {
  const s = location.toString();
  return new URL(`${s}${location.search ? "&" : "?"}digest=${encodeURIComponent(digest)}`);
}

async function pushBlob(
  client: RegistryClient,
  store: BlobStore & WorkSpace,
  d: Descriptor,
  mountFrom: readonly string[],
  monolithicLimit: number,
): Promise<PushedBlob> {
  const repo = `${client.reference.registry}/${client.reference.repository}`;
  const what = `pushing blob ${d.digest} to ${repo}`;
  if (!(await store.hasBlob(d.digest)))
    throw new UnsupportedImageError(
      `${what}: the blob is not in the store at ${store.root}; the image record is incomplete`,
    );
  if (await blobExists(client, d)) return { digest: d.digest, size: d.size, how: "existing" };

  let session: URL | undefined;
  for (const [i, from] of mountFrom.entries()) {
    const r = await client.request(client.uploadsUrl({ mount: d.digest, from }), {
      method: "POST",
      headers: { "content-length": "0" },
    });
    if (r.res.status === 201) {
      await discard(r.res);
      return { digest: d.digest, size: d.size, how: "mounted", from };
    }
    if (r.res.status === 202) {
      // The source does not have it (or we may not read it): the registry opened an ordinary upload instead.
      const loc = locationOf(r.res, r.url, what);
      await discard(r.res);
      if (i === mountFrom.length - 1) {
        session = loc;
        break;
      }
      await cancelUpload(client, loc);
      continue;
    }
    await discard(r.res); // a registry without mount support: fall through to an upload
  }

  if (!session) {
    const r = await client.request(client.uploadsUrl(), { method: "POST", headers: { "content-length": "0" } });
    if (r.res.status !== 202)
      throw await errorFromResponse(
        r.res,
        r.url,
        what,
        `the repository "${client.reference.repository}" cannot be created or written on ${client.reference.registry}`,
        "POST",
      );
    session = locationOf(r.res, r.url, what);
    await discard(r.res);
  }

  let done: FetchResult;
  if (d.size <= monolithicLimit) {
    const bytes = await store.readBlob(d.digest);
    if (bytes.length !== d.size)
      throw new UnsupportedImageError(
        `${what}: the stored blob is ${bytes.length} bytes, but the manifest says ${d.size}`,
      );
    done = await client.request(withDigest(session, d.digest), {
      method: "PUT",
      headers: { "content-type": "application/octet-stream", "content-length": String(d.size) },
      body: () => bytes,
    });
  } else {
    const file = await store.blobPath(d.digest);
    const patched = await client.request(session, {
      method: "PATCH",
      headers: { "content-type": "application/octet-stream", "content-length": String(d.size) },
      body: () => Readable.toWeb(createReadStream(file)) as WebReadableStream<Uint8Array>,
    });
    if (patched.res.status !== 202 && patched.res.status !== 204 && patched.res.status !== 201) {
      throw await errorFromResponse(
        patched.res,
        patched.url,
        what,
        "the upload session vanished (it may have expired)",
        "PATCH",
      );
    }
    const next = patched.res.headers.get("location") ? locationOf(patched.res, patched.url, what) : session;
    await discard(patched.res);
    done = await client.request(withDigest(next, d.digest), { method: "PUT", headers: { "content-length": "0" } });
  }
  if (done.res.status !== 201 && done.res.status !== 204 && done.res.status !== 200) {
    throw await errorFromResponse(done.res, done.url, what, "the upload session vanished (it may have expired)", "PUT");
  }
  const echoed = done.res.headers.get("docker-content-digest");
  await discard(done.res);
  if (echoed && isDigest(echoed) && echoed !== d.digest) {
    throw new RegistryError(`${what}: the registry stored it as ${echoed}`, {
      status: done.res.status,
      url: displayUrl(done.url),
    });
  }
  return { digest: d.digest, size: d.size, how: "uploaded" };
}

async function cancelUpload(client: RegistryClient, location: URL): Promise<void> {
  try {
    const { res } = await client.request(location, { method: "DELETE" });
    await discard(res);
  } catch {
    // sessions expire on their own
  }
}
