/**
 * The `debianSlim` base step, derived from a builder version's file (`builders/<version>.json`) and a Python series
 * only: the one place a debian base's recipe is made, for `Image.debianSlim` and for the build service (whose clients
 * name just the builder version and the series), so both build and key the same recipe.
 */
import { debianSuiteFor, type BuilderVersion } from "../builder-version.js";
import type { BaseSpec, Step } from "./step.js";

export interface DebianSlimStepParams {
  /** A Python series the builder version lists (`"3.11"`). Default: the builder version's `defaultPython`. */
  pythonVersion?: string;
  /** Default false. */
  forceBuild?: boolean;
}

/** The base step (its recipe is keyed by the engine as the extra `base`; see src/keys/step-extra.ts). */
export function debianSlimStep(b: BuilderVersion, params: DebianSlimStepParams = {}): Step {
  const { python, suite } = debianSuiteFor(b, params.pythonVersion);
  const base: BaseSpec = {
    kind: "debian",
    python,
    suite,
    mirror: b.debian.mirror,
    variant: b.debian.variant,
    packages: [...b.debian.packages].sort(),
    cmd: [...b.debian.cmd],
  };
  return {
    method: "debianSlim",
    description: `debianSlim python ${python} (${suite})`,
    base,
    instructions: [{ op: "CMD", argv: [...b.debian.cmd] }],
    inputs: [],
    secrets: [],
    env: {},
    forceBuild: params.forceBuild ?? false,
    extra: [],
  };
}
