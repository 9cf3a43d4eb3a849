/**
 * The steps of the Image methods that install a local Python project's dependencies: `pipInstallFromPyproject`
 * (the pyproject is read when the definition is made; what is keyed is the package list, as Modal does) and
 * `poetryInstallFromFile` (the pyproject and its lock file are step inputs, so their content is keyed).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { InvalidDefinitionError, LocalPathError } from "../errors.js";
import type { Instruction } from "../plan/instructions.js";
import { shellQuote } from "../plan/instructions.js";
import type { StepInput } from "../plan/step.js";
import { checkPackages, pipFlags, snapshot, stepBase, stepSecrets, timeoutMs } from "./arguments.js";
import type { LayerStep } from "./layer-steps.js";
import { localPath } from "./local-paths.js";
import { checkOptions } from "./options.js";
import { OPTIONS, type ImagePipInstallFromPyprojectParams, type ImagePoetryInstallParams } from "./params.js";
import { pyprojectDependencies } from "./pyproject.js";

function readLocal(method: string, file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    throw new LocalPathError(file, `${method}: cannot read the ${what} ${file}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

function groupList(method: string, name: string, v: unknown): string[] {
  if (v === undefined) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.some((g) => typeof g !== "string" || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(g)))
    throw new InvalidDefinitionError(`${method}: ${name} must be a list of group names (letters, digits, . _ -)`);
  return [...(list as string[])];
}

/** `pipInstallFromPyproject`: `[project] dependencies` plus the chosen optional groups, installed as pipInstall does. */
export function pipInstallFromPyprojectStep(
  pyproject: string,
  paramsIn: ImagePipInstallFromPyprojectParams,
): LayerStep | undefined {
  const method = "pipInstallFromPyproject";
  checkOptions(method, paramsIn, OPTIONS.pipInstallFromPyproject);
  const params = snapshot(paramsIn);
  const file = localPath(method, pyproject, "pyproject.toml");
  const groups = groupList(method, "optionalDependencies", params.optionalDependencies);
  const pkgs = pyprojectDependencies(method, file, readLocal(method, file, "pyproject file"), groups);
  if (pkgs.length === 0) return undefined;
  checkPackages(method, pkgs);
  const description = `${method} ${pyproject}${groups.length ? ` [${groups.join(",")}]` : ""}`;
  return {
    method,
    make: () => ({
      ...stepBase(method, description, params),
      instructions: [
        {
          op: "RUN",
          command: ["python -m pip install", ...pkgs.map(shellQuote), ...pipFlags(params)].join(" "),
          network: params.network,
        },
      ],
      inputs: [],
      extra: [],
      timeoutMs: timeoutMs(params.timeout, method),
    }),
    secrets: { step: description, values: stepSecrets(params) },
  };
}

/** The pip requirement that installs `poetryVersion`: "latest" → unpinned, "1.8" → `poetry~=1.8`, "1.8.3" → `==`. */
export function poetrySpec(method: string, version: string): string {
  if (version === "latest") return "poetry";
  if (/^\d+\.\d+$/.test(version)) return `poetry~=${version}`;
  if (/^\d+\.\d+\.\d+([a-z]+\d+)?$/.test(version)) return `poetry==${version}`;
  throw new InvalidDefinitionError(
    `${method}: poetryVersion "${version}" is not "latest", X.Y or X.Y.Z (or null to use the image's own poetry)`,
  );
}

/**
 * `poetryInstallFromFile`: as Modal's builder does it — optionally pip-installs poetry, copies the pyproject (and
 * the lock file) to /tmp/poetry, then `poetry install --no-root` into the image's Python (no virtualenv).
 */
export function poetryInstallFromFileStep(pyproject: string, paramsIn: ImagePoetryInstallParams): LayerStep {
  const method = "poetryInstallFromFile";
  checkOptions(method, paramsIn, OPTIONS.poetryInstallFromFile);
  const params = snapshot(paramsIn);
  const file = localPath(method, pyproject, "pyproject.toml");
  readLocal(method, file, "pyproject file");
  let lock: string | undefined;
  if (params.ignoreLockfile) {
    if (params.poetryLockfile !== undefined)
      throw new InvalidDefinitionError(`${method}: poetryLockfile and ignoreLockfile: true contradict each other`);
  } else {
    lock = params.poetryLockfile
      ? localPath(method, params.poetryLockfile, "poetry.lock")
      : path.join(path.dirname(file), "poetry.lock");
    readLocal(
      method,
      lock,
      params.poetryLockfile
        ? "lock file"
        : "lock file (poetry.lock beside the pyproject; pass poetryLockfile, or ignoreLockfile: true to resolve at build time)",
    );
  }
  const withGroups = groupList(method, "withGroups", params.withGroups);
  const withoutGroups = groupList(method, "withoutGroups", params.withoutGroups);
  const only = groupList(method, "only", params.only);
  const version = params.poetryVersion === undefined ? "latest" : params.poetryVersion;
  if (version !== null && typeof version !== "string")
    throw new InvalidDefinitionError(`${method}: poetryVersion must be a string or null`);
  const spec = version === null ? undefined : poetrySpec(method, version);
  const description = `${method} ${pyproject}`;
  const net = params.network;
  return {
    method,
    make: () => {
      const ins: Instruction[] = [];
      if (spec) ins.push({ op: "RUN", command: `python -m pip install ${shellQuote(spec)}`, network: net });
      if (params.oldInstaller)
        ins.push({ op: "RUN", command: "poetry config experimental.new-installer false", network: net });
      if (lock) ins.push({ op: "COPY", source: "poetry-lock", dest: "/tmp/poetry/poetry.lock" });
      ins.push({ op: "COPY", source: "pyproject", dest: "/tmp/poetry/pyproject.toml" });
      const install = ["poetry install --no-root"];
      if (withGroups.length) install.push(`--with ${withGroups.join(",")}`);
      if (withoutGroups.length) install.push(`--without ${withoutGroups.join(",")}`);
      if (only.length) install.push(`--only ${only.join(",")}`);
      install.push("--compile");
      ins.push({
        op: "RUN",
        command: `cd /tmp/poetry && poetry config virtualenvs.create false && ${install.join(" ")}`,
        network: net,
      });
      const inputs: StepInput[] = [{ kind: "file", name: "pyproject", localPath: file }];
      if (lock) inputs.unshift({ kind: "file", name: "poetry-lock", localPath: lock });
      return {
        ...stepBase(method, description, params),
        instructions: ins,
        inputs,
        extra: [],
        timeoutMs: timeoutMs(params.timeout, method),
      };
    },
    secrets: { step: description, values: stepSecrets(params) },
  };
}
