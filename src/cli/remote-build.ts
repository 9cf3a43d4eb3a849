/**
 * `strata build <definition>` against a build service: the definition is compiled into `<STRATA_HOME>/defs` without
 * opening a store (the client needs none: no S3 credentials, no store directories) and built through `src/build.ts`.
 */
import path from "node:path";
import type { LogSink } from "../engine/log.js";
import type { RemoteBuiltImage } from "../service/client.js";

export { remoteServerFromEnv } from "../build.js";
export { remoteBuild, RemoteBuildError, type RemoteBuildOptions, type RemoteBuiltImage } from "../service/client.js";

/**
 * Loads a definition file and builds its Image on a build service, as `strata build` does locally: same chain name,
 * same flags, progress on stderr. `server` (with `token`) names the service; default: STRATA_SERVER (STRATA_TOKEN).
 */
export async function remoteBuildDefinition(
  file: string,
  opts: {
    server?: string;
    token?: string;
    exportName?: string;
    forceBuild?: boolean;
    ignoreCache?: boolean;
    builderVersion?: string;
    /** The network of RUN steps that name none (`--network`), written into the plan. Default: the service's. */
    network?: "none" | "host";
    /** Names for the built image, given on the service. */
    tag?: string[];
    log?: LogSink;
  },
): Promise<RemoteBuiltImage> {
  const { StoreLayout } = await import("../store/layout.js");
  const { loadDefinition } = await import("../load/definition.js");
  const { build, remoteServerFromEnv } = await import("../build.js");
  const remote = opts.server
    ? { server: opts.server, ...(opts.token ? { token: opts.token } : {}) }
    : remoteServerFromEnv();
  if (!remote) throw new Error("remoteBuildDefinition: no build service (give server, or set STRATA_SERVER)");
  const image = await loadDefinition(file, StoreLayout.default().definitionsDir, opts.exportName);
  const plan = image.plan(opts.builderVersion);
  const { planWithNetwork } = await import("../plan/network.js");
  const built = await build(opts.network ? planWithNetwork(plan, opts.network) : plan, {
    remote,
    secrets: image.secretValues(),
    forceBuild: opts.forceBuild,
    ignoreCache: opts.ignoreCache,
    chainName: `${path.resolve(file)}#${opts.exportName ?? "default"}`,
    ...(opts.tag?.length ? { tag: opts.tag } : {}),
    log: opts.log ?? ((l) => process.stderr.write(l + "\n")),
  });
  return built as RemoteBuiltImage;
}
