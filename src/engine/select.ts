/**
 * Source selection for Dockerfile COPY/ADD and RUN bind mounts: which paths of a root (the build context, or the
 * filesystem of a stage or image) a source like `src/*.js`, `.` or `--parents ./a/./b/**` names, and the entries under
 * them with their content digests. These entries are what the step's key covers (names, types, modes, owners, content;
 * never mtimes), so an edit to an unrelated context file leaves the step cached and a rename that changes a glob's
 * matches does not.
 *
 * The rules are BuildKit's (`fsutil/copy.ResolveWildcards` and `copy.Copy` with `FollowSymlinks`):
 * - A source is cleaned (`..` may not leave the root). Up to its first segment with a wildcard (`*`, `?`, `[`, `\`)
 *   it is a path, resolved with symlinks followed inside the root; the rest is matched segment by segment with Go's
 *   `filepath.Match` (a `*` never crosses `/`) against the tree, without following symlinks. A glob matching nothing
 *   is fine; a missing plain path is an error.
 * - A matched path is itself followed if it is a symlink (inside the root); a matched directory brings its subtree,
 *   whose symlinks are kept as symlinks.
 * - Ignored paths (`.dockerignore`, context only) do not exist; an ignored directory is entered only when an exception
 *   (`!pattern`) could re-include something below it.
 */
import { readdirSync, readlinkSync, type Stats } from "node:fs";
import path from "node:path";
import { createHash } from "node:crypto";
import { statContextFile, walkContext, type ContextEntry, type StatCache } from "../context/walk.js";
import { PatternMatcher } from "../ignore/pattern-matcher.js";
import { secureJoin } from "../layer/secure-join.js";
import { DockerfileSyntaxError, InvalidDefinitionError, type SourceLocation } from "../errors.js";
import { lstatOrUndefined } from "../util/fs.js";

/** One matched source: the path it resolved to (relative to the root, "" for the root) and what it is. */
export interface SourceMatch {
  /** the path as matched (what the key names), relative to the root */
  rel: string;
  /** the path after following symlinks inside the root */
  real: string;
  type: "file" | "dir" | "symlink";
  /**
   * With `--parents`: the destination-relative prefix the entries keep (the matched path below the pivot). Without:
   * undefined (a directory's contents go to the destination, a file gets its base name).
   */
  keep?: string;
  /**
   * The source matched but `--exclude` drops it by name: nothing of it is copied (no entries), but the copy still
   * prepares its destination directory, as BuildKit's copy does for every matched source.
   */
  excluded?: true;
}

/** A tree to select from: a host directory, its ignore patterns, and where a path's bytes live (for stage layers). */
export interface SelectRootView {
  dir: string;
  ignore?: PatternMatcher;
  /** Host path holding the file at `rel` (default `dir/rel`); for a mounted stage, the topmost layer's copy. */
  fileSource?: (rel: string) => string;
  /** The mtimes the selected entries get, when they are not the host's (an image's layers: `./layer-clamp.ts`). */
  entryTimes?: (entries: ContextEntry[]) => ContextEntry[];
}

export interface Selection {
  matches: SourceMatch[];
  /** every entry, `relPath` relative to the root (matches and their subtrees), sorted by match then path */
  entries: ContextEntry[];
}

function locError(loc: SourceLocation | undefined, message: string): Error {
  return loc ? new DockerfileSyntaxError(loc, message) : new InvalidDefinitionError(message);
}

/** Cleans a source path relative to the root; throws if `..` would leave it. "" is the root. */
export function cleanSource(src: string, loc?: SourceLocation, what = "source"): string {
  const out: string[] = [];
  for (const seg of src.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length === 0)
        throw locError(
          loc,
          `${what} ${JSON.stringify(src)} is outside the build context (it climbs above the root with "..")`,
        );
      out.pop();
      continue;
    }
    out.push(seg);
  }
  return out.join("/");
}

export function hasWildcard(seg: string): boolean {
  return /[*?[\\]/.test(seg);
}

/** Go's `filepath.Match` for one path segment, as a RegExp; throws on a malformed pattern. */
export function segmentMatcher(pattern: string): RegExp {
  const chars = Array.from(pattern);
  let src = "^";
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (ch === "*") src += "[^/]*";
    else if (ch === "?") src += "[^/]";
    else if (ch === "\\") {
      const next = chars[++i];
      if (next === undefined) throw new Error(`trailing "\\" in ${JSON.stringify(pattern)}`);
      src += escapeRe(next);
    } else if (ch === "[") {
      let j = i + 1;
      let cls = "";
      if (chars[j] === "^") {
        cls += "^";
        j++;
      }
      let first = true;
      for (;;) {
        const c = chars[j];
        if (c === undefined) throw new Error(`unterminated "[" in ${JSON.stringify(pattern)}`);
        if (c === "]" && !first) break;
        first = false;
        let lo = c;
        if (c === "\\") {
          lo = chars[++j] ?? "";
          if (lo === "") throw new Error(`trailing "\\" in ${JSON.stringify(pattern)}`);
        }
        j++;
        if (chars[j] === "-" && chars[j + 1] !== undefined && chars[j + 1] !== "]") {
          let hi = chars[j + 1]!;
          j += 2;
          if (hi === "\\") {
            hi = chars[j] ?? "";
            j++;
          }
          if (hi < lo) throw new Error(`bad range ${lo}-${hi} in ${JSON.stringify(pattern)}`);
          cls += `${escapeClass(lo)}-${escapeClass(hi)}`;
        } else {
          cls += escapeClass(lo);
        }
      }
      src += `[${cls}]`;
      i = j;
    } else src += escapeRe(ch);
  }
  return new RegExp(src + "$", "su");
}

function escapeRe(ch: string): string {
  return /[.*+?^${}()|[\]\\]/.test(ch) ? "\\" + ch : ch;
}
function escapeClass(ch: string): string {
  return /[\]\\^-]/.test(ch) ? "\\" + ch : ch;
}

/** The path of `rel` inside the root after following symlinks (never leaving the root), relative to it. */
function followInRoot(root: string, rel: string): string {
  const abs = secureJoin(root, rel);
  return path.relative(root, abs).split(path.sep).filter(Boolean).join("/");
}

/** Whether `rel` (which exists) is visible: not ignored, or an ignored directory an exception re-includes from. */
function visible(view: SelectRootView, rel: string, st: Stats): boolean {
  const m = view.ignore;
  if (!m || rel === "" || !m.matches(rel)) return true;
  if (!st.isDirectory() || !m.hasExclusions) return false;
  return anyVisibleBelow(view, rel);
}

function anyVisibleBelow(view: SelectRootView, rel: string): boolean {
  let names: string[];
  try {
    names = readdirSync(path.join(view.dir, rel));
  } catch {
    return false;
  }
  for (const n of names) {
    const child = `${rel}/${n}`;
    const st = lstatOrUndefined(path.join(view.dir, child));
    if (st && visible(view, child, st)) return true;
  }
  return false;
}

/**
 * Resolves one (cleaned) source to the paths it names. Literal prefixes are followed through symlinks; wildcard
 * segments are matched against directory listings (lexical order), not following symlinks, as BuildKit does.
 */
export function resolveWildcards(view: SelectRootView, src: string, loc?: SourceLocation): string[] {
  const segs = src === "" ? [] : src.split("/");
  const first = segs.findIndex(hasWildcard);
  if (first < 0) return [src];
  let regexes: RegExp[];
  try {
    regexes = segs.slice(first).map(segmentMatcher);
  } catch (e) {
    throw locError(loc, `invalid source pattern ${JSON.stringify(src)}: ${(e as Error).message}`);
  }
  const base = followInRoot(view.dir, segs.slice(0, first).join("/"));
  const baseSt = lstatOrUndefined(path.join(view.dir, base));
  if (!baseSt?.isDirectory()) return [];
  const out: string[] = [];
  const walk = (dirRel: string, depth: number): void => {
    let names: string[];
    try {
      names = readdirSync(path.join(view.dir, dirRel)).sort();
    } catch {
      return;
    }
    for (const n of names) {
      if (!regexes[depth]!.test(n)) continue;
      const rel = dirRel === "" ? n : `${dirRel}/${n}`;
      const st = lstatOrUndefined(path.join(view.dir, rel));
      if (!st || !visible(view, rel, st)) continue;
      if (depth === regexes.length - 1) out.push(rel);
      else if (st.isDirectory()) walk(rel, depth + 1);
    }
  };
  walk(base, 0);
  return out;
}

function sha256Hex(s: string): string {
  return "sha256:" + createHash("sha256").update(s).digest("hex");
}

/** Lists the subtree below `relDir` (exclusive), honouring ignore patterns and an exclude filter; sorted bytewise. */
interface Excluded {
  test: (rel: string) => boolean;
  hasExclusions: boolean;
}

async function walkTree(
  view: SelectRootView,
  relDir: string,
  statCache: StatCache | undefined,
  excluded?: Excluded,
): Promise<ContextEntry[]> {
  // Fast path: a plain host tree without ignore patterns or excludes is what walkContext does best.
  if (!view.fileSource && !excluded && (!view.ignore || relDir === "")) {
    const abs = path.join(view.dir, relDir);
    const entries = await walkContext(abs, { ignore: relDir === "" ? view.ignore : undefined, statCache });
    return relDir === "" ? entries : entries.map((e) => ({ ...e, relPath: `${relDir}/${e.relPath}` }));
  }
  const out: ContextEntry[] = [];
  const pending: Promise<void>[] = [];
  const reenter = (view.ignore?.hasExclusions ?? false) || (excluded?.hasExclusions ?? false);
  /** Lists one directory; returns whether anything below it was included. */
  const visit = (rel: string): boolean => {
    let names: string[];
    try {
      names = readdirSync(path.join(view.dir, rel));
    } catch {
      return false;
    }
    let any = false;
    for (const n of names) {
      const child = rel === "" ? n : `${rel}/${n}`;
      const abs = path.join(view.dir, child);
      const st = lstatOrUndefined(abs);
      if (!st) continue;
      const ignored = (view.ignore?.matches(child) ?? false) || (excluded?.test(child) ?? false);
      if (st.isDirectory()) {
        if (ignored && !reenter) continue;
        const idx = out.length;
        out.push(dirEntry(child, abs, st));
        const below = visit(child);
        if (ignored && !below) out.splice(idx, 1);
        else any = true;
        continue;
      }
      if (ignored) continue;
      any = true;
      if (st.isSymbolicLink()) {
        const target = readlinkSync(abs);
        out.push({
          relPath: child,
          type: "symlink",
          mode: st.mode & 0o7777,
          uid: st.uid,
          gid: st.gid,
          size: 0,
          sha256: sha256Hex(target),
          linkTarget: target,
          absPath: abs,
          mtimeMs: st.mtimeMs,
        });
      } else if (st.isFile()) {
        pending.push(hashFile(view, child, statCache).then((e) => void out.push(e)));
      }
    }
    return any;
  };
  visit(relDir);
  await Promise.all(pending);
  return sortEntries(out);
}

function dirEntry(rel: string, abs: string, st: Stats): ContextEntry {
  return {
    relPath: rel,
    type: "dir",
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: 0,
    sha256: "",
    absPath: abs,
    mtimeMs: st.mtimeMs,
  };
}

async function hashFile(view: SelectRootView, rel: string, statCache: StatCache | undefined): Promise<ContextEntry> {
  const src = view.fileSource ? view.fileSource(rel) : path.join(view.dir, rel);
  const e = await statContextFile(src, { statCache });
  return { ...e, relPath: rel, absPath: src };
}

export function sortEntries(list: ContextEntry[]): ContextEntry[] {
  return list
    .map((e) => ({ k: Buffer.from(e.relPath, "utf8"), e }))
    .sort((a, b) => Buffer.compare(a.k, b.k))
    .map((x) => x.e);
}

/** An exclude filter for paths below a matched source (patterns relative to it). */
function excludeFilter(exclude: PatternMatcher | undefined, base: string): Excluded | undefined {
  if (!exclude) return undefined;
  const prefix = base === "" ? "" : base + "/";
  return {
    test: (rel) => exclude.matches(rel.startsWith(prefix) ? rel.slice(prefix.length) : rel),
    hasExclusions: exclude.hasExclusions,
  };
}

export interface SelectOptions {
  exclude?: string[];
  parents?: boolean;
  statCache?: StatCache;
  location?: SourceLocation;
  /** what the root is called in messages: "the build context", "stage build", … */
  rootName: string;
}

/** Selects the paths `patterns` name in the root, with every entry under them (see the module comment). */
export async function selectSources(
  view: SelectRootView,
  patterns: readonly string[],
  opts: SelectOptions,
): Promise<Selection> {
  let exclude: PatternMatcher | undefined;
  try {
    exclude = opts.exclude?.length ? PatternMatcher.parse(opts.exclude) : undefined;
  } catch (e) {
    throw locError(opts.location, `--exclude: ${(e as Error).message}`);
  }
  const matches: SourceMatch[] = [];
  const entries: ContextEntry[] = [];
  const seen = new Set<string>();
  const add = (e: ContextEntry) => {
    if (seen.has(e.relPath)) return;
    seen.add(e.relPath);
    entries.push(e);
  };
  for (const raw of patterns) {
    if (opts.parents) {
      await selectParents(view, raw, exclude, opts, matches, add);
      continue;
    }
    const src = cleanSource(raw, opts.location);
    const found = resolveWildcards(view, src, opts.location);
    const literal = !src.split("/").some(hasWildcard);
    for (const rel of found) {
      // The matched name itself may be excluded (`COPY --exclude=*.txt hom* /dir/`): kept as an excluded match, with
      // no entries.
      if (exclude && rel !== "" && exclude.matches(path.posix.basename(rel))) {
        const real = followInRoot(view.dir, rel);
        const st = lstatOrUndefined(path.join(view.dir, real));
        if (st?.isDirectory() || st?.isFile())
          matches.push({ rel, real, type: st.isDirectory() ? "dir" : "file", excluded: true });
        continue;
      }
      const real = followInRoot(view.dir, rel);
      const st = lstatOrUndefined(path.join(view.dir, real));
      if (!st || (literal && !visible(view, rel, st) && !visible(view, real, st))) {
        const dangling = st === undefined && lstatOrUndefined(path.join(view.dir, rel))?.isSymbolicLink();
        throw locError(
          opts.location,
          dangling
            ? `source ${JSON.stringify(raw)} is a symlink whose target does not exist in ${opts.rootName}`
            : `source ${JSON.stringify(raw)} not found in ${opts.rootName}${view.ignore ? " (or excluded by .dockerignore)" : ""}`,
        );
      }
      if (st.isDirectory()) {
        matches.push({ rel, real, type: "dir" });
        if (rel !== "") add(dirEntry(rel, path.join(view.dir, real), st));
        const sub = await walkTree(view, real, opts.statCache, excludeFilter(exclude, real));
        for (const e of sub)
          add({
            ...e,
            relPath:
              rel === ""
                ? e.relPath.slice(real === "" ? 0 : real.length + 1)
                : `${rel}/${e.relPath.slice(real === "" ? 0 : real.length + 1)}`,
          });
      } else if (st.isFile()) {
        matches.push({ rel, real, type: "file" });
        const e = await hashFile(view, real, opts.statCache);
        add({ ...e, relPath: rel === "" ? path.posix.basename(real) : rel });
      } else {
        // A symlink that secureJoin could not follow further (a loop) or a special file.
        throw locError(opts.location, `source ${JSON.stringify(raw)} in ${opts.rootName} is not a file or directory`);
      }
    }
  }
  return { matches, entries: view.entryTimes ? view.entryTimes(entries) : entries };
}

/**
 * `--parents`: the source's directories are kept. A `/./` in the source marks the pivot (what is kept starts below
 * it); the part after it is an include pattern (dockerignore syntax, `**` allowed) matched against paths below the
 * pivot. The pivot itself may hold wildcards (the source `/test/a/b*` followed by `/./c/**` and `/e`): as BuildKit's
 * copy resolves its source before applying the include pattern, every directory it matches is a pivot of its own, and
 * the entries picked below each are merged into the destination (a glob pivot matching nothing copies nothing; one
 * matching a file or symlink to a file is skipped, as only directories have paths below them).
 */
async function selectParents(
  view: SelectRootView,
  raw: string,
  exclude: PatternMatcher | undefined,
  opts: SelectOptions,
  matches: SourceMatch[],
  add: (e: ContextEntry) => void,
): Promise<void> {
  const pivotAt = raw.indexOf("/./");
  const pivotRaw = pivotAt >= 0 ? raw.slice(0, pivotAt) : "";
  const pattern = cleanSource(pivotAt >= 0 ? raw.slice(pivotAt + 3) : raw, opts.location);
  const pivotSrc = cleanSource(pivotRaw, opts.location);
  const globPivot = pivotSrc.split("/").some(hasWildcard);
  let pivots: string[];
  if (globPivot) {
    pivots = [];
    for (const rel of resolveWildcards(view, pivotSrc, opts.location)) {
      const real = followInRoot(view.dir, rel);
      if (lstatOrUndefined(path.join(view.dir, real))?.isDirectory()) pivots.push(real);
    }
  } else {
    const pivot = followInRoot(view.dir, pivotSrc);
    if (!lstatOrUndefined(path.join(view.dir, pivot))?.isDirectory())
      throw locError(
        opts.location,
        `source ${JSON.stringify(raw)}: ${JSON.stringify(pivotRaw || ".")} is not a directory in ${opts.rootName}`,
      );
    pivots = [pivot];
  }
  let include: PatternMatcher | undefined;
  if (pattern !== "") {
    try {
      include = PatternMatcher.parse([pattern]);
    } catch (e) {
      throw locError(opts.location, `invalid source pattern ${JSON.stringify(raw)}: ${(e as Error).message}`);
    }
  }
  let pickedAny = false;
  for (const pivot of pivots) {
    const all = await walkTree(view, pivot, opts.statCache, excludeFilter(exclude, pivot));
    matches.push({ rel: pivot, real: pivot, type: "dir", keep: "" });
    if (!include) {
      for (const e of all) add(e);
      pickedAny = true;
      continue;
    }
    const prefix = pivot === "" ? "" : pivot + "/";
    const picked = all.filter((e) => include.matches(e.relPath.slice(prefix.length)));
    if (picked.length) pickedAny = true;
    // Keep the directories leading to each picked path.
    const keepDirs = new Set<string>();
    for (const e of picked) {
      let d = path.posix.dirname(e.relPath);
      while (d !== "." && d.length >= prefix.length && d + "/" !== prefix && d !== pivot) {
        keepDirs.add(d);
        d = path.posix.dirname(d);
      }
    }
    const byRel = new Map(all.map((e) => [e.relPath, e]));
    for (const d of keepDirs) {
      const e = byRel.get(d);
      if (e) add(e);
    }
    for (const e of picked) add(e);
  }
  // BuildKit requires the path to exist only when neither part has a wildcard.
  if (!pickedAny && include && !globPivot && !pattern.split("/").some(hasWildcard)) {
    throw locError(opts.location, `source ${JSON.stringify(raw)} not found in ${opts.rootName}`);
  }
}
