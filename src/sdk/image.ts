/**
 * The Image definition: an immutable chain. Every layer method returns a new Image with one more step; nothing
 * runs until `build()`. Steps compile to instruction lists per builder version (see `plan`): a base's step is made in
 * `base-steps.ts`, an install or run method's in `layer-steps.ts`. The secret values the steps use stay here
 * (`secretValues`), beside the plan, which names them only.
 */
import path from "node:path";
import { loadBuilderVersion, type BuilderVersion } from "../builder-version.js";
import type { BuiltImage } from "../build.js";
import { InvalidDefinitionError } from "../errors.js";
import { commandChain, dockerfileChains, type KnownConfig } from "../dockerfile/to-plan.js";
import { clampImagePath, clampInstructionPaths } from "../plan/image-path.js";
import type { Instruction } from "../plan/instructions.js";
import { withoutUndefined } from "../plan/plain.js";
import type { DeferredMount, Plan, SecretValues, StepInput } from "../plan/step.js";
import { credentialsFor } from "../registry/credentials.js";
import {
  checkBuildArgs,
  checkEnv,
  dockerfileBuildOptions,
  isParams,
  requireAbsolute,
  snapshot,
  splitArgs,
  stepBase,
} from "./arguments.js";
import {
  debianSlimBase,
  debianSlimKnown,
  dockerfileStageBase,
  imageIdBase,
  type BaseFactory,
  type RegistryLogin,
  registryBase,
  scratchBase,
  type StepFactory,
} from "./base-steps.js";
import {
  aptInstallStep,
  type LayerStep,
  pipInstallFromRequirementsStep,
  pipInstallStep,
  runCommandsStep,
  runFunctionStep,
} from "./layer-steps.js";
import { expandHome, ignorePatterns, localPath } from "./local-paths.js";
import { refuseNul, refuseNulSecretEnv } from "./nul.js";
import { checkOptions } from "./options.js";
import { withSourceDateEpoch } from "./source-date-epoch.js";
import {
  OPTIONS,
  type ImageAddLocalParams,
  type ImageAptInstallParams,
  type ImageBuildParams,
  type ImageDebianSlimParams,
  type ImageDockerfileCommandsParams,
  type ImageFromDockerfileParams,
  type ImageFromRegistryParams,
  type ImageFromScratchParams,
  type ImageNoParams,
  type ImageEnvParams,
  type ImagePipInstallParams,
  type ImageRunCommandsParams,
  type ImageRunFunctionParams,
  type ImageUvPipInstallParams,
  type ImageAddLocalPythonSourceParams,
  type ImagePipInstallFromPyprojectParams,
  type ImagePoetryInstallParams,
  type ImageUvSyncParams,
} from "./params.js";
import { addPythonSteps, checkPythonSeries } from "./python.js";
import { pipInstallFromPyprojectStep, poetryInstallFromFileStep } from "./python-project-steps.js";
import { findPythonSource, nonPythonFiles, pythonSearchPath } from "./python-source.js";
import { addChainSecrets, mergeSecrets, Secret, type ChainSecrets, type SecretLike } from "./secret.js";
import { uvPipInstallStep, uvSyncStep } from "./uv.js";
import { modalOnly } from "./modal-only.js";
import { parseImageName } from "../util/image-name.js";
import { DEFAULT_PATH } from "../oci/defaults.js";

/** What an Image is made of (the constructor's argument); unset lists are empty. */
interface ImageState {
  base: BaseFactory;
  steps?: readonly StepFactory[];
  deferred?: readonly DeferredMount[];
  methods?: readonly string[];
  known?: KnownConfig;
  secrets?: ChainSecrets;
}

/** The values of `names` that `secret` holds (the secrets a Dockerfile's steps mount). */
function pick(secret: Secret | undefined, names: readonly string[]): Record<string, string> {
  const values = secret?.values() ?? {};
  return Object.fromEntries(names.filter((n) => Object.hasOwn(values, n)).map((n) => [n, values[n]!]));
}

/** An immutable image definition. */
export class Image {
  readonly #base: BaseFactory;
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
  /** The secret values the chain's steps use (a plan lists only their names), each with the step that gave it. */
  readonly #secrets: ChainSecrets;

  /** @ignore Use the static constructors. */
  private constructor(state: ImageState) {
    this.#base = state.base;
    this.#steps = state.steps ?? [];
    this.#deferred = state.deferred ?? [];
    this.#methods = state.methods ?? [];
    this.#known = state.known ?? { env: [], workdir: "/" };
    this.#secrets = state.secrets ?? new Map();
  }

  /** This image's state with `changes` applied. */
  #next(changes: Partial<ImageState>): Image {
    return new Image({
      base: this.#base,
      steps: this.#steps,
      deferred: this.#deferred,
      methods: this.#methods,
      known: this.#known,
      secrets: this.#secrets,
      ...changes,
    });
  }

  /** This image, also using the secret values `values` (given to `step`); a name given two values is an error. */
  #withSecrets(step: string, values: Readonly<Record<string, string>>): Image {
    return this.#next({ secrets: addChainSecrets(this.#secrets, step, values) });
  }

  // ---- bases -------------------------------------------------------------------------------------------------

  /** An empty image. */
  static fromScratch(params: ImageFromScratchParams = {}): Image {
    checkOptions("fromScratch", params, OPTIONS.fromScratch);
    return new Image({ base: scratchBase(params) });
  }

  /**
   * A minimal Debian with Python, built from Debian's archive with mmdebstrap: the suite, packages (and their recorded
   * versions), where Python comes from (Debian's own, or python-build-standalone for a series the suite lacks), uv and
   * a compiler toolchain are the builder version's (`builders/<version>.json`).
   */
  static debianSlim(params: ImageDebianSlimParams = {}): Image {
    checkOptions("debianSlim", params, OPTIONS.debianSlim);
    refuseNul("debianSlim", "", params);
    if (params.pythonVersion !== undefined && typeof params.pythonVersion !== "string") {
      throw new InvalidDefinitionError(`debianSlim: pythonVersion must be a string like "3.11"`);
    }
    return new Image({ base: debianSlimBase(params), known: debianSlimKnown() });
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
  static fromGcpArtifactRegistry(
    ref: string,
    params: ImageFromRegistryParams & { secret: SecretLike; mode?: "access_token" | "json_key" },
  ): Image {
    return Image.#fromRegistryWith("fromGcpArtifactRegistry", ref, params, {
      login: "gcp",
      ...(params.mode ? { gcpMode: params.mode } : {}),
    });
  }

  static #fromRegistryWith(
    method: "fromRegistry" | "fromAwsEcr" | "fromGcpArtifactRegistry",
    ref: string,
    params: ImageFromRegistryParams,
    login: RegistryLogin,
  ): Image {
    checkOptions(method, params, OPTIONS[method]);
    if (typeof ref !== "string" || ref.trim() === "")
      throw new InvalidDefinitionError(`${method}: expected an image reference such as 127.0.0.1:5000/team/base:1`);
    refuseNul(method, "ref", ref);
    refuseNul(method, "", params, ["secrets", "secret"]);
    refuseNulSecretEnv(method, params.secrets);
    const registrySecret = Secret.fromObject(mergeSecrets(params.secret));
    refuseNul(method, "secret", registrySecret.values());
    const setup = params.setupDockerfileCommands;
    if (setup !== undefined && (!Array.isArray(setup) || setup.some((l) => typeof l !== "string"))) {
      throw new InvalidDefinitionError(`${method}: setupDockerfileCommands must be an array of Dockerfile lines`);
    }
    const python = params.addPython !== undefined ? checkPythonSeries(method, params.addPython) : undefined;
    // Missing login variables are reported now, not when the build reaches the registry (no I/O happens here).
    if (login.login !== "registry")
      credentialsFor(login.login, registrySecret.values(), login.gcpMode ? { gcp: { mode: login.gcpMode } } : {});
    const description = `${method} ${ref}`;
    const base = new Image({
      base: registryBase(method, description, ref, params, login, registrySecret),
    }).#withSecrets(description, registrySecret.values());
    const withPython = python !== undefined ? base.#addPython(method, python) : base;
    // The setup lines are Dockerfile steps as dockerfileCommands makes them: `secrets` and `env` reach every RUN
    // (the registry login `secret` never does).
    if (!setup?.length) return withPython;
    return withPython.#dockerfileLines(method, [...setup], {
      ...(params.secrets !== undefined ? { secrets: params.secrets } : {}),
      ...(params.env !== undefined ? { env: params.env } : {}),
    });
  }

  /**
   * An image named in the store (`strata build --tag`, `strata tag`, `image.build({ tag })`), as Modal's `from_name`:
   * `NAME[:TAG]`, tag `latest` unless given. It never builds: a name nothing holds fails the build with the names
   * there are. On a build service, the caller's own names.
   */
  static fromName(name: string, params: ImageNoParams = {}): Image {
    checkOptions("fromName", params, []);
    refuseNul("fromName", "name", name);
    let full: string;
    try {
      full = parseImageName(name).full;
    } catch (e) {
      throw new InvalidDefinitionError(`fromName: ${(e as Error).message}`, { cause: e });
    }
    return new Image({ base: imageIdBase(full) });
  }

  /** Modal's `micromamba`: not offered (see {@link modalOnly}). */
  static micromamba(..._args: unknown[]): never {
    return modalOnly("micromamba");
  }

  /** An image already in the store, by id (or unique prefix). */
  static fromId(imageId: string, params: ImageNoParams = {}): Image {
    checkOptions("fromId", params, []);
    refuseNul("fromId", "imageId", imageId);
    return new Image({ base: imageIdBase(imageId) });
  }

  /**
   * An image from a Dockerfile: every instruction is its own cached step (metadata instructions change only the
   * config), multi-stage builds build only the stages `target` needs, independent stages concurrently. The Dockerfile
   * and its ignore file are read now, so syntax errors (`Dockerfile:12:5: …`) surface here.
   */
  static fromDockerfile(dockerfileIn: string, paramsIn: ImageFromDockerfileParams = {}): Image {
    checkOptions("fromDockerfile", paramsIn, OPTIONS.fromDockerfile);
    if (typeof dockerfileIn !== "string" || dockerfileIn === "")
      throw new InvalidDefinitionError("fromDockerfile: expected the path of a Dockerfile");
    refuseNul("fromDockerfile", "dockerfile", dockerfileIn);
    refuseNul("fromDockerfile", "", paramsIn, ["secrets"]);
    // With secretsAsEnv: false a secret reaches a RUN only as a mounted file, which may hold any bytes.
    if (paramsIn.secretsAsEnv !== false) refuseNulSecretEnv("fromDockerfile", paramsIn.secrets);
    const dockerfile = expandHome(dockerfileIn);
    const params = snapshot(paramsIn);
    const python = params.addPython !== undefined ? checkPythonSeries("fromDockerfile", params.addPython) : undefined;
    const contextDir =
      params.contextDir !== undefined ? localPath("fromDockerfile", params.contextDir, "context directory") : undefined;
    const { labels, noCacheFilter, network } = dockerfileBuildOptions(params);
    const chains = dockerfileChains(dockerfile, {
      contextDir,
      buildArgs: withSourceDateEpoch(checkBuildArgs("fromDockerfile", params.buildArgs), params.sourceDateEpoch),
      target: params.target,
      ignore: ignorePatterns("fromDockerfile", contextDir ?? path.dirname(path.resolve(dockerfile)), params.ignore),
      forceBuild: params.forceBuild,
      secrets: (params.secrets as Secret | undefined)?.names,
      secretsAsEnv: params.secretsAsEnv ?? true,
      env: checkEnv("fromDockerfile", params.env),
      ...(params.hostname !== undefined ? { hostname: params.hostname } : {}),
      baseImages: params.baseImages ? structuredClone(params.baseImages) : undefined,
      buildContexts: checkBuildArgs("fromDockerfile", params.buildContexts, "buildContexts"),
      ...(noCacheFilter.length ? { noCacheFilter } : {}),
      ...(network !== undefined ? { network } : {}),
    });
    const force = params.forceBuild ?? false;
    const memo = new Map<number, Image>();
    const planOf = (stage: number, b: BuilderVersion): Plan => chainOf(stage).plan(b);
    const build = (i: number, prefetch: readonly number[]): Image => {
      const c = chains.stages.get(i)!;
      let img =
        c.base.kind === "stage"
          ? prefetch.length
            ? build(c.base.stage, prefetch)
            : chainOf(c.base.stage)
          : // A filtered stage's registry FROM is resolved again; a scratch FROM has nothing to rebuild (forcing it
            // would only give the scratch base, which other stages share, a new id).
            new Image({
              base: dockerfileStageBase(c, prefetch, force || (c.forceBuild && c.base.kind === "registry"), planOf),
            });
      for (const st of c.steps) img = img.#with(st.method, (b) => st.make(b, planOf));
      // What the stage's ENV and WORKDIR leave, for calls chained after it (dockerfileCommands expands against it).
      return img.#next({ known: c.final });
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
    // The values of the secrets the needed stages mount (nested stages included): the image's, as one step's.
    const image = build(
      chains.target,
      [...reads].sort((a, b) => a - b),
    ).#withSecrets(`fromDockerfile ${dockerfileIn}`, pick(params.secrets as Secret | undefined, chains.secrets));
    const withPython = python !== undefined ? image.#addPython("fromDockerfile", python) : image;
    return labels.length ? withPython.#labels(labels, { forceBuild: force }) : withPython;
  }

  // ---- chain plumbing ----------------------------------------------------------------------------------------

  /** Appends a step; `secrets`: the values it uses, with the step's description (default none). */
  #with(
    method: string,
    factory: StepFactory,
    known: KnownConfig = this.#known,
    secrets?: { step: string; values: Record<string, string> },
  ): Image {
    if (this.#deferred.length > 0) {
      const d = this.#deferred[this.#deferred.length - 1]!;
      throw new InvalidDefinitionError(
        `${method}() cannot come after add${d.kind === "dir" ? "LocalDir" : "LocalFile"}("${d.localPath}", "${d.remotePath}") with copy: false: ` +
          `those files are added when the image is run or exported, after every build step. Move the addLocal* calls to the end of the chain, or pass { copy: true } to build them into a layer.`,
      );
    }
    const next = this.#next({ steps: [...this.#steps, factory], methods: [...this.#methods, method], known });
    return secrets ? next.#withSecrets(secrets.step, secrets.values) : next;
  }

  /** Appends a layer method's step, if it has one (else this image: nothing to install or run). */
  #append(step: LayerStep | undefined): Image {
    return step ? this.#with(step.method, step.make, this.#known, step.secrets) : this;
  }

  /** Appends `addPython`'s steps (see `./python.ts`). */
  #addPython(method: string, series: string): Image {
    let img: Image = this;
    for (const f of addPythonSteps(method, series)) img = img.#with("addPython", f);
    return img;
  }

  #meta(
    method: string,
    description: string,
    instructions: Instruction[],
    params: { forceBuild?: boolean } = {},
  ): Image {
    const env = new Map(this.#known.env);
    let workdir = this.#known.workdir;
    for (const ins of instructions) {
      if (ins.op === "ENV") for (const [k, v] of ins.vars) env.set(k, v);
      else if (ins.op === "WORKDIR") workdir = path.posix.resolve(workdir, ins.path);
    }
    return this.#with(
      method,
      () => ({ ...stepBase(method, description, params), instructions, inputs: [], extra: [] }),
      { env: [...env], workdir },
    );
  }

  // ---- layer methods -----------------------------------------------------------------------------------------

  /** Installs Debian packages: `apt-get update` then `apt-get install -y`, in one layer. */
  aptInstall(...args: Array<string | string[] | ImageAptInstallParams>): Image {
    return this.#append(aptInstallStep(args));
  }

  /** Installs Python packages with pip. Packages are sorted, so their order does not change the key. */
  pipInstall(...args: Array<string | string[] | ImagePipInstallParams>): Image {
    return this.#append(pipInstallStep(args));
  }

  /** Installs a local requirements file with pip. The file's content is keyed. */
  pipInstallFromRequirements(requirements: string, paramsIn: ImagePipInstallParams = {}): Image {
    return this.#append(pipInstallFromRequirementsStep(requirements, paramsIn));
  }

  /**
   * Installs a local pyproject's `[project] dependencies` (and the `optionalDependencies` groups) with pip. The file
   * is read now; the sorted package list is keyed, as with pipInstall.
   */
  pipInstallFromPyproject(pyproject: string, paramsIn: ImagePipInstallFromPyprojectParams = {}): Image {
    const step = pipInstallFromPyprojectStep(pyproject, paramsIn);
    return step ? this.#append(step) : this;
  }

  /**
   * Installs a Poetry project's dependencies (not the project itself) into the image's Python, from the pyproject
   * and its lock file (both keyed by content): `poetry install --no-root` in /tmp/poetry, as Modal's builder does.
   */
  poetryInstallFromFile(pyproject: string, paramsIn: ImagePoetryInstallParams = {}): Image {
    return this.#append(poetryInstallFromFileStep(pyproject, paramsIn));
  }

  /**
   * Installs Python packages with uv, mounted read-only for the step and never captured in the layer: from builder
   * version 2026.12 on, `/uv` of the builder's uv image (`ghcr.io/astral-sh/uv:<uvVersion>`, or the STRATA_UV_IMAGE
   * mirror), keyed by content; with 2026.11, the image's own uv or STRATA_UV_BINARY.
   */
  uvPipInstall(...args: Array<string | string[] | ImageUvPipInstallParams>): Image {
    return this.#append(uvPipInstallStep(args));
  }

  /**
   * Installs a uv project's dependencies (its pyproject.toml and, when present, uv.lock: used as is with `frozen`, the
   * default) into the virtual environment `/.uv/.venv`, put first on PATH, as Modal's `uv_sync`. Default directory "./".
   */
  uvSync(projectDir = "./", params: ImageUvSyncParams = {}): Image {
    const pathBefore = this.#known.env.find(([k]) => k === "PATH")?.[1] ?? DEFAULT_PATH;
    const step = uvSyncStep(projectDir, params, pathBefore);
    const env = new Map(this.#known.env);
    env.set("PATH", `/.uv/.venv/bin:${pathBefore}`);
    return this.#with(step.method, step.make, { env: [...env], workdir: this.#known.workdir }, step.secrets);
  }

  /** Modal's `micromamba_install`: not offered (see {@link modalOnly}). */
  micromambaInstall(..._args: unknown[]): never {
    return modalOnly("micromambaInstall");
  }

  /** Modal's `pip_install_private_repos`: not offered (see {@link modalOnly}). */
  pipInstallPrivateRepos(..._args: unknown[]): never {
    return modalOnly("pipInstallPrivateRepos");
  }

  /** Runs shell commands, each its own RUN, in one layer. */
  runCommands(...args: Array<string | string[] | ImageRunCommandsParams>): Image {
    return this.#append(runCommandsStep(args));
  }

  /**
   * Runs a JavaScript function inside the image with `node` and snapshots the filesystem. The function must be
   * self-contained (use `await import(...)` for modules). Its source text, arguments and secret names are keyed.
   */
  runFunction<A extends unknown[]>(
    fn: (...args: A) => unknown,
    paramsIn: ImageRunFunctionParams & { args?: A } = {},
  ): Image {
    return this.#append(runFunctionStep(fn as (...args: never[]) => unknown, paramsIn));
  }

  /** Adds a local directory's contents at `remote`: a layer with `copy: true`, else applied at run/export time. */
  addLocalDir(local: string, remote: string, paramsIn: ImageAddLocalParams = {}): Image {
    checkOptions("addLocalDir", paramsIn, OPTIONS.addLocalDir);
    refuseNul("addLocalDir", "local", local);
    refuseNul("addLocalDir", "remote", remote);
    refuseNul("addLocalDir", "", paramsIn);
    return this.#addDir("addLocalDir", local, remote, snapshot(paramsIn));
  }

  #addDir(method: string, local: string, remote: string, params: ImageAddLocalParams): Image {
    requireAbsolute(method, remote);
    const localDir = localPath(method, local, "directory");
    const ignore = ignorePatterns(method, localDir, params.ignore) ?? [];
    if (!params.copy) return this.#defer({ kind: "dir", localPath: localDir, remotePath: remote, ignore });
    return this.#with(method, () => ({
      ...stepBase(method, `${method} ${local} → ${remote}`, params),
      instructions: [{ op: "COPY", source: "context", dest: remote }],
      inputs: [{ kind: "dir", name: "context", localPath: localDir, ignore }],
      extra: ignore.length ? [["ignore", JSON.stringify(ignore)]] : [],
    }));
  }

  /**
   * Adds local Python modules (packages or single files) under `/root`, found along PYTHONPATH then the current
   * directory as Python would find them (see src/sdk/python-source.ts). By default only `.py` files are added.
   */
  addLocalPythonSource(...args: Array<string | ImageAddLocalPythonSourceParams>): Image {
    const method = "addLocalPythonSource";
    const { items, params } = splitArgs<ImageAddLocalPythonSourceParams>(method, args, OPTIONS.addLocalPythonSource);
    if (items.length === 0) throw new InvalidDefinitionError(`${method}: name at least one module`);
    const search = pythonSearchPath();
    let img: Image = this;
    for (const module of items)
      for (const src of findPythonSource(method, module, search)) {
        const opts = { copy: params.copy, forceBuild: params.forceBuild };
        img =
          src.kind === "module"
            ? img.#addFile(method, src.localPath, src.remotePath, opts)
            : img.#addDir(method, src.localPath, src.remotePath, {
                ...opts,
                ignore: params.ignore ?? nonPythonFiles(src.localPath),
              });
      }
    return img;
  }

  /** Adds one local file at `remote` (a trailing `/` keeps the file's name). */
  addLocalFile(local: string, remote: string, paramsIn: Omit<ImageAddLocalParams, "ignore"> = {}): Image {
    checkOptions("addLocalFile", paramsIn, OPTIONS.addLocalFile);
    refuseNul("addLocalFile", "local", local);
    refuseNul("addLocalFile", "remote", remote);
    return this.#addFile("addLocalFile", local, remote, snapshot(paramsIn));
  }

  #addFile(method: string, local: string, remote: string, params: Omit<ImageAddLocalParams, "ignore">): Image {
    requireAbsolute(method, remote);
    const localFile = localPath(method, local, "file");
    const dest = remote.endsWith("/") ? remote + path.basename(localFile) : remote;
    if (!params.copy) return this.#defer({ kind: "file", localPath: localFile, remotePath: dest, ignore: [] });
    return this.#with(method, () => ({
      ...stepBase(method, `${method} ${local} → ${dest}`, params),
      instructions: [{ op: "COPY", source: "context", dest }],
      inputs: [{ kind: "file", name: "context", localPath: localFile }],
      extra: [],
    }));
  }

  #defer(m: DeferredMount): Image {
    return this.#next({ deferred: [...this.#deferred, m] });
  }

  /**
   * Appends Dockerfile instructions (no FROM), each its own cached step, as if they followed this image's FROM. Lines
   * may use continuations and heredocs; `COPY`/`ADD` read from `contextDir`.
   */
  dockerfileCommands(lines: string | string[], paramsIn: ImageDockerfileCommandsParams = {}): Image {
    checkOptions("dockerfileCommands", paramsIn, OPTIONS.dockerfileCommands);
    return this.#dockerfileLines("dockerfileCommands", lines, paramsIn);
  }

  /** `dockerfileCommands` for `method` (it, or a registry base's setupDockerfileCommands); every RUN gets the secrets as env. */
  #dockerfileLines(method: string, lines: string | string[], paramsIn: ImageDockerfileCommandsParams): Image {
    const list = typeof lines === "string" ? [lines] : lines;
    if (!Array.isArray(list) || list.some((l) => typeof l !== "string"))
      throw new InvalidDefinitionError(`${method}: expected Dockerfile lines (strings)`);
    if (list.length === 0) return this;
    // A NUL in the lines themselves is a located Dockerfile error (the parser's); the options are checked here.
    refuseNul(method, "", paramsIn, ["secrets"]);
    refuseNulSecretEnv(method, paramsIn.secrets);
    const params = snapshot(paramsIn);
    const contextDir = localPath(method, params.contextDir ?? ".", "context directory");
    const chain = commandChain(list, {
      base: this.#known,
      contextDir,
      ignore: ignorePatterns(method, contextDir, params.ignore),
      buildArgs: checkBuildArgs(method, params.buildArgs),
      forceBuild: params.forceBuild,
      secrets: (params.secrets as Secret | undefined)?.names,
      secretsAsEnv: true,
      env: checkEnv(method, params.env),
    });
    let img: Image = this;
    const noStages = (): Plan => {
      throw new InvalidDefinitionError(`${method}: there are no other stages to read from`);
    };
    for (const st of chain.steps) img = img.#with(st.method, (b) => st.make(b, noStages), chain.final);
    return img.#withSecrets(method, pick(params.secrets as Secret | undefined, chain.secrets));
  }

  /** Sets environment variables in the image config (no layer). */
  env(vars: Record<string, string>, params: ImageEnvParams = {}): Image {
    checkOptions("env", params, OPTIONS.env);
    const entries = Object.entries(vars);
    if (entries.length === 0) return this;
    for (const [k, v] of entries) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
        throw new InvalidDefinitionError(`env: "${k}" is not a valid variable name`);
      if (typeof v !== "string")
        throw new InvalidDefinitionError(`env: value of ${k} must be a string, got ${typeof v}`);
    }
    refuseNul("env", "vars", vars);
    return this.#meta("env", `env ${entries.map(([k]) => k).join(" ")}`, [{ op: "ENV", vars: entries }], { ...params });
  }

  /**
   * Sets the working directory for later steps and for the container. A relative path resolves against the previous
   * one, as Docker's WORKDIR does (when the step runs, so a registry base's own WorkingDir counts).
   */
  workdir(dir: string, params: ImageNoParams = {}): Image {
    checkOptions("workdir", params, []);
    if (typeof dir !== "string" || dir === "") throw new InvalidDefinitionError("workdir: expected a path");
    refuseNul("workdir", "dir", dir);
    return this.#meta("workdir", `workdir ${dir}`, [{ op: "WORKDIR", path: dir }]);
  }

  entrypoint(argv: string[], params: ImageNoParams = {}): Image {
    checkOptions("entrypoint", params, []);
    if (!Array.isArray(argv) || argv.some((a) => typeof a !== "string"))
      throw new InvalidDefinitionError("entrypoint: expected an array of strings");
    refuseNul("entrypoint", "argv", argv);
    return this.#meta("entrypoint", `entrypoint ${JSON.stringify(argv)}`, [
      { op: "ENTRYPOINT", argv: [...argv], ...(this.#methods.includes("cmd") ? { keepCmd: true } : {}) },
    ]);
  }

  cmd(argv: string[], params: ImageNoParams = {}): Image {
    checkOptions("cmd", params, []);
    if (!Array.isArray(argv) || argv.some((a) => typeof a !== "string"))
      throw new InvalidDefinitionError("cmd: expected an array of strings");
    refuseNul("cmd", "argv", argv);
    return this.#meta("cmd", `cmd ${JSON.stringify(argv)}`, [{ op: "CMD", argv: [...argv] }]);
  }

  /** Sets the shell later `runCommands` use (default ["/bin/sh", "-c"]). */
  shell(argv: string[], params: ImageNoParams = {}): Image {
    checkOptions("shell", params, []);
    if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== "string"))
      throw new InvalidDefinitionError("shell: expected a non-empty array of strings");
    refuseNul("shell", "argv", argv);
    return this.#meta("shell", `shell ${JSON.stringify(argv)}`, [{ op: "SHELL", argv: [...argv] }]);
  }

  /** Sets the user later steps and the container run as (`name`, `uid`, `uid:gid`). */
  user(user: string, params: ImageNoParams = {}): Image {
    checkOptions("user", params, []);
    if (typeof user !== "string" || user === "") throw new InvalidDefinitionError("user: expected a user name or uid");
    refuseNul("user", "user", user);
    return this.#meta("user", `user ${user}`, [{ op: "USER", user }]);
  }

  /** The LABEL step of `label` (and `fromDockerfile`'s `labels`). */
  #labels(entries: [string, string][], params: { forceBuild?: boolean } = {}): Image {
    return this.#meta(
      "label",
      `label ${entries.map(([k]) => k).join(" ")}`,
      [{ op: "LABEL", labels: entries }],
      params,
    );
  }

  label(labels: Record<string, string>, params: ImageNoParams = {}): Image {
    checkOptions("label", params, []);
    if (!isParams(labels)) throw new InvalidDefinitionError("label: expected an object of label names to strings");
    for (const [k, v] of Object.entries(labels))
      if (typeof v !== "string")
        throw new InvalidDefinitionError(`label: value of ${k} must be a string, got ${typeof v}`);
    refuseNul("label", "labels", labels);
    const entries = Object.entries(labels);
    if (entries.length === 0) return this;
    return this.#labels(entries);
  }

  // ---- planning and building ---------------------------------------------------------------------------------

  /**
   * Compiles the chain into a plan for a builder version (default: STRATA_BUILDER_VERSION or the newest): plain data,
   * naming the secrets each step uses but holding no values (those are {@link secretValues}).
   */
  plan(builder: BuilderVersion | string = loadBuilderVersion()): Plan {
    const b = typeof builder === "string" ? loadBuilderVersion(builder) : builder;
    // Clones, so a caller mutating a plan cannot change the definition or another plan; optional fields left unset
    // are absent, so a plan equals its JSON. Image paths whose `..` would climb above `/` are clamped here, once,
    // so keys agree with the build service's.
    const steps = [...[this.#base(b)].flat(), ...this.#steps.map((f) => f(b))].map((st) => {
      const step = withoutUndefined(structuredClone(st));
      step.instructions = step.instructions.map(clampInstructionPaths);
      return step;
    });
    const deferred = structuredClone([...this.#deferred]).map((d) => ({
      ...d,
      remotePath: clampImagePath(d.remotePath),
    }));
    return { builderVersion: b.version, steps, deferred };
  }

  /**
   * The values of the secrets this image's steps use, by name (a registry base's login and nested Dockerfile stages'
   * mounts included): what a build of {@link plan} needs as its `secrets`.
   */
  secretValues(): SecretValues {
    return Object.freeze(Object.fromEntries([...this.#secrets].map(([name, s]) => [name, s.value])));
  }

  /** Builds the image (locally, or on the build service named by STRATA_SERVER; see `src/build.ts`). */
  async build(params: ImageBuildParams = {}): Promise<BuiltImage> {
    checkOptions("build", params, OPTIONS.build);
    const { builderVersion, ...options } = params;
    const { build } = await import("../build.js");
    return build(this.plan(builderVersion), { ...options, secrets: this.secretValues() });
  }
}

export type { StepInput };
