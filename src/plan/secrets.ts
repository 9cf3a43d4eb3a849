/** The secret values one step gets: the names its plan step lists, looked up in the build's {@link SecretValues}. */
import { MissingSecretError } from "../errors.js";
import type { SecretValues, Step } from "./step.js";

/** The values of the secrets `step` lists; a listed name the build has no value for is a {@link MissingSecretError}. */
export function stepSecretValues(
  step: Pick<Step, "secrets" | "description">,
  values: SecretValues | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of step.secrets) {
    // Own properties only: "constructor" is a valid secret name.
    const v = values && Object.hasOwn(values, name) ? values[name] : undefined;
    if (typeof v !== "string") throw new MissingSecretError(name, step.description);
    out[name] = v;
  }
  return out;
}

/** The names of a record of secret values as a step lists them: sorted (by code unit), unique. */
export function secretNames(values: Readonly<Record<string, string>>): string[] {
  return Object.keys(values).sort();
}
