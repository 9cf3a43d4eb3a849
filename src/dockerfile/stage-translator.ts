/**
 * The stages of a planned Dockerfile (`planDockerfile`) as chains of step makers: per stage its base (scratch, a
 * registry image or another stage), its starting config, and one step maker per instruction. Metadata instructions
 * (ARG, ENV, LABEL, USER, WORKDIR, CMD/ENTRYPOINT, SHELL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, ONBUILD,
 * MAINTAINER) are made here; RUN in `run-step.ts`, COPY/ADD in `copy-step.ts`.
 */
import { DEFAULT_PATH } from "../oci/defaults.js";
import type { Instruction } from "../plan/instructions.js";
import { parseGitRef } from "../plan/git-url.js";
import { SOURCE_DATE_EPOCH_EXTRA } from "../plan/source-date-epoch.js";
import type { Step, StepLocation } from "../plan/step.js";
import { copyStep } from "./copy-step.js";
import { InvalidDefinitionError } from "../errors.js";
import { DockerfileSyntaxError } from "./errors.js";
import type { PlannedInstruction } from "./expand-instruction.js";
import type { DockerfilePlan } from "./plan-stages.js";
import { lookupContext, type NamedContextSpec } from "./named-context.js";
import { proxyEnvFromBuildArgs } from "./proxy-env.js";
import { progressPrefixes } from "./progress-names.js";
import { runStep } from "./run-step.js";
import { suggest } from "./suggest.js";
import type {
  DockerfileChains,
  SelectRootMaker,
  StageBaseSpec,
  StageChain,
  StepMaker,
  TranslateOptions,
  TranslationContext,
} from "./stage-chain.js";

const METHOD = "dockerfile";

function summary(original: string): string {
  const one = original.replace(/\s+/g, " ").trim();
  return one.length > 100 ? one.slice(0, 97) + "..." : one;
}

/** Translates a planned Dockerfile's stages into chains of step makers (see `to-plan.ts`). */
export class Translator implements TranslationContext {
  readonly byName = new Map<string, number>();
  /** The stages `noCacheFilter` names. */
  readonly noCache = new Set<number>();
  /** Secret names the translated steps mount, per stage. */
  readonly secretsUsed = new Map<number, Set<string>>();
  /** BuildKit's progress prefix (`[base 3/3] `) of each stage's FROM and counted instructions. */
  readonly #progress = new WeakMap<object, string>();

  constructor(
    readonly plan: DockerfilePlan,
    readonly opts: TranslateOptions,
    /** line offset for command lists (the synthetic FROM) */
    readonly lineShift = 0,
  ) {
    plan.stages.forEach((s, i) => {
      if (s.name) this.byName.set(s.name, i);
    });
    for (const name of opts.noCacheFilter ?? []) {
      const i = this.byName.get(name.toLowerCase());
      if (i === undefined) {
        const names = [...this.byName.keys()];
        throw new InvalidDefinitionError(
          `no-cache filter: ${plan.file} has no stage named ${JSON.stringify(name)}${suggest(name.toLowerCase(), names)}` +
            (names.length
              ? ` (its named stages: ${names.join(", ")})`
              : " (it names no stage: add AS <name> to a FROM)"),
        );
      }
      this.noCache.add(i);
    }
  }

  chains(): DockerfileChains {
    const stages = new Map<number, StageChain>();
    for (const i of this.plan.buildOrder) stages.set(i, this.stage(i));
    const secrets = [...new Set([...stages.values()].flatMap((c) => c.secrets))].sort();
    return {
      file: this.plan.file,
      stages,
      target: this.plan.target,
      buildOrder: [...this.plan.buildOrder],
      warnings: [...this.plan.warnings],
      secrets,
    };
  }

  loc(pi: { location: { file: string; line: number; column: number } }): StepLocation {
    return { file: pi.location.file, line: pi.location.line + this.lineShift, column: pi.location.column };
  }

  fail(at: StepLocation | { file: string; line: number; column: number }, message: string): never {
    throw new DockerfileSyntaxError({ file: at.file, line: at.line, column: at.column }, message);
  }

  /**
   * A step's description: `[build 2/3] Dockerfile:12:1 RUN make` (the location StepFailedError and logs show, after
   * BuildKit's progress name for the steps it counts).
   */
  where(pi: { location: { file: string; line: number; column: number } }, original: string): string {
    const prefix = this.#progress.get(pi) ?? "";
    return `${prefix}${pi.location.file}:${pi.location.line + this.lineShift}:${pi.location.column} ${summary(original)}`;
  }

  stage(i: number): StageChain {
    const s = this.plan.stages[i]!;
    if (s.platform && !(s.platform.os === "linux" && s.platform.architecture === "amd64")) {
      this.fail(
        this.loc(s),
        `FROM --platform=${s.platform.os}/${s.platform.architecture}${s.platform.variant ? "/" + s.platform.variant : ""}: Strata builds linux/amd64 images only`,
      );
    }
    for (const [planned, prefix] of progressPrefixes(this.plan, i)) this.#progress.set(planned, prefix);
    const reads = new Set<number>();
    const steps: StageChain["steps"] = [];
    const base: StageBaseSpec =
      s.base.kind === "scratch"
        ? { kind: "scratch" }
        : s.base.kind === "stage"
          ? { kind: "stage", stage: s.base.stage }
          : s.base.kind === "image"
            ? { kind: "registry", ref: s.base.ref }
            : this.contextBase(s, s.base, steps);
    let cmdSet = false;
    const forceBuild = this.noCache.has(i);
    for (const pi of s.instructions) {
      if (pi.kind === "CMD") cmdSet = true;
      const make = this.instruction(pi, i, reads, cmdSet);
      if (!make) continue;
      // `--no-cache-filter`: outside the key (as forceBuild always is), so the cascade is through the new image ids.
      steps.push({ method: METHOD, make: forceBuild ? (b, sp) => ({ ...make(b, sp), forceBuild: true }) : make });
    }
    // A scratch stage starts with the default PATH and WorkingDir "/" (BuildKit's emptyImage for a Dockerfile `FROM
    // scratch`; the SDK's Image.fromScratch() stays bare); a registry base whose ONBUILD triggers run here passes none
    // on (they are consumed by this build, as in Docker).
    const consumed = s.instructions.some((x) => x.fromOnBuild);
    const baseInstructions: Instruction[] =
      base.kind === "scratch"
        ? [
            { op: "ENV", vars: [["PATH", DEFAULT_PATH]] },
            { op: "WORKDIR", path: "/" },
          ]
        : consumed
          ? [{ op: "ONBUILD" }]
          : [];
    // A stage base has no step of its own here (the chain continues from it): its triggers' first step clears the
    // inherited OnBuild list before running.
    if (base.kind === "stage" && consumed && steps.length) {
      const first = steps[0]!;
      const make = first.make;
      steps[0] = {
        ...first,
        make: (b, sp) => {
          const st = make(b, sp);
          return { ...st, instructions: [{ op: "ONBUILD" }, ...st.instructions] };
        },
      };
    }
    return {
      index: i,
      ...(s.name ? { name: s.name } : {}),
      base,
      fromDescription: this.where(s, s.original),
      baseInstructions,
      steps,
      reads: [...reads].sort((a, b) => a - b),
      baseExtra: this.epochExtra(),
      secrets: [...(this.secretsUsed.get(i) ?? [])].sort(),
      forceBuild,
      final: { env: s.env.map(([k, v]) => [k, v]), workdir: s.workdir },
    };
  }

  /** The stage a mount's or COPY's `from` names (by name or index, never the stage itself), or undefined for an image. */
  stageRef(from: string, self: number): number | undefined {
    if (/^\d+$/.test(from)) {
      const n = Number(from);
      return n < this.plan.stages.length && n !== self ? n : undefined;
    }
    const n = this.byName.get(from.toLowerCase());
    return n !== undefined && n !== self ? n : undefined;
  }

  /** The extra key inputs every step of the build carries: its SOURCE_DATE_EPOCH, if any. */
  epochExtra(): [string, string][] {
    const e = this.plan.sourceDateEpoch;
    return e === undefined ? [] : [[SOURCE_DATE_EPOCH_EXTRA, String(e)]];
  }

  common(
    pi: PlannedInstruction,
    instructions: Instruction[],
    extraIn: [string, string][] = [],
    buildArgs: [string, string][] = [],
  ): Omit<Step, "inputs"> {
    const extra = [...extraIn, ...this.epochExtra()];
    return {
      method: METHOD,
      description: this.where(pi, pi.original),
      instructions,
      secrets: [],
      secretsAsEnv: false,
      env: {},
      ...(buildArgs.length ? { buildArgs } : {}),
      forceBuild: this.opts.forceBuild ?? false,
      extra,
    };
  }

  /**
   * The proxy variables of every RUN, from the build's proxy args (`proxy-env.ts`): BuildKit (dockerfile2llb) gives
   * every RUN these as its ProxyEnv whether or not an ARG declares them, and leaves them out of the cache key, the
   * image config and history.
   */
  proxyEnv(): [string, string][] {
    return proxyEnvFromBuildArgs(this.opts.buildArgs ?? {});
  }

  usedArgs(pi: PlannedInstruction): [string, string][] {
    const inScope = new Map(pi.argsInScope.map(([k, v]) => [k, v]));
    return pi.usedArgs.filter((k) => inScope.has(k)).map((k) => [k, inScope.get(k)!]);
  }

  instruction(pi: PlannedInstruction, self: number, reads: Set<number>, cmdSet: boolean): StepMaker | undefined {
    const meta = (ins: Instruction, extra: [string, string][] = []): StepMaker => {
      const common = this.common(pi, [ins], extra, this.usedArgs(pi));
      return () => ({ ...common, instructions: structuredClone(common.instructions), secrets: [], inputs: [] });
    };
    switch (pi.kind) {
      case "ARG":
        return meta({ op: "ARG", names: pi.args.map((a) => a.key) });
      case "ENV":
        return meta({ op: "ENV", vars: pi.env.map((kv): [string, string] => [kv.key, kv.value]) });
      case "LABEL":
        return meta({ op: "LABEL", labels: pi.labels.map((kv): [string, string] => [kv.key, kv.value]) });
      case "USER":
        return meta({ op: "USER", user: pi.user });
      case "WORKDIR":
        // Keyed with the extra `workdir.create` (derived by the engine: the text does not show that it makes a layer).
        return meta({ op: "WORKDIR", path: pi.path, create: true });
      case "CMD":
        return meta(
          pi.prependShell
            ? { op: "CMD", argv: [pi.command.join(" ")], shell: true }
            : { op: "CMD", argv: [...pi.command] },
        );
      case "ENTRYPOINT": {
        const keep = cmdSet ? { keepCmd: true } : {};
        return meta(
          pi.prependShell
            ? { op: "ENTRYPOINT", argv: [pi.command.join(" ")], shell: true, ...keep }
            : { op: "ENTRYPOINT", argv: [...pi.command], ...keep },
        );
      }
      case "SHELL":
        return meta({ op: "SHELL", argv: [...pi.shell] });
      case "EXPOSE":
        return meta({ op: "EXPOSE", ports: [...pi.ports] });
      case "VOLUME":
        return meta({ op: "VOLUME", paths: [...pi.volumes] });
      case "STOPSIGNAL":
        return meta({ op: "STOPSIGNAL", signal: pi.signal });
      case "HEALTHCHECK":
        return meta({
          op: "HEALTHCHECK",
          test: [...pi.test],
          ...(pi.intervalNs !== undefined ? { interval: pi.intervalNs } : {}),
          ...(pi.timeoutNs !== undefined ? { timeout: pi.timeoutNs } : {}),
          ...(pi.startPeriodNs !== undefined ? { startPeriod: pi.startPeriodNs } : {}),
          ...(pi.startIntervalNs !== undefined ? { startInterval: pi.startIntervalNs } : {}),
          ...(pi.retries !== undefined ? { retries: pi.retries } : {}),
        });
      case "ONBUILD":
        return meta({ op: "ONBUILD", expression: pi.expression });
      case "MAINTAINER":
        return meta({ op: "MAINTAINER", name: pi.maintainer });
      case "RUN": {
        const { make, secrets } = runStep(this, pi, self, reads);
        if (secrets.length) {
          const stageSecrets = this.secretsUsed.get(self) ?? new Set<string>();
          for (const n of secrets) stageSecrets.add(n);
          this.secretsUsed.set(self, stageSecrets);
        }
        return make;
      }
      case "COPY":
      case "ADD":
        return copyStep(this, pi, self, reads);
    }
  }

  /**
   * The base of a stage FROM a named context (or replaced by one): an image context is a registry base; a directory
   * (or git) context is the empty image with the context's files copied in as its first step, as `COPY . /` would.
   */
  contextBase(
    s: DockerfilePlan["stages"][number],
    b: Extract<DockerfilePlan["stages"][number]["base"], { kind: "context" }>,
    steps: StageChain["steps"],
  ): StageBaseSpec {
    const ctx = b.context;
    if (ctx.kind === "image") return { kind: "registry", ref: ctx.ref };
    if (ctx.kind === "scratch") return { kind: "scratch" };
    const root = this.namedRoot(b.name, ctx, this.loc(s));
    const at = this.loc(s);
    const description = `${this.where(s, s.original)} (context ${b.name})`;
    steps.push({
      method: METHOD,
      make: (bv, sp) => ({
        method: METHOD,
        description,
        instructions: [{ op: "COPY", source: "src", dest: "/", sources: ["."], from: b.name }],
        inputs: [{ kind: "select", name: "src", root: root(bv, sp), patterns: ["."], location: at }],
        secrets: [],
        secretsAsEnv: false,
        env: {},
        forceBuild: this.opts.forceBuild ?? false,
        extra: this.epochExtra(),
      }),
    });
    return { kind: "scratch" };
  }

  /** The select root of a named context that `--from` (or a mount's from=) reads. */
  namedRoot(name: string, ctx: NamedContextSpec, at: StepLocation): SelectRootMaker {
    switch (ctx.kind) {
      case "dir": {
        const ignore = this.opts.contextIgnores?.get(ctx.path) ?? [];
        return () => ({ kind: "context", localPath: ctx.path, ignore: [...ignore] });
      }
      case "image":
        return () => ({ kind: "image", ref: ctx.ref });
      case "scratch":
        return (b) => ({
          kind: "stage",
          stage: name,
          plan: { builderVersion: b.version, steps: [emptyStep(name)], deferred: [] },
        });
      case "oci-layout":
        return this.fail(at, `build context ${name}: oci-layout:// contexts are not supported yet`);
      case "git": {
        let ref: ReturnType<typeof parseGitRef>;
        try {
          ref = parseGitRef(ctx.url);
        } catch (e) {
          return this.fail(at, `build context ${name}: ${(e as Error).message}`);
        }
        if (ref?.scheme === "ssh")
          this.fail(at, `build context ${name}: SSH git URLs are not supported (Strata forwards no SSH agent)`);
        return () => ({ kind: "git", url: ctx.url });
      }
    }
  }

  selectRoot(from: string | undefined, self: number, reads: Set<number>, at: StepLocation): SelectRootMaker {
    if (from === undefined)
      return () => ({ kind: "context", localPath: this.opts.contextDir, ignore: [...this.opts.ignore] });
    const stage = this.stageRef(from, self);
    const sb = stage !== undefined ? this.plan.stages[stage] : undefined;
    // A stage replaced by a named context (no instructions of its own) is read straight from the context.
    if (sb?.base.kind === "context" && sb.instructions.length === 0)
      return this.namedRoot(sb.base.name, sb.base.context, at);
    const named = stage === undefined && from !== "context" ? lookupContext(this.opts.namedContexts, from) : undefined;
    if (named) return this.namedRoot(from, named, at);
    if (stage !== undefined) {
      if (this.lineShift !== 0) this.fail(at, `--from=${from}: dockerfileCommands has no other stages`);
      reads.add(stage);
      const name = this.plan.stages[stage]!.name ?? String(stage);
      return (b, stagePlan) => ({ kind: "stage", stage: name, plan: stagePlan(stage, b) });
    }
    if (from === "context")
      return () => ({ kind: "context", localPath: this.opts.contextDir, ignore: [...this.opts.ignore] });
    return () => ({ kind: "image", ref: from });
  }
}

/** The one step of an empty image (a `docker-image://scratch` context read by `--from`). */
function emptyStep(name: string): Step {
  return {
    method: METHOD,
    description: `context ${name} (scratch)`,
    base: { kind: "scratch" },
    instructions: [],
    inputs: [],
    secrets: [],
    env: {},
    forceBuild: false,
    extra: [],
  };
}
