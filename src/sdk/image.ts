/**
 * The Image definition: an immutable chain. Every layer method returns a new Image with one more step; nothing
 * runs until `build()`. Steps compile to instruction lists per builder version (see `compile`).
 */
import path from "node:path";
import { loadBuilderVersion, type BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError } from "../errors.js";
import { clampImagePath, clampInstructionPaths } from "../plan/image-path.js";
import { shellQuote, type Instruction } from "../plan/instructions.js";
import type { BaseSpec, Plan, Step, StepInput } from "../plan/step.js";
import type { DeferredMount } from "../store/store.js";
import { credentialsFor } from "../registry/credentials.js";
import { mergeSecrets, Secret, type SecretLike } from "./secret.js";
import { commandChain, dockerfileChains, type KnownConfig, type StageChain } from "../dockerfile/to-plan.js";
import { DEFAULT_PATH } from "../engine/config.js";
import type { BuildOptions, BuiltImage } from "../engine/build.js";
import { debianSlimStep } from "./debian-slim.js";
import { addPythonSteps, checkPythonSeries } from "./python.js";

/** Options every layer method accepts. */
export interface ImageStepParams {
  /** Rebuild this step (and so every later one) even if cached, replacing the cache entry. Default false. */
  forceBuild?: boolean;
  /** Secrets exposed as environment variables while this step runs; only their names are in the cache key. */
  secrets?: SecretLike[] | SecretLike;
  /** Extra environment for this step's commands only (not saved in the image); names and values are keyed. */
  env?: Record<string, string>;
}

export interface ImageRunCommandsParams extends ImageStepParams {
  /**
   * Default (unset): the step's own network namespace with internet access and no route to the builder host (its
   * loopback, its addresses, metadata endpoints). `"none"`: loopback only. `"host"`: the host's network — the
   * network.host entitlement: a local build grants it to a step that asks; a build service only if its operator allows.
   */
  network?: "host" | "none";
  /** Kill the step after this many seconds. Default: no limit locally; a build service applies its own default and maximum. */
  timeout?: number;
}

export type ImageAptInstallParams = ImageRunCommandsParams;

export interface ImagePipInstallParams extends ImageRunCommandsParams {
  findLinks?: string;
  indexUrl?: string;
  extraIndexUrl?: string;
  /** Allow pre-releases. Default false. */
  pre?: boolean;
  /** Appended verbatim to the pip command line. */
  extraOptions?: string;
}

export interface ImageUvPipInstallParams extends ImagePipInstallParams {
  /** Recorded in the key; the binary comes from the image or STRATA_UV_BINARY. Default: the builder's uv version. */
  uvVersion?: string;
  /** A requirements file (local path) installed along with the packages. */
  requirements?: string;
}

export interface ImageRunFunctionParams extends ImageStepParams {
  /** JSON-serialisable arguments passed to the function. Default []. */
  args?: unknown[];
  /** Kill the step after this many seconds. Default 3600. */
  timeout?: number;
  network?: "host" | "none";
}

export interface ImageAddLocalParams {
  /** Copy into a layer at build time (true) or apply when the image is run or exported (false, the default). */
  copy?: boolean;
  /** .dockerignore patterns, relative to the added directory. */
  ignore?: string[];
  forceBuild?: boolean;
}

export interface ImageDebianSlimParams {
  /** Python series, e.g. "3.11" (bookworm) or "3.13" (trixie). Default: the builder version's default. */
  pythonVersion?: string;
  forceBuild?: boolean;
}

export interface ImageFromRegistryParams {
  forceBuild?: boolean;
  /** Registry login: `REGISTRY_USERNAME` and `REGISTRY_PASSWORD`. Default: Docker's config.json, else anonymous. */
  secret?: SecretLike;
  /** Reach the registry over plain HTTP even though it is not on loopback. */
  insecure?: boolean;
  /** Dockerfile lines run on the base before anything else (`RUN …`, `ENV …`), each its own cached step. */
  setupDockerfileCommands?: string[];
  /**
   * Adds a standalone CPython of this series ("3.11"; X.Y only) to a base that lacks Python, before the setup
   * commands: python-build-standalone's `python/` tree copied to /usr/local, `python` → `python3` (below 3.13) and
   * TERMINFO_DIRS, each its own cached step. The build comes from the builder version's release table, or from
   * STRATA_PYTHON_STANDALONE (a tarball, or a directory of them) when set.
   */
  addPython?: string;
}

export interface ImageFromDockerfileParams {
  /** The build context COPY/ADD read from. Default: the Dockerfile's directory. */
  contextDir?: string;
  /** `--build-arg` values. */
  buildArgs?: Record<string, string>;
  /** The stage to build (`--target`). Default: the last stage. */
  target?: string;
  /** Ignore patterns for the context. Default: `<Dockerfile>.dockerignore`, else `.dockerignore` beside the Dockerfile, else in the context. */
  ignore?: string[];
  /** Rebuild every step of the Dockerfile, replacing the cache entries. Default false. */
  forceBuild?: boolean;
  /** Secrets for `RUN --mount=type=secret,id=<name>` (only their names are keyed; values never enter layers or logs). */
  secrets?: SecretLike[] | SecretLike;
  /** Adds a standalone CPython after the Dockerfile's steps, as `fromRegistry`'s `addPython` does. */
  addPython?: string;
  /**
   * The config (Env, WorkingDir, OnBuild) of each registry image a FROM names, by reference: from `resolveBaseImages`
   * (`src/dockerfile/to-plan.ts`). With it, expansion sees the base's ENV and its ONBUILD triggers run after FROM.
   */
  baseImages?: Record<string, { env?: readonly string[]; workingDir?: string; onBuild?: readonly string[] }>;
}

export interface ImageDockerfileCommandsParams {
  /** The build context COPY/ADD read from. Default: the current directory. */
  contextDir?: string;
  /** Ignore patterns for the context. Default: the context's .dockerignore. */
  ignore?: string[];
  buildArgs?: Record<string, string>;
  forceBuild?: boolean;
  /** Secrets for `RUN --mount=type=secret,id=<name>`. */
  secrets?: SecretLike[] | SecretLike;
}

type StepFactory = (b: BuilderVersion) => Step;

function checkBuildArgs(method: string, args: Record<string, string> | undefined): Record<string, string> | undefined {
  if (args === undefined) return undefined;
  if (!isParams(args)) throw new InvalidDefinitionError(`${method}: buildArgs must be an object of strings`);
  for (const [k, v] of Object.entries(args)) {
    if (typeof v !== "string") throw new InvalidDefinitionError(`${method}: build arg ${k} must be a string, got ${typeof v}`);
  }
  return { ...args };
}

function isParams(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** Splits variadic `(...strings, params?)` arguments; nested arrays are flattened. */
/**
 * Copies an options object at call time, so later mutation by the caller cannot change a definition (secrets are
 * resolved to a Secret, env and ignore lists copied).
 */
function snapshot<P extends object>(params: P | undefined): P {
  const c = { ...(params ?? {}) } as Record<string, unknown>;
  if (c.env && typeof c.env === "object") c.env = { ...(c.env as Record<string, string>) };
  if (Array.isArray(c.ignore)) c.ignore = [...(c.ignore as string[])];
  if (c.secrets !== undefined) c.secrets = Secret.fromObject(mergeSecrets(c.secrets as SecretLike[] | SecretLike));
  return c as P;
}

function splitArgs<P extends object>(method: string, args: readonly unknown[]): { items: string[]; params: P } {
  const last = args[args.length - 1];
  const params = snapshot((isParams(last) ? last : {}) as P);
  const rest = isParams(last) ? args.slice(0, -1) : args;
  const items: string[] = [];
  for (const a of rest.flat()) {
    if (typeof a !== "string") throw new InvalidDefinitionError(`${method}: expected strings, got ${typeof a} (${JSON.stringify(a)})`);
    items.push(a);
  }
  return { items, params };
}

function requireAbsolute(method: string, remote: string): void {
  if (!remote.startsWith("/")) throw new InvalidDefinitionError(`${method}: remote path "${remote}" must be absolute (start with /)`);
}

function timeoutMs(seconds: number | undefined, method: string): number | undefined {
  if (seconds === undefined) return undefined;
  if (!(typeof seconds === "number" && seconds > 0)) throw new InvalidDefinitionError(`${method}: timeout must be a positive number of seconds`);
  return Math.round(seconds * 1000);
}

function stepBase(method: string, description: string, params: ImageStepParams): Omit<Step, "instructions" | "inputs" | "extra"> {
  return {
    method,
    description,
    secrets: Secret.fromObject(mergeSecrets(params.secrets)),
    env: { ...(params.env ?? {}) },
    forceBuild: params.forceBuild ?? false,
  };
}

function pipFlags(p: ImagePipInstallParams): string[] {
  const out: string[] = [];
  if (p.findLinks) out.push("--find-links", shellQuote(p.findLinks));
  if (p.indexUrl) out.push("--index-url", shellQuote(p.indexUrl));
  if (p.extraIndexUrl) out.push("--extra-index-url", shellQuote(p.extraIndexUrl));
  if (p.pre) out.push("--pre");
  if (p.extraOptions) out.push(p.extraOptions);
  return out;
}

function checkPackages(method: string, pkgs: string[]): void {
  for (const p of pkgs) {
    if (p.startsWith("-")) throw new InvalidDefinitionError(`${method}: "${p}" looks like an option, not a package; pass options through extraOptions`);
  }
}

/** Renders a function for `runFunction` as a standalone ES module. */
export function functionModule(fn: (...args: never[]) => unknown, args: unknown[]): { source: string; module: string; argsJson: string } {
  const source = fn.toString();
  if (/\[native code\]\s*}$/.test(source)) throw new InvalidDefinitionError("runFunction: native or bound functions cannot be serialised; pass a plain function");
  if (/^class\b/.test(source)) throw new InvalidDefinitionError("runFunction: expected a function, got a class");
  // A function's source is an expression, except for method shorthand (`name() {…}`, `async "x"() {…}`), which
  // is only valid inside an object literal: wrap it there and take the method out.
  const parses = (expr: string) => {
    try {
      new Function(`return (${expr});`);
      return true;
    } catch {
      return false;
    }
  };
  let expression = source;
  if (!parses(source)) {
    expression = `Object.values({ ${source} })[0]`;
    if (!parses(expression)) throw new InvalidDefinitionError("runFunction: the function's source text cannot be serialised as a standalone function");
  }
  let argsJson: string;
  try {
    argsJson = JSON.stringify(args);
  } catch (e) {
    throw new InvalidDefinitionError(`runFunction: args must be JSON-serialisable (${(e as Error).message})`);
  }
  if (argsJson === undefined) throw new InvalidDefinitionError("runFunction: args must be JSON-serialisable");
  const module =
    `// Generated by Strata for runFunction.\n` +
    `const fn = (${expression});\n` +
    `const args = ${JSON.stringify(argsJson)};\n` +
    `await fn(...JSON.parse(args));\n`;
  return { source, module, argsJson };
}

/** An immutable image definition. */
export class Image {
  readonly #base: (b: BuilderVersion) => Step;
  readonly #steps: readonly StepFactory[];
  readonly #deferred: readonly DeferredMount[];
  /** The SDK method of each chained step (after the base), e.g. to apply Docker's ENTRYPOINT/CMD rule. */
  readonly #methods: readonly string[];
  /**
   * The ENV and WORKDIR this image is known to have at definition time (the debianSlim base's, and what `env`,
   * `workdir` and `dockerfileCommands` set; a registry base's own config is not known here): what variable expansion
   * in `dockerfileCommands` sees.
   */
  readonly #known: KnownConfig;

  /** @ignore Use the static constructors. */
  private constructor(
    base: (b: BuilderVersion) => Step,
    steps: readonly StepFactory[],
    deferred: readonly DeferredMount[],
    methods: readonly string[] = [],
    known: KnownConfig = { env: [], workdir: "/" },
  ) {
    this.#base = base;
    this.#steps = steps;
    this.#deferred = deferred;
    this.#methods = methods;
    this.#known = known;
  }

  // ---- bases -------------------------------------------------------------------------------------------------

  /** An empty image. */
  static fromScratch(params: { forceBuild?: boolean } = {}): Image {
    return new Image(
      () => ({ method: "fromScratch", description: "fromScratch", base: { kind: "scratch" }, instructions: [], inputs: [], secrets: Secret.none(), env: {}, forceBuild: params.forceBuild ?? false, extra: [] }),
      [],
      [],
    );
  }

  /** A minimal Debian with Python, built from Debian's archive with mmdebstrap (suite chosen by the builder version). */
  static debianSlim(params: ImageDebianSlimParams = {}): Image {
    if (params.pythonVersion !== undefined && typeof params.pythonVersion !== "string") {
      throw new InvalidDefinitionError(`debianSlim: pythonVersion must be a string like "3.11"`);
    }
    return new Image(
      (b) => debianSlimStep(b, { pythonVersion: params.pythonVersion, forceBuild: params.forceBuild }),
      [],
      [],
      [],
      // The config the engine gives a debianSlim base (src/engine/execute.ts).
      { env: [["PATH", DEFAULT_PATH], ["LANG", "C.UTF-8"]], workdir: "/" },
    );
  }

  /** An image from an OCI registry (`host[:port]/repo:tag` or `@sha256:…`). Keyed by the resolved manifest digest. */
  static fromRegistry(ref: string, params: ImageFromRegistryParams = {}): Image {
    return Image.#fromRegistryWith("fromRegistry", ref, params, { login: "registry" });
  }

  /**
   * An image from AWS ECR. `secret` holds `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`) or
   * `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` for web identity, and `AWS_REGION` unless the host names it.
   */
  static fromAwsEcr(ref: string, params: ImageFromRegistryParams & { secret: SecretLike }): Image {
    return Image.#fromRegistryWith("fromAwsEcr", ref, params, { login: "ecr" });
  }

  /**
   * An image from Google Artifact Registry. `secret` holds `SERVICE_ACCOUNT_JSON` (a service-account key); `mode:
   * "json_key"` logs in with the key itself (`_json_key`) instead of an access token.
   */
  static fromGcpArtifactRegistry(ref: string, params: ImageFromRegistryParams & { secret: SecretLike; mode?: "access_token" | "json_key" }): Image {
    return Image.#fromRegistryWith("fromGcpArtifactRegistry", ref, params, { login: "gcp", ...(params.mode ? { gcpMode: params.mode } : {}) });
  }

  static #fromRegistryWith(
    method: string,
    ref: string,
    params: ImageFromRegistryParams,
    login: { login: "registry" | "ecr" | "gcp"; gcpMode?: "access_token" | "json_key" },
  ): Image {
    if (typeof ref !== "string" || ref.trim() === "") throw new InvalidDefinitionError(`${method}: expected an image reference such as 127.0.0.1:5000/team/base:1`);
    const registrySecret = Secret.fromObject(mergeSecrets(params.secret));
    const setup = params.setupDockerfileCommands;
    if (setup !== undefined && (!Array.isArray(setup) || setup.some((l) => typeof l !== "string"))) {
      throw new InvalidDefinitionError(`${method}: setupDockerfileCommands must be an array of Dockerfile lines`);
    }
    const python = params.addPython !== undefined ? checkPythonSeries(method, params.addPython) : undefined;
    // Missing login variables are reported now, not when the build reaches the registry (no I/O happens here).
    if (login.login !== "registry") credentialsFor(login.login, registrySecret.values(), login.gcpMode ? { gcp: { mode: login.gcpMode } } : {});
    const base = new Image(
      () => ({
        method,
        description: `${method} ${ref}`,
        base: { kind: "registry", ref, insecure: params.insecure, ...login },
        instructions: [],
        inputs: [],
        // Registry credentials travel as the step's secrets; a registry base's key is its manifest digest only.
        secrets: registrySecret,
        env: {},
        forceBuild: params.forceBuild ?? false,
        extra: [],
      }),
      [],
      [],
    );
    const withPython = python !== undefined ? base.#addPython(method, python) : base;
    return setup?.length ? withPython.dockerfileCommands([...setup]) : withPython;
  }

  /** An image already in the store, by id (or unique prefix). */
  static fromId(imageId: string): Image {
    return new Image(
      () => ({ method: "fromId", description: `fromId ${imageId}`, base: { kind: "image", imageId }, instructions: [], inputs: [], secrets: Secret.none(), env: {}, forceBuild: false, extra: [] }),
      [],
      [],
    );
  }

  /**
   * An image from a Dockerfile: every instruction is its own cached step (metadata instructions change only the
   * config), multi-stage builds build only the stages `target` needs, independent stages concurrently. The Dockerfile
   * and its ignore file are read now, so syntax errors (`Dockerfile:12:5: …`) surface here.
   */
  static fromDockerfile(dockerfile: string, paramsIn: ImageFromDockerfileParams = {}): Image {
    if (typeof dockerfile !== "string" || dockerfile === "") throw new InvalidDefinitionError("fromDockerfile: expected the path of a Dockerfile");
    const params = snapshot(paramsIn);
    const python = params.addPython !== undefined ? checkPythonSeries("fromDockerfile", params.addPython) : undefined;
    const chains = dockerfileChains(dockerfile, {
      contextDir: params.contextDir,
      buildArgs: checkBuildArgs("fromDockerfile", params.buildArgs),
      target: params.target,
      ignore: params.ignore,
      forceBuild: params.forceBuild,
      secrets: params.secrets as Secret | undefined,
      baseImages: params.baseImages ? structuredClone(params.baseImages) : undefined,
    });
    const force = params.forceBuild ?? false;
    const memo = new Map<number, Image>();
    const planOf = (stage: number, b: BuilderVersion): Plan => chainOf(stage).plan(b);
    const baseOf = (c: StageChain, prefetch: readonly number[]): ((b: BuilderVersion) => Step) => {
      const base: BaseSpec = c.base.kind === "registry" ? { kind: "registry", ref: c.base.ref } : { kind: "scratch" };
      return (b) => ({
        method: "dockerfile",
        description: c.fromDescription,
        base,
        instructions: structuredClone(c.baseInstructions),
        inputs: prefetch.length ? [{ kind: "stages", name: "stages", plans: prefetch.map((s) => planOf(s, b)) }] : [],
        secrets: Secret.none(),
        env: {},
        forceBuild: force,
        extra: [],
      });
    };
    const build = (i: number, prefetch: readonly number[]): Image => {
      const c = chains.stages.get(i)!;
      let img = c.base.kind === "stage" ? (prefetch.length ? build(c.base.stage, prefetch) : chainOf(c.base.stage)) : new Image(baseOf(c, prefetch), [], []);
      for (const st of c.steps) img = img.#with(st.method, (b) => st.make(b, planOf));
      // What the stage's ENV and WORKDIR leave, for calls chained after it (dockerfileCommands expands against it).
      return new Image(img.#base, img.#steps, img.#deferred, img.#methods, c.final);
    };
    const chainOf = (i: number): Image => {
      let img = memo.get(i);
      if (!img) {
        img = build(i, []);
        memo.set(i, img);
      }
      return img;
    };
    // Every stage some needed stage reads is built first, all at once (the target's own FROM chain runs inline).
    const reads = new Set<number>();
    for (const c of chains.stages.values()) for (const r of c.reads) reads.add(r);
    const image = build(chains.target, [...reads].sort((a, b) => a - b));
    return python !== undefined ? image.#addPython("fromDockerfile", python) : image;
  }

  // ---- chain plumbing ----------------------------------------------------------------------------------------

  #with(method: string, factory: StepFactory, known: KnownConfig = this.#known): Image {
    if (this.#deferred.length > 0) {
      const d = this.#deferred[this.#deferred.length - 1]!;
      throw new InvalidDefinitionError(
        `${method}() cannot come after add${d.kind === "dir" ? "LocalDir" : "LocalFile"}("${d.localPath}", "${d.remotePath}") with copy: false: ` +
          `those files are added when the image is run or exported, after every build step. Move the addLocal* calls to the end of the chain, or pass { copy: true } to build them into a layer.`,
      );
    }
    return new Image(this.#base, [...this.#steps, factory], this.#deferred, [...this.#methods, method], known);
  }

  /** Appends `addPython`'s steps (see `./python.ts`). */
  #addPython(method: string, series: string): Image {
    let img: Image = this;
    for (const f of addPythonSteps(method, series)) img = img.#with("addPython", f);
    return img;
  }

  #meta(method: string, description: string, instructions: Instruction[], params: { forceBuild?: boolean } = {}): Image {
    const env = new Map(this.#known.env);
    let workdir = this.#known.workdir;
    for (const ins of instructions) {
      if (ins.op === "ENV") for (const [k, v] of ins.vars) env.set(k, v);
      else if (ins.op === "WORKDIR") workdir = path.posix.resolve(workdir, ins.path);
    }
    return this.#with(method, () => ({ ...stepBase(method, description, params), instructions, inputs: [], extra: [] }), { env: [...env], workdir });
  }

  // ---- layer methods -----------------------------------------------------------------------------------------

  /** Installs Debian packages: `apt-get update` then `apt-get install -y`, in one layer. */
  aptInstall(...args: Array<string | string[] | ImageAptInstallParams>): Image {
    const { items, params } = splitArgs<ImageAptInstallParams>("aptInstall", args);
    if (items.length === 0) return this;
    checkPackages("aptInstall", items);
    const net = params.network;
    return this.#with("aptInstall", () => ({
      ...stepBase("aptInstall", `aptInstall ${items.join(" ")}`, params),
      instructions: [
        { op: "RUN", command: "apt-get update", network: net },
        { op: "RUN", command: `apt-get install -y ${items.map(shellQuote).join(" ")}`, network: net },
      ],
      inputs: [],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, "aptInstall"),
    }));
  }

  /** Installs Python packages with pip. Packages are sorted, so their order does not change the key. */
  pipInstall(...args: Array<string | string[] | ImagePipInstallParams>): Image {
    const { items, params } = splitArgs<ImagePipInstallParams>("pipInstall", args);
    if (items.length === 0) return this;
    checkPackages("pipInstall", items);
    const pkgs = [...items].sort();
    return this.#with("pipInstall", () => ({
      ...stepBase("pipInstall", `pipInstall ${pkgs.join(" ")}`, params),
      instructions: [{ op: "RUN", command: ["python -m pip install", ...pkgs.map(shellQuote), ...pipFlags(params)].join(" "), network: params.network }],
      inputs: [],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, "pipInstall"),
    }));
  }

  /** Installs a local requirements file with pip. The file's content is keyed. */
  pipInstallFromRequirements(requirements: string, paramsIn: ImagePipInstallParams = {}): Image {
    const params = snapshot(paramsIn);
    const local = path.resolve(requirements);
    return this.#with("pipInstallFromRequirements", () => ({
      ...stepBase("pipInstallFromRequirements", `pipInstallFromRequirements ${requirements}`, params),
      instructions: [
        { op: "COPY", source: "requirements", dest: "/.requirements.txt" },
        { op: "RUN", command: ["python -m pip install -r /.requirements.txt", ...pipFlags(params)].join(" "), network: params.network },
      ],
      inputs: [{ kind: "file", name: "requirements", localPath: local }],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, "pipInstallFromRequirements"),
    }));
  }

  /**
   * Installs Python packages with uv. The uv binary is the image's own (`/usr/local/bin/uv`, `/usr/bin/uv`) or the
   * one named by STRATA_UV_BINARY on the build machine, mounted read-only and never captured in the layer.
   */
  uvPipInstall(...args: Array<string | string[] | ImageUvPipInstallParams>): Image {
    const { items, params } = splitArgs<ImageUvPipInstallParams>("uvPipInstall", args);
    if (items.length === 0 && !params.requirements) return this;
    checkPackages("uvPipInstall", items);
    const pkgs = [...items].sort();
    const req = params.requirements ? path.resolve(params.requirements) : undefined;
    return this.#with("uvPipInstall", (b) => {
      const flags: string[] = [];
      if (params.findLinks) flags.push("--find-links", shellQuote(params.findLinks));
      if (params.indexUrl) flags.push("--index-url", shellQuote(params.indexUrl));
      if (params.extraIndexUrl) flags.push("--extra-index-url", shellQuote(params.extraIndexUrl));
      if (params.pre) flags.push("--prerelease", "allow");
      if (params.extraOptions) flags.push(params.extraOptions);
      const ins: Instruction[] = [];
      if (req) ins.push({ op: "COPY", source: "requirements", dest: "/.uv-requirements.txt" });
      ins.push({
        op: "RUN",
        command: ["/.strata/uv pip install --system --compile-bytecode", ...(req ? ["-r /.uv-requirements.txt"] : []), ...pkgs.map(shellQuote), ...flags].join(" "),
        mounts: [{ type: "bind", source: "builder:uv", target: "/.strata/uv", readonly: true }],
        network: params.network,
      });
      return {
        ...stepBase("uvPipInstall", `uvPipInstall ${pkgs.join(" ")}${req ? ` -r ${params.requirements}` : ""}`, params),
        instructions: ins,
        inputs: req ? [{ kind: "file", name: "requirements", localPath: req }] : [],
        extra: [["uvVersion", params.uvVersion ?? b.tools.uv.defaultVersion]],
        timeoutMs: timeoutMs(params.timeout, "uvPipInstall"),
      };
    });
  }

  /** Runs shell commands, each its own RUN, in one layer. */
  runCommands(...args: Array<string | string[] | ImageRunCommandsParams>): Image {
    const { items, params } = splitArgs<ImageRunCommandsParams>("runCommands", args);
    if (items.length === 0) return this;
    const desc = items.length === 1 ? items[0]! : `${items[0]} (+${items.length - 1} more)`;
    return this.#with("runCommands", () => ({
      ...stepBase("runCommands", `runCommands ${desc}`, params),
      instructions: items.map((c) => ({ op: "RUN", command: c, network: params.network })),
      inputs: [],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, "runCommands"),
    }));
  }

  /**
   * Runs a JavaScript function inside the image with `node` and snapshots the filesystem. The function must be
   * self-contained (use `await import(...)` for modules). Its source text, arguments and secret names are keyed.
   */
  runFunction<A extends unknown[]>(fn: (...args: A) => unknown, paramsIn: ImageRunFunctionParams & { args?: A } = {}): Image {
    const params = snapshot(paramsIn);
    if (typeof fn !== "function") throw new InvalidDefinitionError("runFunction: expected a function");
    const { source, module, argsJson } = functionModule(fn as (...args: never[]) => unknown, params.args ?? []);
    const name = fn.name || "anonymous";
    return this.#with("runFunction", () => ({
      ...stepBase("runFunction", `runFunction ${name}`, params),
      instructions: [
        {
          op: "RUN",
          command: ["/.strata/node/node", "/.strata/function.mjs"],
          mounts: [
            { type: "bind", source: "builder:node", target: "/.strata/node", readonly: true },
            { type: "bind", source: "function", target: "/.strata/function.mjs", readonly: true },
          ],
          network: params.network,
        },
      ],
      inputs: [{ kind: "inline", name: "function", content: module, mode: 0o444 }],
      extra: [
        ["function.source", source],
        ["function.args", argsJson],
      ],
      timeoutMs: timeoutMs(params.timeout ?? 3600, "runFunction"),
    }));
  }

  /** Adds a local directory's contents at `remote`: a layer with `copy: true`, else applied at run/export time. */
  addLocalDir(local: string, remote: string, paramsIn: ImageAddLocalParams = {}): Image {
    const params = snapshot(paramsIn);
    requireAbsolute("addLocalDir", remote);
    const localPath = path.resolve(local);
    const ignore = [...(params.ignore ?? [])];
    if (!params.copy) return this.#defer({ kind: "dir", localPath, remotePath: remote, ignore });
    return this.#with("addLocalDir", () => ({
      ...stepBase("addLocalDir", `addLocalDir ${local} → ${remote}`, params),
      instructions: [{ op: "COPY", source: "context", dest: remote }],
      inputs: [{ kind: "dir", name: "context", localPath, ignore }],
      extra: ignore.length ? [["ignore", JSON.stringify(ignore)]] : [],
    }));
  }

  /** Adds one local file at `remote` (a trailing `/` keeps the file's name). */
  addLocalFile(local: string, remote: string, paramsIn: Omit<ImageAddLocalParams, "ignore"> = {}): Image {
    const params = snapshot(paramsIn);
    requireAbsolute("addLocalFile", remote);
    const localPath = path.resolve(local);
    const dest = remote.endsWith("/") ? remote + path.basename(localPath) : remote;
    if (!params.copy) return this.#defer({ kind: "file", localPath, remotePath: dest, ignore: [] });
    return this.#with("addLocalFile", () => ({
      ...stepBase("addLocalFile", `addLocalFile ${local} → ${dest}`, params),
      instructions: [{ op: "COPY", source: "context", dest }],
      inputs: [{ kind: "file", name: "context", localPath }],
      extra: [],
    }));
  }

  #defer(m: DeferredMount): Image {
    return new Image(this.#base, this.#steps, [...this.#deferred, m], this.#methods, this.#known);
  }

  /**
   * Appends Dockerfile instructions (no FROM), each its own cached step, as if they followed this image's FROM. Lines
   * may use continuations and heredocs; `COPY`/`ADD` read from `contextDir`.
   */
  dockerfileCommands(lines: string | string[], paramsIn: ImageDockerfileCommandsParams = {}): Image {
    const list = typeof lines === "string" ? [lines] : lines;
    if (!Array.isArray(list) || list.some((l) => typeof l !== "string")) throw new InvalidDefinitionError("dockerfileCommands: expected Dockerfile lines (strings)");
    if (list.length === 0) return this;
    const params = snapshot(paramsIn);
    const chain = commandChain(list, {
      base: this.#known,
      contextDir: params.contextDir,
      ignore: params.ignore,
      buildArgs: checkBuildArgs("dockerfileCommands", params.buildArgs),
      forceBuild: params.forceBuild,
      secrets: params.secrets as Secret | undefined,
    });
    let img: Image = this;
    const noStages = (): Plan => {
      throw new InvalidDefinitionError("dockerfileCommands: there are no other stages to read from");
    };
    for (const st of chain.steps) img = img.#with(st.method, (b) => st.make(b, noStages), chain.final);
    return img;
  }

  /** Sets environment variables in the image config (no layer). */
  env(vars: Record<string, string>, params: { forceBuild?: boolean } = {}): Image {
    const entries = Object.entries(vars);
    if (entries.length === 0) return this;
    for (const [k, v] of entries) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new InvalidDefinitionError(`env: "${k}" is not a valid variable name`);
      if (typeof v !== "string") throw new InvalidDefinitionError(`env: value of ${k} must be a string, got ${typeof v}`);
    }
    return this.#meta("env", `env ${entries.map(([k]) => k).join(" ")}`, [{ op: "ENV", vars: entries }], { ...params });
  }

  /** Sets the working directory for later steps and for the container. */
  workdir(dir: string): Image {
    requireAbsolute("workdir", dir);
    return this.#meta("workdir", `workdir ${dir}`, [{ op: "WORKDIR", path: dir }]);
  }

  entrypoint(argv: string[]): Image {
    if (!Array.isArray(argv) || argv.some((a) => typeof a !== "string")) throw new InvalidDefinitionError("entrypoint: expected an array of strings");
    return this.#meta("entrypoint", `entrypoint ${JSON.stringify(argv)}`, [{ op: "ENTRYPOINT", argv: [...argv], ...(this.#methods.includes("cmd") ? { keepCmd: true } : {}) }]);
  }

  cmd(argv: string[]): Image {
    if (!Array.isArray(argv) || argv.some((a) => typeof a !== "string")) throw new InvalidDefinitionError("cmd: expected an array of strings");
    return this.#meta("cmd", `cmd ${JSON.stringify(argv)}`, [{ op: "CMD", argv: [...argv] }]);
  }

  /** Sets the shell later `runCommands` use (default ["/bin/sh", "-c"]). */
  shell(argv: string[]): Image {
    if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== "string")) throw new InvalidDefinitionError("shell: expected a non-empty array of strings");
    return this.#meta("shell", `shell ${JSON.stringify(argv)}`, [{ op: "SHELL", argv: [...argv] }]);
  }

  /** Sets the user later steps and the container run as (`name`, `uid`, `uid:gid`). */
  user(user: string): Image {
    if (typeof user !== "string" || user === "") throw new InvalidDefinitionError("user: expected a user name or uid");
    return this.#meta("user", `user ${user}`, [{ op: "USER", user }]);
  }

  label(labels: Record<string, string>): Image {
    const entries = Object.entries(labels);
    if (entries.length === 0) return this;
    return this.#meta("label", `label ${entries.map(([k]) => k).join(" ")}`, [{ op: "LABEL", labels: entries }]);
  }

  // ---- planning and building ---------------------------------------------------------------------------------

  /** Compiles the chain into a plan for a builder version (default: STRATA_BUILDER_VERSION or the newest). */
  plan(builder: BuilderVersion | string = loadBuilderVersion()): Plan {
    const b = typeof builder === "string" ? loadBuilderVersion(builder) : builder;
    // Clones, so a caller mutating a plan cannot change the definition or another plan. Secrets are immutable
    // and keep their private values, so they are shared rather than cloned.
    // Image paths whose `..` would climb above `/` are clamped here, once, so keys agree with the build service's.
    const steps = [this.#base(b), ...this.#steps.map((f) => f(b))].map((st) => {
      const step: Step = { ...structuredClone({ ...st, secrets: undefined }), secrets: st.secrets };
      step.instructions = step.instructions.map(clampInstructionPaths);
      return step;
    });
    const deferred = structuredClone([...this.#deferred]).map((d) => ({ ...d, remotePath: clampImagePath(d.remotePath) }));
    return { builderVersion: b.version, steps, deferred };
  }

  /** Builds the image (locally, or on STRATA_SERVER when set) and returns its id and per-step results. */
  async build(options: BuildOptions = {}): Promise<BuiltImage> {
    // STRATA_SERVER builds on the shared service, unless a store is given explicitly (then the build is local).
    const server = process.env.STRATA_SERVER?.trim();
    if (!options.store && server) {
      const { remoteBuild } = await import("../service/client.js");
      return remoteBuild(this, {
        server,
        ...(process.env.STRATA_TOKEN ? { token: process.env.STRATA_TOKEN } : {}),
        forceBuild: options.forceBuild,
        ignoreCache: options.ignoreCache,
        log: options.log,
        chainName: options.chainName,
        builderVersion: options.builderVersion,
        signal: options.signal,
      });
    }
    const { buildImage } = await import("../engine/build.js");
    return buildImage(this, options);
  }
}

export type { StepInput };
