/**
 * Executes one build step that missed the cache: builds a base (mmdebstrap, registry pull, scratch), or mounts
 * the parent's layers, runs the step's instructions (RUN in runc: run-instruction.ts, COPY into the merged view or,
 * without a mount, copy-only.ts; metadata into the config), commits the upper dir as a layer, and records the image.
 * Loaded only when something must be built, so fully cached builds never load the sandbox and layer modules.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError } from "../errors.js";
import type { KeyInputs } from "../keys/step-key.js";
import { commitLayer } from "../layer/commit.js";
import { MountedTarget } from "../layer/copy-target.js";
import { mountOverlay, unmountOverlay, type OverlayDirs } from "../layer/overlay.js";
import type { FetchPolicy } from "../net/fetch-policy.js";
import type { ImageConfig } from "../oci/types.js";
import { stepSecretValues } from "../plan/secrets.js";
import type { SecretValues, Step } from "../plan/step.js";
import { RuncExecutor, type Executor } from "../sandbox/runc.js";
import { SYSTEM_MOUNT_POINTS } from "../sandbox/runtime-spec.js";
import type { StepLimits } from "../sandbox/step-limits.js";
import { layerDirs, type BuildStore, type ImageRecord, type LayerRecord } from "../store/store.js";
import { applyInstruction, DEFAULT_PATH, emptyConfig, manifestFor, nextConfig } from "./config.js";
import { copyLocal } from "./copy-local.js";
import { copyOnly, type CopyOnlyContext } from "./copy-only.js";
import { stepTimes } from "./step-epoch.js";
import { buildDebianRootfs } from "./debian-base.js";
import { dockerCopy } from "./docker-copy.js";
import { noteClampedLayer } from "./layer-clamp.js";
import type { ResolvedInput } from "./inputs.js";
import { LineLog, redactor, type LogSink } from "./log.js";
import { makeWorkdir } from "./make-workdir.js";
import { noteMountPoints, scrubMountStubs } from "./mount-stubs.js";
import { runInstruction } from "./run-instruction.js";

export class StepExecutor {
  readonly executor: Executor;
  /** Context files were hashed after this moment; a source not changed since is trusted without re-hashing. */
  readonly startedAt = Date.now();
  constructor(
    private readonly store: BuildStore,
    private readonly builder: BuilderVersion,
    private readonly log: LogSink,
    private readonly ignoreCache: boolean,
    /** The build's secret values; a step gets those of the names it lists. */
    private readonly secrets: SecretValues,
    executor?: Executor,
    private readonly signal?: AbortSignal,
    /** This build's resource limits for its RUN steps (capped by the executor's policy). */
    private readonly limits?: Partial<StepLimits>,
    /** Where pulls of registry bases may connect. */
    private readonly fetchPolicy?: FetchPolicy,
  ) {
    this.executor = executor ?? new RuncExecutor();
  }

  async execute(
    index: number,
    step: Step,
    parent: ImageRecord | undefined,
    resolved: ResolvedInput[],
    inputs: KeyInputs,
    key: string,
    forced: boolean,
    pulledRef?: string,
  ): Promise<ImageRecord> {
    const t0 = Date.now();
    const times = stepTimes(step, this.builder);
    const secrets = stepSecretValues(step, this.secrets);
    const log = new LineLog(this.log, redactor(Object.values(secrets)));
    let config: ImageConfig;
    let layers: LayerRecord[];
    let newLayer: LayerRecord | undefined;
    const parentConfig = parent
      ? (JSON.parse((await this.store.readBlob(parent.configDigest)).toString()) as ImageConfig)
      : emptyConfig();

    if (step.base?.kind === "debian") {
      const work = await this.store.tempDir("base");
      try {
        const rootfs = path.join(work, "rootfs");
        await buildDebianRootfs(step.base, rootfs, (l) => log.line(l), index, this.builder.version);
        newLayer = await commitLayer(this.store, rootfs, { epoch: this.builder.sourceDateEpoch, overlay: false });
        const epoch = this.builder.sourceDateEpoch;
        await noteClampedLayer(this.store.layout, this.store.layout.layerDir(newLayer.diffId), epoch);
        await this.store.adoptLayerDir(newLayer.diffId, rootfs);
      } finally {
        await fsp.rm(work, { recursive: true, force: true });
      }
      const base: ImageConfig = { ...emptyConfig(), config: { Env: [`PATH=${DEFAULT_PATH}`, "LANG=C.UTF-8"] } };
      config = nextConfig(base, step.instructions, newLayer, new Date().toISOString(), step.description);
      config.history[0]!.created_by =
        `mmdebstrap --variant=${step.base.variant} --include=${step.base.packages.join(",")} ${step.base.suite} ${step.base.mirror}`;
      layers = [newLayer];
    } else if (step.base?.kind === "registry") {
      const { pullImage } = await import("../registry/pull.js");
      const { registryOptions } = await import("./registry-base.js");
      const pulled = await pullImage(pulledRef!, this.store, {
        ...registryOptions(step.base, secrets, this.fetchPolicy),
        onProgress: (l) => log.line(l),
      });
      await layerDirs(this.store, pulled.layers);
      layers = pulled.layers;
      config = { ...pulled.config, history: [...(pulled.config.history ?? [])] };
      // With SOURCE_DATE_EPOCH the image is created then (BuildKit); the base's own history keeps its times.
      if (times.sourceDateEpoch !== undefined) config.created = times.created;
      // Base instructions (a Dockerfile stage consuming the base's ONBUILD triggers) change the config, no history.
      for (const ins of step.instructions) config.config = applyInstruction(config.config, ins);
    } else if (step.base?.kind === "scratch") {
      layers = [];
      // Content-free and deterministic (created at the builder's epoch): a forced rebuild of a scratch base yields the
      // same id, so it never cascades into every chain that starts from scratch.
      config = {
        ...emptyConfig(),
        created: new Date((times.sourceDateEpoch ?? this.builder.sourceDateEpoch) * 1000).toISOString(),
        history: [],
      };
      // A Dockerfile's `FROM scratch` starts with a default PATH, as BuildKit's empty image does (no history entry).
      for (const ins of step.instructions) config.config = applyInstruction(config.config, ins);
    } else {
      if (!parent) throw new InvalidDefinitionError(`step ${index} (${step.description}) has no base image`);
      layers = [...parent.layers];
      const needsFs = step.instructions.some(
        (i) => i.op === "RUN" || i.op === "COPY" || i.op === "ADD" || (i.op === "WORKDIR" && i.create),
      );
      if (needsFs) {
        newLayer = await this.#runFilesystemStep(index, step, secrets, parent, parentConfig, resolved, log, {
          inputs,
          forced,
        });
        if (newLayer) layers.push(newLayer);
      }
      config = nextConfig(parentConfig, step.instructions, newLayer, times.created, step.description);
    }
    log.flush();

    const configBytes = Buffer.from(JSON.stringify(config));
    const configDigest = await this.store.putBlobBytes(configBytes);
    const manifestBytes = Buffer.from(JSON.stringify(manifestFor(configDigest, configBytes.length, layers)));
    const manifestDigest = await this.store.putBlobBytes(manifestBytes);
    const record: ImageRecord = {
      id: configDigest,
      configDigest,
      configSize: configBytes.length,
      manifestDigest,
      manifestSize: manifestBytes.length,
      layers,
      ...(parent ? { parent: parent.id } : {}),
      step: {
        index,
        description: step.description,
        key,
        inputs,
        forced,
        builtAt: new Date().toISOString(),
        seconds: (Date.now() - t0) / 1000,
      },
    };
    await this.store.putImage(record);
    await this.store.putLog(record.id, log.all.join("\n"));
    if (!this.ignoreCache) await this.store.putIndex({ key, imageId: record.id, createdAt: new Date().toISOString() });
    return record;
  }

  /**
   * Mounts the parent's layers, runs the step's RUN/COPY/ADD instructions, and commits the upper dir as a layer.
   * A step whose only filesystem work is a WORKDIR that already exists adds no layer (returns undefined).
   */
  async #runFilesystemStep(
    index: number,
    step: Step,
    secrets: Readonly<Record<string, string>>,
    parent: ImageRecord,
    parentConfig: ImageConfig,
    resolved: ResolvedInput[],
    log: LineLog,
    keyed: { inputs: KeyInputs; forced: boolean },
  ): Promise<LayerRecord | undefined> {
    const work = await this.store.tempDir("step");
    const lowers: string[] = [];
    const unpin = this.store.pin?.(parent.layers);
    let dirs: OverlayDirs | undefined;
    try {
      lowers.push(...(await layerDirs(this.store, parent.layers)));
      const inputsByName = new Map(resolved.map((r) => [r.input.name, r]));
      const fast = await copyOnly(this.#copyContext(), step, parentConfig, inputsByName, lowers, work, keyed, log);
      if (fast) return fast;
      dirs = await mountOverlay(work, lowers);
      // Materialise inputs a RUN mounts (e.g. the runFunction module) outside the rootfs.
      const inputFiles = path.join(work, "inputs");
      await fsp.mkdir(inputFiles);
      const preexisting = new Map<string, boolean>();
      const noteMountPoint = (dest: string) => noteMountPoints(dirs!.merged, dest, preexisting);
      for (const p of [...SYSTEM_MOUNT_POINTS, "/etc/resolv.conf", "/etc/hosts"]) noteMountPoint(p);
      let rc = { ...parentConfig.config };
      const input = (name: string): ResolvedInput => {
        const r = inputsByName.get(name);
        if (!r) throw new InvalidDefinitionError(`step ${index}: source "${name}" is not an input of this step`);
        return r;
      };
      const upper = path.join(work, "upper");
      const epochMs = this.builder.sourceDateEpoch * 1000;
      const target = new MountedTarget(dirs.merged, { upper, epochMs });
      for (const ins of step.instructions) {
        if ((ins.op === "COPY" || ins.op === "ADD") && ins.sources) {
          await dockerCopy({
            target,
            ins,
            inputs: [ins.source, ...(ins.inputs ?? [])].map(input),
            workdir: rc.WorkingDir || "/",
            where: step.description,
          });
        } else if (ins.op === "COPY" || ins.op === "ADD") {
          copyLocal(target, input(ins.source), ins.dest);
        } else if (ins.op === "RUN") {
          await runInstruction(
            { store: this.store, executor: this.executor, limits: this.limits, signal: this.signal },
            index,
            step,
            secrets,
            ins,
            rc,
            dirs.merged,
            work,
            inputFiles,
            inputsByName,
            log,
            noteMountPoint,
          );
        } else {
          rc = applyInstruction(rc, ins);
          if (ins.op === "WORKDIR" && ins.create)
            await makeWorkdir(dirs.merged, rc.WorkingDir || "/", rc.User, step.description);
        }
      }
      // Without a RUN, the copy set every mtime (sources' kept, the rest the epoch) and the tar keeps them; a RUN's files
      // carry the times they were made, clamped to the epoch in the tar (and the layer dir says so, for COPY --from).
      const keepMtimes = !step.instructions.some((i) => i.op === "RUN");
      if (keepMtimes) target.finishTimes();
      await unmountOverlay(dirs);
      dirs = undefined;
      await scrubMountStubs(upper, preexisting);
      const onlyWorkdir = step.instructions.every((i) => i.op !== "RUN" && i.op !== "COPY" && i.op !== "ADD");
      if (onlyWorkdir && (await fsp.readdir(upper)).length === 0) return undefined;
      // A SOURCE_DATE_EPOCH clamps every later time, a copy's kept ones too (BuildKit's rewrite-timestamp).
      const times = stepTimes(step, this.builder);
      const packKept = keepMtimes && times.sourceDateEpoch === undefined;
      const layer = await commitLayer(this.store, upper, { epoch: times.layerEpoch, keepMtimes: packKept });
      if (!packKept)
        await noteClampedLayer(this.store.layout, this.store.layout.layerDir(layer.diffId), times.layerEpoch);
      await this.store.adoptLayerDir(layer.diffId, upper);
      return layer;
    } finally {
      unpin?.();
      if (dirs) await unmountOverlay(dirs).catch(() => undefined);
      await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  #copyContext(): CopyOnlyContext {
    return { store: this.store, builder: this.builder, ignoreCache: this.ignoreCache, startedAt: this.startedAt };
  }
}
