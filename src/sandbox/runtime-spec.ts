/** Pure construction of an OCI runtime spec (config.json) for one sandboxed build command. */

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
  network: "host" | "none";
  hostname: string;
}

/** Docker's default capability set: enough for package managers (chown, setuid to _apt, …), nothing more. */
export const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
  "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

/** Mount destinations the runtime always provides; they are scrubbed from the layer if they did not exist before. */
export const SYSTEM_MOUNT_POINTS = ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"];

export function runtimeSpec(s: SandboxSpec): Record<string, unknown> {
  const namespaces = [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }];
  if (s.network === "none") namespaces.push({ type: "network" });
  const caps = s.uid === 0 ? DEFAULT_CAPABILITIES : [];
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: s.uid, gid: s.gid, additionalGids: s.additionalGids },
      args: s.argv,
      env: s.env,
      cwd: s.cwd,
      capabilities: { bounding: DEFAULT_CAPABILITIES, effective: caps, permitted: caps },
      noNewPrivileges: false,
    },
    root: { path: s.rootfs, readonly: false },
    hostname: s.hostname,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      ...s.mounts.map((m) => ({
        destination: m.destination,
        type: "bind",
        source: m.source,
        options: ["rbind", "nosuid", "nodev", m.readonly ? "ro" : "rw"],
      })),
    ],
    linux: {
      namespaces,
      maskedPaths: ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}
