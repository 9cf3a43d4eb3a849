/**
 * Git source URLs as BuildKit reads them (`dfgitutil.ParseGitRef`, `gitutil.ParseURL`): `https://host/repo.git#ref:subdir`,
 * `git://host/repo#ref`, `ssh://…`, `git@host:repo.git`, with the query options `ref`, `tag`, `branch`, `subdir`,
 * `checksum`/`commit`, `keep-git-dir` and `submodules`. An http(s) URL is a git source only when its path ends in
 * `.git`. Pure: no I/O.
 */
import { InvalidDefinitionError } from "../errors.js";

/** A parsed git source. */
export interface GitRef {
  /** The URL git fetches (no fragment, no query). */
  readonly remote: string;
  readonly scheme: "http" | "https" | "git" | "ssh";
  /** Commit, tag or branch name; "" for the remote's default branch (HEAD). */
  readonly ref: string;
  /** A directory inside the repository ("" for its root), cleaned: no leading '/', no '..'. */
  readonly subdir: string;
  /** A commit id (or prefix) the resolved commit must match. */
  readonly checksum?: string;
  readonly keepGitDir?: boolean;
  readonly submodules?: boolean;
}

const PROTO = /^([a-zA-Z0-9]+):\/\//;
const SCP = /^([a-zA-Z0-9._-]+@)?([a-zA-Z0-9.-]+):(?!\/\/)(.+)$/;

/** Whether `s` is a git source URL (BuildKit's detection; a git@ SCP-style address counts). */
export function isGitUrl(s: string): boolean {
  try {
    return parseGitRef(s) !== undefined;
  } catch {
    return true; // a git URL with a bad option is still a git URL (parseGitRef says what is wrong)
  }
}

/**
 * Parses a git source; undefined when `s` is no git URL (a plain http(s) URL, a path). Throws
 * {@link InvalidDefinitionError} for a git URL with bad options (unknown query key, conflicting refs).
 */
export function parseGitRef(s: string): GitRef | undefined {
  const proto = PROTO.exec(s);
  let scheme: GitRef["scheme"];
  let remote: string;
  let fragment = "";
  let query = "";
  if (proto) {
    const p = proto[1]!.toLowerCase();
    if (p !== "http" && p !== "https" && p !== "git" && p !== "ssh") return undefined;
    scheme = p;
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      return undefined;
    }
    fragment = decodeURIComponent(u.hash.replace(/^#/, ""));
    query = u.search;
    if ((scheme === "http" || scheme === "https") && !u.pathname.endsWith(".git")) return undefined;
    u.hash = "";
    u.search = "";
    remote = u.toString();
  } else {
    if (!s.startsWith("git@") && !/^[a-zA-Z0-9._-]+@[a-zA-Z0-9.-]+:/.test(s)) return undefined;
    const hash = s.indexOf("#");
    const main = hash >= 0 ? s.slice(0, hash) : s;
    fragment = hash >= 0 ? s.slice(hash + 1) : "";
    const q = main.indexOf("?");
    const addr = q >= 0 ? main.slice(0, q) : main;
    query = q >= 0 ? main.slice(q) : "";
    if (!SCP.test(addr)) return undefined;
    scheme = "ssh";
    remote = addr;
  }
  const colon = fragment.indexOf(":");
  let ref = colon >= 0 ? fragment.slice(0, colon) : fragment;
  let subdir = colon >= 0 ? cleanSubdir(fragment.slice(colon + 1)) : "";
  let checksum: string | undefined;
  let keepGitDir: boolean | undefined;
  let submodules: boolean | undefined;
  let tag = "";
  let branch = "";
  const bad = (why: string): never => {
    throw new InvalidDefinitionError(`git URL ${s}: ${why}`);
  };
  const seen = new Set<string>();
  for (const [k, v] of new URLSearchParams(query)) {
    if (seen.has(k)) bad(`query ${JSON.stringify(k)} has multiple values`);
    seen.add(k);
    const bool = (): boolean => {
      if (v === "" || v === "1" || v === "true") return true;
      if (v === "0" || v === "false") return false;
      return bad(`invalid ${k} value ${JSON.stringify(v)} (true or false)`);
    };
    switch (k) {
      case "ref":
        if (ref !== "" && ref !== v) bad(`ref conflicts: ${JSON.stringify(ref)} vs ${JSON.stringify(v)}`);
        ref = v;
        break;
      case "tag":
        tag = v.startsWith("refs/tags/") ? v : `refs/tags/${v}`;
        break;
      case "branch":
        branch = v.startsWith("refs/heads/") ? v : `refs/heads/${v}`;
        break;
      case "subdir": {
        const sd = cleanSubdir(v);
        if (subdir !== "" && subdir !== sd) bad(`subdir conflicts: ${JSON.stringify(subdir)} vs ${JSON.stringify(sd)}`);
        subdir = sd;
        break;
      }
      case "checksum":
      case "commit":
        checksum = v;
        break;
      case "keep-git-dir":
        keepGitDir = bool();
        break;
      case "submodules":
        submodules = bool();
        break;
      default:
        bad(`unexpected query ${JSON.stringify(k)} (ref, tag, branch, subdir, checksum, keep-git-dir, submodules)`);
    }
    if (v === "" && !["keep-git-dir", "submodules"].includes(k)) bad(`query ${JSON.stringify(k)} has no value`);
  }
  if (tag !== "") {
    if (ref !== "" && ref !== tag) bad(`ref conflicts: ${JSON.stringify(ref)} vs ${JSON.stringify(tag)}`);
    ref = tag;
  }
  if (branch !== "") {
    if (tag !== "") bad("branch conflicts with tag");
    if (ref !== "" && ref !== branch) bad(`ref conflicts: ${JSON.stringify(ref)} vs ${JSON.stringify(branch)}`);
    ref = branch;
  }
  if (checksum !== undefined && !/^[0-9a-f]{4,64}$/.test(checksum))
    bad(
      `invalid checksum ${JSON.stringify(checksum)}: expected hex commit hash (a commit id or its prefix, at least 4 digits)`,
    );
  if (ref.startsWith("-")) bad(`ref ${JSON.stringify(ref)} may not start with '-'`);
  if (/[\0\s~^:?*[\\]|\.\.|@\{/.test(ref)) bad(`ref ${JSON.stringify(ref)} is not a valid git ref name`);
  return {
    remote,
    scheme,
    ref,
    subdir,
    ...(checksum !== undefined ? { checksum } : {}),
    ...(keepGitDir !== undefined ? { keepGitDir } : {}),
    ...(submodules !== undefined ? { submodules } : {}),
  };
}

/** `path.Join("/", subdir)` without the leading '/': `..` cannot climb above the repository root. */
function cleanSubdir(p: string): string {
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return out.join("/");
}
