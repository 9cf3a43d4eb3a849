/**
 * Per-step cgroups: memory, pids and CPU limits for one build step, on cgroup v1 (including hybrid hosts) and v2.
 *
 * We create a parent cgroup `strata/<id>` in each controller and write the limits there; runc is given
 * `linux.cgroupsPath: "/strata/<id>/ctr"` (and no `resources`), creates that leaf, and removes it when the
 * container exits. Because the limits live on our parent, its counters (OOM kills, peak pids) outlive the container,
 * so a failed step can be told which limit it hit (`cgroup-usage.ts`). Reading the kernel's files is split from
 * parsing them: the parsers (`cgroup-usage.ts`, `cgroup-layout.ts`) and the list of writes (`stepCgroupPlan`) are
 * pure, so both cgroup versions are tested on any host. The limits themselves are `step-limits.ts`'s.
 */
import { constants, type Dirent, promises as fsp } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { CgroupError } from "../errors.js";
import { pidAlive } from "../util/fs.js";
import {
  CGROUP_LEAF,
  CGROUP_PARENT,
  detectCgroupsOnce,
  hierarchyOf,
  requireControllers,
  type CgroupLayout,
} from "./cgroup-layout.js";
import {
  kernelLogShowsOomKill,
  readKernelOomRecords,
  usageFromV1,
  usageFromV2,
  v1MemoryLimitReached,
} from "./cgroup-usage.js";
import { CPU_PERIOD_US, type LimitUsage, type StepLimits } from "./step-limits.js";

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
      if (![...dirs.values()].includes(dir))
        ops.push({ op: "mkdir", path: path.dirname(dir), existOk: true }, { op: "mkdir", path: dir });
      dirs.set(c, dir);
    }
    const mem = dirs.get("memory");
    if (mem) {
      ops.push({ op: "write", path: path.join(mem, "memory.limit_in_bytes"), value: String(limits.memoryBytes) });
      ops.push({
        op: "write",
        path: path.join(mem, "memory.memsw.limit_in_bytes"),
        value: String(limits.memoryBytes),
        ifExists: true,
      });
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
  if (available.includes("pids"))
    ops.push({ op: "write", path: path.join(dir, "pids.max"), value: String(limits.pids) });
  if (available.includes("cpu"))
    ops.push({ op: "write", path: path.join(dir, "cpu.max"), value: `${quota} ${CPU_PERIOD_US}` });
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
      return op.op === "mkdir"
        ? "the cgroup hierarchy is not mounted there"
        : "this kernel does not offer that file; the controller may not be enabled";
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

/**
 * Creates step `id`'s cgroup `strata/<id>` with `limits` (see stepCgroupPlan); pass its `runcPath` to runc as
 * `linux.cgroupsPath`. `id` must be one path component, unique among running steps; start it with
 * `strata-<pid>-` (the builder's pid) so reapStaleCgroups can recognise it once the builder is gone. `layout`
 * defaults to this host's (detected once). On failure nothing is left behind.
 */
export async function createStepCgroup(id: string, limits: StepLimits, layout?: CgroupLayout): Promise<StepCgroup> {
  if (!ID_PATTERN.test(id)) {
    throw new CgroupError(
      `${CGROUP_PARENT}/${id}`,
      `invalid step cgroup id ${JSON.stringify(id)}: use letters, digits, '_', '.' and '-' only (one path component)`,
    );
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
      const what =
        op.op === "mkdir" ? `create the cgroup ${op.path}` : `write ${JSON.stringify(op.value)} to ${op.path}`;
      throw new CgroupError(
        op.path,
        `could not ${what} for a build step: ${(e as Error).message} (${hint(code, op)})`,
        { cause: e },
      );
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
        const events = (
          await Promise.all(
            [path.join(pids, "pids.events"), path.join(pids, CGROUP_LEAF, "pids.events")].map(readOptional),
          )
        ).filter((t): t is string => t !== undefined);
        return {
          pidsEvents: events,
          pidsPeak: await readOptional(path.join(pids, "pids.peak")),
          pidsMax: await readOptional(path.join(pids, "pids.max")),
        };
      };
      const memFile = lay.version === 1 ? "memory.oom_control" : "memory.events";
      const memText = await readOptional(path.join(mem, memFile));
      if (memText === undefined) {
        throw new CgroupError(
          mem,
          `the step's cgroup ${mem} is gone (no ${memFile}): read its usage before remove(), and make sure nothing else removes strata/<id>`,
        );
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
        return usageFromV1({
          oomControl: memText,
          maxUsageInBytes,
          kernelLogOomKill: log !== undefined && kernelLogShowsOomKill(log, id),
          ...p,
        });
      }
      return usageFromV2({
        memoryEvents: memText,
        memoryPeak: await readOptional(path.join(mem, "memory.peak")),
        ...p,
      });
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
export async function reapStaleCgroups(
  isAlive: (id: string) => boolean = ownerAlive,
  layout?: CgroupLayout,
): Promise<string[]> {
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
