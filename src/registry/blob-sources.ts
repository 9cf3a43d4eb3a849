/**
 * A small record of where blobs were seen in registries, so a push can mount a blob from another repository of
 * the same registry instead of uploading it (`POST …/blobs/uploads/?mount=<digest>&from=<repo>`).
 *
 * One file per blob: `<store root>/registry-sources/<hex[0:2]>/<hex>.json` holding a JSON array of
 * `"<registry>/<repository>"` strings, most recent first, at most 8. Written by pulls and pushes, best effort (a
 * failure to record never fails the pull or push). It holds no credentials; deleting the folder only loses mounts.
 */
import { promises as fsp } from "node:fs";
import type { WorkSpace } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { writeFileAtomic } from "../util/fs.js";

const MAX_SOURCES = 8;

export interface BlobSource {
  registry: string;
  repository: string;
}

function sourceFile(store: Pick<WorkSpace, "layout">, digest: Digest): string {
  return store.layout.registrySourcesFile(digest);
}

async function readSources(file: string): Promise<string[]> {
  try {
    const parsed = JSON.parse(await fsp.readFile(file, "utf8")) as unknown;
    return Array.isArray(parsed) ? parsed.filter((s): s is string => typeof s === "string" && s.includes("/")) : [];
  } catch {
    return [];
  }
}

/** The registries/repositories `digest` was last seen in, most recent first. */
export async function blobSources(store: Pick<WorkSpace, "layout">, digest: Digest): Promise<BlobSource[]> {
  return (await readSources(sourceFile(store, digest))).map((s) => {
    const slash = s.indexOf("/");
    return { registry: s.slice(0, slash), repository: s.slice(slash + 1) };
  });
}

/** Notes that each of `digests` exists in `registry/repository` (best effort; never throws). */
export async function recordBlobSources(
  store: Pick<WorkSpace, "layout">,
  digests: Iterable<Digest>,
  registry: string,
  repository: string,
): Promise<void> {
  const entry = `${registry}/${repository}`;
  for (const digest of new Set(digests)) {
    try {
      const file = sourceFile(store, digest);
      const current = await readSources(file);
      if (current[0] === entry) continue;
      const next = [entry, ...current.filter((s) => s !== entry)].slice(0, MAX_SOURCES);
      await writeFileAtomic(file, JSON.stringify(next));
    } catch {
      // only an optimisation for later pushes
    }
  }
}
