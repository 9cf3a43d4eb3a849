/** What `strata cache prune` counts (removed and kept, per kind of object), and how it prints sizes. */

export interface PruneCounts {
  index: number;
  images: number;
  blobs: number;
  blobBytes: number;
  logs: number;
  chains: number;
  /** Unpacked layer directories (local stores). */
  layers: number;
  /** Content pool files (`files/`, local stores) that no unpacked layer links any more, and their bytes. */
  files: number;
  fileBytes: number;
  /** Opaque-dir sidecars (`layer-meta/<diffID hex>.opaque.json`) of unpacked layers that are gone, and their bytes. */
  layerMeta: number;
  layerMetaBytes: number;
  /** Cached `COPY --from=<stage>` selections (`selects/<hash>.json`) that point into a missing layer dir, or old. */
  selects: number;
  selectBytes: number;
  /** `COPY --link` layer records (`link-layers/<key>.json`) not reused since the cutoff. */
  linkLayers: number;
  /**
   * Partial trees of lazily read eStargz images (`lazy/<manifest digest hex>/`) nothing was written into since the
   * cutoff; `lazyTmp`: temp dirs dead builds left in trees that stay. `lazyBytes` (file bytes) counts both, and only
   * for removed ones (kept trees are not walked).
   */
  lazy: number;
  lazyTmp: number;
  lazyBytes: number;
}

export interface PruneReport {
  /** ISO time: objects written before it were candidates. */
  cutoff: string;
  dryRun: boolean;
  removed: PruneCounts;
  kept: PruneCounts;
  /** Candidates left in place because they were rewritten (or appeared in use) while the prune ran. */
  skipped: number;
}

/** Counts of nothing. */
export const zeroCounts = (): PruneCounts => ({
  index: 0,
  images: 0,
  blobs: 0,
  blobBytes: 0,
  logs: 0,
  chains: 0,
  layers: 0,
  files: 0,
  fileBytes: 0,
  layerMeta: 0,
  layerMetaBytes: 0,
  selects: 0,
  selectBytes: 0,
  linkLayers: 0,
  lazy: 0,
  lazyTmp: 0,
  lazyBytes: 0,
});

/** A byte count for people: `1.5 KiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
