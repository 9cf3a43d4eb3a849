/**
 * NUL bytes in what Image methods are given. No path, argv word, environment entry, label or registry reference can
 * hold one (the kernel's and the OCI config's strings end at it), so a string argument holding one is an
 * InvalidDefinitionError when the definition is written — naming the method and the argument — never an internal error
 * when a build reaches a syscall (`ERR_INVALID_ARG_VALUE … without null bytes`).
 */
import { InvalidDefinitionError } from "../errors.js";
import { mergeSecrets, type SecretLike } from "./secret.js";

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function nulError(method: string, what: string, s: string, key: boolean): InvalidDefinitionError {
  const at = s.indexOf("\0");
  const shown = JSON.stringify(s.length > 60 ? s.slice(0, 60) + "…" : s);
  return new InvalidDefinitionError(
    `${method}: ${what}${key ? " has a key" : ""} holding a NUL byte (character ${at + 1} of ${shown}): a path, ` +
      "command, environment variable or label cannot contain one; remove it",
  );
}

/**
 * Throws an InvalidDefinitionError if a string in `value` holds a NUL byte: a string, or one nested in arrays and plain
 * objects (keys included). `what` names the argument (`buildArgs`, `argv[2]`); "" for an options object, whose fields
 * are then named by themselves. Functions and class instances (a `Secret`) are not entered; `skip` leaves out fields of
 * the top-level object.
 */
export function refuseNul(method: string, what: string, value: unknown, skip: readonly string[] = []): void {
  const seen = new Set<object>();
  const walk = (v: unknown, name: string, top: boolean): void => {
    if (typeof v === "string") {
      if (v.includes("\0")) throw nulError(method, name || "argument", v, false);
      return;
    }
    if (Array.isArray(v)) {
      if (seen.has(v)) return;
      seen.add(v);
      for (const [i, x] of v.entries()) walk(x, `${name}[${i}]`, false);
      return;
    }
    if (!isPlainObject(v) || seen.has(v)) return;
    seen.add(v);
    for (const [k, x] of Object.entries(v)) {
      if (top && skip.includes(k)) continue;
      const field = name ? `${name}.${k}` : k;
      if (k.includes("\0")) throw nulError(method, name || "options", k, true);
      walk(x, field, false);
    }
  };
  walk(value, what, true);
}

/**
 * Throws an InvalidDefinitionError if a secret that reaches RUN steps as an environment variable holds a NUL byte in
 * its value (a file-mounted secret may hold any bytes: this is for the secrets a method gives as environment).
 */
export function refuseNulSecretEnv(method: string, secrets: readonly SecretLike[] | SecretLike | undefined): void {
  for (const [name, value] of Object.entries(mergeSecrets(secrets))) {
    if (value.includes("\0"))
      throw new InvalidDefinitionError(
        `${method}: secret ${name} holds a NUL byte (character ${value.indexOf("\0") + 1} of its value), and ${method} ` +
          "gives secrets to RUN steps as environment variables, which cannot contain one; remove it" +
          (method === "fromDockerfile"
            ? ", or pass secretsAsEnv: false and mount it as a file (RUN --mount=type=secret,id=" + name + ")"
            : ""),
      );
  }
}
