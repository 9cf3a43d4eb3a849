/**
 * Pruning the directories of small records a local store keeps beside its layers, all caches a build recomputes when
 * they are missing: opaque-dir sidecars (`layer-meta/`), cached `COPY --from` selections (`selects/`) and `COPY --link`
 * layer records (`link-layers/`). Each file is removed only if it is unchanged since it was looked at.
 */
import { promises as fsp, type Stats } from "node:fs";
import path from "node:path";
import { pidAlive } from "../util/fs.js";
import type { StoreLayout } from "./layout.js";
import type { PruneCounts, PruneReport } from "./prune-report.js";

/** Leftovers of writeFileAtomic (`<file>.tmp-<pid>-…`) are removed once their writer is dead and they are this old. */
export const STALE_TMP_MS = 3600_000;
const ATOMIC_TMP = /\.tmp-(\d+)-[0-9a-z]+-[0-9a-f]+$/;

/** Whether `name` (in a directory written with writeFileAtomic) is a temp file its dead writer left behind. */
function staleAtomicTmp(name: string, mtimeMs: number): boolean {
  const m = ATOMIC_TMP.exec(name);
  return m !== null && mtimeMs < Date.now() - STALE_TMP_MS && !pidAlive(Number(m[1]));
}

/** True when `dir` is gone, or would be after this prune (it is, or is under, one of `doomed`). */
async function goneAfter(dir: string, doomed: readonly string[]): Promise<boolean> {
  if (doomed.some((d) => dir === d || dir.startsWith(d + path.sep))) return true;
  const st = await fsp.stat(dir).catch(() => undefined);
  return !st?.isDirectory();
}

/**
 * Removes `file` if it is still the one looked at (same inode, not written since): a cache rewritten meanwhile (temp
 * + rename, so a new inode) stays.
 */
async function removeUnchanged(
  file: string,
  seen: { ino: number; mtimeMs: number },
  log: (l: string) => void,
): Promise<"removed" | "kept" | "gone"> {
  const st = await fsp.lstat(file).catch(() => undefined);
  if (!st) return "gone";
  if (st.ino !== seen.ino || st.mtimeMs !== seen.mtimeMs) return "kept";
  return fsp.unlink(file).then(
    () => "removed" as const,
    (e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return "gone" as const;
      log(`could not remove ${file}: ${String(e)}`);
      return "kept" as const;
    },
  );
}

/**
 * Removes layer sidecars (`layer-meta/<hex>.opaque.json`, src/layer/copy-target.ts; `<hex>.clamp.json`,
 * src/engine/layer-clamp.ts) whose layer dir `layers/<hex>/` is gone (or goes in this prune), unless written since
 * `graceFrom`. A sidecar describes content named by its diffID, so removing one is always safe: the next COPY over that
 * layer (unpacked again) recomputes its opaque dirs, and a layer unpacked from its tar has the tar's clamped mtimes.
 */
export async function pruneLayerMeta(
  layout: StoreLayout,
  doomedLayers: readonly string[],
  graceFrom: number,
  dry: boolean,
  report: PruneReport,
  log: (l: string) => void,
): Promise<void> {
  await sweepRecords(
    layout.layerMetaDir,
    { count: "layerMeta", bytes: "layerMetaBytes" },
    dry,
    report,
    log,
    async (name, st) => {
      const m = /^([0-9a-f]{64})\.(?:opaque|clamp)\.json$/.exec(name);
      if (m) return st.mtimeMs < graceFrom && (await goneAfter(path.join(layout.layersDir, m[1]!), doomedLayers));
      return staleAtomicTmp(name, st.mtimeMs) ? true : undefined;
    },
  );
}

/**
 * Removes cached `COPY --from=<stage>` selections (`selects/<hash>.json`, src/engine/inputs.ts): those naming a layer
 * dir that is gone (or goes in this prune; their entries point into it), and those not written since `graceFrom` (a
 * cache hit does not touch them; the next build that needs one mounts and walks the stage again and rewrites it).
 * A build reads the whole record at once, so removing one it is about to use only costs that walk.
 */
export async function pruneSelects(
  layout: StoreLayout,
  doomedLayers: readonly string[],
  graceFrom: number,
  dry: boolean,
  report: PruneReport,
  log: (l: string) => void,
): Promise<void> {
  await sweepRecords(
    layout.selectsDir,
    { count: "selects", bytes: "selectBytes" },
    dry,
    report,
    log,
    async (name, st, file) => {
      if (!/^[0-9a-f]{64}\.json$/.test(name)) return staleAtomicTmp(name, st.mtimeMs) ? true : undefined;
      if (st.mtimeMs < graceFrom) return true;
      // A record that cannot be read is ignored by builds and rewritten; it goes when it is old.
      const saved = await fsp.readFile(file, "utf8").then(
        (t) => {
          try {
            return JSON.parse(t) as { dirs?: unknown } | null;
          } catch {
            return undefined;
          }
        },
        () => undefined,
      );
      const dirs = Array.isArray(saved?.dirs) ? saved.dirs.filter((d): d is string => typeof d === "string") : [];
      for (const d of dirs) if (await goneAfter(d, doomedLayers)) return true;
      return false;
    },
  );
}

/**
 * Removes `COPY --link` layer records (`link-layers/<key>.json`, src/engine/execute.ts) neither written nor reused
 * since `graceFrom` (a reuse sets the record's mtime). A record whose blob is gone is ignored by builds anyway; the
 * layer itself is kept or pruned with the images that use it.
 */
export async function pruneLinkLayers(
  layout: StoreLayout,
  graceFrom: number,
  dry: boolean,
  report: PruneReport,
  log: (l: string) => void,
): Promise<void> {
  await sweepRecords(layout.linkLayersDir, { count: "linkLayers" }, dry, report, log, async (name, st) => {
    if (name.endsWith(".json")) return st.mtimeMs < graceFrom;
    return staleAtomicTmp(name, st.mtimeMs) ? true : undefined;
  });
}

/**
 * The files of one directory of small records: `decide` says whether each is doomed (true), a record kept (false)
 * or not a record at all (undefined: left alone, not counted). Doomed ones are removed unless they changed while
 * the prune ran (then counted as kept and skipped); the counts (and bytes, when the report has them) are tallied.
 */
async function sweepRecords(
  dir: string,
  keys: { count: keyof PruneCounts; bytes?: keyof PruneCounts },
  dry: boolean,
  report: PruneReport,
  log: (l: string) => void,
  decide: (name: string, st: Stats, file: string) => Promise<boolean | undefined>,
): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    const file = path.join(dir, name);
    const st = await fsp.lstat(file).catch(() => undefined);
    if (!st?.isFile()) continue;
    const doomed = await decide(name, st, file);
    if (doomed === undefined) continue;
    const outcome = !doomed ? "kept" : dry ? "removed" : await removeUnchanged(file, st, log);
    if (outcome === "gone") continue;
    if (outcome === "kept" && doomed) report.skipped++;
    const counts = outcome === "removed" ? report.removed : report.kept;
    counts[keys.count]++;
    if (keys.bytes) counts[keys.bytes] += st.size;
  }
}
