/**
 * `strata build` against a build server (STRATA_SERVER): the client side of the build service. The implementation
 * lives in `src/service/client.ts` (the SDK's `image.build()` uses it too); this module adds what the CLI needs.
 */
import path from "node:path";
import type { LogSink } from "../engine/log.js";
import { remoteBuild, type RemoteBuiltImage } from "../service/client.js";

export { remoteBuild, remoteServerFromEnv, RemoteBuildError, type RemoteBuildOptions, type RemoteBuiltImage } from "../service/client.js";

/**
 * Loads a definition file and builds its Image on `server`, as `strata build` does locally: same chain name, same
 * flags, progress on stderr. The definition is compiled into `<STRATA_HOME>/defs` without opening a store (the
 * client needs none: no S3 credentials, no store directories).
 */
export async function remoteBuildDefinition(
  file: string,
  opts: { server: string; token?: string; exportName?: string; forceBuild?: boolean; ignoreCache?: boolean; builderVersion?: string; log?: LogSink },
): Promise<RemoteBuiltImage> {
  const { StoreLayout } = await import("../store/layout.js");
  const { loadDefinition } = await import("../load/definition.js");
  const image = await loadDefinition(file, StoreLayout.default().definitionsDir, opts.exportName);
  return remoteBuild(image, {
    server: opts.server,
    ...(opts.token ? { token: opts.token } : {}),
    forceBuild: opts.forceBuild,
    ignoreCache: opts.ignoreCache,
    builderVersion: opts.builderVersion,
    chainName: `${path.resolve(file)}#${opts.exportName ?? "default"}`,
    log: opts.log ?? ((l) => process.stderr.write(l + "\n")),
  });
}
