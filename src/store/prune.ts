/**
 * `strata cache prune --older-than <dur>`: removes what nothing recent references, from a LocalStore or an S3Store,
 * safely while builds run.
 *
 * What is kept ("recent" = written at or after the cutoff, now − older-than):
 *   - every recent index entry, every recent image record, and every image reachable from those through parent
 *     links (a chain of steps stays whole), plus old index entries that point at a kept image (a base built long
 *     ago that recent builds still use keeps its entry, so it is not rebuilt with a new id that would invalidate
 *     every later key);
 *   - every blob a kept image names (config, manifest, layers) and every recent blob (a running build may be about
 *     to record an image naming it);
 *   - recent chains and logs, and the step logs of kept images;
 *   - local stores: unpacked layers (`layers/<diffID>/`) of kept images, recent ones, and any a running build has
 *     mounted; content pool files (`files/`, hard-linked into unpacked layers by COPY steps) that a layer still links
 *     (link count > 1, read after the layers are pruned) or that were written since the cutoff or in the last
 *     YOUNG_MS (10 minutes) whatever the cutoff. An unlinked pool file costs its whole size, not just an inode;
 *   - local stores: opaque-dir sidecars (`layer-meta/`) of layer dirs that still exist, and cached `COPY --from`
 *     selections (`selects/`) written since the cutoff whose layer dirs all still exist (with the same young-file
 *     window). Both are caches a build recomputes when they are missing;
 *   - local stores: partial trees of lazily read eStargz images (`lazy/<hex>/`) written into since the cutoff (or
 *     the young-file window) or used since (a cache hit touches `done/`), or with a fetch in progress (see pruneLazy
 *     for the race).
 * Everything else that is older than the cutoff is removed, in an order that never leaves a reference to a missing
 * object: index entries first, then chains, image records and logs, then blobs (after looking once more for image
 * records written while the prune ran), then unpacked layers, then the caches derived from them. Every delete is
 * conditional: an object rewritten since the cutoff is kept.
 *
 * "Recent" is about writes: a cache hit writes nothing, except the chain of a named build. A build that is reusing
 * an old entry at the very moment that entry is pruned can fail when it records its next step (the store refuses a
 * record that names a removed blob, with a clear error); run it again and it rebuilds what was pruned.
 */
import { promises as fsp, type Stats } from "node:fs";
import path from "node:path";
import { StoreError } from "../errors.js";
import { digestHex, type Digest } from "../util/digest.js";
import { pidAlive, uniqueSuffix } from "../util/fs.js";
import { layerDirsInUse } from "./layers-in-use.js";
import type { StoreLayout } from "./layout.js";
import { LocalStore } from "./local.js";
import {
  isMaintainable,
  type ImageRecord,
  type ImageStore,
  type StoreMaintenance,
  type StoreNamespace,
  type StoredObject,
  type WorkSpace,
} from "./store.js";

export interface PruneOptions {
  /** Objects written before `now - olderThanMs` are candidates. */
  olderThanMs: number;
  /** Default: Date.now(). */
  now?: number;
  /** Report what would be removed without removing anything. */
  dryRun?: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Store operations in flight. Default 16. */
  concurrency?: number;
}

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

const zero = (): PruneCounts => ({
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

/**
 * Derived caches of a local store (pool files, …) written this recently are kept whatever the cutoff: a running
 * build may have just written them (see the module comment).
 */
const YOUNG_MS = 10 * 60_000;

/** Parses `30d`, `12h`, `90m`, `45s`, `2w` or combinations such as `1d12h` into milliseconds. */
export function parseDuration(s: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };
  const text = s.trim();
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * units[m[2]!]!;
    matched = re.lastIndex;
  }
  if (!text || matched !== text.length)
    throw new StoreError(
      `invalid duration "${s}": expected a number and a unit (s, m, h, d or w), e.g. 30d, 12h or 90m`,
    );
  return total;
}

/** Runs `fn` over `items` with at most `limit` in flight (the first failure rejects, after all settle). */
async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { e: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        failure ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw failure.e;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Removes index entries, image records, blobs, logs and chains that nothing recent references (see the module). */
export async function pruneStore(
  store: ImageStore & Pick<WorkSpace, "root"> & Partial<StoreMaintenance>,
  opts: PruneOptions,
): Promise<PruneReport> {
  if (!isMaintainable(store))
    throw new StoreError(`the store at ${store.root} cannot be pruned (it cannot list or delete what it holds)`);
  const stored: StoreMaintenance = store;
  if (!(opts.olderThanMs > 0)) throw new StoreError("prune needs a positive age (--older-than), e.g. 30d");
  const started = Date.now();
  const now = opts.now ?? started;
  const cutoff = now - opts.olderThanMs;
  const limit = Math.max(1, opts.concurrency ?? 16);
  const log = opts.log ?? (() => undefined);
  const dry = Boolean(opts.dryRun);
  const report: PruneReport = {
    cutoff: new Date(cutoff).toISOString(),
    dryRun: dry,
    removed: zero(),
    kept: zero(),
    skipped: 0,
  };
  const recent = (o: StoredObject) => o.modifiedMs >= cutoff;

  // 1. What there is.
  const listing = {} as Record<StoreNamespace, StoredObject[]>;
  for (const ns of ["index", "images", "blobs", "logs", "chains"] as const) listing[ns] = await stored.listStored(ns);
  log(
    `store ${store.root}: ${listing.index.length} index entries, ${listing.images.length} images, ${listing.blobs.length} blobs, ${listing.logs.length} logs, ${listing.chains.length} chains; cutoff ${report.cutoff}`,
  );

  // 2. Roots: recent index entries and image records.
  const entryImage = new Map<string, string | undefined>(); // index key → image hex (undefined: dangling)
  const roots = new Set<string>();
  await forEachLimit(listing.index, limit, async (o) => {
    const entry = await store.getIndex(o.name);
    const hex = entry ? digestHex(entry.imageId) : undefined;
    entryImage.set(o.name, hex);
    const created = entry ? Date.parse(entry.createdAt) : NaN;
    const isRecent = recent(o) || (Number.isFinite(created) && created >= cutoff);
    if (isRecent && hex) roots.add(hex);
  });
  for (const o of listing.images) if (recent(o)) roots.add(o.name);

  // 3. Everything reachable from the roots (parent links), with the blobs and unpacked layers they need.
  const keep = new Map<string, ImageRecord>();
  const mark = async (start: Iterable<string>) => {
    let frontier = [...start].filter((h) => !keep.has(h));
    while (frontier.length) {
      const next: string[] = [];
      await forEachLimit(frontier, limit, async (hex) => {
        if (keep.has(hex) || !HEX64.test(hex)) return;
        const rec = await store.getImage(`sha256:${hex}` as Digest);
        if (!rec) return;
        keep.set(hex, rec);
        if (rec.parent && !keep.has(digestHex(rec.parent))) next.push(digestHex(rec.parent));
      });
      frontier = [...new Set(next)];
    }
  };
  await mark(roots);

  // 4. Index entries: old ones whose image is not kept (or is gone) go first.
  const doomedEntries = listing.index.filter((o) => {
    const hex = entryImage.get(o.name);
    return !(hex && keep.has(hex)) && !recent(o) && !(hex && roots.has(hex));
  });
  report.kept.index = listing.index.length - doomedEntries.length;
  await removeAll("index", doomedEntries, "index");

  // 5. Chains (for `strata explain`) not written since the cutoff.
  const doomedChains = listing.chains.filter((o) => !recent(o));
  report.kept.chains = listing.chains.length - doomedChains.length;
  await removeAll("chains", doomedChains, "chains");

  // 6. Image records nothing kept reaches, then logs of images that are gone (and old build records).
  const doomedImages = listing.images.filter((o) => !keep.has(o.name) && !recent(o));
  report.kept.images = listing.images.length - doomedImages.length;
  await removeAll("images", doomedImages, "images");
  const doomedLogs = listing.logs.filter((o) => !keep.has(o.name) && !recent(o));
  report.kept.logs = listing.logs.length - doomedLogs.length;
  await removeAll("logs", doomedLogs, "logs");

  // 7. Image records written while we worked (builds running now) keep what they name, old blobs included.
  if (!dry) {
    const fresh = (await stored.listStored("images")).filter(
      (o) => o.modifiedMs >= started - 2000 && !keep.has(o.name),
    );
    if (fresh.length) {
      log(`${fresh.length} image record(s) were written during the prune: keeping what they name`);
      await mark(fresh.map((o) => o.name));
    }
  }
  const neededBlobs = new Set<string>();
  const neededLayers = new Set<string>();
  for (const rec of keep.values()) {
    neededBlobs.add(rec.configDigest);
    neededBlobs.add(rec.manifestDigest);
    for (const l of rec.layers) {
      neededBlobs.add(l.digest);
      neededLayers.add(digestHex(l.diffId));
    }
  }

  // 8. Blobs nothing kept names and nobody wrote since the cutoff.
  const doomedBlobs = listing.blobs.filter((o) => !neededBlobs.has(o.name) && !recent(o));
  const doomedSet = new Set(doomedBlobs);
  report.kept.blobs = listing.blobs.length - doomedBlobs.length;
  report.kept.blobBytes = listing.blobs.filter((o) => !doomedSet.has(o)).reduce((n, o) => n + o.size, 0);
  await removeAll("blobs", doomedBlobs, "blobs");

  // 9. Local stores: unpacked layers of images that are gone (never one a running build has mounted), then the caches
  // derived from them. Derived caches written since `graceFrom` stay: since the cutoff, and never younger than
  // YOUNG_MS (wall clock, whatever `now` says), so even a tiny --older-than leaves what a running build just wrote.
  const r = report.removed;
  let local = "";
  if (store instanceof LocalStore) {
    const graceFrom = Math.min(cutoff, started - YOUNG_MS);
    const layout = store.layout;
    const doomedLayers = await pruneLayerDirs(layout, neededLayers, cutoff, dry, report, log);
    const doomedLazy = await pruneLazy(layout, graceFrom, dry, report, log);
    await pruneLayerMeta(layout, doomedLayers, graceFrom, dry, report, log);
    await pruneSelects(layout, [...doomedLayers, ...doomedLazy], graceFrom, dry, report, log);
    await prunePool(layout, doomedLayers, graceFrom, dry, report, log);
    await pruneLinkLayers(layout, graceFrom, dry, report, log);
    local = `, ${r.files} pool files (${formatBytes(r.fileBytes)}), ${r.layerMeta} layer sidecars, ${r.selects} cached selections (${formatBytes(r.selectBytes)}), ${r.linkLayers} --link layer records, ${r.lazy} lazy image trees and ${r.lazyTmp} leftover temp dirs in others (${formatBytes(r.lazyBytes)})`;
  }

  log(
    `${dry ? "would remove" : "removed"} ${r.index} index entries, ${r.images} image records, ${r.blobs} blobs (${formatBytes(r.blobBytes)}), ${r.logs} logs, ${r.chains} chains, ${r.layers} unpacked layers${local}${report.skipped ? `; ${report.skipped} left in place (written or in use meanwhile)` : ""}`,
  );
  return report;

  async function removeAll(ns: StoreNamespace, objs: StoredObject[], counter: StoreNamespace): Promise<void> {
    if (dry) {
      report.removed[counter] += objs.length;
      if (ns === "blobs") report.removed.blobBytes += objs.reduce((n, o) => n + o.size, 0);
      return;
    }
    await forEachLimit(objs, limit, async (o) => {
      if (await stored.deleteStored(ns, o.name, { ifModifiedBefore: cutoff })) {
        report.removed[counter]++;
        if (ns === "blobs") report.removed.blobBytes += o.size;
      } else {
        report.skipped++;
        report.kept[counter]++;
        log(`left ${ns} ${o.name} in place: it was written since the cutoff, or is already gone`);
      }
    });
  }
}

/**
 * Removes `layers/<hex>/` dirs not needed, not recent and not in use (moved aside first, then deleted). Returns the
 * paths of those removed (in a dry run: of those that would be).
 */
async function pruneLayerDirs(
  layout: StoreLayout,
  needed: Set<string>,
  cutoff: number,
  dry: boolean,
  report: PruneReport,
  log: (l: string) => void,
): Promise<string[]> {
  const doomedDirs: string[] = [];
  const layersDir = layout.layersDir;
  const names = (await fsp.readdir(layersDir).catch(() => [] as string[])).filter((n) => HEX64.test(n));
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

/** Leftovers of writeFileAtomic (`<file>.tmp-<pid>-…`) are removed once their writer is dead and they are this old. */
const STALE_TMP_MS = 3600_000;
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
 * Removes opaque-dir sidecars (`layer-meta/<hex>.opaque.json`, src/layer/copy-target.ts) whose layer dir
 * `layers/<hex>/` is gone (or goes in this prune), unless written since `graceFrom`. A sidecar describes content named
 * by its diffID, so removing one is always safe: the next COPY over that layer (unpacked again) recomputes it.
 */
async function pruneLayerMeta(
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
      const m = /^([0-9a-f]{64})\.opaque\.json$/.exec(name);
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
async function pruneSelects(
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
async function pruneLinkLayers(
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
async function pruneLazy(
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
    if (!HEX64.test(name)) continue;
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

/** A content pool file: `<sha256 hex>-<mode octal>[-<uid>-<gid>]` (src/layer/copy-target.ts). */
const POOL_NAME = /^[0-9a-f]{64}-[0-7]+(?:-\d+-\d+)?$/;

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
async function prunePool(
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
