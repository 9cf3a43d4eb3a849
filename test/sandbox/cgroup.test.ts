// Unit tests of the per-step cgroup module's pure parts (limits, messages, the kernel files' parsers, the write plan)
// for both cgroup versions, and of detectCgroups on this host. test/sandbox/cgroup-runc.test.ts uses the real kernel.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { CgroupError, LimitError } from "../../src/errors.js";
import { createStepCgroup, ownerAlive, stepCgroupPlan } from "../../src/sandbox/cgroup.js";
import {
  detectCgroups,
  hierarchyOf,
  layoutFromMounts,
  parseCgroupMounts,
  type CgroupLayout,
} from "../../src/sandbox/cgroup-layout.js";
import {
  kernelLogShowsOomKill,
  parseCgroupNumber,
  parseKeyedFile,
  usageFromV1,
  usageFromV2,
  v1MemoryLimitReached,
} from "../../src/sandbox/cgroup-usage.js";
import {
  capLimits,
  DEFAULT_LIMITS,
  formatBytes,
  limitFailureMessage,
  limitsFromEnv,
  parseMemory,
  type StepLimits,
} from "../../src/sandbox/step-limits.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Asserts that `fn` throws a LimitError for `limit` whose message matches every pattern. */
function throwsLimit(fn: () => unknown, limit: string, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LimitError, `expected a LimitError, got ${String(e)}`);
    assert.equal(e.limit, limit);
    assert.equal(e.code, "STEP_LIMIT");
    assert.equal(e.fault, "user");
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

describe("parseMemory", () => {
  const good: [string, number][] = [
    ["1073741824", GiB],
    ["0", 0],
    ["10b", 10],
    ["10B", 10],
    ["100k", 100 * KiB],
    ["100kb", 100 * KiB],
    ["100KiB", 100 * KiB],
    ["512m", 512 * MiB],
    ["512M", 512 * MiB],
    ["512MB", 512 * MiB],
    ["4g", 4 * GiB],
    ["4G", 4 * GiB],
    ["2GiB", 2 * GiB],
    ["2gib", 2 * GiB],
    ["2 GiB", 2 * GiB],
    [" 64m ", 64 * MiB],
    ["1.5g", 1.5 * GiB],
    [".5g", 0.5 * GiB],
    ["1.", 1],
    ["2.7", 2],
    ["1t", 1024 * GiB],
  ];
  for (const [text, bytes] of good) {
    test(`${JSON.stringify(text)} is ${bytes} bytes`, () => assert.equal(parseMemory(text), bytes));
  }
  const bad = [
    "",
    " ",
    "abc",
    "-1",
    "-512m",
    "1x",
    "1.2.3",
    "2iB",
    "2ib",
    "g",
    "mb",
    "1e9",
    "0x10",
    "1 g b",
    "4gg",
    "Infinity",
    "NaN",
    "99999999t",
  ];
  for (const text of bad) {
    test(`${JSON.stringify(text)} is rejected with the input and examples in the message`, () => {
      throwsLimit(
        () => parseMemory(text),
        "memory",
        new RegExp(`invalid memory size ${JSON.stringify(text).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`),
        /e\.g\. 512m, 4g, 2GiB/,
      );
    });
  }
  test("the source of the value prefixes the message", () => {
    throwsLimit(
      () => parseMemory("lots", "STRATA_STEP_MEMORY"),
      "memory",
      /^STRATA_STEP_MEMORY: invalid memory size "lots"/,
    );
  });
});

describe("capLimits", () => {
  const max: StepLimits = { memoryBytes: 8 * GiB, pids: 8192, cpus: 2 };
  const defaults: StepLimits = { memoryBytes: 4 * GiB, pids: 4096, cpus: 2 };

  test("a step that asks for nothing gets the defaults", () => {
    assert.deepEqual(capLimits({}, max, defaults), defaults);
  });
  test("defaults above the operator's maximum are lowered to it, silently", () => {
    assert.deepEqual(capLimits({}, { memoryBytes: GiB, pids: 100, cpus: 0.5 }, defaults), {
      memoryBytes: GiB,
      pids: 100,
      cpus: 0.5,
    });
  });
  test("requests within the maximum (and equal to it) are granted as asked; the rest default", () => {
    assert.deepEqual(capLimits({ memoryBytes: 512 * MiB }, max, defaults), {
      memoryBytes: 512 * MiB,
      pids: 4096,
      cpus: 2,
    });
    assert.deepEqual(capLimits({ memoryBytes: 8 * GiB, pids: 8192, cpus: 1.5 }, max, defaults), {
      memoryBytes: 8 * GiB,
      pids: 8192,
      cpus: 1.5,
    });
  });
  test("a request above the maximum names the limit, both values and what to do", () => {
    throwsLimit(
      () => capLimits({ memoryBytes: 16 * GiB }, max, defaults),
      "memory",
      /memory limit of 16 GiB/,
      /maximum of 8 GiB/,
      /lower STRATA_STEP_MEMORY \(the build's memory limit\)/,
      /ask the operator/,
    );
    throwsLimit(
      () => capLimits({ pids: 10_000 }, max, defaults),
      "pids",
      /pids limit of 10000 pids/,
      /maximum of 8192 pids/,
      /STRATA_STEP_PIDS/,
    );
    throwsLimit(
      () => capLimits({ cpus: 3 }, max, defaults),
      "cpus",
      /cpus limit of 3 CPUs/,
      /maximum of 2 CPUs/,
      /STRATA_STEP_CPUS/,
    );
  });
  const invalid: [Partial<StepLimits>, string, RegExp][] = [
    [{ memoryBytes: 0 }, "memory", /greater than zero/],
    [{ memoryBytes: -1 }, "memory", /greater than zero/],
    [{ memoryBytes: NaN }, "memory", /finite number/],
    [{ memoryBytes: Infinity }, "memory", /finite number/],
    [{ memoryBytes: 1.5 * MiB * 10 + 0.5 }, "memory", /whole number of bytes/],
    [{ memoryBytes: MiB }, "memory", /at least 6 MiB/],
    [{ pids: 0 }, "pids", /greater than zero/],
    [{ pids: -5 }, "pids", /greater than zero/],
    [{ pids: 1.5 }, "pids", /whole number/],
    [{ pids: NaN }, "pids", /finite number/],
    [{ cpus: 0 }, "cpus", /greater than zero/],
    [{ cpus: 0.001 }, "cpus", /at least 0\.01/],
    [{ cpus: NaN }, "cpus", /finite number/],
    [{ cpus: "2" as unknown as number }, "cpus", /finite number/],
  ];
  for (const [req, limit, why] of invalid) {
    test(`${JSON.stringify(req, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v))} is invalid`, () => {
      throwsLimit(
        () => capLimits(req, max, defaults),
        limit,
        new RegExp(`invalid ${limit} limit`),
        why,
        /fix STRATA_STEP_/,
      );
    });
  }
  test("an invalid maximum is the operator's to fix", () => {
    throwsLimit(
      () => capLimits({}, { ...max, pids: 0 }, defaults),
      "pids",
      /service's maximum pids limit \(0\) is invalid/,
      /service's configuration/,
    );
  });
  test("DEFAULT_LIMITS fit a 2-core, 24 GiB builder and are valid", () => {
    assert.equal(DEFAULT_LIMITS.memoryBytes, 4 * GiB);
    assert.equal(DEFAULT_LIMITS.pids, 4096);
    assert.ok(DEFAULT_LIMITS.cpus >= 1 && Number.isInteger(DEFAULT_LIMITS.cpus));
    assert.deepEqual(capLimits({}, DEFAULT_LIMITS), DEFAULT_LIMITS);
  });
});

describe("limitsFromEnv", () => {
  test("reads STRATA_STEP_MEMORY, STRATA_STEP_PIDS and STRATA_STEP_CPUS; unset and empty ones are left out", () => {
    assert.deepEqual(limitsFromEnv({}), {});
    assert.deepEqual(limitsFromEnv({ STRATA_STEP_MEMORY: "512m", STRATA_STEP_PIDS: " 64 ", STRATA_STEP_CPUS: "1.5" }), {
      memoryBytes: 512 * MiB,
      pids: 64,
      cpus: 1.5,
    });
    assert.deepEqual(limitsFromEnv({ STRATA_STEP_MEMORY: "", STRATA_STEP_CPUS: ".5" }), { cpus: 0.5 });
  });
  test("a malformed value names the variable", () => {
    throwsLimit(
      () => limitsFromEnv({ STRATA_STEP_MEMORY: "big" }),
      "memory",
      /^STRATA_STEP_MEMORY: invalid memory size "big"/,
    );
    throwsLimit(
      () => limitsFromEnv({ STRATA_STEP_PIDS: "-3" }),
      "pids",
      /^STRATA_STEP_PIDS: invalid pids limit "-3"/,
      /e\.g\. 4096/,
    );
    throwsLimit(
      () => limitsFromEnv({ STRATA_STEP_CPUS: "two" }),
      "cpus",
      /^STRATA_STEP_CPUS: invalid cpus limit "two"/,
    );
  });
});

describe("limitFailureMessage", () => {
  const limits: StepLimits = { memoryBytes: 512 * MiB, pids: 64, cpus: 1 };
  test("no limit hit: no message", () => {
    assert.equal(
      limitFailureMessage({ oomKilled: false, pidsLimitHit: false, memoryMaxBytes: 100 * MiB, pidsMax: 3 }, limits),
      undefined,
    );
  });
  test("out of memory names the limit and how to raise it", () => {
    assert.equal(
      limitFailureMessage({ oomKilled: true, pidsLimitHit: false }, limits),
      "the step ran out of memory: it exceeded its memory limit of 512 MiB (raise it with STRATA_STEP_MEMORY, up to the service's maximum)",
    );
    assert.match(
      limitFailureMessage({ oomKilled: true, pidsLimitHit: false, memoryMaxBytes: 512 * MiB }, limits)!,
      /memory limit of 512 MiB, peak use 512 MiB \(raise/,
    );
  });
  test("the pids limit", () => {
    assert.equal(
      limitFailureMessage({ oomKilled: false, pidsLimitHit: true, pidsMax: 64 }, limits),
      "the step could not create more processes: the pids limit of 64 was reached (raise it with STRATA_STEP_PIDS, up to the service's maximum)",
    );
  });
  test("both limits: both said, memory first", () => {
    assert.match(
      limitFailureMessage({ oomKilled: true, pidsLimitHit: true }, limits)!,
      /^the step ran out of memory: .*; the step could not create more processes: /,
    );
  });
});

test("formatBytes", () => {
  assert.equal(formatBytes(100), "100 bytes");
  assert.equal(formatBytes(KiB), "1 KiB");
  assert.equal(formatBytes(64 * MiB), "64 MiB");
  assert.equal(formatBytes(1.5 * GiB), "1.5 GiB");
  assert.equal(formatBytes(4 * GiB), "4 GiB");
  assert.equal(formatBytes(GiB - 1), "1024 MiB");
  assert.equal(formatBytes(536866816), "512 MiB"); // a page-rounded limit reads as its round figure
});

describe("the kernel's files", () => {
  test("parseKeyedFile reads `key value` lines; max is Infinity; junk lines are skipped", () => {
    const m = parseKeyedFile("low 0\nhigh 12\nmax max\noom 1\n\nnot a line\nbad x\n");
    assert.deepEqual(
      [...m],
      [
        ["low", 0],
        ["high", 12],
        ["max", Infinity],
        ["oom", 1],
      ],
    );
    assert.equal(parseKeyedFile("").size, 0);
  });
  test("parseCgroupNumber reads one number or max", () => {
    assert.equal(parseCgroupNumber("16\n"), 16);
    assert.equal(parseCgroupNumber("max\n"), Infinity);
    assert.equal(parseCgroupNumber("-1\n"), -1);
    assert.equal(parseCgroupNumber("9223372036854771712\n"), 2 ** 63 - 4096);
    assert.equal(parseCgroupNumber(""), undefined);
    assert.equal(parseCgroupNumber("12 34"), undefined);
  });

  describe("v1", () => {
    const quiet = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
    test("oom_kill in memory.oom_control means killed; the peak comes from max_usage_in_bytes", () => {
      assert.deepEqual(
        usageFromV1({ oomControl: "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", maxUsageInBytes: "67108864\n" }),
        { oomKilled: true, memoryMaxBytes: 64 * MiB, pidsLimitHit: false },
      );
      assert.deepEqual(usageFromV1({ oomControl: quiet, maxUsageInBytes: "1234\n" }), {
        oomKilled: false,
        memoryMaxBytes: 1234,
        pidsLimitHit: false,
      });
    });
    test("under_oom (with the OOM killer disabled) counts; a kernel without oom_kill reads as not killed", () => {
      assert.equal(usageFromV1({ oomControl: "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n" }).oomKilled, true);
      assert.equal(usageFromV1({ oomControl: "oom_kill_disable 0\nunder_oom 0\n" }).oomKilled, false);
      assert.equal(usageFromV1({}).oomKilled, false);
    });
    test("pids: the parent's events stay 0 on v1, so a peak at the limit is the sign", () => {
      assert.deepEqual(usageFromV1({ oomControl: quiet, pidsEvents: ["max 0\n"], pidsPeak: "16\n", pidsMax: "16\n" }), {
        oomKilled: false,
        pidsLimitHit: true,
        pidsMax: 16,
      });
      assert.deepEqual(usageFromV1({ oomControl: quiet, pidsEvents: ["max 0\n"], pidsPeak: "15\n", pidsMax: "16\n" }), {
        oomKilled: false,
        pidsLimitHit: false,
        pidsMax: 15,
      });
    });
    test("pids: a refused fork in the leaf's events (read before runc removed it) counts", () => {
      assert.equal(
        usageFromV1({ pidsEvents: ["max 0\n", "max 3\n"], pidsPeak: "2\n", pidsMax: "16\n" }).pidsLimitHit,
        true,
      );
    });
    test("pids: no limit (max) never reads as hit, nor do missing files", () => {
      assert.equal(usageFromV1({ pidsEvents: ["max 0\n"], pidsPeak: "9000\n", pidsMax: "max\n" }).pidsLimitHit, false);
      assert.equal(usageFromV1({ pidsPeak: "16\n" }).pidsLimitHit, false);
    });
  });

  describe("v1 kernel log", () => {
    // As this host's kernel (6.18, cgroup v1) logged the hog of cgroup-runc.test.ts, through /dev/kmsg and dmesg.
    const id = "strata-23749-mxdf9797-9828f8c4";
    const kmsg =
      "6,1771,686312948,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=ctr,mems_allowed=0," +
      `oom_memcg=/strata/${id},task_memcg=/strata/${id}/ctr,task=tail,pid=23974,uid=0\n`;
    const dmesg = `[  686.312948] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=ctr,mems_allowed=0,oom_memcg=/strata/${id},task_memcg=/strata/${id}/ctr,task=tail,pid=23974,uid=0`;
    test("an OOM kill limited by our cgroup is found, in /dev/kmsg and dmesg form", () => {
      assert.equal(kernelLogShowsOomKill(kmsg, id), true);
      assert.equal(kernelLogShowsOomKill(`noise\n${dmesg}\nmore noise`, id), true);
    });
    test("below a bind-mounted hierarchy root, or limited by a cgroup below ours", () => {
      assert.equal(kernelLogShowsOomKill(kmsg.replaceAll("=/strata/", "=/docker/abc/strata/"), id), true);
      assert.equal(
        kernelLogShowsOomKill(kmsg.replace(`oom_memcg=/strata/${id}`, `oom_memcg=/strata/${id}/ctr`), id),
        true,
      );
    });
    test("other cgroups' kills, ids that merely share a prefix, and global OOMs are not ours", () => {
      assert.equal(kernelLogShowsOomKill(kmsg, "strata-23749-mxdf9797"), false);
      assert.equal(kernelLogShowsOomKill(kmsg.replaceAll(id, `${id}0`), id), false);
      assert.equal(kernelLogShowsOomKill(kmsg.replace(`oom_memcg=/strata/${id}`, "global_oom"), id), false);
      assert.equal(kernelLogShowsOomKill(`Memory cgroup stats for /strata/${id}:`, id), false);
      assert.equal(kernelLogShowsOomKill("", id), false);
    });
    test("v1MemoryLimitReached: a counted failure, or a peak at the memory or memsw limit", () => {
      const limit = String(64 * MiB);
      // What this host (6.18) shows after an OOM kill with memsw = memory limit: no failcnt anywhere, a peak at the limit.
      assert.equal(
        v1MemoryLimitReached({
          failcnt: "0\n",
          maxUsageInBytes: `${limit}\n`,
          limitInBytes: `${limit}\n`,
          memswMaxUsageInBytes: `${limit}\n`,
          memswLimitInBytes: `${limit}\n`,
        }),
        true,
      );
      assert.equal(
        v1MemoryLimitReached({ failcnt: "3\n", maxUsageInBytes: "1000\n", limitInBytes: `${limit}\n` }),
        true,
      );
      // With swap, memory+swap can reach its limit while RAM alone stays below.
      assert.equal(
        v1MemoryLimitReached({
          failcnt: "0",
          maxUsageInBytes: "1000",
          limitInBytes: limit,
          memswMaxUsageInBytes: limit,
          memswLimitInBytes: limit,
        }),
        true,
      );
      assert.equal(
        v1MemoryLimitReached({ failcnt: "0", maxUsageInBytes: String(64 * MiB - 4096), limitInBytes: limit }),
        false,
      );
      assert.equal(v1MemoryLimitReached({}), false);
    });
    test("usageFromV1 takes the kernel log's word when the parent's oom_kill stays 0", () => {
      const quiet = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
      assert.equal(usageFromV1({ oomControl: quiet, kernelLogOomKill: true }).oomKilled, true);
      assert.equal(usageFromV1({ oomControl: quiet, kernelLogOomKill: false }).oomKilled, false);
    });
  });

  describe("v2", () => {
    const events = (o: Record<string, number>) =>
      Object.entries({ low: 0, high: 0, max: 0, oom: 0, oom_kill: 0, oom_group_kill: 0, ...o })
        .map(([k, v]) => `${k} ${v}\n`)
        .join("");
    test("oom_kill in memory.events means killed; the peak comes from memory.peak", () => {
      assert.deepEqual(
        usageFromV2({ memoryEvents: events({ max: 40, oom: 1, oom_kill: 1 }), memoryPeak: "67108864\n" }),
        { oomKilled: true, memoryMaxBytes: 64 * MiB, pidsLimitHit: false },
      );
    });
    test("hitting memory.max without an OOM (reclaim sufficed) is not a kill", () => {
      assert.equal(usageFromV2({ memoryEvents: events({ max: 1200 }) }).oomKilled, false);
      assert.equal(usageFromV2({ memoryEvents: events({}) }).oomKilled, false);
    });
    test("oom alone (memory_localevents keeps oom_kill on the leaf) and oom_group_kill count", () => {
      assert.equal(usageFromV2({ memoryEvents: events({ oom: 1 }) }).oomKilled, true);
      assert.equal(usageFromV2({ memoryEvents: events({ oom_group_kill: 1 }) }).oomKilled, true);
    });
    test("an older kernel's memory.events (no oom_group_kill) and no memory.peak", () => {
      assert.deepEqual(usageFromV2({ memoryEvents: "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n" }), {
        oomKilled: true,
        pidsLimitHit: false,
      });
    });
    test("pids.events max > 0 on our parent means a fork was refused", () => {
      assert.deepEqual(
        usageFromV2({ memoryEvents: events({}), pidsEvents: ["max 7\n"], pidsPeak: "64\n", pidsMax: "64\n" }),
        { oomKilled: false, pidsLimitHit: true, pidsMax: 64 },
      );
      assert.equal(usageFromV2({ pidsEvents: ["max 0\n"], pidsPeak: "3\n", pidsMax: "64\n" }).pidsLimitHit, false);
      assert.equal(usageFromV2({ pidsEvents: ["max 0\n"], pidsPeak: "64\n", pidsMax: "64\n" }).pidsLimitHit, true);
    });
  });
});

// This host's /proc/self/mountinfo (Debian 12, cgroup v1 hybrid: cpu and cpuacct on separate hierarchies).
const HYBRID = `23 1 254:1 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
// A systemd host on v1 (co-mounted cpu,cpuacct and net_cls,net_prio; optional fields before the dash), with the
// memory hierarchy also bind-mounted (a subtree) elsewhere.
const SYSTEMD_V1 = `25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
99 40 0:30 /docker/abc /var/lib/some\\040place/memory rw,relatime - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
33 25 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
`;
// A pure v2 host (Debian 12 / Ubuntu 22.04 and later).
const PURE_V2 = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
28 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

describe("where the hierarchies are", () => {
  test("parseCgroupMounts finds cgroup and cgroup2 mounts with their controllers", () => {
    const mounts = parseCgroupMounts(HYBRID);
    assert.equal(mounts.length, 10);
    assert.deepEqual(mounts[0], {
      mountPoint: "/sys/fs/cgroup/cpu",
      fsType: "cgroup",
      root: "/",
      controllers: ["cpu"],
    });
    assert.deepEqual(mounts[8], {
      mountPoint: "/sys/fs/cgroup/systemd",
      fsType: "cgroup",
      root: "/",
      controllers: ["name=systemd"],
    });
    assert.deepEqual(mounts[9], {
      mountPoint: "/sys/fs/cgroup/unified",
      fsType: "cgroup2",
      root: "/",
      controllers: [],
    });
    const sd = parseCgroupMounts(SYSTEMD_V1);
    assert.deepEqual(sd.find((m) => m.mountPoint === "/sys/fs/cgroup/cpu,cpuacct")?.controllers, ["cpu", "cpuacct"]);
    assert.deepEqual(sd.find((m) => m.mountPoint === "/sys/fs/cgroup/systemd")?.controllers, ["name=systemd"]);
    assert.deepEqual(
      sd.find((m) => m.root === "/docker/abc"),
      { mountPoint: "/var/lib/some place/memory", fsType: "cgroup", root: "/docker/abc", controllers: ["memory"] },
    );
    assert.deepEqual(parseCgroupMounts(PURE_V2), [
      { mountPoint: "/sys/fs/cgroup", fsType: "cgroup2", root: "/", controllers: [] },
    ]);
    assert.deepEqual(parseCgroupMounts(""), []);
  });

  test("a hybrid host is v1, and lists every hierarchy (the named and the unified one too) for removal", () => {
    const layout = layoutFromMounts(parseCgroupMounts(HYBRID));
    assert.equal(layout.version, 1);
    assert.equal(layout.root, "/sys/fs/cgroup");
    assert.deepEqual(
      layout.hierarchies.map((h) => h.dir).sort(),
      ["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "systemd", "unified"].map(
        (d) => `/sys/fs/cgroup/${d}`,
      ),
    );
    assert.equal(hierarchyOf(layout, "memory")?.dir, "/sys/fs/cgroup/memory");
  });

  test("co-mounted controllers share a hierarchy; a bind-mounted subtree of one is not listed again", () => {
    const layout = layoutFromMounts(parseCgroupMounts(SYSTEMD_V1));
    assert.equal(layout.version, 1);
    assert.equal(hierarchyOf(layout, "cpu")?.dir, "/sys/fs/cgroup/cpu,cpuacct");
    assert.equal(hierarchyOf(layout, "cpuacct")?.dir, "/sys/fs/cgroup/cpu,cpuacct");
    assert.equal(hierarchyOf(layout, "memory")?.dir, "/sys/fs/cgroup/memory");
    assert.equal(layout.hierarchies.filter((h) => h.controllers.includes("memory")).length, 1);
    assert.equal(layout.hierarchies.length, 6);
  });

  test("a pure v2 host is v2, with the controllers of its root", () => {
    assert.deepEqual(
      layoutFromMounts(parseCgroupMounts(PURE_V2), [
        "cpuset",
        "cpu",
        "io",
        "memory",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
      ]),
      {
        version: 2,
        root: "/sys/fs/cgroup",
        hierarchies: [
          { dir: "/sys/fs/cgroup", controllers: ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"] },
        ],
      },
    );
  });

  test("no cgroup mount at all is an error that says what to mount", () => {
    assert.throws(
      () => layoutFromMounts([]),
      (e: unknown) =>
        e instanceof CgroupError &&
        e.path === "/proc/self/mountinfo" &&
        /mount -t cgroup2 none \/sys\/fs\/cgroup/.test(e.message),
    );
  });

  test("detectCgroups on this host agrees with its mounts", async () => {
    const layout = await detectCgroups();
    if (existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes")) {
      // This machine: cgroup v1, hybrid.
      assert.equal(layout.version, 1);
      assert.equal(layout.root, "/sys/fs/cgroup");
      for (const c of ["memory", "pids", "cpu"]) assert.equal(hierarchyOf(layout, c)?.dir, `/sys/fs/cgroup/${c}`);
      assert.ok(layout.hierarchies.some((h) => h.dir === "/sys/fs/cgroup/unified"));
    } else {
      assert.equal(layout.version, 2);
      assert.deepEqual(
        layout.hierarchies[0]!.controllers,
        readFileSync(`${layout.root}/cgroup.controllers`, "utf8").trim().split(/\s+/),
      );
    }
  });
});

describe("stepCgroupPlan", () => {
  const limits: StepLimits = { memoryBytes: 64 * MiB, pids: 16, cpus: 1.5 };

  test("v1: strata/<id> in memory, pids and cpu; memsw only if present; a CFS quota", () => {
    const layout = layoutFromMounts(parseCgroupMounts(HYBRID));
    assert.deepEqual(stepCgroupPlan(layout, "strata-1-a", limits), [
      { op: "mkdir", path: "/sys/fs/cgroup/memory/strata", existOk: true },
      { op: "mkdir", path: "/sys/fs/cgroup/memory/strata/strata-1-a" },
      { op: "mkdir", path: "/sys/fs/cgroup/pids/strata", existOk: true },
      { op: "mkdir", path: "/sys/fs/cgroup/pids/strata/strata-1-a" },
      { op: "mkdir", path: "/sys/fs/cgroup/cpu/strata", existOk: true },
      { op: "mkdir", path: "/sys/fs/cgroup/cpu/strata/strata-1-a" },
      { op: "write", path: "/sys/fs/cgroup/memory/strata/strata-1-a/memory.limit_in_bytes", value: "67108864" },
      {
        op: "write",
        path: "/sys/fs/cgroup/memory/strata/strata-1-a/memory.memsw.limit_in_bytes",
        value: "67108864",
        ifExists: true,
      },
      { op: "write", path: "/sys/fs/cgroup/pids/strata/strata-1-a/pids.max", value: "16" },
      { op: "write", path: "/sys/fs/cgroup/cpu/strata/strata-1-a/cpu.cfs_period_us", value: "100000" },
      { op: "write", path: "/sys/fs/cgroup/cpu/strata/strata-1-a/cpu.cfs_quota_us", value: "150000" },
    ]);
  });

  test("v1 with cpu,cpuacct co-mounted writes into that hierarchy", () => {
    const ops = stepCgroupPlan(layoutFromMounts(parseCgroupMounts(SYSTEMD_V1)), "x", { ...limits, cpus: 0.01 });
    assert.ok(ops.some((o) => o.op === "mkdir" && o.path === "/sys/fs/cgroup/cpu,cpuacct/strata/x"));
    assert.deepEqual(ops.at(-1), {
      op: "write",
      path: "/sys/fs/cgroup/cpu,cpuacct/strata/x/cpu.cfs_quota_us",
      value: "1000",
    });
  });

  test("v1 without a cpu hierarchy sets no CPU limit", () => {
    const layout: CgroupLayout = {
      version: 1,
      root: "/c",
      hierarchies: [
        { dir: "/c/memory", controllers: ["memory"] },
        { dir: "/c/pids", controllers: ["pids"] },
      ],
    };
    assert.ok(!stepCgroupPlan(layout, "x", limits).some((o) => o.path.includes("cpu")));
  });

  test("v2: controllers enabled from the root down to strata/<id>, then the limits there", () => {
    const layout = layoutFromMounts(parseCgroupMounts(PURE_V2), ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"]);
    assert.deepEqual(stepCgroupPlan(layout, "strata-1-a", limits), [
      { op: "write", path: "/sys/fs/cgroup/cgroup.subtree_control", value: "+memory +pids +cpu" },
      { op: "mkdir", path: "/sys/fs/cgroup/strata", existOk: true },
      { op: "write", path: "/sys/fs/cgroup/strata/cgroup.subtree_control", value: "+memory +pids +cpu" },
      { op: "mkdir", path: "/sys/fs/cgroup/strata/strata-1-a" },
      { op: "write", path: "/sys/fs/cgroup/strata/strata-1-a/cgroup.subtree_control", value: "+memory +pids +cpu" },
      { op: "write", path: "/sys/fs/cgroup/strata/strata-1-a/memory.max", value: "67108864" },
      { op: "write", path: "/sys/fs/cgroup/strata/strata-1-a/memory.swap.max", value: "0", ifExists: true },
      { op: "write", path: "/sys/fs/cgroup/strata/strata-1-a/pids.max", value: "16" },
      { op: "write", path: "/sys/fs/cgroup/strata/strata-1-a/cpu.max", value: "150000 100000" },
    ]);
  });

  test("v2 enables only the controllers the root offers", () => {
    const layout = layoutFromMounts(parseCgroupMounts(PURE_V2), ["memory", "pids"]);
    const ops = stepCgroupPlan(layout, "x", { ...limits, cpus: 2 });
    assert.deepEqual(ops[0], { op: "write", path: "/sys/fs/cgroup/cgroup.subtree_control", value: "+memory +pids" });
    assert.ok(!ops.some((o) => o.path.endsWith("cpu.max")));
  });
});

describe("createStepCgroup refuses before touching the host", () => {
  const limits: StepLimits = { memoryBytes: 64 * MiB, pids: 16, cpus: 1 };
  test("an id that is not one path component", async () => {
    for (const id of ["", "../etc", "a/b", ".hidden", "a b"]) {
      await assert.rejects(
        createStepCgroup(id, limits),
        (e: unknown) => e instanceof CgroupError && /invalid step cgroup id/.test(e.message),
      );
    }
  });
  test("a host without a memory or pids controller", async () => {
    const v2: CgroupLayout = {
      version: 2,
      root: "/nonexistent/cg",
      hierarchies: [{ dir: "/nonexistent/cg", controllers: ["cpu", "pids"] }],
    };
    await assert.rejects(
      createStepCgroup("strata-1-x", limits, v2),
      (e: unknown) =>
        e instanceof CgroupError &&
        e.path === "/nonexistent/cg/cgroup.controllers" &&
        /memory controller is not available/.test(e.message) &&
        /Delegate=yes/.test(e.message),
    );
    const v1: CgroupLayout = {
      version: 1,
      root: "/nonexistent/cg",
      hierarchies: [{ dir: "/nonexistent/cg/memory", controllers: ["memory"] }],
    };
    await assert.rejects(
      createStepCgroup("strata-1-x", limits, v1),
      (e: unknown) =>
        e instanceof CgroupError &&
        /v1 pids controller is not mounted/.test(e.message) &&
        /mount -t cgroup -o pids/.test(e.message),
    );
  });
  test("a failed write names the path and leaves nothing behind", async () => {
    // A layout pointing at a directory that is not a cgroup filesystem: mkdir works, the limit file does not exist.
    const { mkdtempSync, readdirSync, rmSync } = await import("node:fs");
    const dir = mkdtempSync("/tmp/strata-cg-fake-");
    try {
      const layout: CgroupLayout = { version: 1, root: dir, hierarchies: [{ dir, controllers: ["memory", "pids"] }] };
      await assert.rejects(
        createStepCgroup("strata-1-x", limits, layout),
        (e: unknown) =>
          e instanceof CgroupError &&
          e.path === `${dir}/strata/strata-1-x/memory.limit_in_bytes` &&
          /could not write "67108864" to/.test(e.message) &&
          /ENOENT/.test(e.message),
      );
      assert.deepEqual(readdirSync(`${dir}/strata`), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test("ownerAlive: ids of dead builders are not alive; foreign names always are", () => {
  assert.equal(ownerAlive(`strata-${process.pid}-abc-123`), true);
  assert.equal(ownerAlive("strata-999999999-abc-123"), false);
  assert.equal(ownerAlive("buildkit-123"), true);
});
