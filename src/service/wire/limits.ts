/**
 * The wire format's version, its limits and its error: what every request names (`format`), the bounds a request's
 * shape is checked against (besides the byte size of its JSON), and the 400 a request outside them gets.
 */

/**
 * Version of the wire format: every request names it (`format`), and it is part of every build id. Format 4 sends a
 * build's secret values once (`secrets`, by name, as the plan's SecretValues) and registry bases with their login;
 * format 5 gives walked entries their mtimes (`mtimeMs`), which copies keep.
 */
export const WIRE_FORMAT = "strata-build/5";

/** The largest entry mtime (ms): the largest a ustar header holds (11 octal digits of seconds). */
export const MAX_MTIME_MS = 0o77777777777 * 1000;

/** Largest JSON body the service accepts. */
export const MAX_JSON_BYTES = 10 * 1024 * 1024;

/** Limits on a request's shape (besides the byte size of its JSON). */
export const LIMITS = {
  steps: 1000,
  instructionsPerStep: 1000,
  inputsPerStep: 64,
  entries: 1_000_000,
  pathBytes: 4096,
  stringBytes: 1024 * 1024,
  deferred: 256,
  /** Nested plans (Dockerfile stages read by other steps). */
  plans: 256,
  /** Patterns (and excludes) of one select input, and the bytes of each. */
  patterns: 1000,
  patternBytes: 4096,
  urlBytes: 8192,
  /** Secret names one step lists. */
  secretsPerStep: 256,
} as const;

/** `sha256:<64 lowercase hex digits>`: a content digest. */
export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
/** An environment variable or secret name. */
export const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A step input's name (a heredoc's is `<<NAME`, see the schema). */
export const INPUT_NAME_RE = /^[A-Za-z0-9_.-]{1,128}$/;

/** A request that does not match the schema; the message names the offending field (`steps[0].base: …`). */
export class WireError extends Error {
  constructor(
    message: string,
    readonly status = 400,
    readonly code = "BAD_REQUEST",
  ) {
    super(message);
    this.name = "WireError";
  }
}

/** Throws the WireError `<where>: <what>`. */
export function fail(where: string, what: string): never {
  throw new WireError(`${where}: ${what}`);
}

/** A value as an error message names it: `the string "x"`, `an object`, `number 3`. */
export function describe(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "nothing";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  return typeof v === "object" ? "an object" : `${typeof v} ${String(v)}`;
}

export function isDigestString(s: string): boolean {
  return DIGEST_RE.test(s);
}
