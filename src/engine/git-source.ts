/**
 * Git sources (`ADD https://host/repo.git#ref:subdir`, git build contexts): resolves the ref to a commit, fetches
 * that commit (depth 1) with Debian's `git`, and keeps one checkout per (remote, commit, keep-git-dir) in the store's
 * downloads, so an unchanged ref costs one `ls-remote`. As BuildKit: `.git` is dropped unless keep-git-dir, files are
 * 0644 or 0755 as git checks them out, a `checksum` must prefix the commit.
 *
 * Every connection goes through the build's fetch policy: the remote's host is resolved and checked here, and git is
 * pinned to the checked address (curl's resolve list for http(s), the address itself for git://), with redirects off,
 * no proxy, no user or system git config (no `insteadOf` rewrites) and only the http, https and git transports
 * (never `ext::`). Submodules are not fetched: their URLs would reach hosts the policy never checked. SSH URLs are
 * refused (Strata forwards no SSH agent).
 */
import { createHash, randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { GitRef } from "../plan/git-url.js";
import { StrataError } from "../errors.js";
import type { FetchPolicy } from "../net/fetch-policy.js";

/** Fetching a git source failed (unreachable, no such ref, checksum mismatch, git missing). */
export class GitFetchError extends StrataError {
  override readonly code = "GIT_FETCH";
  override readonly fault = "user";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "GitFetchError";
  }
}

export interface GitCheckout {
  /** The resolved commit id (40 hex digits in a sha1 repository, 64 in a sha256 one). */
  commit: string;
  /** The checkout's root directory (the repository's, not the subdir's). */
  root: string;
  /** The directory the source names: the root, or its subdirectory. */
  dir: string;
}

export interface GitFetchOptions {
  /** Where checkouts are kept (a directory of the store's downloads). */
  cacheDir: string;
  policy: FetchPolicy;
  /** Overrides the URL's keep-git-dir (ADD --keep-git-dir). */
  keepGitDir?: boolean;
  /** Overrides the URL's checksum (ADD --checksum). */
  checksum?: string;
  /** Abort after this long (default 10 minutes). */
  timeoutMs?: number;
}

const TRANSPORTS = "http:https:git";

/** Resolves and checks out a git source (see the module comment). */
export async function fetchGit(ref: GitRef, opts: GitFetchOptions): Promise<GitCheckout> {
  const where = `git source ${ref.remote}${ref.ref ? `#${ref.ref}` : ""}`;
  if (ref.scheme === "ssh")
    throw new GitFetchError(
      `${where}: SSH git URLs are not supported (Strata forwards no SSH agent into builds); use an https:// or git:// URL`,
    );
  if (ref.submodules === true)
    throw new GitFetchError(
      `${where}: submodules are not fetched (their URLs would bypass the fetch policy); vendor them or add them separately`,
    );
  const pinned = await pinRemote(ref, opts.policy);
  const run = gitRunner(pinned.config, opts.timeoutMs ?? 600_000, where);
  const { commit, format } = await resolveCommit(run, pinned.url, ref.ref, where);
  const checksum = opts.checksum ?? ref.checksum;
  if (checksum !== undefined && !commit.startsWith(checksum))
    throw new GitFetchError(`${where}: expected checksum to match ${checksum}, got ${commit}`);
  const keep = opts.keepGitDir ?? ref.keepGitDir ?? false;
  const name = createHash("sha256")
    .update(JSON.stringify([ref.remote, commit, keep]))
    .digest("hex");
  const root = path.join(opts.cacheDir, name);
  if (!(await isDir(root))) await checkout(run, pinned.url, ref, { commit, format }, keep, root, opts.cacheDir, where);
  const dir = ref.subdir ? path.join(root, ref.subdir) : root;
  if (ref.subdir) {
    const real = await fsp.realpath(dir).catch(() => undefined);
    if (!real || !(await isDir(real)) || (real !== root && !real.startsWith(root + path.sep)))
      throw new GitFetchError(
        `${where}: subdirectory ${ref.subdir} does not exist at ${commit} (or leaves the repository)`,
      );
  }
  return { commit, root, dir };
}

async function isDir(p: string): Promise<boolean> {
  return (await fsp.stat(p).catch(() => undefined))?.isDirectory() ?? false;
}

/** The URL git uses and the `-c` options that pin it to the address the policy checked. */
async function pinRemote(ref: GitRef, policy: FetchPolicy): Promise<{ url: string; config: string[] }> {
  const u = new URL(ref.remote);
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = u.port ? Number(u.port) : ref.scheme === "https" ? 443 : ref.scheme === "http" ? 80 : 9418;
  const address = await policy.address(host, port);
  const config = ["-c", "http.followRedirects=false", "-c", "protocol.version=2"];
  if (ref.scheme === "git") {
    // The git protocol's host line is informational; connecting to the address itself is what pins it.
    u.hostname = address.includes(":") ? `[${address}]` : address;
    return { url: u.toString(), config };
  }
  const addr = address.includes(":") ? `[${address}]` : address;
  config.push("-c", `http.curloptResolve=${host}:${port}:${addr}`);
  return { url: ref.remote, config };
}

type GitRun = (args: string[], cwd?: string) => Promise<string>;

function gitRunner(config: string[], timeoutMs: number, where: string): GitRun {
  return async (args, cwd) => {
    const { execa } = await import("execa");
    const env: Record<string, string> = {
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_ALLOW_PROTOCOL: TRANSPORTS,
      GIT_TERMINAL_PROMPT: "0",
      GIT_ASKPASS: "/bin/false",
      HOME: "/nonexistent",
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      LC_ALL: "C",
    };
    const r = await execa("git", [...config, ...args], {
      cwd,
      env,
      extendEnv: false,
      reject: false,
      timeout: timeoutMs,
      stdin: "ignore",
    }).catch((e: unknown) => {
      throw new GitFetchError(`${where}: cannot run git (${(e as Error).message}); install Debian's git`, { cause: e });
    });
    if (r.exitCode !== 0) {
      const why = r.timedOut
        ? `timed out after ${timeoutMs / 1000}s`
        : String(r.stderr).trim().split("\n").slice(-3).join("; ");
      throw new GitFetchError(`${where}: git ${args[0]} failed: ${why}`);
    }
    return String(r.stdout);
  };
}

/** A repository's object format, told by the length of its object ids. */
type ObjectFormat = "sha1" | "sha256";

const FULL_ID = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

function formatOf(id: string): ObjectFormat {
  return id.length === 64 ? "sha256" : "sha1";
}

/**
 * The commit a ref names on the remote: HEAD for "", a branch, a tag (peeled), a full ref, or a full commit id; and the
 * remote's object format (a full sha256 id names it; else the ids `ls-remote` lists do).
 */
async function resolveCommit(
  run: GitRun,
  url: string,
  ref: string,
  where: string,
): Promise<{ commit: string; format: ObjectFormat }> {
  // A full id is used as is; for a sha1 one, HEAD's listing tells the format (it cannot be a sha256 repository's).
  if (/^[0-9a-f]{64}$/.test(ref)) return { commit: ref, format: "sha256" };
  // The peeled pattern lists an annotated tag's commit (`refs/tags/v1^{}`), which a plain pattern leaves out.
  const byId = /^[0-9a-f]{40}$/.test(ref);
  const out = await run(["ls-remote", "--", url, ...(ref && !byId ? [ref, `${ref}^{}`] : ["HEAD"])]);
  const refs = new Map<string, string>();
  for (const line of out.split("\n")) {
    const [sha, name] = line.split("\t");
    if (sha && name) refs.set(name, sha);
  }
  const anyId = [...refs.values()][0];
  if (byId) return { commit: ref, format: anyId ? formatOf(anyId) : "sha1" };
  // A tag's peeled entry (^{}) names its commit; tags before branches, as git's own ref lookup.
  const order = !ref
    ? ["HEAD"]
    : ref.startsWith("refs/")
      ? [`${ref}^{}`, ref]
      : [`refs/tags/${ref}^{}`, `refs/tags/${ref}`, `refs/heads/${ref}`, ref];
  for (const c of order) {
    const sha = refs.get(c);
    if (sha) return { commit: sha, format: formatOf(sha) };
  }
  // BuildKit's wording ("repository does not contain ref"), so scripts matching it keep working.
  if (/^[0-9a-f]{4,39}$/.test(ref))
    throw new GitFetchError(
      `${where}: repository does not contain ref ${ref}: it is no branch or tag; give a commit id in full (40 or 64 hex digits)`,
    );
  throw new GitFetchError(
    `${where}: repository does not contain ref ${ref || "HEAD"}: the remote has no branch or tag ${JSON.stringify(ref || "HEAD")}`,
  );
}

async function checkout(
  run: GitRun,
  url: string,
  ref: GitRef,
  id: { commit: string; format: ObjectFormat },
  keep: boolean,
  root: string,
  cacheDir: string,
  where: string,
): Promise<void> {
  const { commit, format } = id;
  await fsp.mkdir(cacheDir, { recursive: true });
  const tmp = path.join(cacheDir, `.tmp-${randomBytes(6).toString("hex")}`);
  try {
    await fsp.mkdir(tmp);
    // The client repository's object format must be the remote's, or git refuses to fetch ("mismatched algorithms").
    await run(["init", "-q", `--object-format=${format}`, "."], tmp);
    // By commit id first (protocol v2 serves any commit); a server that refuses gets the ref by name instead.
    const byName = ref.ref && !FULL_ID.test(ref.ref) ? ref.ref : "HEAD";
    await run(["fetch", "-q", "--depth=1", "--no-tags", "--", url, commit], tmp).catch(async () => {
      await run(["fetch", "-q", "--depth=1", "--no-tags", "--", url, byName], tmp);
    });
    const fetched = (await run(["rev-parse", "FETCH_HEAD^{commit}"], tmp)).trim();
    if (fetched !== commit)
      throw new GitFetchError(
        `${where}: the remote moved while fetching (${commit} resolved, ${fetched} fetched); retry`,
      );
    await run(["checkout", "-q", "--detach", commit], tmp);
    if (keep) {
      await run(["remote", "add", "origin", ref.remote], tmp);
    } else {
      await fsp.rm(path.join(tmp, ".git"), { recursive: true, force: true });
    }
    await fsp.rename(tmp, root).catch(async (e: NodeJS.ErrnoException) => {
      // Another build checked out the same commit first: theirs is as good.
      if (e.code !== "ENOTEMPTY" && e.code !== "EEXIST") throw e;
    });
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}
