/**
 * Per-step cgroups: memory, pids and CPU limits for one build step, on cgroup v1 (including hybrid hosts) and v2.
 *
 * We create a parent cgroup `strata/<id>` in each controller and write the limits there; runc is given
 * `linux.cgroupsPath: "/strata/<id>/ctr"` (and no `resources`), creates that leaf, and removes it when the
 * container exits. Because the limits live on our parent, its counters (OOM kills, peak pids) outlive the container,
 * so a failed step can be told which limit it hit. (cgroup v1 keeps two of those counters only in the leaf: see
 * usageFromV1 and pidsLimitHit for what we read instead.) Reading the kernel's files is split from parsing them: the
 * parsers and the list of writes (`stepCgroupPlan`) are pure, so both cgroup versions are tested on any host.
 */
import { closeSync, constants, type Dirent, openSync, promises as fsp, readSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { CgroupError, LimitError } from "../errors.js";
import { pidAlive } from "../util/fs.js";

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
export const DEFAULT_LIMITS: StepLimits = Object.freeze({ memoryBytes: 4 * GiB, pids: 4096, cpus: os.availableParallelism() });
/** Docker's floor for a container's memory limit; below it the container's own start-up may not fit. */
export const MIN_MEMORY_BYTES = 6 * MiB;
/** The kernel's smallest CFS quota is 1 ms per period; ours is 100 ms. */
export const MIN_CPUS = 0.01;
/** The CFS period we use, in microseconds (the kernel's default). */
export const CPU_PERIOD_US = 100_000;

/** Our directory in each hierarchy, and runc's leaf below a step's directory. */
export const CGROUP_PARENT = "strata";
export const CGROUP_LEAF = "ctr";

/** How each limit is named to users: its name and the environment variable that sets it for a build. */
const LIMIT_NAMES: Record<keyof StepLimits, { option: string; env: string }> = {
  memoryBytes: { option: "memory", env: "STRATA_STEP_MEMORY" },
  pids: { option: "pids", env: "STRATA_STEP_PIDS" },
  cpus: { option: "cpus", env: "STRATA_STEP_CPUS" },
};
const LIMIT_KEYS = Object.keys(LIMIT_NAMES) as (keyof StepLimits)[];

// ---------------------------------------------------------------------------------------------------------------
// Limits: parsing, validation, capping, messages (pure)

/** Formats a byte count for messages: `512 MiB`, `1.5 GiB`, `4 GiB`, `100 bytes`. */
export function formatBytes(n: number): string {
  for (const [unit, size] of [["GiB", GiB], ["MiB", MiB], ["KiB", KiB]] as const) {
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
    if (value < MIN_MEMORY_BYTES) return `it must be at least ${formatBytes(MIN_MEMORY_BYTES)}, as in Docker (less may not even start the step)`;
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
export function capLimits(requested: Partial<StepLimits>, max: StepLimits, defaults: StepLimits = DEFAULT_LIMITS): StepLimits {
  const out = {} as StepLimits;
  for (const key of LIMIT_KEYS) {
    const { option, env } = LIMIT_NAMES[key];
    const maxWhy = invalidReason(key, max[key]);
    if (maxWhy) throw new LimitError(option, `the service's maximum ${option} limit (${String(max[key])}) is invalid: ${maxWhy}; fix the service's configuration`);
    const asked = requested[key];
    if (asked === undefined) {
      out[key] = Math.min(defaults[key], max[key]);
      continue;
    }
    const why = invalidReason(key, asked);
    if (why) throw new LimitError(option, `invalid ${option} limit ${String(asked)} for the step: ${why}; fix ${env} (the build's ${option} limit)`);
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
    if (Number.isNaN(n)) throw new LimitError(option, `${name}: invalid ${option} limit ${JSON.stringify(text)}: write a number, e.g. ${key === "pids" ? "4096" : "1.5"}`);
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
    parts.push(`the step ran out of memory: it exceeded its memory limit of ${formatBytes(limits.memoryBytes)}${peak} (${raise("memoryBytes")})`);
  }
  if (usage.pidsLimitHit) {
    parts.push(`the step could not create more processes: the pids limit of ${limits.pids} was reached (${raise("pids")})`);
  }
  return parts.length ? parts.join("; ") : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// The kernel's files (pure parsers)

/**
 * Parses a flat keyed file (`memory.events`, `pids.events`, `memory.oom_control`, `memory.stat`): one `key value`
 * per line. `max` reads as Infinity; lines that are not `key number` are skipped.
 */
export function parseKeyedFile(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^\s*(\S+)\s+(\S+)\s*$/.exec(line);
    if (!m) continue;
    const value = parseCgroupNumber(m[2]!);
    if (value !== undefined) out.set(m[1]!, value);
  }
  return out;
}

/** Parses a single-value file (`pids.max`, `memory.peak`, `memory.max_usage_in_bytes`): a number, or `max` (Infinity). */
export function parseCgroupNumber(text: string): number | undefined {
  const t = text.trim();
  if (t === "max") return Infinity;
  return /^-?\d+$/.test(t) ? Number(t) : undefined;
}

/** The contents of a v1 step cgroup's files (absent ones undefined) that usageFromV1 reads. */
export interface V1UsageFiles {
  /** memory.oom_control: `oom_kill_disable`, `under_oom`, `oom_kill` (since Linux 4.13; counted only where the process died). */
  oomControl?: string;
  /** memory.max_usage_in_bytes */
  maxUsageInBytes?: string;
  /** Whether the kernel log shows an OOM kill charged to our cgroup (see kernelLogShowsOomKill). */
  kernelLogOomKill?: boolean;
  /** pids.events of our parent and, if runc has not removed it yet, of its leaf. */
  pidsEvents?: string[];
  /** pids.peak (Linux 6.x) */
  pidsPeak?: string;
  /** pids.max */
  pidsMax?: string;
}

/** The contents of a v2 step cgroup's files (absent ones undefined) that usageFromV2 reads. */
export interface V2UsageFiles {
  /** memory.events: `low`, `high`, `max`, `oom`, `oom_kill`, `oom_group_kill`. */
  memoryEvents?: string;
  /** memory.peak (Linux 5.19) */
  memoryPeak?: string;
  /** pids.events of our parent and, if runc has not removed it yet, of its leaf. */
  pidsEvents?: string[];
  /** pids.peak */
  pidsPeak?: string;
  /** pids.max */
  pidsMax?: string;
}

/**
 * Whether the pids limit was hit. The kernel counts a refused fork in `pids.events` (`max N`) of the cgroup whose
 * limit refused it on v2, but on v1 (and on v2 mounted with `pids_localevents`) only in the cgroup of the forking
 * process: runc's leaf, which is gone once the container exits. So the parent's peak reaching its limit counts too:
 * the limit is only ever reached by a fork that the next one would exceed.
 */
function pidsLimitHit(events: string[] | undefined, peak: string | undefined, max: string | undefined): { hit: boolean; peak?: number } {
  const refused = (events ?? []).some((e) => (parseKeyedFile(e).get("max") ?? 0) > 0);
  const p = peak !== undefined ? parseCgroupNumber(peak) : undefined;
  const m = max !== undefined ? parseCgroupNumber(max) : undefined;
  const reached = p !== undefined && m !== undefined && Number.isFinite(m) && p >= m;
  return { hit: refused || reached, ...(p !== undefined ? { peak: p } : {}) };
}

/**
 * Reads a v1 step cgroup's files. Unlike v2, v1 counts `oom_kill` only in the memory cgroup of the killed process
 * (runc's leaf, removed when the container exits), never in its parents, so our parent's count stays 0 when the leaf
 * hit our limit: the kernel log's record of the kill is what says so (`kernelLogOomKill`). The parent's own count and
 * `under_oom` (an OOM in progress with the killer disabled) still count, for a process placed in it directly.
 */
export function usageFromV1(f: V1UsageFiles): LimitUsage {
  const oom = parseKeyedFile(f.oomControl ?? "");
  const maxUsage = f.maxUsageInBytes !== undefined ? parseCgroupNumber(f.maxUsageInBytes) : undefined;
  const pids = pidsLimitHit(f.pidsEvents, f.pidsPeak, f.pidsMax);
  return {
    oomKilled: (oom.get("oom_kill") ?? 0) > 0 || (oom.get("under_oom") ?? 0) > 0 || f.kernelLogOomKill === true,
    ...(maxUsage !== undefined ? { memoryMaxBytes: maxUsage } : {}),
    pidsLimitHit: pids.hit,
    ...(pids.peak !== undefined ? { pidsMax: pids.peak } : {}),
  };
}

/** A v1 memory cgroup's counters, as read from its files (absent ones undefined). */
export interface V1MemoryCounters {
  failcnt?: string;
  maxUsageInBytes?: string;
  limitInBytes?: string;
  memswMaxUsageInBytes?: string;
  memswLimitInBytes?: string;
}

/**
 * Whether a v1 memory cgroup ever reached its memory or memory+swap limit: a failed charge counted in memory.failcnt,
 * or a peak at the limit. The peak matters because Linux 6.12+ stops counting failures of the memsw counter, which
 * with memsw = memory limit is the one that fails first: memory.failcnt and memory.memsw.failcnt then both stay 0.
 */
export function v1MemoryLimitReached(c: V1MemoryCounters): boolean {
  const n = (t: string | undefined) => (t !== undefined ? parseCgroupNumber(t) : undefined);
  const atLimit = (peak: string | undefined, limit: string | undefined) => {
    const p = n(peak);
    const l = n(limit);
    return p !== undefined && l !== undefined && Number.isFinite(l) && p >= l;
  };
  return (n(c.failcnt) ?? 0) > 0 || atLimit(c.maxUsageInBytes, c.limitInBytes) || atLimit(c.memswMaxUsageInBytes, c.memswLimitInBytes);
}

/**
 * Whether kernel log records (/dev/kmsg or `dmesg` text) show an OOM kill whose limiting memory cgroup is step `id`'s,
 * or one below it. The kernel logs every memory cgroup OOM kill as
 * `oom-kill:constraint=CONSTRAINT_MEMCG,…,oom_memcg=/strata/<id>,task_memcg=/strata/<id>/ctr,task=tail,pid=…`,
 * with paths inside the memory hierarchy (which may sit below a mount's root, hence the match on the tail).
 */
export function kernelLogShowsOomKill(log: string, id: string): boolean {
  const ours = `/${CGROUP_PARENT}/${id}/`;
  for (const line of log.split("\n")) {
    const at = line.indexOf("oom-kill:");
    if (at < 0) continue;
    const m = /[:,]oom_memcg=([^,\s]*)/.exec(line.slice(at));
    if (m && `${m[1]}/`.includes(ours)) return true;
  }
  return false;
}

/**
 * The kernel log's OOM-kill records (from /dev/kmsg, read without blocking), or undefined when it cannot be read
 * (no CAP_SYSLOG, no /dev/kmsg in a container). Records that scrolled out of the ring buffer are lost, so this is
 * read right after the step, and only when the memory limit was reached at all (v1MemoryLimitReached).
 */
function readKernelOomRecords(): string | undefined {
  let fd: number;
  try {
    fd = openSync("/dev/kmsg", constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  const records: string[] = [];
  const buf = Buffer.alloc(16 * 1024); // one record per read; the kernel's are at most 8 KiB
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EPIPE") continue; // records were overwritten while we read: go on with the next one
        if (code === "EAGAIN") break; // the end of the log
        return records.length ? records.join("") : undefined;
      }
      if (n === 0) break;
      const text = buf.toString("utf8", 0, n);
      if (text.includes("oom-kill:")) records.push(text);
    }
  } finally {
    closeSync(fd);
  }
  return records.join("");
}

/**
 * Reads a v2 step cgroup's files. `oom` counts too: it is recorded on the cgroup whose limit was reached (ours) even
 * when the kernel is mounted with `memory_localevents`, which keeps `oom_kill` on the leaf where the process died.
 */
export function usageFromV2(f: V2UsageFiles): LimitUsage {
  const ev = parseKeyedFile(f.memoryEvents ?? "");
  const peak = f.memoryPeak !== undefined ? parseCgroupNumber(f.memoryPeak) : undefined;
  const pids = pidsLimitHit(f.pidsEvents, f.pidsPeak, f.pidsMax);
  return {
    oomKilled: ["oom", "oom_kill", "oom_group_kill"].some((k) => (ev.get(k) ?? 0) > 0),
    ...(peak !== undefined ? { memoryMaxBytes: peak } : {}),
    pidsLimitHit: pids.hit,
    ...(pids.peak !== undefined ? { pidsMax: pids.peak } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Where the hierarchies are

/** One cgroup filesystem mount from /proc/self/mountinfo. */
export interface CgroupMount {
  mountPoint: string;
  fsType: "cgroup" | "cgroup2";
  /** The cgroup of the hierarchy mounted there (`/` unless a subtree was bind-mounted or a cgroup namespace is in use). */
  root: string;
  /** v1: the controllers of the hierarchy, and its name (`name=systemd`) if it has one; v2: empty. */
  controllers: string[];
}

const V1_CONTROLLERS = new Set([
  "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio", "perf_event", "hugetlb",
  "pids", "rdma", "misc", "debug",
]);

/** mountinfo escapes space, tab, newline and backslash as octal (`\040`). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The cgroup and cgroup2 mounts listed in a /proc/<pid>/mountinfo text. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split("\n")) {
    const dash = line.indexOf(" - ");
    if (dash < 0) continue;
    const pre = line.slice(0, dash).split(" ");
    const [fsType, , superOpts = ""] = line.slice(dash + 3).split(" ");
    if ((fsType !== "cgroup" && fsType !== "cgroup2") || pre.length < 5) continue;
    out.push({
      mountPoint: unescapeMountPath(pre[4]!),
      fsType,
      root: unescapeMountPath(pre[3]!),
      controllers: fsType === "cgroup" ? superOpts.split(",").filter((o) => V1_CONTROLLERS.has(o) || o.startsWith("name=")) : [],
    });
  }
  return out;
}

/** A cgroup hierarchy: where it is mounted, and which controllers it offers. */
export interface CgroupHierarchy {
  dir: string;
  controllers: string[];
}

/** How this host's cgroups are laid out. */
export interface CgroupLayout {
  /** 1 when the controllers are on v1 hierarchies (hybrid hosts included), 2 when they are on the unified one. */
  version: 1 | 2;
  /** Where the cgroup filesystems are mounted: /sys/fs/cgroup. */
  root: string;
  /**
   * v1: every mounted hierarchy (one per controller or group of controllers, named ones such as `name=systemd`, and a
   * hybrid host's unified one), because runc creates a step's path in each of them. v2: the unified hierarchy, with
   * the controllers its root offers (its cgroup.controllers).
   */
  hierarchies: CgroupHierarchy[];
}

/**
 * Decides the layout from the cgroup mounts: v1 when any v1 hierarchy has a controller (a hybrid host's unified
 * hierarchy then holds no controller runc uses), otherwise v2 at the cgroup2 mount (preferring /sys/fs/cgroup).
 * For v2 the controllers are passed in, read from the root's cgroup.controllers. A hierarchy mounted twice is listed once.
 */
export function layoutFromMounts(mounts: CgroupMount[], unifiedControllers: string[] = []): CgroupLayout {
  const v1 = mounts.filter((m) => m.fsType === "cgroup" && m.controllers.some((c) => V1_CONTROLLERS.has(c)));
  if (v1.length > 0) {
    const seen = new Set<string>();
    const hierarchies: CgroupHierarchy[] = [];
    // The full mount first, so a bind-mounted subtree of the same hierarchy does not hide it.
    for (const m of [...mounts].sort((a, b) => Number(b.root === "/") - Number(a.root === "/"))) {
      const key = m.fsType === "cgroup2" ? "cgroup2" : [...m.controllers].sort().join(",");
      if (seen.has(key) || (m.fsType === "cgroup" && m.controllers.length === 0)) continue;
      seen.add(key);
      hierarchies.push({ dir: m.mountPoint, controllers: m.controllers });
    }
    return { version: 1, root: path.dirname((v1.find((m) => m.root === "/") ?? v1[0]!).mountPoint), hierarchies };
  }
  const v2 = mounts.filter((m) => m.fsType === "cgroup2");
  const unified = v2.find((m) => m.mountPoint === "/sys/fs/cgroup") ?? v2.find((m) => m.root === "/") ?? v2[0];
  if (!unified) {
    throw new CgroupError(
      "/proc/self/mountinfo",
      "no cgroup filesystem is mounted, so build steps cannot be given memory, pids and CPU limits: " +
        "mount cgroup2 at /sys/fs/cgroup (`mount -t cgroup2 none /sys/fs/cgroup`)",
    );
  }
  return { version: 2, root: unified.mountPoint, hierarchies: [{ dir: unified.mountPoint, controllers: unifiedControllers }] };
}

/** The hierarchy that holds `controller`, if any. */
export function hierarchyOf(layout: CgroupLayout, controller: string): CgroupHierarchy | undefined {
  return layout.hierarchies.find((h) => h.controllers.includes(controller));
}

/** Finds this host's cgroup layout (from /proc/self/mountinfo and, on v2, the root's cgroup.controllers). */
export async function detectCgroups(): Promise<CgroupLayout> {
  const mountinfo = "/proc/self/mountinfo";
  let text: string;
  try {
    text = await fsp.readFile(mountinfo, "utf8");
  } catch (e) {
    throw new CgroupError(mountinfo, `could not read ${mountinfo} to find the cgroup mounts: ${(e as Error).message} (is /proc mounted?)`, { cause: e });
  }
  const mounts = parseCgroupMounts(text);
  const layout = layoutFromMounts(mounts);
  if (layout.version === 1) return layout;
  const file = path.join(layout.root, "cgroup.controllers");
  let controllers: string;
  try {
    controllers = await fsp.readFile(file, "utf8");
  } catch (e) {
    throw new CgroupError(file, `could not read ${file}: ${(e as Error).message}`, { cause: e });
  }
  return layoutFromMounts(mounts, controllers.split(/\s+/).filter(Boolean));
}

/** Memory and pids limits are what keeps one step from taking the builder down: without them we refuse to run. */
function requireControllers(layout: CgroupLayout): void {
  for (const c of ["memory", "pids"]) {
    if (hierarchyOf(layout, c)) continue;
    if (layout.version === 1) {
      throw new CgroupError(
        path.join(layout.root, c),
        `the cgroup v1 ${c} controller is not mounted under ${layout.root}, so build steps cannot be limited: ` +
          `mount it (\`mkdir -p ${layout.root}/${c} && mount -t cgroup -o ${c} cgroup ${layout.root}/${c}\`)`,
      );
    }
    throw new CgroupError(
      path.join(layout.root, "cgroup.controllers"),
      `the ${c} controller is not available in ${layout.root} (its cgroup.controllers does not list it), so build steps ` +
        `cannot be limited: enable it in the parent cgroup's cgroup.subtree_control (under systemd: Delegate=yes for Strata's unit)`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Creating, reading and removing a step's cgroup

/** One filesystem operation of creating a step's cgroup. */
export type CgroupOp =
  | { op: "mkdir"; path: string; existOk?: boolean }
  | { op: "write"; path: string; value: string; ifExists?: boolean };

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/;
/** Ids of steps' cgroups: the builder's pid first, as in runc container ids (`strata-<pid>-<suffix>`). */
const OWNED_ID = /^strata-(\d+)-/;

function cpuQuotaUs(cpus: number): number {
  return Math.max(1000, Math.round(cpus * CPU_PERIOD_US));
}

/**
 * The directories to create and files to write, in order, to give step `id` its limits (pure). v1: `strata/<id>` in
 * the memory, pids and cpu hierarchies with memory.limit_in_bytes (then memory.memsw.limit_in_bytes to the same
 * value, where swap accounting exists, so the step cannot swap), pids.max and a CFS quota. v2: the controllers
 * enabled down to `strata/<id>`, then memory.max, memory.swap.max = 0 (if the host has swap accounting), pids.max, cpu.max.
 * The cpu limit is left out when the host has no cpu controller.
 */
export function stepCgroupPlan(layout: CgroupLayout, id: string, limits: StepLimits): CgroupOp[] {
  const ops: CgroupOp[] = [];
  const quota = cpuQuotaUs(limits.cpus);
  if (layout.version === 1) {
    const dirs = new Map<string, string>();
    for (const c of ["memory", "pids", "cpu"]) {
      const h = hierarchyOf(layout, c);
      if (!h) continue;
      const dir = path.join(h.dir, CGROUP_PARENT, id);
      if (![...dirs.values()].includes(dir)) ops.push({ op: "mkdir", path: path.dirname(dir), existOk: true }, { op: "mkdir", path: dir });
      dirs.set(c, dir);
    }
    const mem = dirs.get("memory");
    if (mem) {
      ops.push({ op: "write", path: path.join(mem, "memory.limit_in_bytes"), value: String(limits.memoryBytes) });
      ops.push({ op: "write", path: path.join(mem, "memory.memsw.limit_in_bytes"), value: String(limits.memoryBytes), ifExists: true });
    }
    const pids = dirs.get("pids");
    if (pids) ops.push({ op: "write", path: path.join(pids, "pids.max"), value: String(limits.pids) });
    const cpu = dirs.get("cpu");
    if (cpu) {
      ops.push({ op: "write", path: path.join(cpu, "cpu.cfs_period_us"), value: String(CPU_PERIOD_US) });
      ops.push({ op: "write", path: path.join(cpu, "cpu.cfs_quota_us"), value: String(quota) });
    }
    return ops;
  }
  const root = layout.hierarchies[0]?.dir ?? layout.root;
  const available = ["memory", "pids", "cpu"].filter((c) => layout.hierarchies[0]?.controllers.includes(c));
  const enable = available.map((c) => `+${c}`).join(" ");
  const parent = path.join(root, CGROUP_PARENT);
  const dir = path.join(parent, id);
  if (enable) ops.push({ op: "write", path: path.join(root, "cgroup.subtree_control"), value: enable });
  ops.push({ op: "mkdir", path: parent, existOk: true });
  if (enable) ops.push({ op: "write", path: path.join(parent, "cgroup.subtree_control"), value: enable });
  ops.push({ op: "mkdir", path: dir });
  if (enable) ops.push({ op: "write", path: path.join(dir, "cgroup.subtree_control"), value: enable });
  if (available.includes("memory")) {
    ops.push({ op: "write", path: path.join(dir, "memory.max"), value: String(limits.memoryBytes) });
    ops.push({ op: "write", path: path.join(dir, "memory.swap.max"), value: "0", ifExists: true });
  }
  if (available.includes("pids")) ops.push({ op: "write", path: path.join(dir, "pids.max"), value: String(limits.pids) });
  if (available.includes("cpu")) ops.push({ op: "write", path: path.join(dir, "cpu.max"), value: `${quota} ${CPU_PERIOD_US}` });
  return ops;
}

/** What to do about a failed cgroup operation, by errno. */
function hint(code: string | undefined, op: CgroupOp): string {
  switch (code) {
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return "Strata must run as root with a writable cgroup filesystem to limit build steps";
    case "EEXIST":
      return "a cgroup with this id already exists; step ids must be unique (reapStaleCgroups removes those of dead builders)";
    case "ENOENT":
      return op.op === "mkdir" ? "the cgroup hierarchy is not mounted there" : "this kernel does not offer that file; the controller may not be enabled";
    case "EBUSY":
      return op.path.endsWith("cgroup.subtree_control")
        ? "the cgroup has processes of its own, and cgroup v2 does not let a cgroup with processes delegate controllers; run Strata in a leaf cgroup of its own"
        : "the cgroup is in use";
    case "EINVAL":
      return "the kernel rejected the value";
    default:
      return "check the cgroup filesystem";
  }
}

/** Applies one operation; true when it created a directory that a failure later on must remove. */
async function applyOp(op: CgroupOp): Promise<boolean> {
  if (op.op === "mkdir") {
    try {
      await fsp.mkdir(op.path);
      // Shared parents (existOk) are never rolled back: another step may be creating its cgroup in them right now.
      return !op.existOk;
    } catch (e) {
      if (op.existOk && (e as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw e;
    }
  }
  // cgroupfs files cannot be created: open them for writing without O_CREAT.
  let fh: FileHandle;
  try {
    fh = await fsp.open(op.path, constants.O_WRONLY);
  } catch (e) {
    if (op.ifExists && (e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
  try {
    await fh.write(op.value);
  } finally {
    await fh.close();
  }
  return false;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Removes a cgroup directory and any below it, deepest first. Retries EBUSY (processes still leaving after the
 * container exited) for up to about `busyMs`; a missing directory is not an error.
 */
async function removeTree(dir: string, busyMs: number): Promise<void> {
  let entries: Dirent[];
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  for (const ent of entries) if (ent.isDirectory()) await removeTree(path.join(dir, ent.name), busyMs);
  const deadline = Date.now() + busyMs;
  for (let wait = 5; ; wait = Math.min(wait * 2, 100)) {
    try {
      await fsp.rmdir(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY" || Date.now() >= deadline) throw e;
      await sleep(wait);
    }
  }
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CgroupError(file, `could not read ${file}: ${(e as Error).message}`, { cause: e });
  }
}

/** One build step's cgroup: made by createStepCgroup, to be removed after the step's container has exited. */
export interface StepCgroup {
  readonly id: string;
  /** For runc's `linux.cgroupsPath`: `/strata/<id>/ctr`. runc creates this leaf and removes it on exit. */
  readonly runcPath: string;
  /** Our directories holding the limits: `strata/<id>` in each limited hierarchy (one on v2). */
  readonly dirs: string[];
  /** What the step's cgroup recorded about its limits; call it after the container exited and before remove(). */
  usage(): Promise<LimitUsage>;
  /** Removes `strata/<id>` (and anything runc left below it) from every hierarchy. Safe to call twice. */
  remove(): Promise<void>;
}

let detected: Promise<CgroupLayout> | undefined;
/** detectCgroups once per process: mounts do not move under a running builder. */
export function detectCgroupsOnce(): Promise<CgroupLayout> {
  detected ??= detectCgroups().catch((e: unknown) => {
    detected = undefined;
    throw e;
  });
  return detected;
}

/**
 * Creates step `id`'s cgroup `strata/<id>` with `limits` (see stepCgroupPlan); pass its `runcPath` to runc as
 * `linux.cgroupsPath`. `id` must be one path component, unique among running steps; start it with
 * `strata-<pid>-` (the builder's pid) so reapStaleCgroups can recognise it once the builder is gone. `layout`
 * defaults to this host's (detected once). On failure nothing is left behind.
 */
export async function createStepCgroup(id: string, limits: StepLimits, layout?: CgroupLayout): Promise<StepCgroup> {
  if (!ID_PATTERN.test(id)) {
    throw new CgroupError(`${CGROUP_PARENT}/${id}`, `invalid step cgroup id ${JSON.stringify(id)}: use letters, digits, '_', '.' and '-' only (one path component)`);
  }
  const lay = layout ?? (await detectCgroupsOnce());
  requireControllers(lay);
  const created: string[] = [];
  for (const op of stepCgroupPlan(lay, id, limits)) {
    try {
      if (await applyOp(op)) created.push(op.path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      for (const dir of created.reverse()) await fsp.rmdir(dir).catch(() => undefined);
      const what = op.op === "mkdir" ? `create the cgroup ${op.path}` : `write ${JSON.stringify(op.value)} to ${op.path}`;
      throw new CgroupError(op.path, `could not ${what} for a build step: ${(e as Error).message} (${hint(code, op)})`, { cause: e });
    }
  }
  const dirOf = (controller: string) => {
    const h = hierarchyOf(lay, controller);
    return h ? path.join(h.dir, CGROUP_PARENT, id) : undefined;
  };
  const dirs = [...new Set(["memory", "pids", "cpu"].map(dirOf).filter((d): d is string => d !== undefined))];
  return {
    id,
    runcPath: `/${CGROUP_PARENT}/${id}/${CGROUP_LEAF}`,
    dirs,
    async usage() {
      const mem = dirOf("memory")!;
      const pids = dirOf("pids")!;
      const pidsFiles = async () => {
        const events = (await Promise.all([path.join(pids, "pids.events"), path.join(pids, CGROUP_LEAF, "pids.events")].map(readOptional)))
          .filter((t): t is string => t !== undefined);
        return { pidsEvents: events, pidsPeak: await readOptional(path.join(pids, "pids.peak")), pidsMax: await readOptional(path.join(pids, "pids.max")) };
      };
      const memFile = lay.version === 1 ? "memory.oom_control" : "memory.events";
      const memText = await readOptional(path.join(mem, memFile));
      if (memText === undefined) {
        throw new CgroupError(mem, `the step's cgroup ${mem} is gone (no ${memFile}): read its usage before remove(), and make sure nothing else removes strata/<id>`);
      }
      const p = await pidsFiles();
      if (lay.version === 1) {
        const read = (file: string) => readOptional(path.join(mem, file));
        const maxUsageInBytes = await read("memory.max_usage_in_bytes");
        const reached = v1MemoryLimitReached({
          failcnt: await read("memory.failcnt"),
          maxUsageInBytes,
          limitInBytes: await read("memory.limit_in_bytes"),
          memswMaxUsageInBytes: await read("memory.memsw.max_usage_in_bytes"),
          memswLimitInBytes: await read("memory.memsw.limit_in_bytes"),
        });
        // The kernel log is only searched when the limit was reached at all: reading it costs up to tens of ms.
        const log = reached ? readKernelOomRecords() : undefined;
        return usageFromV1({ oomControl: memText, maxUsageInBytes, kernelLogOomKill: log !== undefined && kernelLogShowsOomKill(log, id), ...p });
      }
      return usageFromV2({ memoryEvents: memText, memoryPeak: await readOptional(path.join(mem, "memory.peak")), ...p });
    },
    async remove() {
      const failures: { dir: string; error: Error }[] = [];
      for (const h of lay.hierarchies) {
        const dir = path.join(h.dir, CGROUP_PARENT, id);
        try {
          await removeTree(dir, 2000);
        } catch (e) {
          failures.push({ dir, error: e as Error });
        }
      }
      if (failures.length) {
        const first = failures[0]!;
        const procs = await readOptional(path.join(first.dir, CGROUP_LEAF, "cgroup.procs")).catch(() => undefined);
        throw new CgroupError(
          first.dir,
          `could not remove the step's cgroup ${failures.map((f) => `${f.dir} (${f.error.message})`).join(", ")}` +
            (procs?.trim() ? `: processes ${procs.trim().split("\n").join(", ")} are still in it` : "") +
            `; stop the step's container (runc kill/delete), then remove the directories with rmdir, deepest first, or let reapStaleCgroups do it once this builder has exited`,
          { cause: first.error },
        );
      }
    },
  };
}

/** True unless `id` names a builder (`strata-<pid>-…`) whose process has exited. */
export function ownerAlive(id: string): boolean {
  const m = OWNED_ID.exec(id);
  return !m || pidAlive(Number(m[1]));
}

/**
 * Removes the `strata/<id>` cgroups left by builders that died (kill -9) before removing them, in every hierarchy.
 * Only ids of the form `strata-<pid>-<suffix>` for which `isAlive` answers false are touched; a cgroup that still has
 * processes (a container not yet reaped: run reapStaleContainers first) is left for the next call. Returns the ids
 * removed.
 */
export async function reapStaleCgroups(isAlive: (id: string) => boolean = ownerAlive, layout?: CgroupLayout): Promise<string[]> {
  const lay = layout ?? (await detectCgroupsOnce());
  const removed = new Set<string>();
  for (const h of lay.hierarchies) {
    const parent = path.join(h.dir, CGROUP_PARENT);
    let names: string[];
    try {
      names = (await fsp.readdir(parent, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      continue;
    }
    for (const name of names) {
      if (!OWNED_ID.test(name) || isAlive(name)) continue;
      try {
        await removeTree(path.join(parent, name), 0);
        removed.add(name);
      } catch {
        // Still busy: its processes have not exited yet. The next reap gets it.
      }
    }
  }
  return [...removed].sort();
}
