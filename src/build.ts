/**
 * Where a plan is built: on the build service named by STRATA_SERVER, else locally by the engine with the store from
 * the environment. The one place that reads STRATA_SERVER; `Image.build()` and `strata build` both come through here.
 */
import type { BuildOptions, BuiltImage } from "./engine/build.js";
import { ConfigError, NeedsRootError } from "./errors.js";
import type { Plan } from "./plan/step.js";
import type { NameStore } from "./store/store.js";
import { parseImageName } from "./util/image-name.js";

export type { BuildOptions, BuiltImage, StepResult } from "./engine/build.js";
export type { Plan, SecretValues } from "./plan/step.js";

/** The build service to build on (STRATA_SERVER, with STRATA_TOKEN), or undefined when builds are local. */
export function remoteServerFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): { server: string; token?: string } | undefined {
  const server = env.STRATA_SERVER?.trim();
  if (!server) return undefined;
  return { server, ...(env.STRATA_TOKEN ? { token: env.STRATA_TOKEN } : {}) };
}

/** How {@link build} builds: the engine's options (secrets, store, cache flags, log, …) and where. */
export interface BuildParams extends BuildOptions {
  /** The build service to build on. Default: STRATA_SERVER (with STRATA_TOKEN) unless `store` is given. */
  remote?: { server: string; token?: string };
  /**
   * Names (`NAME[:TAG]`, tag `latest` by default) to give the built image where it was built: the store, or the
   * service (the caller's tenant). Checked before the build starts. Default: none.
   */
  tag?: string | readonly string[];
}

/**
 * Builds `plan` with the secret values `options.secrets`: on a build service (`remote`, else STRATA_SERVER when no
 * store is given: a given store means a local build), else with the local engine (default store: S3 when
 * STRATA_S3_BUCKET is set, else a LocalStore at STRATA_HOME). A remote build takes the cache flags, log, chain name
 * and signal; the service applies its own executor and limits (STRATA_STEP_* ask it for some).
 */
export async function build(plan: Plan, params: BuildParams = {}): Promise<BuiltImage> {
  const { remote: given, tag, ...options } = params;
  const names = imageNames(tag);
  const remote = given ?? (options.store ? undefined : remoteServerFromEnv());
  const log = options.log ?? ((l: string) => process.stderr.write(l + "\n"));
  if (remote) {
    const built = await buildRemotely(plan, remote, options);
    if (names.length) {
      const { ServiceImages } = await import("./service/image-client.js");
      const images = new ServiceImages(remote.server, remote.token);
      try {
        for (const name of names) await images.tag(name, built.imageId);
      } finally {
        images.close();
      }
      log(`=> Named ${names.join(", ")} on the build server`);
    }
    return built;
  }
  // A caller's own executor may not need root (tests); the default runc sandbox and layer capture do.
  if (!options.executor) requireRootForLocalBuild();
  const { buildPlan } = await import("./engine/build.js");
  const built = await buildPlan(plan, options);
  if (names.length) {
    const store = options.store ?? (await (await import("./store/s3/open.js")).openStoreFromEnv());
    if (!keepsNames(store))
      throw new ConfigError(
        "this build's store keeps no image names: build without `tag`, or with a LocalStore or S3Store",
      );
    for (const name of names)
      await store.putName({ name, imageId: built.imageId, createdAt: new Date().toISOString() });
    log(`=> Named ${names.join(", ")}`);
  }
  return built;
}

function keepsNames<S extends object>(store: S): store is S & NameStore {
  return typeof (store as Partial<NameStore>).putName === "function";
}

/** The normalised names of `tag` (checked: an InvalidImageNameError names the first bad one). */
function imageNames(tag: BuildParams["tag"]): string[] {
  if (tag === undefined) return [];
  const list: readonly unknown[] = typeof tag === "string" ? [tag] : Array.isArray(tag) ? tag : [tag];
  return [...new Set(list.map((t) => parseImageName(t as string).full))];
}

async function buildRemotely(
  plan: Plan,
  remote: { server: string; token?: string },
  options: BuildOptions,
): Promise<BuiltImage> {
  const { remoteBuild } = await import("./service/client.js");
  return remoteBuild(plan, {
    ...remote,
    ...(options.secrets ? { secrets: options.secrets } : {}),
    forceBuild: options.forceBuild,
    ignoreCache: options.ignoreCache,
    log: options.log,
    chainName: options.chainName,
    signal: options.signal,
  });
}

/**
 * Throws a {@link NeedsRootError} when this process is not root: a local build runs its steps in runc sandboxes and
 * records each file's owner in its layers, both of which need root. Called before any work (`strata build` calls it
 * before loading the definition), so a non-root user reads what to do, not a failing chown.
 */
export function requireRootForLocalBuild(uid: number | undefined = process.getuid?.()): void {
  if (uid === undefined || uid === 0) return;
  throw new NeedsRootError(
    uid,
    `local builds need root (they run steps in runc sandboxes and keep file owners in layers), and this process runs as uid ${uid}. ` +
      "Run it as root (e.g. sudo -E), or build on a strata build service: set STRATA_SERVER=http://host:port (and STRATA_TOKEN), " +
      "which builds there and needs no root here.",
  );
}

/** Whether {@link build} builds on a build service (then the caller needs no local store). */
export function buildsRemotely(options: Pick<BuildOptions, "store"> = {}): boolean {
  return !options.store && remoteServerFromEnv() !== undefined;
}
