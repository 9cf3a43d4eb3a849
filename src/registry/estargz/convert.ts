/**
 * Converts a stored image's layers to eStargz for `strata push --estargz`: each layer blob is rewritten by our
 * writer into the store, its descriptor gets the TOC-digest and uncompressed-size annotations, and a new config
 * blob names the new diffIDs (the TOC and landmark are extra tar entries, so every diffID changes).
 *
 * Conversions are deterministic, and remembered in `<store root>/estargz/` (original layer digest + chunk size +
 * gzip level → converted layer) so pushing the same image again does not convert again.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { MediaType, type Descriptor } from "../../oci/types.js";
import type { BlobStore, ImageRecord, WorkSpace } from "../../store/store.js";
import { isDigest, sha256Bytes, type Digest } from "../../util/digest.js";
import { gzipLevel } from "../../layer/commit.js";
import { DigestMismatchError } from "../../errors.js";
import { UnsupportedImageError } from "../errors.js";
import { DEFAULT_CHUNK_SIZE, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from "./format.js";
import { writeEstargz } from "./write.js";

export interface EstargzConvertOptions {
  /** Chunk size (default 4 MiB). */
  chunkSize?: number;
  /** gzip level (default `STRATA_GZIP_LEVEL`). */
  level?: number;
  onProgress?: (line: string) => void;
}

export interface ConvertedLayer {
  descriptor: Descriptor;
  diffId: Digest;
}

export interface ConvertedImage {
  config: Descriptor;
  layers: Descriptor[];
  diffIds: Digest[];
}

interface CacheRecord {
  digest: Digest;
  size: number;
  diffId: Digest;
  tocDigest: Digest;
  uncompressedSize: number;
}

function cacheFile(store: BlobStore & WorkSpace, layer: Digest, chunkSize: number, level: number): string {
  return store.layout.estargzFile(layer, chunkSize, level);
}

async function readCache(store: BlobStore & WorkSpace, file: string): Promise<CacheRecord | undefined> {
  try {
    const r = JSON.parse(await fsp.readFile(file, "utf8")) as Partial<CacheRecord>;
    if (
      typeof r.digest !== "string" ||
      !isDigest(r.digest) ||
      typeof r.diffId !== "string" ||
      !isDigest(r.diffId) ||
      typeof r.tocDigest !== "string" ||
      !isDigest(r.tocDigest)
    )
      return undefined;
    if (typeof r.size !== "number" || typeof r.uncompressedSize !== "number") return undefined;
    return (await store.hasBlob(r.digest)) ? (r as CacheRecord) : undefined;
  } catch {
    return undefined;
  }
}

function descriptorOf(r: CacheRecord): Descriptor {
  return {
    mediaType: MediaType.ociLayerGzip,
    digest: r.digest,
    size: r.size,
    annotations: { [TOC_DIGEST_ANNOTATION]: r.tocDigest, [UNCOMPRESSED_SIZE_ANNOTATION]: String(r.uncompressedSize) },
  };
}

/** Converts one stored layer blob (tar or tar+gzip, uncompressed content `diffId`) into an eStargz blob in the store. */
export async function convertLayer(
  store: BlobStore & WorkSpace,
  layer: { digest: Digest; diffId: Digest },
  opts: EstargzConvertOptions = {},
): Promise<ConvertedLayer> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const level = opts.level ?? gzipLevel();
  const file = cacheFile(store, layer.digest, chunkSize, level);
  const cached = await readCache(store, file);
  if (cached) return { descriptor: descriptorOf(cached), diffId: cached.diffId };

  const tmp = await store.tempDir("estargz");
  try {
    const out = path.join(tmp, "layer.esgz");
    const where = `layer ${layer.digest}`;
    const r = await writeEstargz(await store.openBlob(layer.digest), out, { chunkSize, level, where });
    if (r.inputDiffId !== layer.diffId)
      throw new DigestMismatchError(layer.diffId, r.inputDiffId, `uncompressed content of stored ${where}`);
    await store.putBlobFile(out, r.digest, { verified: true });
    const record: CacheRecord = {
      digest: r.digest,
      size: r.size,
      diffId: r.diffId,
      tocDigest: r.tocDigest,
      uncompressedSize: r.uncompressedSize,
    };
    await fsp.mkdir(path.dirname(file), { recursive: true });
    const part = `${file}.${process.pid}.tmp`;
    await fsp.writeFile(part, JSON.stringify(record));
    await fsp.rename(part, file);
    return { descriptor: descriptorOf(record), diffId: r.diffId };
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

/**
 * The eStargz form of a stored image: every layer converted (layers that already carry a TOC digest are kept as
 * they are) and a config with the matching `rootfs.diff_ids`, both stored. `layers` are the stored manifest's
 * layer descriptors, index-aligned with the config's diff_ids.
 */
export async function convertImage(
  store: BlobStore & WorkSpace,
  image: ImageRecord,
  layers: readonly Descriptor[],
  config: Descriptor,
  opts: EstargzConvertOptions = {},
): Promise<ConvertedImage> {
  const progress = opts.onProgress ?? (() => undefined);
  const where = `image ${image.id}`;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse((await store.readBlob(config.digest)).toString("utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new UnsupportedImageError(
      `the config ${config.digest} of ${where} is not valid JSON (${(e as Error).message})`,
      { cause: e },
    );
  }
  const rootfs = json["rootfs"] as { diff_ids?: unknown } | undefined;
  const diffIds = rootfs?.diff_ids;
  if (
    !Array.isArray(diffIds) ||
    diffIds.length !== layers.length ||
    !diffIds.every((d): d is Digest => typeof d === "string" && isDigest(d))
  ) {
    throw new UnsupportedImageError(
      `the config of ${where} has ${Array.isArray(diffIds) ? diffIds.length : "no"} diff_ids for ${layers.length} layers`,
    );
  }
  const outLayers: Descriptor[] = [];
  const outDiffIds: Digest[] = [];
  for (const [i, l] of layers.entries()) {
    if (l.annotations?.[TOC_DIGEST_ANNOTATION] !== undefined) {
      outLayers.push(l);
      outDiffIds.push(diffIds[i]!);
      continue;
    }
    const c = await convertLayer(store, { digest: l.digest, diffId: diffIds[i]! }, opts);
    progress(
      `converted ${l.digest.slice(0, 19)}… to eStargz ${c.descriptor.digest.slice(0, 19)}… (${c.descriptor.size} bytes)`,
    );
    outLayers.push(c.descriptor);
    outDiffIds.push(c.diffId);
  }
  const newConfig = { ...json, rootfs: { ...(rootfs as object), diff_ids: outDiffIds } };
  const bytes = Buffer.from(JSON.stringify(newConfig));
  const digest = await store.putBlobBytes(bytes);
  if (digest !== sha256Bytes(bytes))
    throw new DigestMismatchError(sha256Bytes(bytes), digest, `eStargz config of ${where}`);
  return {
    config: { mediaType: MediaType.ociConfig, digest, size: bytes.length },
    layers: outLayers,
    diffIds: outDiffIds,
  };
}
