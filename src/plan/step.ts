/**
 * A planned build step: what the engine executes for one chained SDK call (or one Dockerfile instruction). A plan is
 * plain JSON data (no class instances, functions or `undefined`-valued fields): it can be cloned, sent and stored as is.
 * Secret values never enter it; they travel beside it as one build-wide {@link SecretValues} map.
 */
import type { Instruction } from "./instructions.js";

/**
 * The secret values of one build, by name (like BuildKit's SecretStore): given beside a plan, never part of it. A
 * step lists the names it uses (`Step.secrets`) and gets exactly those values.
 */
export type SecretValues = Readonly<Record<string, string>>;

/** A file or directory applied at run/export time rather than built into a layer (`copy: false`). */
export interface DeferredMount {
  kind: "dir" | "file";
  localPath: string;
  remotePath: string;
  ignore: string[];
}

/** Where a chain starts. */
export type BaseSpec =
  | { kind: "scratch" }
  | {
      kind: "debian";
      python: string;
      suite: string;
      mirror: string;
      variant: string;
      packages: string[];
      cmd: string[];
      /**
       * The recorded version of every package the base may hold (name → version, sorted by name): the engine refuses a
       * base whose installed packages differ (`DebianArchiveDriftError`). Absent: not pinned.
       */
      pins?: [string, string][];
    }
  /** `login` picks how credentials are obtained (plain registry login, AWS ECR, Google Artifact Registry); never keyed. */
  | {
      kind: "registry";
      ref: string;
      insecure?: boolean;
      login?: "registry" | "ecr" | "gcp";
      gcpMode?: "access_token" | "json_key";
    }
  | { kind: "image"; imageId: string };

/** A place in a Dockerfile, for error messages about a step's inputs. */
export interface StepLocation {
  file: string;
  line: number;
  column: number;
}

/**
 * The root a `select` input picks paths from: the build context (with its ignore patterns), the final image of another
 * chain (a Dockerfile stage, built first), or an image from a registry (pulled).
 */
export type SelectRoot =
  | { kind: "context"; localPath: string; ignore: string[] }
  | { kind: "stage"; stage: string; plan: Plan }
  | { kind: "image"; ref: string; insecure?: boolean }
  /**
   * A git repository at a commit (BuildKit's git source: `https://host/repo.git#ref:subdir`, `git://…`), fetched by
   * whoever builds the step through the build's fetch policy; `keepGitDir` and `checksum` override the URL's own.
   */
  | { kind: "git"; url: string; keepGitDir?: boolean; checksum?: string };

/** A local input a step reads; its content (never its mtime) goes into the key. */
export type StepInput =
  | { kind: "dir"; name: string; localPath: string; ignore: string[] }
  | { kind: "file"; name: string; localPath: string }
  | { kind: "inline"; name: string; content: string; mode: number }
  /**
   * Paths picked from a root by Dockerfile COPY/ADD source rules: each pattern is a path or a glob (Go
   * `filepath.Match` per segment) relative to the root; a matched symlink is followed inside the root; a matched
   * directory brings its whole subtree. Exactly the matched paths are keyed (name, type, mode, owner, content). With
   * `parents`, a pattern may carry a `/./` pivot and `**`; `exclude` drops paths (dockerignore syntax, relative to
   * each matched source). `allowEmpty`: a glob matching nothing is not an error.
   */
  | {
      kind: "select";
      name: string;
      root: SelectRoot;
      patterns: string[];
      exclude?: string[];
      parents?: boolean;
      location?: StepLocation;
      /**
       * Sources the client's selection matched but `--exclude` dropped by name (a build service's re-selection of a
       * client's context, which holds none of their files): added to the matches as excluded.
       */
      excludedMatches?: { rel: string; type: "file" | "dir" }[];
    }
  /**
   * A file downloaded over HTTP(S) (Dockerfile `ADD <url>`); its content digest is keyed, `checksum` verified. `help`
   * (not keyed) is added to a download error: how else the file can be provided (e.g. addPython's local tarball).
   */
  | { kind: "url"; name: string; url: string; checksum?: string; location?: StepLocation; help?: string }
  /**
   * Chains to build before this step reads anything (independent Dockerfile stages), all at once. Contributes no key
   * input: the steps that read a stage key its content through their own `select` inputs.
   */
  | { kind: "stages"; name: string; plans: Plan[] };

export interface Step {
  /** The SDK method (or Dockerfile instruction) this step came from. */
  method: string;
  /** One-line human description for logs: `aptInstall jq`. */
  description: string;
  /** Set only on the first step of a chain. */
  base?: BaseSpec;
  instructions: Instruction[];
  inputs: StepInput[];
  /**
   * The names of the secrets this step uses (sorted, unique); their values come from the build's {@link SecretValues}.
   * An SDK step's RUNs get them as env, a Dockerfile step's through its secret mounts, a registry base logs in with
   * them. The names (not values) are keyed, except a registry base's (login credentials).
   */
  secrets: string[];
  /**
   * Whether RUNs get every secret as an environment variable (the SDK's behaviour, the default). Dockerfile steps set
   * false: a secret reaches a RUN only through its `--mount=type=secret` (as a file, or `env=`) — except the SDK's
   * `dockerfileCommands`/`fromDockerfile` with `secrets`, whose RUNs set true, as Modal's do (keyed: `secrets.env`).
   */
  secretsAsEnv?: boolean;
  /** Extra env for this step's RUNs only (not in the image config); keyed by name and value. */
  env: Record<string, string>;
  /**
   * Dockerfile build args this step depends on (keyed): for a RUN, every ARG in scope (exported into its environment,
   * below the image's ENV); for other instructions, the args their expansion read.
   */
  buildArgs?: [string, string][];
  /**
   * Proxy build args (`HTTP_PROXY`, `no_proxy`, …) given to the build, for a RUN's environment (below its build args
   * and ENV). Not keyed and not in the image config or history: BuildKit passes them as the ExecOp's `ProxyEnv`, which
   * its cache digest drops, so a proxy never busts the cache.
   */
  proxyEnv?: [string, string][];
  forceBuild: boolean;
  timeoutMs?: number;
  /** Extra key inputs (function source, arguments, base recipe, tool versions). */
  extra: [string, string][];
}

/** A fully planned chain: steps in order (step 0 carries the base) plus deferred (run-time) mounts. */
export interface Plan {
  builderVersion: string;
  steps: Step[];
  deferred: DeferredMount[];
}
