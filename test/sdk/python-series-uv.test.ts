// debianSlim's Python series and uv provisioning, as plans (pure: no build). Builder version 2026.12 offers every
// series 3.10–3.14 (Debian's Python or python-build-standalone), pins its Debian packages and provisions uv from its uv
// image; 2026.11's recipes (and so its keys) stay as they were.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { loadBuilderVersion } from "../../src/builder-version.js";
import { InvalidDefinitionError } from "../../src/errors.js";
import { render, type Instruction } from "../../src/plan/instructions.js";
import type { Plan, Step } from "../../src/plan/step.js";
import { Image } from "../../src/sdk/image.js";
import { declaresUvWorkspace } from "../../src/sdk/uv.js";

const NEW = "2026.12";
const OLD = "2026.11";
const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});
async function tmp(files: Record<string, string>): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-uv-plan-"));
  dirs.push(d);
  for (const [rel, content] of Object.entries(files)) await fsp.writeFile(path.join(d, rel), content);
  return d;
}
const lines = (s: Step) => s.instructions.map(render);

/** Runs `fn` with environment variables set (and restores them). */
function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars))
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
}
const clean = { STRATA_UV_IMAGE: undefined, STRATA_UV_BINARY: undefined, STRATA_PYTHON_STANDALONE: undefined };
const plan = (img: Image, v = NEW): Plan => withEnv(clean, () => img.plan(v));

describe("debianSlim python series (builder version 2026.12)", () => {
  test("every series 3.10–3.14 is offered; the builder version is the one place naming them", () => {
    assert.deepEqual(Object.keys(loadBuilderVersion(NEW).debian.python).sort(), [
      "3.10",
      "3.11",
      "3.12",
      "3.13",
      "3.14",
    ]);
    for (const v of ["3.10", "3.11", "3.12", "3.13", "3.14"]) {
      const p = plan(Image.debianSlim({ pythonVersion: v }));
      assert.equal(p.steps[0]!.base?.kind, "debian");
    }
  });

  test("3.11 and 3.13 use Debian's own Python; the base has pip, a toolchain, recorded versions, then uv", () => {
    for (const [v, suite] of [
      ["3.11", "bookworm"],
      ["3.13", "trixie"],
    ] as const) {
      const p = plan(Image.debianSlim({ pythonVersion: v }));
      const base = p.steps[0]!.base as Extract<Step["base"], { kind: "debian" }>;
      assert.equal(base.suite, suite);
      for (const pkg of ["python3", "python3-pip", "python3-venv", "python3-dev", "build-essential", "gfortran"])
        assert.ok(base.packages.includes(pkg), `${v}: ${pkg}`);
      assert.ok(base.pins && base.pins.length > 50, "the package versions are recorded");
      const pinned = new Map(base.pins);
      assert.ok(pinned.has("python3") && pinned.has("gcc"), "Python and the toolchain are among them");
      assert.deepEqual(
        p.steps.map((s) => s.method),
        ["debianSlim", "debianSlim"],
      );
      assert.deepEqual(lines(p.steps[1]!), ["COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /uvx /usr/local/bin/"]);
      assert.deepEqual(p.steps[1]!.inputs, [
        {
          kind: "select",
          name: "uv",
          root: { kind: "image", ref: "ghcr.io/astral-sh/uv:0.9.5" },
          patterns: ["/uv", "/uvx"],
        },
      ]);
    }
  });

  test("3.10, 3.12 and 3.14 get python-build-standalone on a bookworm base without Debian's Python", () => {
    for (const [v, full, release] of [
      ["3.10", "3.10.13", "20230826"],
      ["3.12", "3.12.1", "20240107"],
      ["3.14", "3.14.2", "20251205"],
    ] as const) {
      const p = plan(Image.debianSlim({ pythonVersion: v }));
      const base = p.steps[0]!.base as Extract<Step["base"], { kind: "debian" }>;
      assert.equal(base.suite, "bookworm");
      assert.equal(base.python, v);
      assert.ok(!base.packages.some((x) => x.startsWith("python3")), `${v}: no Debian Python in ${base.packages}`);
      assert.ok(base.packages.includes("build-essential"));
      const copy = p.steps[1]!;
      assert.deepEqual(lines(copy), ["COPY --from=python-build-standalone /python/. /usr/local"]);
      assert.match(copy.description, new RegExp(`CPython ${full.replace(/\./g, "\\.")}\\+${release}`));
      const stage = copy.inputs[0]!;
      assert.ok(stage.kind === "select" && stage.root.kind === "stage");
      const url = stage.root.plan.steps[1]!.inputs[0]!;
      assert.ok(
        url.kind === "url" &&
          url.url.includes(`/${release}/cpython-${full}+${release}-x86_64_v3-unknown-linux-gnu-install_only.tar.gz`),
      );
      const rest = p.steps.slice(2).map((s) => lines(s).join(" | "));
      assert.deepEqual(rest, [
        ...(v === "3.14" ? [] : ["COPY --from=python-symlink /bin/. /usr/local/bin/"]),
        "ENV TERMINFO_DIRS=/etc/terminfo:/lib/terminfo:/usr/share/terminfo:/usr/lib/terminfo",
        "COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /uvx /usr/local/bin/",
      ]);
    }
  });

  test("the python-build-standalone tarball comes from STRATA_PYTHON_STANDALONE_MIRROR; keys cover its content only", () => {
    const p = withEnv({ ...clean, STRATA_PYTHON_STANDALONE_MIRROR: "http://127.0.0.1:1/pbs" }, () =>
      Image.debianSlim({ pythonVersion: "3.10" }).plan(NEW),
    );
    const stage = p.steps[1]!.inputs[0]!;
    assert.ok(stage.kind === "select" && stage.root.kind === "stage");
    const url = stage.root.plan.steps[1]!.inputs[0]!;
    assert.ok(url.kind === "url");
    assert.equal(
      url.url,
      "http://127.0.0.1:1/pbs/20230826/cpython-3.10.13+20230826-x86_64_v3-unknown-linux-gnu-install_only.tar.gz",
    );
    // The step that reads the stage renders only the stage's name.
    assert.deepEqual(lines(p.steps[1]!), ["COPY --from=python-build-standalone /python/. /usr/local"]);
  });

  test("a forced debianSlim forces the steps that complete its base", () => {
    const p = plan(Image.debianSlim({ pythonVersion: "3.12", forceBuild: true }));
    assert.ok(p.steps.every((s) => s.forceBuild));
  });

  test("an unsupported series is an error listing the supported ones", () => {
    assert.throws(
      () => plan(Image.debianSlim({ pythonVersion: "3.9" })),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /Python 3\.9 is not supported by builder version 2026\.12; supported: 3\.10, 3\.11, 3\.12, 3\.13, 3\.14/.test(
          e.message,
        ),
    );
  });

  test("2026.11 keeps its two series and says which builder version offers the others", () => {
    assert.throws(
      () => plan(Image.debianSlim({ pythonVersion: "3.10" }), OLD),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /not supported by builder version 2026\.11; supported: 3\.11, 3\.13\. Builder version 2026\.12, PREVIEW offers it: set STRATA_BUILDER_VERSION=2026\.12/.test(
          e.message,
        ),
    );
    const old = plan(Image.debianSlim(), OLD);
    assert.equal(old.steps.length, 1, "no uv step, no pins: 2026.11's recipe and keys are unchanged");
    const base = old.steps[0]!.base as Extract<Step["base"], { kind: "debian" }>;
    assert.equal(base.pins, undefined);
    assert.deepEqual(base.packages, ["ca-certificates", "python-is-python3", "python3", "python3-pip", "python3-venv"]);
  });
});

describe("uv provisioned from the builder's uv image (2026.12)", () => {
  const run = (s: Step) => s.instructions.find((i) => i.op === "RUN") as Extract<Instruction, { op: "RUN" }>;

  test("uvPipInstall mounts /uv of ghcr.io/astral-sh/uv:<version> at /.uv/uv; nothing of uv enters the layer", () => {
    const p = plan(Image.fromScratch().uvPipInstall("b", "a", { uvVersion: "0.8.0" }));
    const s = p.steps[1]!;
    assert.deepEqual(lines(s), [
      "RUN --mount=type=bind,source=uv,target=/.uv/uv,readonly /.uv/uv pip install --system --compile-bytecode a b",
    ]);
    assert.deepEqual(s.inputs, [
      { kind: "select", name: "uv", root: { kind: "image", ref: "ghcr.io/astral-sh/uv:0.8.0" }, patterns: ["/uv"] },
    ]);
    assert.deepEqual(s.extra, [["uvVersion", "0.8.0"]]);
    assert.deepEqual(run(s).mounts, [{ type: "bind", source: "uv", target: "/.uv/uv", readonly: true }]);
  });

  test("STRATA_UV_IMAGE pulls from a mirror repository; the rendered step (and so the key) is the same", () => {
    const img = Image.fromScratch().uvPipInstall("a");
    const origin = plan(img);
    const mirrored = withEnv({ ...clean, STRATA_UV_IMAGE: "127.0.0.1:5000/mirror/uv" }, () => img.plan(NEW));
    assert.deepEqual(lines(mirrored.steps[1]!), lines(origin.steps[1]!));
    const input = mirrored.steps[1]!.inputs[0]!;
    assert.ok(input.kind === "select" && input.root.kind === "image");
    assert.equal(input.root.ref, "127.0.0.1:5000/mirror/uv:0.9.5");
    const base = withEnv({ ...clean, STRATA_UV_IMAGE: "127.0.0.1:5000/mirror/uv" }, () => Image.debianSlim().plan(NEW));
    assert.deepEqual(lines(base.steps[1]!), ["COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /uvx /usr/local/bin/"]);
    for (const bad of ["127.0.0.1:5000/mirror/uv:0.9.5", "mirror.example/uv@sha256:" + "0".repeat(64)])
      assert.throws(
        () => withEnv({ ...clean, STRATA_UV_IMAGE: bad }, () => img.plan(NEW)),
        /STRATA_UV_IMAGE=.*give a repository without a tag or digest/,
      );
  });

  test("STRATA_UV_BINARY is a migration error with 2026.12 and still works with 2026.11", () => {
    const img = Image.fromScratch().uvPipInstall("a");
    assert.throws(
      () => withEnv({ ...clean, STRATA_UV_BINARY: "/usr/bin/uv" }, () => img.plan(NEW)),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /STRATA_UV_BINARY is set, but builder version 2026\.12 provisions uv itself.*Unset STRATA_UV_BINARY.*STRATA_UV_IMAGE/.test(
          e.message,
        ),
    );
    const old = withEnv({ ...clean, STRATA_UV_BINARY: "/usr/bin/uv" }, () => img.plan(OLD));
    assert.deepEqual(lines(old.steps[1]!), [
      "RUN --mount=type=bind,source=builder:uv,target=/.strata/uv,readonly /.strata/uv pip install --system --compile-bytecode a",
    ]);
  });

  test("requirements takes a list: each file copied to /.uv/<i>/<name> and passed with --requirements", async () => {
    const d = await tmp({ "requirements.txt": "a\n", "dev.txt": "b\n" });
    const img = Image.fromScratch().uvPipInstall("c", {
      requirements: [path.join(d, "requirements.txt"), path.join(d, "dev.txt")],
    });
    const s = plan(img).steps[1]!;
    assert.deepEqual(lines(s), [
      "COPY requirements /.uv/0/requirements.txt",
      "COPY requirements.1 /.uv/1/dev.txt",
      "RUN --mount=type=bind,source=uv,target=/.uv/uv,readonly /.uv/uv pip install --system --compile-bytecode --requirements /.uv/0/requirements.txt --requirements /.uv/1/dev.txt c",
    ]);
    assert.deepEqual(
      s.inputs.map((i) => i.name),
      ["uv", "requirements", "requirements.1"],
    );
    // 2026.11: one file keeps its old place (and key); a list adds numbered files.
    const old = plan(img, OLD).steps[1]!;
    assert.deepEqual(lines(old).slice(0, 2), [
      "COPY requirements /.uv-requirements.txt",
      "COPY requirements.1 /.uv-requirements-1.txt",
    ]);
    assert.throws(
      () => Image.fromScratch().uvPipInstall({ requirements: [1] as unknown as string[] }),
      /requirements must be a path or a list of paths/,
    );
  });
});

describe("uvSync", () => {
  const PYPROJECT = '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["tinypkg>=1.0"]\n';

  test("with a lock: pyproject and uv.lock copied to /.uv, `uv sync --frozen`, the venv first on PATH", async () => {
    const d = await tmp({ "pyproject.toml": PYPROJECT, "uv.lock": "version = 1\n" });
    const p = plan(Image.debianSlim().uvSync(d, { groups: ["test"], extras: ["gpu", "viz"] }));
    const s = p.steps[2]!;
    assert.equal(s.method, "uvSync");
    assert.deepEqual(lines(s), [
      "COPY pyproject /.uv/pyproject.toml",
      "COPY lock /.uv/uv.lock",
      "RUN --mount=type=bind,source=uv,target=/.uv/uv,readonly /.uv/uv sync --project=/.uv --no-install-workspace --compile-bytecode --group=test --extra=gpu --extra=viz --frozen",
      "ENV PATH=/.uv/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    assert.deepEqual(
      s.inputs.map((i) => i.name),
      ["uv", "pyproject", "lock"],
    );
  });

  test("frozen: false, and no lock, leave out --frozen; extraOptions go before it", async () => {
    const locked = await tmp({ "pyproject.toml": PYPROJECT, "uv.lock": "version = 1\n" });
    const unlocked = await tmp({ "pyproject.toml": PYPROJECT });
    const cmd = (img: Image) => lines(plan(img).steps[1]!).find((l) => l.startsWith("RUN"))!;
    assert.match(cmd(Image.fromScratch().uvSync(locked, { frozen: false })), /--compile-bytecode$/);
    assert.match(cmd(Image.fromScratch().uvSync(locked, { extraOptions: "--no-dev" })), /--no-dev --frozen$/);
    const none = plan(Image.fromScratch().uvSync(unlocked)).steps[1]!;
    assert.deepEqual(
      none.inputs.map((i) => i.name),
      ["uv", "pyproject"],
    );
    assert.doesNotMatch(cmd(Image.fromScratch().uvSync(unlocked)), /--frozen/);
  });

  test("bad input is an error at definition time: no pyproject, a workspace, bad names, unknown options", async () => {
    const empty = await tmp({});
    assert.throws(() => Image.fromScratch().uvSync(empty), /has no pyproject\.toml/);
    assert.throws(() => Image.fromScratch().uvSync(path.join(empty, "nope")), InvalidDefinitionError);
    const ws = await tmp({ "pyproject.toml": `${PYPROJECT}\n[tool.uv.workspace]\nmembers = ["pkgs/*"]\n` });
    assert.throws(() => Image.fromScratch().uvSync(ws), /declares a uv workspace/);
    const d = await tmp({ "pyproject.toml": PYPROJECT });
    assert.throws(
      () => Image.fromScratch().uvSync(d, { groups: ["--all"] }),
      /groups must be a list of dependency group names/,
    );
    assert.throws(
      () => Image.fromScratch().uvSync(d, { extras: "gpu" as unknown as string[] }),
      /extras must be a list/,
    );
    assert.throws(
      () => Image.fromScratch().uvSync(d, { frozen: "yes" as unknown as boolean }),
      /frozen must be true or false/,
    );
    assert.throws(() => Image.fromScratch().uvSync(d, { gpu: "A100" } as never), /gpu/);
  });

  test("uvSync with 2026.11 mounts the image's own uv (builder:uv), as its uvPipInstall does", async () => {
    const d = await tmp({ "pyproject.toml": PYPROJECT });
    const s = plan(Image.fromScratch().uvSync(d), OLD).steps[1]!;
    assert.match(lines(s)[1]!, /^RUN --mount=type=bind,source=builder:uv,target=\/\.uv\/uv,readonly \/\.uv\/uv sync/);
  });

  test("workspace detection reads tables and dotted keys, not comments or strings elsewhere", () => {
    assert.equal(declaresUvWorkspace("[tool.uv.workspace]\nmembers=[]\n"), true);
    assert.equal(declaresUvWorkspace("[tool.uv]\nworkspace = { members = [] }\n"), true);
    assert.equal(declaresUvWorkspace("[tool]\nuv.workspace.members = []\n"), true);
    assert.equal(declaresUvWorkspace("# [tool.uv.workspace]\n[tool.uv]\ndev-dependencies = []\n"), false);
    assert.equal(declaresUvWorkspace('[project]\nname = "workspace"\n'), false);
  });
});
