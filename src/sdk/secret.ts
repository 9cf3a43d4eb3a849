/** Secrets: named values exposed to a build step as environment variables, never stored, logged or keyed by value. */
import { InvalidDefinitionError } from "../errors.js";

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class Secret {
  readonly #values: Readonly<Record<string, string>>;
  private constructor(values: Record<string, string>) {
    for (const [k, v] of Object.entries(values)) {
      if (!NAME_RE.test(k))
        throw new InvalidDefinitionError(`secret name "${k}" is not a valid environment variable name`);
      if (typeof v !== "string") throw new InvalidDefinitionError(`secret ${k} must be a string`);
    }
    this.#values = Object.freeze({ ...values });
  }
  /** No variables. */
  static none(): Secret {
    return new Secret({});
  }
  /** A secret from a plain object of variables. */
  static fromObject(values: Record<string, string>): Secret {
    return new Secret(values);
  }
  /** A secret from variables of the local environment; a missing one is an error naming it. */
  static fromLocalEnv(names: readonly string[]): Secret {
    const values: Record<string, string> = {};
    for (const n of names) {
      const v = process.env[n];
      if (v === undefined)
        throw new InvalidDefinitionError(`Secret.fromLocalEnv: ${n} is not set in the local environment`);
      values[n] = v;
    }
    return new Secret(values);
  }
  get names(): string[] {
    return Object.keys(this.#values).sort();
  }
  /** @internal Values, read only by the engine when running a step. */
  values(): Record<string, string> {
    return { ...this.#values };
  }
  toJSON(): { names: string[] } {
    return { names: this.names };
  }
  toString(): string {
    return `Secret(${this.names.join(", ")})`;
  }
}

export type SecretLike = Secret | Record<string, string>;

export function mergeSecrets(list: readonly SecretLike[] | SecretLike | undefined): Record<string, string> {
  if (!list) return {};
  const arr = Array.isArray(list) ? list : [list];
  const out: Record<string, string> = {};
  for (const s of arr as SecretLike[])
    Object.assign(out, s instanceof Secret ? s.values() : Secret.fromObject(s).values());
  return out;
}

/** The secret values a chain uses, each with the step that gave it (for the message when two steps disagree). */
export type ChainSecrets = ReadonlyMap<string, { value: string; step: string }>;

/**
 * `chain` plus the values `step` uses. A build has one value per secret name (as BuildKit's secret store), so a name
 * given another value than an earlier step gave it is an InvalidDefinitionError naming the secret and both steps.
 */
export function addChainSecrets(
  chain: ChainSecrets,
  step: string,
  values: Readonly<Record<string, string>>,
): ChainSecrets {
  const names = Object.keys(values);
  if (names.length === 0) return chain;
  const out = new Map(chain);
  for (const name of names.sort()) {
    const value = values[name]!;
    const known = out.get(name);
    if (known && known.value !== value) {
      throw new InvalidDefinitionError(
        `secret ${name} is given two different values in one image: by "${known.step}" and by "${step}"; a build has one value per secret name, so give them one value or rename one`,
      );
    }
    if (!known) out.set(name, { value, step });
  }
  return out;
}
