/**
 * Stage 2 of the Dockerfile front end: one typed instruction, in its stage's scope → a planned instruction. Variables
 * are expanded exactly where BuildKit's `dockerfile2llb` dispatch expands them (see the list in `plan-stages.ts`),
 * with the stage's ARGs in scope overlaid by its ENV; the stage's ARG/ENV/WORKDIR state is updated; COPY --from and
 * RUN --mount from= are resolved to stages (planned first, through the planner) or images. Pure.
 */
import { ShellExpansionError } from "./errors.js";
import type {
  ArgDefinition,
  CopyCommand,
  DockerfileCommand,
  ParsedDockerfile,
  RunCommand,
  RunMount,
  WorkdirCommand,
} from "./commands.js";
import type { Position } from "./parse.js";
import type { Ctx } from "./parse-instructions.js";
import { MountError, parseMount } from "./run-mount.js";
import { ShellLex } from "./shell-lex.js";

/** A step's view of the build args: which it used (expansion) and which a RUN sees in its environment. */
export interface PlanMeta {
  /** build args (ARGs in scope, not shadowed by ENV) this instruction's expansion read */
  readonly usedArgs: readonly string[];
  /** ARGs in scope with a value and not shadowed by ENV, sorted by name (a RUN gets them in its environment) */
  readonly argsInScope: readonly (readonly [string, string])[];
  /** true for instructions that came from the base image's ONBUILD triggers */
  readonly fromOnBuild?: boolean;
}

export type PlannedRun = RunCommand & PlanMeta;
export type PlannedCopy = CopyCommand &
  PlanMeta & {
    /** the resolved --from: a stage index or an image reference */
    readonly fromStage?: number;
    readonly fromImage?: string;
  };
export type PlannedWorkdir = WorkdirCommand &
  PlanMeta & {
    /** the absolute working directory after this instruction */
    readonly resolved: string;
  };
export type PlannedInstruction =
  | PlannedRun
  | PlannedCopy
  | PlannedWorkdir
  | (Exclude<DockerfileCommand, RunCommand | CopyCommand | WorkdirCommand> & PlanMeta);

const CHMOD_OCTAL = /^[0-7]{1,4}$/;
const CHMOD_SYMBOLIC = /^[ugoa]*[-+=](?:[rwxXst]*|[ugo])(?:,[ugoa]*[-+=](?:[rwxXst]*|[ugo]))*$/;

/** Joins POSIX paths into one absolute, normalised path (`..` stops at `/`). */
export function posixJoin(...parts: string[]): string {
  const segs: string[] = [];
  for (const p of parts.join("/").split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") segs.pop();
    else segs.push(p);
  }
  return "/" + segs.join("/");
}

/** Normalises EXPOSE entries to `port/proto`, expanding ranges. */
function normalisePorts(words: string[]): string[] | string {
  const out: string[] = [];
  for (const w of words) {
    const m = /^(?:.*:)?(\d+)(?:-(\d+))?(?:\/([A-Za-z]+))?$/.exec(w);
    if (!m) return `invalid port ${JSON.stringify(w)} (expected port[/protocol] or a range like 8000-8002)`;
    const lo = Number(m[1]);
    const hi = m[2] !== undefined ? Number(m[2]) : lo;
    const proto = (m[3] ?? "tcp").toLowerCase();
    if (proto !== "tcp" && proto !== "udp" && proto !== "sctp")
      return `invalid protocol ${JSON.stringify(m[3])} in ${JSON.stringify(w)} (tcp, udp or sctp)`;
    if (lo < 1 || hi > 65535 || hi < lo) return `invalid port range ${JSON.stringify(w)}`;
    if (hi - lo > 65535) return `invalid port range ${JSON.stringify(w)}`;
    for (let p = lo; p <= hi; p++) out.push(`${p}/${proto}`);
  }
  return out;
}

/** A stage's variables and working directory while its instructions are planned. */
export interface StageState {
  env: Map<string, string>;
  /** ARGs in scope: value undefined = declared without a value */
  args: Map<string, string | undefined>;
  workdir: string;
  /** ONBUILD triggers this stage declares (its base's were consumed by it): they run in a stage built FROM this one */
  onBuild: string[];
}

/**
 * Plans one instruction at a time (BuildKit's dispatch); the stage planner (`plan-stages.ts`) extends it with the
 * file's stages, build args and global scope.
 */
export abstract class InstructionExpander {
  abstract readonly ctx: Ctx;
  abstract readonly lex: ShellLex;
  abstract readonly parsed: ParsedDockerfile;
  /** `--build-arg` values */
  abstract readonly buildArgs: Map<string, string>;
  /** build args some expansion or ARG used */
  abstract readonly usedBuildArgs: Set<string>;
  /** global ARGs (declared before the first FROM) with their values */
  abstract readonly meta: Map<string, string | undefined>;
  abstract readonly stageByName: Map<string, number>;
  /** the global scope: predefined platform ARGs and global ARGs */
  abstract globals: Map<string, string>;
  /** Resolves a stage reference (name or index) to a stage index, or undefined for an image. */
  abstract stageRef(ref: string, self: number, allowIndex: boolean): number | undefined;
  /** Makes sure stage `dep` is planned before `from` reads its final state; detects cycles. */
  abstract need(dep: number, at: Position): void;

  expand(word: string, env: Map<string, string>, at: Position): { result: string; matched: Set<string> } {
    try {
      const r = this.lex.process(word, env);
      return { result: r.result, matched: r.matched };
    } catch (e) {
      if (e instanceof ShellExpansionError) this.ctx.fail(at, e.message);
      throw e;
    }
  }

  planInstruction(
    cmd: DockerfileCommand,
    state: StageState,
    self: number,
    dependsOn: Set<number>,
    imageRefs: Set<string>,
  ): PlannedInstruction {
    const at: Position = { line: cmd.location.line, column: cmd.location.column };
    // One snapshot for the whole instruction: ARGs in scope, overlaid by ENV.
    const scope = new Map<string, string>();
    for (const [k, v] of state.args) if (v !== undefined) scope.set(k, v);
    for (const [k, v] of state.env) scope.set(k, v);
    const argsInScope = [...state.args]
      .filter((e): e is [string, string] => e[1] !== undefined && !state.env.has(e[0]))
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const used = new Set<string>();
    const ex = (word: string): string => {
      const r = this.expand(word, scope, at);
      for (const m of r.matched) if (state.args.get(m) !== undefined && !state.env.has(m)) used.add(m);
      return r.result;
    };
    const meta = (): PlanMeta => ({ usedArgs: [...used].sort(), argsInScope });

    switch (cmd.kind) {
      case "ARG": {
        const args: ArgDefinition[] = [];
        for (const a of cmd.args) {
          const key = ex(a.key);
          if (key === "") this.ctx.fail(at, "ARG names can not be blank");
          // A --build-arg replaces the default, which is then never expanded (as BuildKit: no error, no used args).
          let value: string | undefined;
          if (this.buildArgs.has(key)) {
            value = this.buildArgs.get(key)!;
            this.usedBuildArgs.add(key);
          } else if (a.value !== undefined) {
            value = ex(a.value);
          } else if (this.meta.has(key)) {
            value = this.meta.get(key);
          } else if (this.globals.has(key)) {
            value = this.globals.get(key); // predefined platform ARGs
          }
          state.args.set(key, value);
          args.push({ key, ...(value !== undefined ? { value } : {}) });
        }
        return { ...cmd, args, ...meta() };
      }
      case "ENV": {
        const env = cmd.env.map((kv) => ({ key: ex(kv.key), value: ex(kv.value) }));
        for (const kv of env) {
          if (kv.key === "") this.ctx.fail(at, "ENV names can not be blank");
          state.env.set(kv.key, kv.value);
        }
        return { ...cmd, env, ...meta() };
      }
      case "LABEL": {
        const labels = cmd.labels.map((kv) => ({ key: ex(kv.key), value: ex(kv.value) }));
        return { ...cmd, labels, ...meta() };
      }
      case "WORKDIR": {
        const path = ex(cmd.path);
        if (path === "") this.ctx.fail(at, "WORKDIR path can not be empty");
        state.workdir = path.startsWith("/") ? posixJoin(path) : posixJoin(state.workdir, path);
        return { ...cmd, path, resolved: state.workdir, ...meta() };
      }
      case "USER": {
        const user = ex(cmd.user);
        if (user === "") this.ctx.fail(at, "USER can not be empty");
        return { ...cmd, user, ...meta() };
      }
      case "VOLUME": {
        const volumes = cmd.volumes.map((v) => ex(v));
        if (volumes.some((v) => v.trim() === "")) this.ctx.fail(at, "VOLUME specified can not be an empty string");
        return { ...cmd, volumes, ...meta() };
      }
      case "STOPSIGNAL": {
        const signal = ex(cmd.signal);
        if (!/^(SIG[A-Z0-9+-]+|[A-Z0-9+-]+|\d+)$/i.test(signal))
          this.ctx.fail(at, `invalid signal ${JSON.stringify(signal)} for STOPSIGNAL`);
        return { ...cmd, signal, ...meta() };
      }
      case "EXPOSE": {
        const words: string[] = [];
        for (const p of cmd.ports) {
          try {
            const r = this.lex.process(p, scope);
            for (const m of r.matched) if (state.args.get(m) !== undefined && !state.env.has(m)) used.add(m);
            words.push(...r.words);
          } catch (e) {
            if (e instanceof ShellExpansionError) this.ctx.fail(at, e.message);
            throw e;
          }
        }
        const ports = normalisePorts(words);
        if (typeof ports === "string") this.ctx.fail(at, ports);
        return { ...cmd, ports, ...meta() };
      }
      case "COPY":
      case "ADD": {
        const sources = cmd.sources.map((s) => ex(s));
        // An empty destination (`COPY a $empty`) is the working directory, as BuildKit's pathRelativeToWorkingDir has it.
        const dest = ex(cmd.dest) || "./";
        const inline = cmd.inline.map((h) =>
          h.expand ? { ...h, data: this.expandRaw(h.data, scope, at, state, used) } : h,
        );
        const chown = cmd.chown !== undefined ? ex(cmd.chown) : undefined;
        const chmod = cmd.chmod !== undefined ? ex(cmd.chmod) : undefined;
        if (chmod !== undefined && !CHMOD_OCTAL.test(chmod) && !CHMOD_SYMBOLIC.test(chmod)) {
          // A value that looks numeric gets BuildKit's message (its tests match it); any other names both forms.
          this.ctx.fail(
            at,
            /^\d/.test(chmod)
              ? `invalid chmod parameter: '${chmod}'. it should be octal string and between 0 and 07777 (--chmod)`
              : `invalid --chmod ${JSON.stringify(chmod)}: expected an octal mode like 755 or a symbolic one like u=rwX,go=rX`,
          );
        }
        const extra = {
          sources,
          dest,
          inline,
          ...(chown !== undefined ? { chown } : {}),
          ...(chmod !== undefined ? { chmod } : {}),
        };
        if (cmd.kind === "ADD") {
          const checksum = cmd.checksum !== undefined ? ex(cmd.checksum) : undefined;
          return { ...cmd, ...extra, ...(checksum !== undefined ? { checksum } : {}), ...meta() };
        }
        let fromStage: number | undefined;
        let fromImage: string | undefined;
        if (cmd.from !== undefined) {
          const ref = this.stageRef(cmd.from, self, true);
          if (ref === -1 || (ref === undefined && this.stageByName.get(cmd.from.toLowerCase()) === self)) {
            this.ctx.fail(
              at,
              `COPY --from=${cmd.from} refers to ${/^\d+$/.test(cmd.from) ? "no earlier stage (invalid stage index)" : "the current stage"}`,
            );
          }
          if (ref !== undefined) {
            this.need(ref, at);
            // BuildKit dispatches stages in order and refuses to copy from one not yet dispatched (after its cycle check).
            if (ref > self) {
              const stageName = (i: number) => this.parsed.stages[i]!.from.stageName ?? `stage-${i}`;
              this.ctx.fail(
                at,
                `cannot copy from stage ${JSON.stringify(cmd.from)}, it needs to be defined before current stage ${JSON.stringify(stageName(self))}`,
              );
            }
            dependsOn.add(ref);
            fromStage = ref;
          } else {
            fromImage = cmd.from;
            imageRefs.add(cmd.from);
          }
        }
        return {
          ...cmd,
          ...extra,
          ...(fromStage !== undefined ? { fromStage } : {}),
          ...(fromImage !== undefined ? { fromImage } : {}),
          ...meta(),
        };
      }
      case "RUN": {
        const mounts: RunMount[] = [];
        // Re-parse the raw --mount values with expansion (the parse-time ones validated the syntax).
        for (const [k, spec] of cmd.mountSpecs.entries()) {
          let m: RunMount;
          try {
            m = parseMount(spec, k, ex);
          } catch (e) {
            if (e instanceof MountError) this.ctx.fail(at, `--mount: ${e.message}`);
            throw e;
          }
          if (m.from !== undefined && m.type !== "secret" && m.type !== "ssh") {
            const ref = this.stageRef(m.from, self, true);
            if (ref === -1) this.ctx.fail(at, `--mount from=${m.from} is not a valid stage index`);
            if (ref !== undefined) {
              this.need(ref, at);
              dependsOn.add(ref);
            } else if (this.stageByName.get(m.from.toLowerCase()) === self) {
              this.ctx.fail(at, `--mount from=${m.from} refers to the current stage`);
            } else if (m.from !== "context") {
              imageRefs.add(m.from);
            }
          }
          mounts.push(m);
        }
        return { ...cmd, mounts, ...meta() };
      }
      case "ONBUILD":
        // Not expanded here: the trigger is expanded where it runs.
        state.onBuild.push(cmd.expression);
        return { ...cmd, ...meta() };
      default:
        // CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER: no expansion.
        return { ...cmd, ...meta() };
    }
  }

  /** Heredoc bodies: expanded with quotes taken literally (BuildKit's ExpandRaw). */
  expandRaw(data: string, scope: Map<string, string>, at: Position, state: StageState, used: Set<string>): string {
    try {
      const r = new ShellLex({ skipProcessQuotes: true }).process(data, scope);
      for (const m of r.matched) if (state.args.get(m) !== undefined && !state.env.has(m)) used.add(m);
      return r.result;
    } catch (e) {
      if (e instanceof ShellExpansionError) this.ctx.fail(at, e.message);
      throw e;
    }
  }
}
