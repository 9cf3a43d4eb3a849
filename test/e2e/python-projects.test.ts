// Issue 13 item 3 end to end on real Debian bases (mmdebstrap, shared through the test store) with a loopback wheel
// index: pipInstallFromPyproject, addLocalPythonSource (copied and deferred), build-time volumes that persist between
// builds and never enter a layer, and poetryInstallFromFile with Debian's own Poetry (trixie), with and without a lock.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { buildJson, nonce, strata, tempDir } from "../support/strata.js";
import { startWheelIndex, type WheelIndex } from "../support/wheel-index.js";

let index: WheelIndex;
const cleanup: string[] = [];
before(async () => {
  index = await startWheelIndex();
});
after(async () => {
  await index.close();
  for (const d of cleanup) await fsp.rm(d, { recursive: true, force: true });
});

async function project(files: Record<string, string>): Promise<string> {
  const dir = await tempDir();
  cleanup.push(dir);
  for (const [rel, content] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await fsp.writeFile(path.join(dir, rel), content);
  }
  return dir;
}

async function run(imageId: string, script: string): Promise<string> {
  const r = await strata(["run", imageId, "--", "sh", "-c", script]);
  assert.equal(r.code, 0, `${script}\n${r.stderr}`);
  return r.stdout;
}

describe("Python projects on debianSlim 3.11", { concurrency: 2 }, () => {
  test("pipInstallFromPyproject and addLocalPythonSource: dependencies and local modules import under /root", {
    timeout: 600_000,
  }, async () => {
    const tag = nonce();
    const dir = await project({
      "pyproject.toml": `[project]\nname = "app"\nversion = "0.1"\ndependencies = ["tinypkg==1.0"]\n\n[project.optional-dependencies]\nextra = ["otherpkg==0.1"]\n`,
      "mylib/__init__.py": "def hi():\n    return 'mylib'\n",
      "mylib/notes.txt": "not python\n",
      "mylib/sub/__init__.py": "",
      "mylib/sub/deep.py": "X = 'deep'\n",
      "tool.py": "NAME = 'tool'\n",
      "image.ts": `import { Image } from "strata";
const base = Image.debianSlim({ pythonVersion: "3.11" })
  .env({ N: ${JSON.stringify(tag)} })
  .pipInstallFromPyproject("./pyproject.toml", { optionalDependencies: ["extra"], indexUrl: ${JSON.stringify(index.url)}, network: "host" });
export const copied = base.addLocalPythonSource("mylib", "tool", { copy: true });
export const deferred = base.addLocalPythonSource("mylib", "tool");
`,
    });
    const copied = await buildJson(path.join(dir, "image.ts"), ["--export", "copied"]);
    assert.deepEqual(
      copied.steps.slice(-3).map((s) => s.description.split(" ")[0]),
      ["pipInstallFromPyproject", "addLocalPythonSource", "addLocalPythonSource"],
    );
    const script =
      "cd /root && python3 -c 'import tinypkg, otherpkg, mylib, tool, mylib.sub.deep as d; print(tinypkg.hello(), mylib.hi(), tool.NAME, d.X)' && ls -a /root/mylib";
    const out = await run(copied.imageId, script);
    assert.match(out, /^hello from tinypkg 1\.0 mylib tool deep\n/);
    assert.ok(!out.includes("notes.txt"), "only .py files are added by default");
    const deferred = await buildJson(path.join(dir, "image.ts"), ["--export", "deferred"]);
    assert.ok(
      deferred.steps.filter((s) => !s.description.startsWith("add local files")).every((s) => s.cached),
      "the deferred sources add no build step (only the files added after the build)",
    );
    assert.match(await run(deferred.imageId, script), /^hello from tinypkg 1\.0 mylib tool deep\n/);
  });

  test("runCommands volumes persist between builds and stay out of the layer", { timeout: 600_000 }, async () => {
    const tag = nonce();
    const def = (round: number) => `import { Image, Volume } from "strata";
export default Image.debianSlim({ pythonVersion: "3.11" })
  .env({ N: ${JSON.stringify(tag)}, ROUND: "${round}" })
  .runCommands("n=$(cat /vol/count 2>/dev/null || echo 0); echo $((n + 1)) > /vol/count; echo $n > /seen", {
    volumes: { "/vol": Volume.fromName("count-${tag}") },
  });
`;
    const dir = await project({ "one.ts": def(1), "two.ts": def(2) });
    const one = await buildJson(path.join(dir, "one.ts"));
    const two = await buildJson(path.join(dir, "two.ts"));
    assert.equal(await run(one.imageId, "cat /seen"), "0\n");
    assert.equal(await run(two.imageId, "cat /seen"), "1\n", "the second build saw what the first left in the volume");
    assert.equal(
      await run(two.imageId, "ls -A /vol 2>/dev/null | wc -l"),
      "0\n",
      "nothing of the volume is in the layer",
    );
  });
});

describe("poetryInstallFromFile with Debian's Poetry (trixie, Python 3.13)", () => {
  test("resolves without a lock, then installs from the lock it wrote; groups are honoured", {
    timeout: 900_000,
  }, async () => {
    const tag = nonce();
    const pyproject = `[tool.poetry]
name = "app"
version = "0.1.0"
description = "poetry e2e ${tag}"
authors = ["Strata Tests <tests@example.invalid>"]

[tool.poetry.dependencies]
python = ">=3.11"
tinypkg = "1.0"

[tool.poetry.group.extra]
optional = true

[tool.poetry.group.extra.dependencies]
otherpkg = "0.1"

[[tool.poetry.source]]
name = "local"
url = "${index.url}"
priority = "primary"
`;
    const base = `Image.debianSlim({ pythonVersion: "3.13" }).aptInstall("python3-poetry")`;
    const opts = `poetryVersion: null, network: "host"`;
    const dir = await project({
      "pyproject.toml": pyproject,
      "nolock.ts": `import { Image } from "strata";\nexport default ${base}.poetryInstallFromFile("./pyproject.toml", { ignoreLockfile: true, withGroups: ["extra"], ${opts} });\n`,
      "locker.ts": `import { Image } from "strata";\nexport default ${base}.addLocalFile("./pyproject.toml", "/lock/pyproject.toml", { copy: true }).runCommands("cd /lock && poetry lock", { network: "host" });\n`,
      "locked.ts": `import { Image } from "strata";\nexport default ${base}.poetryInstallFromFile("./pyproject.toml", { withoutGroups: ["extra"], ${opts} });\n`,
    });
    const nolock = await buildJson(path.join(dir, "nolock.ts"));
    assert.equal(
      await run(nolock.imageId, "python3 -c 'import tinypkg, otherpkg; print(tinypkg.hello())'"),
      "hello from tinypkg 1.0\n",
    );
    // The lock: written by poetry itself in a build, read out of the image.
    const locker = await buildJson(path.join(dir, "locker.ts"));
    const lock = await run(locker.imageId, "cat /lock/poetry.lock");
    assert.match(lock, /name = "tinypkg"/);
    await fsp.writeFile(path.join(dir, "poetry.lock"), lock);
    const locked = await buildJson(path.join(dir, "locked.ts"));
    assert.equal(
      await run(
        locked.imageId,
        "python3 -c 'import tinypkg; print(tinypkg.hello())'; python3 -c 'import otherpkg' 2>/dev/null || echo no-extra",
      ),
      "hello from tinypkg 1.0\nno-extra\n",
    );
    const again = await buildJson(path.join(dir, "locked.ts"));
    assert.equal(again.imageId, locked.imageId);
    await fsp.appendFile(path.join(dir, "poetry.lock"), "\n# changed\n");
    const changed = await buildJson(path.join(dir, "locked.ts"));
    assert.ok(!changed.steps.at(-1)!.cached, "a changed lock file rebuilds the step");
  });
});
