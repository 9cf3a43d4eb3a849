/**
 * What a Dockerfile translates into (`to-plan.ts`): per needed stage, a base and a step maker per instruction
 * (`StageChain`), and the options of a translation; plus what translating one RUN or COPY/ADD asks of the stage
 * translator (`TranslationContext`, implemented by `stage-translator.ts`).
 */
import type { BuilderVersion } from "../builder-version.js";
import type { Instruction } from "../plan/instructions.js";
import type { Plan, SelectRoot, Step, StepLocation } from "../plan/step.js";
import type { PlannedInstruction } from "./expand-instruction.js";
import type { NamedContextSpec } from "./named-context.js";
import type { BaseImageInfo } from "./plan-stages.js";

export interface DockerfileStepOptions {
  /** Build context directory (default: the Dockerfile's directory; for command lists, the current directory). */
  contextDir?: string;
  /** `--build-arg` values. */
  buildArgs?: Record<string, string>;
  /** Stage to build (default: the last). */
  target?: string;
  /** Ignore patterns; default: the .dockerignore lookup (`<Dockerfile>.dockerignore`, beside it, in the context). */
  ignore?: string[];
  forceBuild?: boolean;
  /**
   * The names of the secrets the build has, which `RUN --mount=type=secret,id=<name>` can use (their values travel
   * beside the plan; a step lists the names it mounts). A mount of a name not given is skipped, or with `required` an
   * error.
   */
  secrets?: readonly string[];
  /**
   * Whether every RUN gets every secret in `secrets` as an environment variable (Modal's behaviour for its SDK's
   * Dockerfile steps; a `--mount=type=secret` still mounts as BuildKit does). Default false: BuildKit's meaning, a
   * secret reaches a RUN only through its mount.
   */
  secretsAsEnv?: boolean;
  /** Extra environment for every RUN (not saved in the image config; keyed by name and value). Default none. */
  env?: Readonly<Record<string, string>>;
  /**
   * The hostname every RUN's sandbox gets (BuildKit's `hostname` option); the build arg `BUILDKIT_SANDBOX_HOSTNAME`
   * overrides it. Keyed when set. Default `strata`.
   */
  hostname?: string;
  /**
   * What the registry images named by FROM are (their config's Env, WorkingDir and OnBuild), by reference as written
   * after expansion — from {@link resolveBaseImages}. With it, expansion sees a base's ENV (`ENV PATH=/x:$PATH`) and
   * its ONBUILD triggers run right after FROM; without it, neither happens.
   */
  baseImages?: Readonly<Record<string, BaseImageInfo>>;
  /**
   * Named build contexts (`--build-context name=value`): a directory, `docker-image://ref`, `oci-layout://dir[:tag]`
   * or a git URL, by name (see `named-context.ts`). A relative directory is resolved against the current directory.
   */
  buildContexts?: Readonly<Record<string, string>>;
  /**
   * The network of every RUN that names none or `--network=default` (`docker build --network`): `none` or `host`
   * (the latter only where the builder grants the network.host entitlement). Default: the builder's own.
   */
  network?: "none" | "host";
  /**
   * Stages whose steps are rebuilt, never read from the cache (`docker build --no-cache-filter`), by name; later steps
   * follow as usual (a rebuilt step's new image id changes their keys). A name no stage has is an error.
   */
  noCacheFilter?: readonly string[];
}

/** Makes one step; `stagePlan` gives the plan of another stage's chain (for COPY --from / RUN --mount from=). */
export type StepMaker = (b: BuilderVersion, stagePlan: (stage: number, b: BuilderVersion) => Plan) => Step;

export type StageBaseSpec = { kind: "scratch" } | { kind: "stage"; stage: number } | { kind: "registry"; ref: string };

export interface StageChain {
  index: number;
  name?: string;
  base: StageBaseSpec;
  /** description of the FROM step */
  fromDescription: string;
  /** config the base starts with (a scratch stage gets the default PATH and WorkingDir "/", as in BuildKit) */
  baseInstructions: Instruction[];
  steps: { method: string; make: StepMaker }[];
  /** stages this stage's own steps read (COPY --from, RUN --mount from=) */
  reads: number[];
  /** the extra key inputs of the stage's base step (its SOURCE_DATE_EPOCH, if the build has one) */
  baseExtra: [string, string][];
  /** The secret names this stage's steps mount (sorted). */
  secrets: string[];
  /** Whether the stage's steps (and a registry FROM) are rebuilt rather than read from the cache (`noCacheFilter`). */
  forceBuild: boolean;
  /**
   * ENV and WORKDIR at the end of the stage, as far as they are known (a registry base's own ENV only when its config
   * was given: `baseImages`), for expanding what later calls append to the image (`dockerfileCommands`)
   */
  final: KnownConfig;
}

export interface DockerfileChains {
  /** the Dockerfile as named in messages */
  file: string;
  /** the stages the target needs, by index */
  stages: Map<number, StageChain>;
  target: number;
  buildOrder: number[];
  warnings: string[];
  /** The secret names the needed stages mount (sorted): the values the build must be given. */
  secrets: string[];
}

/** The ENV and WORKDIR an image is known to have when `dockerfileCommands` plans lines on it (for expansion). */
export interface KnownConfig {
  env: [string, string][];
  workdir: string;
}

/** The options a translation runs with: the context directory resolved, the ignore patterns read. */
export type TranslateOptions = DockerfileStepOptions & {
  contextDir: string;
  ignore: string[];
  /** the parsed named contexts, by normalised name */
  namedContexts?: ReadonlyMap<string, NamedContextSpec>;
  /** the ignore patterns of each directory context (its own `.dockerignore`), by its absolute path */
  contextIgnores?: ReadonlyMap<string, string[]>;
};

/** A source of files for a select input or a bind mount, made when the step is (it may embed another stage's plan). */
export type SelectRootMaker = (b: BuilderVersion, stagePlan: (stage: number, b: BuilderVersion) => Plan) => SelectRoot;

/** What translating one RUN or COPY/ADD instruction asks of the stage translator (`stage-translator.ts`). */
export interface TranslationContext {
  readonly opts: TranslateOptions;
  /** The step location of an instruction (line numbers shifted for command lists). */
  loc(pi: { location: { file: string; line: number; column: number } }): StepLocation;
  /** Throws a DockerfileSyntaxError at `at`. */
  fail(at: StepLocation | { file: string; line: number; column: number }, message: string): never;
  /** The root a `--from` names (none: the context), recording a stage read in `reads`. */
  selectRoot(from: string | undefined, self: number, reads: Set<number>, at: StepLocation): SelectRootMaker;
  /** The fields every step of an instruction shares. */
  common(
    pi: PlannedInstruction,
    instructions: Instruction[],
    extra?: [string, string][],
    buildArgs?: [string, string][],
  ): Omit<Step, "inputs">;
  /** The proxy build args given to the build, sorted by name (every RUN gets them, unkeyed). */
  proxyEnv(): [string, string][];
  /** The build args in scope that an instruction uses, with their values. */
  usedArgs(pi: PlannedInstruction): [string, string][];
}
