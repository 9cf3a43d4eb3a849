/**
 * The `extra` key inputs of a step: the plan's own (function source and arguments, uvVersion, ignore patterns) plus
 * those the engine derives from what the step will actually run. A derived name is never taken from a plan, so no
 * definition (and no build service client) can pair one recipe with another recipe's key:
 *  - `base`: a debian base's recipe, the JSON of the BaseSpec the step builds (suite, mirror, variant, packages, …).
 *  - `workdir.create`: `"true"` when a WORKDIR creates its directory (a layer), which its rendered text does not show.
 *  - `env.<NAME>`: the step's RUN-only environment values.
 *  - `run.hostname`: the hostname a RUN sets (BuildKit keys its ExecOp's hostname); absent for the default.
 *  - `secrets.env`: `"true"` when a step that says so explicitly (`secretsAsEnv: true`: a Dockerfile RUN of the SDK's
 *    `dockerfileCommands`/`fromDockerfile`) gets its secrets as environment variables, so the same RUN built with
 *    BuildKit's meaning (secrets only through mounts) has another key. SDK steps leave the field unset: unchanged keys.
 * The engine adds more kinds where it has them: `base.manifest` (a registry base's resolved digest), `link.*`
 * (a `COPY --link` layer's own key) and `copy.excluded` (sources a COPY matched but `--exclude` dropped by name: they
 * have no file entries, yet they make the copy prepare its destination).
 */
import type { Step } from "../plan/step.js";

/** Whether `name` is an extra key input only the engine may set. */
export function isDerivedExtra(name: string): boolean {
  return (
    name === "base" ||
    name === "workdir.create" ||
    name.startsWith("base.") ||
    name.startsWith("env.") ||
    name.startsWith("secrets.") ||
    name.startsWith("link.") ||
    name.startsWith("run.") ||
    name.startsWith("copy.")
  );
}

/** The extras the engine derives from a step's base, instructions and env (see the module comment). */
export function derivedExtra(
  step: Pick<Step, "base" | "instructions" | "env"> & Partial<Pick<Step, "secretsAsEnv" | "secrets">>,
): [string, string][] {
  const out: [string, string][] = [];
  if (step.base?.kind === "debian") out.push(["base", JSON.stringify(step.base)]);
  if (step.instructions.some((i) => i.op === "WORKDIR" && i.create === true)) out.push(["workdir.create", "true"]);
  for (const [k, v] of Object.entries(step.env)) out.push([`env.${k}`, v]);
  const hostname = step.instructions.find((i) => i.op === "RUN" && i.hostname !== undefined);
  if (hostname?.op === "RUN" && hostname.hostname !== undefined) out.push(["run.hostname", hostname.hostname]);
  if (step.secretsAsEnv === true && (step.secrets?.length ?? 0) > 0) out.push(["secrets.env", "true"]);
  return out;
}

/** A step's extra key inputs: the plan's own without any derived name, then the derived ones. */
export function stepExtra(
  step: Pick<Step, "base" | "instructions" | "env" | "extra"> & Partial<Pick<Step, "secretsAsEnv" | "secrets">>,
): [string, string][] {
  return [...step.extra.filter(([name]) => !isDerivedExtra(name)), ...derivedExtra(step)];
}
