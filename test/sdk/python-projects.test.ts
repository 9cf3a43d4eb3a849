// Issue 13 item 3: pipInstallFromPyproject, poetryInstallFromFile, addLocalPythonSource, and build-time volumes on
// runCommands/runFunction — what each compiles to (the plan, as Modal's builder emits it), what is keyed, and the
// errors for bad input.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { loadBuilderVersion } from "../../src/builder-version.js";
import { keyInputsFor } from "../../src/engine/build.js";
import { resolveInput } from "../../src/engine/inputs.js";
import { InvalidDefinitionError, LocalPathError } from "../../src/errors.js";
import { initKeys, stepKey } from "../../src/keys/step-key.js";
import { render } from "../../src/plan/instructions.js";
import type { Plan, Step } from "../../src/plan/step.js";
import { Image } from "../../src/sdk/image.js";
import { poetrySpec } from "../../src/sdk/python-project-steps.js";
import { findPythonSource, nonPythonFiles, pythonSearchPath } from "../../src/sdk/python-source.js";
import { pyprojectDependencies } from "../../src/sdk/pyproject.js";
import { Volume } from "../../src/sdk/volume.js";
import type { Digest } from "../../src/util/digest.js";

const BV = "2026.11";
const tmp = mkdtempSync(path.join(os.tmpdir(), "strata-python-projects-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
before(initKeys);

function write(rel: string, content: string): string {
  const f = path.join(tmp, rel);
  mkdirSync(path.dirname(f), { recursive: true });
  writeFileSync(f, content);
  return f;
}

function rejects(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InvalidDefinitionError || e instanceof LocalPathError, `unexpected ${String(e)}`);
    for (const p of patterns) assert.match((e as Error).message, p);
    return true;
  });
}

const lastStep = (img: Image): Step => img.plan(BV).steps.at(-1)!;
const lines = (s: Step) => s.instructions.map(render);
const loose = (o: Record<string, unknown>): any => o;

const PARENT = `sha256:${"ab".repeat(32)}` as Digest;
async function keyOf(plan: Plan): Promise<string> {
  const s = plan.steps.at(-1)!;
  const resolved = [];
  for (const i of s.inputs) resolved.push(await resolveInput(i));
  return stepKey(keyInputsFor(loadBuilderVersion(BV), s, PARENT, resolved));
}

const PYPROJECT = `[project]
name = "app"
version = "0.1.0"
dependencies = ["requests>=2", "numpy==2.1.0", "attrs"]

[project.optional-dependencies]
dev = ["pytest", "attrs"]
docs = ["sphinx"]
`;

describe("pyproject dependencies", () => {
  test("[project] dependencies plus chosen optional groups, sorted, without duplicates", () => {
    assert.deepEqual(pyprojectDependencies("m", "p.toml", PYPROJECT), ["attrs", "numpy==2.1.0", "requests>=2"]);
    assert.deepEqual(pyprojectDependencies("m", "p.toml", PYPROJECT, ["dev", "docs"]), [
      "attrs",
      "numpy==2.1.0",
      "pytest",
      "requests>=2",
      "sphinx",
    ]);
  });

  test("bad files and groups are errors naming the file, the line and what exists", () => {
    rejects(
      () => pyprojectDependencies("m", "p.toml", PYPROJECT, ["test"]),
      /no optional dependency group "test" \(it has dev, docs\)/,
    );
    rejects(
      () => pyprojectDependencies("m", "p.toml", '[project]\nname = "x"\n', ["dev"]),
      /defines no \[project\.optional-dependencies\]/,
    );
    rejects(() => pyprojectDependencies("m", "p.toml", "[project\nname=1\n"), /^m: p\.toml:1:\d+ is not valid TOML/);
    rejects(
      () => pyprojectDependencies("m", "p.toml", '[tool.poetry]\nname = "x"\n'),
      /no \[project\] table.*poetryInstallFromFile/,
    );
    rejects(
      () => pyprojectDependencies("m", "p.toml", '[project]\ndependencies = "x"\n'),
      /dependencies must be a list/,
    );
    rejects(() => pyprojectDependencies("m", "p.toml", '[project]\ndynamic = ["dependencies"]\n'), /dynamic/);
  });
});

describe("pipInstallFromPyproject", () => {
  test("emits pipInstall's line for the dependencies; file order does not change the key", async () => {
    const a = write("pp/a/pyproject.toml", PYPROJECT);
    const b = write(
      "pp/b/pyproject.toml",
      PYPROJECT.replace('["requests>=2", "numpy==2.1.0", "attrs"]', '["attrs", "requests>=2", "numpy==2.1.0"]'),
    );
    const img = Image.fromScratch().pipInstallFromPyproject(a, {
      optionalDependencies: ["docs"],
      indexUrl: "http://i/simple",
    });
    const step = lastStep(img);
    assert.equal(step.method, "pipInstallFromPyproject");
    assert.deepEqual(
      lines(step),
      ["RUN python -m pip install attrs numpy==2.1.0 requests\\>=2 sphinx --index-url http://i/simple"].map((l) =>
        l.replace("requests\\>=2", "'requests>=2'"),
      ),
    );
    const pa = Image.fromScratch().pipInstallFromPyproject(a).plan(BV);
    const pb = Image.fromScratch().pipInstallFromPyproject(b).plan(BV);
    assert.equal(await keyOf(pa), await keyOf(pb));
    const withDev = Image.fromScratch()
      .pipInstallFromPyproject(a, { optionalDependencies: ["dev"] })
      .plan(BV);
    assert.notEqual(await keyOf(pa), await keyOf(withDev));
  });

  test("no dependencies: no layer; a missing file or unknown option is an error", () => {
    const empty = write("pp/empty/pyproject.toml", '[project]\nname = "x"\n');
    assert.equal(Image.fromScratch().pipInstallFromPyproject(empty).plan(BV).steps.length, 1);
    rejects(
      () => Image.fromScratch().pipInstallFromPyproject(path.join(tmp, "nope.toml")),
      /cannot read the pyproject file/,
    );
    rejects(
      () => Image.fromScratch().pipInstallFromPyproject(empty, loose({ optional_dependencies: ["dev"] })),
      /camelCase.*optionalDependencies/,
    );
  });
});

describe("poetryInstallFromFile", () => {
  const dir = path.join(tmp, "poetry");
  const pyproject = write("poetry/pyproject.toml", '[tool.poetry]\nname = "app"\nversion = "0.1.0"\n');
  const lock = write("poetry/poetry.lock", "# lock v1\n");

  test("Modal's lines: poetry, lock and pyproject into /tmp/poetry, poetry install --no-root … --compile", () => {
    const step = lastStep(
      Image.fromScratch().poetryInstallFromFile(pyproject, {
        withGroups: ["dev", "test"],
        withoutGroups: ["docs"],
        only: ["main"],
        oldInstaller: true,
      }),
    );
    assert.deepEqual(lines(step), [
      "RUN python -m pip install poetry",
      "RUN poetry config experimental.new-installer false",
      "COPY poetry-lock /tmp/poetry/poetry.lock",
      "COPY pyproject /tmp/poetry/pyproject.toml",
      "RUN cd /tmp/poetry && poetry config virtualenvs.create false && poetry install --no-root --with dev,test --without docs --only main --compile",
    ]);
    assert.deepEqual(
      step.inputs.map((i) => i.kind === "file" && [i.name, i.localPath]),
      [
        ["poetry-lock", lock],
        ["pyproject", pyproject],
      ],
    );
  });

  test("poetryVersion: latest, X.Y, X.Y.Z, null (the image's own); bad versions are errors", () => {
    assert.equal(poetrySpec("m", "latest"), "poetry");
    assert.equal(poetrySpec("m", "1.8"), "poetry~=1.8");
    assert.equal(poetrySpec("m", "1.8.3"), "poetry==1.8.3");
    rejects(() => poetrySpec("m", "1.8; rm -rf /"), /not "latest", X\.Y or X\.Y\.Z/);
    const own = lastStep(Image.fromScratch().poetryInstallFromFile(pyproject, { poetryVersion: null }));
    assert.ok(!lines(own).some((l) => l.includes("pip install")));
  });

  test("the lock file: beside the pyproject by default, or poetryLockfile, or ignoreLockfile; its content is keyed", async () => {
    const other = write("poetry-other/poetry.lock", "# lock v2\n");
    const byDefault = Image.fromScratch().poetryInstallFromFile(pyproject).plan(BV);
    const named = Image.fromScratch().poetryInstallFromFile(pyproject, { poetryLockfile: other }).plan(BV);
    const none = Image.fromScratch().poetryInstallFromFile(pyproject, { ignoreLockfile: true }).plan(BV);
    assert.ok(!lines(none.steps.at(-1)!).some((l) => l.includes("poetry.lock")));
    const keys = new Set([await keyOf(byDefault), await keyOf(named), await keyOf(none)]);
    assert.equal(keys.size, 3);
    const lonely = write("poetry-nolock/pyproject.toml", "[tool.poetry]\n");
    rejects(
      () => Image.fromScratch().poetryInstallFromFile(lonely),
      /poetry\.lock beside the pyproject; pass poetryLockfile, or ignoreLockfile: true/,
    );
    rejects(
      () => Image.fromScratch().poetryInstallFromFile(pyproject, { poetryLockfile: other, ignoreLockfile: true }),
      /contradict/,
    );
    rejects(
      () => Image.fromScratch().poetryInstallFromFile(pyproject, { withGroups: ["a b"] }),
      /withGroups must be a list of group names/,
    );
    rejects(
      () => Image.fromScratch().poetryInstallFromFile(pyproject, loose({ with_: ["dev"] })),
      /unknown option "with_"/,
    );
    assert.ok(dir);
  });
});

describe("addLocalPythonSource", () => {
  const root = path.join(tmp, "src-tree");
  write("src-tree/app/__init__.py", "");
  write("src-tree/app/main.py", "print('hi')\n");
  write("src-tree/app/data.json", "{}\n");
  write("src-tree/app/__pycache__/main.cpython-311.pyc", "x");
  write("src-tree/app/.hidden/secret.py", "x");
  write("src-tree/app/sub/util.py", "x");
  write("src-tree/helpers.py", "x");
  write("src-tree/ns/part.py", "x");
  write("other-tree/app/__init__.py", "# shadowed\n");
  write("other-tree/ns/second.py", "x");

  test("the search path: PYTHONPATH's entries (empty = cwd), then the current directory", () => {
    assert.deepEqual(pythonSearchPath({ PYTHONPATH: "/a:rel" }, "/w"), ["/a", "/w/rel", "/w"]);
    assert.deepEqual(pythonSearchPath({}, "/w"), ["/w"]);
    assert.deepEqual(pythonSearchPath({ PYTHONPATH: ":/a" }, "/w"), ["/w", "/a"]);
  });

  test("packages, single modules, dotted names and namespace packages are found as Python finds them", () => {
    const search = [root, path.join(tmp, "other-tree")];
    assert.deepEqual(findPythonSource("m", "app", search), [
      { kind: "package", localPath: path.join(root, "app"), remotePath: "/root/app" },
    ]);
    assert.deepEqual(findPythonSource("m", "helpers", search), [
      { kind: "module", localPath: path.join(root, "helpers.py"), remotePath: "/root/helpers.py" },
    ]);
    assert.deepEqual(findPythonSource("m", "app.sub.util", search), [
      { kind: "module", localPath: path.join(root, "app/sub/util.py"), remotePath: "/root/app/sub/util.py" },
    ]);
    assert.deepEqual(
      findPythonSource("m", "ns", search).map((s) => s.localPath),
      [path.join(root, "ns"), path.join(tmp, "other-tree/ns")],
    );
    rejects(() => findPythonSource("m", "missing", search), /no Python module "missing".*PYTHONPATH/);
    rejects(() => findPythonSource("m", "../etc", search), /not a Python module name/);
  });

  test("by default only .py files go, without dot-names and __pycache__; under /root; copy: true makes a layer", () => {
    const skip = nonPythonFiles(path.join(root, "app"));
    assert.deepEqual(
      ["__init__.py", "main.py", "data.json", "__pycache__", ".hidden", "sub", "sub/util.py"].map(skip),
      [false, false, true, true, true, false, false],
    );
    const cwd = process.cwd();
    process.chdir(root);
    try {
      const deferred = Image.fromScratch().addLocalPythonSource("app", "helpers").plan(BV);
      assert.deepEqual(
        deferred.deferred.map((d) => [d.kind, d.remotePath, d.ignore]),
        [
          ["dir", "/root/app", [".hidden", "__pycache__", "data.json"]],
          ["file", "/root/helpers.py", []],
        ],
      );
      const copied = Image.fromScratch().addLocalPythonSource("app", { copy: true }).plan(BV);
      const s = copied.steps.at(-1)!;
      assert.equal(s.method, "addLocalPythonSource");
      assert.deepEqual(lines(s), ["COPY context /root/app"]);
      const all = Image.fromScratch().addLocalPythonSource("app", { ignore: [] }).plan(BV);
      assert.deepEqual(all.deferred[0]!.ignore, []);
      rejects(() => Image.fromScratch().addLocalPythonSource(), /name at least one module/);
      rejects(() => Image.fromScratch().addLocalPythonSource("app", loose({ gpu: "T4" })), /option "gpu"/);
    } finally {
      process.chdir(cwd);
    }
  });
});

describe("build-time volumes", () => {
  test("runCommands and runFunction mount each volume as a cache mount in every RUN; name and path are keyed", async () => {
    const img = Image.fromScratch().runCommands("a", "b", {
      volumes: { "/root/.cache/hf/": Volume.fromName("hf"), "/data": "weights" },
    });
    assert.deepEqual(lines(lastStep(img)), [
      "RUN --mount=type=cache,id=volume-weights,target=/data,sharing=shared --mount=type=cache,id=volume-hf,target=/root/.cache/hf,sharing=shared a",
      "RUN --mount=type=cache,id=volume-weights,target=/data,sharing=shared --mount=type=cache,id=volume-hf,target=/root/.cache/hf,sharing=shared b",
    ]);
    const fn = Image.fromScratch().runFunction(() => 1, { volumes: { "/cache": "c" } });
    assert.ok(lines(lastStep(fn))[0]!.includes("--mount=type=cache,id=volume-c,target=/cache,sharing=shared"));
    const k = async (v: Record<string, string>) => keyOf(Image.fromScratch().runCommands("a", { volumes: v }).plan(BV));
    const keys = new Set([await k({}), await k({ "/c": "x" }), await k({ "/c": "y" }), await k({ "/d": "x" })]);
    assert.equal(keys.size, 4);
  });

  test("bad volumes are definition errors", () => {
    const run = (v: unknown) => () => Image.fromScratch().runCommands("a", loose({ volumes: v }));
    rejects(run({ "relative/path": "v" }), /must be an absolute path other than \//);
    rejects(run({ "/": "v" }), /absolute path other than \//);
    rejects(run({ "/a/../b": "v" }), /no \. or \.\. parts/);
    rejects(run({ "/a": "v", "/a/b": "w" }), /"\/a\/b" is inside \(or is\) the volume at "\/a"/);
    rejects(run({ "/a": 3 }), /must be a Volume/);
    rejects(run(["/a"]), /volumes must be an object/);
    rejects(run({ "/a": "bad name!" }), /is not a volume name/);
    rejects(() => Volume.fromName("v", { createIfMissing: false }), /createIfMissing: false is not supported/);
  });
});
