/**
 * Executes one build step that missed the cache: builds a base (mmdebstrap, registry pull, scratch), or mounts
 * the parent's layers, runs the step's instructions (RUN in runc, COPY into the merged view, metadata into the
 * config), commits the upper dir as a layer, and records the image. Loaded only when something must be built, so
 * fully cached builds never load the sandbox and layer modules.
 */
import { createHash } from "node:crypto";
import { lstatSync, promises as fsp } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import type { BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError, SandboxError, StepFailedError } from "../errors.js";
import { stepKey, type KeyInputs } from "../keys/step-key.js";
import { commitLayer } from "../layer/commit.js";
import { MountedTarget, NeedsMountError, opaqueDirsOf, resolveInImage, UpperTarget } from "../layer/copy-target.js";
import { mountOverlay, unmountOverlay, type OverlayDirs } from "../layer/overlay.js";
import type { ImageConfig } from "../oci/types.js";
import type { Instruction, RunMount } from "../plan/instructions.js";
import { stepSecretValues } from "../plan/secrets.js";
import type { SecretValues, Step } from "../plan/step.js";
import { DEFAULT_LIMITS, type StepLimits } from "../sandbox/step-limits.js";
import { RuncExecutor, type Executor } from "../sandbox/runc.js";
import { SYSTEM_MOUNT_POINTS, type BindMount } from "../sandbox/runtime-spec.js";
import { resolveUser } from "../sandbox/user.js";
import { layerDirs, type ImageRecord, type BuildStore, type LayerRecord } from "../store/store.js";
import type { StoreLayout } from "../store/layout.js";
import {
  applyInstruction,
  DEFAULT_PATH,
  DEFAULT_SHELL,
  emptyConfig,
  envMap,
  manifestFor,
  nextConfig,
} from "./config.js";
import { buildDebianRootfs } from "./debian-base.js";
import { copyLocal } from "./copy-local.js";
import type { ResolvedInput } from "./inputs.js";
import { copyNeedsMount, dockerCopy } from "./docker-copy.js";
import { resolveChown } from "./chown.js";
import { joinNoFollow, lexicalImagePath, secureJoin } from "../layer/secure-join.js";
import { LineLog, redactor, type LogSink } from "./log.js";
import { readJson, writeFileAtomic } from "../util/fs.js";
import { placeNode, placeUv } from "./tools.js";
import { defaultNetwork } from "./network.js";
import type { FetchPolicy } from "../net/fetch-policy.js";

/** The largest `RUN --mount=type=tmpfs` (and its size when it names none): the default step memory limit. */
export const MAX_TMPFS_BYTES = DEFAULT_LIMITS.memoryBytes;

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
        await buildDebianRootfs(step.base, rootfs, (l) => log.line(l), index);
        newLayer = await commitLayer(this.store, rootfs, { epoch: this.builder.sourceDateEpoch, overlay: false });
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
      // Base instructions (a Dockerfile stage consuming the base's ONBUILD triggers) change the config, no history.
      for (const ins of step.instructions) config.config = applyInstruction(config.config, ins);
    } else if (step.base?.kind === "scratch") {
      layers = [];
      // Content-free and deterministic (created at the builder's epoch): a forced rebuild of a scratch base yields the
      // same id, so it never cascades into every chain that starts from scratch.
      config = { ...emptyConfig(), created: new Date(this.builder.sourceDateEpoch * 1000).toISOString(), history: [] };
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
      const fast = await this.#copyOnly(step, parentConfig, inputsByName, lowers, work, keyed, log);
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
      const target = new MountedTarget(dirs.merged);
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
          await this.#run(
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
      await unmountOverlay(dirs);
      dirs = undefined;
      await scrubMountStubs(path.join(work, "upper"), preexisting);
      const onlyWorkdir = step.instructions.every((i) => i.op !== "RUN" && i.op !== "COPY" && i.op !== "ADD");
      if (onlyWorkdir && (await fsp.readdir(path.join(work, "upper"))).length === 0) return undefined;
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
   * A step of COPY/ADD and metadata only (no RUN) is written straight into a fresh upper dir through an `UpperTarget`
   * — no mount, files linked from the store's content pool. Returns undefined to fall back to a mount: for a RUN, a
   * WORKDIR that creates a directory, an ADD that may extract an archive, or a change only a mount can express.
   */
  async #copyOnly(
    step: Step,
    parentConfig: ImageConfig,
    inputsByName: Map<string, ResolvedInput>,
    lowers: readonly string[],
    work: string,
    keyed: { inputs: KeyInputs; forced: boolean },
    log: LineLog,
  ): Promise<LayerRecord | undefined> {
    type CopyIns = Extract<Instruction, { op: "COPY" | "ADD" }>;
    const inputsOf = (ins: CopyIns) =>
      [ins.source, ...(ins.inputs ?? [])]
        .map((n) => inputsByName.get(n))
        .filter((r): r is ResolvedInput => r !== undefined);
    for (const ins of step.instructions) {
      if (ins.op === "RUN" || (ins.op === "WORKDIR" && ins.create)) return undefined;
      if ((ins.op === "COPY" || ins.op === "ADD") && ins.sources && copyNeedsMount(ins, inputsOf(ins)))
        return undefined;
      if ((ins.op === "COPY" || ins.op === "ADD") && !ins.sources && !inputsByName.has(ins.source)) return undefined;
    }
    const upper = path.join(work, "upper");
    const lowersTopFirst = [...lowers].reverse();
    // Nothing is mounted, so record the layer dirs this step reads (the parent's, and stages' a COPY --from reads) as
    // links in the work dir, where `strata cache prune` in another process sees them in use (as a mount's lowerdirs).
    const links = path.join(work, "l");
    await linkLayersInUse(links, [...lowers, ...layerDirsOf(this.store.layout, [...inputsByName.values()])]);
    const metaDir = this.store.layout.layerMetaDir;
    const opaque = await Promise.all(lowersTopFirst.map((l) => opaqueDirsOf(l, metaDir)));
    const pool = { poolDir: this.store.layout.contentPoolDir, hashedAfterMs: this.startedAt };
    // The parent's filesystem, for reading (`--chown` names); a plain COPY also writes over it.
    const copies = step.instructions.filter((i): i is CopyIns => i.op === "COPY" || i.op === "ADD");
    const linked = copies.length > 0 && copies.every((c) => c.link === true && c.sources !== undefined);
    const parentFs = new UpperTarget(linked ? path.join(work, "parent-view") : upper, lowersTopFirst, {
      ...pool,
      opaque,
    });
    // `--link` (BuildKit: the copy is made onto scratch, then merged): the layer does not depend on the parent, so one
    // layer serves every parent — kept per key-without-parent in <store>/link-layers/, reused when only the parent changed.
    let linkFile: string | undefined;
    if (linked && !this.ignoreCache) {
      const owners = copies.map((c) =>
        c.chown === undefined ? null : resolveChown((p) => parentFs.readFile(p)?.toString("utf8"), c.chown),
      );
      const extra: [string, string][] = [
        ["link.workdir", parentConfig.config.WorkingDir || "/"],
        ["link.owners", JSON.stringify(owners)],
      ];
      const linkKey = stepKey({ ...keyed.inputs, parent: null, extra: [...keyed.inputs.extra, ...extra] });
      linkFile = this.store.layout.linkLayerFile(linkKey);
      if (!keyed.forced) {
        const reused = await readJson<LayerRecord>(linkFile).catch(() => undefined);
        if (reused && (await this.store.hasBlob(reused.digest))) {
          await this.store.layerDir(reused);
          const now = new Date();
          await fsp.utimes(linkFile, now, now).catch(() => undefined); // used: cache prune keeps it
          log.line(`--link: reusing layer ${reused.digest.slice(7, 19)} (built on another parent)`);
          return reused;
        }
      }
    }
    const target = linked ? new UpperTarget(upper, [], { ...pool, opaque: [] }) : parentFs;
    let rc = { ...parentConfig.config };
    try {
      for (const ins of step.instructions) {
        if ((ins.op === "COPY" || ins.op === "ADD") && ins.sources) {
          await dockerCopy({
            target,
            names: parentFs,
            ins,
            inputs: inputsOf(ins),
            workdir: rc.WorkingDir || "/",
            where: step.description,
          });
        } else if (ins.op === "COPY" || ins.op === "ADD") {
          copyLocal(target, inputsByName.get(ins.source)!, ins.dest);
        } else {
          rc = applyInstruction(rc, ins);
        }
      }
    } catch (e) {
      if (!(e instanceof NeedsMountError) || linked) throw e;
      await fsp.rm(upper, { recursive: true, force: true });
      await fsp.rm(links, { recursive: true, force: true });
      return undefined;
    }
    const layer = await commitLayer(this.store, upper, { epoch: this.builder.sourceDateEpoch });
    await this.store.adoptLayerDir(layer.diffId, upper);
    if (linkFile) await writeFileAtomic(linkFile, JSON.stringify(layer));
    return layer;
  }

  async #run(
    index: number,
    step: Step,
    secrets: Readonly<Record<string, string>>,
    ins: Extract<Instruction, { op: "RUN" }>,
    rc: ImageConfig["config"],
    rootfs: string,
    work: string,
    inputFiles: string,
    inputsByName: Map<string, ResolvedInput>,
    log: LineLog,
    noteMountPoint: (dest: string) => void,
  ): Promise<void> {
    let argv = typeof ins.command === "string" ? [...(rc.Shell ?? DEFAULT_SHELL), ins.command] : [...ins.command];
    // /etc/resolv.conf and /etc/hosts are the executor's: they depend on the step's network.
    // The working directory and every mount target as absolute image paths, `..` stopping at `/` (a relative mount
    // target is relative to the working directory, as in BuildKit).
    const cwd = lexicalImagePath(rc.WorkingDir || "/");
    const target = (t: string) => lexicalImagePath(path.posix.resolve(cwd, t));
    const mounts: BindMount[] = [];
    const cleanups: (() => Promise<void>)[] = [];
    const secretEnv = new Map<string, string>();
    try {
      for (const m of ins.mounts ?? []) {
        if (m.type === "cache") {
          mounts.push({
            source: await this.#cacheMount(m, cleanups),
            destination: target(m.target),
            readonly: m.readonly ?? false,
          });
          continue;
        }
        if (m.type === "tmpfs") {
          const dir = path.join(work, `tmpfs-${mounts.length}`);
          await fsp.mkdir(dir, { recursive: true });
          // Capped (a tmpfs without a size may grow to half the host's memory); its pages also count against the
          // step's memory limit, since the step writes them.
          const size = Math.min(m.size ?? MAX_TMPFS_BYTES, MAX_TMPFS_BYTES);
          const r = await execa("mount", ["-t", "tmpfs", "-o", `mode=1777,size=${size}`, "tmpfs", dir], {
            reject: false,
          });
          if (r.exitCode !== 0)
            throw new InvalidDefinitionError(
              `${step.description}: could not mount a tmpfs at ${m.target}: ${r.stderr}`,
            );
          cleanups.push(async () => void (await execa("umount", ["-l", dir], { reject: false })));
          mounts.push({ source: dir, destination: target(m.target), readonly: false });
          continue;
        }
        if (m.type === "secret") {
          const value = Object.hasOwn(secrets, m.id) ? secrets[m.id] : undefined;
          if (value === undefined) {
            if (m.required)
              throw new InvalidDefinitionError(
                `${step.description}: secret ${JSON.stringify(m.id)} is required but the build has no such secret`,
              );
            continue;
          }
          if (m.env !== undefined) secretEnv.set(m.env, value);
          if (m.target !== undefined || m.env === undefined) {
            // Secret files live on a tmpfs outside the rootfs, never on disk.
            const dir = path.join(work, "secrets");
            if (
              !(await fsp.stat(dir).then(
                () => true,
                () => false,
              ))
            ) {
              await fsp.mkdir(dir, { mode: 0o700 });
              const r = await execa("mount", ["-t", "tmpfs", "-o", "mode=0700,size=16m", "tmpfs", dir], {
                reject: false,
              });
              // Never fall back to a file on disk: a secret that cannot stay in memory is not handed out.
              if (r.exitCode !== 0)
                throw new SandboxError(
                  `${step.description}: could not mount the tmpfs that holds secret files (${r.stderr.trim() || r.message}); the step did not run`,
                );
              cleanups.push(async () => void (await execa("umount", ["-l", dir], { reject: false })));
            }
            const file = path.join(dir, `secret-${mounts.length}`);
            await fsp.writeFile(file, value, { mode: 0o600 });
            await fsp.chown(file, m.uid ?? 0, m.gid ?? 0);
            await fsp.chmod(file, m.mode ?? 0o400);
            mounts.push({ source: file, destination: target(m.target ?? `/run/secrets/${m.id}`), readonly: true });
          }
          continue;
        }
        if (m.source === "builder:node") {
          const placed = await placeNode(rootfs);
          mounts.push(...placed.mounts);
          if (argv[0] === `${m.target}/node`) argv = [...placed.argvPrefix, ...argv.slice(1)];
        } else if (m.source === "builder:uv") {
          mounts.push(await placeUv(rootfs, target(m.target)));
        } else {
          const r = inputsByName.get(m.source);
          if (!r)
            throw new InvalidDefinitionError(
              `step ${index}: RUN mount source "${m.source}" is not an input of this step`,
            );
          // Named by position, not by the input's name: a name never becomes part of a host path.
          const file = path.join(inputFiles, `mount-${mounts.length}`);
          if (r.input.kind === "inline") await fsp.writeFile(file, r.input.content, { mode: r.input.mode });
          else if (r.input.kind === "dir" || r.input.kind === "file") {
            // A writable mount gets a throw-away copy: the input (a service's shared input tree, a user's own
            // context) is never changed by a step, and a later build reading it sees the original files.
            if (m.readonly) await fsp.symlink(r.input.localPath, file);
            else await throwAwayCopy(r.input.localPath, file);
          } else await materialise(r, file, m.readonly);
          mounts.push({ source: file, destination: target(m.target), readonly: m.readonly });
        }
      }
      for (const m of mounts) noteMountPoint(m.destination);
      const user = await resolveUser(rootfs, rc.User);
      // Build args sit below the image's ENV (an ENV of the same name wins, as in BuildKit).
      // Proxy build args (not keyed) sit below both.
      const env = new Map<string, string>([...(step.proxyEnv ?? []), ...(step.buildArgs ?? [])]);
      for (const [k, v] of envMap(rc.Env)) env.set(k, v);
      if (!env.has("PATH")) env.set("PATH", DEFAULT_PATH);
      if (!env.has("HOME")) env.set("HOME", user.home || "/root");
      for (const [k, v] of Object.entries(step.env)) env.set(k, v);
      if (step.secretsAsEnv !== false) for (const [k, v] of Object.entries(secrets)) env.set(k, v);
      for (const [k, v] of secretEnv) env.set(k, v);
      // Created inside the image (symlinks followed within it), never on the host.
      await fsp.mkdir(secureJoin(rootfs, cwd), { recursive: true });
      const command = typeof ins.command === "string" ? ins.command : JSON.stringify(ins.command);
      if (step.method === "runCommands" || step.method === "aptInstall" || step.method === "pipInstall")
        log.line(`$ ${command}`);
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
          network: ins.network ?? defaultNetwork(),
          hostname: "strata",
          overlayDir: work,
          ...(this.limits ? { limits: this.limits } : {}),
        },
        { timeoutMs: step.timeoutMs, onOutput: (t) => log.write(t), signal: this.signal },
      );
      log.flush();
      if (r.exitCode !== 0 || r.timedOut) {
        throw new StepFailedError(
          index,
          step.description,
          redactor(Object.values(secrets))(command),
          r.exitCode,
          [...log.tail],
          r.durationMs,
          r.timedOut,
          {
            ...(r.timeoutMs !== undefined ? { timeoutMs: r.timeoutMs } : {}),
            ...(r.limit ? { limit: r.limit } : {}),
          },
        );
      }
    } finally {
      for (const c of cleanups.reverse()) await c().catch(() => undefined);
    }
  }

  /** In-process users of each cache mount directory, by its path (for `sharing=private`). */
  static readonly cacheMountsInUse = new Map<string, number>();

  /**
   * The host directory of a RUN cache mount: `<store>/cache-mounts/<sha256(id)>`, created on first use with the mount's
   * mode and owner, kept between builds. `locked` takes the store's lock for it for the RUN; `private` gets a fresh
   * throwaway directory while another RUN of this process uses it.
   */
  async #cacheMount(m: Extract<RunMount, { type: "cache" }>, cleanups: (() => Promise<void>)[]): Promise<string> {
    const hex = createHash("sha256").update(m.id).digest("hex");
    const dir = this.store.layout.cacheMountDir(hex);
    const fresh = async (d: string) => {
      await fsp.mkdir(d, { recursive: true });
      await fsp.chmod(d, m.mode ?? 0o755);
      await fsp.chown(d, m.uid ?? 0, m.gid ?? 0);
    };
    if (
      !(await fsp.stat(dir).then(
        (st) => st.isDirectory(),
        () => false,
      ))
    ) {
      const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
      await fresh(tmp);
      await fsp.rename(tmp, dir).catch(async () => fsp.rm(tmp, { recursive: true, force: true }));
    }
    const inUse = StepExecutor.cacheMountsInUse;
    if (m.sharing === "private" && (inUse.get(dir) ?? 0) > 0) {
      const tmp = await this.store.tempDir("cache-private");
      await fresh(tmp);
      cleanups.push(() => fsp.rm(tmp, { recursive: true, force: true }));
      return tmp;
    }
    inUse.set(dir, (inUse.get(dir) ?? 0) + 1);
    cleanups.push(async () => void inUse.set(dir, (inUse.get(dir) ?? 1) - 1));
    if (m.sharing === "locked") {
      const release = await this.store.lock(`cache-mount-${hex}`);
      cleanups.push(release);
    }
    return dir;
  }
}

/**
 * A copy of `from` (a file or a directory tree) at `to` with modes, owners, timestamps and links kept, for a writable
 * bind mount; `--reflink=auto` makes it a cheap clone where the filesystem can share extents.
 */
async function throwAwayCopy(from: string, to: string): Promise<void> {
  const r = await execa("cp", ["-a", "--reflink=auto", "--no-target-directory", "--", from, to], { reject: false });
  if (r.exitCode !== 0)
    throw new SandboxError(`could not copy ${from} for a writable bind mount: ${r.stderr.trim() || r.message}`);
}

/**
 * Puts a `select` input's files at `to` for a bind mount: a single matched file as a file, else a directory holding
 * the matched directory's contents (or the matched paths). Read-only mounts hard-link the sources where possible.
 */
async function materialise(r: ResolvedInput, to: string, readonly: boolean): Promise<void> {
  const matches = r.matches ?? [];
  const place = async (src: string, dst: string, mode: number, uid: number, gid: number) => {
    if (readonly) {
      try {
        await fsp.link(src, dst);
        return;
      } catch {
        // another filesystem: copy
      }
    }
    await fsp.copyFile(src, dst);
    await fsp.chmod(dst, mode);
    await fsp.chown(dst, uid, gid);
  };
  if (matches.length === 1 && matches[0]!.type === "file") {
    const e = r.entries.find((x) => x.type === "file")!;
    await place(e.absPath, to, e.mode, e.uid, e.gid);
    return;
  }
  await fsp.mkdir(to, { recursive: true });
  for (const m of matches) {
    const prefix =
      m.type === "dir"
        ? m.rel === ""
          ? ""
          : m.rel + "/"
        : path.posix.dirname(m.rel) === "."
          ? ""
          : path.posix.dirname(m.rel) + "/";
    for (const e of r.entries) {
      if (m.type === "dir" ? !(m.rel === "" || e.relPath.startsWith(prefix)) : e.relPath !== m.rel) continue;
      const dst = path.join(to, e.relPath.slice(prefix.length));
      await fsp.mkdir(path.dirname(dst), { recursive: true });
      if (e.type === "dir") {
        await fsp.mkdir(dst, { recursive: true });
        await fsp.chmod(dst, e.mode);
      } else if (e.type === "symlink") {
        await fsp.rm(dst, { force: true });
        await fsp.symlink(e.linkTarget ?? "", dst);
      } else {
        await fsp.rm(dst, { force: true });
        await place(e.absPath, dst, e.mode, e.uid, e.gid);
      }
    }
  }
}

/** Dockerfile WORKDIR: creates the directory (and missing parents) if it does not exist, owned by USER if set. */
async function makeWorkdir(rootfs: string, dir: string, user: string | undefined, where: string): Promise<void> {
  // `..` is resolved first (and stops at `/`), so `/a/../b` makes only /b; each component is then resolved in the image.
  const parts = lexicalImagePath(dir).split("/").filter(Boolean);
  let cur = "/";
  let owner: { uid: number; gid: number } | undefined;
  for (const p of parts) {
    cur = path.posix.join(cur, p);
    const h = secureJoin(rootfs, cur);
    const st = await fsp.lstat(h).catch(() => undefined);
    if (st?.isDirectory()) continue;
    if (st) throw new InvalidDefinitionError(`${where}: WORKDIR ${dir}: ${cur} exists and is not a directory`);
    owner ??= user ? resolveChown(rootfs, user, "USER") : { uid: 0, gid: 0 };
    await fsp.mkdir(h, { mode: 0o755 });
    await fsp.chmod(h, 0o755);
    await fsp.lchown(h, owner.uid, owner.gid);
  }
}

/**
 * Records whether a mount point, and each of its parents, exists before a RUN (in `preexisting`, by image path). The
 * destination is resolved in the image as the runtime resolves it (symlinks followed inside the root, the last one
 * too), so what is recorded is where the runtime will create its stub; nothing outside `root` is looked at.
 */
function noteMountPoints(root: string, dest: string, preexisting: Map<string, boolean>): void {
  const resolved = resolveInImage(new MountedTarget(root), dest, true);
  for (let p = resolved; p !== "/"; p = path.posix.dirname(p)) {
    if (preexisting.has(p)) break;
    const host = joinNoFollow(root, p);
    preexisting.set(p, host !== undefined && lstatSync(host, { throwIfNoEntry: false }) !== undefined);
  }
}

/**
 * Removes files and directories the runtime created only to mount over (e.g. /proc in a scratch image, the
 * runFunction module's mount point), so they never enter the layer. A stub is removed only if it did not exist
 * before the step and is still empty. The upper dir is walked without following symlinks: the RUN may have replaced
 * a stub's parent by a link to anywhere, and the scrubber must only ever remove entries of the upper dir itself.
 */
async function scrubMountStubs(upper: string, preexisting: Map<string, boolean>): Promise<void> {
  const candidates = [...preexisting].filter(([, existed]) => !existed).map(([p]) => p);
  // Deepest first, so parents become empty before they are checked.
  for (const p of candidates.sort((a, b) => b.split("/").length - a.split("/").length)) {
    const abs = joinNoFollow(upper, p);
    if (abs === undefined) continue;
    const st = await fsp.lstat(abs).catch(() => undefined);
    if (!st) continue;
    if (st.isDirectory()) {
      if ((await fsp.readdir(abs)).length === 0) await fsp.rmdir(abs);
    } else if (st.isFile() && st.size === 0) {
      await fsp.rm(abs);
    }
  }
}

/** The store's unpacked layer dirs that resolved inputs' files live in (COPY --from a stage). */
function layerDirsOf(layout: StoreLayout, resolved: readonly ResolvedInput[]): string[] {
  const out = new Set<string>();
  for (const r of resolved) {
    for (const e of r.entries) {
      const dir = layout.layerDirContaining(e.absPath);
      if (dir !== undefined) out.add(dir);
    }
  }
  return [...out];
}

/** Symlinks `<links>/<n>` to each dir (the names overlay mounts use; what prune's in-use check reads). */
async function linkLayersInUse(links: string, dirs: readonly string[]): Promise<void> {
  await fsp.mkdir(links, { recursive: true });
  for (const [i, d] of [...new Set(dirs)].entries()) await fsp.symlink(d, path.join(links, i.toString(36)));
}
