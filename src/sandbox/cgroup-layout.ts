/**
 * Where this host's cgroup hierarchies are (v1, hybrid or v2), found from /proc/self/mountinfo, and the place of
 * Strata's own cgroups in them. Parsing the mounts and deciding the layout are pure.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { CgroupError } from "../errors.js";

/** Our directory in each hierarchy, and runc's leaf below a step's directory. */
export const CGROUP_PARENT = "strata";
export const CGROUP_LEAF = "ctr";

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
  "cpu",
  "cpuacct",
  "cpuset",
  "memory",
  "devices",
  "freezer",
  "net_cls",
  "net_prio",
  "blkio",
  "perf_event",
  "hugetlb",
  "pids",
  "rdma",
  "misc",
  "debug",
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
      controllers:
        fsType === "cgroup" ? superOpts.split(",").filter((o) => V1_CONTROLLERS.has(o) || o.startsWith("name=")) : [],
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
  return {
    version: 2,
    root: unified.mountPoint,
    hierarchies: [{ dir: unified.mountPoint, controllers: unifiedControllers }],
  };
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
    throw new CgroupError(
      mountinfo,
      `could not read ${mountinfo} to find the cgroup mounts: ${(e as Error).message} (is /proc mounted?)`,
      { cause: e },
    );
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

let detected: Promise<CgroupLayout> | undefined;
/** detectCgroups once per process: mounts do not move under a running builder. */
export function detectCgroupsOnce(): Promise<CgroupLayout> {
  detected ??= detectCgroups().catch((e: unknown) => {
    detected = undefined;
    throw e;
  });
  return detected;
}

/** Memory and pids limits are what keeps one step from taking the builder down: without them we refuse to run. */
export function requireControllers(layout: CgroupLayout): void {
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
