/** Pure image-config and manifest construction from the previous config and a step's instructions. */
import type { Instruction } from "../plan/instructions.js";
import { render } from "../plan/instructions.js";
import { DEFAULT_SHELL } from "../oci/defaults.js";
import { MediaType, type ImageConfig, type Manifest, type RuntimeConfig } from "../oci/types.js";
import type { LayerRecord } from "../store/store.js";

export { DEFAULT_PATH, DEFAULT_SHELL } from "../oci/defaults.js";

export function emptyConfig(): ImageConfig {
  return { architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: [] }, history: [] };
}

/** Sets or replaces `K=V` in an env list, keeping order. */
export function setEnv(env: readonly string[], key: string, value: string): string[] {
  const out = env.filter((e) => !e.startsWith(`${key}=`));
  const idx = env.findIndex((e) => e.startsWith(`${key}=`));
  if (idx >= 0) {
    const copy = [...env];
    copy[idx] = `${key}=${value}`;
    return copy;
  }
  return [...out, `${key}=${value}`];
}

export function envMap(env: readonly string[] | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of env ?? []) {
    const i = e.indexOf("=");
    if (i > 0) m.set(e.slice(0, i), e.slice(i + 1));
  }
  return m;
}

/** Docker's HealthConfig (durations in nanoseconds). */
export interface HealthConfig {
  Test: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

/** Runtime-config fields Dockerfiles set beyond the OCI ones (Docker's image config carries them). */
type DockerRuntimeConfig = RuntimeConfig & { Healthcheck?: HealthConfig; OnBuild?: string[] | null };

/** Applies a metadata instruction to a runtime config (RUN/COPY/ADD leave it unchanged). */
export function applyInstruction(c: RuntimeConfig, ins: Instruction): RuntimeConfig {
  const dc = c as DockerRuntimeConfig;
  switch (ins.op) {
    case "ENV": {
      let env = c.Env ?? [];
      for (const [k, v] of ins.vars) env = setEnv(env, k, v);
      return { ...c, Env: env };
    }
    case "WORKDIR":
      return {
        ...c,
        WorkingDir: ins.path.startsWith("/") ? ins.path : `${c.WorkingDir ?? "/"}/${ins.path}`.replace(/\/+/g, "/"),
      };
    case "USER":
      return { ...c, User: ins.user };
    case "ENTRYPOINT": {
      // Setting ENTRYPOINT resets an inherited CMD, as Docker does; a CMD set earlier in the same definition stays.
      const argv = ins.shell ? [...(c.Shell ?? DEFAULT_SHELL), ins.argv[0] ?? ""] : ins.argv;
      return ins.keepCmd ? { ...c, Entrypoint: argv } : { ...c, Entrypoint: argv, Cmd: null };
    }
    case "CMD":
      return { ...c, Cmd: ins.shell ? [...(c.Shell ?? DEFAULT_SHELL), ins.argv[0] ?? ""] : ins.argv };
    case "SHELL":
      return { ...c, Shell: ins.argv };
    case "LABEL":
      return { ...c, Labels: { ...(c.Labels ?? {}), ...Object.fromEntries(ins.labels) } };
    case "EXPOSE":
      return {
        ...c,
        ExposedPorts: { ...(c.ExposedPorts ?? {}), ...Object.fromEntries(ins.ports.map((p) => [p, {}])) },
      };
    case "VOLUME":
      return { ...c, Volumes: { ...(c.Volumes ?? {}), ...Object.fromEntries(ins.paths.map((p) => [p, {}])) } };
    case "STOPSIGNAL":
      return { ...c, StopSignal: ins.signal };
    case "HEALTHCHECK": {
      const h: HealthConfig = { Test: [...ins.test] };
      if (ins.interval !== undefined) h.Interval = ins.interval;
      if (ins.timeout !== undefined) h.Timeout = ins.timeout;
      if (ins.startPeriod !== undefined) h.StartPeriod = ins.startPeriod;
      if (ins.startInterval !== undefined) h.StartInterval = ins.startInterval;
      if (ins.retries !== undefined) h.Retries = ins.retries;
      return { ...dc, Healthcheck: h } as RuntimeConfig;
    }
    case "ONBUILD":
      return {
        ...dc,
        OnBuild: ins.expression === undefined ? null : [...(dc.OnBuild ?? []), ins.expression],
      } as RuntimeConfig;
    default:
      return c;
  }
}

/** The next image config: parent's config, instructions applied, layer appended (if any), one history entry. */
export function nextConfig(
  parent: ImageConfig,
  instructions: readonly Instruction[],
  layer: LayerRecord | undefined,
  createdAt: string,
  comment: string,
): ImageConfig {
  let rc: RuntimeConfig = { ...parent.config };
  for (const ins of instructions) rc = applyInstruction(rc, ins);
  for (const k of Object.keys(rc) as (keyof RuntimeConfig)[]) if (rc[k] === undefined) delete rc[k];
  const createdBy = instructions.length ? instructions.map(render).join(" && ") : comment;
  // MAINTAINER sets the image's author (a top-level config field).
  let author = (parent as ImageConfig & { author?: string }).author;
  for (const ins of instructions) if (ins.op === "MAINTAINER") author = ins.name;
  return {
    created: createdAt,
    ...(author !== undefined ? { author } : {}),
    architecture: parent.architecture,
    os: parent.os,
    config: rc,
    rootfs: {
      type: "layers",
      diff_ids: layer ? [...parent.rootfs.diff_ids, layer.diffId] : [...parent.rootfs.diff_ids],
    },
    history: [
      ...parent.history,
      { created: createdAt, created_by: createdBy, comment, ...(layer ? {} : { empty_layer: true }) },
    ],
  };
}

export function manifestFor(configDigest: string, configSize: number, layers: readonly LayerRecord[]): Manifest {
  return {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest as Manifest["config"]["digest"], size: configSize },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
}
