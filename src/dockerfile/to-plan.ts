/**
 * Dockerfile → engine steps. A planned Dockerfile (`planDockerfile`: stages, build order, expanded instructions with
 * their build-arg use) becomes, per needed stage, a base and one step per instruction, each compiling to the shared
 * instruction set (`src/plan/instructions.ts`), so Dockerfile builds go through the same engine path, keys and cache
 * as SDK chains:
 *
 * - FROM: `scratch`, a registry image, or another stage (whose chain becomes this one's prefix, so shared steps share
 *   keys). Stages that other stages read (COPY --from, RUN --mount from=) are embedded as plans in `select` inputs; the
 *   target's first step also lists them in a `stages` input, so independent stages build concurrently before the
 *   chain runs. Stages the target does not need are not built.
 * - COPY/ADD: a `select` input (context with .dockerignore, a stage, or an image) keyed by exactly the matched paths,
 *   URL inputs for ADD (content keyed), inline inputs for heredocs.
 * - RUN: shell/exec form, heredocs (BuildKit's three cases), mounts (bind from context/stage/image, cache, secret,
 *   tmpfs), `--network`; every ARG in scope is the RUN's build args (exported to it, keyed).
 * - ARG, ENV, LABEL, USER, WORKDIR (creates the directory), CMD/ENTRYPOINT (shell form wrapped by SHELL at build
 *   time), SHELL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER: config only (WORKDIR adds a layer only
 *   when it creates the directory).
 *
 * Reading the Dockerfile and its ignore file happens when the definition is made (errors name file:line:column early);
 * nothing else touches the filesystem until the build.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import type { BuilderVersion } from "../builder-version.js";
import { DEFAULT_PATH } from "../oci/defaults.js";
import { InvalidDefinitionError } from "../errors.js";
import { parseIgnoreFile, PatternMatcher } from "../ignore/pattern-matcher.js";
import type { Instruction, RunMount } from "../plan/instructions.js";
import type { Plan, SelectRoot, Step, StepInput, StepLocation } from "../plan/step.js";
import { DockerfileSyntaxError } from "./errors.js";
import { planDockerfile, type BaseImageInfo, type DockerfilePlan } from "./plan-stages.js";
import type { RunMount as PlannedMount } from "./commands.js";
import type { PlannedInstruction } from "./expand-instruction.js";
import { parseHeredocMarker } from "./parse.js";

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
   * What the registry images named by FROM are (their config's Env, WorkingDir and OnBuild), by reference as written
   * after expansion — from {@link resolveBaseImages}. With it, expansion sees a base's ENV (`ENV PATH=/x:$PATH`) and
   * its ONBUILD triggers run right after FROM; without it, neither happens.
   */
  baseImages?: Readonly<Record<string, BaseImageInfo>>;
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
  /** The secret names this stage's steps mount (sorted). */
  secrets: string[];
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

const METHOD = "dockerfile";
/** BuildKit's proxy build args (dockerfile2llb's defaultArgs / proxyEnvFromBuildArgs), sorted by code unit. */
export const PROXY_ARGS = [
  "ALL_PROXY",
  "FTP_PROXY",
  "HTTPS_PROXY",
  "HTTP_PROXY",
  "NO_PROXY",
  "all_proxy",
  "ftp_proxy",
  "http_proxy",
  "https_proxy",
  "no_proxy",
] as const;

/** Reads a Dockerfile and its ignore file, plans it, and returns the step makers of the stages the target needs. */
export function dockerfileChains(dockerfile: string, opts: DockerfileStepOptions = {}): DockerfileChains {
  const abs = path.resolve(dockerfile);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InvalidDefinitionError(
      code === "ENOENT"
        ? `fromDockerfile: ${dockerfile} does not exist (resolved to ${abs})`
        : `fromDockerfile: cannot read ${dockerfile}: ${(e as Error).message}`,
    );
  }
  const contextDir = path.resolve(opts.contextDir ?? path.dirname(abs));
  if (!existsSync(contextDir) || !statSync(contextDir).isDirectory()) {
    throw new InvalidDefinitionError(
      `fromDockerfile: context directory ${opts.contextDir ?? contextDir} does not exist or is not a directory`,
    );
  }
  const ignore = opts.ignore ? [...opts.ignore] : dockerignore(abs, contextDir);
  const file = displayName(dockerfile);
  const bases = opts.baseImages;
  const plan = planDockerfile(text, {
    file,
    buildArgs: opts.buildArgs,
    target: opts.target,
    ...(bases ? { baseImage: (ref: string) => bases[ref] } : {}),
  });
  return new Translator(plan, { ...opts, contextDir, ignore }).chains();
}

/**
 * The configs of the registry images a Dockerfile's needed stages start FROM, for {@link DockerfileStepOptions.baseImages}:
 * each is pulled into `store` (the build needs its layers anyway), or, without a store (a client of a build service,
 * which pulls the layers itself), only its manifest and config are fetched. Call before `Image.fromDockerfile`.
 */
export async function resolveBaseImages(
  dockerfile: string,
  opts: Pick<DockerfileStepOptions, "buildArgs" | "target"> & {
    store?: Parameters<typeof import("../registry/pull.js").pullImage>[1];
    insecure?: boolean;
  },
): Promise<Record<string, BaseImageInfo>> {
  const text = readFileSync(path.resolve(dockerfile), "utf8");
  const plan = planDockerfile(text, { file: displayName(dockerfile), buildArgs: opts.buildArgs, target: opts.target });
  const refs = new Set<string>();
  for (const i of plan.buildOrder) {
    const b = plan.stages[i]!.base;
    if (b.kind === "image") refs.add(b.ref);
  }
  const { pullImage } = await import("../registry/pull.js");
  const { openLazyImage } = await import("../registry/estargz/lazy.js");
  const out: Record<string, BaseImageInfo> = {};
  for (const ref of refs) {
    const store = opts.store;
    const image = store
      ? (await pullImage(ref, store, { insecure: opts.insecure })).config
      : (await openLazyImage(ref, { insecure: opts.insecure })).config;
    const c = image.config as { Env?: string[]; WorkingDir?: string; OnBuild?: string[] | null };
    out[ref] = {
      ...(c.Env ? { env: c.Env } : {}),
      ...(c.WorkingDir ? { workingDir: c.WorkingDir } : {}),
      ...(c.OnBuild?.length ? { onBuild: c.OnBuild } : {}),
    };
  }
  return out;
}

/**
 * Dockerfile instructions to append to an existing chain (`image.dockerfileCommands`): planned as the body of one
 * stage. FROM is not allowed; line numbers count from the first command.
 */
/** The ENV and WORKDIR an image is known to have when `dockerfileCommands` plans lines on it (for expansion). */
export interface KnownConfig {
  env: [string, string][];
  workdir: string;
}

/** Stands for the image `dockerfileCommands` extends, as the FROM of the stage its lines are planned in. */
const PREVIOUS = "strata-dockerfile-commands-base";

/**
 * Plans `dockerfileCommands` lines as one stage on the image they extend: expansion sees that image's known ENV and
 * WORKDIR (`base`). Returns the steps and the ENV/WORKDIR after the lines.
 */
export function commandChain(
  lines: readonly string[],
  opts: DockerfileStepOptions & { base?: KnownConfig } = {},
): StageChain {
  const file = "dockerfileCommands";
  const contextDir = path.resolve(opts.contextDir ?? ".");
  const ignore = opts.ignore
    ? [...opts.ignore]
    : existsSync(path.join(contextDir, ".dockerignore"))
      ? parseIgnoreFile(readFileSync(path.join(contextDir, ".dockerignore"), "utf8"))
      : [];
  const base: KnownConfig = opts.base ?? { env: [], workdir: "/" };
  const text = `FROM ${PREVIOUS}\n` + lines.join("\n");
  let plan: DockerfilePlan;
  try {
    plan = planDockerfile(text, {
      file,
      buildArgs: opts.buildArgs,
      baseImage: (ref) =>
        ref === PREVIOUS ? { env: base.env.map(([k, v]) => `${k}=${v}`), workingDir: base.workdir } : undefined,
    });
  } catch (e) {
    if (e instanceof DockerfileSyntaxError)
      throw new DockerfileSyntaxError({ file, line: Math.max(1, e.line - 1), column: e.column }, e.detail);
    throw e;
  }
  if (plan.stages.length > 1) {
    const loc = plan.stages[1]!.location;
    throw new DockerfileSyntaxError(
      { file, line: loc.line - 1, column: loc.column },
      "FROM is not allowed in dockerfileCommands: the commands extend the image they are called on",
    );
  }
  // The stage's final ENV/WORKDIR start from `base` (the planner's view of the PREVIOUS image).
  return new Translator(plan, { ...opts, contextDir, ignore }, -1).stage(0);
}

function displayName(p: string): string {
  const rel = path.relative(process.cwd(), path.resolve(p));
  return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : p;
}

/** The ignore patterns for a Dockerfile build, in Modal's lookup order. */
export function dockerignore(dockerfileAbs: string, contextDir: string): string[] {
  for (const f of [
    dockerfileAbs + ".dockerignore",
    path.join(path.dirname(dockerfileAbs), ".dockerignore"),
    path.join(contextDir, ".dockerignore"),
  ]) {
    if (!existsSync(f)) continue;
    const patterns = parseIgnoreFile(readFileSync(f, "utf8"));
    try {
      PatternMatcher.parse(patterns);
    } catch (e) {
      throw new InvalidDefinitionError(`${f}: ${(e as Error).message}`);
    }
    return patterns;
  }
  return [];
}

function summary(original: string): string {
  const one = original.replace(/\s+/g, " ").trim();
  return one.length > 100 ? one.slice(0, 97) + "..." : one;
}

const isUrl = (s: string) => /^https?:\/\//i.test(s);
const isGit = (s: string) => /^git@|^git:\/\/|\.git(#.*)?$/i.test(s);

class Translator {
  readonly byName = new Map<string, number>();
  /** Secret names the translated steps mount, per stage. */
  readonly secretsUsed = new Map<number, Set<string>>();

  constructor(
    readonly plan: DockerfilePlan,
    readonly opts: DockerfileStepOptions & { contextDir: string; ignore: string[] },
    /** line offset for command lists (the synthetic FROM) */
    readonly lineShift = 0,
  ) {
    plan.stages.forEach((s, i) => {
      if (s.name) this.byName.set(s.name, i);
    });
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

  /** A step's description: `Dockerfile:12:1 RUN make` (the location StepFailedError and logs show). */
  where(pi: { location: { file: string; line: number; column: number } }, original: string): string {
    return `${pi.location.file}:${pi.location.line + this.lineShift}:${pi.location.column} ${summary(original)}`;
  }

  stage(i: number): StageChain {
    const s = this.plan.stages[i]!;
    if (s.platform && !(s.platform.os === "linux" && s.platform.architecture === "amd64")) {
      this.fail(
        this.loc(s),
        `FROM --platform=${s.platform.os}/${s.platform.architecture}${s.platform.variant ? "/" + s.platform.variant : ""}: Strata builds linux/amd64 images only`,
      );
    }
    const base: StageBaseSpec =
      s.base.kind === "scratch"
        ? { kind: "scratch" }
        : s.base.kind === "stage"
          ? { kind: "stage", stage: s.base.stage }
          : { kind: "registry", ref: s.base.ref };
    const reads = new Set<number>();
    const steps: StageChain["steps"] = [];
    let cmdSet = false;
    for (const pi of s.instructions) {
      if (pi.kind === "CMD") cmdSet = true;
      const make = this.instruction(pi, i, reads, cmdSet);
      if (make) steps.push({ method: METHOD, make });
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
      secrets: [...(this.secretsUsed.get(i) ?? [])].sort(),
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

  common(
    pi: PlannedInstruction,
    instructions: Instruction[],
    extra: [string, string][] = [],
    buildArgs: [string, string][] = [],
  ): Omit<Step, "inputs"> {
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
   * The proxy build args given to the build, sorted by name: BuildKit (dockerfile2llb) gives every RUN these as its
   * ProxyEnv whether or not an ARG declares them, and leaves them out of the cache key, the image config and history.
   */
  proxyEnv(): [string, string][] {
    const given = this.opts.buildArgs ?? {};
    return PROXY_ARGS.filter((k) => Object.hasOwn(given, k)).map((k) => [k, given[k]!]);
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
      case "RUN":
        return this.run(pi, self, reads);
      case "COPY":
      case "ADD":
        return this.copy(pi, self, reads);
    }
  }

  selectRoot(
    from: string | undefined,
    self: number,
    reads: Set<number>,
    at: StepLocation,
  ): (b: BuilderVersion, stagePlan: (stage: number, b: BuilderVersion) => Plan) => SelectRoot {
    if (from === undefined)
      return () => ({ kind: "context", localPath: this.opts.contextDir, ignore: [...this.opts.ignore] });
    const stage = this.stageRef(from, self);
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

  run(pi: Extract<PlannedInstruction, { kind: "RUN" }>, self: number, reads: Set<number>): StepMaker {
    const at = this.loc(pi);
    if (pi.security === "insecure")
      this.fail(at, "RUN --security=insecure is not supported (Strata runs every command in its sandbox)");
    let command: string | string[] = pi.prependShell ? pi.command.join(" ") : [...pi.command];
    const inputs: ((b: BuilderVersion, sp: (s: number, b: BuilderVersion) => Plan) => StepInput)[] = [];
    const mounts: RunMount[] = [];
    if (pi.heredocs.length > 0) {
      if (typeof command !== "string") this.fail(at, "RUN with a heredoc must use the shell form");
      const chomp = (h: { content: string; chomp: boolean }) => (h.chomp ? h.content.replace(/^\t+/gm, "") : h.content);
      const whole = parseHeredocMarker(command.trim());
      const first = pi.heredocs[0]!;
      if (whole && whole.name === first.name) {
        const data = chomp(first);
        if (data.startsWith("#!")) {
          const name = `<<${first.name}`;
          inputs.push(() => ({ kind: "inline", name, content: data, mode: 0o755 }));
          mounts.push({ type: "bind", source: name, target: `/dev/pipes/${first.name}`, readonly: true });
          command = `/dev/pipes/${first.name}`;
        } else {
          command = data;
        }
      } else {
        let full = command;
        for (const h of pi.heredocs) full += "\n" + h.content + h.name;
        command = full;
      }
    }
    const given = new Set(this.opts.secrets ?? []);
    const usedSecrets = new Set<string>();
    pi.mounts.forEach((m: PlannedMount, k: number) => {
      switch (m.type) {
        case "ssh":
          this.fail(at, "RUN --mount=type=ssh is not supported (Strata does not forward an SSH agent into builds)");
          return;
        case "tmpfs":
          mounts.push({ type: "tmpfs", target: m.target, ...(m.sizeBytes !== undefined ? { size: m.sizeBytes } : {}) });
          return;
        case "cache":
          if (m.from !== undefined || m.source !== undefined)
            this.fail(at, "RUN --mount=type=cache with from= or source= is not supported (a cache mount starts empty)");
          mounts.push({
            type: "cache",
            id: m.id ?? m.target,
            target: m.target,
            sharing: m.sharing ?? "shared",
            ...(m.readOnly ? { readonly: true } : {}),
            ...(m.mode !== undefined ? { mode: m.mode } : {}),
            ...(m.uid !== undefined ? { uid: m.uid } : {}),
            ...(m.gid !== undefined ? { gid: m.gid } : {}),
          });
          return;
        case "secret": {
          const id = m.id ?? "";
          if (!given.has(id)) {
            if (m.required)
              this.fail(
                at,
                `RUN --mount=type=secret,id=${id}: the build has no secret named ${JSON.stringify(id)} (pass it in the secrets option)`,
              );
            return; // BuildKit skips a missing optional secret
          }
          usedSecrets.add(id);
          mounts.push({
            type: "secret",
            id,
            // BuildKit (dispatchSecret): the default /run/secrets/<id> file applies only without env=; a secret given as
            // env only is no file, and env= with a target (even the default path) is both.
            ...(m.target ? { target: m.target } : m.env === undefined ? { target: `/run/secrets/${id}` } : {}),
            ...(m.env !== undefined ? { env: m.env } : {}),
            ...(m.required ? { required: true } : {}),
            ...(m.mode !== undefined ? { mode: m.mode } : {}),
            ...(m.uid !== undefined ? { uid: m.uid } : {}),
            ...(m.gid !== undefined ? { gid: m.gid } : {}),
          });
          return;
        }
        case "bind": {
          const name = `mount${k}`;
          const root = this.selectRoot(m.from, self, reads, at);
          const source = m.source ?? (m.from === undefined ? "." : "/");
          inputs.push((b, sp) => ({ kind: "select", name, root: root(b, sp), patterns: [source], location: at }));
          mounts.push({ type: "bind", source: name, target: m.target, readonly: m.readOnly });
          return;
        }
      }
    });
    const ins: Instruction = {
      op: "RUN",
      command,
      ...(mounts.length ? { mounts } : {}),
      ...(pi.network === "none" ? { network: "none" as const } : {}),
    };
    const args: [string, string][] = pi.argsInScope.map(([k, v]) => [k, v]);
    // RUN sees every ARG in scope, so all of them are keyed (Step.buildArgs → KeyInputs.buildArgs).
    const common = this.common(pi, [ins], [], args);
    const proxyEnv = this.proxyEnv();
    if (proxyEnv.length) common.proxyEnv = proxyEnv;
    const secrets = [...usedSecrets].sort();
    if (secrets.length) {
      const stageSecrets = this.secretsUsed.get(self) ?? new Set<string>();
      for (const n of secrets) stageSecrets.add(n);
      this.secretsUsed.set(self, stageSecrets);
    }
    return (b, sp) => ({
      ...common,
      instructions: structuredClone(common.instructions),
      secrets: [...secrets],
      inputs: inputs.map((f) => f(b, sp)),
    });
  }

  copy(pi: Extract<PlannedInstruction, { kind: "COPY" | "ADD" }>, self: number, reads: Set<number>): StepMaker {
    const at = this.loc(pi);
    const isAdd = pi.kind === "ADD";
    const paths: string[] = [];
    const urls: string[] = [];
    for (const s of pi.sources) {
      if (isAdd && isUrl(s)) {
        if (isGit(s))
          this.fail(at, `ADD ${s}: git sources are not supported; clone in a RUN step or COPY a checkout instead`);
        urls.push(s);
      } else if (isAdd && isGit(s) && /^git@|^git:\/\//.test(s)) {
        this.fail(at, `ADD ${s}: git sources are not supported; clone in a RUN step or COPY a checkout instead`);
      } else {
        paths.push(s);
      }
    }
    if (isAdd) {
      if (pi.checksum !== undefined && paths.length) this.fail(at, "ADD --checksum applies to URL sources only");
      if (pi.keepGitDir) this.fail(at, "ADD --keep-git-dir: git sources are not supported");
    }
    const from = pi.kind === "COPY" ? pi.from : undefined;
    const root = this.selectRoot(from, self, reads, at);
    const makers: ((b: BuilderVersion, sp: (s: number, b: BuilderVersion) => Plan) => StepInput)[] = [];
    const names: string[] = [];
    if (paths.length) {
      const exclude = [...pi.exclude];
      const parents = pi.kind === "COPY" && pi.parents;
      names.push("src");
      makers.push((b, sp) => ({
        kind: "select",
        name: "src",
        root: root(b, sp),
        patterns: [...paths],
        ...(exclude.length ? { exclude } : {}),
        ...(parents ? { parents: true } : {}),
        location: at,
      }));
    }
    urls.forEach((u, k) => {
      const name = `url${k}`;
      names.push(name);
      const checksum = isAdd ? pi.checksum : undefined;
      makers.push(() => ({ kind: "url", name, url: u, ...(checksum !== undefined ? { checksum } : {}), location: at }));
    });
    const heredocNames: string[] = [];
    for (const h of pi.inline) {
      const name = `<<${h.path}`;
      if (names.includes(name)) this.fail(at, `${pi.kind}: two heredocs named ${h.path}`);
      names.push(name);
      heredocNames.push(name);
      const data = h.data;
      makers.push(() => ({ kind: "inline", name, content: data, mode: 0o644 }));
    }
    if (names.length === 0) this.fail(at, `${pi.kind} has no sources`);
    const sources = [...paths, ...urls, ...heredocNames];
    const opts = {
      source: names[0]!,
      dest: pi.dest,
      sources,
      ...(names.length > 1 ? { inputs: names.slice(1) } : {}),
      ...(from !== undefined ? { from } : {}),
      ...(pi.chown !== undefined ? { chown: pi.chown } : {}),
      ...(pi.chmod !== undefined ? { chmod: pi.chmod } : {}),
      ...(pi.link ? { link: true } : {}),
      ...(pi.exclude.length ? { exclude: [...pi.exclude] } : {}),
      ...(pi.kind === "COPY" && pi.parents ? { parents: true } : {}),
    };
    const ins: Instruction =
      pi.kind === "ADD"
        ? {
            op: "ADD",
            ...opts,
            ...(pi.unpack !== undefined ? { unpack: pi.unpack } : {}),
            ...(pi.checksum !== undefined ? { checksum: pi.checksum } : {}),
          }
        : { op: "COPY", ...opts };
    const common = this.common(pi, [ins], [], this.usedArgs(pi));
    return (b, sp) => ({
      ...common,
      instructions: structuredClone(common.instructions),
      secrets: [],
      inputs: makers.map((f) => f(b, sp)),
    });
  }
}
