/**
 * What a build step may use, and what it is told when it hits a limit: the limits' defaults, floors and names,
 * parsing (`STRATA_STEP_*`), validation and capping by the operator's maximum, and the message of a step that hit
 * one. Pure; `cgroup.ts` enforces the limits.
 */
import os from "node:os";
import { LimitError } from "../errors.js";

/** The resources one build step may use. */
export interface StepLimits {
  /** RAM in bytes, swap excluded (the step may not swap). */
  memoryBytes: number;
  /** Most processes and threads the step may have at once. */
  pids: number;
  /** CPU time as a number of cores, e.g. 1.5 (a CFS quota per 100 ms period). */
  cpus: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Limits of a step that asks for none, sized for a 2-core, 24 GiB builder: 4 GiB, 4096 pids, every core. */
export const DEFAULT_LIMITS: StepLimits = Object.freeze({
  memoryBytes: 4 * GiB,
  pids: 4096,
  cpus: os.availableParallelism(),
});
/** Docker's floor for a container's memory limit; below it the container's own start-up may not fit. */
export const MIN_MEMORY_BYTES = 6 * MiB;
/** The kernel's smallest CFS quota is 1 ms per period; ours is 100 ms. */
export const MIN_CPUS = 0.01;
/** The CFS period we use, in microseconds (the kernel's default). */
export const CPU_PERIOD_US = 100_000;

/** How each limit is named to users: its name and the environment variable that sets it for a build. */
const LIMIT_NAMES: Record<keyof StepLimits, { option: string; env: string }> = {
  memoryBytes: { option: "memory", env: "STRATA_STEP_MEMORY" },
  pids: { option: "pids", env: "STRATA_STEP_PIDS" },
  cpus: { option: "cpus", env: "STRATA_STEP_CPUS" },
};
const LIMIT_KEYS = Object.keys(LIMIT_NAMES) as (keyof StepLimits)[];

/** Formats a byte count for messages: `512 MiB`, `1.5 GiB`, `4 GiB`, `100 bytes`. */
export function formatBytes(n: number): string {
  for (const [unit, size] of [
    ["GiB", GiB],
    ["MiB", MiB],
    ["KiB", KiB],
  ] as const) {
    if (n >= size) return `${Number((n / size).toFixed(1))} ${unit}`;
  }
  return `${n} bytes`;
}

function formatLimit(key: keyof StepLimits, value: number): string {
  if (key === "memoryBytes") return formatBytes(value);
  if (key === "cpus") return `${value} CPUs`;
  return `${value} pids`;
}

/**
 * Parses a memory size: a number of bytes with an optional unit, all powers of 1024 as in Docker (`512m`, `4g`,
 * `1.5G`, `2GiB`, `100kb`, `1073741824`). Fractions are rounded down to whole bytes. `source` (e.g. the variable it
 * came from) prefixes the error message.
 */
export function parseMemory(s: string, source?: string): number {
  const m = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*$/i.exec(s);
  const bytes = m ? Math.floor(Number(m[1]) * 1024 ** " kmgt".indexOf((m[2] ?? " ").toLowerCase())) : NaN;
  if (!Number.isSafeInteger(bytes)) {
    throw new LimitError(
      "memory",
      `${source ? `${source}: ` : ""}invalid memory size ${JSON.stringify(s)}: write a number of bytes with an optional unit ` +
        `(k, m, g, t, also as kb/KiB…; all powers of 1024), e.g. 512m, 4g, 2GiB or 1073741824`,
    );
  }
  return bytes;
}

/** Why `value` is not a valid `key` limit, or undefined when it is. */
function invalidReason(key: keyof StepLimits, value: number): string | undefined {
  if (typeof value !== "number" || !Number.isFinite(value)) return "it must be a finite number";
  if (value <= 0) return "it must be greater than zero";
  if (key === "memoryBytes") {
    if (!Number.isSafeInteger(value)) return "it must be a whole number of bytes";
    if (value < MIN_MEMORY_BYTES)
      return `it must be at least ${formatBytes(MIN_MEMORY_BYTES)}, as in Docker (less may not even start the step)`;
  }
  if (key === "pids" && !Number.isSafeInteger(value)) return "it must be a whole number";
  if (key === "cpus" && value < MIN_CPUS) return `it must be at least ${MIN_CPUS} (the kernel's smallest CPU quota)`;
  return undefined;
}

/**
 * The limits a step gets: what it asks for, or for each limit it leaves out the smaller of `defaults` and the
 * operator's `max`. Throws a LimitError naming the limit when a request is invalid (≤ 0, NaN, not whole where it
 * must be) or above `max`, or when `max` itself is invalid.
 */
export function capLimits(
  requested: Partial<StepLimits>,
  max: StepLimits,
  defaults: StepLimits = DEFAULT_LIMITS,
): StepLimits {
  const out = {} as StepLimits;
  for (const key of LIMIT_KEYS) {
    const { option, env } = LIMIT_NAMES[key];
    const maxWhy = invalidReason(key, max[key]);
    if (maxWhy)
      throw new LimitError(
        option,
        `the service's maximum ${option} limit (${String(max[key])}) is invalid: ${maxWhy}; fix the service's configuration`,
      );
    const asked = requested[key];
    if (asked === undefined) {
      out[key] = Math.min(defaults[key], max[key]);
      continue;
    }
    const why = invalidReason(key, asked);
    if (why)
      throw new LimitError(
        option,
        `invalid ${option} limit ${String(asked)} for the step: ${why}; fix ${env} (the build's ${option} limit)`,
      );
    if (asked > max[key]) {
      throw new LimitError(
        option,
        `the step asks for a ${option} limit of ${formatLimit(key, asked)}, above this service's maximum of ${formatLimit(key, max[key])}; ` +
          `lower ${env} (the build's ${option} limit), or ask the operator to raise the maximum`,
      );
    }
    out[key] = asked;
  }
  return out;
}

/**
 * Limits requested through the environment: STRATA_STEP_MEMORY (a size, see parseMemory), STRATA_STEP_PIDS and
 * STRATA_STEP_CPUS (numbers). Unset or empty variables are left out. Values are parsed, not validated: capLimits does that.
 */
export function limitsFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<StepLimits> {
  const out: Partial<StepLimits> = {};
  for (const key of LIMIT_KEYS) {
    const { option, env: name } = LIMIT_NAMES[key];
    const text = env[name]?.trim();
    if (!text) continue;
    if (key === "memoryBytes") {
      out[key] = parseMemory(text, name);
      continue;
    }
    const n = /^\d+(\.\d+)?$|^\.\d+$/.test(text) ? Number(text) : NaN;
    if (Number.isNaN(n))
      throw new LimitError(
        option,
        `${name}: invalid ${option} limit ${JSON.stringify(text)}: write a number, e.g. ${key === "pids" ? "4096" : "1.5"}`,
      );
    out[key] = n;
  }
  return out;
}

/** What a step's cgroup recorded about its limits (see StepCgroup.usage). */
export interface LimitUsage {
  /** The memory limit was reached and the kernel killed a process of the step (or failed its allocation). */
  oomKilled: boolean;
  /** The step's peak memory use in bytes, when the kernel reports it (v1 memory.max_usage_in_bytes, v2 memory.peak). */
  memoryMaxBytes?: number;
  /** A process could not be created because the pids limit was reached. */
  pidsLimitHit: boolean;
  /** The step's peak number of processes and threads, when the kernel reports it (pids.peak). */
  pidsMax?: number;
}

/**
 * Says which limit a failed step hit, in words for its user, or undefined when it hit none. For example: "the step
 * ran out of memory: it exceeded its memory limit of 512 MiB (raise it with
 * STRATA_STEP_MEMORY, up to the service's maximum)".
 */
export function limitFailureMessage(usage: LimitUsage, limits: StepLimits): string | undefined {
  const parts: string[] = [];
  const raise = (key: keyof StepLimits) => `raise it with ${LIMIT_NAMES[key].env}, up to the service's maximum`;
  if (usage.oomKilled) {
    const peak = usage.memoryMaxBytes !== undefined ? `, peak use ${formatBytes(usage.memoryMaxBytes)}` : "";
    parts.push(
      `the step ran out of memory: it exceeded its memory limit of ${formatBytes(limits.memoryBytes)}${peak} (${raise("memoryBytes")})`,
    );
  }
  if (usage.pidsLimitHit) {
    parts.push(
      `the step could not create more processes: the pids limit of ${limits.pids} was reached (${raise("pids")})`,
    );
  }
  return parts.length ? parts.join("; ") : undefined;
}
