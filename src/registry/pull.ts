/**
 * The OCI distribution pull client: resolve a reference to the linux/amd64 image manifest, then fetch the config
 * and every layer into a Store, verifying each blob (sha256, size, and for layers the uncompressed diffID) before
 * it becomes visible.
 *
 *  - Transport, auth and retries live in `client.ts` (`RegistryClient`); credentials in `auth.ts`; manifests and
 *    configs in `manifests.ts`; one blob's verified, resumable download in `blob-download.ts`.
 *  - Layers download in parallel (p-limit) with progress lines; eStargz layers are fetched by parallel ranges.
 *  - With `unpack` (the default), each layer is also extracted while it downloads, so the bytes are read,
 *    decompressed and hashed once; the unpacked directory is adopted by the store only after the blob digest and the
 *    diffID are verified.
 */
import { promises as fsp } from "node:fs";
import pLimit from "p-limit";
import { DigestMismatchError } from "../errors.js";
import type { Descriptor, ImageConfig } from "../oci/types.js";
import type { LayerRecord, Store } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { downloadBlob, downloadEstargz, fetchBlobBytes, layerKind, type LayerKind } from "./blob-download.js";
import { recordBlobSources } from "./blob-sources.js";
import { RegistryClient, type RegistryOptions } from "./client.js";
import { isEstargzLayer } from "./estargz/read.js";
import { abortReason, formatSize, shortDigest } from "./http.js";
import { withEndpoints } from "./endpoint-fallback.js";
import {
  MAX_CONFIG_BYTES,
  parseConfig,
  parseImageManifest,
  resolveManifest,
  type FetchedManifest,
} from "./manifests.js";
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

/**
 * Resolves a reference to the digest of the linux/amd64 image manifest (following an index / manifest list), through
 * the registry's mirrors first when the fetch policy's registry config lists some.
 */
export async function resolveImage(ref: string, opts: RegistryOptions = {}): Promise<ResolvedImage> {
  const reference = parseReference(ref);
  const m = await withEndpoints(reference, opts, (endpoint) =>
    resolveManifest(new RegistryClient(reference, { ...opts, endpoint })),
  );
  return { reference, manifestDigest: m.digest };
}

/** `reference` pinned to `digest` (the tag dropped): what a later host is asked for once one host resolved the tag. */
export function pinnedReference(reference: ImageReference, digest: Digest | undefined): ImageReference {
  return digest === undefined || digest === reference.digest
    ? reference
    : parseReference(`${reference.registry}/${reference.repository}@${digest}`);
}

/**
 * Fetches manifest, config and every layer blob into the store (verifying sha256 + size before a blob becomes
 * visible; skipping blobs the store already has), with bounded parallel layer downloads. With mirrors configured for
 * the registry, each is tried in order, then the registry: a host that fails hands over to the next, which is asked
 * for the manifest the first host resolved (by digest) and skips the blobs already stored.
 */
export async function pullImage(ref: string, store: Store, opts: PullOptions = {}): Promise<PulledImage> {
  const reference = parseReference(ref);
  const progress = opts.onProgress ?? (() => undefined);
  let resolved: Digest | undefined;
  const pulled = await withEndpoints(
    reference,
    opts,
    async (endpoint) => {
      const client = new RegistryClient(pinnedReference(reference, resolved), { ...opts, endpoint });
      const fetched = await resolveManifest(client);
      resolved = fetched.digest;
      return pullResolved(client, fetched, store, opts, progress);
    },
    progress,
  );
  return { ...pulled, reference };
}

async function pullResolved(
  client: RegistryClient,
  fetched: FetchedManifest,
  store: Store,
  opts: PullOptions,
  progress: (line: string) => void,
): Promise<PulledImage> {
  const reference = client.reference;
  const manifest = parseImageManifest(fetched);
  const layerKinds = manifest.layers.map((l, i) => layerKind(l, i, reference));

  // Config: small, fetched into memory, verified, then stored.
  let configBytes: Buffer;
  if (await store.hasBlob(manifest.config.digest)) {
    configBytes = await store.readBlob(manifest.config.digest);
  } else {
    configBytes = await fetchBlobBytes(client, manifest.config, MAX_CONFIG_BYTES);
    const stored = await store.putBlobBytes(configBytes);
    if (stored !== manifest.config.digest)
      throw new DigestMismatchError(manifest.config.digest, stored, `config of ${reference}`);
    progress(`pulling ${shortDigest(manifest.config.digest)} ${formatSize(configBytes.length)} (config)`);
  }
  const config = parseConfig(configBytes, reference, manifest.layers.length);

  const layers: LayerRecord[] = manifest.layers.map((l, i) => ({
    digest: l.digest,
    diffId: config.rootfs.diff_ids[i]!,
    size: l.size,
    mediaType: l.mediaType,
  }));
  await downloadLayers(client, store, layers, layerKinds, opts, progress, manifest.layers);

  // The manifest goes in last, so it never names a blob the store does not have.
  const manifestStored = await store.putBlobBytes(fetched.bytes);
  if (manifestStored !== fetched.digest)
    throw new DigestMismatchError(fetched.digest, manifestStored, `manifest of ${reference}`);
  // Remember where these blobs live, so a push to another repository of this registry can mount them.
  await recordBlobSources(
    store,
    [manifest.config.digest, ...layers.map((l) => l.digest)],
    reference.registry,
    reference.repository,
  );

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
  const ticker = setInterval(
    () => {
      for (const [digest, t] of active) {
        if (t.received >= t.size) continue;
        progress(
          `downloading ${shortDigest(digest)} ${formatSize(t.received)} of ${formatSize(t.size)} (${Math.floor((t.received / Math.max(1, t.size)) * 100)}%)`,
        );
      }
    },
    Math.max(50, opts.progressIntervalMs ?? 5000),
  );
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
            const { file, root } =
              descriptor && opts.lazy !== false && isEstargzLayer(descriptor)
                ? await downloadEstargz(client, descriptor, layer, tmpDir, progress, unpack)
                : await downloadBlob(client, layer, kind, tmpDir, signal, progress, unpack, (n) => {
                    transfer.received = n;
                  });
            await store.putBlobFile(file, layer.digest, { verified: true });
            // Verified (blob digest and diffID): the directory unpacked on the way may become the layer's.
            if (root)
              await store.adoptLayerDir(layer.diffId, root).catch(() => fsp.rm(root, { recursive: true, force: true }));
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
