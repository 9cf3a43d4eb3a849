/** The options objects of the Image methods: one `Image<Method>Params` per method, each field's default stated. */
import type { BuildOptions } from "../build.js";
import { optionNames } from "./options.js";
import type { SecretLike } from "./secret.js";
import type { Volume } from "./volume.js";

/** Which paths of a local directory to leave out: .dockerignore patterns, or a predicate (see {@link IgnorePredicate}). */
export type IgnoreSpec = string[] | IgnorePredicate;

/**
 * Modal's callable `ignore`: called with each path under the directory, relative to it with `/` separators
 * (`src/app.py`), a directory before what it holds; true leaves the path out (a directory with its whole subtree).
 * It runs when the plan is made, and the paths it leaves out are what the key holds (a function cannot be keyed).
 */
export type IgnorePredicate = (path: string) => boolean;

/** Options every layer method accepts. */
export interface ImageStepParams {
  /** Rebuild this step (and so every later one) even if cached, replacing the cache entry. Default false. */
  forceBuild?: boolean;
  /** Secrets exposed as environment variables while this step runs; only their names are in the cache key. */
  secrets?: SecretLike[] | SecretLike;
  /** Extra environment for this step's commands only (not saved in the image); names and values are keyed. */
  env?: Record<string, string>;
}

/** Options of every step that runs commands. */
export interface ImageRunParams extends ImageStepParams {
  /**
   * Default (unset): the step's own network namespace with internet access and no route to the builder host (its
   * loopback, its addresses, metadata endpoints). `"none"`: loopback only. `"host"`: the host's network — the
   * network.host entitlement: a local build grants it to a step that asks; a build service only if its operator allows.
   */
  network?: "host" | "none";
  /** Kill the step after this many seconds. Default: no limit locally; a build service applies its own default and maximum. */
  timeout?: number;
}

export interface ImageRunCommandsParams extends ImageRunParams {
  /**
   * Build-time volumes by mount path: named directories kept between builds (cache mounts; see src/sdk/volume.ts),
   * e.g. `{ "/root/.cache/huggingface": Volume.fromName("hf") }`. Their contents are never in a layer or a key.
   */
  volumes?: Record<string, Volume | string>;
}

export type ImageAptInstallParams = ImageRunParams;

export interface ImagePipInstallParams extends ImageRunParams {
  findLinks?: string;
  indexUrl?: string;
  extraIndexUrl?: string;
  /** Allow pre-releases. Default false. */
  pre?: boolean;
  /** Appended verbatim to the pip command line. */
  extraOptions?: string;
}

export interface ImageUvPipInstallParams extends ImagePipInstallParams {
  /**
   * The uv version (a tag of the builder's uv image, whose `/uv` is used and keyed by content; builder version 2026.11
   * only records it in the key and takes the image's uv or STRATA_UV_BINARY). Default: the builder version's.
   */
  uvVersion?: string;
  /** Requirements files (local paths; one, or a list) installed along with the packages; their content is keyed. */
  requirements?: string | string[];
}

export interface ImageUvSyncParams extends ImageRunParams {
  /** Dependency groups to install (`--group`). Default: none beyond uv's defaults. */
  groups?: string[];
  /** Optional dependencies (extras) to install (`--extra`). Default: none. */
  extras?: string[];
  /** With a uv.lock, install exactly what it locks and never update it (`--frozen`). Default true. */
  frozen?: boolean;
  /** Appended verbatim to the `uv sync` command line. */
  extraOptions?: string;
  /** The uv version, as for uvPipInstall. Default: the builder version's. */
  uvVersion?: string;
}

export interface ImagePipInstallFromPyprojectParams extends ImagePipInstallParams {
  /** Groups of `[project.optional-dependencies]` installed too. Default []. */
  optionalDependencies?: string[];
}

export interface ImagePoetryInstallParams extends ImageRunParams {
  /** The lock file. Default: `poetry.lock` beside the pyproject (an error if there is none, unless ignoreLockfile). */
  poetryLockfile?: string;
  /** Resolve at build time without a lock file. Default false. */
  ignoreLockfile?: boolean;
  /** `poetry install --with`. */
  withGroups?: string[];
  /** `poetry install --without`. */
  withoutGroups?: string[];
  /** `poetry install --only`. */
  only?: string[];
  /** Poetry pip-installed first: "latest" (default; unpinned), "X.Y" (`~=`), "X.Y.Z" (`==`), or null: the image's own. */
  poetryVersion?: string | null;
  /** `poetry config experimental.new-installer false` first (Poetry 1.x). Default false. */
  oldInstaller?: boolean;
}

export interface ImageAddLocalPythonSourceParams {
  /** Copy into a layer at build time (true) or apply when the image is run or exported (false, the default). */
  copy?: boolean;
  /**
   * Patterns or a predicate, as addLocalDir's. Default: everything but `.py` files, dot-prefixed names and
   * `__pycache__` (Modal's NON_PYTHON_FILES).
   */
  ignore?: IgnoreSpec;
  forceBuild?: boolean;
}

export interface ImageRunFunctionParams extends ImageStepParams {
  /** Build-time volumes by mount path, as runCommands takes them. */
  volumes?: Record<string, Volume | string>;
  /** JSON-serialisable arguments passed to the function. Default []. */
  args?: unknown[];
  /** Kill the step after this many seconds. Default 3600. */
  timeout?: number;
  network?: "host" | "none";
}

export interface ImageAddLocalParams {
  /** Copy into a layer at build time (true) or apply when the image is run or exported (false, the default). */
  copy?: boolean;
  /** .dockerignore patterns relative to the added directory, or a predicate over its paths. Default: nothing left out. */
  ignore?: IgnoreSpec;
  forceBuild?: boolean;
}

export interface ImageDebianSlimParams {
  /**
   * Python series ("3.10"): one the builder version lists — 2026.11: 3.11 (bookworm) and 3.13 (trixie); 2026.12:
   * 3.10–3.14 (Debian's Python for 3.11 and 3.13, python-build-standalone on bookworm otherwise). Default: the
   * builder version's default (3.11).
   */
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
  /** Secrets every RUN of `setupDockerfileCommands` gets as environment variables (names keyed). Not the login `secret`. */
  secrets?: SecretLike[] | SecretLike;
  /** Extra environment for every RUN of `setupDockerfileCommands` (not saved in the image config; keyed). */
  env?: Record<string, string>;
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
  /**
   * Ignore patterns for the context, or a predicate over its paths. Default: `<Dockerfile>.dockerignore`, else
   * `.dockerignore` beside the Dockerfile, else in the context.
   */
  ignore?: IgnoreSpec;
  /** Rebuild every step of the Dockerfile, replacing the cache entries. Default false. */
  forceBuild?: boolean;
  /**
   * Secrets every RUN gets as environment variables (as Modal does), and that `RUN --mount=type=secret,id=<name>` can
   * mount as a file. Only their names are keyed; values never enter layers or logs.
   */
  secrets?: SecretLike[] | SecretLike;
  /**
   * Whether every RUN gets `secrets` as environment variables. Default true (Modal's meaning); false: BuildKit's, a
   * secret reaches a RUN only through its `--mount=type=secret` (what `strata build -f … --secret` uses).
   */
  secretsAsEnv?: boolean;
  /** Extra environment for every RUN (not saved in the image config); names and values are keyed. */
  env?: Record<string, string>;
  /** Adds a standalone CPython after the Dockerfile's steps, as `fromRegistry`'s `addPython` does. */
  addPython?: string;
  /**
   * The hostname every RUN sees (BuildKit's `hostname` build option); the build arg `BUILDKIT_SANDBOX_HOSTNAME`
   * overrides it. Keyed when set. Default `strata`.
   */
  hostname?: string;
  /**
   * The config (Env, WorkingDir, OnBuild) of each registry image a FROM names, by reference: from `resolveBaseImages`
   * (`src/dockerfile/to-plan.ts`). With it, expansion sees the base's ENV and its ONBUILD triggers run after FROM.
   */
  baseImages?: Record<string, { env?: readonly string[]; workingDir?: string; onBuild?: readonly string[] }>;
  /**
   * Named build contexts, as `--build-context name=value`: a directory (relative to the current directory; its own
   * `.dockerignore` applies), `docker-image://<ref>`, or a git URL (`https://host/repo.git#ref:subdir`). A stage of
   * that name is replaced by it; `FROM name`, `COPY --from=name` and `RUN --mount=from=name` read it. Default none.
   */
  buildContexts?: Record<string, string>;
  /**
   * Reproducible timestamps, as BuildKit's `SOURCE_DATE_EPOCH` build arg (which this sets; give one or the other, or
   * both equal): whole seconds since 1970-01-01 UTC. The image's and each new history entry's `created` become it,
   * and every file time later than it in the layers the Dockerfile builds is clamped to it; a RUN sees it through
   * `ARG SOURCE_DATE_EPOCH`. Keyed. Default: the build arg, else a global `ARG SOURCE_DATE_EPOCH=…`, else none.
   */
  sourceDateEpoch?: number;
  /**
   * Labels set on the image (`docker build --label`): applied to its config after the Dockerfile's own LABELs, as one
   * metadata step at the end, so no other step's key changes. Default none.
   */
  labels?: Record<string, string>;
  /**
   * Stages (by name) whose steps are rebuilt, not read from the cache (`docker build --no-cache-filter`); later steps
   * follow as usual. Default none.
   */
  noCacheFilter?: string[];
  /**
   * The network of every RUN that names none or `--network=default` (`docker build --network`): `default` (the
   * builder's own: a network namespace with egress), `none`, or `host`, which needs the network.host entitlement (a
   * local build grants it; a build service only if its operator passes --allow-network-host). Default `default`.
   */
  network?: "default" | "none" | "host";
}

export interface ImageDockerfileCommandsParams {
  /** The build context COPY/ADD read from. Default: the current directory. */
  contextDir?: string;
  /** Ignore patterns for the context, or a predicate over its paths. Default: the context's .dockerignore. */
  ignore?: IgnoreSpec;
  buildArgs?: Record<string, string>;
  forceBuild?: boolean;
  /**
   * Secrets every RUN gets as environment variables (as Modal does), and that `RUN --mount=type=secret,id=<name>` can
   * mount as a file. Only their names are keyed.
   */
  secrets?: SecretLike[] | SecretLike;
  /** Extra environment for every RUN (not saved in the image config); names and values are keyed. */
  env?: Record<string, string>;
}

export interface ImageFromScratchParams {
  forceBuild?: boolean;
}

/**
 * The options of a method that has none yet (`fromId`, `workdir`, `entrypoint`, `cmd`, `shell`, `user`, `label`):
 * kept so fields can be added later, and checked so a Modal-only option passed there is an error, not ignored.
 */
export type ImageNoParams = Record<never, never>;

export interface ImageEnvParams {
  forceBuild?: boolean;
}
export interface ImageBuildParams extends Omit<BuildOptions, "secrets"> {
  /** Builder version to compile the chain for. Default: STRATA_BUILDER_VERSION or the newest. */
  builderVersion?: string;
  /**
   * Names for the built image (`NAME[:TAG]`, tag `latest` by default), given where it was built (the store, or the
   * build service); `strata run NAME` and `Image.fromId(NAME)` then find it. Default: none.
   */
  tag?: string | readonly string[];
}

/** The options each Image method takes, by method (what {@link checkOptions} compares against). */
const stepOptions = { forceBuild: true, secrets: true, env: true } as const;
const runOptions = { ...stepOptions, network: true, timeout: true } as const;
const pipOptions = {
  ...runOptions,
  findLinks: true,
  indexUrl: true,
  extraIndexUrl: true,
  pre: true,
  extraOptions: true,
} as const;
const registryOptions = {
  forceBuild: true,
  secret: true,
  insecure: true,
  setupDockerfileCommands: true,
  addPython: true,
  secrets: true,
  env: true,
} as const;

export const OPTIONS = {
  fromScratch: optionNames<ImageFromScratchParams>({ forceBuild: true }),
  debianSlim: optionNames<ImageDebianSlimParams>({ pythonVersion: true, forceBuild: true }),
  fromRegistry: optionNames<ImageFromRegistryParams>(registryOptions),
  fromAwsEcr: optionNames<ImageFromRegistryParams>(registryOptions),
  fromGcpArtifactRegistry: optionNames<ImageFromRegistryParams & { mode?: string }>({ ...registryOptions, mode: true }),
  fromDockerfile: optionNames<ImageFromDockerfileParams>({
    contextDir: true,
    buildArgs: true,
    target: true,
    ignore: true,
    forceBuild: true,
    secrets: true,
    secretsAsEnv: true,
    env: true,
    addPython: true,
    hostname: true,
    baseImages: true,
    buildContexts: true,
    sourceDateEpoch: true,
    labels: true,
    noCacheFilter: true,
    network: true,
  }),
  aptInstall: optionNames<ImageAptInstallParams>(runOptions),
  pipInstall: optionNames<ImagePipInstallParams>(pipOptions),
  pipInstallFromRequirements: optionNames<ImagePipInstallParams>(pipOptions),
  uvPipInstall: optionNames<ImageUvPipInstallParams>({ ...pipOptions, uvVersion: true, requirements: true }),
  pipInstallFromPyproject: optionNames<ImagePipInstallFromPyprojectParams>({
    ...pipOptions,
    optionalDependencies: true,
  }),
  poetryInstallFromFile: optionNames<ImagePoetryInstallParams>({
    ...runOptions,
    poetryLockfile: true,
    ignoreLockfile: true,
    withGroups: true,
    withoutGroups: true,
    only: true,
    poetryVersion: true,
    oldInstaller: true,
  }),
  runCommands: optionNames<ImageRunCommandsParams>({ ...runOptions, volumes: true }),
  runFunction: optionNames<ImageRunFunctionParams>({
    ...stepOptions,
    args: true,
    timeout: true,
    network: true,
    volumes: true,
  }),
  addLocalPythonSource: optionNames<ImageAddLocalPythonSourceParams>({ copy: true, ignore: true, forceBuild: true }),
  uvSync: optionNames<ImageUvSyncParams>({
    ...runOptions,
    groups: true,
    extras: true,
    frozen: true,
    extraOptions: true,
    uvVersion: true,
  }),
  addLocalDir: optionNames<ImageAddLocalParams>({ copy: true, ignore: true, forceBuild: true }),
  addLocalFile: optionNames<Omit<ImageAddLocalParams, "ignore">>({ copy: true, forceBuild: true }),
  dockerfileCommands: optionNames<ImageDockerfileCommandsParams>({
    contextDir: true,
    ignore: true,
    buildArgs: true,
    forceBuild: true,
    secrets: true,
    env: true,
  }),
  env: optionNames<ImageEnvParams>({ forceBuild: true }),
  build: optionNames<ImageBuildParams>({
    builderVersion: true,
    tag: true,
    store: true,
    forceBuild: true,
    ignoreCache: true,
    log: true,
    chainName: true,
    executor: true,
    signal: true,
    limits: true,
    fetchPolicy: true,
  }),
} as const;
