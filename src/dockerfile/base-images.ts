/**
 * The configs of the registry images a Dockerfile starts FROM (Env, WorkingDir, OnBuild), read before the definition
 * is made so that expansion sees a base's ENV and its ONBUILD triggers run (`DockerfileStepOptions.baseImages`).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import type { BaseImageInfo } from "./plan-stages.js";
import { planDockerfile } from "./plan-stages.js";
import type { DockerfileStepOptions } from "./stage-chain.js";
import { displayName, namedContexts } from "./to-plan.js";

/**
 * The configs of the registry images a Dockerfile's needed stages start FROM, for {@link DockerfileStepOptions.baseImages}:
 * each is pulled into `store` (the build needs its layers anyway), or, without a store (a client of a build service,
 * which pulls the layers itself), only its manifest and config are fetched. Call before `Image.fromDockerfile`.
 */
export async function resolveBaseImages(
  dockerfile: string,
  opts: Pick<DockerfileStepOptions, "buildArgs" | "target" | "buildContexts"> & {
    store?: Parameters<typeof import("../registry/pull.js").pullImage>[1];
    insecure?: boolean;
    /** Where the reads may connect, and the registry mirrors to read through (default: the process's policy). */
    fetchPolicy?: import("../registry/client.js").RegistryOptions["fetchPolicy"];
  },
): Promise<Record<string, BaseImageInfo>> {
  const text = readFileSync(path.resolve(dockerfile), "utf8");
  // Parsed (and directories checked) before any image is fetched: a mistyped context fails first, not a pull.
  const named = namedContexts(opts.buildContexts)?.specs;
  const { pullImage } = await import("../registry/pull.js");
  const { openLazyImage } = await import("../registry/estargz/lazy.js");
  const out: Record<string, BaseImageInfo> = {};
  // A base's ONBUILD triggers may need stages the Dockerfile itself does not (`ONBUILD RUN --mount=from=inputstage`),
  // whose bases need resolving in turn: plan again with what is known until no needed base is missing.
  for (;;) {
    const plan = planDockerfile(text, {
      file: displayName(dockerfile),
      buildArgs: opts.buildArgs,
      target: opts.target,
      baseImage: (ref) => out[ref],
      ...(named ? { namedContexts: named } : {}),
    });
    const refs = new Set<string>();
    for (const i of plan.buildOrder) {
      const b = plan.stages[i]!.base;
      const ref = b.kind === "image" ? b.ref : b.kind === "context" && b.context.kind === "image" ? b.context.ref : "";
      // A named image context's config applies to a stage FROM it, as an image's does.
      if (ref && !Object.hasOwn(out, ref)) refs.add(ref);
    }
    if (refs.size === 0) return out;
    for (const ref of refs) {
      const store = opts.store;
      const registry = { insecure: opts.insecure, ...(opts.fetchPolicy ? { fetchPolicy: opts.fetchPolicy } : {}) };
      const image = store
        ? (await pullImage(ref, store, registry)).config
        : (await openLazyImage(ref, registry)).config;
      const c = image.config as { Env?: string[]; WorkingDir?: string; OnBuild?: string[] | null };
      out[ref] = {
        ...(c.Env ? { env: c.Env } : {}),
        ...(c.WorkingDir ? { workingDir: c.WorkingDir } : {}),
        ...(c.OnBuild?.length ? { onBuild: c.OnBuild } : {}),
      };
    }
  }
}
