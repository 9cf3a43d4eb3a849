/**
 * Executes one build step that missed the cache: builds a base (mmdebstrap, registry pull, scratch), or mounts
 * the parent's layers, runs the step's instructions (RUN in runc, COPY into the merged view, metadata into the
 * config), commits the upper dir as a layer, and records the image. Loaded only when something must be built, so
 * fully cached builds never load the sandbox and layer modules.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError, StepFailedError } from "../errors.js";
import type { KeyInputs } from "../keys/step-key.js";
import { commitLayer } from "../layer/commit.js";
import { canCopyIntoUpper, copyIntoUpper } from "../layer/copy-into-upper.js";
import { mountOverlay, unmountOverlay, type OverlayDirs } from "../layer/overlay.js";
import type { ImageConfig } from "../oci/types.js";
import type { Instruction } from "../plan/instructions.js";
import type { Step } from "../plan/step.js";
import { RuncExecutor, type Executor } from "../sandbox/runc.js";
import { SYSTEM_MOUNT_POINTS, type BindMount } from "../sandbox/runtime-spec.js";
import { resolveUser } from "../sandbox/user.js";
import type { ImageRecord, LayerRecord, Store } from "../store/store.js";
import { applyInstruction, DEFAULT_PATH, DEFAULT_SHELL, emptyConfig, envMap, manifestFor, nextConfig } from "./config.js";
import { buildDebianRootfs } from "./debian-base.js";
import { copyInput, type ResolvedInput } from "./inputs.js";
import { LineLog, redactor, type LogSink } from "./log.js";
import { placeNode, placeUv } from "./tools.js";

export class StepExecutor {
  readonly executor: Executor;
  /** Context files were hashed after this moment; a source not changed since is trusted without re-hashing. */
  readonly startedAt = Date.now();
  constructor(
    private readonly store: Store,
    private readonly builder: BuilderVersion,
    private readonly log: LogSink,
    private readonly ignoreCache: boolean,
    executor?: Executor,
    private readonly signal?: AbortSignal,
  ) {
    this.executor = executor ?? new RuncExecutor();
  }

  async execute(index: number, step: Step, parent: ImageRecord | undefined, resolved: ResolvedInput[], inputs: KeyInputs, key: string, forced: boolean, pulledRef?: string): Promise<ImageRecord> {
    const t0 = Date.now();
    const secretValues = Object.values(step.secrets.values());
    const log = new LineLog(this.log, redactor(secretValues));
    let config: ImageConfig;
    let layers: LayerRecord[];
    let newLayer: LayerRecord | undefined;
    const parentConfig = parent ? (JSON.parse((await this.store.readBlob(parent.configDigest)).toString()) as ImageConfig) : emptyConfig();

    if (step.base?.kind === "debian") {
      const work = await this.store.tempDir("base");
      try {
        const rootfs = path.join(work, "rootfs");
        await buildDebianRootfs(step.base, rootfs, (l) => log.line(l), index);
        newLayer = await commitLayer(this.store, rootfs, { epoch: this.builder.sourceDateEpoch, overlay: false });
        await this.store.adoptLayerDir(newLayer.diffId, rootfs);
      } finally {
        await fsp.rm(work, { recursive: true, force: true });
      }
      const base: ImageConfig = { ...emptyConfig(), config: { Env: [`PATH=${DEFAULT_PATH}`, "LANG=C.UTF-8"] } };
      config = nextConfig(base, step.instructions, newLayer, new Date().toISOString(), step.description);
      config.history[0]!.created_by = `mmdebstrap --variant=${step.base.variant} --include=${step.base.packages.join(",")} ${step.base.suite} ${step.base.mirror}`;
      layers = [newLayer];
    } else if (step.base?.kind === "registry") {
      const { pullImage } = await import("../registry/pull.js");
      const { registryOptions } = await import("./registry-base.js");
      const pulled = await pullImage(pulledRef!, this.store, { ...registryOptions(step.base, step.secrets), onProgress: (l) => log.line(l) });
      for (const l of pulled.layers) await this.store.layerDir(l);
      layers = pulled.layers;
      config = { ...pulled.config, history: [...(pulled.config.history ?? [])] };
    } else if (step.base?.kind === "scratch") {
      layers = [];
      config = { ...emptyConfig(), created: new Date().toISOString(), history: [] };
    } else {
      if (!parent) throw new InvalidDefinitionError(`step ${index} (${step.description}) has no base image`);
      layers = [...parent.layers];
      const needsFs = step.instructions.some((i) => i.op === "RUN" || i.op === "COPY");
      if (needsFs) {
        newLayer = await this.#runFilesystemStep(index, step, parent, parentConfig, resolved, log);
        layers.push(newLayer);
      }
      config = nextConfig(parentConfig, step.instructions, newLayer, new Date().toISOString(), step.description);
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
      step: { index, description: step.description, key, inputs, forced, builtAt: new Date().toISOString(), seconds: (Date.now() - t0) / 1000 },
    };
    await this.store.putImage(record);
    await this.store.putLog(record.id, log.all.join("\n"));
    if (!this.ignoreCache) await this.store.putIndex({ key, imageId: record.id, createdAt: new Date().toISOString() });
    return record;
  }

  /** Mounts the parent's layers, runs the step's RUN/COPY instructions, and commits the upper dir as a layer. */
  async #runFilesystemStep(index: number, step: Step, parent: ImageRecord, parentConfig: ImageConfig, resolved: ResolvedInput[], log: LineLog): Promise<LayerRecord> {
    const work = await this.store.tempDir("step");
    const lowers: string[] = [];
    const unpin = this.store.pin?.(parent.layers);
    let dirs: OverlayDirs | undefined;
    try {
      for (const l of parent.layers) lowers.push(await this.store.layerDir(l));
      const inputsByName = new Map(resolved.map((r) => [r.input.name, r]));
      const fast = await this.#copyOnly(step, inputsByName, lowers, path.join(work, "upper"));
      if (fast) return fast;
      dirs = await mountOverlay(work, lowers);
      // Materialise inputs a RUN mounts (e.g. the runFunction module) outside the rootfs.
      const inputFiles = path.join(work, "inputs");
      await fsp.mkdir(inputFiles);
      const preexisting = new Map<string, boolean>();
      const noteMountPoint = async (dest: string) => {
        if (!preexisting.has(dest)) preexisting.set(dest, await fsp.lstat(path.join(dirs!.merged, dest)).then(() => true, () => false));
      };
      for (const p of [...SYSTEM_MOUNT_POINTS, "/etc/resolv.conf", "/etc/hosts"]) await noteMountPoint(p);
      let rc = { ...parentConfig.config };
      for (const ins of step.instructions) {
        if (ins.op === "COPY") {
          const r = inputsByName.get(ins.source);
          if (!r) throw new InvalidDefinitionError(`step ${index}: COPY source "${ins.source}" is not an input of this step`);
          await copyInput(r, dirs.merged, ins.dest);
        } else if (ins.op === "RUN") {
          await this.#run(index, step, ins, rc, dirs.merged, work, inputFiles, inputsByName, log, noteMountPoint);
        } else {
          rc = applyInstruction(rc, ins);
        }
      }
      await unmountOverlay(dirs);
      dirs = undefined;
      await scrubMountStubs(path.join(work, "upper"), preexisting);
      const layer = await commitLayer(this.store, path.join(work, "upper"), { epoch: this.builder.sourceDateEpoch });
      await this.store.adoptLayerDir(layer.diffId, path.join(work, "upper"));
      return layer;
    } finally {
      unpin?.();
      if (dirs) await unmountOverlay(dirs).catch(() => undefined);
      await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /**
   * A step of COPYs only (no RUN) is written straight into a fresh upper dir, files linked from the store's content
   * pool — unless a destination's parent is not a plain directory in the merged view. Returns undefined to fall back.
   */
  async #copyOnly(step: Step, inputsByName: Map<string, ResolvedInput>, lowers: readonly string[], upper: string): Promise<LayerRecord | undefined> {
    if (step.instructions.some((i) => i.op === "RUN")) return undefined;
    const copies = step.instructions.filter((i): i is Extract<Instruction, { op: "COPY" }> => i.op === "COPY");
    const lowersTopFirst = [...lowers].reverse();
    const sources = copies.map((c) => inputsByName.get(c.source));
    if (sources.some((r) => !r || r.input.kind === "inline")) return undefined;
    if (!copies.every((c) => canCopyIntoUpper(lowersTopFirst, c.dest))) return undefined;
    await fsp.mkdir(upper, { recursive: true });
    for (const [i, c] of copies.entries()) {
      const r = sources[i]!;
      copyIntoUpper(r.entries, upper, lowersTopFirst, c.dest, path.join(this.store.root, "files"), this.startedAt, r.input.kind === "file");
    }
    const layer = await commitLayer(this.store, upper, { epoch: this.builder.sourceDateEpoch });
    await this.store.adoptLayerDir(layer.diffId, upper);
    return layer;
  }

  async #run(
    index: number,
    step: Step,
    ins: Extract<Instruction, { op: "RUN" }>,
    rc: ImageConfig["config"],
    rootfs: string,
    work: string,
    inputFiles: string,
    inputsByName: Map<string, ResolvedInput>,
    log: LineLog,
    noteMountPoint: (dest: string) => Promise<void>,
  ): Promise<void> {
    let argv = typeof ins.command === "string" ? [...(rc.Shell ?? DEFAULT_SHELL), ins.command] : [...ins.command];
    const mounts: BindMount[] = [];
    for (const p of ["/etc/resolv.conf", "/etc/hosts"]) {
      if (await fsp.access(p).then(() => true, () => false)) mounts.push({ source: p, destination: p, readonly: true });
    }
    for (const m of ins.mounts ?? []) {
      if (m.source === "builder:node") {
        const placed = await placeNode(rootfs);
        mounts.push(...placed.mounts);
        if (argv[0] === `${m.target}/node`) argv = [...placed.argvPrefix, ...argv.slice(1)];
      } else if (m.source === "builder:uv") {
        mounts.push(await placeUv(rootfs, m.target));
      } else {
        const r = inputsByName.get(m.source);
        if (!r) throw new InvalidDefinitionError(`step ${index}: RUN mount source "${m.source}" is not an input of this step`);
        const file = path.join(inputFiles, m.source);
        if (r.input.kind === "inline") await fsp.writeFile(file, r.input.content, { mode: r.input.mode });
        else await fsp.symlink(r.input.localPath, file);
        mounts.push({ source: file, destination: m.target, readonly: true });
      }
    }
    for (const m of mounts) await noteMountPoint(m.destination);
    const user = await resolveUser(rootfs, rc.User);
    const env = envMap(rc.Env);
    if (!env.has("PATH")) env.set("PATH", DEFAULT_PATH);
    if (!env.has("HOME")) env.set("HOME", user.home || "/root");
    for (const [k, v] of Object.entries(step.env)) env.set(k, v);
    for (const [k, v] of Object.entries(step.secrets.values())) env.set(k, v);
    const cwd = rc.WorkingDir || "/";
    await fsp.mkdir(path.join(rootfs, cwd), { recursive: true });
    const command = typeof ins.command === "string" ? ins.command : JSON.stringify(ins.command);
    if (step.method === "runCommands" || step.method === "aptInstall" || step.method === "pipInstall") log.line(`$ ${command}`);
    const r = await this.executor.run(
      {
        rootfs,
        argv,
        env: [...env].map(([k, v]) => `${k}=${v}`),
        cwd,
        uid: user.uid,
        gid: user.gid,
        additionalGids: user.additionalGids,
        mounts,
        network: ins.network ?? "host",
        hostname: "strata",
      },
      { bundleDir: path.join(work, "bundle"), timeoutMs: step.timeoutMs, onOutput: (t) => log.write(t), signal: this.signal },
    );
    log.flush();
    if (r.exitCode !== 0 || r.timedOut) {
      throw new StepFailedError(index, step.description, redactor(Object.values(step.secrets.values()))(command), r.exitCode, [...log.tail], r.durationMs, r.timedOut);
    }
  }
}

/**
 * Removes files and directories the runtime created only to mount over (e.g. /proc in a scratch image, the
 * runFunction module's mount point), so they never enter the layer. A stub is removed only if it did not exist
 * before the step and is still empty.
 */
async function scrubMountStubs(upper: string, preexisting: Map<string, boolean>): Promise<void> {
  const candidates = new Set<string>();
  for (const [dest, existed] of preexisting) {
    if (existed) continue;
    // The mount point and every parent created for it.
    let p = dest;
    while (p !== "/" && p !== ".") {
      if (preexisting.get(p) === true) break;
      candidates.add(p);
      p = path.posix.dirname(p);
    }
  }
  // Deepest first, so parents become empty before they are checked.
  for (const p of [...candidates].sort((a, b) => b.split("/").length - a.split("/").length)) {
    const abs = path.join(upper, p);
    const st = await fsp.lstat(abs).catch(() => undefined);
    if (!st) continue;
    if (st.isDirectory()) {
      if ((await fsp.readdir(abs)).length === 0) await fsp.rmdir(abs);
    } else if (st.isFile() && st.size === 0) {
      await fsp.rm(abs);
    }
  }
}

