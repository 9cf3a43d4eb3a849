/**
 * Checking and copying the arguments of Image methods at call time: variadic `(...items, params?)` lists, options
 * snapshots (so a caller mutating them later cannot change a definition), and the parts every step shares.
 */
import { InvalidDefinitionError } from "../errors.js";
import { shellQuote } from "../plan/instructions.js";
import { secretNames } from "../plan/secrets.js";
import type { Step } from "../plan/step.js";
import type { ImagePipInstallParams, ImageStepParams } from "./params.js";
import { refuseNul, refuseNulSecretEnv } from "./nul.js";
import { checkOptions } from "./options.js";
import { mergeSecrets, Secret, type SecretLike } from "./secret.js";

/** A name → string option (`buildArgs`, `buildContexts`), copied; undefined if not given. */
export function checkBuildArgs(
  method: string,
  args: Record<string, string> | undefined,
  option = "buildArgs",
): Record<string, string> | undefined {
  if (args === undefined) return undefined;
  if (!isParams(args)) throw new InvalidDefinitionError(`${method}: ${option} must be an object of strings`);
  for (const [k, v] of Object.entries(args)) {
    if (typeof v !== "string")
      throw new InvalidDefinitionError(
        `${method}: ${option === "buildArgs" ? "build arg" : `${option}:`} ${k} must be a string, got ${typeof v}`,
      );
  }
  refuseNul(method, "buildArgs", args);
  return { ...args };
}

/** An `env` option: an object of valid variable names to strings (copied), or undefined. */
export function checkEnv(method: string, env: unknown): Record<string, string> | undefined {
  if (env === undefined) return undefined;
  if (!isParams(env)) throw new InvalidDefinitionError(`${method}: env must be an object of strings`);
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
      throw new InvalidDefinitionError(`${method}: env: "${k}" is not a valid variable name`);
    if (typeof v !== "string")
      throw new InvalidDefinitionError(`${method}: env: value of ${k} must be a string, got ${typeof v}`);
  }
  refuseNul(method, "env", env);
  return { ...(env as Record<string, string>) };
}

export function isParams(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/**
 * Copies an options object at call time, so later mutation by the caller cannot change a definition (secrets are
 * resolved to a Secret, env and ignore lists copied).
 */
export function snapshot<P extends object>(params: P | undefined): P {
  const c = { ...(params ?? {}) } as Record<string, unknown>;
  if (c.env && typeof c.env === "object") c.env = { ...(c.env as Record<string, string>) };
  if (Array.isArray(c.ignore)) c.ignore = [...(c.ignore as string[])];
  if (c.secrets !== undefined) c.secrets = Secret.fromObject(mergeSecrets(c.secrets as SecretLike[] | SecretLike));
  return c as P;
}

/** Splits variadic `(...strings, params?)` arguments; nested arrays are flattened; options `method` does not take are errors. */
export function splitArgs<P extends object>(
  method: string,
  args: readonly unknown[],
  known: readonly string[],
): { items: string[]; params: P } {
  const last = args[args.length - 1];
  if (isParams(last)) {
    checkOptions(method, last, known);
    // Every secret of these methods reaches its RUN as an environment variable.
    refuseNul(method, "", last, ["secrets"]);
    refuseNulSecretEnv(method, last.secrets as SecretLike[] | SecretLike | undefined);
  }
  const params = snapshot((isParams(last) ? last : {}) as P);
  const rest = isParams(last) ? args.slice(0, -1) : args;
  const items: string[] = [];
  for (const a of rest.flat()) {
    if (typeof a !== "string")
      throw new InvalidDefinitionError(`${method}: expected strings, got ${typeof a} (${JSON.stringify(a)})`);
    items.push(a);
  }
  refuseNul(method, "arguments", items);
  return { items, params };
}

export function requireAbsolute(method: string, remote: string): void {
  if (!remote.startsWith("/"))
    throw new InvalidDefinitionError(`${method}: remote path "${remote}" must be absolute (start with /)`);
}

export function timeoutMs(seconds: number | undefined, method: string): number | undefined {
  if (seconds === undefined) return undefined;
  if (!(typeof seconds === "number" && seconds > 0))
    throw new InvalidDefinitionError(`${method}: timeout must be a positive number of seconds`);
  return Math.round(seconds * 1000);
}

/** The fields a layer method's step shares; `secrets` lists the names of the step's secrets (values stay with the Image). */
export function stepBase(
  method: string,
  description: string,
  params: ImageStepParams,
): Omit<Step, "instructions" | "inputs" | "extra"> {
  return {
    method,
    description,
    secrets: secretNames(stepSecrets(params)),
    env: { ...(params.env ?? {}) },
    forceBuild: params.forceBuild ?? false,
  };
}

/** The values of a step's secrets (several Secrets merged, a later one winning). */
export function stepSecrets(params: { secrets?: SecretLike[] | SecretLike }): Record<string, string> {
  return mergeSecrets(params.secrets);
}

export function pipFlags(p: ImagePipInstallParams): string[] {
  const out: string[] = [];
  if (p.findLinks) out.push("--find-links", shellQuote(p.findLinks));
  if (p.indexUrl) out.push("--index-url", shellQuote(p.indexUrl));
  if (p.extraIndexUrl) out.push("--extra-index-url", shellQuote(p.extraIndexUrl));
  if (p.pre) out.push("--pre");
  if (p.extraOptions) out.push(p.extraOptions);
  return out;
}

export function checkPackages(method: string, pkgs: string[]): void {
  for (const p of pkgs) {
    if (p.startsWith("-"))
      throw new InvalidDefinitionError(
        `${method}: "${p}" looks like an option, not a package; pass options through extraOptions`,
      );
  }
}

/**
 * `fromDockerfile`'s `docker build` options, checked: `labels` as entries (non-empty names, string values),
 * `noCacheFilter` as stage names, and `network` (`default` is the builder's own, so none is written into the plan).
 */
export function dockerfileBuildOptions(p: { labels?: unknown; noCacheFilter?: unknown; network?: unknown }): {
  labels: [string, string][];
  noCacheFilter: string[];
  network?: "none" | "host";
} {
  const method = "fromDockerfile";
  const labels: [string, string][] = [];
  if (p.labels !== undefined) {
    if (!isParams(p.labels)) throw new InvalidDefinitionError(`${method}: labels must be an object of strings`);
    for (const [k, v] of Object.entries(p.labels)) {
      if (k === "") throw new InvalidDefinitionError(`${method}: labels: a label needs a name`);
      if (typeof v !== "string")
        throw new InvalidDefinitionError(`${method}: labels: value of ${k} must be a string, got ${typeof v}`);
      labels.push([k, v]);
    }
  }
  const filter = p.noCacheFilter;
  if (filter !== undefined && (!Array.isArray(filter) || filter.some((s) => typeof s !== "string" || s === "")))
    throw new InvalidDefinitionError(`${method}: noCacheFilter must be an array of stage names, e.g. ["build"]`);
  const network = p.network;
  if (network !== undefined && network !== "default" && network !== "none" && network !== "host")
    throw new InvalidDefinitionError(
      `${method}: network must be "default", "none" or "host", got ${JSON.stringify(network)}`,
    );
  return {
    labels,
    noCacheFilter: [...((filter as string[] | undefined) ?? [])],
    ...(network === "none" || network === "host" ? { network } : {}),
  };
}
