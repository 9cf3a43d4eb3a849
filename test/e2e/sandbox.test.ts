// The build sandbox, attacked from inside a RUN step with default settings (issue 9): seccomp on, no CAP_NET_RAW, no
// new user namespaces, no route to the host's loopback, and the host network only as an entitlement. Every probe
// targets a server this test runs on host loopback, reached either directly (127.0.0.1: the step's own loopback, or
// the host's with the host network) or through SLIRP_GATEWAY — the gateway address inside the step's own network
// namespace, which the build under test creates, and which slirp4netns would map to host loopback. No probe names any
// other address.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { SLIRP_GATEWAY } from "../../src/sandbox/netns.js";
import { RUNC_ROOT } from "../../src/sandbox/runc.js";
import { SECRETS_ROOT } from "../../src/sandbox/secret-dir.js";
import { spawnServe } from "../support/service.js";
import { buildJson, nonce as nonceTag, scratchSpace, SHARED_HOME, strata, strataSpawn } from "../support/strata.js";

const execFileP = promisify(execFile);

const space = scratchSpace();
after(() => space.cleanup());

let server: http.Server;
let port = 0;
let hits = 0;
before(async () => {
  server = http.createServer((_req, res) => {
    hits++;
    res.end("reached-the-host\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** Shell that tries an HTTP GET of the host's test server at `addr` and prints `<label>=reached|blocked`. */
function probe(label: string, addr: string): string {
  return `(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${addr} ${port} 2>/dev/null | grep -q reached-the-host && echo ${label}=reached || echo ${label}=blocked)`;
}

const TOOLS = `runCommands("ln -sf busybox /bin/nc && ln -sf busybox /bin/unshare && ln -sf busybox /bin/cut")`;

describe("sandbox: a RUN step with default settings", () => {
  test("has seccomp, no CAP_NET_RAW, cannot unshare a user namespace and cannot reach host loopback", {
    timeout: 120_000,
  }, async () => {
    const hitsBefore = hits;
    const { def } = await space.project(
      `export default base.${TOOLS}.runCommands(${JSON.stringify(
        [
          "grep -E '^(Seccomp|CapEff):' /proc/self/status",
          "echo uid_map=$(cat /proc/self/uid_map)",
          "(unshare -Ur true 2>/dev/null && echo unshare=allowed || echo unshare=refused)",
          probe("loopback", "127.0.0.1"),
          probe("gateway", SLIRP_GATEWAY),
        ].join("; "),
      )});\n`,
    );
    const built = await buildJson(def);
    const log = built.stderr;
    assert.match(log, /Seccomp:\s+2/, log);
    const capEff = /CapEff:\s+([0-9a-f]+)/.exec(log);
    assert.ok(capEff, log);
    const caps = BigInt(`0x${capEff[1]}`);
    assert.equal(caps & (1n << 13n), 0n, `CAP_NET_RAW (bit 13) is in CapEff ${capEff[1]}`);
    assert.notEqual(caps & 1n, 0n, "CAP_CHOWN should stay (package managers need it)");
    const uidMap = /uid_map=\s*(\d+)\s+(\d+)\s+(\d+)/.exec(log);
    assert.ok(uidMap, log);
    assert.equal(uidMap[1], "0");
    assert.notEqual(uidMap[2], "0", "container root is host root (identity uid_map)");
    assert.equal(uidMap[3], "65536");
    assert.match(log, /unshare=refused/);
    assert.match(log, /loopback=blocked/);
    assert.match(log, /gateway=blocked/);
    assert.equal(hits, hitsBefore, "the host's loopback server was reached from a sandboxed step");
  });

  test("with network host (the entitlement a local step may ask for) reaches host loopback: the probe can tell", {
    timeout: 120_000,
  }, async () => {
    const hitsBefore = hits;
    const { def } = await space.project(
      `export default base.${TOOLS}.runCommands(${JSON.stringify(probe("loopback", "127.0.0.1"))}, { network: "host" });\n`,
    );
    const built = await buildJson(def);
    assert.match(built.stderr, /loopback=reached/, built.stderr);
    assert.ok(hits > hitsBefore);
  });

  test("STRATA_NETWORK=none gives steps loopback only; a bad value is a clear error", {
    timeout: 120_000,
  }, async () => {
    const { def } = await space.project(
      `export default base.${TOOLS}.runCommands("echo ifaces=$(ls /sys/class/net)");\n`,
    );
    const built = await buildJson(def, [], { env: { STRATA_NETWORK: "none" } });
    assert.match(built.stderr, /ifaces=lo\n/, built.stderr);
    const bad = await strata(["build", def], { env: { STRATA_NETWORK: "bridge" } });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /STRATA_NETWORK="bridge": expected sandbox, none or host/);
  });
});

describe("sandbox: limits", () => {
  test("a step over its memory limit fails with a message naming the limit; one over its pids limit too", {
    timeout: 120_000,
  }, async () => {
    const { def } = await space.project(
      `export default base.runCommands("head -c 300m /dev/zero | busybox tail > /dev/null");\n`,
    );
    const r = await strata(["build", def], { env: { STRATA_STEP_MEMORY: "64m" } });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /ran out of memory: it exceeded its memory limit of 64 MiB/, r.stderr);
    const forks = await space.project(
      `export default base.runCommands("i=0; while [ $i -lt 60 ]; do sleep 5 & i=$((i+1)); done; wait");\n`,
    );
    const p = await strata(["build", forks.def], { env: { STRATA_STEP_PIDS: "20" } });
    assert.equal(p.code, 1, p.stderr);
    assert.match(p.stderr, /could not create more processes: the pids limit of 20 was reached/, p.stderr);
  });

  test("a limit above the builder's maximum is refused before anything runs", { timeout: 60_000 }, async () => {
    const { def } = await space.project(`export default base.runCommands("true");\n`);
    const r = await strata(["build", def], { env: { STRATA_STEP_PIDS: "100", STRATA_MAX_STEP_PIDS: "50" } });
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /pids limit of 100 pids, above this service's maximum of 50 pids; lower STRATA_STEP_PIDS/,
      r.stderr,
    );
    assert.equal(r.sandboxes, 0, "nothing ran");
  });
});

describe("sandbox: lifetime", () => {
  test("kill -9 of the builder leaves no running container of its build 2 s later, nor its secret files after the next build", {
    timeout: 120_000,
  }, async () => {
    // The step holds a secret file (a tmpfs under SECRETS_ROOT while it runs) when its builder dies.
    const { def } = await space.project(
      `export default base.dockerfileCommands(["RUN --mount=type=secret,id=tok echo started; sleep 100000"], { secrets: [Secret.fromObject({ tok: "kill-${nonceTag()}" })] });\n`,
    );
    const child = strataSpawn(["build", def]);
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const prefix = `strata-${child.pid}-`;
    const containers = async () => {
      const r = await execFileP("runc", ["--root", RUNC_ROOT, "list", "--format", "json"]).catch(() => ({
        stdout: "null",
      }));
      return ((JSON.parse(r.stdout || "null") as { id: string; status: string; pid: number }[] | null) ?? []).filter(
        (c) => c.id.startsWith(prefix),
      );
    };
    const deadline = Date.now() + 60_000;
    let running: { id: string; status: string; pid: number }[] = [];
    while (Date.now() < deadline) {
      running = (await containers()).filter((c) => c.status === "running");
      if (running.length && stderr.includes("started")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(running.length, 1, `the step's container never ran:\n${stderr}`);
    const pid = running[0]!.pid;
    // From the host, during the step: the container's cgroup has finite memory and pids limits (set on its parent,
    // strata/<id>, which the kernel applies hierarchically).
    const cgroups = readFileSync(`/proc/${pid}/cgroup`, "utf8");
    const memPath = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/m.exec(cgroups);
    if (memPath) {
      const stat = readFileSync(`/sys/fs/cgroup/memory${memPath[1]}/memory.stat`, "utf8");
      const limit = Number(/^hierarchical_memory_limit (\d+)$/m.exec(stat)![1]);
      assert.ok(limit > 0 && limit <= 64 * 1024 ** 3, `memory limit ${limit}`);
      assert.ok(
        Number(readFileSync(`/sys/fs/cgroup/memory${path.dirname(memPath[1]!)}/memory.limit_in_bytes`, "utf8")) ===
          limit,
      );
      const pidsPath = /^\d+:pids:(.*)$/m.exec(cgroups)![1]!;
      assert.match(readFileSync(`/sys/fs/cgroup/pids${path.dirname(pidsPath)}/pids.max`, "utf8"), /^\d+\n$/);
    } else {
      const v2 = /^0::(.*)$/m.exec(cgroups)![1]!;
      assert.match(readFileSync(`/sys/fs/cgroup${path.dirname(v2)}/memory.max`, "utf8"), /^\d+\n$/);
      assert.match(readFileSync(`/sys/fs/cgroup${path.dirname(v2)}/pids.max`, "utf8"), /^\d+\n$/);
    }
    const secretDirs = async () =>
      (await readdir(SECRETS_ROOT).catch(() => [] as string[])).filter((n) => n.startsWith(prefix));
    assert.equal((await secretDirs()).length, 1, "the step's secret file is on its tmpfs under SECRETS_ROOT");
    assert.match(
      readFileSync("/proc/self/mounts", "utf8"),
      new RegExp(`^tmpfs ${SECRETS_ROOT}/${prefix}\\S+ tmpfs `, "m"),
    );
    child.kill("SIGKILL");
    await new Promise((r) => setTimeout(r, 2000));
    assert.deepEqual(
      (await containers()).filter((c) => c.status === "running"),
      [],
      "a container outlived its builder",
    );
    assert.throws(() => process.kill(pid, 0), /ESRCH/, "the step's process is still alive");
    // The next build reaps the stopped container record (reapStaleContainers).
    const next = await space.project(`export default base.runCommands("true");\n`);
    await buildJson(next.def);
    assert.deepEqual(await containers(), []);
    // ... and the next build's reap unmounts and removes them.
    assert.deepEqual(await secretDirs(), [], "the dead builder's secrets dir outlived the reap");
    const mounts = readFileSync("/proc/self/mounts", "utf8");
    assert.ok(!mounts.includes(`${SECRETS_ROOT}/${prefix}`), "the dead builder's secrets tmpfs is still mounted");
  });
});

describe("sandbox: through strata serve", () => {
  test("a RUN gets the same sandbox; the host network is refused unless the operator grants it; a step without a timeout is killed at the service's default", {
    timeout: 180_000,
  }, async () => {
    const serve = await spawnServe({ STRATA_HOME: SHARED_HOME }, ["--step-timeout", "3s", "--max-step-timeout", "5s"]);
    try {
      const hitsBefore = hits;
      const env = { STRATA_SERVER: serve.url };
      const probeDef = await space.project(
        `export default base.${TOOLS}.runCommands(${JSON.stringify(
          [
            "grep -E '^(Seccomp|CapEff):' /proc/self/status",
            "echo uid_map=$(cat /proc/self/uid_map)",
            "(unshare -Ur true 2>/dev/null && echo unshare=allowed || echo unshare=refused)",
            probe("loopback", "127.0.0.1"),
            probe("gateway", SLIRP_GATEWAY),
          ].join("; "),
        )});\n`,
      );
      const built = await buildJson(probeDef.def, [], { env });
      assert.match(built.stderr, /Seccomp:\s+2/, built.stderr);
      const capEff = /CapEff:\s+([0-9a-f]+)/.exec(built.stderr)!;
      assert.equal(BigInt(`0x${capEff[1]}`) & (1n << 13n), 0n);
      assert.match(built.stderr, /uid_map= ?0 [1-9]\d* 65536/);
      assert.match(built.stderr, /unshare=refused/);
      assert.match(built.stderr, /loopback=blocked/);
      assert.match(built.stderr, /gateway=blocked/);
      assert.equal(hits, hitsBefore);

      const hostDef = await space.project(
        `export default base.${TOOLS}.runCommands(${JSON.stringify(probe("loopback", "127.0.0.1"))}, { network: "host" });\n`,
      );
      const refused = await strata(["build", hostDef.def], { env });
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /host network.*network\.host entitlement.*--allow-network-host/s, refused.stderr);
      assert.equal(hits, hitsBefore, "a refused step ran anyway");

      const sleepDef = await space.project(`export default base.runCommands("sleep 100000");\n`);
      const t0 = Date.now();
      const slept = await strata(["build", sleepDef.def], { env });
      assert.notEqual(slept.code, 0);
      assert.match(slept.stderr, /timed out after 3s/, slept.stderr);
      assert.ok(Date.now() - t0 < 60_000);
      const longDef = await space.project(`export default base.runCommands("sleep 100000", { timeout: 100000 });\n`);
      const capped = await strata(["build", longDef.def], { env });
      assert.match(capped.stderr, /timed out after 5s/, capped.stderr);
    } finally {
      serve.child.kill("SIGTERM");
      await serve.exited;
    }
  });

  test("a client asks for its build's limits; the service applies them and refuses more than its maximum", {
    timeout: 120_000,
  }, async () => {
    const serve = await spawnServe({ STRATA_HOME: SHARED_HOME });
    try {
      const env = { STRATA_SERVER: serve.url };
      const { def } = await space.project(
        `export default base.runCommands("head -c 300m /dev/zero | busybox tail > /dev/null");\n`,
      );
      const oom = await strata(["build", def], { env: { ...env, STRATA_STEP_MEMORY: "64m" } });
      assert.notEqual(oom.code, 0);
      assert.match(oom.stderr, /ran out of memory: it exceeded its memory limit of 64 MiB/, oom.stderr);
      const greedy = await space.project(`export default base.runCommands("true");\n`);
      const refused = await strata(["build", greedy.def], { env: { ...env, STRATA_STEP_PIDS: "100000" } });
      assert.notEqual(refused.code, 0);
      assert.match(
        refused.stderr,
        /pids limit of 100000 pids, above this service's maximum of 4096 pids; lower STRATA_STEP_PIDS/,
        refused.stderr,
      );
    } finally {
      serve.child.kill("SIGTERM");
      await serve.exited;
    }
  });

  test("strata serve --allow-network-host grants the entitlement", { timeout: 120_000 }, async () => {
    const serve = await spawnServe({ STRATA_HOME: SHARED_HOME }, ["--allow-network-host"]);
    try {
      const hitsBefore = hits;
      const hostDef = await space.project(
        `export default base.${TOOLS}.runCommands(${JSON.stringify(probe("loopback", "127.0.0.1"))}, { network: "host" });\n`,
      );
      const built = await buildJson(hostDef.def, [], { env: { STRATA_SERVER: serve.url } });
      assert.match(built.stderr, /loopback=reached/);
      assert.ok(hits > hitsBefore);
    } finally {
      serve.child.kill("SIGTERM");
      await serve.exited;
    }
  });
});

describe("sandbox: user namespace", () => {
  test("files a step's root makes are uid 0 in the layer, chowned ones keep their ids, and the host sees no shifted ids", {
    timeout: 120_000,
  }, async () => {
    const { def } = await space.project(
      `export default base.runCommands("mkdir -p /made/sub && echo r > /made/root.txt && echo a > /made/app.txt && chown 1000:1000 /made/app.txt && chown 42:65534 /made/sub && chmod 4755 /made/root.txt && id -u > /made/id");\n`,
    );
    const built = await buildJson(def);
    const layer = built.steps[built.steps.length - 1]!.layer!;
    // The layer's tar, as stored: owners are the image's own ids.
    const tar = await execFileP("sh", [
      "-c",
      `gzip -dc ${SHARED_HOME}/blobs/sha256/${layer.slice(7)} | tar -tv --numeric-owner`,
    ]);
    assert.match(tar.stdout, /-rwsr-xr-x 0\/0 .* made\/root\.txt/);
    assert.match(tar.stdout, /-rw-r--r-- 1000\/1000 .* made\/app\.txt/);
    assert.match(tar.stdout, /drwxr-xr-x 42\/65534 .* made\/sub\/?$/m);
    const run = await strata([
      "run",
      built.imageId,
      "--",
      "sh",
      "-c",
      "cat /made/id; stat -c '%u:%g' /made/app.txt /made/sub",
    ]);
    assert.equal(run.stdout, "0\n1000:1000\n42:65534\n");
  });
});

describe("sandbox: Debian, with default settings", () => {
  /** A Debian image that installs a package with apt and probes its sandbox in the same way as the busybox tests. */
  function debianProbe(tag: string): string {
    // A TCP connect is enough: "reached" means the host's server accepted a connection.
    const tcp = (label: string, addr: string) =>
      `(timeout 3 bash -c 'exec 3<>/dev/tcp/${addr}/${port}' 2>/dev/null && echo ${label}=reached || echo ${label}=blocked)`;
    const probes = [
      "hello",
      "grep -E '^(Seccomp|CapEff):' /proc/self/status",
      "echo uid_map=$(cat /proc/self/uid_map)",
      "(unshare -Ur true 2>/dev/null && echo unshare=allowed || echo unshare=refused)",
      tcp("loopback", "127.0.0.1"),
      tcp("gateway", SLIRP_GATEWAY),
    ].join("; ");
    return `import { Image } from "strata";\nexport default Image.debianSlim().env({ SANDBOX_TEST: ${JSON.stringify(tag)} }).aptInstall("hello").runCommands(${JSON.stringify(probes)});\n`;
  }

  function assertSandboxed(log: string): void {
    assert.match(log, /Hello, world!/, log);
    assert.match(log, /Seccomp:\s+2/);
    assert.equal(BigInt(`0x${/CapEff:\s+([0-9a-f]+)/.exec(log)![1]}`) & (1n << 13n), 0n);
    assert.match(log, /uid_map= ?0 [1-9]\d* 65536/);
    assert.match(log, /unshare=refused/);
    assert.match(log, /loopback=blocked/);
    assert.match(log, /gateway=blocked/);
  }

  test("apt installs from Debian's archive through the sandbox network, and the step is sandboxed", {
    timeout: 600_000,
  }, async () => {
    const dir = await space.scratch();
    const def = path.join(dir, "image.ts");
    await writeFile(def, debianProbe(nonceTag()));
    const hitsBefore = hits;
    const built = await buildJson(def);
    assertSandboxed(built.stderr);
    assert.equal(hits, hitsBefore);
  });

  test("the same through strata serve", { timeout: 600_000 }, async () => {
    const serve = await spawnServe({ STRATA_HOME: SHARED_HOME });
    try {
      const dir = await space.scratch();
      const def = path.join(dir, "image.ts");
      await writeFile(def, debianProbe(nonceTag()));
      const hitsBefore = hits;
      const built = await buildJson(def, [], { env: { STRATA_SERVER: serve.url } });
      assertSandboxed(built.stderr);
      assert.equal(hits, hitsBefore);
    } finally {
      serve.child.kill("SIGTERM");
      await serve.exited;
    }
  });
});
