/**
 * `strata cache prune --older-than <dur>`: removes what nothing recent references, from a LocalStore or an S3Store,
 * safely while builds run.
 *
 * What is kept ("recent" = written at or after the cutoff, now − older-than):
 *   - every named image (`strata tag`, `build --tag`; names of every scope) and every image it reaches, however old:
 *     a name is removed only by `strata rmi`, after which its image goes with the next prune like any other;
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
 *
 * This module prunes the store's namespaces and orders the steps; a local store's layer dirs and content pool are
 * pruned in `prune-layers.ts`, its lazy image trees in `prune-lazy.ts`, its record caches in `prune-records.ts`.
 */
import { StoreError } from "../errors.js";
import { type Digest, digestHex, isDigestHex } from "../util/digest.js";
import { LocalStore } from "./local.js";
import { prunePool, pruneLayerDirs } from "./prune-layers.js";
import { pruneLazy } from "./prune-lazy.js";
import { pruneLayerMeta, pruneLinkLayers, pruneSelects } from "./prune-records.js";
import { formatBytes, type PruneReport, zeroCounts } from "./prune-report.js";
import {
  isMaintainable,
  type ImageRecord,
  type ImageStore,
  type NameStore,
  type StoreMaintenance,
  type StoreNamespace,
  type StoredObject,
  type WorkSpace,
} from "./store.js";

export { formatBytes } from "./prune-report.js";
export type { PruneCounts, PruneReport } from "./prune-report.js";

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

/** Removes index entries, image records, blobs, logs and chains that nothing recent references (see the module). */
export async function pruneStore(
  store: ImageStore & Pick<WorkSpace, "root"> & Partial<StoreMaintenance> & Partial<Pick<NameStore, "listNames">>,
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
    removed: zeroCounts(),
    kept: zeroCounts(),
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
  // Named images, whatever their age (a store without names has none).
  const named = async () => ((await store.listNames?.()) ?? []).map((n) => digestHex(n.imageId));
  const namedAtStart = await named();
  for (const hex of namedAtStart) roots.add(hex);

  // 3. Everything reachable from the roots (parent links), with the blobs and unpacked layers they need.
  const keep = new Map<string, ImageRecord>();
  const mark = async (start: Iterable<string>) => {
    let frontier = [...start].filter((h) => !keep.has(h));
    while (frontier.length) {
      const next: string[] = [];
      await forEachLimit(frontier, limit, async (hex) => {
        if (keep.has(hex) || !isDigestHex(hex)) return;
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

  // 7. Image records written while we worked (builds running now) keep what they name, old blobs included; so do
  // names given meanwhile.
  if (!dry) {
    const namedNow = (await named()).filter((hex) => !keep.has(hex));
    if (namedNow.length) await mark(namedNow);
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
