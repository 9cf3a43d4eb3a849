/**
 * Lazy access to a registry image whose layers are eStargz: manifest, config and each layer's TOC are fetched (a
 * few small requests), then single files are read across the layer stack — whiteouts, opaque directories and
 * symlinks (resolved inside the image, never on the host) applied as overlayfs would — fetching only the gzip
 * members that hold them. This is what the engine uses for `COPY --from=<image> <a few paths>` and for reading
 * `/etc/passwd` / `/etc/group` for `USER`, without pulling the image.
 *
 * A whole layer can be materialised into the store (`materializeLayer`): ranges fetched in parallel, members
 * decompressed concurrently and extracted as they arrive, blob digest and diffID verified before anything becomes
 * visible. Layers without a TOC digest cannot be read lazily: operations that need one throw `NotLazyError`, and the
 * caller takes the normal path (`pullImage`).
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { DigestMismatchError } from "../../errors.js";
import { extractLayerOffThread } from "../../layer/extract-pool.js";
import type { ExtractOptions } from "../../layer/tar-extract.js";
import { MediaType, type Descriptor, type ImageConfig } from "../../oci/types.js";
import type { BlobStore, LayerDirStore, LayerRecord, WorkSpace } from "../../store/store.js";
import { isDigest, sha256Bytes, type Digest } from "../../util/digest.js";
import { RegistryClient, type RegistryOptions } from "../client.js";
import { errorFromResponse, readBody } from "../http.js";
import { UnsupportedImageError } from "../errors.js";
import { withEndpoints } from "../endpoint-fallback.js";
import { fetchImageManifest } from "../manifests.js";
import { parseReference, type ImageReference } from "../reference.js";
import { resolveInRoot } from "../../util/resolve-path.js";
import { cleanEntryName, type TocEntry } from "./format.js";
import { EstargzReader, isEstargzLayer, type FetchAllOptions, type FetchedFile } from "./read.js";

const OPAQUE = ".wh..wh..opq";
const WHITEOUT = ".wh.";

/** A layer that has no eStargz TOC had to be consulted: pull the image the normal way instead. */
export class NotLazyError extends UnsupportedImageError {
  constructor(
    readonly layerIndex: number,
    readonly digest: Digest,
  ) {
    super(
      `layer ${layerIndex} (${digest}) is not an eStargz layer, so it cannot be read lazily; pull the image instead`,
    );
    this.name = "NotLazyError";
  }
}

export interface LazyLayer {
  descriptor: Descriptor;
  diffId: Digest;
  /** Present for eStargz layers (the TOC is open and verified). */
  reader?: EstargzReader;
}

/** A file of the merged image, with the layer it comes from. */
export interface LazyFile extends FetchedFile {
  /** Index of the providing layer (0 = base). */
  layer: number;
}

export interface OpenLazyImageOptions extends RegistryOptions {
  /** Bytes read from the end of each layer in the first request (default 64 KiB). */
  tailBytes?: number;
  /** The linux/amd64 manifest digest, when the caller has resolved `ref` already (saves the tag lookup). */
  manifestDigest?: Digest;
}

/**
 * Opens `ref` for lazy reads: manifest (linux/amd64), then config and the TOC of every eStargz layer, all fetched
 * concurrently. Each TOC's digest is checked here; a TOC is parsed when a lookup first reaches its layer (lookups go
 * from the top layer down and stop at the first that answers), so a layer never consulted costs only its fetch.
 */
export async function openLazyImage(ref: string, opts: OpenLazyImageOptions = {}): Promise<LazyImage> {
  const reference = parseReference(ref);
  // Through the registry's mirrors first (the fetch policy's registry config): the first host that serves the
  // manifest, the config and the TOCs serves the image's later reads too.
  let resolved = opts.manifestDigest;
  return withEndpoints(reference, opts, async (endpoint) => {
    const client = new RegistryClient(reference, { ...opts, endpoint });
    const image = await openFrom(client, resolved, opts.tailBytes);
    resolved = image.manifestDigest;
    return image;
  });
}

async function openFrom(
  client: RegistryClient,
  manifestDigest: Digest | undefined,
  tailBytes: number | undefined,
): Promise<LazyImage> {
  const reference = client.reference;
  const manifest = await fetchImageManifest(client, manifestDigest);
  const where = `manifest ${reference.registry}/${reference.repository}@${manifest.digest}`;
  const cfg = manifest.config;
  const configRead = client.withRetries(async () => {
    const { res, url } = await client.fetch(client.url("blobs", cfg.digest));
    if (!res.ok)
      throw await errorFromResponse(
        res,
        url,
        `config of ${reference}`,
        "the registry does not have the image's config",
      );
    return readBody(res, 32 * 1024 * 1024, `config of ${reference}`);
  });
  const readerOpts = { deferParse: true, ...(tailBytes !== undefined ? { tailBytes } : {}) };
  const readersRead = Promise.all(
    manifest.layers.map((d) => (isEstargzLayer(d) ? EstargzReader.openRegistry(client, d, readerOpts) : undefined)),
  );
  const [configBytes, readers] = await Promise.all([configRead, readersRead]);
  if (sha256Bytes(configBytes) !== cfg.digest)
    throw new DigestMismatchError(cfg.digest, sha256Bytes(configBytes), `config of ${reference}`);
  const config = JSON.parse(configBytes.toString("utf8")) as ImageConfig;
  const diffIds = config.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== manifest.layers.length)
    throw new UnsupportedImageError(`the config of ${reference} does not list one diffID per layer`);
  const layers = manifest.layers.map((d, i): LazyLayer => {
    const diffId = diffIds[i];
    if (typeof diffId !== "string" || !isDigest(diffId))
      throw new UnsupportedImageError(`${where}: the config's diffID ${i} is invalid`);
    const reader = readers[i];
    return reader ? { descriptor: d, diffId, reader } : { descriptor: d, diffId };
  });
  return new LazyImage(reference, manifest.digest, cfg.digest, config, layers);
}

/** An entry of the merged image and the index of the layer that provides it (0 = base). */
export interface LazyEntry {
  layer: number;
  entry: TocEntry;
}
type Found = LazyEntry;

/** An image opened for lazy reads (see `openLazyImage`). */
export class LazyImage {
  constructor(
    readonly reference: ImageReference,
    readonly manifestDigest: Digest,
    readonly configDigest: Digest,
    readonly config: ImageConfig,
    readonly layers: readonly LazyLayer[],
  ) {}

  /** True when every layer is eStargz (any path can be read lazily). */
  get fullyLazy(): boolean {
    return this.layers.every((l) => l.reader !== undefined);
  }

  /** Blob bytes transferred so far for layer contents and TOCs (manifest and config not counted). */
  get bytesRead(): number {
    return this.layers.reduce((n, l) => n + (l.reader?.bytesRead ?? 0), 0);
  }

  /** Total size of the layer blobs. */
  get layerBytes(): number {
    return this.layers.reduce((n, l) => n + l.descriptor.size, 0);
  }

  private reader(i: number): EstargzReader {
    const r = this.layers[i]!.reader;
    if (!r) throw new NotLazyError(i, this.layers[i]!.descriptor.digest);
    return r;
  }

  /** What the overlay shows at clean path `p` (no symlink resolution), or undefined when absent or deleted. */
  private lookupMerged(p: string): Found | undefined {
    if (p === "") return { layer: this.layers.length - 1, entry: { name: "./", type: "dir", mode: 0o755 } };
    const parts = p.split("/");
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const r = this.reader(i);
      const e = r.lookup(p);
      if (e) return { layer: i, entry: e };
      // Deleted in this layer (the path or an ancestor whited out), hidden by an opaque ancestor, or shadowed by a
      // non-directory ancestor: the lower layers do not show it.
      for (let k = 1; k <= parts.length; k++) {
        const dir = parts.slice(0, k - 1).join("/");
        const name = parts[k - 1]!;
        if (r.lookup(dir ? `${dir}/${WHITEOUT}${name}` : `${WHITEOUT}${name}`)) return undefined;
        const anc = parts.slice(0, k).join("/");
        if (k < parts.length) {
          const a = r.lookup(anc);
          if (a && a.type !== "dir") return undefined;
          if (r.lookup(`${anc}/${OPAQUE}`)) return undefined;
        }
      }
      if (parts.length > 1 && r.lookup(`${parts.slice(0, -1).join("/")}/${OPAQUE}`)) return undefined;
    }
    return undefined;
  }

  /**
   * Resolves `p` in the image: symlinks are followed inside the image (absolute targets restart at the image root,
   * `..` stops at it), like `secureJoin`. The final component is followed too unless `followFinal` is false.
   * `visit` sees every existing path the walk looks at (symlinks included, each with the entry the image shows
   * there), so a caller can reproduce the resolution elsewhere.
   */
  resolve(p: string, followFinal = true, visit?: (path: string, found: LazyEntry) => void): string {
    const linkAt = (parts: readonly string[]): string | undefined => {
      const candidate = parts.join("/");
      const found = this.lookupMerged(candidate);
      if (found && visit) visit(candidate, found);
      return found?.entry.type === "symlink" ? (found.entry.linkName ?? "") : undefined;
    };
    const tooMany = () =>
      new UnsupportedImageError(`too many levels of symbolic links resolving ${p} in ${this.reference}`);
    return resolveInRoot(p, followFinal, linkAt, tooMany).join("/");
  }

  /** The entry the image shows at `p` (symlinks followed), or undefined. */
  stat(p: string, followFinal = true): (Found & { path: string }) | undefined {
    const resolved = this.resolve(p, followFinal);
    const f = this.lookupMerged(resolved);
    return f ? { ...f, path: resolved } : undefined;
  }

  /** The content of the regular file at `p` (symlinks followed), fetching only its chunks. */
  async readFile(p: string): Promise<Buffer> {
    const f = this.stat(p);
    if (!f) throw new UnsupportedImageError(`${this.reference} has no file /${cleanEntryName(p)}`);
    if (f.entry.type !== "reg" && f.entry.type !== "hardlink")
      throw new UnsupportedImageError(`/${f.path} in ${this.reference} is a ${f.entry.type}, not a regular file`);
    return this.reader(f.layer).readFile(f.path);
  }

  /** Like `readFile`, but undefined when the path does not exist (e.g. an image without /etc/group). */
  async readFileIfExists(p: string): Promise<Buffer | undefined> {
    const f = this.stat(p);
    if (!f || (f.entry.type !== "reg" && f.entry.type !== "hardlink")) return undefined;
    return this.reader(f.layer).readFile(f.path);
  }

  /** What the image shows at `p` itself (no symlink followed, not even in ancestors), or undefined. */
  lookup(p: string): LazyEntry | undefined {
    return this.lookupMerged(cleanEntryName(p));
  }

  /**
   * The merged tree below the directory `dir` (exclusive; no symlink followed): every path the overlay of the layers
   * shows there, with whiteouts, opaque directories and shadowing applied, directories implied by deeper entries
   * included, sorted (a parent before its children).
   */
  listTree(dir: string): Map<string, LazyEntry> {
    const d = cleanEntryName(dir);
    const prefix = d === "" ? "" : `${d}/`;
    const names = new Set<string>();
    const implied = new Set<string>();
    for (let i = 0; i < this.layers.length; i++) {
      for (const n of this.reader(i).paths()) {
        if (!n.startsWith(prefix) || n === d) continue;
        names.add(n);
        // Directories implied by a deeper entry have no TOC entry of their own.
        for (let j = n.lastIndexOf("/"); j > d.length; j = n.lastIndexOf("/", j - 1)) {
          const a = n.slice(0, j);
          if (implied.has(a)) break;
          implied.add(a);
          names.add(a);
        }
      }
    }
    const out = new Map<string, LazyEntry>();
    for (const n of [...names].sort()) {
      const base = n.slice(n.lastIndexOf("/") + 1);
      if (base.startsWith(WHITEOUT)) continue;
      const m = this.lookupMerged(n);
      if (m) out.set(n, m);
    }
    return out;
  }

  /**
   * Fetches paths of the merged image (the final symlink of each requested path followed; with `recursive`, the
   * merged tree below a directory, whose symlinks are returned as symlinks). Only the members holding the content
   * are transferred, several layers' members concurrently. `missing` lists requested paths the image lacks.
   */
  async fetchFiles(
    paths: readonly string[],
    opts: { recursive?: boolean; concurrency?: number } = {},
  ): Promise<{ files: LazyFile[]; missing: string[] }> {
    const want = new Map<string, Found>();
    const missing: string[] = [];
    for (const raw of paths) {
      const f = this.stat(raw);
      if (!f) {
        missing.push(cleanEntryName(raw));
        continue;
      }
      want.set(f.path, f);
      if (opts.recursive && f.entry.type === "dir") for (const [n, m] of this.listTree(f.path)) want.set(n, m);
    }
    return { files: await this.fetchFound(want, opts), missing };
  }

  /**
   * Fetches exactly the given paths of the merged image, as `lookup` sees them (no symlink followed): regular files
   * (and hardlinks) come with their content, other entries without. Paths the image lacks are left out.
   */
  async fetchExact(paths: readonly string[], opts: { concurrency?: number } = {}): Promise<LazyFile[]> {
    const want = new Map<string, Found>();
    for (const raw of paths) {
      const p = cleanEntryName(raw);
      const f = this.lookupMerged(p);
      if (f) want.set(p, f);
    }
    return this.fetchFound(want, opts);
  }

  private async fetchFound(want: ReadonlyMap<string, Found>, opts: { concurrency?: number }): Promise<LazyFile[]> {
    const byLayer = new Map<number, string[]>();
    for (const [p, f] of want) byLayer.set(f.layer, [...(byLayer.get(f.layer) ?? []), p]);
    const fetched = new Map<string, LazyFile>();
    await Promise.all(
      [...byLayer].map(async ([layer, ps]) => {
        const { files } = await this.reader(layer).fetchFiles(
          ps,
          opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {},
        );
        for (const file of files) fetched.set(file.path, { ...file, layer });
      }),
    );
    // Directories implied by deeper entries (not in any TOC) come back as synthetic 0755 dirs.
    return [...want.keys()].map(
      (p) => fetched.get(p) ?? { path: p, entry: want.get(p)!.entry, layer: want.get(p)!.layer },
    );
  }

  /**
   * The whole layer `i` as its tar stream, fetched in parallel ranges and decompressed concurrently; the result
   * rejects (and the stream errors) unless the blob digest and the diffID match the manifest and config.
   */
  layerTar(i: number, opts: Omit<FetchAllOptions, "digest" | "diffId"> = {}): ReturnType<EstargzReader["fetchAll"]> {
    const l = this.layers[i]!;
    return this.reader(i).fetchAll({ ...opts, digest: l.descriptor.digest, diffId: l.diffId });
  }

  /**
   * Fetches layer `i` into the store: the blob (verified) and its unpacked directory, extracted while the ranges
   * arrive. Returns the layer record. Already-present layers are not fetched again.
   */
  async materializeLayer(
    store: BlobStore & LayerDirStore & Pick<WorkSpace, "tempDir">,
    i: number,
    opts: Omit<FetchAllOptions, "digest" | "diffId" | "blobFile"> & Pick<ExtractOptions, "onWarning"> = {},
  ): Promise<LayerRecord> {
    const l = this.layers[i]!;
    const record: LayerRecord = {
      digest: l.descriptor.digest,
      diffId: l.diffId,
      size: l.descriptor.size,
      mediaType: l.descriptor.mediaType || MediaType.ociLayerGzip,
    };
    if (await store.hasBlob(record.digest)) {
      await store.layerDir(record);
      return record;
    }
    const tmp = await store.tempDir("estargz-pull");
    try {
      const blobFile = path.join(tmp, "blob");
      const root = path.join(tmp, "root");
      await fsp.mkdir(root, { mode: 0o700 });
      const { concurrency, rangeBytes, onWarning } = opts;
      const { tar, result } = this.layerTar(i, {
        blobFile,
        ...(concurrency !== undefined ? { concurrency } : {}),
        ...(rangeBytes !== undefined ? { rangeBytes } : {}),
      });
      const [diffId, fetched] = await Promise.all([
        extractLayerOffThread(tar, root, onWarning ? { onWarning } : {}),
        result,
      ]);
      if (diffId !== l.diffId || fetched.diffId !== l.diffId)
        throw new DigestMismatchError(l.diffId, diffId, `uncompressed content of layer ${record.digest}`);
      await store.putBlobFile(blobFile, record.digest, { verified: true });
      await store.adoptLayerDir(l.diffId, root);
      return record;
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }
}
