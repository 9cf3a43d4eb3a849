/** Pruning the partial trees of lazily read eStargz images a local store keeps (`lazy/<manifest digest hex>/`). */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { pidAlive, uniqueSuffix } from "../util/fs.js";
import type { StoreLayout } from "./layout.js";
import { STALE_TMP_MS } from "./prune-records.js";
import type { PruneReport } from "./prune-report.js";
import { isDigestHex } from "../util/digest.js";

/**
 * Removes partial trees of lazily read eStargz images (`lazy/<manifest digest hex>/`, src/engine/lazy-root.ts) that
 * nothing was written into since `graceFrom`, and, in trees that stay, temp dirs (`tmp/<pid>-<hex>`) of dead builds
 * older than STALE_TMP_MS. Returns the trees removed (in a dry run: that would be).
 *
 * When a tree was last used: lazy-root.ts takes no lock; a cache hit (the selection's markers `done/<hash>` exist,
 * then the build walks `rootfs/` and copies from it) sets the mtime of `done/`. A miss writes a marker per selection,
 * entries under `rootfs/`, and a temp dir per fetch under `tmp/`. So the age of a tree is the newest mtime of the
 * tree dir, `rootfs/`, `done/`, the markers and `tmp/`.
 *
 * The race: a build that found its markers just before the tree goes fails to read it (ENOENT while walking or
 * copying) and must be run again, as with any old index entry pruned while a build reuses it. To keep the window
 * small, the tree is checked, then moved out of `lazy/` in one rename (into `tmp/prune-<pid>-…`, reclaimed by
 * `recover()` if we die) and only then measured and deleted, as layer dirs are; a tree with a temp dir of a live
 * process (a fetch in progress) always stays.
 */
export async function pruneLazy(
  layout: StoreLayout,
  graceFrom: number,
  dry: boolean,
  report: PruneReport,
  log: (l: string) => void,
): Promise<string[]> {
  const lazyDir = layout.lazyDir;
  const doomedTrees: string[] = [];
  const mtime = async (p: string) => (await fsp.lstat(p).catch(() => undefined))?.mtimeMs ?? 0;
  for (const name of await fsp.readdir(lazyDir).catch(() => [] as string[])) {
    if (!isDigestHex(name)) continue;
    const home = path.join(lazyDir, name);
    const st = await fsp.lstat(home).catch(() => undefined);
    if (!st?.isDirectory()) continue;
    let newest = st.mtimeMs;
    for (const sub of ["rootfs", "done", "tmp"]) newest = Math.max(newest, await mtime(path.join(home, sub)));
    for (const m of await fsp.readdir(path.join(home, "done")).catch(() => [] as string[]))
      newest = Math.max(newest, await mtime(path.join(home, "done", m)));
    const tmps: { dir: string; live: boolean }[] = [];
    for (const t of await fsp.readdir(path.join(home, "tmp")).catch(() => [] as string[])) {
      const dir = path.join(home, "tmp", t);
      const pid = /^(\d+)-/.exec(t)?.[1];
      // A process in another pid namespace looks dead: the age limit covers it.
      tmps.push({
        dir,
        live: (pid !== undefined && pidAlive(Number(pid))) || (await mtime(dir)) >= Date.now() - STALE_TMP_MS,
      });
    }
    if (newest < graceFrom && !tmps.some((t) => t.live)) {
      if (dry) {
        report.removed.lazy++;
        report.removed.lazyBytes += await treeBytes(home);
        doomedTrees.push(home);
        continue;
      }
      const doomed = path.join(layout.tmpDir, `prune-${uniqueSuffix()}`);
      if (
        !(await fsp.rename(home, doomed).then(
          () => true,
          () => false,
        ))
      ) {
        report.skipped++;
        report.kept.lazy++;
        continue;
      }
      report.removed.lazy++;
      report.removed.lazyBytes += await treeBytes(doomed);
      doomedTrees.push(home);
      await fsp
        .rm(doomed, { recursive: true, force: true })
        .catch((e: unknown) => log(`could not remove ${doomed}: ${String(e)}`));
      continue;
    }
    report.kept.lazy++;
    for (const t of tmps) {
      if (t.live) {
        report.kept.lazyTmp++;
        continue;
      }
      const bytes = await treeBytes(t.dir);
      if (!dry) {
        const removed = await fsp.rm(t.dir, { recursive: true, force: true }).then(
          () => true,
          (e: unknown) => (log(`could not remove ${t.dir}: ${String(e)}`), false),
        );
        if (!removed) continue;
      }
      report.removed.lazyTmp++;
      report.removed.lazyBytes += bytes;
    }
  }
  return doomedTrees;
}

/** The bytes of the regular files under `dir`. */
async function treeBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += await treeBytes(p);
    else if (e.isFile()) n += (await fsp.lstat(p).catch(() => undefined))?.size ?? 0;
  }
  return n;
}
