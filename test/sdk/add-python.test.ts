// addPython: how it compiles (stages, steps, order, sources of the tarball) and what it rejects. Builds are in
// test/e2e/add-python.test.ts.
import assert from "node:assert/strict";
import { promises as fsp, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import tar from "tar-stream";
import { loadBuilderVersion, packageRoot } from "../../src/builder-version.js";
import { InvalidDefinitionError, LocalPathError } from "../../src/errors.js";
import { render } from "../../src/plan/instructions.js";
import type { Plan, Step, StepInput } from "../../src/plan/step.js";
import { Image } from "../../src/sdk/image.js";
import {
  PYTHON_STANDALONE_ENV,
  PYTHON_STANDALONE_MIRROR_ENV,
  TERMINFO_DIRS,
  pythonStandaloneTable,
} from "../../src/sdk/python.js";

const BV = "2026.11";
const REF = "127.0.0.1:5000/team/busybox:1";
const URL_311 =
  "https://github.com/astral-sh/python-build-standalone/releases/download/20230826/cpython-3.11.5+20230826-x86_64_v3-unknown-linux-gnu-install_only.tar.gz";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

/** Runs `fn` with the addPython variables set as given (unset otherwise), restoring them after. */
function withEnv<T>(
  vars: Partial<Record<typeof PYTHON_STANDALONE_ENV | typeof PYTHON_STANDALONE_MIRROR_ENV, string>>,
  fn: () => T,
): T {
  const saved = [PYTHON_STANDALONE_ENV, PYTHON_STANDALONE_MIRROR_ENV].map((k) => [k, process.env[k]] as const);
  for (const [k] of saved) delete process.env[k];
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const rendered = (s: Step) => s.instructions.map(render);
function stageOf(s: Step): Plan {
  const i = s.inputs[0]!;
  assert.ok(i.kind === "select" && i.root.kind === "stage");
  return i.root.plan;
}
function tarballInput(s: Step): StepInput {
  return stageOf(s).steps[1]!.inputs[0]!;
}

describe("addPython", () => {
  test("fromRegistry: COPY of the python/ tree, the python symlink, TERMINFO_DIRS, each its own step right after FROM and before the setup commands", () => {
    const plan = withEnv({}, () =>
      Image.fromRegistry(REF, { addPython: "3.11", setupDockerfileCommands: ["ENV SETUP=1"] }).plan(BV),
    );
    assert.deepEqual(
      plan.steps.map((s) => [s.method, ...rendered(s)]),
      [
        ["fromRegistry"],
        ["addPython", "COPY --from=python-build-standalone /python/. /usr/local"],
        ["addPython", "COPY --from=python-symlink /bin/. /usr/local/bin/"],
        ["addPython", `ENV TERMINFO_DIRS=${TERMINFO_DIRS}`],
        ["dockerfile", "ENV SETUP=1"],
      ],
    );
    // The python stage: an empty image plus the release unpacked by ADD --unpack=true, owned by root.
    const stage = stageOf(plan.steps[1]!);
    assert.equal(stage.builderVersion, BV);
    assert.deepEqual(stage.steps[0]!.base, { kind: "scratch" });
    assert.deepEqual(rendered(stage.steps[1]!), [`ADD --chown=0:0 --unpack=true ${URL_311} /`]);
    const input = tarballInput(plan.steps[1]!);
    assert.equal(input.kind, "url");
    if (input.kind !== "url") return;
    assert.equal(input.url, URL_311);
    assert.equal(input.checksum, undefined, "no sha256 in the table: the downloaded content's digest is what is keyed");
    assert.match(input.help ?? "", /STRATA_PYTHON_STANDALONE/);
    assert.match(input.help ?? "", /cpython-3\.11\.5\+20230826-x86_64_v3-unknown-linux-gnu-install_only\.tar\.gz/);
    // The symlink stage unpacks the committed tar.
    const links = stageOf(plan.steps[2]!);
    assert.deepEqual(rendered(links.steps[1]!), ["ADD python-symlink.tar /"]);
    assert.deepEqual(plan.steps[2]!.inputs[0]!.kind === "select" && plan.steps[2]!.inputs[0]!.patterns, ["/bin/."]);
  });

  test("Python 3.13 and later get no symlink step (Modal adds it below 3.13)", () => {
    const plan = withEnv({}, () => Image.fromRegistry(REF, { addPython: "3.13" }).plan(BV));
    assert.deepEqual(
      plan.steps.map((s) => rendered(s)[0]),
      [undefined, "COPY --from=python-build-standalone /python/. /usr/local", `ENV TERMINFO_DIRS=${TERMINFO_DIRS}`],
    );
    assert.match((tarballInput(plan.steps[1]!) as { url: string }).url, /\/20241008\/cpython-3\.13\.0\+20241008-/);
  });

  test("fromAwsEcr, fromGcpArtifactRegistry and fromDockerfile take addPython too (after the Dockerfile's steps)", async () => {
    const ecr = withEnv({}, () =>
      Image.fromAwsEcr("123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7", {
        secret: { AWS_ACCESS_KEY_ID: "AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY: "k", AWS_REGION: "us-east-1" },
        addPython: "3.12",
      }).plan(BV),
    );
    assert.deepEqual(
      ecr.steps.map((s) => s.method),
      ["fromAwsEcr", "addPython", "addPython", "addPython"],
    );
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-addpython-"));
    dirs.push(dir);
    await fsp.writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nENV A=1\n");
    const df = withEnv({}, () => Image.fromDockerfile(path.join(dir, "Dockerfile"), { addPython: "3.11" }).plan(BV));
    assert.deepEqual(
      df.steps.map((s) => rendered(s)[0]),
      [
        `ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
        "ENV A=1",
        "COPY --from=python-build-standalone /python/. /usr/local",
        "COPY --from=python-symlink /bin/. /usr/local/bin/",
        `ENV TERMINFO_DIRS=${TERMINFO_DIRS}`,
      ],
    );
  });

  test("only X.Y is accepted, and a series the builder version does not pin is a clear error naming the supported ones", () => {
    assert.throws(
      () => Image.fromRegistry(REF, { addPython: "3.11.5" }),
      (e: unknown) => e instanceof InvalidDefinitionError && /X\.Y.*not a patch version/.test(e.message),
    );
    assert.throws(() => Image.fromRegistry(REF, { addPython: "3" }), InvalidDefinitionError);
    assert.throws(() => Image.fromRegistry(REF, { addPython: 3.11 as unknown as string }), InvalidDefinitionError);
    assert.throws(
      () => Image.fromRegistry(REF, { addPython: "3.9" }).plan(BV),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        e.message.includes(
          "addPython 3.9 is not supported by builder version 2026.11; supported: 3.10, 3.11, 3.12, 3.13, 3.14",
        ),
    );
  });

  test("the builder versions pin python-build-standalone releases by their documented URL pattern", () => {
    for (const v of ["2026.11", "PREVIEW"]) {
      const table = pythonStandaloneTable(loadBuilderVersion(v));
      assert.ok(table, v);
      for (const [series, r] of Object.entries(table.releases)) {
        assert.ok(r.version.startsWith(series + "."), `${v} ${series}`);
        assert.equal(
          r.url,
          `https://github.com/astral-sh/python-build-standalone/releases/download/${r.release}/cpython-${r.version}+${r.release}-x86_64_v3-unknown-linux-gnu-install_only.tar.gz`,
        );
        if (r.sha256 !== undefined) assert.match(r.sha256, /^[0-9a-f]{64}$/);
      }
    }
  });

  test("STRATA_PYTHON_STANDALONE_MIRROR replaces the download host and path prefix", () => {
    const plan = withEnv({ STRATA_PYTHON_STANDALONE_MIRROR: "http://127.0.0.1:9/pbs/" }, () =>
      Image.fromRegistry(REF, { addPython: "3.11" }).plan(BV),
    );
    assert.equal(
      (tarballInput(plan.steps[1]!) as { url: string }).url,
      "http://127.0.0.1:9/pbs/20230826/cpython-3.11.5+20230826-x86_64_v3-unknown-linux-gnu-install_only.tar.gz",
    );
  });

  test("STRATA_PYTHON_STANDALONE: a tarball, or the release's file in a directory; missing or mismatched ones are errors", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-addpython-"));
    dirs.push(dir);
    const file = path.join(dir, "my build [x].tar.gz");
    await fsp.writeFile(file, "not read when planning");
    const fromFile = withEnv({ STRATA_PYTHON_STANDALONE: file }, () =>
      Image.fromRegistry(REF, { addPython: "3.11" }).plan(BV),
    );
    const input = tarballInput(fromFile.steps[1]!);
    assert.deepEqual(input, {
      kind: "select",
      name: "tarball",
      root: { kind: "context", localPath: dir, ignore: [] },
      patterns: ["my build \\[x].tar.gz"],
    });
    assert.deepEqual(rendered(stageOf(fromFile.steps[1]!).steps[1]!), [
      'ADD --chown=0:0 --unpack=true ["my build [x].tar.gz","/"]',
    ]);
    // The main chain's instructions do not depend on where the tarball came from (the key covers its content).
    const fromUrl = withEnv({}, () => Image.fromRegistry(REF, { addPython: "3.11" }).plan(BV));
    assert.deepEqual(fromFile.steps.map(rendered), fromUrl.steps.map(rendered));

    const release = "cpython-3.11.5+20230826-x86_64_v3-unknown-linux-gnu-install_only.tar.gz";
    assert.throws(
      () => withEnv({ STRATA_PYTHON_STANDALONE: dir }, () => Image.fromRegistry(REF, { addPython: "3.11" }).plan(BV)),
      (e: unknown) => e instanceof LocalPathError && e.message.includes(`has no ${release}`),
    );
    await fsp.writeFile(path.join(dir, release), "");
    const fromDir = withEnv({ STRATA_PYTHON_STANDALONE: dir }, () =>
      Image.fromRegistry(REF, { addPython: "3.11" }).plan(BV),
    );
    assert.deepEqual((tarballInput(fromDir.steps[1]!) as { patterns: string[] }).patterns, [release]);
    assert.throws(
      () =>
        withEnv({ STRATA_PYTHON_STANDALONE: path.join(dir, release) }, () =>
          Image.fromRegistry(REF, { addPython: "3.12" }).plan(BV),
        ),
      /addPython 3\.12, but STRATA_PYTHON_STANDALONE=.* is a build of Python 3\.11/,
    );
    assert.throws(
      () =>
        withEnv({ STRATA_PYTHON_STANDALONE: path.join(dir, "missing.tar.gz") }, () =>
          Image.fromRegistry(REF, { addPython: "3.11" }).plan(BV),
        ),
      (e: unknown) => e instanceof LocalPathError && /does not exist/.test(e.message),
    );
  });

  test("the committed symlink tar holds exactly bin/ (0755) and bin/python -> /usr/local/bin/python3, owned by root", async () => {
    const bytes = readFileSync(path.join(packageRoot(), "builders", "python-standalone", "python-symlink.tar"));
    const entries: { name: string; type: string; mode: number; uid: number; gid: number; linkname?: string | null }[] =
      [];
    const ex = tar.extract();
    await new Promise<void>((resolve, reject) => {
      ex.on("entry", (h, stream, next) => {
        entries.push({
          name: h.name,
          type: h.type ?? "",
          mode: h.mode ?? 0,
          uid: h.uid ?? -1,
          gid: h.gid ?? -1,
          linkname: h.linkname,
        });
        stream.on("end", next);
        stream.resume();
      });
      ex.on("finish", resolve);
      ex.on("error", reject);
      ex.end(bytes);
    });
    assert.deepEqual(entries, [
      { name: "bin/", type: "directory", mode: 0o755, uid: 0, gid: 0, linkname: null },
      { name: "bin/python", type: "symlink", mode: 0o777, uid: 0, gid: 0, linkname: "/usr/local/bin/python3" },
    ]);
  });
});
