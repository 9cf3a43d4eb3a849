/** Runs a built image's command in a throwaway container (`strata run`). */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { mountOverlay, unmountOverlay } from "../layer/overlay.js";
import type { ImageConfig } from "../oci/types.js";
import { RuncExecutor, reapStaleContainers } from "../sandbox/runc.js";
import type { NetworkMode } from "../sandbox/runtime-spec.js";
import { resolveUser } from "../sandbox/user.js";
import { layerDirs, type ImageRecord, type BlobStore, type LayerDirStore, type WorkSpace } from "../store/store.js";
import { DEFAULT_PATH, envMap } from "./config.js";
import { InvalidDefinitionError } from "../errors.js";

export interface RunImageOptions {
  /** Replaces the image's CMD (Docker semantics: ENTRYPOINT + args). */
  args?: string[];
  env?: Record<string, string>;
  /** Default: the executor's (a sandboxed network with egress); `host` needs the network.host entitlement. */
  network?: NetworkMode;
  stdout?: (chunk: Buffer) => void;
  stderr?: (chunk: Buffer) => void;
  /** Stops the container (killed; its exit code is returned) when it fires. */
  signal?: AbortSignal;
  /**
   * `strata run -i` (`stdin`: the container reads this process's stdin) and `-t` (`tty`: a pseudo-terminal joined to
   * this process's terminal, TERM set from it unless the image sets one). Default: neither.
   */
  interactive?: { stdin: boolean; tty: boolean };
}

/** The argv Docker would run: ENTRYPOINT + (args or CMD). */
export function commandLine(config: ImageConfig["config"], args: string[] | undefined): string[] {
  const entry = config.Entrypoint ?? [];
  const cmd = args?.length ? args : (config.Cmd ?? []);
  return [...entry, ...cmd];
}

export async function runImage(
  store: BlobStore & LayerDirStore & WorkSpace,
  image: ImageRecord,
  opts: RunImageOptions = {},
): Promise<number> {
  await store.recover(reapStaleContainers);
  const config = JSON.parse((await store.readBlob(image.configDigest)).toString()) as ImageConfig;
  let argv = commandLine(config.config, opts.args);
  // An interactive shell by default, as `modal shell` opens one (an image without a command has nothing else to run).
  if (argv.length === 0 && opts.interactive?.tty) argv = ["/bin/sh"];
  if (argv.length === 0)
    throw new InvalidDefinitionError(
      `image ${image.id} has no ENTRYPOINT or CMD; give a command: strata run <image> -- <cmd...>`,
    );
  const work = await store.tempDir("run");
  const lowers: string[] = [];
  const unpin = store.pin?.(image.layers);
  lowers.push(...(await layerDirs(store, image.layers)));
  const dirs = await mountOverlay(work, lowers);
  try {
    const user = await resolveUser(dirs.merged, config.config.User);
    const env = envMap(config.config.Env);
    if (!env.has("PATH")) env.set("PATH", DEFAULT_PATH);
    if (!env.has("HOME")) env.set("HOME", user.home || "/root");
    if (opts.interactive?.tty && !env.has("TERM")) env.set("TERM", process.env.TERM || "xterm");
    for (const [k, v] of Object.entries(opts.env ?? {})) env.set(k, v);
    const cwd = config.config.WorkingDir || "/";
    await fsp.mkdir(path.join(dirs.merged, cwd), { recursive: true });
    const r = await new RuncExecutor().run(
      {
        rootfs: dirs.merged,
        argv,
        env: [...env].map(([k, v]) => `${k}=${v}`),
        cwd,
        uid: user.uid,
        gid: user.gid,
        additionalGids: user.additionalGids,
        mounts: [],
        ...(opts.network ? { network: opts.network } : {}),
        hostname: "strata",
        overlayDir: work,
        ...(opts.interactive?.tty ? { terminal: true } : {}),
      },
      {
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.interactive ? { interactive: opts.interactive } : {}),
        onData: (chunk, s) =>
          s === "stdout"
            ? (opts.stdout ?? ((x: Buffer) => process.stdout.write(x)))(chunk)
            : (opts.stderr ?? ((x: Buffer) => process.stderr.write(x)))(chunk),
      },
    );
    return r.exitCode;
  } finally {
    unpin?.();
    await unmountOverlay(dirs).catch(() => undefined);
    await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
}
