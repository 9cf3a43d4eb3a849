/**
 * Benchmark: the start-up cost of one sandboxed RUN (`true` in a busybox rootfs), Strata's executor against the bare
 * `runc run` that steps used before the sandbox was hardened (host network, no seccomp, no cgroup, no parent-death
 * wrapper), interleaved in one run so both see the same machine.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/run-overhead.js [--runs 40]
 *
 * Variants:
 *   bare runc        runc run of the pre-hardening spec (the baseline).
 *   strata sandbox   RuncExecutor, default policy: own network namespace with egress (slirp4netns from the pool),
 *                    seccomp, no CAP_NET_RAW, parent-death wrapper, cgroup limits.
 *   strata, no userns  the same with STRATA_USERNS=0 (steps as host root), to show the user namespace's share.
 *   strata none      RuncExecutor with network none.
 * Prints the median and p10–p90 of each and the medians' difference to the baseline.
 */
import { execa } from "execa";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { RuncExecutor } from "../src/sandbox/runc.js";
import { networkPool } from "../src/sandbox/netns.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "40" } } });
const runs = Number(values.runs);

async function busyboxRoot(dir: string): Promise<void> {
  await fsp.mkdir(path.join(dir, "bin"), { recursive: true });
  await fsp.mkdir(path.join(dir, "etc"), { recursive: true });
  await fsp.copyFile("/bin/busybox", path.join(dir, "bin/busybox"));
  await fsp.chmod(path.join(dir, "bin/busybox"), 0o755);
  for (const a of ["sh", "true"]) await fsp.symlink("busybox", path.join(dir, "bin", a));
  await fsp.writeFile(path.join(dir, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
}

/** The runtime spec steps had before the hardening (for the baseline). */
function legacySpec(rootfs: string): object {
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ["/bin/true"],
      env: ["PATH=/bin"],
      cwd: "/",
      capabilities: Object.fromEntries(
        ["bounding", "effective", "permitted"].map((k) => [
          k,
          [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
          ],
        ]),
      ),
    },
    root: { path: rootfs, readonly: false },
    hostname: "strata",
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
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/etc/resolv.conf", type: "bind", source: "/etc/resolv.conf", options: ["rbind", "ro"] },
    ],
    linux: { namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }] },
  };
}

function stats(xs: number[]): { median: number; p10: number; p90: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { median: at(0.5), p10: at(0.1), p90: at(0.9) };
}

const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-run-overhead-"));
try {
  const rootfs = path.join(tmp, "rootfs");
  await busyboxRoot(rootfs);
  const bundle = path.join(tmp, "bundle");
  await fsp.mkdir(bundle);
  await fsp.writeFile(path.join(bundle, "config.json"), JSON.stringify(legacySpec(rootfs)));
  const ex = new RuncExecutor();
  const spec = {
    rootfs,
    argv: ["/bin/true"],
    env: ["PATH=/bin"],
    cwd: "/",
    uid: 0,
    gid: 0,
    additionalGids: [],
    mounts: [],
    hostname: "strata",
  };
  const variants: Record<string, () => Promise<void>> = {
    "bare runc (before)": async () => {
      // As the executor did before: runc run, then runc delete.
      await execa("runc", ["--root", "/run/strata-bench-runc", "run", "--bundle", bundle, `bench-${process.pid}`]);
      await execa("runc", ["--root", "/run/strata-bench-runc", "delete", "-f", `bench-${process.pid}`], {
        reject: false,
      });
    },
    "strata sandbox": async () => {
      const r = await ex.run({ ...spec }, {});
      if (r.exitCode !== 0) throw new Error(`exit ${r.exitCode}`);
    },
    "strata, no userns": async () => {
      process.env.STRATA_USERNS = "0";
      try {
        const r = await ex.run({ ...spec }, {});
        if (r.exitCode !== 0) throw new Error(`exit ${r.exitCode}`);
      } finally {
        delete process.env.STRATA_USERNS;
      }
    },
    "strata none": async () => {
      const r = await ex.run({ ...spec, network: "none" }, {});
      if (r.exitCode !== 0) throw new Error(`exit ${r.exitCode}`);
    },
  };
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (const f of Object.values(variants)) await f(); // warm-up (the network pool's first namespace, page cache)
  for (let i = 0; i < runs; i++) {
    for (const [name, f] of Object.entries(variants)) {
      const t0 = performance.now();
      await f();
      times[name]!.push(performance.now() - t0);
      // A step is never back-to-back with the previous one: give the pool's refill the time a real step leaves it.
      await new Promise((r) => setTimeout(r, 60));
    }
  }
  const base = stats(times["bare runc (before)"]!).median;
  console.log(`per-RUN start-up, ${runs} interleaved runs each (ms)`);
  for (const [name, xs] of Object.entries(times)) {
    const s = stats(xs);
    console.log(
      `${name.padEnd(20)} median ${s.median.toFixed(1).padStart(6)}  p10–p90 ${s.p10.toFixed(1)}–${s.p90.toFixed(1)}  vs before ${(s.median - base >= 0 ? "+" : "") + (s.median - base).toFixed(1)}`,
    );
  }
} finally {
  await networkPool().close();
  await fsp.rm(tmp, { recursive: true, force: true });
}
