/**
 * The `debianSlim` base step, derived from a builder version's file (`builders/<version>.json`) and a Python series
 * only: the one place a debian base's recipe is made, for `Image.debianSlim` and for the build service (whose clients
 * name just the builder version and the series), so both build and key the same recipe.
 */
import { debianSuiteFor, type BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError } from "../errors.js";
import type { BaseSpec, Step } from "./step.js";

export interface DebianSlimStepParams {
  /** A Python series the builder version lists (`"3.11"`). Default: the builder version's `defaultPython`. */
  pythonVersion?: string;
  /** Default false. */
  forceBuild?: boolean;
}

/** The base step (its recipe is keyed by the engine as the extra `base`; see src/keys/step-extra.ts). */
export function debianSlimStep(b: BuilderVersion, params: DebianSlimStepParams = {}): Step {
  const { python, suite, source } = debianSuiteFor(b, params.pythonVersion);
  const own = source === "standalone" ? (b.debian.standalonePackages ?? b.debian.packages) : b.debian.packages;
  const pins = debianPins(b, suite);
  const base: BaseSpec = {
    kind: "debian",
    python,
    suite,
    mirror: b.debian.mirror,
    variant: b.debian.variant,
    packages: [...new Set([...own, ...(b.debian.toolchain ?? [])])].sort(),
    cmd: [...b.debian.cmd],
    ...(pins ? { pins } : {}),
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

/**
 * The recorded package versions of a suite (sorted by name), or undefined when the builder version pins none. A
 * builder version that pins some suites must pin every suite it uses.
 */
export function debianPins(b: BuilderVersion, suite: string): [string, string][] | undefined {
  if (!b.debian.pins) return undefined;
  const recorded = Object.hasOwn(b.debian.pins, suite) ? b.debian.pins[suite] : undefined;
  if (!recorded || Object.keys(recorded).length === 0)
    throw new InvalidDefinitionError(
      `debianSlim: builder version ${b.version} records no package versions for Debian ${suite}; ` +
        `record them with \`node scripts/record-debian-pins.mjs ${b.version}\` (a released version always has them)`,
    );
  return Object.entries(recorded).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
}
