// The flagship flow on a real Debian base built with mmdebstrap (once per test run, shared through the store):
// apt from Debian's archive, pip from a local wheel index, runCommands, runFunction, addLocalDir, env, workdir, cmd.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { buildJson, nonce, strata, tempDir } from "../support/strata.js";
import { startWheelIndex, UV_DOUBLE_PATH, type WheelIndex } from "../support/wheel-index.js";

let index: WheelIndex;
const cleanup: string[] = [];
before(async () => {
  index = await startWheelIndex();
});
after(async () => {
  await index.close();
  for (const d of cleanup) await fsp.rm(d, { recursive: true, force: true });
});

describe("debianSlim", () => {
  test("a 10-step definition builds, every step's effect shows in `strata run`, and a rebuild is all hits", {
    timeout: 600_000,
  }, async () => {
    const dir = await tempDir();
    cleanup.push(dir);
    const tag = nonce();
    await fsp.mkdir(path.join(dir, "app"));
    await fsp.writeFile(
      path.join(dir, "app/main.py"),
      "import tinypkg, os\nprint(tinypkg.hello(), os.environ['GREETING'], open('/greeting').read().strip(), open('/from-fn').read())\n",
    );
    await fsp.writeFile(path.join(dir, "app/debug.log"), "ignored\n");
    const def = path.join(dir, "image.ts");
    await fsp.writeFile(
      def,
      `import { Image } from "strata";
export default Image.debianSlim({ pythonVersion: "3.11" })
  .aptInstall("jq")
  .pipInstall("tinypkg==1.0", { indexUrl: ${JSON.stringify(index.url)}, network: "host" })
  .env({ GREETING: "hi", NONCE: ${JSON.stringify(tag)} })
  .runCommands("echo $GREETING > /greeting")
  .runFunction(async (name: string) => { (await import("node:fs")).writeFileSync("/from-fn", name); }, { args: ["strata"] })
  .addLocalDir("./app", "/app", { copy: true, ignore: ["*.log"] })
  .workdir("/app")
  .label({ "org.example.nonce": ${JSON.stringify(tag)} })
  .cmd(["python3", "main.py"]);
`,
    );
    const built = await buildJson(def);
    assert.equal(built.steps.length, 10);
    const run = await strata(["run", built.imageId]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "hello from tinypkg 1.0 hi hi strata\n");
    const checks = await strata([
      "run",
      built.imageId,
      "--",
      "sh",
      "-c",
      "jq --version; pwd; ls /app; python3 --version; cat /etc/debian_version | cut -d. -f1",
    ]);
    assert.match(checks.stdout, /^jq-1\.6\n\/app\nmain\.py\nPython 3\.11\.\d+\n12\n$/);
    const inspect = JSON.parse((await strata(["inspect", built.imageId])).stdout) as {
      config: {
        config: { Labels: Record<string, string>; WorkingDir: string; Cmd: string[] };
        history: { empty_layer?: boolean }[];
      };
    };
    assert.equal(inspect.config.config.Labels["org.example.nonce"], tag);
    assert.equal(inspect.config.config.WorkingDir, "/app");
    assert.deepEqual(inspect.config.config.Cmd, ["python3", "main.py"]);
    assert.equal(inspect.config.history.filter((h) => h.empty_layer).length, 3 /* env, workdir, label */ + 1 /* cmd */);
    const again = await buildJson(def);
    assert.equal(again.sandboxes, 0);
    assert.equal(again.imageId, built.imageId);
  });

  test("pipInstallFromRequirements installs a local requirements file; its content (not its mtime) is keyed", {
    timeout: 600_000,
  }, async () => {
    const dir = await tempDir();
    cleanup.push(dir);
    const req = path.join(dir, "requirements.txt");
    await fsp.writeFile(req, "tinypkg==1.0\n");
    const def = path.join(dir, "image.ts");
    await fsp.writeFile(
      def,
      `import { Image } from "strata";\nexport default Image.debianSlim().env({ N: "${nonce()}" }).pipInstallFromRequirements("./requirements.txt", { indexUrl: ${JSON.stringify(index.url)}, network: "host" });\n`,
    );
    const version = async (id: string) =>
      (await strata(["run", id, "--", "python3", "-c", "import tinypkg; print(tinypkg.VERSION)"])).stdout;
    const built = await buildJson(def);
    assert.equal(await version(built.imageId), "1.0\n");
    const ls = await strata(["run", built.imageId, "--", "cat", "/.requirements.txt"]);
    assert.equal(ls.stdout, "tinypkg==1.0\n");
    await fsp.utimes(req, new Date(), new Date(Date.now() + 60_000));
    const touched = await buildJson(def);
    assert.equal(touched.sandboxes, 0, "a new mtime is no change");
    assert.equal(touched.imageId, built.imageId);
    await fsp.writeFile(req, "tinypkg==2.0\n");
    const changed = await buildJson(def);
    assert.equal(changed.sandboxes, 1, "new content: the install step runs again");
    assert.equal(await version(changed.imageId), "2.0\n");
  });

  test("uvPipInstall uses STRATA_UV_BINARY (a pip-backed test double) and says how to provide uv when there is none", {
    timeout: 600_000,
  }, async () => {
    const dir = await tempDir();
    cleanup.push(dir);
    const def = path.join(dir, "image.ts");
    await fsp.writeFile(
      def,
      `import { Image } from "strata";\nexport default Image.debianSlim().env({ N: "${nonce()}" }).uvPipInstall("tinypkg==2.0", { indexUrl: ${JSON.stringify(index.url)}, network: "host" });\n`,
    );
    const missing = await strata(["build", def]);
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /uv is not available: uvPipInstall needs a uv binary: none in the image .* STRATA_UV_BINARY is not set/,
    );
    const built = await buildJson(def, [], { env: { STRATA_UV_BINARY: UV_DOUBLE_PATH } });
    const run = await strata(["run", built.imageId, "--", "python3", "-c", "import tinypkg; print(tinypkg.VERSION)"]);
    assert.equal(run.stdout, "2.0\n");
    const ls = await strata(["run", built.imageId, "--", "ls", "-a", "/"]);
    assert.doesNotMatch(ls.stdout, /\.strata/, "the uv binary is mounted, never captured");
  });
});
