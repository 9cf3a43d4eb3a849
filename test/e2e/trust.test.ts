// Small things that break trust (issue 13, item 8): a closed stdout (`strata images | head`) ends a command quietly;
// a local build as a non-root user says it needs root and points to STRATA_SERVER; `strata images` and builds from
// `fromId` work end to end; a Modal option Strata lacks fails the definition with a message.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { CLI, REPO_ROOT, SHARED_HOME, buildJson, scratchSpace, strata } from "../support/strata.js";

const space = scratchSpace();
after(() => space.cleanup());

/** Runs `strata <args>` with its stdout's read end closed before it starts; resolves its exit code and stderr. */
function withClosedStdout(
  args: string[],
  opts: { closeStderr?: boolean; home?: string } = {},
): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, STRATA_HOME: opts.home ?? SHARED_HOME },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout.destroy(); // the reader is gone, as when `head` has exited
    if (opts.closeStderr) child.stderr.destroy();
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("close", (code, signal) => resolve({ code, signal, stderr }));
  });
}

describe("a closed stdout", () => {
  test("strata images, --help and build end quietly with exit 0 (no EPIPE stack trace)", async () => {
    const { def } = await space.project(`export default base.runCommands("echo hi > /hi");\n`);
    await buildJson(def);
    for (const args of [["images"], ["images", "--json"], ["--help"], ["build", def]]) {
      const r = await withClosedStdout(args);
      assert.equal(r.stderr.includes("EPIPE"), false, `${args.join(" ")}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /internal error|at .*\.js:\d+/, args.join(" "));
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    }
  });

  test("a closed stderr only silences a build: it finishes and records its image", async () => {
    const { def } = await space.project(`export default base.runCommands("echo ${"$"}TEST_NONCE > /n");\n`);
    const r = await withClosedStdout(["build", def], { closeStderr: true });
    assert.equal(r.code, 0);
    const again = await buildJson(def);
    assert.equal(again.sandboxes, 0, "the first build finished and was cached");
  });

  test("strata run of an endless writer stops the container and exits 0", { timeout: 60_000 }, async () => {
    const { def } = await space.project(`export default base.cmd(["sh", "-c", "while true; do echo y; done"]);\n`);
    const built = await buildJson(def);
    const started = Date.now();
    const r = await withClosedStdout(["run", built.imageId]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.ok(Date.now() - started < 30_000);
  });
});

describe("non-root local builds", () => {
  test("say that local builds need root and point to STRATA_SERVER, before building anything", async () => {
    const { def, dir } = await space.project(`export default base.runCommands("echo hi > /hi");\n`);
    const home = await space.scratch();
    await fsp.chmod(home, 0o777);
    await fsp.chmod(dir, 0o755);
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(
        "setpriv",
        ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, CLI, "build", def],
        { cwd: dir, env: { ...process.env, STRATA_HOME: home, HOME: home }, stdio: ["ignore", "ignore", "pipe"] },
      );
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      child.on("close", (code) => resolve({ code, stderr }));
    });
    assert.equal(r.code, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /internal error|EPERM/);
    assert.match(r.stderr, /local builds need root/);
    assert.match(r.stderr, /STRATA_SERVER/);
  });
});

describe("strata images", () => {
  test("--all lists a built image with its step, newest first; --json has the same", async () => {
    const { def, tag } = await space.project(`export default base.runCommands("echo ${"$"}TEST_NONCE > /n");\n`);
    const built = await buildJson(def);
    const table = await strata(["images", "--all"]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split("\n");
    assert.match(lines[0]!, /^NAME\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE\s+STEP$/);
    const row = lines.find((l) => l.split(/\s+/)[2] === built.imageId.slice(7, 19));
    assert.ok(row, `no row for ${built.imageId}:\n${table.stdout}`);
    assert.match(row!, /runCommands echo \$TEST_NONCE > \/n$/);
    const json = JSON.parse((await strata(["images", "--all", "--json"])).stdout) as {
      id: string;
      step?: string;
      layers: number;
      builtAt?: string;
    }[];
    const entry = json.find((i) => i.id === built.imageId);
    assert.ok(entry);
    assert.equal(entry!.layers, 2, "the busybox tree and the RUN");
    assert.ok(entry!.builtAt && !Number.isNaN(Date.parse(entry!.builtAt)));
    void tag;
  });
});

describe("builds from fromId", () => {
  test("a definition extends a stored image by id (or prefix), with cache hits on rebuild", async () => {
    const { def } = await space.project(`export default base.runCommands("echo base > /base");\n`);
    const first = await buildJson(def);
    const dir = await space.scratch();
    const child = path.join(dir, "child.ts");
    await fsp.writeFile(
      child,
      `import { Image } from "strata";\nexport default Image.fromId(${JSON.stringify(first.imageId.slice(0, 19))}).runCommands("cat /base > /copy");\n`,
    );
    const built = await buildJson(child);
    assert.equal(built.steps.length, 2);
    const run = await strata(["run", built.imageId, "--", "cat", "/copy"]);
    assert.equal(run.stdout, "base\n");
    const again = await buildJson(child);
    assert.equal(again.imageId, built.imageId);
    assert.equal(again.sandboxes, 0);
    const missing = path.join(dir, "missing.ts");
    await fsp.writeFile(
      missing,
      `import { Image } from "strata";\nexport default Image.fromId("sha256:0000dead").runCommands("true");\n`,
    );
    const r = await strata(["build", missing]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no image id starts with/);
  });
});

describe("strict options from the command line", () => {
  test("a Modal option is a definition error naming it, with exit 1", async () => {
    const { def } = await space.project(`export default base.runCommands("true", { gpu: "A100" } as never);\n`);
    const r = await strata(["build", def]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /runCommands: option "gpu" is not supported: build-time GPUs are not supported/);
    assert.equal(r.sandboxes, 0);
  });
});
