/**
 * The steps of the Image methods that install or run something in a layer (`aptInstall`, `pipInstall`,
 * `pipInstallFromRequirements`, `runCommands`, `runFunction`; uv's are in `uv.ts`): each checks its arguments at call time
 * and returns the step to append with the secret values it uses, or undefined when there is nothing to do (the image
 * stays as it is).
 */
import { InvalidDefinitionError } from "../errors.js";
import { shellQuote } from "../plan/instructions.js";
import { checkPackages, pipFlags, snapshot, splitArgs, stepBase, stepSecrets, timeoutMs } from "./arguments.js";
import type { StepFactory } from "./base-steps.js";
import { functionModule } from "./function-module.js";
import { localPath } from "./local-paths.js";
import { refuseNul, refuseNulSecretEnv } from "./nul.js";
import { checkOptions } from "./options.js";
import {
  OPTIONS,
  type ImageAptInstallParams,
  type ImagePipInstallParams,
  type ImageRunCommandsParams,
  type ImageRunFunctionParams,
} from "./params.js";
import { volumeMounts } from "./volume.js";

/** A step a layer method appends: the method's name, the step, and the secret values it uses (by its description). */
export interface LayerStep {
  method: string;
  make: StepFactory;
  secrets: { step: string; values: Record<string, string> };
}

/** `aptInstall`: `apt-get update` then `apt-get install -y`, in one layer. */
export function aptInstallStep(args: readonly unknown[]): LayerStep | undefined {
  const { items, params } = splitArgs<ImageAptInstallParams>("aptInstall", args, OPTIONS.aptInstall);
  if (items.length === 0) return undefined;
  checkPackages("aptInstall", items);
  const net = params.network;
  const description = `aptInstall ${items.join(" ")}`;
  return {
    method: "aptInstall",
    make: () => ({
      ...stepBase("aptInstall", description, params),
      instructions: [
        { op: "RUN", command: "apt-get update", network: net },
        { op: "RUN", command: `apt-get install -y ${items.map(shellQuote).join(" ")}`, network: net },
      ],
      inputs: [],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, "aptInstall"),
    }),
    secrets: { step: description, values: stepSecrets(params) },
  };
}

/** `pipInstall`: packages sorted, so their order does not change the key. */
export function pipInstallStep(args: readonly unknown[]): LayerStep | undefined {
  const { items, params } = splitArgs<ImagePipInstallParams>("pipInstall", args, OPTIONS.pipInstall);
  if (items.length === 0) return undefined;
  checkPackages("pipInstall", items);
  const pkgs = [...items].sort();
  const description = `pipInstall ${pkgs.join(" ")}`;
  return {
    method: "pipInstall",
    make: () => ({
      ...stepBase("pipInstall", description, params),
      instructions: [
        {
          op: "RUN",
          command: ["python -m pip install", ...pkgs.map(shellQuote), ...pipFlags(params)].join(" "),
          network: params.network,
        },
      ],
      inputs: [],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, "pipInstall"),
    }),
    secrets: { step: description, values: stepSecrets(params) },
  };
}

/** `pipInstallFromRequirements`: the requirements file is an input, so its content is keyed. */
export function pipInstallFromRequirementsStep(requirements: string, paramsIn: ImagePipInstallParams): LayerStep {
  checkOptions("pipInstallFromRequirements", paramsIn, OPTIONS.pipInstallFromRequirements);
  refuseNul("pipInstallFromRequirements", "requirements", requirements);
  refuseNul("pipInstallFromRequirements", "", paramsIn, ["secrets"]);
  refuseNulSecretEnv("pipInstallFromRequirements", paramsIn.secrets);
  const params = snapshot(paramsIn);
  const local = localPath("pipInstallFromRequirements", requirements, "requirements file");
  const description = `pipInstallFromRequirements ${requirements}`;
  return {
    method: "pipInstallFromRequirements",
    make: () => ({
      ...stepBase("pipInstallFromRequirements", description, params),
      instructions: [
        { op: "COPY", source: "requirements", dest: "/.requirements.txt" },
        {
          op: "RUN",
          command: ["python -m pip install -r /.requirements.txt", ...pipFlags(params)].join(" "),
          network: params.network,
        },
      ],
      inputs: [{ kind: "file", name: "requirements", localPath: local }],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, "pipInstallFromRequirements"),
    }),
    secrets: { step: description, values: stepSecrets(params) },
  };
}

/** `runCommands`: each command its own RUN, in one layer. */
export function runCommandsStep(args: readonly unknown[]): LayerStep | undefined {
  const { items, params } = splitArgs<ImageRunCommandsParams>("runCommands", args, OPTIONS.runCommands);
  if (items.length === 0) return undefined;
  const desc = items.length === 1 ? items[0]! : `${items[0]} (+${items.length - 1} more)`;
  const description = `runCommands ${desc}`;
  const volumes = volumeMounts("runCommands", params.volumes);
  return {
    method: "runCommands",
    make: () => ({
      ...stepBase("runCommands", description, params),
      instructions: items.map((c) => ({
        op: "RUN",
        command: c,
        network: params.network,
        ...(volumes.length ? { mounts: volumes.map((m) => ({ ...m })) } : {}),
      })),
      inputs: [],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, "runCommands"),
    }),
    secrets: { step: description, values: stepSecrets(params) },
  };
}

/** `runFunction`: the function's module runs with the builder's node; its source text and arguments are keyed. */
export function runFunctionStep(
  fn: (...args: never[]) => unknown,
  paramsIn: ImageRunFunctionParams & { args?: unknown[] },
): LayerStep {
  checkOptions("runFunction", paramsIn, OPTIONS.runFunction);
  // `args` travel as JSON, which escapes a NUL: only the options that reach the environment are checked.
  refuseNul("runFunction", "", paramsIn, ["secrets", "args"]);
  refuseNulSecretEnv("runFunction", paramsIn.secrets);
  const params = snapshot(paramsIn);
  if (typeof fn !== "function") throw new InvalidDefinitionError("runFunction: expected a function");
  const { source, module, argsJson } = functionModule(fn, params.args ?? []);
  const name = fn.name || "anonymous";
  const description = `runFunction ${name}`;
  const volumes = volumeMounts("runFunction", params.volumes);
  return {
    method: "runFunction",
    make: () => ({
      ...stepBase("runFunction", description, params),
      instructions: [
        {
          op: "RUN",
          command: ["/.strata/node/node", "/.strata/function.mjs"],
          mounts: [
            { type: "bind", source: "builder:node", target: "/.strata/node", readonly: true },
            { type: "bind", source: "function", target: "/.strata/function.mjs", readonly: true },
            ...volumes,
          ],
          network: params.network,
        },
      ],
      inputs: [{ kind: "inline", name: "function", content: module, mode: 0o444 }],
      extra: [
        ["function.source", source],
        ["function.args", argsJson],
      ],
      timeoutMs: timeoutMs(params.timeout ?? 3600, "runFunction"),
    }),
    secrets: { step: description, values: stepSecrets(params) },
  };
}
