/**
 * Stage 3 of the Dockerfile front end, and its entry point: a Dockerfile → stages with variables expanded exactly
 * where BuildKit expands them (its `dockerfile2llb` dispatch), the target stage and the stages it needs, in build
 * order. It parses the text (`parse-instructions.ts`), resolves the global ARGs, each stage's base (scratch, an
 * earlier stage, or an image) and the base's ONBUILD triggers, and plans each instruction (`expand-instruction.ts`).
 * Pure: text and options in, a plan out; no filesystem access.
 *
 * Expansion (see `shell-lex.ts`) applies to: ENV and LABEL keys and values, ARG names and defaults, WORKDIR, USER,
 * VOLUME, STOPSIGNAL, EXPOSE (split into words), COPY/ADD sources, destination, `--chown`, `--chmod`, ADD
 * `--checksum`, COPY/ADD heredoc bodies whose delimiter is unquoted, and RUN `--mount` option values — all with the
 * stage's ARGs in scope overlaid by its ENV (ENV wins). FROM's image and `--platform` see only the global ARGs
 * declared before the first FROM (plus the predefined platform ARGs). RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK,
 * MAINTAINER and ONBUILD are never expanded; `COPY --from` must not contain `$`.
 */
import { DockerfileSyntaxError } from "./errors.js";
import { InvalidDefinitionError } from "../errors.js";
import { DEFAULT_PATH } from "../oci/defaults.js";
import { parseSourceDateEpoch } from "../plan/source-date-epoch.js";
import type { DockerfileCommand, FromCommand, InstructionLocation, ParsedDockerfile } from "./commands.js";
import { InstructionExpander, posixJoin, type PlannedInstruction, type StageState } from "./expand-instruction.js";
import { parseDockerfileAst, type Position } from "./parse.js";
import { Ctx, parseCommand, parseInstructions } from "./parse-instructions.js";
import { ShellLex } from "./shell-lex.js";
import { lookupContext, type NamedContextSpec } from "./named-context.js";
import { suggest } from "./suggest.js";
import { HOSTNAME_BUILD_ARG } from "../plan/hostname.js";

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** What the planner may know of a base image (from its config), to expand against its ENV and run its ONBUILDs. */
export interface BaseImageInfo {
  /** `KEY=VALUE` entries of the image config's Env */
  readonly env?: readonly string[];
  readonly workingDir?: string;
  /** the image config's OnBuild triggers, run right after FROM */
  readonly onBuild?: readonly string[];
}

export interface PlanOptions {
  /** name used in error messages (default "Dockerfile") */
  file?: string;
  /** `--build-arg` values */
  buildArgs?: Readonly<Record<string, string>>;
  /** stage name to build (default: the last stage) */
  target?: string;
  /** target platform (default "linux/amd64") */
  platform?: string;
  /** build platform (default "linux/amd64") */
  buildPlatform?: string;
  /** config of an image base, by its expanded reference; default: none known (empty env, no ONBUILD) */
  baseImage?: (ref: string, platform: Platform | undefined) => BaseImageInfo | undefined;
  /**
   * Named build contexts (`--build-context`), by normalised name (`parseBuildContexts`). As in BuildKit, a stage
   * whose name is one is replaced by it, and a FROM or `--from` naming one (and no stage) reads it.
   */
  namedContexts?: ReadonlyMap<string, NamedContextSpec>;
}

export type StageBase =
  | { readonly kind: "scratch" }
  | { readonly kind: "stage"; readonly stage: number }
  | { readonly kind: "image"; readonly ref: string }
  /** a named build context: `name` as the Dockerfile wrote it (a stage's own name when it replaces the stage) */
  | { readonly kind: "context"; readonly name: string; readonly context: NamedContextSpec };

export interface PlannedStage {
  readonly index: number;
  readonly name?: string;
  readonly location: InstructionLocation;
  /** the FROM line as written */
  readonly original: string;
  readonly base: StageBase;
  readonly platform?: Platform;
  readonly instructions: readonly PlannedInstruction[];
  /** stages this one needs: its FROM stage, COPY --from and RUN --mount from= stages */
  readonly dependsOn: readonly number[];
  /** images used by COPY --from / RUN --mount from= (besides the base) */
  readonly imageRefs: readonly string[];
  /** ENV at the end of the stage (inherited by stages FROM it), excluding the unknown env of an image base */
  readonly env: readonly (readonly [string, string])[];
  readonly workdir: string;
  /** set when the stage could not be planned; only possible for stages the target does not need */
  readonly skipped?: string;
}

export interface DockerfilePlan {
  readonly file: string;
  readonly escapeToken: "\\" | "`";
  readonly syntax?: string;
  readonly warnings: readonly string[];
  /** global ARGs with their resolved values (undefined: declared without a value) */
  readonly metaArgs: readonly { readonly key: string; readonly value?: string }[];
  /** every stage of the file, in order; stages the target does not need are planned too */
  readonly stages: readonly PlannedStage[];
  readonly target: number;
  /** the stages the target needs, each after the stages it depends on, ending with the target */
  readonly buildOrder: readonly number[];
  /** build args that no needed stage (nor the global scope) declares; BuildKit warns about them */
  readonly unusedBuildArgs: readonly string[];
  /**
   * `SOURCE_DATE_EPOCH` (seconds): the build arg, else a global `ARG SOURCE_DATE_EPOCH=<default>`; undefined when
   * neither is given (or it is empty)
   */
  readonly sourceDateEpoch?: number;
}

const KNOWN_OS = new Set([
  "linux",
  "windows",
  "darwin",
  "freebsd",
  "netbsd",
  "openbsd",
  "solaris",
  "illumos",
  "android",
  "aix",
  "dragonfly",
  "plan9",
  "js",
  "wasip1",
]);
const ARCH_ALIASES: Record<string, string> = {
  x86_64: "amd64",
  "x86-64": "amd64",
  aarch64: "arm64",
  armhf: "arm",
  armel: "arm",
  i386: "386",
  i686: "386",
};
const KNOWN_ARCH = new Set([
  "amd64",
  "arm64",
  "arm",
  "386",
  "ppc64le",
  "ppc64",
  "s390x",
  "riscv64",
  "mips64le",
  "mips64",
  "mipsle",
  "mips",
  "loong64",
  "wasm",
]);

/** Parses `os/arch[/variant]` (or a bare os or arch, as containerd's platforms.Parse does); undefined if invalid. */
export function parsePlatform(s: string): Platform | undefined {
  const parts = s.toLowerCase().split("/");
  if (parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/.test(p))) return undefined;
  const arch = (a: string): string | undefined => {
    const n = ARCH_ALIASES[a] ?? a;
    return KNOWN_ARCH.has(n) ? n : undefined;
  };
  if (parts.length === 1) {
    const p = parts[0]!;
    if (KNOWN_OS.has(p)) return { os: p, architecture: "amd64" };
    const a = arch(p);
    return a ? { os: "linux", architecture: a } : undefined;
  }
  const a = arch(parts[1]!);
  if (!KNOWN_OS.has(parts[0]!) || !a) return undefined;
  return { os: parts[0]!, architecture: a, ...(parts[2] ? { variant: parts[2] } : {}) };
}

function platformArgs(prefix: "BUILD" | "TARGET", p: Platform): [string, string][] {
  return [
    [`${prefix}PLATFORM`, `${p.os}/${p.architecture}${p.variant ? "/" + p.variant : ""}`],
    [`${prefix}OS`, p.os],
    [`${prefix}ARCH`, p.architecture],
    [`${prefix}VARIANT`, p.variant ?? ""],
  ];
}

/**
 * Plans a Dockerfile: validates it, resolves global and stage ARGs (with `--build-arg` values and the predefined
 * platform ARGs), expands variables where BuildKit does, resolves stage references and picks the stages the target
 * needs. Throws {@link DockerfileSyntaxError} for problems in the Dockerfile, and {@link InvalidDefinitionError} for
 * bad options (unknown target, malformed platform).
 */
export function planDockerfile(text: string, options: PlanOptions = {}): DockerfilePlan {
  const file = options.file ?? "Dockerfile";
  const parsed = parseInstructions(text, { file });
  return new Planner(parsed, file, options).plan();
}

class Planner extends InstructionExpander {
  readonly ctx: Ctx;
  readonly lex: ShellLex;
  readonly target: Platform;
  readonly build: Platform;
  readonly buildArgs: Map<string, string>;
  readonly usedBuildArgs = new Set<string>();
  readonly meta = new Map<string, string | undefined>();
  /** Where the global `ARG SOURCE_DATE_EPOCH` is, if there is one. */
  #sdeArg: { line: number; column: number } | undefined;
  readonly metaList: { key: string; value?: string }[] = [];
  readonly stageByName = new Map<string, number>();
  readonly planned: (PlannedStage | undefined)[];
  readonly errors: (unknown | undefined)[];
  readonly inProgress = new Set<number>();
  readonly finalState: (StageState | undefined)[];
  readonly warnings: string[];

  constructor(
    readonly parsed: ParsedDockerfile,
    readonly file: string,
    readonly options: PlanOptions,
  ) {
    super();
    this.ctx = new Ctx(file);
    this.lex = new ShellLex({ escapeToken: parsed.ast.escapeToken });
    const tp = parsePlatform(options.platform ?? "linux/amd64");
    const bp = parsePlatform(options.buildPlatform ?? "linux/amd64");
    if (!tp)
      throw new InvalidDefinitionError(
        `invalid target platform ${JSON.stringify(options.platform)} (expected os/arch[/variant], e.g. linux/amd64)`,
      );
    if (!bp)
      throw new InvalidDefinitionError(
        `invalid build platform ${JSON.stringify(options.buildPlatform)} (expected os/arch[/variant])`,
      );
    this.target = tp;
    this.build = bp;
    this.buildArgs = new Map(Object.entries(options.buildArgs ?? {}));
    this.planned = new Array(parsed.stages.length).fill(undefined);
    this.errors = new Array(parsed.stages.length).fill(undefined);
    this.finalState = new Array(parsed.stages.length).fill(undefined);
    this.warnings = [...parsed.ast.warnings];
  }

  plan(): DockerfilePlan {
    this.parsed.stages.forEach((s, i) => {
      if (!s.from.stageName) return;
      const prev = this.stageByName.get(s.from.stageName);
      if (prev !== undefined) {
        this.ctx.fail(
          s.from.location,
          `duplicate stage name ${JSON.stringify(s.from.stageName)} (also used by the stage on line ${this.parsed.stages[prev]!.from.location.line})`,
        );
      }
      this.stageByName.set(s.from.stageName, i);
    });

    let target = this.parsed.stages.length - 1;
    if (this.options.target !== undefined) {
      const t = this.stageByName.get(this.options.target.toLowerCase());
      if (t === undefined) {
        const names = [...this.stageByName.keys()];
        // BuildKit's wording, with its hint for a mistyped name, then where Strata looked and what it found.
        throw new InvalidDefinitionError(
          `target stage ${JSON.stringify(this.options.target)} could not be found` +
            suggest(this.options.target, names) +
            ` in ${this.file}` +
            (names.length ? ` (stages: ${names.join(", ")})` : " (it names no stages; add AS <name> to a FROM)"),
        );
      }
      target = t;
    }

    // Global scope: predefined platform ARGs, then the meta ARGs in order (a build-arg overrides a default).
    // TARGETSTAGE names the stage being built (`default` for an unnamed one), as BuildKit's automatic ARG does.
    const globals = new Map<string, string>([
      ...platformArgs("BUILD", this.build),
      ...platformArgs("TARGET", this.target),
      ["TARGETSTAGE", this.parsed.stages[target]?.from.stageName ?? "default"],
    ]);
    for (const cmd of this.parsed.metaArgs) {
      const argPos = { line: cmd.location.line, column: cmd.location.column };
      for (const a of cmd.args) {
        // A --build-arg replaces the default, which is then never expanded (BuildKit: `${X:?msg}` in it cannot fail).
        let value: string | undefined;
        if (this.buildArgs.has(a.key)) {
          value = this.buildArgs.get(a.key)!;
          this.usedBuildArgs.add(a.key);
        } else if (a.value !== undefined) {
          value = this.expand(a.value, globals, argPos).result;
        }
        this.meta.set(a.key, value);
        if (a.key === "SOURCE_DATE_EPOCH") this.#sdeArg = argPos;
        this.metaList.push({ key: a.key, ...(value !== undefined ? { value } : {}) });
        if (value !== undefined) globals.set(a.key, value);
        else globals.delete(a.key);
      }
    }
    this.globals = globals;

    // Plan every stage (errors are kept per stage: a broken stage the target does not need is not fatal).
    for (let i = 0; i < this.parsed.stages.length; i++) this.tryPlan(i);
    const order: number[] = [];
    const seen = new Set<number>();
    const visit = (i: number): void => {
      if (seen.has(i)) return;
      seen.add(i);
      const err = this.errors[i];
      if (err !== undefined) throw err;
      for (const d of this.planned[i]!.dependsOn) visit(d);
      order.push(i);
    };
    visit(target);
    const stages = this.planned.map(
      (s, i) =>
        s ??
        // a stage that failed and is not needed: keep its place with no instructions
        ({
          index: i,
          ...(this.parsed.stages[i]!.from.stageName ? { name: this.parsed.stages[i]!.from.stageName } : {}),
          location: this.parsed.stages[i]!.from.location,
          original: this.parsed.stages[i]!.from.original,
          base: { kind: "image", ref: this.parsed.stages[i]!.from.image },
          instructions: [],
          dependsOn: [],
          imageRefs: [],
          env: [],
          workdir: "/",
          skipped: this.errors[i] instanceof Error ? this.errors[i].message : "not planned",
        } satisfies PlannedStage),
    );
    // Build args count as used when declared in a needed stage (or globally).
    for (const i of order) {
      for (const ins of stages[i]!.instructions) {
        if (ins.kind === "ARG") for (const a of ins.args) if (this.buildArgs.has(a.key)) this.usedBuildArgs.add(a.key);
      }
    }
    // Proxy args are predefined (BuildKit never warns about them): every RUN gets them without an ARG.
    // Proxy args and SOURCE_DATE_EPOCH are the frontend's own (BuildKit never warns about them).
    const unusedBuildArgs = [...this.buildArgs.keys()]
      .filter(
        (k) =>
          !this.usedBuildArgs.has(k) &&
          !/^(http|https|ftp|no|all)_proxy$/i.test(k) &&
          k !== "SOURCE_DATE_EPOCH" &&
          k !== HOSTNAME_BUILD_ARG,
      )
      .sort();
    // BuildKit (getBuildArgValue): the build arg, else the global ARG's value; "" leaves it unset.
    const sde = this.buildArgs.get("SOURCE_DATE_EPOCH") ?? this.meta.get("SOURCE_DATE_EPOCH");
    let sourceDateEpoch: number | undefined;
    if (this.buildArgs.has("SOURCE_DATE_EPOCH")) sourceDateEpoch = parseSourceDateEpoch(sde!, "SOURCE_DATE_EPOCH");
    else if (sde !== undefined) {
      // A global ARG's default: a bad value is the Dockerfile's error, at that ARG.
      try {
        sourceDateEpoch = parseSourceDateEpoch(sde, `${this.file}: ARG SOURCE_DATE_EPOCH`);
      } catch (e) {
        const at = this.#sdeArg ?? { line: 1, column: 1 };
        throw new DockerfileSyntaxError({ file: this.file, ...at }, (e as Error).message);
      }
    }
    return {
      file: this.file,
      escapeToken: this.parsed.ast.escapeToken,
      ...(this.parsed.ast.syntax !== undefined ? { syntax: this.parsed.ast.syntax } : {}),
      warnings: this.warnings,
      metaArgs: this.metaList,
      stages,
      target,
      buildOrder: order,
      unusedBuildArgs,
      ...(sourceDateEpoch !== undefined ? { sourceDateEpoch } : {}),
    };
  }

  globals = new Map<string, string>();

  tryPlan(i: number): void {
    if (this.planned[i] !== undefined || this.errors[i] !== undefined) return;
    try {
      this.planStage(i);
    } catch (e) {
      if (e instanceof DockerfileSyntaxError) this.errors[i] = e;
      else throw e;
    }
  }

  /** Resolves a stage reference (name or index) to a stage index, or undefined for an image. */
  stageRef(ref: string, self: number, allowIndex: boolean): number | undefined {
    if (allowIndex && /^\d+$/.test(ref)) {
      const idx = Number(ref);
      return idx < this.parsed.stages.length && idx !== self ? idx : -1;
    }
    const byName = this.stageByName.get(ref.toLowerCase());
    if (byName === undefined || byName === self) return undefined;
    return byName;
  }

  /** Makes sure stage `dep` is planned before `from` reads its final state; detects cycles. */
  need(dep: number, at: Position): void {
    if (this.inProgress.has(dep)) {
      const name = this.parsed.stages[dep]!.from.stageName ?? String(dep);
      this.ctx.fail(at, `circular dependency detected on stage: ${name}`);
    }
    this.tryPlan(dep);
    const err = this.errors[dep];
    if (err !== undefined) throw err;
  }

  /** Sets a stage's starting state from the named context it starts FROM. */
  contextBaseState(ctx: NamedContextSpec, state: StageState, platform: Platform | undefined, onBuild: string[]): void {
    const ref = contextImageRef(ctx);
    const c = contextEnv(ctx, ref !== undefined ? this.options.baseImage?.(ref, platform) : undefined);
    for (const [k, v] of c.env) state.env.set(k, v);
    state.workdir = c.workdir;
    onBuild.push(...c.onBuild);
  }

  /** A stage replaced by the named context of its name: no instructions; its end state is the context's config. */
  contextStage(i: number, name: string, ctx: NamedContextSpec, platform: Platform | undefined): PlannedStage {
    const from = this.parsed.stages[i]!.from;
    const state: StageState = { env: new Map(), args: new Map(), workdir: "/", onBuild: [] };
    const onBuild: string[] = [];
    this.contextBaseState(ctx, state, platform, onBuild);
    // The context's own ONBUILD triggers pass on to stages FROM this one, as an image's would.
    state.onBuild.push(...onBuild);
    this.finalState[i] = state;
    return {
      index: i,
      name,
      location: from.location,
      original: from.original,
      base: { kind: "context", name, context: ctx },
      ...(platform ? { platform } : {}),
      instructions: [],
      dependsOn: [],
      imageRefs: [],
      env: [...state.env],
      workdir: state.workdir,
    };
  }

  planStage(i: number): void {
    this.inProgress.add(i);
    try {
      this.planned[i] = this.doPlanStage(i);
    } finally {
      this.inProgress.delete(i);
    }
  }

  doPlanStage(i: number): PlannedStage {
    const parsedStage = this.parsed.stages[i]!;
    const from = parsedStage.from;
    const fromPos = { line: from.location.line, column: from.location.column };
    const fromMatched = new Set<string>();
    const img = this.expand(from.image, this.globals, fromPos);
    for (const m of img.matched) fromMatched.add(m);
    const image = img.result;
    if (image === "") this.ctx.fail(fromPos, `base name (${from.image}) should not be blank`);
    let platform: Platform | undefined;
    if (from.platform !== undefined) {
      const p = this.expand(from.platform, this.globals, fromPos).result;
      platform = parsePlatform(p);
      if (!platform)
        this.ctx.fail(
          fromPos,
          `invalid platform ${JSON.stringify(p)} in FROM --platform (expected os/arch[/variant], e.g. linux/amd64)`,
        );
    }
    const dependsOn = new Set<number>();
    const imageRefs = new Set<string>();
    const state: StageState = { env: new Map(), args: new Map(), workdir: "/", onBuild: [] };
    // A named context of the stage's own name replaces the stage: its FROM and instructions are not used (BuildKit).
    const replacedBy = from.stageName ? lookupContext(this.options.namedContexts, from.stageName) : undefined;
    if (replacedBy) return this.contextStage(i, from.stageName!, replacedBy, platform);
    let base: StageBase;
    const onBuild: string[] = [];
    const baseStage = image === "scratch" ? undefined : this.stageRef(image, i, false);
    const named = baseStage === undefined ? lookupContext(this.options.namedContexts, image) : undefined;
    if (image === "scratch") {
      base = { kind: "scratch" };
      // BuildKit's empty image has the default PATH, so `ENV PATH=/x:$PATH` extends it.
      state.env.set("PATH", DEFAULT_PATH);
    } else if (baseStage !== undefined && baseStage >= 0) {
      this.need(baseStage, fromPos);
      base = { kind: "stage", stage: baseStage };
      dependsOn.add(baseStage);
      const st = this.finalState[baseStage]!;
      state.env = new Map(st.env);
      state.workdir = st.workdir;
      // A stage's ONBUILD triggers run in the stage built FROM it, as an image's do (BuildKit reads them from the config).
      onBuild.push(...st.onBuild);
    } else if (named) {
      base = { kind: "context", name: image, context: named };
      this.contextBaseState(named, state, platform, onBuild);
    } else {
      base = { kind: "image", ref: image };
      const info = this.options.baseImage?.(image, platform);
      if (info?.env) for (const [k, v] of toPairs(info.env)) state.env.set(k, v);
      if (info?.workingDir) state.workdir = posixJoin("/", info.workingDir);
      if (info?.onBuild) onBuild.push(...info.onBuild);
    }

    const instructions: PlannedInstruction[] = [];
    const commands: { cmd: DockerfileCommand; fromOnBuild: boolean }[] = [];
    for (const trigger of onBuild) {
      let cmd: FromCommand | DockerfileCommand;
      try {
        const ast = parseDockerfileAst(trigger, { file: `${this.file} (ONBUILD of ${image})` });
        if (ast.nodes.length !== 1) throw new Error("one instruction expected");
        cmd = parseCommand(ast.nodes[0]!, `${this.file} (ONBUILD of ${image})`);
      } catch (e) {
        const why = e instanceof Error ? (e instanceof DockerfileSyntaxError ? e.detail : e.message) : String(e);
        this.ctx.fail(fromPos, `ONBUILD trigger ${JSON.stringify(trigger)} of base image ${image} is invalid: ${why}`);
      }
      if (cmd.kind === "FROM" || cmd.kind === "ONBUILD" || cmd.kind === "MAINTAINER") {
        this.ctx.fail(fromPos, `${cmd.kind} isn't allowed as an ONBUILD trigger (base image ${image})`);
      }
      // Triggers run at the FROM line.
      commands.push({ cmd: { ...cmd, location: from.location } as DockerfileCommand, fromOnBuild: true });
    }
    for (const cmd of parsedStage.commands) commands.push({ cmd, fromOnBuild: false });

    for (const { cmd, fromOnBuild } of commands) {
      const planned = this.planInstruction(cmd, state, i, dependsOn, imageRefs);
      instructions.push(fromOnBuild ? { ...planned, fromOnBuild: true } : planned);
    }
    this.finalState[i] = state;
    return {
      index: i,
      ...(from.stageName ? { name: from.stageName } : {}),
      location: from.location,
      original: from.original,
      base,
      ...(platform ? { platform } : {}),
      instructions,
      dependsOn: [...dependsOn].sort((a, b) => a - b),
      imageRefs: [...imageRefs].sort(),
      env: [...state.env],
      workdir: state.workdir,
    };
  }
}

/** The environment a named context gives a stage FROM it: an image's config, else the empty image's default PATH. */
function contextEnv(
  ctx: NamedContextSpec,
  info: BaseImageInfo | undefined,
): { env: [string, string][]; workdir: string; onBuild: readonly string[] } {
  if (ctx.kind === "image" || ctx.kind === "oci-layout")
    return {
      env: info?.env ? toPairs(info.env) : [],
      workdir: info?.workingDir ? posixJoin("/", info.workingDir) : "/",
      onBuild: info?.onBuild ?? [],
    };
  return { env: [["PATH", DEFAULT_PATH]], workdir: "/", onBuild: [] };
}

/** The reference a named image context's config is looked up by (`PlanOptions.baseImage`); undefined for others. */
export function contextImageRef(ctx: NamedContextSpec): string | undefined {
  return ctx.kind === "image" ? ctx.ref : ctx.kind === "oci-layout" ? `oci-layout://${ctx.dir}` : undefined;
}

function toPairs(env: readonly string[]): [string, string][] {
  return env.map((e) => {
    const i = e.indexOf("=");
    return i < 0 ? [e, ""] : [e.slice(0, i), e.slice(i + 1)];
  });
}
