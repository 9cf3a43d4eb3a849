// Step cgroups on this host's real cgroup filesystem, and with real runc: the container lands in /strata/<id>/ctr
// under our limits, a memory hog and a fork loop are reported as hitting their limit, and nothing is left behind.
// Needs root and runc; uses its own runc root so it never sees other tests' containers.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, promises as fsp, readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createStepCgroup, ownerAlive, reapStaleCgroups, type StepCgroup } from "../../src/sandbox/cgroup.js";
import { CGROUP_PARENT, detectCgroups, hierarchyOf, type CgroupLayout } from "../../src/sandbox/cgroup-layout.js";
import { parseKeyedFile } from "../../src/sandbox/cgroup-usage.js";
import { limitFailureMessage, type StepLimits } from "../../src/sandbox/step-limits.js";
import { runtimeSpec } from "../../src/sandbox/runtime-spec.js";
import { uniqueSuffix } from "../../src/util/fs.js";
import { makeBusyboxTree } from "../support/strata.js";

const RUNC_ROOT = "/run/strata-runc-cgtest";
const RUNC = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"].find((p) =>
  existsSync(p),
);
const skip = process.getuid?.() !== 0 ? "needs root" : !RUNC ? "needs runc" : false;

const MiB = 1024 * 1024;
const LIMITS: StepLimits = { memoryBytes: 64 * MiB, pids: 16, cpus: 1 };

/** Every strata/<id> directory that exists for `id`, in any hierarchy under the cgroup root. */
function leftovers(layout: CgroupLayout, id: string): string[] {
  return readdirSync(layout.root)
    .map((h) => path.join(layout.root, h, CGROUP_PARENT, id))
    .filter((d) => existsSync(d));
}

describe("step cgroups on this host", { skip }, () => {
  let layout: CgroupLayout;
  const made: StepCgroup[] = [];
  before(async () => {
    layout = await detectCgroups();
  });
  after(async () => {
    for (const cg of made) await cg.remove().catch(() => undefined);
  });

  test("the limits are written to strata/<id>; usage reads clean; remove leaves nothing", async () => {
    const cg = await createStepCgroup(`strata-${uniqueSuffix()}`, { memoryBytes: 64 * MiB, pids: 16, cpus: 1.5 });
    made.push(cg);
    assert.equal(cg.runcPath, `/strata/${cg.id}/ctr`);
    const read = (controller: string, file: string) =>
      readFileSync(path.join(hierarchyOf(layout, controller)!.dir, "strata", cg.id, file), "utf8").trim();
    if (layout.version === 1) {
      assert.equal(read("memory", "memory.limit_in_bytes"), String(64 * MiB));
      if (existsSync(path.join(hierarchyOf(layout, "memory")!.dir, "strata", cg.id, "memory.memsw.limit_in_bytes"))) {
        assert.equal(read("memory", "memory.memsw.limit_in_bytes"), String(64 * MiB));
      }
      assert.equal(read("pids", "pids.max"), "16");
      assert.equal(read("cpu", "cpu.cfs_period_us"), "100000");
      assert.equal(read("cpu", "cpu.cfs_quota_us"), "150000");
    } else {
      assert.equal(read("memory", "memory.max"), String(64 * MiB));
      assert.equal(read("pids", "pids.max"), "16");
      assert.equal(read("cpu", "cpu.max"), "150000 100000");
    }
    const usage = await cg.usage();
    assert.equal(usage.oomKilled, false);
    assert.equal(usage.pidsLimitHit, false);
    assert.notEqual(leftovers(layout, cg.id).length, 0);
    await cg.remove();
    assert.deepEqual(leftovers(layout, cg.id), []);
    await cg.remove(); // twice is fine
    await assert.rejects(cg.usage(), /is gone/);
  });

  test("the same id twice is refused, naming the path", async () => {
    const id = `strata-${uniqueSuffix()}`;
    const cg = await createStepCgroup(id, LIMITS);
    made.push(cg);
    await assert.rejects(
      createStepCgroup(id, LIMITS),
      (e: unknown) => e instanceof Error && e.message.includes(`/strata/${id}`) && /already exists/.test(e.message),
    );
    await cg.remove();
  });

  test("reapStaleCgroups removes the cgroups of dead builders (and runc's leftover leaf), not of live ones", async () => {
    const dead = await createStepCgroup(`strata-999999999-cgtest-${uniqueSuffix()}`, LIMITS);
    const live = await createStepCgroup(`strata-${uniqueSuffix()}`, LIMITS);
    made.push(dead, live);
    // What a killed runc leaves: the leaf below our parent.
    await fsp.mkdir(path.join(hierarchyOf(layout, "memory")!.dir, "strata", dead.id, "ctr"));
    // Only judge our two ids: other builders on this machine own the rest.
    const ours = new Set([dead.id, live.id]);
    const removed = await reapStaleCgroups((id) => (ours.has(id) ? ownerAlive(id) : true));
    assert.deepEqual(removed, [dead.id]);
    assert.deepEqual(leftovers(layout, dead.id), []);
    assert.notEqual(leftovers(layout, live.id).length, 0);
    await live.remove();
  });

  test("createStepCgroup + remove costs little", async (t) => {
    const times: number[] = [];
    for (let i = 0; i < 21; i++) {
      const started = process.hrtime.bigint();
      const cg = await createStepCgroup(`strata-${uniqueSuffix()}`, LIMITS);
      await cg.remove();
      times.push(Number(process.hrtime.bigint() - started) / 1e6);
    }
    times.sort((a, b) => a - b);
    t.diagnostic(
      `createStepCgroup + remove: median ${times[10]!.toFixed(2)} ms, min ${times[0]!.toFixed(2)}, max ${times[20]!.toFixed(2)} (21 runs)`,
    );
    assert.ok(times[10]! < 250, `median ${times[10]} ms`);
  });
});

interface RunOutcome {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

describe("step cgroups with runc", { skip }, () => {
  let layout: CgroupLayout;
  let work: string;
  let rootfs: string;
  const cgroups: StepCgroup[] = [];
  const containers: string[] = [];

  before(async () => {
    layout = await detectCgroups();
    work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-cgtest-"));
    rootfs = path.join(work, "rootfs");
    await makeBusyboxTree(rootfs);
    await fsp.symlink("busybox", path.join(rootfs, "bin/tail"));
  });

  after(async () => {
    for (const id of containers) {
      spawnSync(RUNC!, ["--root", RUNC_ROOT, "kill", id, "KILL"], { stdio: "ignore" });
      spawnSync(RUNC!, ["--root", RUNC_ROOT, "delete", "-f", id], { stdio: "ignore" });
    }
    for (const cg of cgroups) await cg.remove().catch((e: unknown) => console.error(`cleanup: ${String(e)}`));
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  /** Starts `script` in a container of a new step cgroup; `onStdout` sees output as it comes. */
  async function start(
    script: string,
    onStdout?: (text: string) => void,
  ): Promise<{ cg: StepCgroup; done: Promise<RunOutcome> }> {
    const id = `strata-${uniqueSuffix()}`;
    const cg = await createStepCgroup(id, LIMITS);
    cgroups.push(cg);
    const spec = runtimeSpec(
      {
        rootfs,
        argv: ["/bin/sh", "-c", script],
        env: ["PATH=/bin"],
        cwd: "/",
        uid: 0,
        gid: 0,
        additionalGids: [],
        mounts: [],
        network: "none",
        hostname: "cgtest",
      },
      { cgroupsPath: cg.runcPath },
    ) as { linux: Record<string, unknown> };
    assert.equal(spec.linux.cgroupsPath, cg.runcPath);
    assert.equal(spec.linux.resources, undefined, "the limits live on our parent cgroup, not in the spec");
    const bundle = path.join(work, id);
    await fsp.mkdir(bundle);
    await fsp.writeFile(path.join(bundle, "config.json"), JSON.stringify(spec));
    containers.push(id);
    const child = spawn(RUNC!, ["--root", RUNC_ROOT, "run", "--bundle", bundle, id], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
      onStdout?.(stdout);
    });
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => spawnSync(RUNC!, ["--root", RUNC_ROOT, "kill", id, "KILL"]), 60_000);
    const done = new Promise<RunOutcome>((resolve) =>
      child.on("close", (code) => {
        clearTimeout(timer);
        spawnSync(RUNC!, ["--root", RUNC_ROOT, "delete", "-f", id], { stdio: "ignore" });
        resolve({ exitCode: code, stdout, stderr });
      }),
    );
    return { cg, done };
  }

  test("the container runs in /strata/<id>/ctr, under our finite limits", async () => {
    let ready!: () => void;
    const printed = new Promise<void>((r) => (ready = r));
    const { cg, done } = await start(
      "cat /proc/self/cgroup; echo END; i=0; while [ ! -e /tmp/go ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
      (out) => out.includes("END\n") && ready(),
    );
    await Promise.race([printed, done]);
    try {
      // While it waits, read its leaf and our parent from the host.
      const memDir = path.join(hierarchyOf(layout, "memory")!.dir, "strata", cg.id);
      const pidsDir = path.join(hierarchyOf(layout, "pids")!.dir, "strata", cg.id);
      assert.ok(existsSync(path.join(memDir, "ctr")), "runc created the leaf below our parent");
      if (layout.version === 1) {
        const stat = parseKeyedFile(readFileSync(path.join(memDir, "ctr", "memory.stat"), "utf8"));
        assert.equal(stat.get("hierarchical_memory_limit"), 64 * MiB);
        const memsw = stat.get("hierarchical_memsw_limit");
        if (memsw !== undefined) assert.equal(memsw, 64 * MiB);
      } else {
        assert.equal(readFileSync(path.join(memDir, "memory.max"), "utf8").trim(), String(64 * MiB));
      }
      assert.equal(readFileSync(path.join(pidsDir, "pids.max"), "utf8").trim(), "16");
      assert.ok(
        Number(readFileSync(path.join(pidsDir, "pids.current"), "utf8")) >= 1,
        "the container's processes count against our parent",
      );
    } finally {
      await fsp.writeFile(path.join(rootfs, "tmp/go"), "");
    }
    const r = await done;
    await fsp.rm(path.join(rootfs, "tmp/go"), { force: true });
    assert.equal(r.exitCode, 0, r.stderr);
    const procCgroup = r.stdout.split("END\n")[0]!;
    for (const c of layout.version === 1 ? ["memory", "pids", "cpu"] : [""]) {
      const line = procCgroup
        .split("\n")
        .find((l) => (layout.version === 1 ? l.split(":")[1]!.split(",").includes(c) : l.startsWith("0::")));
      assert.equal(
        line?.split(":")[2],
        `/strata/${cg.id}/ctr`,
        `${c || "unified"} cgroup of the container:\n${procCgroup}`,
      );
    }
    const usage = await cg.usage();
    assert.equal(usage.oomKilled, false);
    assert.equal(usage.pidsLimitHit, false);
    assert.equal(limitFailureMessage(usage, LIMITS), undefined);
    await cg.remove();
    assert.deepEqual(leftovers(layout, cg.id), []);
  });

  test("a memory hog is killed, and usage says the memory limit of 64 MiB was hit", async (t) => {
    const { cg, done } = await start("head -c 200m /dev/zero | tail");
    const r = await done;
    assert.notEqual(r.exitCode, 0, `the hog should have been killed: ${r.stderr}`);
    const started = process.hrtime.bigint();
    const usage = await cg.usage();
    t.diagnostic(
      `usage() after an OOM kill (v${layout.version}${layout.version === 1 ? ", kernel log searched" : ""}): ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(2)} ms`,
    );
    assert.equal(usage.oomKilled, true, JSON.stringify(usage));
    assert.equal(usage.pidsLimitHit, false);
    const message = limitFailureMessage(usage, LIMITS);
    assert.match(message ?? "", /ran out of memory: it exceeded its memory limit of 64 MiB/);
    await cg.remove();
    assert.deepEqual(leftovers(layout, cg.id), []);
  });

  test("a fork loop stops at the pids limit, and usage says so", async () => {
    const { cg, done } = await start("i=0; while [ $i -lt 40 ]; do sleep 1 & i=$((i+1)); done; wait");
    const r = await done;
    assert.match(r.stderr, /can't fork/);
    const usage = await cg.usage();
    assert.equal(usage.pidsLimitHit, true, JSON.stringify(usage));
    assert.equal(usage.pidsMax, 16);
    assert.equal(usage.oomKilled, false);
    assert.match(
      limitFailureMessage(usage, LIMITS) ?? "",
      /could not create more processes: the pids limit of 16 was reached/,
    );
    await cg.remove();
    assert.deepEqual(leftovers(layout, cg.id), []);
  });
});
