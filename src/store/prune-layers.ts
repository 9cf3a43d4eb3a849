/**
 * Pruning a local store's unpacked layers (`layers/<diffID hex>/`) and the content pool files (`files/`) hard-linked
 * into them.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { uniqueSuffix } from "../util/fs.js";
import { layerDirsInUse } from "./layers-in-use.js";
import type { StoreLayout } from "./layout.js";
import type { PruneReport } from "./prune-report.js";
import { isDigestHex } from "../util/digest.js";

/**
 * Removes `layers/<hex>/` dirs not needed, not recent and not in use (moved aside first, then deleted). Returns the
 * paths of those removed (in a dry run: of those that would be).
 */
export async function pruneLayerDirs(
  layout: StoreLayout,
  needed: Set<string>,
  cutoff: number,
  dry: boolean,
  report: PruneReport,
  log: (l: string) => void,
): Promise<string[]> {
  const doomedDirs: string[] = [];
  const layersDir = layout.layersDir;
  const names = (await fsp.readdir(layersDir).catch(() => [] as string[])).filter((n) => isDigestHex(n));
  const inUse = await layerDirsInUse(layout);
  for (const name of names) {
    const dir = path.join(layersDir, name);
    const st = await fsp.lstat(dir).catch(() => undefined);
    if (!st?.isDirectory()) continue;
    // ctime moves when the directory is adopted (renamed into layers/), mtime when its top level changes.
    if (needed.has(name) || inUse.has(dir) || Math.max(st.mtimeMs, st.ctimeMs) >= cutoff) {
      report.kept.layers++;
      continue;
    }
    if (dry) {
      report.removed.layers++;
      doomedDirs.push(dir);
      continue;
    }
    // Out of layers/ first, so nobody ever sees a half-deleted layer; tmp/prune-<pid>-… is reclaimed by recover()
    // if we die before the rm finishes.
    const doomed = path.join(layout.tmpDir, `prune-${uniqueSuffix()}`);
    if (
      !(await fsp.rename(dir, doomed).then(
        () => true,
        () => false,
      ))
    ) {
      report.skipped++;
      continue;
    }
    await fsp
      .rm(doomed, { recursive: true, force: true })
      .catch((e: unknown) => log(`could not remove ${doomed}: ${String(e)}`));
    report.removed.layers++;
    doomedDirs.push(dir);
  }
  return doomedDirs;
}

/** A content pool file: `<sha256 hex>-<mode octal>[-<uid>-<gid>]-t<mtime µs>` (src/layer/copy-target.ts; older ones lack the mtime). */
const POOL_NAME = /^[0-9a-f]{64}-[0-7]+(?:-\d+-\d+)?(?:-t\d+)?$/;

/**
 * Removes content pool files (`files/`) that no unpacked layer links any more: link count 1 (the pool's own name),
 * written before `graceFrom`. Runs after the layer dirs are gone, so the counts are those that stay; a dry run, which
 * removes no layer dir, subtracts the links the doomed layer dirs hold instead (it walks them).
 *
 * Racing a build is harmless: a build links a pool file into its upper dir (link count 2 from then on, for as long as
 * the upper dir or the layer it becomes exists), and if the pool name is unlinked first, its link fails with ENOENT
 * and it copies the source instead (and puts the file back into the pool). If the link lands between our look at the
 * count and the unlink, the layer keeps its file; only the pool loses the name.
 */
export async function prunePool(
  layout: StoreLayout,
  doomedLayerDirs: readonly string[],
  graceFrom: number,
  dry: boolean,
  report: PruneReport,
  log: (l: string) => void,
): Promise<void> {
  const pool = layout.contentPoolDir;
  const names = (await fsp.readdir(pool).catch(() => [] as string[])).filter((n) => POOL_NAME.test(n));
  if (!names.length) return;
  const doomedLinks = dry ? await linksUnder(doomedLayerDirs) : new Map<string, number>();
  for (const name of names) {
    const file = path.join(pool, name);
    const st = await fsp.lstat(file, { bigint: true }).catch(() => undefined);
    if (!st?.isFile()) continue;
    const links = Number(st.nlink) - (doomedLinks.get(`${st.dev}:${st.ino}`) ?? 0);
    const size = Number(st.size);
    if (links > 1 || Number(st.mtimeMs) >= graceFrom) {
      report.kept.files++;
      report.kept.fileBytes += size;
      continue;
    }
    if (!dry) {
      const ok = await fsp.unlink(file).then(
        () => true,
        (e: NodeJS.ErrnoException) => {
          if (e.code !== "ENOENT") log(`could not remove ${file}: ${String(e)}`);
          return false;
        },
      );
      if (!ok) continue;
    }
    report.removed.files++;
    report.removed.fileBytes += size;
  }
}

/** How many names each inode with more than one link has under `dirs` (`dev:ino` → count). */
async function linksUnder(dirs: readonly string[]): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const st = await fsp.lstat(p, { bigint: true }).catch(() => undefined);
        if (st && st.nlink > 1n) counts.set(`${st.dev}:${st.ino}`, (counts.get(`${st.dev}:${st.ino}`) ?? 0) + 1);
      }
    }
  };
  for (const d of dirs) await walk(d);
  return counts;
}
