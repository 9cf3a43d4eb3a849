/**
 * The local disk cache in front of S3: a LocalStore directory (blob files, unpacked layers, temp dirs, locks)
 * whose blob files and unpacked layer directories are bounded by `maxBytes` with least-recently-used eviction.
 *
 * Recency is the entry's mtime: every use touches it (utimes), so it is shared by all processes using the
 * directory and survives restarts without an index file. An entry is never evicted while it is in use:
 *   - pinned in this process (`pin()`; the store pins what an operation is working on, callers may pin more),
 *   - used within the last `graceMs` (a path handed out by blobPath/layerDir is about to be read or mounted),
 *   - a layer directory that a live work dir links to (mountOverlay's `tmp/<work>/l/<n>` symlinks to its
 *     lowerdirs, made by any process on this machine) or that appears in /proc/self/mounts.
 * So the bound can be exceeded while more than `maxBytes` is in use; eviction catches up afterwards.
 * Sizes are apparent sizes (file lengths); directories themselves count nothing.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { Digest } from "../../util/digest.js";
import { exists, uniqueSuffix } from "../../util/fs.js";
import type { LocalStore } from "../local.js";
import { layerDirsInUse } from "../layers-in-use.js";
import { isDigestHex } from "../../util/digest.js";

export interface CacheEntry {
  kind: "blob" | "layer";
  path: string;
  bytes: number;
  lastUsedMs: number;
}

export interface LocalCacheOptions {
  maxBytes: number;
  graceMs: number;
}

export class LocalCache {
  readonly root: string;
  readonly maxBytes: number;
  readonly graceMs: number;
  /** Path → pin count. */
  readonly #pins = new Map<string, number>();
  /** Unpacked layers never change, so their sizes are remembered (path → bytes). */
  readonly #layerSizes = new Map<string, number>();
  #evicting: Promise<void> = Promise.resolve();
  /** Bytes in the cache as of the last scan plus what this process added since; undefined before the first scan. */
  #estimate: number | undefined;
  #lastScanMs = 0;
  /** Other processes may share the directory: rescan at least this often even while the estimate fits. */
  static readonly RESCAN_MS = 30_000;
  /** Entries evicted by this process (for tests and diagnostics). */
  evictions = 0;
  /** The last eviction failure; eviction is best effort and never fails the operation that triggered it. */
  lastEvictionError: unknown;

  constructor(
    readonly local: LocalStore,
    opts: LocalCacheOptions,
  ) {
    this.root = local.root;
    this.maxBytes = opts.maxBytes;
    this.graceMs = opts.graceMs;
  }

  blobFile(d: Digest): string {
    return this.local.layout.blobFile(d);
  }

  layerPath(diffId: Digest): string {
    return this.local.layout.layerDir(diffId);
  }

  /** Protects paths from eviction until the returned function is called (idempotent). */
  pin(paths: Iterable<string>): () => void {
    const list = [...paths];
    for (const p of list) this.#pins.set(p, (this.#pins.get(p) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const p of list) {
        const n = (this.#pins.get(p) ?? 1) - 1;
        if (n <= 0) this.#pins.delete(p);
        else this.#pins.set(p, n);
      }
    };
  }

  isPinned(p: string): boolean {
    return this.#pins.has(p);
  }

  /** Marks an entry as just used. */
  async touch(p: string): Promise<void> {
    const now = new Date();
    await fsp.utimes(p, now, now).catch(() => undefined);
  }

  /** Every cached blob and unpacked layer with its size and last use. */
  async entries(): Promise<CacheEntry[]> {
    const out: CacheEntry[] = [];
    const blobs = this.local.layout.blobsDir;
    for (const name of await fsp.readdir(blobs).catch(() => [] as string[])) {
      if (!isDigestHex(name)) continue;
      const p = path.join(blobs, name);
      const st = await fsp.lstat(p).catch(() => undefined);
      if (st?.isFile()) out.push({ kind: "blob", path: p, bytes: st.size, lastUsedMs: st.mtimeMs });
    }
    const layers = this.local.layout.layersDir;
    for (const name of await fsp.readdir(layers).catch(() => [] as string[])) {
      if (!isDigestHex(name)) continue;
      const p = path.join(layers, name);
      const st = await fsp.lstat(p).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      let bytes = this.#layerSizes.get(p);
      if (bytes === undefined) {
        bytes = await dirBytes(p);
        this.#layerSizes.set(p, bytes);
      }
      out.push({ kind: "layer", path: p, bytes, lastUsedMs: st.mtimeMs });
    }
    return out;
  }

  /** Bytes held by cached blobs and unpacked layers. */
  async usedBytes(): Promise<number> {
    return (await this.entries()).reduce((n, e) => n + e.bytes, 0);
  }

  /**
   * Evicts least recently used entries until the cache fits its bound, skipping anything in use and `protect`.
   * `addedBytes` is what the caller just added, if known: while the running estimate stays under the bound (and
   * the last scan is recent) no scan is needed. Runs are serialised within the process. Never throws.
   */
  evict(protect: Iterable<string> = [], addedBytes?: number): Promise<void> {
    const keep = new Set(protect);
    const run = this.#evicting
      .then(() => {
        if (
          addedBytes !== undefined &&
          this.#estimate !== undefined &&
          Date.now() - this.#lastScanMs < LocalCache.RESCAN_MS
        ) {
          this.#estimate += addedBytes;
          if (this.#estimate <= this.maxBytes) return;
        }
        return this.#evictNow(keep);
      })
      .catch((e: unknown) => {
        this.lastEvictionError = e;
      });
    this.#evicting = run;
    return run;
  }

  async #evictNow(protect: Set<string>): Promise<void> {
    const entries = await this.entries();
    let total = entries.reduce((n, e) => n + e.bytes, 0);
    this.#lastScanMs = Date.now();
    this.#estimate = total;
    if (total <= this.maxBytes) return;
    const linked = await layerDirsInUse(this.local.layout);
    const now = Date.now();
    entries.sort((a, b) => a.lastUsedMs - b.lastUsedMs);
    for (const e of entries) {
      if (total <= this.maxBytes) break;
      if (protect.has(e.path) || this.#pins.has(e.path) || linked.has(e.path)) continue;
      if (now - e.lastUsedMs < this.graceMs) continue;
      // Re-check recency: another process may have used it since the scan.
      const st = await fsp.lstat(e.path).catch(() => undefined);
      if (!st || now - st.mtimeMs < this.graceMs) continue;
      if (e.kind === "blob") {
        // Readers holding the file open keep reading the unlinked inode.
        await fsp.rm(e.path, { force: true });
      } else {
        // Move it out of layers/ first so nobody ever sees a half-deleted layer; tmp/evict-<pid>-… is reclaimed
        // by recover() if we die before the rm finishes.
        const doomed = path.join(this.local.layout.tmpDir, `evict-${uniqueSuffix()}`);
        const moved = await fsp.rename(e.path, doomed).then(
          () => true,
          () => false,
        );
        if (!moved) continue;
        this.#layerSizes.delete(e.path);
        await fsp.rm(doomed, { recursive: true, force: true });
      }
      total -= e.bytes;
      this.evictions++;
    }
    this.#estimate = total;
  }

  /** True when the blob is in the local cache. */
  async hasBlobFile(d: Digest): Promise<boolean> {
    return exists(this.blobFile(d));
  }
}

/** Apparent size of a directory tree (sum of file and symlink lengths), without following symlinks. */
async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    const names = await fsp.readdir(d, { withFileTypes: true }).catch(() => []);
    for (const ent of names) {
      const p = path.join(d, ent.name);
      if (ent.isDirectory()) stack.push(p);
      else total += (await fsp.lstat(p).catch(() => undefined))?.size ?? 0;
    }
  }
  return total;
}
