/**
 * The service's base steps. A request's `debian` base names only a Python series; the server makes the step from its
 * own `builders/<version>.json` with the same function `Image.debianSlim` uses, so the recipe mmdebstrap runs, the
 * step's CMD and its key are all the server's, and equal a local build's.
 */
import { debianSuiteFor, loadBuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError } from "../errors.js";
import type { Step } from "../plan/step.js";
import { debianSlimStep } from "../plan/debian-slim.js";
import { WireError } from "./wire/limits.js";
import type { BuildRequest, WireBase, WireStep } from "./wire/schema.js";

/** The debianSlim base step a wire step names (its Python series of `builderVersion`). */
export function debianBaseStep(
  builderVersion: string,
  s: WireStep & { base: Extract<WireBase, { kind: "debian" }> },
): Step {
  return debianSlimStep(loadBuilderVersion(builderVersion), { pythonVersion: s.base.python, forceBuild: s.forceBuild });
}

/**
 * Checks that every debian base of a request (its steps and nested plans) names a Python series its builder version
 * supports; a WireError (400) naming the field otherwise. Call after the builder versions themselves were checked.
 */
export function checkDebianBases(req: BuildRequest): void {
  const chains: [string, string, WireStep[]][] = [
    ["steps", req.builderVersion, req.steps],
    ...(req.plans ?? []).map((p, i): [string, string, WireStep[]] => [`plans[${i}].steps`, p.builderVersion, p.steps]),
  ];
  for (const [where, version, steps] of chains) {
    const base = steps[0]?.base;
    if (base?.kind !== "debian") continue;
    try {
      debianSuiteFor(loadBuilderVersion(version), base.python);
    } catch (e) {
      if (e instanceof InvalidDefinitionError) throw new WireError(`${where}[0].base.python: ${e.message}`);
      throw e;
    }
  }
}
