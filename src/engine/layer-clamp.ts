/**
 * The mtimes a layer's tar gives its files, for reading an image's files as a layer elsewhere would hold them. A
 * RUN's (or a base's) layer is packed with mtimes clamped to the builder's epoch, while its dir in this store keeps
 * the times the files were made — what later RUN steps see, as in BuildKit. A `COPY --from` keeps its sources' mtimes,
 * so it must read the tar's times, not this store's: else two stores building the same definition would give the
 * copy different layers. Such a layer dir gets a sidecar (`StoreLayout.layerClampFile`) naming the epoch; a layer dir
 * without one (a copy's, or unpacked from its tar) already has its tar's times.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { ContextEntry } from "../context/walk.js";
import type { StoreLayout } from "../store/layout.js";
import { lstatOrUndefined, writeFileAtomic } from "../util/fs.js";

/** Records, before `layerDir` is adopted, that its tar clamps mtimes to `epoch` (seconds). */
export async function noteClampedLayer(layout: StoreLayout, layerDir: string, epoch: number): Promise<void> {
  await fsp.mkdir(layout.layerMetaDir, { recursive: true });
  await writeFileAtomic(layout.layerClampFile(layerDir), JSON.stringify({ epoch }));
}

/** The clamp epochs (seconds) of those of `layerDirs` that have one. */
export async function clampedLayers(layout: StoreLayout, layerDirs: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await Promise.all(
    layerDirs.map(async (d) => {
      const text = await fsp.readFile(layout.layerClampFile(d), "utf8").catch(() => undefined);
      if (text === undefined) return;
      try {
        const v = (JSON.parse(text) as { epoch?: unknown }).epoch;
        if (typeof v === "number" && Number.isFinite(v)) out.set(d, v);
      } catch {
        // unreadable: as if absent (the sidecar is rewritten with the next layer built here)
      }
    }),
  );
  return out;
}

/**
 * `entries` of a selection from an image's filesystem (`root`: the host dir selected from — one layer dir, or an
 * overlay of `layerDirsTopFirst`) with the mtimes their layers' tars give them: clamped to the epoch of a layer built
 * here by a RUN. An entry's layer is the layer dir its path lies in, else the topmost layer holding its path (the one
 * overlayfs takes a directory's or symlink's attributes from).
 */
export function tarTimes(
  layout: StoreLayout,
  entries: ContextEntry[],
  root: string,
  layerDirsTopFirst: readonly string[],
  clamped: ReadonlyMap<string, number>,
): ContextEntry[] {
  if (clamped.size === 0) return entries;
  const layerOf = (e: ContextEntry): string | undefined => {
    const own = layout.layerDirContaining(e.absPath);
    if (own !== undefined) return own;
    const rel = path.relative(root, e.absPath);
    if (rel.startsWith("..") || path.isAbsolute(rel)) return undefined;
    return layerDirsTopFirst.find((d) => lstatOrUndefined(path.join(d, rel)) !== undefined);
  };
  return entries.map((e) => {
    const layer = layerOf(e);
    const epoch = layer === undefined ? undefined : clamped.get(layer);
    return epoch !== undefined && e.mtimeMs > epoch * 1000 ? { ...e, mtimeMs: epoch * 1000 } : e;
  });
}
