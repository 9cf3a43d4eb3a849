/**
 * Lazy `COPY --from=<registry image>` (and RUN bind mounts from one): when the layers a selection reads are eStargz,
 * only the paths its patterns can match are fetched — by ranged reads of the gzip members that hold them — into a
 * persistent partial root filesystem of the image, `<store>/lazy/<manifest digest hex>/rootfs`. That directory is
 * then an ordinary select root (`selectSources` with `{ dir }`), so keys, glob and symlink rules and copying are the
 * same code as for a pulled image.
 *
 * What a pattern can match (Dockerfile COPY rules, see `src/engine/select.ts`):
 * - a literal path: every entry the symlink resolution of it visits (inside the image), and the subtree below the
 *   directory it resolves to;
 * - a glob: below its resolved literal base, the entries whose segments match the glob's segments; a matched
 *   directory brings its subtree, a matched symlink its resolution (and the subtree of its target);
 * - `--parents`: the resolved pivot, and the subtree at the pattern's literal prefix below it (a pivot with wildcards:
 *   every directory it matches, as a glob).
 * Every ancestor directory comes too, with the image's modes and owners. A selection that needs the whole image
 * (`COPY --from=img / …`, or a symlink to `/`) takes the normal path, a full pull, which fetches eStargz layers by
 * parallel ranges anyway.
 *
 * Entries are written to a temp name and renamed into place (owner and mode set first), so concurrent builds and
 * crashes never leave partial files; a marker per pattern (written last) makes a later build of the same image
 * skip the registry's blobs entirely. If a layer the selection consults has no TOC (`NotLazyError`), or the registry
 * does not serve byte ranges, the caller falls back to `pullImage`.
 */
import { randomBytes, createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { StepLocation } from "../plan/step.js";
import type { WorkSpace } from "../store/store.js";
import { cleanSource, hasWildcard, segmentMatcher } from "./select.js";
import { lstatOrUndefined } from "../util/fs.js";
import { mtimeUs, setTimeUs } from "../layer/copy-times.js";
import type { Digest } from "../util/digest.js";
import type { RegistryOptions } from "../registry/client.js";
import { parseReference } from "../registry/reference.js";
import { RegistryError, UnsupportedImageError } from "../registry/errors.js";
import { cleanEntryName } from "../registry/estargz/format.js";
import { NotLazyError, openLazyImage, type LazyEntry, type LazyImage } from "../registry/estargz/lazy.js";

/** The paths a `select` input picks from the image (the fields of the input that decide what it can match). */
export interface LazySelection {
  patterns: readonly string[];
  parents?: boolean;
  location?: StepLocation;
}

export interface LazyRootOptions extends RegistryOptions {
  /** Content bytes held in memory per fetch batch (default 64 MiB; a larger single file is its own batch). */
  batchBytes?: number;
  /** Concurrent range requests per layer (default 4). */
  concurrency?: number;
}

/** A partial root filesystem of an image holding at least every path a selection can match. */
export interface LazyRoot {
  /** Host directory to select from. */
  dir: string;
  manifestDigest: Digest;
  /** Layer blob bytes fetched for this selection's files (0 when the markers were all there; TOCs not counted). */
  bytesRead: number;
  /** Total size of the image's layer blobs (0 when the image was not opened). */
  layerBytes: number;
  /** Entries written (not already present). */
  written: number;
}

const MARKER_VERSION = "strata-lazy-select/1";

/** What one pattern needs, before looking at the image. */
type Need =
  | { kind: "path"; path: string }
  | { kind: "glob"; base: string; regexes: RegExp[] }
  | { kind: "literal"; pivot: string; rest: string[] };

/** Thrown inside the planning when a selection needs the image's root tree (the whole image): pull it instead. */
class NeedsWholeImage extends Error {}

function needsOf(sel: LazySelection): Need[] {
  const loc = sel.location;
  const out: Need[] = [];
  for (const raw of sel.patterns) {
    if (sel.parents) {
      const at = raw.indexOf("/./");
      const pivot = cleanSource(at >= 0 ? raw.slice(0, at) : "", loc);
      const pattern = cleanSource(at >= 0 ? raw.slice(at + 3) : raw, loc);
      const pivotSegs = pivot === "" ? [] : pivot.split("/");
      const pivotGlob = pivotSegs.findIndex(hasWildcard);
      if (pivotGlob >= 0) {
        // A glob pivot: every directory it matches, with its subtree (a superset of what the pattern picks below).
        out.push(globNeed(pivotSegs, pivotGlob));
        continue;
      }
      const segs = pattern === "" ? [] : pattern.split("/");
      const first = segs.findIndex(hasWildcard);
      out.push({ kind: "literal", pivot, rest: first < 0 ? segs : segs.slice(0, first) });
      continue;
    }
    const src = cleanSource(raw, loc);
    const segs = src === "" ? [] : src.split("/");
    const first = segs.findIndex(hasWildcard);
    if (first < 0) {
      out.push({ kind: "path", path: src });
      continue;
    }
    out.push(globNeed(segs, first));
  }
  return out;
}

/** The need of a path whose segment `first` is the first with a wildcard. */
function globNeed(segs: readonly string[], first: number): Need {
  let regexes: RegExp[];
  try {
    regexes = segs.slice(first).map(segmentMatcher);
  } catch {
    // A malformed glob matches nothing here; selectSources reports it against the (partial) tree.
    regexes = [/$^/];
  }
  return { kind: "glob", base: segs.slice(0, first).join("/"), regexes };
}

/** Collects the merged entries a selection needs. */
class NeedSet {
  readonly entries = new Map<string, LazyEntry>();
  constructor(private readonly image: LazyImage) {}

  add(p: string, e: LazyEntry): void {
    if (p === "") return;
    this.entries.set(p, e);
  }

  /** Resolves `p` as secureJoin would, recording every entry visited; returns the resolved path. */
  follow(p: string): string {
    return this.image.resolve(p, true, (q, e) => this.add(q, e));
  }

  subtree(dir: string): void {
    if (dir === "") throw new NeedsWholeImage();
    for (const [p, e] of this.image.listTree(dir)) this.add(p, e);
  }

  /** Follows `p` and, when it resolves to a directory, brings the subtree below it. */
  followInto(p: string): void {
    const r = this.follow(p);
    const e = this.image.lookup(r);
    if (e?.entry.type === "dir") this.subtree(r);
  }

  need(n: Need): void {
    if (n.kind === "path") {
      if (n.path === "") throw new NeedsWholeImage();
      this.followInto(n.path);
    } else if (n.kind === "literal") {
      const pivot = this.follow(n.pivot);
      // Below the pivot nothing is followed (the tree walk keeps symlinks as symlinks).
      let cur = pivot;
      for (const seg of n.rest) {
        cur = cur === "" ? seg : `${cur}/${seg}`;
        const e = this.image.lookup(cur);
        if (!e) return;
        this.add(cur, e);
        if (e.entry.type !== "dir") return;
      }
      this.subtree(cur);
    } else {
      const base = this.follow(n.base);
      const b = base === "" ? undefined : this.image.lookup(base);
      if (base !== "" && b?.entry.type !== "dir") return;
      const k = n.regexes.length;
      const prefix = base === "" ? "" : `${base}/`;
      // Listing costs no transfer (TOCs only): even a glob at the image root fetches just what it matches.
      const tree = this.image.listTree(base);
      const matchedDirs: string[] = [];
      for (const [p, e] of tree) {
        const segs = p.slice(prefix.length).split("/");
        if (segs.length > k || !segs.every((s, i) => n.regexes[i]!.test(s))) continue;
        this.add(p, e);
        if (segs.length < k) continue;
        if (e.entry.type === "dir") matchedDirs.push(p);
        else if (e.entry.type === "symlink") this.followInto(p);
      }
      for (const d of matchedDirs) this.subtree(d);
    }
  }

  /** Adds every ancestor directory of the needed entries. */
  withAncestors(): Map<string, LazyEntry> {
    for (const p of [...this.entries.keys()]) {
      for (let i = p.lastIndexOf("/"); i > 0; i = p.lastIndexOf("/", i - 1)) {
        const a = p.slice(0, i);
        if (this.entries.has(a)) continue;
        const e = this.image.lookup(a);
        if (e) this.entries.set(a, e);
      }
    }
    return new Map([...this.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
}

/**
 * Images opened in this process, by repository and manifest digest: the steps of a build that read the same image
 * (several `COPY --from=<image>`) share one set of TOCs instead of fetching them again. A few are kept.
 */
const opened = new Map<string, Promise<LazyImage>>();
const MAX_OPENED = 8;

async function openShared(ref: string, manifestDigest: Digest, opts: RegistryOptions): Promise<LazyImage> {
  const r = parseReference(ref);
  const key = `${r.registry}/${r.repository}@${manifestDigest} ${opts.insecure ? "insecure" : ""} ${opts.fetchPolicy?.id ?? ""}`;
  let p = opened.get(key);
  if (!p) {
    p = openLazyImage(ref, { ...opts, manifestDigest });
    p.catch(() => opened.delete(key));
    opened.set(key, p);
    while (opened.size > MAX_OPENED) opened.delete(opened.keys().next().value!);
  } else {
    opened.delete(key);
    opened.set(key, p);
  }
  return p;
}

function markerName(need: Need): string {
  const json = JSON.stringify(need, (_k, v: unknown) => (v instanceof RegExp ? v.source : v));
  return createHash("sha256").update(`${MARKER_VERSION}\n${json}`).digest("hex");
}

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(
    () => true,
    () => false,
  );
}

/**
 * Errors after which the image is read the normal way instead (nothing written is wrong, only incomplete): `image`
 * when it is a property of the image (remembered, so later builds do not open it again), `now` otherwise.
 */
function fallbackKind(e: unknown): "image" | "now" | undefined {
  if (e instanceof NotLazyError || e instanceof NeedsWholeImage) return "image";
  // A symlink loop: the full view reports it the way it always does.
  if (e instanceof UnsupportedImageError && /too many levels of symbolic links/.test(e.message)) return "image";
  // A registry (or proxy) that ignores Range headers answers 200 with the whole blob.
  if (e instanceof RegistryError && e.status === 200) return "now";
  return undefined;
}

/**
 * Materialises what `sel` can match of the registry image `ref` under the store (see the module comment) and returns
 * the partial root, or undefined when the caller should pull the image instead (a non-eStargz layer is in the way,
 * the selection needs the whole image, or the registry does not serve ranges).
 */
export async function lazyImageRoot(
  ref: string,
  store: Pick<WorkSpace, "layout">,
  sel: LazySelection,
  opts: LazyRootOptions = {},
): Promise<LazyRoot | undefined> {
  const needs = needsOf(sel);
  if (needs.some((n) => n.kind === "path" && n.path === "")) return undefined;
  const { resolveImage } = await import("../registry/pull.js");
  const { manifestDigest } = await resolveImage(ref, opts);
  const home = store.layout.lazyImageDir(manifestDigest);
  const dir = path.join(home, "rootfs");
  const markers = path.join(home, "done");
  const names = needs.map(markerName);
  if ((await Promise.all(names.map((n) => exists(path.join(markers, `${n}.notlazy`))))).some(Boolean)) return undefined;
  if ((await Promise.all(names.map((n) => exists(path.join(markers, n))))).every(Boolean)) {
    // Marks the tree as used (`strata cache prune` keeps trees used since its cutoff).
    const now = new Date();
    await fsp.utimes(markers, now, now).catch(() => undefined);
    return { dir, manifestDigest, bytesRead: 0, layerBytes: 0, written: 0 };
  }

  const notLazy = async (): Promise<undefined> => {
    await fsp.mkdir(markers, { recursive: true });
    await Promise.all(names.map((n) => fsp.writeFile(path.join(markers, `${n}.notlazy`), "")));
    return undefined;
  };
  let image: LazyImage;
  let written: number;
  let before = 0;
  try {
    image = await openShared(ref, manifestDigest, opts);
    if (!image.layers.some((l) => l.reader)) return notLazy();
    before = image.bytesRead;
    const set = new NeedSet(image);
    for (const n of needs) set.need(n);
    written = await materialise(image, set.withAncestors(), home, opts);
  } catch (e) {
    const kind = fallbackKind(e);
    if (kind === "image") return notLazy();
    if (kind === "now") return undefined;
    throw e;
  }
  await fsp.mkdir(markers, { recursive: true });
  await Promise.all(names.map((n) => fsp.writeFile(path.join(markers, n), `${ref}\n`)));
  return { dir, manifestDigest, bytesRead: image.bytesRead - before, layerBytes: image.layerBytes, written };
}

/** Writes `entries` (sorted, parents first) into `<home>/rootfs`; returns how many were written. */
async function materialise(
  image: LazyImage,
  entries: ReadonlyMap<string, LazyEntry>,
  home: string,
  opts: LazyRootOptions,
): Promise<number> {
  const root = path.join(home, "rootfs");
  // Temp names on the same filesystem as the tree, outside it (a concurrent glob must never see them); one
  // directory per call, since other builds may be materialising other paths of this image right now.
  const tmp = path.join(home, "tmp", `${process.pid}-${randomBytes(6).toString("hex")}`);
  await fsp.mkdir(root, { recursive: true, mode: 0o755 });
  await fsp.mkdir(tmp, { recursive: true, mode: 0o700 });
  try {
    return await write(image, entries, root, tmp, opts);
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}

async function write(
  image: LazyImage,
  entries: ReadonlyMap<string, LazyEntry>,
  root: string,
  tmp: string,
  opts: LazyRootOptions,
): Promise<number> {
  let written = 0;
  let n = 0;
  const tmpName = (): string => path.join(tmp, String(n++));
  // A hardlink shares its target's inode: owner and mode are the target's (a hardlink's target is in its layer).
  const meta = (e: LazyEntry) => {
    const src =
      e.entry.type === "hardlink"
        ? (image.layers[e.layer]?.reader?.lookup(cleanEntryName(e.entry.linkName ?? "")) ?? e.entry)
        : e.entry;
    // The TOC's mtime (whole seconds; absent for the Unix epoch), what the layer's tar holds: a copy keeps it.
    const mtimeMs = src.modtime ? Date.parse(src.modtime) : 0;
    return {
      uid: src.uid ?? 0,
      gid: src.gid ?? 0,
      mode: src.mode,
      mtimeUs: mtimeUs(Number.isNaN(mtimeMs) ? 0 : mtimeMs),
    };
  };

  // Directories first (parents before children), with their owner and mode, so everything below has a place.
  const files: string[] = [];
  const links: [string, LazyEntry][] = [];
  const dirs: [string, number][] = [];
  for (const [p, e] of entries) {
    const t = e.entry.type;
    if (t === "dir") {
      const host = path.join(root, p);
      const st = lstatOrUndefined(host);
      if (st && !st.isDirectory()) await fsp.rm(host, { recursive: true, force: true });
      if (!st?.isDirectory()) {
        await fsp.mkdir(host, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "EEXIST") throw err;
        });
        written++;
      }
      const { uid, gid, mode } = meta(e);
      await fsp.lchown(host, uid, gid);
      await fsp.chmod(host, mode ?? 0o755);
      dirs.push([host, meta(e).mtimeUs]);
    } else if (t === "reg" || t === "hardlink") {
      const st = lstatOrUndefined(path.join(root, p));
      // Present already (renamed into place whole by an earlier selection of this image).
      if (t === "reg" && st?.isFile() && st.size === (e.entry.size ?? 0)) continue;
      files.push(p);
    } else if (t === "symlink") {
      links.push([p, e]);
    }
    // Devices and FIFOs are never selected (the tree walk skips them); they are not created.
  }

  const place = async (p: string, e: LazyEntry, make: (tmpPath: string) => Promise<void>): Promise<void> => {
    const t = tmpName();
    await make(t);
    const { uid, gid, mode, mtimeUs: us } = meta(e);
    await fsp.lchown(t, uid, gid);
    if (e.entry.type !== "symlink") await fsp.chmod(t, mode ?? 0o644); // after chown, which clears setuid
    setTimeUs(t, us);
    const host = path.join(root, p);
    const st = lstatOrUndefined(host);
    if (st?.isDirectory()) await fsp.rm(host, { recursive: true, force: true });
    await fsp.rename(t, host);
    written++;
  };

  for (const [p, e] of links) {
    const host = path.join(root, p);
    const st = lstatOrUndefined(host);
    if (st?.isSymbolicLink() && (await fsp.readlink(host)) === (e.entry.linkName ?? "")) continue;
    await place(p, e, (t) => fsp.symlink(e.entry.linkName ?? "", t));
  }

  // File contents in batches of about `batchBytes`, each fetched with every layer's ranges concurrently.
  const limit = opts.batchBytes ?? 64 * 1024 * 1024;
  const batches: string[][] = [];
  let cur: string[] = [];
  let size = 0;
  for (const p of files) {
    const s = entries.get(p)!.entry.size ?? 0;
    if (cur.length && size + s > limit) {
      batches.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(p);
    size += s;
  }
  if (cur.length) batches.push(cur);
  for (const batch of batches) {
    const fetched = await image.fetchExact(
      batch,
      opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {},
    );
    for (const f of fetched) {
      const e = entries.get(f.path)!;
      const content = f.content ?? Buffer.alloc(0);
      await place(f.path, e, (t) => fsp.writeFile(t, content, { mode: 0o600 }));
    }
  }
  // Directories' mtimes last: placing their entries changed them.
  for (const [host, us] of dirs.reverse()) setTimeUs(host, us);
  return written;
}
