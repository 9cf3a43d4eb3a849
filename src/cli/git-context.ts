/**
 * `strata build <git URL>`: a git repository as the main build context (BuildKit's git context,
 * `https://host/repo.git#ref:subdir`). The client checks it out once (through its fetch policy: `STRATA_FETCH_POLICY`)
 * and builds the checkout as it would a local directory, so its files are keyed by content and uploaded to a build
 * service like any context's; `-f` names a Dockerfile inside it (default `Dockerfile`).
 */
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { InvalidDefinitionError } from "../errors.js";
import { parseGitRef } from "../plan/git-url.js";
import type { Store } from "../store/store.js";

/** Whether a `strata build` positional is a git URL (and so a git context). */
export function isGitContext(arg: string): boolean {
  try {
    return parseGitRef(arg) !== undefined;
  } catch {
    return true;
  }
}

/**
 * Checks out a git context: into the store's downloads (kept, keyed by commit) for a local build, else into a temp
 * dir removed by `cleanup`. Returns the directory the URL names (its subdir, if any).
 */
export async function checkoutGitContext(
  url: string,
  store: Store | undefined,
): Promise<{ dir: string; commit: string; cleanup(): Promise<void> }> {
  const ref = parseGitRef(url);
  if (!ref) throw new InvalidDefinitionError(`${url} is not a git URL`);
  const { fetchGit } = await import("../engine/git-source.js");
  const { FetchPolicy } = await import("../net/fetch-policy.js");
  const tmp = store ? undefined : await fsp.mkdtemp(path.join(os.tmpdir(), "strata-git-context-"));
  const policy = FetchPolicy.fromEnv();
  try {
    const co = await fetchGit(ref, {
      cacheDir: store ? path.join(store.layout.downloadsDir, "git") : tmp!,
      policy,
    });
    return {
      dir: co.dir,
      commit: co.commit,
      cleanup: async () => {
        if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
      },
    };
  } catch (e) {
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
    throw e;
  }
  // The policy is the process's shared one (FetchPolicy.fromEnv): closing it here would destroy the connections the
  // build's own fetches (a registry FROM) use next, so it stays open.
}
