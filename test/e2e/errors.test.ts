// Bad input end to end: each gives a clear message and leaves the store consistent.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { execFile } from "node:child_process";
import { REPO_ROOT, SHARED_HOME, buildJson, scratchSpace, strata, strataSpawn } from "../support/strata.js";

const space = scratchSpace();
after(() => space.cleanup());
const project = space.project;

describe("bad input", () => {
  test("a failing RUN reports the step, command, exit code and log tail, and writes no cache entry", async () => {
    const { def } = await project(
      `export default base.runCommands("echo good > /good").runCommands("echo first line; echo about to fail >&2; exit 3");\n`,
    );
    const r = await strata(["build", def]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /step 4 \(runCommands echo first line; echo about to fail >&2; exit 3\) failed: `echo first line; echo about to fail >&2; exit 3` exited with code 3/,
    );
    assert.match(r.stderr, /--- last \d+ log lines ---[\s\S]*about to fail/);
    // Retrying runs the failing step again (nothing was cached for it), the good step is cached.
    const again = await strata(["build", def]);
    const both = `--- first build ---\n${r.stderr}\n--- second build ---\n${again.stderr}`;
    assert.equal(again.code, 1, both);
    assert.match(again.stderr, /=> Step 3: runCommands echo good > \/good\n\s+cached/, both);
    assert.equal(again.sandboxes, 1, both);
  });

  test("a nonexistent local path is a clear error naming the path", async () => {
    const { def, dir } = await project(`export default base.addLocalDir("./missing", "/m", { copy: true });\n`);
    const r = await strata(["build", def]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`local directory ${path.join(dir, "missing")} does not exist`), r.stderr);
    const f = await project(`export default base.addLocalFile("./nope.txt", "/n.txt", { copy: true });\n`);
    const rf = await strata(["build", f.def]);
    assert.match(rf.stderr, /local file .*nope\.txt does not exist/);
  });

  test("a definition that throws, one that does not compile and one without an Image are clear errors", async () => {
    const dir = await space.scratch();
    const throws = path.join(dir, "throws.ts");
    await fsp.writeFile(
      throws,
      `import { Image } from "strata";\nthrow new Error("boom from definition");\nexport default Image.fromScratch();\n`,
    );
    const r1 = await strata(["build", throws]);
    assert.equal(r1.code, 1);
    assert.match(r1.stderr, /throws\.ts: threw while loading: boom from definition/);
    const broken = path.join(dir, "broken.ts");
    await fsp.writeFile(broken, `import { Image } from "strata";\nexport default Image.fromScratch(.;\n`);
    const r2 = await strata(["build", broken]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /broken\.ts: cannot be compiled:\n.*broken\.ts:2:\d+: /);
    const empty = path.join(dir, "empty.ts");
    await fsp.writeFile(empty, `export const x = 1;\n`);
    const r3 = await strata(["build", empty]);
    assert.match(r3.stderr, /does not export an Image/);
    const invalid = path.join(dir, "invalid.ts");
    await fsp.writeFile(
      invalid,
      `import { Image } from "strata";\nexport default Image.debianSlim({ pythonVersion: "3.12" });\n`,
    );
    const r4 = await strata(["build", invalid]);
    assert.match(r4.stderr, /Python 3\.12 is not supported by builder version 2026\.11; supported: 3\.11, 3\.13/);
    const order = path.join(dir, "order.ts");
    await fsp.writeFile(
      order,
      `import { Image } from "strata";\nexport default Image.fromScratch().addLocalDir(".", "/src").runCommands("true");\n`,
    );
    const r5 = await strata(["build", order]);
    assert.match(
      r5.stderr,
      /runCommands\(\) cannot come after addLocalDir\(.*, "\/src"\) with copy: false.*Move the addLocal\* calls to the end of the chain, or pass \{ copy: true \}/,
    );
    const missing = await strata(["build", path.join(dir, "nope.ts")]);
    assert.match(missing.stderr, /nope\.ts: file does not exist/);
  });

  test("unknown commands, image ids and flags exit 2 or 1 with a message", async () => {
    assert.equal((await strata(["frobnicate"])).code, 2);
    const r = await strata(["run", "deadbeef0000"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no image id starts with deadbeef0000/);
    assert.equal((await strata(["build", "--no-such-flag", "x.ts"])).code, 2);
  });

  test("a step over its timeout is killed and reported as timed out; network none isolates; run propagates exit codes", async () => {
    const { def } = await project(`export default base.runCommands("echo slow; sleep 30", { timeout: 1 });\n`);
    const started = Date.now();
    const r = await strata(["build", def]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /`echo slow; sleep 30` timed out after 1s and was killed/);
    assert.ok(Date.now() - started < 20_000);
    const net = await project(`export default base.runCommands("ls /sys/class/net > /ifaces", { network: "none" });\n`);
    const built = await buildJson(net.def);
    assert.equal((await strata(["run", built.imageId, "--", "cat", "/ifaces"])).stdout, "lo\n");
    const exit = await strata(["run", built.imageId, "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert.equal(exit.code, 7);
    assert.equal(exit.stdout, "out\n");
    assert.equal(exit.stderr, "err\n");
  });

  test("kill -9 of a build mid-step, then a rebuild that succeeds and leaves no debris", async () => {
    const { def, tag } = await project(
      `export default base.runCommands("echo started; sleep 30; echo done > /slow").runCommands("echo after > /after");\n`,
    );
    const child = strataSpawn(["build", def]);
    let stderr = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`build never reached the slow step:\n${stderr}`)), 60_000);
      child.stderr!.on("data", (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes("    started")) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    // The slow step's edit: make it fast so the rebuild doesn't wait 30 s.
    await fsp.writeFile(def, (await fsp.readFile(def, "utf8")).replace("sleep 30; ", ""));
    const r = await buildJson(def);
    assert.equal(r.sandboxes, 2);
    const run = await strata(["run", r.imageId, "--", "cat", "/slow", "/after"]);
    assert.equal(run.stdout, "done\nafter\n");
    // The killed build's work dir, its mounts and its orphaned container were reclaimed by the rebuild.
    const deadPid = String(child.pid);
    const tmpLeft = (await fsp.readdir(path.join(SHARED_HOME, "tmp"))).filter((n) => n.split("-")[1] === deadPid);
    assert.deepEqual(tmpLeft, []);
    const mounts = (await fsp.readFile("/proc/self/mounts", "utf8"))
      .split("\n")
      .filter((l) => l.includes(`-${deadPid}-`));
    assert.deepEqual(mounts, []);
    const containers = await new Promise<string>((res) =>
      execFile("runc", ["--root", "/run/strata-runc", "list", "-q"], (_e, out) => res(out)),
    );
    assert.ok(!containers.split("\n").some((id) => id.startsWith(`strata-${deadPid}-`)), containers);
    void tag;
  });
});

describe("run", () => {
  test("binary stdout passes through byte for byte", async () => {
    const { def } = await project(
      `export default base.cmd(["sh", "-c", "printf '\\\\377\\\\376\\\\000\\\\303\\\\251'"]);\n`,
    );
    const built = await buildJson(def);
    const bytes = await new Promise<Buffer>((resolve) => {
      execFile(
        process.execPath,
        [path.join(REPO_ROOT, "bin/strata.js"), "run", built.imageId],
        { encoding: "buffer", env: { ...process.env, STRATA_HOME: SHARED_HOME } },
        (_e, out) => resolve(out),
      );
    });
    assert.deepEqual([...bytes], [0xff, 0xfe, 0x00, 0xc3, 0xa9]);
  });
});
