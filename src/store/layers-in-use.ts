/**
 * Which unpacked layer dirs (`layers/<hex>/`) something running on this machine is using, so that neither
 * `strata cache prune` nor the S3 store's cache eviction removes one from under it. One rule for both:
 *   - a work dir's `l/<n>` links (`tmp/<work>/l/<n>`): mountOverlay's names for its lowerdirs, and what a COPY-only
 *     step writes for the layer dirs it reads without a mount. A link to a path *inside* a layer dir (a file a
 *     `COPY --from` reads, a subdirectory) keeps the whole layer dir;
 *   - a layer dir (or a path inside one) that `/proc/self/mounts` names directly (bind mounts).
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { StoreLayout } from "./layout.js";

/** The layer dirs that `tmp/<work>/l/<n>` links and the mount table name (see the module comment). */
export async function layerDirsInUse(layout: StoreLayout, mountsFile = "/proc/self/mounts"): Promise<Set<string>> {
  const used = new Set<string>();
  const add = (p: string) => {
    const dir = layout.layerDirContaining(p);
    if (dir !== undefined) used.add(dir);
  };
  const tmp = layout.tmpDir;
  for (const work of await fsp.readdir(tmp).catch(() => [] as string[])) {
    const links = path.join(tmp, work, "l");
    for (const name of await fsp.readdir(links).catch(() => [] as string[])) {
      const target = await fsp.readlink(path.join(links, name)).catch(() => undefined);
      if (target !== undefined) add(path.resolve(links, target));
    }
  }
  const mounts = await fsp.readFile(mountsFile, "utf8").catch(() => "");
  if (mounts.includes(layout.layersDir + path.sep)) {
    for (const m of mounts.matchAll(/[^\s,:=]+/g)) add(m[0].replace(/\\040/g, " "));
  }
  return used;
}
