/**
 * The engine: walks a plan step by step — key → index lookup → hit, or run in a sandbox → commit layer → record.
 * It knows the Store and Executor interfaces, not their backends. Cache policy (forceBuild, ignoreCache) lives
 * here, outside the keys: a forced step keeps its key but gets a new image id, so every later key changes.
 */
import type { StepLimits } from "../sandbox/step-limits.js";
import { defaultNetwork, withDefaultNetwork } from "./network.js";
import { loadBuilderVersion, type BuilderVersion } from "../builder-version.js";
import { StatCache } from "../context/walk.js";
import { BuildCancelledError } from "../errors.js";
import { stepExtra } from "../keys/step-extra.js";
import { initKeys, stepKey, type KeyInputs } from "../keys/step-key.js";
import { render } from "../plan/instructions.js";
import { locateRegistryError } from "../registry/errors.js";
import { stepSecretValues } from "../plan/secrets.js";
import type { Plan, SecretValues, Step } from "../plan/step.js";
import type { Executor } from "../sandbox/runc.js";
import type { ImageRecord, Store } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import {
  chainContext,
  excludedMatches,
  fileInputs,
  resolveInput,
  type InputContext,
  type ResolvedInput,
} from "./inputs.js";
import { stderrSink, type LogSink } from "./log.js";
import { FetchPolicy } from "../net/fetch-policy.js";

/** How the engine builds a plan. */
export interface BuildOptions {
  /** Where layers and records live. Default: S3 when STRATA_S3_BUCKET is set, else a LocalStore at STRATA_HOME. */
  store?: Store;
  /**
   * The build's secret values by name: each step gets the values of the names it lists (`Step.secrets`), nested
   * chains too. A listed name without a value is a MissingSecretError when the step runs. Default: none.
   */
  secrets?: SecretValues;
  /** Rebuild every step and replace the cache entries. Default: STRATA_FORCE_BUILD=1. */
  forceBuild?: boolean;
  /** Rebuild every step without reading or writing the cache index. Default: STRATA_IGNORE_CACHE=1. */
  ignoreCache?: boolean;
  /** Receives progress lines. Default: stderr. */
  log?: LogSink;
  /** Name under which this chain's build is remembered for `strata explain` (e.g. the definition file). */
  chainName?: string;
  executor?: Executor;
  signal?: AbortSignal;
  /** Resource limits for this build's RUN steps (the executor's policy fills in the rest and caps them). */
  limits?: Partial<StepLimits>;
  /**
   * Where the build's own fetches may connect (ADD URLs, registry bases, images read by COPY --from), and the size
   * and time limits of URL downloads. Default: `FetchPolicy.fromEnv()` — permissive unless
   * STRATA_FETCH_POLICY=restricted. The service passes its operator's policy.
   */
  fetchPolicy?: FetchPolicy;
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

/** Builds a plan (for the builder version it was compiled for) with the engine, locally. */
export async function buildPlan(plan: Plan, options: BuildOptions = {}): Promise<BuiltImage> {
  const store = options.store ?? (await (await import("../store/s3/open.js")).openStoreFromEnv());
  return buildWith(store, plan, { ...options, fetchPolicy: options.fetchPolicy ?? FetchPolicy.fromEnv() }, undefined);
}

/** A build of `plan`; nested chains (Dockerfile stages) are built the same way, sharing one input context. */
function buildWith(
  store: Store,
  plan: Plan,
  options: BuildOptions,
  context: InputContext | undefined,
): Promise<BuiltImage> {
  const inputs = context ?? nestedBuilds(store, options);
  return new Engine(store, loadBuilderVersion(plan.builderVersion), options, inputs).build(plan);
}

/**
 * The input context of a build: its nested chains are built by the engine with the build's options (secrets, force,
 * log, executor, …), each once. Exported for `strata explain`, which resolves the inputs of a build without running it.
 */
export function nestedBuilds(store: Store, options: BuildOptions): InputContext {
  // A nested chain is built for itself, not remembered as the outer chain.
  const { chainName: _chain, ...nested } = options;
  return chainContext(
    store,
    (plan, ctx) => buildWith(store, plan, nested, ctx),
    options.fetchPolicy ?? FetchPolicy.fromEnv(),
  );
}

/**
 * In-process single flight: concurrent builds of the same key in the same store and scope share one execution. The
 * store's root and scope are part of the flight's name, so a step never joins one of another store or of another
 * scope (a build service tenant's view, `ScopedStore`), whose index it could not have read either.
 */
const inflight = new Map<string, Promise<ImageRecord>>();

/** Key inputs for a step; exported for `strata explain`. */
export function keyInputsFor(
  builder: BuilderVersion,
  step: Step,
  parent: Digest | null,
  resolved: readonly ResolvedInput[],
  extra: [string, string][] = [],
): KeyInputs {
  // Sources dropped by --exclude have no file lines, but they make a COPY prepare its destination directory.
  const excluded = excludedMatches(resolved);
  return {
    builderVersion: builder.version,
    parent,
    instructions: withDefaultNetwork(step.instructions, defaultNetwork()).map(render),
    files: fileInputs(resolved),
    buildArgs: step.buildArgs ?? [],
    // A registry base's secrets are login credentials: not part of what the image is.
    secretNames: step.base?.kind === "registry" ? [] : step.secrets,
    // The plan's own extras, and those derived from what the step runs (a debian base's recipe, env values, …).
    extra: [
      ...stepExtra(step),
      ...extra,
      ...(excluded.length ? [["copy.excluded", JSON.stringify(excluded)] as [string, string]] : []),
    ],
  };
}

class Engine {
  readonly #log: LogSink;
  readonly #force: boolean;
  readonly #ignore: boolean;
  #statCache?: StatCache;
  /** Whether the plan has a RUN (else there is no sandbox to prepare). */
  #runsCommands = false;
  readonly #inputs: InputContext;

  constructor(
    private readonly store: Store,
    private readonly builder: BuilderVersion,
    private readonly options: BuildOptions,
    inputs: InputContext,
  ) {
    this.#log = options.log ?? stderrSink;
    this.#force = options.forceBuild ?? envFlag("STRATA_FORCE_BUILD");
    this.#ignore = options.ignoreCache ?? envFlag("STRATA_IGNORE_CACHE");
    this.#inputs = inputs;
  }

  async build(plan: Plan): Promise<BuiltImage> {
    await initKeys();
    // Containers of killed builds are reaped before their work dirs are reclaimed (only when there are any).
    await this.store.recover(async () => (await import("../sandbox/runc.js")).reapStaleContainers());
    this.#statCache = await StatCache.load(this.store.layout.statCacheFile);
    const started = Date.now();
    const results: StepResult[] = [];
    let parent: ImageRecord | undefined;
    const steps = [...plan.steps];
    if (plan.deferred.length) steps.push(deferredStep(plan));
    this.#runsCommands = steps.some((s) => s.instructions.some((i) => i.op === "RUN"));
    try {
      for (const [index, step] of steps.entries()) {
        if (this.options.signal?.aborted)
          throw new BuildCancelledError(`build cancelled before step ${index} (${step.description}); run it again`);
        const t0 = Date.now();
        this.#log(`=> Step ${index}: ${step.description}`);
        const { record, cached, key } = await this.#step(index, step, parent);
        const seconds = (Date.now() - t0) / 1000;
        const layer =
          record.layers.length > (parent?.layers.length ?? 0)
            ? record.layers[record.layers.length - 1]!.digest
            : undefined;
        results.push({
          index,
          description: step.description,
          cached,
          seconds,
          key,
          imageId: record.id,
          ...(layer ? { layer } : {}),
        });
        this.#log(`   ${cached ? "cached" : "built"} in ${seconds.toFixed(2)}s → ${record.id.slice(7, 19)}`);
        parent = record;
      }
    } finally {
      await this.#statCache.save().catch(() => undefined);
    }
    const final = parent!;
    if (!this.#ignore && this.options.chainName) {
      await this.store.putChain({
        name: this.options.chainName,
        builtAt: new Date().toISOString(),
        imageIds: results.map((r) => r.imageId),
      });
    }
    const built = results.filter((r) => !r.cached).length;
    this.#log(
      `=> Image ${final.id} (${results.length} steps, ${built} built, ${results.length - built} cached) in ${((Date.now() - started) / 1000).toFixed(2)}s`,
    );
    return { imageId: final.id, steps: results };
  }

  /** The step's image, whether it came from the cache, and its key (not the record's: one image can answer several keys). */
  async #step(
    index: number,
    step: Step,
    parent: ImageRecord | undefined,
  ): Promise<{ record: ImageRecord; cached: boolean; key: string }> {
    if (step.base?.kind === "image") {
      const rec = await this.store.resolveImage(step.base.imageId);
      return { record: rec, cached: true, key: rec.step?.key ?? "" };
    }
    const resolved: ResolvedInput[] = [];
    for (const input of step.inputs) {
      // An image a COPY --from or RUN --mount names that the registry refuses: say which step named it.
      const r = await resolveInput(input, this.#statCache, this.#inputs).catch((e: unknown) => {
        throw locateRegistryError(step.description, e);
      });
      resolved.push(r);
    }
    const baseExtra: [string, string][] = [];
    let pulledRef: string | undefined;
    if (step.base?.kind === "registry") {
      const { resolveImage } = await import("../registry/pull.js");
      const { registryOptions } = await import("./registry-base.js");
      const r = await resolveImage(
        step.base.ref,
        registryOptions(step.base, stepSecretValues(step, this.options.secrets), this.#inputs.fetchPolicy),
      );
      baseExtra.push(["base.manifest", r.manifestDigest]);
      pulledRef = `${r.reference.registry}/${r.reference.repository}@${r.manifestDigest}`;
    }
    const inputs = keyInputsFor(this.builder, step, parent?.id ?? null, resolved, baseExtra);
    const key = stepKey(inputs);
    const force = this.#force || step.forceBuild;
    // Entitlements are checked before the cache is read: a cached host-network result is not for a builder refusing it.
    if (withDefaultNetwork(step.instructions, defaultNetwork()).some((i) => i.op === "RUN" && i.network === "host"))
      (await this.#executorFor()).executor.checkEntitlements?.({ network: "host" });
    if (!force && !this.#ignore) {
      const hit = await this.#lookup(key);
      if (hit) return { record: hit, cached: true, key };
    }
    // A secret the step needs but the build lacks fails here, before a sandbox is prepared or a lock taken.
    stepSecretValues(step, this.options.secrets);
    const flightKey = `${this.store.root}\0${this.store.scope ?? ""}\0${key}:${force ? "force" : ""}:${this.#ignore ? "ignore" : ""}`;
    let flight = inflight.get(flightKey);
    if (!flight) {
      flight = this.#locked(key, force, async () =>
        (await this.#executorFor()).execute(index, step, parent, resolved, inputs, key, force, pulledRef),
      );
      inflight.set(flightKey, flight);
      flight.finally(() => inflight.delete(flightKey)).catch(() => undefined);
    }
    const { record, cached } = await flight.then((r) => ({ record: r, cached: false }));
    return { record, cached, key };
  }

  #stepExecutor?: Promise<import("./execute.js").StepExecutor>;
  async #executorFor(): Promise<import("./execute.js").StepExecutor> {
    this.#stepExecutor ??= import("./execute.js").then((m) => {
      const e = new m.StepExecutor(
        this.store,
        this.builder,
        this.#log,
        this.#ignore,
        this.options.secrets ?? {},
        this.options.executor,
        this.options.signal,
        this.options.limits,
        this.#inputs.fetchPolicy,
      );
      // The first miss of a build that runs commands: the sandbox prepares while inputs and layers are gathered.
      if (this.#runsCommands) e.executor.prepare?.();
      return e;
    });
    return this.#stepExecutor;
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
    secrets: [],
    env: {},
    forceBuild: false,
    extra: plan.deferred.some((d) => d.ignore.length)
      ? [["ignore", JSON.stringify(plan.deferred.map((d) => d.ignore))]]
      : [],
  };
}
