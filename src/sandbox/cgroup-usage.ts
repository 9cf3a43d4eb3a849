/**
 * What a step's cgroup recorded about its limits (OOM kills, refused forks, peaks), from the kernel's files: the
 * parsers are pure, so both cgroup versions are tested on any host; only `readKernelOomRecords` reads (/dev/kmsg).
 * cgroup v1 keeps two of those counters only in runc's leaf: see usageFromV1 and pidsLimitHit for what we read instead.
 */
import { closeSync, constants, openSync, readSync } from "node:fs";
import { CGROUP_PARENT } from "./cgroup-layout.js";
import type { LimitUsage } from "./step-limits.js";

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
function pidsLimitHit(
  events: string[] | undefined,
  peak: string | undefined,
  max: string | undefined,
): { hit: boolean; peak?: number } {
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
  return (
    (n(c.failcnt) ?? 0) > 0 ||
    atLimit(c.maxUsageInBytes, c.limitInBytes) ||
    atLimit(c.memswMaxUsageInBytes, c.memswLimitInBytes)
  );
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
export function readKernelOomRecords(): string | undefined {
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
