/**
 * The first step of an Image chain, per kind of base: scratch, a debianSlim base, a registry image, an image already
 * in the store, or a Dockerfile stage's FROM. A base has no instructions of its own, except a Dockerfile stage's
 * starting config.
 */
import { debianSuiteFor, type BuilderVersion } from "../builder-version.js";
import type { KnownConfig, StageChain } from "../dockerfile/to-plan.js";
import { DEFAULT_PATH } from "../oci/defaults.js";
import { debianSlimStep } from "../plan/debian-slim.js";
import type { BaseSpec, Plan, Step } from "../plan/step.js";
import type { ImageDebianSlimParams, ImageFromRegistryParams } from "./params.js";
import { addPythonSteps } from "./python.js";
import type { Secret } from "./secret.js";
import { uvIntoImageStep } from "./uv-image.js";

/** A step as a function of the builder version (called when the plan is made). */
export type StepFactory = (b: BuilderVersion) => Step;

/**
 * A chain's start as a function of the builder version: its base step, or the base step and the steps every image of
 * that base has (debianSlim: a standalone Python and uv, for builder versions that say so).
 */
export type BaseFactory = (b: BuilderVersion) => Step | Step[];

/** How a registry base logs in (`fromRegistry`, `fromAwsEcr`, `fromGcpArtifactRegistry`). */
export interface RegistryLogin {
  login: "registry" | "ecr" | "gcp";
  gcpMode?: "access_token" | "json_key";
}

/** `fromScratch`: an empty image. */
export function scratchBase(params: { forceBuild?: boolean }): StepFactory {
  return () => ({
    method: "fromScratch",
    description: "fromScratch",
    base: { kind: "scratch" },
    instructions: [],
    inputs: [],
    secrets: [],
    env: {},
    forceBuild: params.forceBuild ?? false,
    extra: [],
  });
}

/**
 * `debianSlim`: the base step the builder version gives for the Python series (src/plan/debian-slim.ts), then — where
 * the builder version says so — python-build-standalone copied to /usr/local as addPython does (a series the suite
 * has no Python for) and uv from the builder's uv image. Those steps are ordinary ones (a build service gets them as
 * sent), each cached on its own; a forced base forces them too.
 */
export function debianSlimBase(params: ImageDebianSlimParams): BaseFactory {
  return (b) => {
    const force = params.forceBuild ?? false;
    const base = debianSlimStep(b, { pythonVersion: params.pythonVersion, forceBuild: force });
    const { python, source } = debianSuiteFor(b, params.pythonVersion);
    const steps: Step[] = [base];
    if (source === "standalone")
      for (const f of addPythonSteps("debianSlim", python))
        steps.push({ ...f(b), method: "debianSlim", forceBuild: force });
    const uv = uvIntoImageStep(b, force);
    if (uv) steps.push(uv);
    return steps;
  };
}

/** The config the engine gives a debianSlim base (src/engine/execute.ts). */
export function debianSlimKnown(): KnownConfig {
  return {
    env: [
      ["PATH", DEFAULT_PATH],
      ["LANG", "C.UTF-8"],
    ],
    workdir: "/",
  };
}

/** A registry image (`description`: the step's), logging in with what `registrySecret` holds. */
export function registryBase(
  method: string,
  description: string,
  ref: string,
  params: ImageFromRegistryParams,
  login: RegistryLogin,
  registrySecret: Secret,
): StepFactory {
  return () => ({
    method,
    description,
    base: {
      kind: "registry",
      ref,
      ...(params.insecure !== undefined ? { insecure: params.insecure } : {}),
      ...login,
    },
    instructions: [],
    inputs: [],
    // Registry credentials are the step's secrets; a registry base's key is its manifest digest only.
    secrets: registrySecret.names,
    env: {},
    forceBuild: params.forceBuild ?? false,
    extra: [],
  });
}

/** `fromId`: an image already in the store, by id (or unique prefix). */
export function imageIdBase(imageId: string): StepFactory {
  return () => ({
    method: "fromId",
    description: `fromId ${imageId}`,
    base: { kind: "image", imageId },
    instructions: [],
    inputs: [],
    secrets: [],
    env: {},
    forceBuild: false,
    extra: [],
  });
}

/**
 * The FROM step of a Dockerfile stage that starts from scratch or a registry image; `prefetch`: the stages to build
 * first (listed in a `stages` input, with their plans from `planOf`).
 */
export function dockerfileStageBase(
  c: StageChain,
  prefetch: readonly number[],
  force: boolean,
  planOf: (stage: number, b: BuilderVersion) => Plan,
): StepFactory {
  const base: BaseSpec = c.base.kind === "registry" ? { kind: "registry", ref: c.base.ref } : { kind: "scratch" };
  return (b) => ({
    method: "dockerfile",
    description: c.fromDescription,
    base,
    instructions: structuredClone(c.baseInstructions),
    inputs: prefetch.length ? [{ kind: "stages", name: "stages", plans: prefetch.map((s) => planOf(s, b)) }] : [],
    secrets: [],
    env: {},
    forceBuild: force,
    extra: c.baseExtra.map(([k, v]): [string, string] => [k, v]),
  });
}
