// The sandbox's pure parts: the runtime spec, the seccomp profile, the egress guard's rules, policies and timeouts.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { defaultNetwork, withDefaultNetwork } from "../../src/engine/network.js";
import { guardRules, resolversOf } from "../../src/sandbox/egress-guard.js";
import { effectiveTimeout, parseDuration, policyFromEnv, servicePolicy } from "../../src/sandbox/runc.js";
import { DEFAULT_CAPABILITIES, MASKED_PATHS, runtimeSpec, type SandboxSpec } from "../../src/sandbox/runtime-spec.js";
import { DOCKER_DEFAULT_SECCOMP } from "../../src/sandbox/seccomp-profile.js";
import { REPO_ROOT } from "../support/strata.js";

const spec: SandboxSpec = {
  rootfs: "/r",
  argv: ["sh"],
  env: [],
  cwd: "/",
  uid: 0,
  gid: 0,
  additionalGids: [],
  mounts: [],
  hostname: "h",
};
type Spec = {
  process: { capabilities: Record<string, string[]>; oomScoreAdj?: number };
  linux: {
    namespaces: { type: string; path?: string }[];
    maskedPaths: string[];
    seccomp: unknown;
    cgroupsPath?: string;
  };
};

describe("runtimeSpec", () => {
  test("drops CAP_NET_RAW, keeps Docker's other defaults, and gives non-root users none", () => {
    const s = runtimeSpec(spec) as unknown as Spec;
    assert.ok(!s.process.capabilities.bounding!.includes("CAP_NET_RAW"));
    assert.ok(s.process.capabilities.effective!.includes("CAP_CHOWN"));
    assert.equal(DEFAULT_CAPABILITIES.length, 13);
    const user = runtimeSpec({ ...spec, uid: 1000 }) as unknown as Spec;
    assert.deepEqual(user.process.capabilities.effective, []);
  });

  test("applies Docker's seccomp profile and masks powercap and Docker's paths", () => {
    const s = runtimeSpec(spec) as unknown as Spec;
    assert.equal(s.linux.seccomp, DOCKER_DEFAULT_SECCOMP);
    for (const p of ["/sys/devices/virtual/powercap", "/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list"])
      assert.ok(MASKED_PATHS.includes(p), p);
    assert.deepEqual(s.linux.maskedPaths, MASKED_PATHS);
  });

  test("network: sandbox joins the prepared namespace, none makes an empty one, host shares the host's", () => {
    const ns = (x: SandboxSpec, ctx = {}) =>
      (runtimeSpec(x, ctx) as unknown as Spec).linux.namespaces.filter((n) => n.type === "network");
    assert.deepEqual(ns(spec, { netnsPath: "/proc/9/ns/net" }), [{ type: "network", path: "/proc/9/ns/net" }]);
    assert.deepEqual(ns({ ...spec, network: "none" }), [{ type: "network" }]);
    assert.deepEqual(ns({ ...spec, network: "host" }), []);
    assert.deepEqual(ns(spec), [{ type: "network" }], "no prepared namespace: never the host's");
  });

  test("cgroupsPath and oomScoreAdj come from the context", () => {
    const s = runtimeSpec(spec, { cgroupsPath: "/strata/x/ctr", oomScoreAdj: 500 }) as unknown as Spec;
    assert.equal(s.linux.cgroupsPath, "/strata/x/ctr");
    assert.equal(s.process.oomScoreAdj, 500);
  });
});

describe("seccomp profile", () => {
  const allowed = new Set(
    DOCKER_DEFAULT_SECCOMP.syscalls.filter((r) => r.action === "SCMP_ACT_ALLOW" && !r.args).flatMap((r) => r.names),
  );
  test("denies by default with EPERM, on x86_64 and its 32-bit ABIs", () => {
    assert.equal(DOCKER_DEFAULT_SECCOMP.defaultAction, "SCMP_ACT_ERRNO");
    assert.equal(DOCKER_DEFAULT_SECCOMP.defaultErrnoRet, 1);
    assert.deepEqual(DOCKER_DEFAULT_SECCOMP.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
  });
  test("allows what builds use and not what escapes need", () => {
    for (const n of [
      "read",
      "write",
      "openat",
      "execve",
      "chown",
      "fchownat",
      "setuid",
      "chroot",
      "mknodat",
      "socket",
      "ptrace",
    ])
      assert.ok(allowed.has(n) || DOCKER_DEFAULT_SECCOMP.syscalls.some((r) => r.names.includes(n)), n);
    for (const n of [
      "unshare",
      "setns",
      "mount",
      "umount2",
      "keyctl",
      "add_key",
      "request_key",
      "bpf",
      "init_module",
      "kexec_load",
      "open_by_handle_at",
      "perf_event_open",
      "reboot",
      "pivot_root",
    ]) {
      assert.ok(
        !DOCKER_DEFAULT_SECCOMP.syscalls.some((r) => r.action === "SCMP_ACT_ALLOW" && r.names.includes(n)),
        `${n} is allowed`,
      );
    }
  });
  test("clone is allowed only without namespace flags; clone3 fails with ENOSYS so libc falls back to clone", () => {
    const clone = DOCKER_DEFAULT_SECCOMP.syscalls.find((r) => r.names.includes("clone"))!;
    assert.deepEqual(clone.args, [{ index: 0, value: 2114060288, op: "SCMP_CMP_MASKED_EQ" }]);
    const clone3 = DOCKER_DEFAULT_SECCOMP.syscalls.find((r) => r.names.includes("clone3"))!;
    assert.equal(clone3.action, "SCMP_ACT_ERRNO");
    assert.equal(clone3.errnoRet, 38);
  });
  test("the generator resolved it for the capabilities the spec grants", () => {
    const gen = readFileSync(path.join(REPO_ROOT, "scripts/gen-seccomp-profile.mjs"), "utf8");
    const caps = /new Set\(\[([\s\S]*?)\]\)/.exec(gen)![1]!.match(/CAP_[A-Z_]+/g)!;
    assert.deepEqual([...caps].sort(), [...DEFAULT_CAPABILITIES].sort());
  });
});

describe("egress guard rules", () => {
  // Addresses here are rule text and parser input only: nothing is ever sent to them.
  test("reject the host's own addresses, metadata and operator ranges for slirp4netns's group only; DNS to the resolvers stays", () => {
    const rules = guardRules({
      gid: 4242,
      resolvers: ["127.0.0.53", "10.0.0.2", "fe80::1"],
      extraDeny: ["10.0.0.0/8", "fd00::/8"],
    });
    assert.match(rules, /^table inet strata_sandbox\ndelete table inet strata_sandbox\n/);
    assert.match(
      rules,
      /meta skgid 4242 ip daddr \{ 127\.0\.0\.53, 10\.0\.0\.2 \} meta l4proto \{ tcp, udp \} th dport 53 accept/,
    );
    assert.match(
      rules,
      /meta skgid 4242 fib daddr type \{ local, broadcast, multicast, anycast \} meta l4proto tcp reject with tcp reset/,
    );
    assert.match(rules, /ip daddr \{[^}]*169\.254\.0\.0\/16[^}]*10\.0\.0\.0\/8 \}/);
    assert.match(rules, /ip6 daddr \{[^}]*fd00:ec2::254\/128[^}]*fd00::\/8 \}/);
    for (const line of rules.split("\n").filter((l) => /accept|reject/.test(l) && !/policy/.test(l)))
      assert.match(line, /meta skgid 4242/);
  });
  test("refuse anything that is not an address (nothing reaches nft unchecked)", () => {
    for (const bad of ["10.0.0.0/8; flush ruleset", "}", "example.com", ""]) {
      assert.throws(
        () => guardRules({ gid: 1, resolvers: [], extraDeny: [bad] }),
        /STRATA_SANDBOX_DENY: .* is not an IPv4 or IPv6 address or CIDR/,
      );
    }
  });
  test("resolversOf reads nameserver lines", () => {
    assert.deepEqual(resolversOf("# c\nnameserver 10.0.0.2\nsearch x\n nameserver fe80::1%eth0\noptions ndots:1\n"), [
      "10.0.0.2",
      "fe80::1",
    ]);
  });
});

describe("policies", () => {
  test("parseDuration", () => {
    assert.equal(parseDuration("90s", "x"), 90_000);
    assert.equal(parseDuration("30m", "x"), 1_800_000);
    assert.equal(parseDuration("2h", "x"), 7_200_000);
    assert.equal(parseDuration("1500ms", "x"), 1500);
    assert.equal(parseDuration("5", "x"), 5000);
    for (const bad of ["", "0s", "-1s", "1d", "abc"])
      assert.throws(() => parseDuration(bad, "--step-timeout"), /--step-timeout/);
  });
  test("a step's timeout: its own, else the default, never above the maximum", () => {
    const p = {
      allowNetworkHost: false,
      defaultNetwork: "sandbox" as const,
      defaultTimeoutMs: 3000,
      maxTimeoutMs: 5000,
    };
    assert.equal(effectiveTimeout(undefined, p), 3000);
    assert.equal(effectiveTimeout(1000, p), 1000);
    assert.equal(effectiveTimeout(100_000, p), 5000);
    assert.equal(effectiveTimeout(undefined, {}), undefined);
  });
  test("a service refuses the host network unless granted, and has a default and maximum timeout", () => {
    const p = servicePolicy({}, {});
    assert.deepEqual(
      { ...p, defaultLimits: undefined, maxLimits: undefined },
      {
        allowNetworkHost: false,
        defaultNetwork: "sandbox",
        defaultTimeoutMs: 3_600_000,
        maxTimeoutMs: 14_400_000,
        defaultLimits: undefined,
        maxLimits: undefined,
      },
    );
    assert.equal(p.defaultLimits.memoryBytes, 4 * 1024 ** 3);
    assert.deepEqual(
      p.maxLimits,
      p.defaultLimits,
      "a service step may not ask for more than the defaults unless the operator says so",
    );
    const raised = servicePolicy(
      {},
      { STRATA_STEP_MEMORY: "1g", STRATA_MAX_STEP_MEMORY: "8g", STRATA_MAX_STEP_PIDS: "100" },
    );
    assert.equal(raised.defaultLimits.memoryBytes, 1024 ** 3);
    assert.equal(raised.maxLimits.memoryBytes, 8 * 1024 ** 3);
    assert.equal(raised.defaultLimits.pids, 100, "the default never exceeds the maximum");
    assert.equal(servicePolicy({ allowNetworkHost: true }, {}).allowNetworkHost, true);
    assert.equal(servicePolicy({ stepTimeoutMs: 10_000, maxStepTimeoutMs: 5000 }, {}).defaultTimeoutMs, 5000);
    assert.equal(policyFromEnv({}).allowNetworkHost, true);
    assert.throws(() => policyFromEnv({ STRATA_NETWORK: "bridge" }), /STRATA_NETWORK="bridge"/);
  });
  test("a default network other than the sandbox is written into RUNs that name none (and so into keys)", () => {
    const ins = [
      { op: "RUN" as const, command: "a" },
      { op: "RUN" as const, command: "b", network: "none" as const },
      { op: "ENV" as const, vars: [["A", "1"]] as [string, string][] },
    ];
    assert.deepEqual(withDefaultNetwork(ins, "sandbox"), ins);
    assert.deepEqual(withDefaultNetwork(ins, "host"), [{ op: "RUN", command: "a", network: "host" }, ins[1], ins[2]]);
    assert.equal(defaultNetwork({}), "sandbox");
    assert.throws(() => defaultNetwork({ STRATA_NETWORK: "x" }), /expected sandbox, none or host/);
  });
});
