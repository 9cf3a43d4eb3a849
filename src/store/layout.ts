/**
 * The on-disk layout of a store's local directory: the one place that knows where each thing lives under the root
 * (`cache/README.md` documents it). Pure: paths in, paths out; nothing here touches the disk. Code outside
 * `src/store/` asks a `StoreLayout` for a path instead of joining onto the root (`scripts/check-layers.mjs` checks).
 */
import os from "node:os";
import path from "node:path";
import { digestHex, type Digest } from "../util/digest.js";

/** Where the store lives: STRATA_HOME, else `~/.cache/strata` (XDG_CACHE_HOME respected). */
export function defaultStoreRoot(): string {
  if (process.env.STRATA_HOME) return path.resolve(process.env.STRATA_HOME);
  const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(xdg, "strata");
}

/** Length of a sha256 hex digest: the name of a layer dir, a blob file, an image record. */
const HEX_LENGTH = 64;

export class StoreLayout {
  /** The store's local directory (for a remote backend: its local cache). */
  constructor(readonly root: string) {}

  /** The layout of the default store (`defaultStoreRoot()`). */
  static default(): StoreLayout {
    return new StoreLayout(defaultStoreRoot());
  }

  // ---- what the Store implementations keep -----------------------------------------------------------------------

  /** `blobs/sha256/`: blobs by digest. */
  get blobsDir(): string {
    return path.join(this.root, "blobs", "sha256");
  }
  blobFile(d: Digest): string {
    return path.join(this.blobsDir, digestHex(d));
  }
  /** `index/`: the cache index, `<kk>/<key>.json` (the key is validated by the store). */
  get indexDir(): string {
    return path.join(this.root, "index");
  }
  indexFile(key: string): string {
    return path.join(this.indexDir, key.slice(0, 2), `${key}.json`);
  }
  /** `images/<hex>.json`: image records. */
  get imagesDir(): string {
    return path.join(this.root, "images");
  }
  imageFile(id: Digest): string {
    return path.join(this.imagesDir, `${digestHex(id)}.json`);
  }
  /** `chains/<hash>.json`: the last build of each named chain. */
  get chainsDir(): string {
    return path.join(this.root, "chains");
  }
  /** `names/<sha256(name) hex>.json`: image names (`strata tag`). */
  get namesDir(): string {
    return path.join(this.root, "names");
  }
  /** `logs/<hex>.log`: step logs. */
  get logsDir(): string {
    return path.join(this.root, "logs");
  }
  /** `layers/<diffID hex>/`: unpacked layers (overlay lowerdir form). */
  get layersDir(): string {
    return path.join(this.root, "layers");
  }
  layerDir(diffId: Digest): string {
    return path.join(this.layersDir, digestHex(diffId));
  }
  /** `tmp/`: work dirs, `<prefix>-<pid>-…` so a dead process's are reclaimed. */
  get tmpDir(): string {
    return path.join(this.root, "tmp");
  }
  /** `locks/<key>.lock`: build locks. */
  get locksDir(): string {
    return path.join(this.root, "locks");
  }
  /** The directories `LocalStore.open` creates. */
  get storeDirs(): string[] {
    return [
      this.blobsDir,
      this.indexDir,
      this.imagesDir,
      this.chainsDir,
      this.layersDir,
      this.tmpDir,
      this.locksDir,
      this.logsDir,
      this.namesDir,
    ];
  }

  /**
   * The layer dir (`layers/<hex>`) that `p` is, or lies inside, or undefined when `p` is not under `layers/`. A path
   * below a layer dir (a file a `COPY --from` reads, a link to a subdirectory) names the whole layer dir.
   */
  layerDirContaining(p: string): string | undefined {
    const prefix = this.layersDir + path.sep;
    if (!p.startsWith(prefix)) return undefined;
    const rest = p.slice(prefix.length);
    const slash = rest.indexOf(path.sep);
    const name = slash < 0 ? rest : rest.slice(0, slash);
    return name.length === HEX_LENGTH ? prefix + name : undefined;
  }

  // ---- caches the engine, registry code and service keep beside the store ----------------------------------------

  /** `statcache.json`: (path, size, mtime, inode, ctime) → content hash of context files. */
  get statCacheFile(): string {
    return path.join(this.root, "statcache.json");
  }
  /** `defs/`: transpiled definition files. */
  get definitionsDir(): string {
    return path.join(this.root, "defs");
  }
  /** `downloads/`: `ADD <url>` downloads. */
  get downloadsDir(): string {
    return path.join(this.root, "downloads");
  }
  /** `selects/<hash>.json`: cached `COPY --from=<stage>` selections. */
  get selectsDir(): string {
    return path.join(this.root, "selects");
  }
  selectFile(hash: string): string {
    return path.join(this.selectsDir, `${hash}.json`);
  }
  /** `layer-meta/`: sidecars of unpacked layers (opaque dirs; mtime clamps). */
  get layerMetaDir(): string {
    return path.join(this.root, "layer-meta");
  }
  /**
   * `layer-meta/<hex>.clamp.json`: the epoch the tar of the layer dir `layers/<hex>` (a layer dir path) clamps mtimes
   * to, for a layer built here whose files keep the times they were made (src/engine/layer-clamp.ts).
   */
  layerClampFile(layerDir: string): string {
    return path.join(this.layerMetaDir, `${path.basename(layerDir)}.clamp.json`);
  }
  /** `files/`: the content pool COPY-only steps hard-link from. */
  get contentPoolDir(): string {
    return path.join(this.root, "files");
  }
  /** `link-layers/<key>.json`: `COPY --link` layers by their key without the parent. */
  get linkLayersDir(): string {
    return path.join(this.root, "link-layers");
  }
  linkLayerFile(key: string): string {
    return path.join(this.linkLayersDir, `${key}.json`);
  }
  /** `cache-mounts/<sha256(id)>/`: `RUN --mount=type=cache` directories. */
  cacheMountDir(idHash: string): string {
    return path.join(this.root, "cache-mounts", idHash);
  }
  /** `lazy/<manifest hex>/`: partial trees of lazily read eStargz images. */
  get lazyDir(): string {
    return path.join(this.root, "lazy");
  }
  lazyImageDir(manifestDigest: Digest): string {
    return path.join(this.lazyDir, digestHex(manifestDigest));
  }
  /** `estargz/<layer hex>.<chunk size>.<level>.json`: eStargz conversions of layers. */
  estargzFile(layer: Digest, chunkSize: number, level: number): string {
    return path.join(this.root, "estargz", `${digestHex(layer)}.${chunkSize}.${level}.json`);
  }
  /** `registry-sources/<kk>/<hex>.json`: the repositories a blob was seen in. */
  registrySourcesFile(blob: Digest): string {
    const hex = digestHex(blob);
    return path.join(this.root, "registry-sources", hex.slice(0, 2), `${hex}.json`);
  }
  /** `service/trees/`: the build service's materialised input trees. */
  get serviceTreesDir(): string {
    return path.join(this.root, "service", "trees");
  }
  /** `s3/<bucket>/`: the default local cache of an S3 store. */
  s3CacheDir(bucket: string): string {
    return path.join(this.root, "s3", bucket.replace(/[^A-Za-z0-9._-]/g, "_"));
  }
}
