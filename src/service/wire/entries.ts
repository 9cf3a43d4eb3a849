/**
 * Walked entries on the wire: the checks a tree's entry list must pass (relative paths without `.`/`..`, each path
 * once, parents that are directories), its canonical order, and the directories a server adds to hold a selection.
 * Pure functions over plain values, used by the schema (`schema.ts`) and the server's decoder.
 */
import { DIGEST_RE, LIMITS, MAX_MTIME_MS } from "./limits.js";

/** Why `s` is not a relative entry path (`/`-separated, no empty, `.` or `..` segment, not absolute); undefined if it is one. */
export function relPathProblem(s: string): string | undefined {
  if (s === "") return "empty path";
  if (s.startsWith("/")) return `path ${JSON.stringify(s)} is absolute; entry paths are relative to their input`;
  for (const seg of s.split("/")) {
    if (seg === "..") return `path ${JSON.stringify(s)} contains ".."`;
    if (seg === "" || seg === ".") return `path ${JSON.stringify(s)} has an empty or "." segment`;
  }
  return undefined;
}

const ENTRY_FIELDS = new Set(["path", "type", "mode", "uid", "gid", "size", "digest", "target", "mtimeMs"]);
const isInt = (v: unknown, min: number, max: number): boolean =>
  typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
const isPathString = (v: unknown): v is string =>
  typeof v === "string" && v.length <= LIMITS.pathBytes && !v.includes("\0");

/**
 * Whether `v` is a valid entry by the schema's rules (`EntrySchema` in schema.ts: the declaration, with the messages),
 * checked without building anything: the schema's fast path for long entry lists, where a zod parse of every entry
 * would cost twice the time. Anything this refuses is parsed by the schema, which names the problem; a test holds the
 * two to the same answers.
 */
export function isValidEntry(v: unknown): boolean {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  for (const k in v) if (!ENTRY_FIELDS.has(k)) return false;
  const e = v as Record<string, unknown>;
  if (!isPathString(e.path) || relPathProblem(e.path) !== undefined) return false;
  if (!isInt(e.mode, 0, 0o7777) || !isInt(e.uid, 0, 0xfffffffe) || !isInt(e.gid, 0, 0xfffffffe)) return false;
  if (e.mtimeMs !== undefined && !(typeof e.mtimeMs === "number" && e.mtimeMs >= 0 && e.mtimeMs <= MAX_MTIME_MS))
    return false;
  switch (e.type) {
    case "file":
      return (
        isInt(e.size, 0, Number.MAX_SAFE_INTEGER) &&
        typeof e.digest === "string" &&
        DIGEST_RE.test(e.digest) &&
        e.target === undefined
      );
    case "symlink":
      return isPathString(e.target) && e.target !== "" && e.size === undefined && e.digest === undefined;
    case "dir":
      return e.size === undefined && e.digest === undefined && e.target === undefined;
    default:
      return false;
  }
}

/** The fields of an entry the tree checks read. */
interface EntryLike {
  path: string;
  type: "file" | "dir" | "symlink";
}

/** The first path listed twice, with the type of every path. */
function typesOf(list: readonly EntryLike[]): { types: Map<string, EntryLike["type"]>; twice?: string } {
  const types = new Map<string, EntryLike["type"]>();
  for (const e of list) {
    if (types.has(e.path)) return { types, twice: e.path };
    types.set(e.path, e.type);
  }
  return { types };
}

/** Why `list` is not a whole tree (each path once, every parent listed as a directory); undefined if it is one. */
export function treeProblem(list: readonly EntryLike[]): string | undefined {
  const { types, twice } = typesOf(list);
  if (twice !== undefined) return `path ${JSON.stringify(twice)} is listed twice`;
  for (const e of list) {
    const slash = e.path.lastIndexOf("/");
    if (slash < 0) continue;
    const parent = e.path.slice(0, slash);
    if (types.get(parent) !== "dir")
      return `the parent directory ${JSON.stringify(parent)} of ${JSON.stringify(e.path)} is not listed as a directory`;
  }
  return undefined;
}

/**
 * Why `list` is not a selection (each path once; a listed ancestor of a path is a directory; ancestors need not be
 * listed, a glob's matches come without their parents); undefined if it is one.
 */
export function selectionProblem(list: readonly EntryLike[]): string | undefined {
  const { types, twice } = typesOf(list);
  if (twice !== undefined) return `path ${JSON.stringify(twice)} is listed twice`;
  for (const e of list) {
    for (let slash = e.path.lastIndexOf("/"); slash > 0; slash = e.path.lastIndexOf("/", slash - 1)) {
      const t = types.get(e.path.slice(0, slash));
      if (t !== undefined && t !== "dir")
        return `${JSON.stringify(e.path)} is below ${JSON.stringify(e.path.slice(0, slash))}, which is a ${t}, not a directory`;
    }
  }
  return undefined;
}

/** Entries sorted bytewise by path (the order a context walk produces). */
export function sortEntries<T extends { path: string }>(list: readonly T[]): T[] {
  return list
    .map((e) => ({ k: Buffer.from(e.path, "utf8"), e }))
    .sort((a, b) => Buffer.compare(a.k, b.k))
    .map((x) => x.e);
}

/** The parent directories of `entries` that are not listed themselves (the server makes them to hold the tree). */
export function unlistedParents(entries: readonly { path: string }[]): string[] {
  const listed = new Set(entries.map((e) => e.path));
  const out = new Set<string>();
  for (const e of entries) {
    for (let slash = e.path.lastIndexOf("/"); slash > 0; slash = e.path.lastIndexOf("/", slash - 1)) {
      const p = e.path.slice(0, slash);
      if (!listed.has(p)) out.add(p);
    }
  }
  return [...out].sort();
}

/** Whether `p` is below `dir` ("" is the root, above everything). */
export const under = (p: string, dir: string): boolean => dir === "" || p.startsWith(dir + "/");
