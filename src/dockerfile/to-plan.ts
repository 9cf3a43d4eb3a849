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
 * nothing else touches the filesystem until the build. This module reads them and plans the stages; the translation
 * into steps is `stage-translator.ts` (with `run-step.ts` and `copy-step.ts`), its result's shape `stage-chain.ts`.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { InvalidDefinitionError } from "../errors.js";
import { parseIgnoreFile, PatternMatcher } from "../ignore/pattern-matcher.js";
import { DockerfileSyntaxError } from "./errors.js";
import { type NamedContextSpec, parseBuildContexts } from "./named-context.js";
import { type DockerfilePlan, planDockerfile } from "./plan-stages.js";
import type { DockerfileChains, DockerfileStepOptions, KnownConfig, StageChain } from "./stage-chain.js";
import { Translator } from "./stage-translator.js";

export type {
  DockerfileChains,
  DockerfileStepOptions,
  KnownConfig,
  StageBaseSpec,
  StageChain,
  StepMaker,
} from "./stage-chain.js";

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
  const named = namedContexts(opts.buildContexts);
  const plan = planDockerfile(text, {
    file,
    buildArgs: opts.buildArgs,
    target: opts.target,
    ...(bases ? { baseImage: (ref: string) => bases[ref] } : {}),
    ...(named ? { namedContexts: named.specs } : {}),
  });
  return new Translator(plan, {
    ...opts,
    contextDir,
    ignore,
    ...(named ? { namedContexts: named.specs, contextIgnores: named.ignores } : {}),
  }).chains();
}

/**
 * Parses `--build-context` values (a relative directory against the current directory) and reads each directory
 * context's own `.dockerignore` (BuildKit applies it, as to the main context). A directory must exist.
 */
export function namedContexts(
  given: Readonly<Record<string, string>> | undefined,
): { specs: Map<string, NamedContextSpec>; ignores: Map<string, string[]> } | undefined {
  if (!given || Object.keys(given).length === 0) return undefined;
  const specs = parseBuildContexts(given, (p) => path.resolve(p));
  const ignores = new Map<string, string[]>();
  for (const [name, spec] of specs) {
    if (spec.kind !== "dir") continue;
    const st = statSync(spec.path, { throwIfNoEntry: false });
    if (!st?.isDirectory())
      throw new InvalidDefinitionError(
        `build context ${name}: ${spec.path} ${st ? "is not a directory" : "does not exist"} (a local context is a directory)`,
      );
    const f = path.join(spec.path, ".dockerignore");
    if (!existsSync(f)) continue;
    const patterns = parseIgnoreFile(readFileSync(f, "utf8"));
    try {
      PatternMatcher.parse(patterns);
    } catch (e) {
      throw new InvalidDefinitionError(`${f}: ${(e as Error).message}`);
    }
    ignores.set(spec.path, patterns);
  }
  return { specs, ignores };
}

/** Stands for the image `dockerfileCommands` extends, as the FROM of the stage its lines are planned in. */
const PREVIOUS = "strata-dockerfile-commands-base";

/**
 * Plans `dockerfileCommands` lines as one stage on the image they extend: expansion sees that image's known ENV and
 * WORKDIR (`base`). Returns the steps and the ENV/WORKDIR after the lines. FROM is not allowed; line numbers count
 * from the first command.
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

/** A Dockerfile's path as messages name it: relative to the current directory when under it. */
export function displayName(p: string): string {
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
