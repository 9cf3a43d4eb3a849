/**
 * The typed Dockerfile instructions (BuildKit's `instructions` package): what `parse-instructions.ts` makes of the
 * AST, and what `expand-instruction.ts` and `plan-stages.ts` plan. Types only.
 */
import type { SourceLocation } from "./errors.js";
import type { DockerfileAst, Heredoc } from "./parse.js";

/** Where an instruction is: its keyword's line and column, and its last line. */
export interface InstructionLocation extends SourceLocation {
  readonly endLine: number;
}

/** What every instruction carries. */
export interface Base {
  readonly location: InstructionLocation;
  /** the instruction text with continuations joined (no heredoc bodies) */
  readonly original: string;
}

export interface KeyValue {
  readonly key: string;
  readonly value: string;
}

export interface ArgDefinition {
  readonly key: string;
  /** the default; undefined when the ARG only declares the name */
  readonly value?: string;
}

export interface RunMount {
  readonly type: "bind" | "cache" | "tmpfs" | "secret" | "ssh";
  /** mount point; for secret/ssh without one, the default (`/run/secrets/<id>`, `/run/buildkit/ssh_agent.<n>`) */
  readonly target: string;
  readonly source?: string;
  /** stage name or index, or an image, to mount from (bind, cache) */
  readonly from?: string;
  readonly readOnly: boolean;
  /** cache id (default: the target), secret id (default: source, else the target's base name), ssh id */
  readonly id?: string;
  readonly sharing?: "shared" | "private" | "locked";
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly required?: boolean;
  /** secret: expose as this environment variable */
  readonly env?: string;
  /** tmpfs size */
  readonly sizeBytes?: number;
}

/** A COPY/ADD heredoc source: a file named `path` with `data` (chomped for `<<-`). */
export interface InlineSource {
  readonly path: string;
  readonly data: string;
  /** whether `data` undergoes variable expansion (unquoted delimiter) */
  readonly expand: boolean;
}

export interface FromCommand extends Base {
  readonly kind: "FROM";
  readonly image: string;
  /** lowercased `AS` name */
  readonly stageName?: string;
  readonly platform?: string;
}
export interface ArgCommand extends Base {
  readonly kind: "ARG";
  readonly args: readonly ArgDefinition[];
}
export interface EnvCommand extends Base {
  readonly kind: "ENV";
  readonly env: readonly KeyValue[];
}
export interface LabelCommand extends Base {
  readonly kind: "LABEL";
  readonly labels: readonly KeyValue[];
}
export interface RunCommand extends Base {
  readonly kind: "RUN";
  /** exec form: argv; shell form: one string run by SHELL */
  readonly command: readonly string[];
  readonly prependShell: boolean;
  /** heredoc files of the instruction (content unchomped; see Heredoc.chomp) */
  readonly heredocs: readonly Heredoc[];
  readonly mounts: readonly RunMount[];
  /** the `--mount` values as written (the planner re-parses them after expansion) */
  readonly mountSpecs: readonly string[];
  readonly network?: "default" | "none" | "host";
  readonly security?: "sandbox" | "insecure";
}
export interface CopyCommand extends Base {
  readonly kind: "COPY";
  readonly sources: readonly string[];
  readonly inline: readonly InlineSource[];
  readonly dest: string;
  readonly from?: string;
  readonly chown?: string;
  readonly chmod?: string;
  readonly link: boolean;
  readonly parents: boolean;
  readonly exclude: readonly string[];
}
export interface AddCommand extends Base {
  readonly kind: "ADD";
  readonly sources: readonly string[];
  readonly inline: readonly InlineSource[];
  readonly dest: string;
  readonly chown?: string;
  readonly chmod?: string;
  readonly link: boolean;
  readonly exclude: readonly string[];
  readonly checksum?: string;
  readonly keepGitDir?: boolean;
  readonly unpack?: boolean;
}
export interface WorkdirCommand extends Base {
  readonly kind: "WORKDIR";
  readonly path: string;
}
export interface UserCommand extends Base {
  readonly kind: "USER";
  readonly user: string;
}
export interface CmdCommand extends Base {
  readonly kind: "CMD";
  readonly command: readonly string[];
  readonly prependShell: boolean;
}
export interface EntrypointCommand extends Base {
  readonly kind: "ENTRYPOINT";
  readonly command: readonly string[];
  readonly prependShell: boolean;
}
export interface ShellCommand extends Base {
  readonly kind: "SHELL";
  readonly shell: readonly string[];
}
export interface ExposeCommand extends Base {
  readonly kind: "EXPOSE";
  /** as written; after planning, normalised to `port/proto` entries (ranges expanded) */
  readonly ports: readonly string[];
}
export interface HealthcheckCommand extends Base {
  readonly kind: "HEALTHCHECK";
  /** `["NONE"]`, `["CMD", argv…]` or `["CMD-SHELL", text]` (Docker's HealthConfig.Test) */
  readonly test: readonly string[];
  readonly intervalNs?: number;
  readonly timeoutNs?: number;
  readonly startPeriodNs?: number;
  readonly startIntervalNs?: number;
  readonly retries?: number;
}
export interface StopSignalCommand extends Base {
  readonly kind: "STOPSIGNAL";
  readonly signal: string;
}
export interface VolumeCommand extends Base {
  readonly kind: "VOLUME";
  readonly volumes: readonly string[];
}
export interface OnbuildCommand extends Base {
  readonly kind: "ONBUILD";
  /** the trigger as it will be stored in the image config (heredoc bodies appended) */
  readonly expression: string;
}
export interface MaintainerCommand extends Base {
  readonly kind: "MAINTAINER";
  readonly maintainer: string;
}

/** Every instruction except FROM (which starts a stage). */
export type DockerfileCommand =
  | ArgCommand
  | EnvCommand
  | LabelCommand
  | RunCommand
  | CopyCommand
  | AddCommand
  | WorkdirCommand
  | UserCommand
  | CmdCommand
  | EntrypointCommand
  | ShellCommand
  | ExposeCommand
  | HealthcheckCommand
  | StopSignalCommand
  | VolumeCommand
  | OnbuildCommand
  | MaintainerCommand;

export interface ParsedStage {
  readonly from: FromCommand;
  readonly commands: readonly DockerfileCommand[];
}

/** BuildKit's `instructions.Parse` result. */
export interface ParsedDockerfile {
  readonly ast: DockerfileAst;
  /** ARGs before the first FROM */
  readonly metaArgs: readonly ArgCommand[];
  readonly stages: readonly ParsedStage[];
}
