/**
 * `uvPipInstall` and `uvSync`: uv mounted read-only for the step's RUN, never captured in its layer — `/uv` of the
 * builder version's uv image (see `uv-image.ts`), or with 2026.11 the image's own uv or STRATA_UV_BINARY (that
 * recipe is kept, so its keys do not change).
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import type { BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError } from "../errors.js";
import { type Instruction, type RunMount, shellQuote } from "../plan/instructions.js";
import type { StepInput } from "../plan/step.js";
import { checkPackages, snapshot, splitArgs, stepBase, stepSecrets, timeoutMs } from "./arguments.js";
import type { LayerStep } from "./layer-steps.js";
import { expandHome, localPath } from "./local-paths.js";
import { checkOptions } from "./options.js";
import { OPTIONS, type ImageUvPipInstallParams, type ImageUvSyncParams } from "./params.js";
import { UV_ROOT, uvImageRef } from "./uv-image.js";

/** How a step's RUN gets uv at `target`: a mount, and the inputs and key extras it needs. */
function uvMount(
  b: BuilderVersion,
  method: string,
  version: string,
  target: string,
): { mount: RunMount; inputs: StepInput[]; extra: [string, string][] } {
  const image = uvImageRef(b, method, version);
  const extra: [string, string][] = [["uvVersion", version]];
  if (!image) return { mount: { type: "bind", source: "builder:uv", target, readonly: true }, inputs: [], extra };
  return {
    mount: { type: "bind", source: "uv", target, readonly: true },
    inputs: [{ kind: "select", name: "uv", root: { kind: "image", ref: image.pull }, patterns: ["/uv"] }],
    extra,
  };
}

/** `requirements`: one local path or a list of them, each checked to exist now. */
function requirementFiles(method: string, value: unknown): { given: string; local: string }[] {
  if (value === undefined) return [];
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.some((r) => typeof r !== "string" || r === ""))
    throw new InvalidDefinitionError(`${method}: requirements must be a path or a list of paths of requirements files`);
  return (list as string[]).map((r) => ({ given: r, local: localPath(method, r, "requirements file") }));
}

function uvPipFlags(params: ImageUvPipInstallParams): string[] {
  const flags: string[] = [];
  if (params.findLinks) flags.push("--find-links", shellQuote(params.findLinks));
  if (params.indexUrl) flags.push("--index-url", shellQuote(params.indexUrl));
  if (params.extraIndexUrl) flags.push("--extra-index-url", shellQuote(params.extraIndexUrl));
  if (params.pre) flags.push("--prerelease", "allow");
  if (params.extraOptions) flags.push(params.extraOptions);
  return flags;
}

/**
 * `uvPipInstall`: packages sorted (their order does not change the key), requirements files copied into the image
 * (their content keyed). Builder versions with a uv image copy nothing of uv into the layer: `/uv` is mounted at
 * /.uv/uv for the RUN; 2026.11 keeps its recipe (/.strata/uv, `builder:uv`).
 */
export function uvPipInstallStep(args: readonly unknown[]): LayerStep | undefined {
  const { items, params } = splitArgs<ImageUvPipInstallParams>("uvPipInstall", args, OPTIONS.uvPipInstall);
  const reqs = requirementFiles("uvPipInstall", params.requirements);
  if (items.length === 0 && reqs.length === 0) return undefined;
  checkPackages("uvPipInstall", items);
  const pkgs = [...items].sort();
  const description = `uvPipInstall ${pkgs.join(" ")}${reqs.map((r) => ` -r ${r.given}`).join("")}`;
  return {
    method: "uvPipInstall",
    make: (b) => {
      const version = params.uvVersion ?? b.tools.uv.defaultVersion;
      const provisioned = b.tools.uv.image !== undefined;
      const uv = uvMount(b, "uvPipInstall", version, provisioned ? `${UV_ROOT}/uv` : "/.strata/uv");
      const ins: Instruction[] = [];
      const inputs: StepInput[] = [...uv.inputs];
      const reqArgs: string[] = [];
      reqs.forEach((r, i) => {
        const name = i === 0 ? "requirements" : `requirements.${i}`;
        // 2026.11's single file keeps its place (and so its key); a list, and newer builders, use Modal's layout.
        const dest = provisioned
          ? `${UV_ROOT}/${i}/${path.basename(r.local)}`
          : i === 0
            ? "/.uv-requirements.txt"
            : `/.uv-requirements-${i}.txt`;
        ins.push({ op: "COPY", source: name, dest });
        inputs.push({ kind: "file", name, localPath: r.local });
        reqArgs.push(provisioned ? `--requirements ${shellQuote(dest)}` : `-r ${dest}`);
      });
      const head = provisioned
        ? `${UV_ROOT}/uv pip install --system --compile-bytecode`
        : "/.strata/uv pip install --system --compile-bytecode";
      ins.push({
        op: "RUN",
        command: [head, ...reqArgs, ...pkgs.map(shellQuote), ...uvPipFlags(params)].join(" "),
        mounts: [uv.mount],
        network: params.network,
      });
      return {
        ...stepBase("uvPipInstall", description, params),
        instructions: ins,
        inputs,
        extra: uv.extra,
        timeoutMs: timeoutMs(params.timeout, "uvPipInstall"),
      };
    },
    secrets: { step: description, values: stepSecrets(params) },
  };
}

/** A `groups`/`extras` list: names only (no options, no whitespace). */
function names(method: string, field: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string" || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(v)))
    throw new InvalidDefinitionError(
      `${method}: ${field} must be a list of ${field === "groups" ? "dependency group" : "extra"} names (letters, digits, ".", "_", "-"), got ${JSON.stringify(value)}`,
    );
  return [...value];
}

/** Whether a pyproject.toml declares a uv workspace (`[tool.uv.workspace]`, or `workspace` under `[tool.uv]`). */
export function declaresUvWorkspace(pyproject: string): boolean {
  let table = "";
  for (const raw of pyproject.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    const header = /^\[\s*([^\]]+?)\s*\]$/.exec(line);
    if (header) {
      table = header[1]!.replace(/\s+/g, "");
      if (table === "tool.uv.workspace" || table.startsWith("tool.uv.workspace.")) return true;
      continue;
    }
    if (table === "tool.uv" && /^workspace\s*[.=]/.test(line)) return true;
    if (table === "tool" && /^uv\.workspace\s*[.=]/.test(line)) return true;
    if (table === "" && /^tool\.uv\.workspace\s*[.=]/.test(line)) return true;
  }
  return false;
}

/**
 * `uvSync`: a uv project (pyproject.toml, and uv.lock when there is one) installed into `/.uv/.venv`, which goes first
 * on PATH, as Modal's `uv_sync`: `uv sync --project=/.uv --no-install-workspace --compile-bytecode [--group=…]
 * [--extra=…] [extraOptions] [--frozen]` (`--frozen` when a lock exists and `frozen`, the default: the lock is used as
 * is, never updated). Both files are inputs, so their content is keyed; the project's own code is not installed.
 * `path`: the PATH the image has before this step (the venv is put in front of it).
 */
export function uvSyncStep(projectDir: string, paramsIn: ImageUvSyncParams, pathBefore: string): LayerStep {
  const method = "uvSync";
  checkOptions(method, paramsIn, OPTIONS.uvSync);
  const params = snapshot(paramsIn);
  if (typeof projectDir !== "string" || projectDir === "")
    throw new InvalidDefinitionError(`${method}: expected the directory of a uv project (default "./")`);
  const dir = localPath(method, projectDir, "uv project directory");
  const pyproject = path.join(dir, "pyproject.toml");
  if (!existsSync(pyproject) || !statSync(pyproject).isFile())
    throw new InvalidDefinitionError(
      `${method}: ${expandHome(projectDir)} has no pyproject.toml; uvSync installs a uv project (pyproject.toml, and uv.lock if there is one)`,
    );
  if (declaresUvWorkspace(readFileSync(pyproject, "utf8")))
    throw new InvalidDefinitionError(
      `${method}: ${pyproject} declares a uv workspace ([tool.uv.workspace]), which uvSync does not support (as Modal's uv_sync); sync a member project, or use uvPipInstall with requirements exported by \`uv export\``,
    );
  const lockPath = path.join(dir, "uv.lock");
  const lock = existsSync(lockPath) ? lockPath : undefined;
  const groups = names(method, "groups", params.groups);
  const extras = names(method, "extras", params.extras);
  if (params.frozen !== undefined && typeof params.frozen !== "boolean")
    throw new InvalidDefinitionError(`${method}: frozen must be true or false`);
  if (params.extraOptions !== undefined && typeof params.extraOptions !== "string")
    throw new InvalidDefinitionError(`${method}: extraOptions must be a string`);
  const frozen = params.frozen ?? true;
  const description = `uvSync ${projectDir}${lock ? " (uv.lock)" : ""}${groups.map((g) => ` --group=${g}`).join("")}${extras.map((e) => ` --extra=${e}`).join("")}`;
  return {
    method,
    make: (b) => {
      const version = params.uvVersion ?? b.tools.uv.defaultVersion;
      const uv = uvMount(b, method, version, `${UV_ROOT}/uv`);
      const args = [`--project=${UV_ROOT}`, "--no-install-workspace", "--compile-bytecode"];
      for (const g of groups) args.push(`--group=${g}`);
      for (const e of extras) args.push(`--extra=${e}`);
      if (params.extraOptions) args.push(params.extraOptions);
      if (lock && frozen) args.push("--frozen");
      const ins: Instruction[] = [{ op: "COPY", source: "pyproject", dest: `${UV_ROOT}/pyproject.toml` }];
      const inputs: StepInput[] = [...uv.inputs, { kind: "file", name: "pyproject", localPath: pyproject }];
      if (lock) {
        ins.push({ op: "COPY", source: "lock", dest: `${UV_ROOT}/uv.lock` });
        inputs.push({ kind: "file", name: "lock", localPath: lock });
      }
      ins.push(
        { op: "RUN", command: `${UV_ROOT}/uv sync ${args.join(" ")}`, mounts: [uv.mount], network: params.network },
        { op: "ENV", vars: [["PATH", `${UV_ROOT}/.venv/bin:${pathBefore}`]] },
      );
      return {
        ...stepBase(method, description, params),
        instructions: ins,
        inputs,
        extra: uv.extra,
        timeoutMs: timeoutMs(params.timeout, method),
      };
    },
    secrets: { step: description, values: stepSecrets(params) },
  };
}
