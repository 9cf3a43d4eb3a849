/**
 * The OCI distribution pull client: resolve a reference to the linux/amd64 image manifest, then fetch the config
 * and every layer into a Store, verifying each blob (sha256, size, and for layers the uncompressed diffID) before
 * it becomes visible.
 *
 *  - Transport, auth and retries live in `client.ts` (`RegistryClient`); credentials in `auth.ts`.
 *  - `downloadBlob` streams one layer to a temp file while hashing; a connection that drops mid-blob is resumed with
 *    `Range: bytes=N-` (the 206 `Content-Range` is checked; a server that ignores Range gets a full restart); 429/5xx
 *    are retried with backoff (`Retry-After` honoured); layers download in parallel (p-limit) with progress lines.
 *  - eStargz lazy fetching can replace `downloadBlob` for layers carrying a TOC digest.
 *  - With `unpack` (the default), each layer is also extracted while it downloads (`InlineUnpack`), so the bytes
 *    are read, decompressed and hashed once; the unpacked directory is adopted by the store only after the blob
 *    digest and the diffID are verified.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream, promises as fsp } from "node:fs";
import path from "node:path";
import { finished } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createGunzip, type Gunzip } from "node:zlib";
import pLimit from "p-limit";
import { DigestMismatchError, StrataError } from "../errors.js";
import { MediaType, type Descriptor, type ImageConfig } from "../oci/types.js";
import type { LayerRecord, Store } from "../store/store.js";
import { digestHex, isDigest, sha256Bytes, type Digest } from "../util/digest.js";
import { recordBlobSources } from "./blob-sources.js";
import { extractLayerOffThread, openExtraction, type ExtractionSink } from "../layer/extract-pool.js";
import { downloadEstargzBlob, EstargzReader, isEstargzLayer } from "./estargz/read.js";
import { RegistryClient, type RegistryOptions } from "./client.js";
import { abortReason, discard, displayUrl, errorFromResponse, formatSize, isFsError, networkError, readBody, shortDigest } from "./http.js";
import { RegistryError, UnsupportedImageError } from "./errors.js";
import { parseReference, type ImageReference } from "./reference.js";

// ---------------------------------------------------------------------------------------------------------------
// Public API

export interface PullOptions extends RegistryOptions {
  /**
   * Called with human-readable lines: one per finished blob (`pulling sha256:abcd… 12.3 MB`), one every
   * `progressIntervalMs` for each blob still downloading (`downloading sha256:abcd… 3.1 MB of 12.3 MB (25%)`), and
   * one per resumed or restarted transfer.
   */
  onProgress?: (line: string) => void;
  /** eStargz layers are fetched by parallel ranges with per-chunk verification (default true); false: one GET. */
  lazy?: boolean;
  /**
   * Unpack each downloaded layer into the store's layer directory (`store.layerDir`) while it downloads (default
   * true; what every caller of a pull does next): one pass over the bytes instead of a second read, decompression
   * and hash of the blob. The directory becomes visible only after the blob digest and the diffID are verified. It
   * is only an optimisation: when it cannot be done (a resumed transfer, content whose compression is not what the
   * media type says, an entry the extractor refuses) the blob is still stored and `store.layerDir` unpacks it
   * later, reporting what it finds. Layers already in the store are not unpacked here.
   */
  unpack?: boolean;
  /** Maximum concurrent layer downloads (default 3). */
  concurrency?: number;
  /** Interval of the `downloading …` lines for long transfers (default 5000 ms). */
  progressIntervalMs?: number;
  /** Attempts for temporary failures (default 3; a resumed transfer that made progress does not use one up). */
  attempts?: number;
  /** First backoff delay in ms, doubled per attempt (default 300). */
  retryDelayMs?: number;
}

export interface ResolvedImage {
  reference: ImageReference;
  manifestDigest: Digest;
}

export interface PulledImage {
  reference: ImageReference;
  manifestDigest: Digest;
  manifestSize: number;
  configDigest: Digest;
  configSize: number;
  config: ImageConfig;
  /** Index-aligned with the manifest's layers and the config's `rootfs.diff_ids`. */
  layers: LayerRecord[];
}

/** Resolves a reference to the digest of the linux/amd64 image manifest (following an index / manifest list). */
export async function resolveImage(ref: string, opts: RegistryOptions = {}): Promise<ResolvedImage> {
  const reference = parseReference(ref);
  const client = new RegistryClient(reference, opts);
  const m = await resolveManifest(client);
  return { reference, manifestDigest: m.digest };
}

/** The linux/amd64 image manifest of a reference, verified and parsed. */
export interface FetchedImageManifest {
  digest: Digest;
  size: number;
  config: Descriptor;
  layers: Descriptor[];
}

/**
 * Fetches the image manifest `client`'s reference names — following an index to its linux/amd64 entry — or, given
 * `digest`, that image manifest itself (one request instead of a tag lookup then a fetch by digest).
 */
export async function fetchImageManifest(client: RegistryClient, digest?: Digest): Promise<FetchedImageManifest> {
  const fetched = digest ? await fetchManifest(client, digest, { digest }) : await resolveManifest(client);
  if (fetched.kind !== "manifest") throw new UnsupportedImageError(`${fetched.where} is an index, not an image manifest`);
  return { digest: fetched.digest, size: fetched.bytes.length, ...parseImageManifest(fetched) };
}

/**
 * Fetches manifest, config and every layer blob into the store (verifying sha256 + size before a blob becomes
 * visible; skipping blobs the store already has), with bounded parallel layer downloads.
 */
export async function pullImage(ref: string, store: Store, opts: PullOptions = {}): Promise<PulledImage> {
  const reference = parseReference(ref);
  const client = new RegistryClient(reference, opts);
  const progress = opts.onProgress ?? (() => undefined);

  const fetched = await resolveManifest(client);
  const manifest = parseImageManifest(fetched);
  const layerKinds = manifest.layers.map((l, i) => layerKind(l, i, reference));

  // Config: small, fetched into memory, verified, then stored.
  let configBytes: Buffer;
  if (await store.hasBlob(manifest.config.digest)) {
    configBytes = await store.readBlob(manifest.config.digest);
  } else {
    configBytes = await fetchBlobBytes(client, manifest.config, MAX_CONFIG_BYTES);
    const stored = await store.putBlobBytes(configBytes);
    if (stored !== manifest.config.digest) throw new DigestMismatchError(manifest.config.digest, stored, `config of ${reference}`);
    progress(`pulling ${shortDigest(manifest.config.digest)} ${formatSize(configBytes.length)} (config)`);
  }
  const config = parseConfig(configBytes, reference, manifest.layers.length);

  const layers: LayerRecord[] = manifest.layers.map((l, i) => ({ digest: l.digest, diffId: config.rootfs.diff_ids[i]!, size: l.size, mediaType: l.mediaType }));
  await downloadLayers(client, store, layers, layerKinds, opts, progress, manifest.layers);

  // The manifest goes in last, so it never names a blob the store does not have.
  const manifestStored = await store.putBlobBytes(fetched.bytes);
  if (manifestStored !== fetched.digest) throw new DigestMismatchError(fetched.digest, manifestStored, `manifest of ${reference}`);
  // Remember where these blobs live, so a push to another repository of this registry can mount them.
  await recordBlobSources(store, [manifest.config.digest, ...layers.map((l) => l.digest)], reference.registry, reference.repository);

  return {
    reference,
    manifestDigest: fetched.digest,
    manifestSize: fetched.bytes.length,
    configDigest: manifest.config.digest,
    configSize: manifest.config.size,
    config,
    layers,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Manifests

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_CONFIG_BYTES = 32 * 1024 * 1024;
const MANIFEST_TYPES = new Set<string>([MediaType.ociManifest, MediaType.dockerManifest]);
const INDEX_TYPES = new Set<string>([MediaType.ociIndex, MediaType.dockerManifestList]);
const MANIFEST_ACCEPT = [MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest, MediaType.dockerManifest].join(", ");
const SCHEMA1_PREFIX = "application/vnd.docker.distribution.manifest.v1";
const ATTESTATION_ANNOTATION = "vnd.docker.reference.type";

interface FetchedManifest {
  digest: Digest;
  bytes: Buffer;
  kind: "index" | "manifest";
  mediaType: string;
  json: Record<string, unknown>;
  /** What it was fetched as, for messages. */
  where: string;
}

interface ImageManifest {
  config: Descriptor;
  layers: Descriptor[];
}

/** Fetches the reference's manifest and, for an index, the linux/amd64 image manifest it lists. */
async function resolveManifest(client: RegistryClient): Promise<FetchedManifest> {
  const ref = client.reference;
  const top = await fetchManifest(client, ref.digest ?? ref.tag ?? "latest", ref.digest ? { digest: ref.digest } : undefined);
  if (top.kind === "manifest") return top;
  const entries = parseDescriptors(top.json["manifests"], `${top.where}: "manifests"`);
  const chosen = selectPlatform(entries);
  if (!chosen) {
    const offered = entries.filter((e) => !isAttestation(e)).map((e) => (e.platform ? platformString(e.platform) : "unspecified platform"));
    throw new UnsupportedImageError(`${ref} has no linux/amd64 image (it offers: ${offered.length ? [...new Set(offered)].join(", ") : "nothing"}); Strata runs linux/amd64 images only`);
  }
  const child = await fetchManifest(client, chosen.digest, { digest: chosen.digest, size: chosen.size });
  if (child.kind !== "manifest") throw new UnsupportedImageError(`${ref}: the linux/amd64 entry ${chosen.digest} of the index is itself an index; nested indexes are not supported`);
  return child;
}

async function fetchManifest(client: RegistryClient, ref: string, expected?: { digest: Digest; size?: number }): Promise<FetchedManifest> {
  const url = client.url("manifests", ref);
  const where = `manifest ${client.reference.registry}/${client.reference.repository}${expected ? "@" : ":"}${ref}`;
  const { res, bytes } = await client.withRetries(async () => {
    const { res, url: finalUrl } = await client.fetch(url, { accept: MANIFEST_ACCEPT });
    if (!res.ok) {
      throw await errorFromResponse(res, finalUrl, where, `check that the repository "${client.reference.repository}" and ${expected ? "digest" : "tag"} "${ref}" exist on ${client.reference.registry}`);
    }
    return { res, bytes: await readBody(res, MAX_MANIFEST_BYTES, where, () => new UnsupportedImageError(`${where} is larger than ${formatSize(MAX_MANIFEST_BYTES)}; refusing to read it`)) };
  });

  const contentType = (res.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (contentType.startsWith(SCHEMA1_PREFIX)) throw schema1Error(client.reference);
  const digest = sha256Bytes(bytes);
  if (expected && digest !== expected.digest) throw new DigestMismatchError(expected.digest, digest, where);
  if (expected?.size !== undefined && bytes.length !== expected.size) {
    throw new DigestMismatchError(`${expected.digest} (${expected.size} bytes)`, `${bytes.length} bytes`, where);
  }
  const headerDigest = res.headers.get("docker-content-digest");
  if (!expected && headerDigest && isDigest(headerDigest) && headerDigest !== digest) throw new DigestMismatchError(headerDigest, digest, `${where} (Docker-Content-Digest header)`);

  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new UnsupportedImageError(`${where} is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isRecord(parsed)) throw new UnsupportedImageError(`${where} is not a JSON object`);
  if (parsed["schemaVersion"] === 1) throw schema1Error(client.reference);
  const bodyType = typeof parsed["mediaType"] === "string" ? (parsed["mediaType"] as string) : undefined;
  const mediaType = bodyType ?? contentType;
  if (mediaType.startsWith(SCHEMA1_PREFIX)) throw schema1Error(client.reference);
  let kind: "index" | "manifest";
  if (INDEX_TYPES.has(mediaType) || (!bodyType && Array.isArray(parsed["manifests"]))) kind = "index";
  else if (MANIFEST_TYPES.has(mediaType) || (!bodyType && isRecord(parsed["config"]) && Array.isArray(parsed["layers"]))) kind = "manifest";
  else throw new UnsupportedImageError(`${where} has unsupported media type "${mediaType || "(none)"}" (expected an OCI or Docker v2 image manifest or index)`);
  return { digest, bytes, kind, mediaType, json: parsed, where };
}

function schema1Error(ref: ImageReference): UnsupportedImageError {
  return new UnsupportedImageError(
    `${ref} uses the deprecated Docker schema1 manifest format, which Strata does not support; re-push the image with a current Docker, buildx, skopeo or crane (schema 2 / OCI)`,
  );
}

function parseImageManifest(m: FetchedManifest): ImageManifest {
  if (m.json["schemaVersion"] !== 2) throw new UnsupportedImageError(`${m.where} has schemaVersion ${JSON.stringify(m.json["schemaVersion"])}; expected 2`);
  const [config] = parseDescriptors([m.json["config"]], `${m.where}: "config"`);
  return { config: config!, layers: parseDescriptors(m.json["layers"], `${m.where}: "layers"`) };
}

function parseDescriptors(value: unknown, where: string): Descriptor[] {
  if (!Array.isArray(value)) throw new UnsupportedImageError(`${where} is missing or not an array`);
  return value.map((d: unknown, i): Descriptor => {
    if (!isRecord(d)) throw new UnsupportedImageError(`${where}[${i}] is not an object`);
    const { mediaType, digest, size, annotations, platform } = d;
    if (typeof digest !== "string" || !isDigest(digest)) {
      throw new UnsupportedImageError(`${where}[${i}] has digest ${JSON.stringify(digest)}; only sha256:<64 lowercase hex> digests are supported`);
    }
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw new UnsupportedImageError(`${where}[${i}] has an invalid size ${JSON.stringify(size)}`);
    const out: Descriptor = { mediaType: typeof mediaType === "string" ? mediaType : "", digest, size };
    if (isRecord(annotations)) out.annotations = Object.fromEntries(Object.entries(annotations).filter((e): e is [string, string] => typeof e[1] === "string"));
    if (isRecord(platform) && typeof platform["os"] === "string" && typeof platform["architecture"] === "string") {
      out.platform = { os: platform["os"], architecture: platform["architecture"] };
      if (typeof platform["variant"] === "string") out.platform.variant = platform["variant"];
    }
    return out;
  });
}

function normalizeArch(arch: string): string {
  const a = arch.toLowerCase();
  return a === "x86_64" || a === "x86-64" ? "amd64" : a === "aarch64" ? "arm64" : a;
}

function isAttestation(d: Descriptor): boolean {
  return d.annotations?.[ATTESTATION_ANNOTATION] === "attestation-manifest";
}

function platformString(p: { os: string; architecture: string; variant?: string }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/** Picks the linux/amd64 (variant absent or v1) image manifest of an index, skipping attestation manifests. */
export function selectPlatform(entries: readonly Descriptor[]): Descriptor | undefined {
  return entries.find(
    (e) =>
      !isAttestation(e) &&
      (e.mediaType === "" || MANIFEST_TYPES.has(e.mediaType)) &&
      e.platform !== undefined &&
      e.platform.os === "linux" &&
      normalizeArch(e.platform.architecture) === "amd64" &&
      (e.platform.variant === undefined || e.platform.variant === "" || e.platform.variant === "v1"),
  );
}

function parseConfig(bytes: Buffer, ref: ImageReference, layerCount: number): ImageConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new UnsupportedImageError(`the image config of ${ref} is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isRecord(raw)) throw new UnsupportedImageError(`the image config of ${ref} is not a JSON object`);
  const os = raw["os"];
  const arch = raw["architecture"];
  if (os !== "linux" || typeof arch !== "string" || normalizeArch(arch) !== "amd64") {
    throw new UnsupportedImageError(`${ref} is a ${String(os)}/${String(arch)} image according to its config; Strata runs linux/amd64 images only`);
  }
  const rootfs = raw["rootfs"];
  const diffIds = isRecord(rootfs) ? rootfs["diff_ids"] : undefined;
  if (!Array.isArray(diffIds) || !diffIds.every((d): d is Digest => typeof d === "string" && isDigest(d))) {
    throw new UnsupportedImageError(`the image config of ${ref} has no valid rootfs.diff_ids (expected an array of sha256 digests)`);
  }
  if (diffIds.length !== layerCount) {
    throw new UnsupportedImageError(`${ref} is inconsistent: its manifest lists ${layerCount} layers but its config has ${diffIds.length} rootfs.diff_ids`);
  }
  const runtime = isRecord(raw["config"]) ? raw["config"] : {};
  const history = Array.isArray(raw["history"]) ? raw["history"] : [];
  return { ...(raw as object), os, architecture: arch, config: runtime, rootfs: { type: "layers", diff_ids: diffIds }, history } as ImageConfig;
}

// ---------------------------------------------------------------------------------------------------------------
// Blobs

const GZIP_LAYER_TYPES = new Set<string>([MediaType.ociLayerGzip, MediaType.dockerLayerGzip]);
const TAR_LAYER_TYPES = new Set<string>([MediaType.ociLayerTar, "application/vnd.docker.image.rootfs.diff.tar"]);
/** Resumes after a dropped connection that made progress; each one is cheap, but a server that always drops is not. */
const MAX_RESUMES = 50;

type LayerKind = "gzip" | "tar";

function layerKind(d: Descriptor, index: number, ref: ImageReference): LayerKind {
  if (GZIP_LAYER_TYPES.has(d.mediaType)) return "gzip";
  if (TAR_LAYER_TYPES.has(d.mediaType)) return "tar";
  if (/zstd/.test(d.mediaType)) {
    throw new UnsupportedImageError(`layer ${index} of ${ref} (${d.digest}) is zstd-compressed (${d.mediaType}); zstd layers are not supported yet — use a gzip-compressed variant of the image`);
  }
  throw new UnsupportedImageError(`layer ${index} of ${ref} (${d.digest}) has unsupported media type "${d.mediaType || "(none)"}" (expected a tar or tar+gzip layer)`);
}

function tooLargeBlob(d: Descriptor, where: string): () => StrataError {
  return () => new DigestMismatchError(`${d.digest} (${d.size} bytes)`, `more than ${d.size} bytes`, where);
}

async function fetchBlobBytes(client: RegistryClient, d: Descriptor, cap: number): Promise<Buffer> {
  const where = `blob ${d.digest} of ${client.reference}`;
  if (d.size > cap) throw new UnsupportedImageError(`${where} is ${formatSize(d.size)}, larger than the ${formatSize(cap)} limit for this kind of blob`);
  const bytes = await client.withRetries(async () => {
    const { res, url } = await client.fetch(client.url("blobs", d.digest));
    if (!res.ok) throw await errorFromResponse(res, url, where, blobNotFoundHint(client));
    checkBlobHeaders(res, d, where, d.size);
    return readBody(res, d.size, where, tooLargeBlob(d, where));
  });
  if (bytes.length !== d.size) throw new DigestMismatchError(`${d.digest} (${d.size} bytes)`, `${bytes.length} bytes`, where);
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
    throw new RegistryError(`${where} was served with Content-Encoding: ${encoding} despite Accept-Encoding: identity, so its bytes cannot be verified; a proxy or CDN in between is re-encoding blobs`, {
      status: res.status,
    });
  }
  const len = res.headers.get("content-length");
  if (len !== null && /^\d+$/.test(len) && Number(len) !== expectedLength) {
    throw new DigestMismatchError(`${d.digest} (${expectedLength} bytes${expectedLength !== d.size ? ` of ${d.size}` : ""})`, `${len} bytes (Content-Length)`, where);
  }
  const headerDigest = res.headers.get("docker-content-digest");
  if (headerDigest && isDigest(headerDigest) && headerDigest !== d.digest) throw new DigestMismatchError(d.digest, headerDigest, `${where} (Docker-Content-Digest header)`);
}

/** `bytes <start>-<end>/<total|*>` → numbers, or undefined when malformed. */
export function parseContentRange(value: string | null): { start: number; end: number; total: number | undefined } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec((value ?? "").trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === "*" ? undefined : Number(m[3]) };
}

async function downloadLayers(
  client: RegistryClient,
  store: Store,
  layers: readonly LayerRecord[],
  kinds: readonly LayerKind[],
  opts: PullOptions,
  progress: (line: string) => void,
  descriptors: readonly Descriptor[],
): Promise<void> {
  // Each distinct blob once; skip what the store already has.
  const todo = new Map<Digest, { layer: LayerRecord; kind: LayerKind }>();
  const seen = new Set<Digest>();
  for (const [i, layer] of layers.entries()) {
    if (seen.has(layer.digest)) continue;
    seen.add(layer.digest);
    if (await store.hasBlob(layer.digest)) {
      progress(`${shortDigest(layer.digest)} already present`);
      continue;
    }
    todo.set(layer.digest, { layer, kind: kinds[i]! });
  }
  if (todo.size === 0) return;

  const tmpDir = await store.tempDir("pull");
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  const limit = pLimit(Math.max(1, opts.concurrency ?? 3));
  const unpack = opts.unpack !== false;
  // Progress for long transfers: a line per running download every interval.
  const active = new Map<Digest, { received: number; size: number }>();
  const ticker = setInterval(() => {
    for (const [digest, t] of active) {
      if (t.received >= t.size) continue;
      progress(`downloading ${shortDigest(digest)} ${formatSize(t.received)} of ${formatSize(t.size)} (${Math.floor((t.received / Math.max(1, t.size)) * 100)}%)`);
    }
  }, Math.max(50, opts.progressIntervalMs ?? 5000));
  ticker.unref();
  let firstError: unknown;
  try {
    const results = await Promise.allSettled(
      [...todo.values()].map(({ layer, kind }) =>
        limit(async () => {
          if (signal.aborted) return;
          const transfer = { received: 0, size: layer.size };
          active.set(layer.digest, transfer);
          try {
            const descriptor = descriptors.find((d) => d.digest === layer.digest);
            // eStargz layers are fetched as parallel ranges of their gzip members, decompressed concurrently, and
            // verified chunk by chunk against the TOC, the blob digest and the diffID.
            const { file, root } = descriptor && opts.lazy !== false && isEstargzLayer(descriptor)
              ? await downloadEstargz(client, descriptor, layer, tmpDir, progress, unpack)
              : await downloadBlob(client, layer, kind, tmpDir, signal, progress, unpack, (n) => {
                  transfer.received = n;
                });
            await store.putBlobFile(file, layer.digest, { verified: true });
            // Verified (blob digest and diffID): the directory unpacked on the way may become the layer's.
            if (root) await store.adoptLayerDir(layer.diffId, root).catch(() => fsp.rm(root, { recursive: true, force: true }));
            progress(`pulling ${shortDigest(layer.digest)} ${formatSize(layer.size)}`);
          } catch (e) {
            if (firstError === undefined && !stop.signal.aborted) {
              firstError = e;
              stop.abort(); // queued downloads see the abort and return without starting
            }
            throw e;
          } finally {
            active.delete(layer.digest);
          }
        }),
      ),
    );
    if (firstError !== undefined) throw firstError;
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    if (opts.signal?.aborted) throw abortReason(opts.signal, undefined);
  } finally {
    clearInterval(ticker);
    await fsp.rm(tmpDir, { recursive: true, force: true });
  }
}

/** A verified blob file and, when the layer was unpacked on the way, its (equally verified) unpacked directory. */
interface Downloaded {
  file: string;
  root?: string;
}

async function downloadEstargz(client: RegistryClient, d: Descriptor, layer: LayerRecord, tmpDir: string, progress: (line: string) => void, unpack: boolean): Promise<Downloaded> {
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
async function fetchEstargzUnpacked(client: RegistryClient, d: Descriptor, layer: LayerRecord, file: string, root: string): Promise<boolean> {
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

  constructor(tmpDir: string, layer: LayerRecord, private readonly gzip: boolean) {
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
async function downloadBlob(
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
          progress(`${shortDigest(layer.digest)} did not verify after a resumed transfer; downloading it again from the start`);
          continue;
        }
        if (!(e instanceof RegistryError) || !e.temporary) throw e;
        const now = (await fsp.stat(file)).size;
        if (now > have && now < layer.size && resumes < MAX_RESUMES) {
          resumes++;
          failures = 0;
          progress(`${shortDigest(layer.digest)} transfer broke off after ${formatSize(now)} of ${formatSize(layer.size)}; resuming`);
          continue;
        }
        failures++;
        if (failures >= client.attempts) {
          if (client.attempts === 1) throw e;
          throw new RegistryError(`${e.message} (gave up after ${failures} attempts)`, { status: e.status, codes: [...e.codes], temporary: true, url: e.url, cause: e.cause });
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
        progress(`${shortDigest(layer.digest)}: the server refused to resume (416); downloading it again from the start`);
        offset = 0;
        hash = createHash("sha256");
        diff?.destroy();
        diff = kind === "gzip" ? new DiffIdHasher() : undefined;
        ({ res, url } = await client.fetch(blobUrl, {}, signal));
      }
      if (!res.ok) throw await errorFromResponse(res, url, where, blobNotFoundHint(client));
      if (offset > 0 && res.status === 200) {
        // The server ignored the Range header: this response is the whole blob, so start over with it.
        progress(`${shortDigest(layer.digest)}: the server ignored the Range request; downloading it again from the start`);
        await fsp.truncate(file, 0);
        offset = 0;
        hash = createHash("sha256");
        diff?.destroy();
        diff = kind === "gzip" ? new DiffIdHasher() : undefined;
      } else if (offset > 0) {
        const range = parseContentRange(res.headers.get("content-range"));
        if (res.status !== 206 || !range || range.start !== offset || range.end !== layer.size - 1 || (range.total !== undefined && range.total !== layer.size)) {
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
        throw new RegistryError(`${where}: ${displayUrl(url)} answered ${res.status} to a plain GET (expected 200)`, { status: res.status, url: displayUrl(url), temporary: true });
      }
      checkBlobHeaders(res, layer, where, layer.size - offset);
      if (!res.body) throw new RegistryError(`${displayUrl(url)} returned no body for ${where}`, { status: res.status, url: displayUrl(url), temporary: true });

      // Each chunk is written before it is hashed, and writes are awaited, so when the connection drops the
      // partial file holds exactly the bytes hashed so far and the next attempt can resume after them.
      let n = offset;
      const fh = await fsp.open(file, "a", 0o600);
      try {
        for await (const c of res.body as WebReadableStream<Uint8Array>) {
          const chunk = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
          if (n + chunk.length > layer.size) throw new DigestMismatchError(`${layer.digest} (${layer.size} bytes)`, `more than ${layer.size} bytes`, where);
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
        throw networkError(url, e, client.insecure, `the download of ${where} broke off after ${formatSize(n)} of ${formatSize(layer.size)}`);
      } finally {
        await fh.close();
      }
      offset = n;
      if (offset < layer.size) {
        throw new RegistryError(`${where}: ${displayUrl(url)} ended the body after ${formatSize(offset)} of ${formatSize(layer.size)}`, { url: displayUrl(url), temporary: true });
      }
    }
    const actual = ("sha256:" + hash.digest("hex")) as Digest;
    if (actual !== layer.digest) {
      await fsp.truncate(file, 0);
      throw new DigestMismatchError(layer.digest, actual, where);
    }
    const inlined = inline ? await inline.finish() : undefined;
    // An abandoned inline unpack leaves the diffID to compute from the verified file.
    const diffId = inlined ?? (diff ? await diff.end(where) : kind === "gzip" ? await diffIdOfFile(file, where) : actual);
    diff = undefined;
    if (diffId !== layer.diffId) throw new DigestMismatchError(layer.diffId, diffId, `uncompressed content (diffID) of ${where}`);
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
    if (this.error) throw new UnsupportedImageError(`${where} is not valid gzip: ${this.error.message}`, { cause: this.error });
    return ("sha256:" + this.hash.digest("hex")) as Digest;
  }

  destroy(): void {
    this.gunzip.destroy();
  }

  private gzipError(e: Error): UnsupportedImageError {
    return new UnsupportedImageError(`layer is not valid gzip: ${e.message}`, { cause: e });
  }
}


function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
