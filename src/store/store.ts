/**
 * The Store interfaces: small ones for what a caller uses (blobs, image records and the index, history, layer dirs,
 * the local work space, locks, maintenance) and `Store`, all of them, which each backend implements.
 */
import type { Readable } from "node:stream";
import type { Digest } from "../util/digest.js";
import type { KeyInputs } from "../keys/step-key.js";
import type { StoreLayout } from "./layout.js";

/** One layer of an image: compressed blob digest, uncompressed diffID, size of the blob. */
export interface LayerRecord {
  digest: Digest;
  diffId: Digest;
  size: number;
  mediaType: string;
}

/** What produced an image: the step, its cache key and the inputs that went into the key (for `strata explain`). */
export interface StepRecord {
  index: number;
  description: string;
  key: string;
  inputs: KeyInputs;
  /** True when this image was produced by a forced rebuild (`forceBuild`). */
  forced: boolean;
  builtAt: string;
  seconds: number;
}

/**
 * A built image. `id` is the digest of its config blob, so two builds of the same key at different times
 * (forceBuild) get different ids, and children keyed on the id miss.
 */
export interface ImageRecord {
  id: Digest;
  configDigest: Digest;
  configSize: number;
  manifestDigest: Digest;
  manifestSize: number;
  layers: LayerRecord[];
  parent?: Digest;
  step?: StepRecord;
}

/** An entry of the cache index. */
export interface IndexEntry {
  key: string;
  imageId: Digest;
  createdAt: string;
}

/** The steps of the most recent build of a named chain (a definition file or export name), for `strata explain`. */
export interface ChainRecord {
  name: string;
  builtAt: string;
  imageIds: Digest[];
}

/** A name (`repository:tag`) given to an image (`strata build --tag`, `strata tag`, `image.build({ tag })`). */
export interface NameRecord {
  /** `repository:tag`, normalised (`parseImageName(…).full`, src/util/image-name.ts). */
  name: string;
  imageId: Digest;
  /** When the name was last pointed at this image. */
  createdAt: string;
}

/**
 * Image names: each names one image, and `resolveImage` takes a name wherever it takes an id. Named images are roots
 * `strata cache prune` keeps, with every image they reach. A scoped view (`ScopedStore`) has names of its own.
 */
export interface NameStore {
  getName(name: string): Promise<NameRecord | undefined>;
  /** Points a name at an image, replacing where it pointed; refused (StoreError) when the image is not stored. */
  putName(record: NameRecord): Promise<void>;
  /** Removes a name; true when there was one. */
  deleteName(name: string): Promise<boolean>;
  /** Every name of this view (the unscoped store: every view's, scoped ones as `scope:<scope>:<name>`). */
  listNames(): Promise<NameRecord[]>;
}

/** A namespace of stored objects, for maintenance (`strata cache prune`). */
export type StoreNamespace = "index" | "images" | "blobs" | "logs" | "chains";

/**
 * One stored object. `name` is the cache key (index), the image id's hex (images), the digest `sha256:<hex>`
 * (blobs), the hex of the log's id (logs) or of the chain name's hash (chains).
 */
export interface StoredObject {
  name: string;
  /** When it was last written (ms since the epoch; S3's whole-second Last-Modified is rounded up). */
  modifiedMs: number;
  size: number;
}

/** Content-addressed blobs. Writes verify the digest (unless told the caller did) and are atomic. */
export interface BlobStore {
  hasBlob(digest: Digest): Promise<boolean>;
  openBlob(digest: Digest): Promise<Readable>;
  readBlob(digest: Digest): Promise<Buffer>;
  /** Path of a blob on local disk (fetching it into the local cache first if the backend is remote). */
  blobPath(digest: Digest): Promise<string>;
  /** Stores bytes under their sha256 digest and returns it. */
  putBlobBytes(data: Uint8Array): Promise<Digest>;
  /** Moves a finished temp file into the store under `digest` (verified unless `verified`). */
  putBlobFile(tempPath: string, digest: Digest, opts?: { verified?: boolean }): Promise<void>;
}

/**
 * Image records and the cache index (key → image id). A record is only written after every blob it names is stored,
 * and an index entry is only trusted while its record exists, so no reader meets a dangling reference.
 */
export interface ImageStore {
  /**
   * The namespace this view's index, chains and locks live in (a build service tenant's, `ScopedStore`); undefined
   * for the store's own. Views of one store with different scopes never share a cache entry or a step execution.
   */
  readonly scope?: string;
  getIndex(key: string): Promise<IndexEntry | undefined>;
  putIndex(entry: IndexEntry): Promise<void>;
  getImage(id: Digest): Promise<ImageRecord | undefined>;
  putImage(record: ImageRecord): Promise<void>;
  listImages(): Promise<ImageRecord[]>;
  /**
   * Resolves an image name (`NAME[:TAG]`, a backend with names), a full id, a bare hex id or a unique prefix (≥ 6 hex
   * digits) to an image record. A ref that is both a name and a hex prefix is a name first (as Docker does).
   */
  resolveImage(ref: string): Promise<ImageRecord>;
}

/** What `strata explain` and `strata logs` read back: the last build of each named chain, and step logs. */
export interface HistoryStore {
  getChain(name: string): Promise<ChainRecord | undefined>;
  putChain(chain: ChainRecord): Promise<void>;
  /** Saves the (secret-redacted) log of the step that produced an image. */
  putLog(imageId: Digest, text: string): Promise<void>;
  getLog(imageId: Digest): Promise<string | undefined>;
}

/** Unpacked layers, shared by diffID, in overlay lowerdir form. */
export interface LayerDirStore {
  /** Directory holding the unpacked layer (overlay lowerdir form), unpacking it from its blob if needed. */
  layerDir(layer: LayerRecord): Promise<string>;
  /** Adopts an already-unpacked directory (e.g. an overlay upper dir) as the unpacked form of `diffId`. */
  adoptLayerDir(diffId: Digest, dir: string): Promise<string>;
  /** Keeps these layers' local copies from eviction until the returned release is called (caching backends). */
  pin?(layers: Iterable<LayerRecord>): () => void;
}

/** The store's local directory: where things live in it (`layout`), temp work dirs, and reclaiming dead ones. */
export interface WorkSpace {
  /** The local directory (for a remote backend: its local cache); for messages. Paths come from `layout`. */
  readonly root: string;
  readonly layout: StoreLayout;
  /** A fresh private directory for temporary work, removed by the caller or by the next `recover()`. */
  tempDir(prefix: string): Promise<string>;
  /**
   * Removes what interrupted builds left behind (temp files, stale mounts). Safe while other builds run.
   * `beforeReclaim` runs once, first, if there is anything to reclaim (e.g. to kill orphaned containers).
   */
  recover(beforeReclaim?: () => Promise<void>): Promise<void>;
}

/** Build locks, one per cache key. */
export interface LockStore {
  /**
   * Takes the build lock for a cache key, waiting while another live process holds it. Returns the release
   * function. Locks of dead processes are broken.
   */
  lock(key: string): Promise<() => Promise<void>>;
}

/** Maintenance, off the build path (`strata cache prune`): listing and removing what the store holds. */
export interface StoreMaintenance {
  /** Every object of a namespace, with when it was written. */
  listStored(ns: StoreNamespace): Promise<StoredObject[]>;
  /**
   * Removes one object; a missing one is fine. With `ifModifiedBefore`, an object written at or after that time (ms)
   * is kept (so a prune never removes what a running build just wrote). True when it was removed.
   */
  deleteStored(ns: StoreNamespace, name: string, opts?: { ifModifiedBefore?: number }): Promise<boolean>;
}

/** Everything a build reads and writes: a store without its maintenance. What the engine and the service take. */
export interface BuildStore extends BlobStore, ImageStore, HistoryStore, LayerDirStore, WorkSpace, LockStore {}

/**
 * Storage for everything a build produces, as a backend provides it (`LocalStore`, `S3Store`, wrappers): the build
 * interfaces plus maintenance where the backend supports it. Code that needs less names less (`BlobStore`, …).
 */
export interface Store extends BuildStore, Partial<StoreMaintenance> {}

/** A store that keeps image names too (`LocalStore`, `S3Store`, their wrappers): what the CLI and the service open. */
export interface NamedStore extends Store, NameStore {}

/** Whether a store supports maintenance (listing and deleting what it holds). */
export function isMaintainable<S extends Partial<StoreMaintenance>>(store: S): store is S & StoreMaintenance {
  return typeof store.listStored === "function" && typeof store.deleteStored === "function";
}

/**
 * The unpacked directories of an image's layers as overlay lowers: base first, a layer the image holds more than once
 * named only at its topmost place (`topmostOnly`), as overlayfs refuses a lower list that names a dir twice. Every
 * reader of an image's filesystem (a step's mount or its mount-free COPY, `strata run`, a stage's selection) gets its
 * lowers here. Layers that still have to be unpacked (or fetched, for a caching backend) are done concurrently, each
 * distinct diffID once: unpacking runs on worker threads, so a cold image's layers do not wait for each other.
 */
export async function layerDirs(store: LayerDirStore, layers: readonly LayerRecord[]): Promise<string[]> {
  const byDiffId = new Map<string, Promise<string>>();
  for (const l of layers) if (!byDiffId.has(l.diffId)) byDiffId.set(l.diffId, store.layerDir(l));
  // Every promise is awaited (allSettled) before the first failure is reported, so none is left unobserved.
  const settled = await Promise.allSettled(byDiffId.values());
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
  return topmostOnly(await Promise.all(layers.map((l) => byDiffId.get(l.diffId)!)));
}

/**
 * `items` (base first) with each repeated item kept only at its last, topmost place; the order is otherwise kept.
 * For layers this leaves the merged view unchanged: the upper copy of a layer holds every entry the lower copy holds
 * (files, dirs with their children, whiteouts, opaque markers), and a lookup meets the upper copy first, so whatever
 * the lower copy would show or hide is already shown or hidden above it. Images repeat a layer often: every step that
 * adds nothing (`RUN true`, a `mkdir -p` of an existing dir) makes the same empty layer.
 */
export function topmostOnly<T>(items: readonly T[]): T[] {
  const seen = new Set<T>();
  const topFirst: T[] = [];
  for (let i = items.length - 1; i >= 0; i--) {
    if (seen.has(items[i]!)) continue;
    seen.add(items[i]!);
    topFirst.push(items[i]!);
  }
  return topFirst.reverse();
}
