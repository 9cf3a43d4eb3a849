/**
 * The field schemas the wire schema is built from (zod), each with the service's limits and its message in the
 * service's words, and the translation of a zod issue into a {@link WireError} (`steps[0].base: <what is wrong>`).
 */
import { z } from "zod";
import { clampImagePath } from "../../plan/image-path.js";
import { describe, DIGEST_RE, LIMITS, MAX_MTIME_MS, NAME_RE, WireError } from "./limits.js";
import { relPathProblem } from "./entries.js";

/**
 * A strict object: an unknown field is refused, naming the fields it may have (a misspelt or newer field is never
 * dropped silently).
 */
export function obj<S extends z.ZodRawShape>(shape: S) {
  const allowed = Object.keys(shape).join(", ");
  return z.strictObject(shape, {
    error: (iss) =>
      iss.code === "unrecognized_keys"
        ? `unknown field "${iss.keys[0]}" (allowed: ${allowed})`
        : iss.code === "invalid_type"
          ? `expected an object, got ${describe(iss.input)}`
          : undefined,
  });
}

/** A string of at most `max` characters without NUL (which no path, name or command can hold). */
export function str(max: number = LIMITS.stringBytes) {
  return z
    .string()
    .max(max, { error: `longer than ${max} characters` })
    .refine((s) => !s.includes("\0"), { error: "contains a NUL character" });
}

/** An integer from `min` to `max`. */
export function int(min: number, max: number) {
  const error = (iss: { input?: unknown }) => `expected an integer from ${min} to ${max}, got ${describe(iss.input)}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

export const bool = z.boolean();

/** Permission bits including setuid/setgid/sticky. */
export const mode = int(0, 0o7777);
/** A modification time: ms since the Unix epoch (fractions allowed), within what a layer's tar holds. */
export const mtimeMs = z
  .number({ error: (iss) => `expected a time in ms since the Unix epoch, got ${describe(iss.input)}` })
  .min(0, { error: "a time before the Unix epoch (layers cannot hold one)" })
  .max(MAX_MTIME_MS, { error: `a time after ${MAX_MTIME_MS} ms (layers cannot hold one)` });
/** A uid or gid (not the 32-bit -1, which means "unchanged"). */
export const ownerId = int(0, 0xfffffffe);

export const digest = str(80).regex(DIGEST_RE, {
  error: (iss) => `expected sha256:<64 lowercase hex digits>, got ${describe(iss.input)}`,
});

/** An environment variable name. */
export const varName = str(256).regex(NAME_RE, {
  error: (iss) => `"${String(iss.input)}" is not a valid variable name`,
});
/** A secret's name. */
export const secretName = str(256).regex(NAME_RE, {
  error: (iss) => `"${String(iss.input)}" is not a valid secret name`,
});

/** A `[name, value]` pair (build args, ENV and LABEL pairs, extras). */
export const pair = z.tuple([str(), str()], { error: "expected a [name, value] pair" });
export const pairs = z.array(pair).max(10_000);

/** A list of strings (argv, ignore patterns). */
export const strings = (max = 10_000, bytes: number = LIMITS.stringBytes) => z.array(str(bytes)).max(max);

/** Patterns (and excludes) of a selection. */
export const patternList = strings(LIMITS.patterns, LIMITS.patternBytes);

/** A relative entry path (see `relPathProblem`). */
export const relPath = str(LIMITS.pathBytes).superRefine((s, ctx) => {
  const problem = relPathProblem(s);
  if (problem) ctx.addIssue({ code: "custom", message: problem, input: s });
});

/** An absolute image path; one whose `..` would climb above `/` is cleaned (`/../../x` → `/x`), as `Image.plan` does. */
export const absImagePath = str(LIMITS.pathBytes)
  .refine((s) => s.startsWith("/"), {
    error: (iss) => `expected an absolute path in the image, got ${JSON.stringify(iss.input)}`,
  })
  .transform(clampImagePath);

/**
 * A path in the image: absolute, or (Dockerfile steps) relative to the WORKDIR. An absolute one is clamped like
 * {@link absImagePath}; a relative one is resolved when the step runs, where `..` stops at `/` too.
 */
export const imagePath = str(LIMITS.pathBytes)
  .refine((s) => s !== "", { error: "empty path" })
  .transform(clampImagePath);

/** The message a zod issue gets, in the service's words (a schema's own message wins: see `obj`, `int`, …). */
function message(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case "invalid_type": {
      const got = describe(iss.input);
      switch (iss.expected) {
        case "string":
          return `expected a string, got ${got}`;
        case "boolean":
          return `expected true or false, got ${got}`;
        case "array":
          return `expected an array, got ${got}`;
        case "record":
          return `expected an object of strings, got ${got}`;
        case "tuple":
          return `expected a [name, value] pair, got ${got}`;
        case "object":
          return `expected an object, got ${got}`;
        default:
          return `expected ${iss.expected}, got ${got}`;
      }
    }
    case "too_big":
      return iss.origin === "array"
        ? `more than ${iss.maximum} items`
        : iss.origin === "string"
          ? `longer than ${iss.maximum} characters`
          : undefined;
    case "too_small":
      return iss.origin === "array" ? `expected at least ${iss.minimum} items` : undefined;
    case "invalid_value":
      return `expected one of ${iss.values.map(String).join(", ")}, got ${describe(iss.input)}`;
    case "invalid_union": {
      // A discriminated union names the discriminator (its path ends with it) and its options.
      if (iss.discriminator !== undefined && "options" in iss && Array.isArray(iss.options)) {
        const input =
          iss.input !== null && typeof iss.input === "object"
            ? (iss.input as Record<string, unknown>)[iss.discriminator]
            : undefined;
        return `expected one of ${iss.options.map(String).join(", ")}, got ${describe(input)}`;
      }
      return `matches none of the forms this field can take, got ${describe(iss.input)}`;
    }
    default:
      return undefined;
  }
}

/** `steps[0].inputs[1]`: a zod path as the service names fields (`request` for the whole body). */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const k of path) out += typeof k === "number" ? `[${k}]` : out === "" ? String(k) : `.${String(k)}`;
  return out === "" ? "request" : out;
}

/** The first problem of a failed parse as a WireError. */
function wireError(error: z.ZodError): WireError {
  const iss = error.issues[0]!;
  // A record key's issue carries the key's own problem.
  if (iss.code === "invalid_key")
    return new WireError(`${fieldPath(iss.path.slice(0, -1))}: ${iss.issues[0]?.message ?? iss.message}`);
  return new WireError(`${fieldPath(iss.path)}: ${iss.message}`);
}

/** How every wire schema is applied: issues in the service's words, with the offending value at hand. */
export const PARSE_OPTIONS = { reportInput: true, error: message } as const;

/** `schema` applied to `v`, or a {@link WireError} naming the first offending field. */
export function parseWith<T extends z.ZodType>(schema: T, v: unknown): z.output<T> {
  const r = schema.safeParse(v, PARSE_OPTIONS);
  if (!r.success) throw wireError(r.error);
  return r.data;
}
