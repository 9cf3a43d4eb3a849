// Image names and lifecycle (issue 13, item 6), end to end with the real CLI on the shared store: `build --tag`,
// `images` (names; `--all` every step image), `tag`, `rmi`, names wherever an id is taken (run, export, inspect, logs,
// fromId), `logs` (every step's stored log, redacted), `run -i` / `run -it` (stdin, and a shell on a pseudo-terminal
// driven through python3's pty module), and `explain --builder-version`.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { startRegistry } from "../support/registry.js";
import { CLI, REPO_ROOT, SHARED_HOME, buildJson, scratchSpace, strata } from "../support/strata.js";

const space = scratchSpace();
after(() => space.cleanup());

interface ListedImage {
  name: string | null;
  tag: string | null;
  id: string;
  createdAt: string | null;
  size: number;
  step?: string;
}

async function listed(args: string[] = []): Promise<ListedImage[]> {
  const r = await strata(["images", "--json", ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as ListedImage[];
}

describe("names", () => {
  test("build --tag names the image; images lists names, --all every step; tag and rmi add and remove names", async () => {
    const { def, tag } = await space.project(`export default base.runCommands("echo ${"$"}TEST_NONCE > /n");\n`);
    const repo = `e2e-${tag}/app`;
    const built = await buildJson(def, ["--tag", repo, "-t", `${repo}:v1`]);
    assert.match(built.stderr, new RegExp(`=> Named ${repo}:latest, ${repo}:v1`));

    const table = await strata(["images"]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split("\n");
    assert.match(lines[0]!, /^NAME\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$/);
    const short = built.imageId.slice(7, 19);
    for (const t of ["latest", "v1"]) {
      const row = lines.find((l) => l.startsWith(`${repo} `) && l.split(/\s+/)[1] === t);
      assert.ok(row, `a row for ${repo}:${t}:\n${table.stdout}`);
      assert.match(
        row!,
        new RegExp(
          `^${repo}\\s+${t}\\s+${short}\\s+(Less than a second|\\d+ seconds?|\\d+ minutes?) ago\\s+[\\d.]+[kM]?B$`,
        ),
      );
    }
    const named = (await listed()).filter((i) => i.name === repo);
    assert.deepEqual(named.map((i) => i.tag).sort(), ["latest", "v1"]);
    assert.ok(!(await listed()).some((i) => i.id === built.steps[1]!.imageId), "step images are not listed by default");
    const all = await listed(["--all"]);
    const step = all.find((i) => i.id === built.steps[1]!.imageId);
    assert.ok(step, "--all lists step images");
    assert.equal(step!.name, null);
    assert.match(step!.step!, /addLocalDir/);

    // A name works wherever an id does.
    const run = await strata(["run", `${repo}:v1`, "--", "cat", "/n"]);
    assert.equal(run.stdout, `${tag}\n`, run.stderr);
    const inspect = JSON.parse((await strata(["inspect", repo])).stdout) as { id: string };
    assert.equal(inspect.id, built.imageId);

    assert.equal((await strata(["tag", short, `${repo}-other:2`])).code, 0);
    assert.equal((await strata(["run", `${repo}-other:2`, "--", "cat", "/n"])).stdout, `${tag}\n`);

    const refused = await strata(["rmi", built.imageId]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /has 3 names .*remove them one by one, or all with -f/);
    const one = await strata(["rmi", `${repo}:v1`]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, `Untagged: ${repo}:v1\n`);
    const rest = await strata(["rmi", "-f", short]);
    assert.equal(rest.code, 0, rest.stderr);
    assert.deepEqual(rest.stdout.trim().split("\n").sort(), [`Untagged: ${repo}-other:2`, `Untagged: ${repo}:latest`]);
    assert.ok(!(await listed()).some((i) => i.id === built.imageId), "no name is left");
    const gone = await strata(["run", repo, "--", "true"]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, new RegExp(`no image is named ${repo}:latest`));
    const again = await strata(["rmi", short]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /has no names to remove; unnamed images go with `strata cache prune/);
    assert.equal(
      (await strata(["run", built.imageId, "--", "cat", "/n"])).stdout,
      `${tag}\n`,
      "the image itself stays",
    );
  });

  test("a bad name is refused before anything is built, saying what is wrong", async () => {
    const { def } = await space.project(`export default base.runCommands("echo ${"$"}TEST_NONCE > /never");\n`);
    const r = await strata(["build", def, "--tag", "Bad/Name"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid image name "Bad\/Name": "Bad" is not a valid name component/);
    assert.equal(r.sandboxes, 0);
    assert.doesNotMatch(r.stderr, /=> Step/);
    const tagged = await strata(["tag", "sha256:0000dead", "ok"]);
    assert.equal(tagged.code, 1);
    assert.match(tagged.stderr, /no image id starts with 0000dead/);
  });

  test("export, push, fromId and fromName take a name; image.build({ tag }) names from the SDK", async () => {
    const { def, tag, dir } = await space.project(
      `export default base.runCommands("echo base-${"$"}TEST_NONCE > /base");\n`,
    );
    const name = `e2e-${tag}/base:1`;
    const built = await buildJson(def, ["--tag", name]);
    const oci = path.join(dir, "oci");
    const exported = await strata(["export", name, "--oci", oci]);
    assert.equal(exported.code, 0, exported.stderr);
    const index = JSON.parse(await fsp.readFile(path.join(oci, "index.json"), "utf8")) as { manifests: unknown[] };
    assert.equal(index.manifests.length, 1);
    const child = path.join(dir, "child.ts");
    await fsp.writeFile(
      child,
      `import { Image } from "strata";\nexport default Image.fromId(${JSON.stringify(name)}).runCommands("cat /base > /copy");\n`,
    );
    const registry = await startRegistry();
    try {
      const pushed = await strata(["push", name, `${registry.host}/e2e/${tag}:1`]);
      assert.equal(pushed.code, 0, pushed.stderr);
      assert.match(pushed.stdout, new RegExp(`^${registry.host}/e2e/${tag}@sha256:[0-9a-f]{64}\n$`));
    } finally {
      await registry.stop();
    }
    const childBuilt = await buildJson(child);
    assert.equal((await strata(["run", childBuilt.imageId, "--", "cat", "/copy"])).stdout, `base-${tag}\n`);
    // Modal's from_name: Image.fromName, the same image by its name.
    const byName = path.join(dir, "by-name.ts");
    await fsp.writeFile(
      byName,
      `import { Image } from "strata";\nexport default Image.fromName(${JSON.stringify(name)}).runCommands("cat /base > /copy");\n`,
    );
    const byNameBuilt = await buildJson(byName);
    assert.equal(byNameBuilt.imageId, childBuilt.imageId, "fromName and fromId of one image give one chain");
    assert.ok(byNameBuilt.steps.every((s) => s.cached));
    // From the SDK: a script that builds with { tag } on the shared store.
    const script = path.join(dir, "sdk-build.mjs");
    await fsp.writeFile(
      script,
      `import { Image } from ${JSON.stringify(path.join(REPO_ROOT, "dist/src/index.js"))};\n` +
        `const built = await Image.fromId(${JSON.stringify(built.imageId)}).env({ SDK: "1" }).build({ tag: ["e2e-${tag}/sdk", "e2e-${tag}/sdk:two"], log: () => {} });\n` +
        `process.stdout.write(built.imageId);\n`,
    );
    const sdk = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const c = spawn(process.execPath, [script], { env: { ...process.env, STRATA_HOME: SHARED_HOME } });
      let out = "";
      let err = "";
      c.stdout.on("data", (d: Buffer) => (out += d.toString()));
      c.stderr.on("data", (d: Buffer) => (err += d.toString()));
      c.on("close", (code) => resolve({ code, out, err }));
    });
    assert.equal(sdk.code, 0, sdk.err);
    const names = (await listed()).filter((i) => i.name === `e2e-${tag}/sdk`);
    assert.deepEqual(names.map((i) => [i.tag, i.id]).sort(), [
      ["latest", sdk.out],
      ["two", sdk.out],
    ]);
  });
});

describe("with STRATA_SERVER set", () => {
  test("an image the local store has runs without the service: by full id no question, else when it is down", async () => {
    const { def, tag } = await space.project(`export default base.runCommands("echo ${"$"}TEST_NONCE > /n");\n`);
    const built = await buildJson(def);
    // Port 1 on loopback: nothing listens there.
    const env = { STRATA_SERVER: "http://127.0.0.1:1" };
    const full = await strata(["run", built.imageId, "--", "cat", "/n"], { env });
    assert.equal(full.stdout, `${tag}\n`, full.stderr);
    assert.equal(full.stderr, "");
    const prefix = await strata(["run", built.imageId.slice(7, 21), "--", "cat", "/n"], { env });
    assert.equal(prefix.stdout, `${tag}\n`, prefix.stderr);
    assert.match(prefix.stderr, /cannot reach the build server.*looking in the local store only/);
    const logs = await strata(["logs", built.imageId], { env });
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /runCommands echo \$TEST_NONCE > \/n/);
  });
});

describe("strata logs", () => {
  test("prints the stored log of every step of the chain, secrets redacted; --json has the same", async () => {
    const secret = `s3cr3t-${Date.now()}-value`;
    const { def, tag } = await space.project(
      `export default base.runCommands("echo token=$MY_TOKEN; echo visible-${"$"}TEST_NONCE", { secrets: [Secret.fromObject({ MY_TOKEN: ${JSON.stringify(secret)} })] }).runCommands("echo second step");\n`,
    );
    const name = `e2e-${tag}/logs`;
    const built = await buildJson(def, ["--tag", name]);
    const r = await strata(["logs", name]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes(secret), "the secret's value never shows");
    // The scratch base is one image in the whole store: its record keeps the description of the first chain that
    // built it (another test's `addPython 3.10: fromScratch`, say), so only the method is certain.
    assert.match(r.stdout, /=> Step 0: (?:[^\n]*: )?fromScratch {2}\(/);
    assert.match(r.stdout, /=> Step 3: runCommands echo token=\$MY_TOKEN; echo visible-\$TEST_NONCE {2}\(/);
    assert.match(r.stdout, /\n {4}token=\*\*\*\n/);
    assert.match(r.stdout, new RegExp(`\\n {4}visible-${tag}\\n`));
    assert.match(r.stdout, /=> Step 4: runCommands echo second step[^\n]*\n {4}\$ echo second step\n {4}second step\n/);
    const steps = JSON.parse((await strata(["logs", built.imageId, "--json"])).stdout) as {
      imageId: string;
      step: number;
      log: string | null;
    }[];
    assert.deepEqual(
      steps.map((s) => s.imageId),
      built.steps.map((s) => s.imageId),
    );
    assert.match(steps[3]!.log!, /token=\*\*\*/);
    const missing = await strata(["logs", "no-such-image-anywhere"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no image is named no-such-image-anywhere:latest/);
  });
});

describe("strata explain --builder-version", () => {
  test("prints the version in force and what it pins; STRATA_BUILDER_VERSION picks another", async () => {
    const r = await strata(["explain", "--builder-version"], { env: { STRATA_BUILDER_VERSION: "" } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^builder version 2026\.11 \(the default\)\n/);
    assert.match(r.stdout, /python series: .*3\.11 → bookworm/);
    assert.match(r.stdout, /known versions: .*2026\.11.*PREVIEW/);
    const preview = await strata(["explain", "--builder-version"], { env: { STRATA_BUILDER_VERSION: "PREVIEW" } });
    assert.match(preview.stdout, /^builder version PREVIEW \(from STRATA_BUILDER_VERSION\)/);
    const json = JSON.parse((await strata(["explain", "--builder-version", "--json"])).stdout) as { version: string };
    assert.equal(typeof json.version, "string");
    const both = await strata(["explain", "--builder-version", "def.ts"]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /takes no definition file/);
  });
});

/** Runs `strata <args>` on a pseudo-terminal (python3's pty) of 33×101, typing `input` lines; output and exit code. */
function onPty(args: string[], input: string[]): Promise<{ code: number; output: string }> {
  const driver = `
import os, pty, sys, select, time, fcntl, termios, struct, json
args, lines = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(args[0], args)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
out = b""
def pump(until, limit):
    global out
    end = time.time() + limit
    while time.time() < end and (until is None or until not in out):
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                d = os.read(fd, 4096)
            except OSError:
                return
            if not d:
                return
            out += d
pump(b"# ", 30)
for line in lines:
    os.write(fd, line.encode() + b"\\n")
    pump(None, 1.5)
pump(None, 15)
_, status = os.waitpid(pid, 0)
sys.stdout.write(json.dumps({"code": os.waitstatus_to_exitcode(status), "output": out.decode(errors="replace")}))
`;
  return new Promise((resolve, reject) => {
    const c = spawn(
      "python3",
      ["-c", driver, JSON.stringify([process.execPath, CLI, ...args]), JSON.stringify(input)],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, STRATA_HOME: SHARED_HOME, TERM: "xterm-test" },
      },
    );
    let out = "";
    let err = "";
    c.stdout.on("data", (d: Buffer) => (out += d.toString()));
    c.stderr.on("data", (d: Buffer) => (err += d.toString()));
    c.on("close", () => {
      try {
        resolve(JSON.parse(out) as { code: number; output: string });
      } catch {
        reject(new Error(`pty driver failed: ${err}\n${out}`));
      }
    });
  });
}

describe("strata run -i / -it", () => {
  test("-it runs an interactive shell on a pseudo-terminal (sh when the image has no command): tty, window size, TERM, exit code", {
    timeout: 120_000,
  }, async () => {
    const { def, tag } = await space.project(`export default base.runCommands("echo ${"$"}TEST_NONCE > /n");\n`);
    const name = `e2e-${tag}/shell`;
    await buildJson(def, ["--tag", name]);
    const r = await onPty(
      ["run", "-it", name],
      ["tty; busybox stty size; echo term=$TERM; echo sum-$((40+2)); cat /n", "exit 7"],
    );
    assert.equal(r.code, 7, r.output);
    assert.match(r.output, /\/dev\/pts\/\d+/);
    assert.match(r.output, /\b33 101\b/);
    assert.match(r.output, /term=xterm-test/);
    assert.match(r.output, /sum-42/);
    assert.match(r.output, new RegExp(tag));
  });

  test("-i passes stdin through without a TTY; -t without a terminal is refused", async () => {
    const { def, tag } = await space.project(`export default base.runCommands("true");\n`);
    const name = `e2e-${tag}/stdin`;
    await buildJson(def, ["--tag", name]);
    const piped = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const c = spawn(process.execPath, [CLI, "run", "-i", name, "--", "sh", "-c", "tty || true; cat"], {
        env: { ...process.env, STRATA_HOME: SHARED_HOME },
      });
      let out = "";
      let err = "";
      c.stdout.on("data", (d: Buffer) => (out += d.toString()));
      c.stderr.on("data", (d: Buffer) => (err += d.toString()));
      c.on("close", (code) => resolve({ code, out, err }));
      c.stdin.end(`line one ${tag}\nline two\n`);
    });
    assert.equal(piped.code, 0, piped.err);
    assert.equal(piped.out, `not a tty\nline one ${tag}\nline two\n`);
    const noTty = await strata(["run", "-it", name, "--", "true"]);
    assert.equal(noTty.code, 2);
    assert.match(noTty.stderr, /the input device is not a TTY/);
    const closed = await strata(["run", name, "--", "sh", "-c", "cat; echo end"]);
    assert.equal(closed.stdout, "end\n", "without -i the container's stdin is empty");
  });
});
