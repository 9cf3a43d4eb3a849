/**
 * Strict options: every Image method checks its options object at call time, so an option Strata does not have is an
 * error where the definition is written, not a silently ignored setting. An option Modal has and Strata does not
 * (`gpu`, `cloud`, `kwargs`, …) is named with what Strata does instead; anything else gets a "did you mean" hint
 * (snake_case spellings included) or the list of options the method takes.
 */
import { suggest } from "../dockerfile/suggest.js";
import { InvalidDefinitionError } from "../errors.js";

/**
 * The option names of a params type, as a record naming every field of `P` (so the compiler keeps the list in step
 * with the interface: a field added to `P` and not here is a type error).
 */
export function optionNames<P extends object>(names: Record<keyof Required<P>, true>): readonly string[] {
  return Object.keys(names);
}

/** What Strata does instead of an option Modal's Image methods take (by Strata's camelCase spelling). */
const MODAL_ONLY: Readonly<Record<string, (method: string) => string>> = {
  gpu: () =>
    "build-time GPUs are not supported; Strata builds on CPU. Build the image without one and ask for GPUs " +
    "where you run it (CUDA libraries install fine without a GPU)",
  cloud: () =>
    "Strata builds where it runs: on this machine, or on the build service STRATA_SERVER names; there is no cloud to pick",
  region: () =>
    "Strata builds where it runs: on this machine, or on the build service STRATA_SERVER names; there is no region to pick",
  cpu: () => "a step's CPU and memory are limited by the build service's operator (strata serve's sandbox flags)",
  memory: () => "a step's CPU and memory are limited by the build service's operator (strata serve's sandbox flags)",
  kwargs: () =>
    "runFunction passes positional arguments only: put them in args (JSON-serialisable), e.g. args: [{ key: 1 }]",
  includeSource: () =>
    "runFunction always runs (and keys) the function's own source text; it cannot import the definition's modules",
  networkFileSystems: () =>
    "network file systems are not mounted into builds; use a cache mount (RUN --mount=type=cache,…) to keep files between builds",
  contextFiles: () => "put the files in contextDir (default: the current directory) and COPY them from there",
  contextMount: () => "put the files in contextDir and COPY them from there, or use addLocalDir",
  pythonVersion: (method) =>
    `${method} does not install Python: use addPython on fromRegistry or fromDockerfile, or start from debianSlim({ pythonVersion })`,
  environmentName: () => "Strata has no environments: an image is named by its id, and the store is STRATA_HOME",
  client: () => "Strata needs no client object: images build locally, or on the build service STRATA_SERVER names",
};

/** `force_build` → `forceBuild`. */
function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Why `name` is not an option of `method` (which takes `known`), and what to write instead. */
function unknownOptionMessage(method: string, name: string, known: readonly string[]): string {
  const asCamel = camel(name);
  if (asCamel !== name && known.includes(asCamel))
    return `${method}: unknown option "${name}": options are camelCase in Strata (did you mean ${asCamel}?)`;
  const instead = Object.hasOwn(MODAL_ONLY, asCamel) ? MODAL_ONLY[asCamel]!(method) : "";
  if (instead) return `${method}: option "${name}" is not supported: ${instead}`;
  const hint = suggest(name, known);
  const takes = known.length ? `${method} takes ${known.join(", ")}` : `${method} takes no options`;
  return `${method}: unknown option "${name}"${hint}; ${takes}`;
}

/**
 * Throws an InvalidDefinitionError naming the first option of `params` that `method` does not take (see the module
 * comment). An option set to `undefined` counts as not given. `params` that is not an object is left to the caller.
 */
export function checkOptions(method: string, params: unknown, known: readonly string[]): void {
  if (typeof params !== "object" || params === null || Array.isArray(params)) return;
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || known.includes(name)) continue;
    throw new InvalidDefinitionError(unknownOptionMessage(method, name, known));
  }
}
