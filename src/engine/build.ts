/**
 * The engine: walks a plan step by step — key → index lookup → hit, or run in a sandbox → commit layer → record.
 * It knows the Store and Executor interfaces, not their backends. Cache policy (forceBuild, ignoreCache) lives
 * here, outside the keys: a forced step keeps its key but gets a new image id, so every later key changes.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { loadBuilderVersion, type BuilderVersion } from "../builder-version.js";
import { StatCache } from "../context/walk.js";
import { InvalidDefinitionError, StepFailedError } from "../errors.js";
import { initKeys, stepKey, type KeyInputs } from "../keys/step-key.js";
import { commitLayer } from "../layer/commit.js";
import { mountOverlay, unmountOverlay, type OverlayDirs } from "../layer/overlay.js";
import type { ImageConfig } from "../oci/types.js";
import { render, type Instruction } from "../plan/instructions.js";
import type { Plan, Step } from "../plan/step.js";
import { RuncExecutor, reapStaleContainers, type Executor } from "../sandbox/runc.js";
import { SYSTEM_MOUNT_POINTS, type BindMount } from "../sandbox/runtime-spec.js";
import { resolveUser } from "../sandbox/user.js";
import type { Image } from "../sdk/image.js";
import { LocalStore } from "../store/local.js";
import type { ImageRecord, LayerRecord, Store } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { buildDebianRootfs } from "./debian-base.js";
import { applyInstruction, DEFAULT_PATH, DEFAULT_SHELL, emptyConfig, envMap, manifestFor, nextConfig } from "./config.js";
import { copyInput, fileInputs, resolveInput, type ResolvedInput } from "./inputs.js";
import { LineLog, redactor, stderrSink, type LogSink } from "./log.js";
import { placeNode, placeUv } from "./tools.js";

export interface BuildOptions {
  /** Where layers and records live. Default: a LocalStore at STRATA_HOME. */
  store?: Store;
  /** Rebuild every step and replace the cache entries. Default: STRATA_FORCE_BUILD=1. */
  forceBuild?: boolean;
  /** Rebuild every step without reading or writing the cache index. Default: STRATA_IGNORE_CACHE=1. */
  ignoreCache?: boolean;
  /** Receives progress lines. Default: stderr. */
  log?: LogSink;
  /** Name under which this chain's build is remembered for `strata explain` (e.g. the definition file). */
  chainName?: string;
  /** Builder version. Default: STRATA_BUILDER_VERSION or the newest. */
  builderVersion?: string;
  executor?: Executor;
  signal?: AbortSignal;
}

export interface StepResult {
  index: number;
  description: string;
  cached: boolean;
  seconds: number;
  key: string;
  imageId: Digest;
  /** Digest of the layer this step added, if it added one. */
  layer?: Digest;
}

export interface BuiltImage {
  imageId: Digest;
  steps: StepResult[];
}

const envFlag = (name: string) => ["1", "true", "yes"].includes((process.env[name] ?? "").toLowerCase());

/** Builds an Image (or an already compiled Plan). */
export async function buildImage(image: Image | Plan, options: BuildOptions = {}): Promise<BuiltImage> {
  const builder = loadBuilderVersion(options.builderVersion ?? (("steps" in image) ? image.builderVersion : undefined));
  const plan = "steps" in image ? image : image.plan(builder);
  const store = options.store ?? (await LocalStore.open());
  const engine = new Engine(store, builder, options);
  return engine.build(plan);
}

/** In-process single flight: concurrent builds of the same key share one execution. */
const inflight = new Map<string, Promise<ImageRecord>>();

/** Key inputs for a step; exported for `strata explain`. */
export function keyInputsFor(builder: BuilderVersion, step: Step, parent: Digest | null, resolved: readonly ResolvedInput[], extra: [string, string][] = []): KeyInputs {
  return {
    builderVersion: builder.version,
    parent,
    instructions: step.instructions.map(render),
    files: fileInputs(resolved),
    buildArgs: [],
    secretNames: Object.keys(step.secrets),
    extra: [...step.extra, ...Object.entries(step.env).map(([k, v]): [string, string] => [`env.${k}`, v]), ...extra],
  };
}

class Engine {
  readonly #executor: Executor;
  readonly #log: LogSink;
  readonly #force: boolean;
  readonly #ignore: boolean;
  #statCache?: StatCache;

  constructor(
    private readonly store: Store,
    private readonly builder: BuilderVersion,
    private readonly options: BuildOptions,
  ) {
    this.#executor = options.executor ?? new RuncExecutor();
    this.#log = options.log ?? stderrSink;
    this.#force = options.forceBuild ?? envFlag("STRATA_FORCE_BUILD");
    this.#ignore = options.ignoreCache ?? envFlag("STRATA_IGNORE_CACHE");
  }

  async build(plan: Plan): Promise<BuiltImage> {
    await initKeys();
    await reapStaleContainers();
    await this.store.recover();
    this.#statCache = await StatCache.load(path.join(this.store.root, "statcache.json"));
    const started = Date.now();
    const results: StepResult[] = [];
    let parent: ImageRecord | undefined;
    const steps = [...plan.steps];
    if (plan.deferred.length) steps.push(deferredStep(plan));
    try {
      for (const [index, step] of steps.entries()) {
        const t0 = Date.now();
        this.#log(`=> Step ${index}: ${step.description}`);
        const { record, cached } = await this.#step(index, step, parent);
        const seconds = (Date.now() - t0) / 1000;
        const layer = record.layers.length > (parent?.layers.length ?? 0) ? record.layers[record.layers.length - 1]!.digest : undefined;
        results.push({ index, description: step.description, cached, seconds, key: record.step?.key ?? "", imageId: record.id, ...(layer ? { layer } : {}) });
        this.#log(`   ${cached ? "cached" : "built"} in ${seconds.toFixed(2)}s → ${record.id.slice(7, 19)}`);
        parent = record;
      }
    } finally {
      await this.#statCache.save().catch(() => undefined);
    }
    const final = parent!;
    if (!this.#ignore && this.options.chainName) {
      await this.store.putChain({ name: this.options.chainName, builtAt: new Date().toISOString(), imageIds: results.map((r) => r.imageId) });
    }
    const built = results.filter((r) => !r.cached).length;
    this.#log(`=> Image ${final.id} (${results.length} steps, ${built} built, ${results.length - built} cached) in ${((Date.now() - started) / 1000).toFixed(2)}s`);
    return { imageId: final.id, steps: results };
  }

  async #step(index: number, step: Step, parent: ImageRecord | undefined): Promise<{ record: ImageRecord; cached: boolean }> {
    if (step.base?.kind === "image") {
      const rec = await this.store.resolveImage(step.base.imageId);
      return { record: rec, cached: true };
    }
    const resolved: ResolvedInput[] = [];
    for (const input of step.inputs) resolved.push(await resolveInput(input, this.#statCache));
    const baseExtra: [string, string][] = [];
    let pulledRef: string | undefined;
    if (step.base?.kind === "registry") {
      const { resolveImage } = await import("../registry/pull.js");
      const r = await resolveImage(step.base.ref, { insecure: step.base.insecure });
      baseExtra.push(["base.manifest", r.manifestDigest]);
      pulledRef = `${r.reference.registry}/${r.reference.repository}@${r.manifestDigest}`;
    }
    const inputs = keyInputsFor(this.builder, step, parent?.id ?? null, resolved, baseExtra);
    const key = stepKey(inputs);
    const force = this.#force || step.forceBuild;
    if (!force && !this.#ignore) {
      const hit = await this.#lookup(key);
      if (hit) return { record: hit, cached: true };
    }
    const flightKey = `${key}:${force ? "force" : ""}:${this.#ignore ? "ignore" : ""}`;
    let flight = inflight.get(flightKey);
    if (!flight) {
      flight = this.#locked(key, force, () => this.#execute(index, step, parent, resolved, inputs, key, force, pulledRef));
      inflight.set(flightKey, flight);
      flight.finally(() => inflight.delete(flightKey)).catch(() => undefined);
    }
    const { record, cached } = await flight.then((r) => ({ record: r, cached: false }));
    return { record, cached };
  }

  async #lookup(key: string): Promise<ImageRecord | undefined> {
    const entry = await this.store.getIndex(key);
    return entry ? this.store.getImage(entry.imageId) : undefined;
  }

  /** Runs `fn` under the store's lock for `key`; a waiter that finds the entry built meanwhile uses it. */
  async #locked(key: string, force: boolean, fn: () => Promise<ImageRecord>): Promise<ImageRecord> {
    if (this.#ignore) return fn();
    const release = await this.store.lock(key);
    try {
      if (!force) {
        const hit = await this.#lookup(key);
        if (hit) return hit;
      }
      return await fn();
    } finally {
      await release();
    }
  }

  async #execute(index: number, step: Step, parent: ImageRecord | undefined, resolved: ResolvedInput[], inputs: KeyInputs, key: string, forced: boolean, pulledRef?: string): Promise<ImageRecord> {
    const t0 = Date.now();
    const secretValues = Object.values(step.secrets);
    const log = new LineLog(this.#log, redactor(secretValues));
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
      const pulled = await pullImage(pulledRef!, this.store, { insecure: step.base.insecure, onProgress: (l) => log.line(l) });
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
    if (!this.#ignore) await this.store.putIndex({ key, imageId: record.id, createdAt: new Date().toISOString() });
    return record;
  }

  /** Mounts the parent's layers, runs the step's RUN/COPY instructions, and commits the upper dir as a layer. */
  async #runFilesystemStep(index: number, step: Step, parent: ImageRecord, parentConfig: ImageConfig, resolved: ResolvedInput[], log: LineLog): Promise<LayerRecord> {
    const work = await this.store.tempDir("step");
    const lowers: string[] = [];
    for (const l of parent.layers) lowers.push(await this.store.layerDir(l));
    let dirs: OverlayDirs | undefined;
    try {
      dirs = await mountOverlay(work, lowers);
      const inputsByName = new Map(resolved.map((r) => [r.input.name, r]));
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
      if (dirs) await unmountOverlay(dirs).catch(() => undefined);
      await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
    }
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
    for (const [k, v] of Object.entries(step.secrets)) env.set(k, v);
    const cwd = rc.WorkingDir || "/";
    await fsp.mkdir(path.join(rootfs, cwd), { recursive: true });
    const command = typeof ins.command === "string" ? ins.command : JSON.stringify(ins.command);
    if (step.method === "runCommands" || step.method === "aptInstall" || step.method === "pipInstall") log.line(`$ ${command}`);
    const r = await this.#executor.run(
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
      { bundleDir: path.join(work, "bundle"), timeoutMs: step.timeoutMs, onOutput: (t) => log.write(t), signal: this.options.signal },
    );
    log.flush();
    if (r.exitCode !== 0 || r.timedOut) {
      throw new StepFailedError(index, step.description, redactor(Object.values(step.secrets))(command), r.exitCode, [...log.tail], r.durationMs, r.timedOut);
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

/** The final step that adds `copy: false` files (applied after every build step, so edits never cascade). */
function deferredStep(plan: Plan): Step {
  const inputs = plan.deferred.map((d, i) =>
    d.kind === "dir"
      ? { kind: "dir" as const, name: `mount${i}`, localPath: d.localPath, ignore: d.ignore }
      : { kind: "file" as const, name: `mount${i}`, localPath: d.localPath },
  );
  return {
    method: "addLocal",
    description: `add local files (${plan.deferred.map((d) => `${d.localPath} → ${d.remotePath}`).join(", ")})`,
    instructions: plan.deferred.map((d, i) => ({ op: "COPY", source: `mount${i}`, dest: d.remotePath })),
    inputs,
    secrets: {},
    env: {},
    forceBuild: false,
    extra: plan.deferred.some((d) => d.ignore.length) ? [["ignore", JSON.stringify(plan.deferred.map((d) => d.ignore))]] : [],
  };
}

