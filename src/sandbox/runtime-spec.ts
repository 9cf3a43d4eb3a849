/**
 * Pure construction of an OCI runtime spec (config.json) for one sandboxed build command: Docker's default
 * capabilities without CAP_NET_RAW, Docker's default seccomp profile, Docker's masked and read-only paths (plus
 * powercap), its own pid/ipc/uts/mount namespaces, and a network namespace unless the host network was granted.
 */
import { ConfigError } from "../errors.js";
import { HOST_ID_BASE, ID_COUNT } from "./ids.js";
import { DOCKER_DEFAULT_SECCOMP } from "./seccomp-profile.js";

export interface BindMount {
  source: string;
  destination: string;
  readonly: boolean;
}

export interface SandboxSpec {
  /** Host path of the container's root filesystem (an overlay mount). */
  rootfs: string;
  argv: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
  mounts: BindMount[];
  /**
   * `sandbox` (default): its own network namespace with egress through slirp4netns, no route to the host; `none`: a
   * namespace with only loopback; `host`: the host's network (an entitlement the executor checks).
   */
  network?: NetworkMode;
  hostname: string;
  /**
   * When `rootfs` is the merged dir of the overlay `mountOverlay(overlayDir, …)` made: with a user namespace the
   * executor mounts it again over idmapped layers for the run, and mounts it back as it was before returning.
   */
  overlayDir?: string;
  /** Resource limits asked for this step (the executor caps them by its policy). */
  limits?: { memoryBytes?: number; pids?: number; cpus?: number };
  /**
   * Give the process a pseudo-terminal (`strata run -t`): runc allocates it and joins it to runc's own stdio, which
   * must then be a terminal. Default: false (a build step never gets one).
   */
  terminal?: boolean;
}

export type NetworkMode = "sandbox" | "none" | "host";

export const NETWORK_MODES: readonly NetworkMode[] = ["sandbox", "none", "host"];

/** `v` as a network mode, or undefined when it is not one (pure). */
export function asNetworkMode(v: string): NetworkMode | undefined {
  return (NETWORK_MODES as readonly string[]).includes(v) ? (v as NetworkMode) : undefined;
}

/** The network of RUN steps that name none: STRATA_NETWORK (sandbox, none or host), default sandbox. */
export function defaultNetwork(env: NodeJS.ProcessEnv = process.env): NetworkMode {
  const v = env.STRATA_NETWORK ?? "sandbox";
  const mode = asNetworkMode(v);
  if (!mode) throw new ConfigError(`STRATA_NETWORK=${JSON.stringify(v)}: expected sandbox, none or host`);
  return mode;
}

/** What the executor prepared for this run: namespaces to join, the cgroup, the OOM score. */
export interface RuntimeContext {
  /** Path of a prepared network namespace to join (`sandbox` mode); without it `sandbox`/`none` get a new empty one. */
  netnsPath?: string;
  /** Path of a user namespace to join (it maps the container's ids to an unprivileged host range). */
  usernsPath?: string;
  /** `linux.cgroupsPath` (e.g. `/strata/<id>/ctr`), under a parent cgroup that carries the step's limits. */
  cgroupsPath?: string;
  /** `process.oomScoreAdj`: above the builder's, so the kernel kills a step before the service. */
  oomScoreAdj?: number;
}

/**
 * Docker's default capability set without CAP_NET_RAW (raw and packet sockets: sniffing, spoofing): enough for package
 * managers (chown, setuid to _apt, …), nothing more. `ping` needs CAP_NET_RAW and does not work in a step.
 */
export const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

/** Docker's masked paths (moby oci/defaults.go), plus powercap (energy counters: a side channel, CVE-2020-8694). */
export const MASKED_PATHS = [
  "/proc/asound",
  "/proc/acpi",
  "/proc/interrupts",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
];

export const READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/** Mount destinations the runtime always provides; they are scrubbed from the layer if they did not exist before. */
export const SYSTEM_MOUNT_POINTS = ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"];

export function runtimeSpec(s: SandboxSpec, ctx: RuntimeContext = {}): Record<string, unknown> {
  const namespaces: { type: string; path?: string }[] = [
    { type: "pid" },
    { type: "ipc" },
    { type: "uts" },
    { type: "mount" },
  ];
  if (ctx.usernsPath) namespaces.unshift({ type: "user", path: ctx.usernsPath });
  const network = s.network ?? "sandbox";
  if (network !== "host")
    namespaces.push(ctx.netnsPath ? { type: "network", path: ctx.netnsPath } : { type: "network" });
  const caps = s.uid === 0 ? DEFAULT_CAPABILITIES : [];
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: s.terminal === true,
      user: { uid: s.uid, gid: s.gid, additionalGids: s.additionalGids },
      args: s.argv,
      env: s.env,
      cwd: s.cwd,
      capabilities: { bounding: DEFAULT_CAPABILITIES, effective: caps, permitted: caps },
      noNewPrivileges: false,
      ...(ctx.oomScoreAdj !== undefined ? { oomScoreAdj: ctx.oomScoreAdj } : {}),
    },
    root: { path: s.rootfs, readonly: false },
    hostname: s.hostname,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      // A fresh sysfs needs a network namespace the step's user namespace owns; on the host network, the host's, read-only.
      network === "host" && ctx.usernsPath
        ? { destination: "/sys", type: "bind", source: "/sys", options: ["rbind", "nosuid", "noexec", "nodev", "ro"] }
        : { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      ...s.mounts.map((m) => ({
        destination: m.destination,
        type: "bind",
        source: m.source,
        options: ["rbind", "nosuid", "nodev", m.readonly ? "ro" : "rw"],
      })),
    ],
    linux: {
      namespaces,
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
      seccomp: DOCKER_DEFAULT_SECCOMP,
      // runc 1.1 wants the mappings of a user namespace it joins spelled out (they are the namespace's own).
      ...(ctx.usernsPath
        ? {
            uidMappings: [{ containerID: 0, hostID: HOST_ID_BASE, size: ID_COUNT }],
            gidMappings: [{ containerID: 0, hostID: HOST_ID_BASE, size: ID_COUNT }],
          }
        : {}),
      ...(ctx.cgroupsPath ? { cgroupsPath: ctx.cgroupsPath } : {}),
    },
  };
}
