// The three real Modal definitions in examples/ (Dagster's, ZenML's, a language-learning app's), built with
// `strata build` and run with `strata run` as a user would, with every network source on loopback: the wheel index,
// a token-protected registry (the ZenML stack's private image) and one holding the uv test image, and the
// python-build-standalone mirror (a TEST FIXTURE made from this machine's Python, test/support/python-fixture.ts).
// Builder version 2026.12 and the same fixture as test/e2e/python-uv.test.ts, so the 3.10 base is shared with it.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { hostPythonTarball, standaloneFixtureAvailable } from "../support/python-fixture.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { buildJson, REPO_ROOT, scratchSpace, strata } from "../support/strata.js";
import { startWheelIndex, UV_DOUBLE_PATH, type WheelIndex } from "../support/wheel-index.js";

const exec = promisify(execFile);
const RELEASE = "20230826";
const RELEASE_FILE = `cpython-3.10.13+${RELEASE}-x86_64_v3-unknown-linux-gnu-install_only.tar.gz`;
const EXAMPLES = path.join(REPO_ROOT, "examples");
const skip = standaloneFixtureAvailable()
  ? false
  : "needs the host's /usr/bin/python3.11, Debian's python3-pip and patchelf to build the python-build-standalone fixture";

const space = scratchSpace();
let uvRegistry: TestRegistry;
let privateRegistry: TestRegistry;
let index: WheelIndex;
let mirror: { url: string; server: Server };
let env: Record<string, string>;

async function serveDir(dir: string): Promise<{ url: string; server: Server }> {
  const server = createServer(async (req, res) => {
    try {
      const body = await fsp.readFile(path.join(dir, decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname)));
      res.writeHead(200, { "content-length": body.length });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function definition(body: string, files: Record<string, string> = {}): Promise<{ def: string; dir: string }> {
  const dir = await space.scratch();
  for (const [rel, content] of Object.entries(files)) await fsp.writeFile(path.join(dir, rel), content);
  const def = path.join(dir, "image.ts");
  await fsp.writeFile(def, `import { Image } from "strata";\n${body}\n`);
  return { def, dir };
}

/** Exports `imageId` as an OCI layout and copies it to `ref` with skopeo (`creds`: user:password, if any). */
async function push(imageId: string, ref: string, creds?: string): Promise<void> {
  const layout = path.join(await space.scratch(), "layout");
  const exported = await strata(["export", imageId, "--oci", layout]);
  assert.equal(exported.code, 0, exported.stderr);
  await exec("skopeo", [
    "--insecure-policy",
    "copy",
    "--dest-tls-verify=false",
    ...(creds ? ["--dest-creds", creds] : []),
    `oci:${layout}:latest`,
    `docker://${ref}`,
  ]);
}

before(async () => {
  if (skip) return;
  uvRegistry = await startRegistry();
  privateRegistry = await startRegistry({ auth: "token", users: { zenml: "zenml-registry-pw-4d2c" } });
  index = await startWheelIndex();
  const { def, dir } = await definition(
    `export default Image.fromScratch().addLocalFile(${JSON.stringify(UV_DOUBLE_PATH)}, "/uv", { copy: true }).addLocalFile("./uvx", "/uvx", { copy: true });`,
    { uvx: '#!/bin/sh\necho "uvx (test double): not supported" >&2\nexit 2\n' },
  );
  await fsp.chmod(path.join(dir, "uvx"), 0o755);
  await push((await buildJson(def)).imageId, `${uvRegistry.host}/astral-sh/uv:0.9.5`);
  const served = await space.scratch();
  await fsp.mkdir(path.join(served, "pbs", RELEASE), { recursive: true });
  await hostPythonTarball(path.join(served, "pbs", RELEASE), RELEASE_FILE, {}, { standalone: true });
  mirror = await serveDir(served);
  env = {
    STRATA_BUILDER_VERSION: "2026.12",
    STRATA_UV_IMAGE: `${uvRegistry.host}/astral-sh/uv`,
    STRATA_PYTHON_STANDALONE_MIRROR: `${mirror.url}/pbs`,
    STRATA_PYTHON_STANDALONE: "",
    STRATA_UV_BINARY: "",
    // Debian's archive moves at each point release; the examples are about the definitions, not the pins.
    STRATA_DEBIAN_PINS: "warn",
    WHEELS_URL: index.url,
  };
});

after(async () => {
  mirror?.server.close();
  await index?.close();
  await uvRegistry?.stop();
  await privateRegistry?.stop();
  await space.cleanup();
});

const sh = async (id: string, script: string) => strata(["run", id, "--", "sh", "-c", script]);

describe("examples/: real Modal definitions, translated call for call", { skip }, () => {
  test("dagster.ts: Python 3.10 from python-build-standalone, git and ffmpeg, pip installs from the index", {
    timeout: 1_800_000,
  }, async () => {
    const built = await buildJson(path.join(EXAMPLES, "dagster.ts"), [], { env });
    assert.equal(
      built.steps.filter((s) => s.description.startsWith("aptInstall")).length,
      2,
      JSON.stringify(built.steps),
    );
    const r = await sh(
      built.imageId,
      "python -c 'import sys; print(sys.prefix)'; python -c 'import tinypkg, otherpkg; print(tinypkg.VERSION, otherpkg.VERSION)'; git --version | cut -d' ' -f1-2; command -v ffmpeg",
    );
    assert.equal(r.code, 0, r.stderr);
    // /usr/local: the standalone CPython (the fixture's interpreter is the host's, so its version is not asserted).
    assert.equal(r.stdout, "/usr/local\n2.0 0.1\ngit version\n/usr/bin/ffmpeg\n");
  });

  test("zenml.ts: the stack's private image from a token-protected registry, with the registry secret", {
    timeout: 1_800_000,
  }, async () => {
    const { def } = await definition(`export default Image.debianSlim({ pythonVersion: "3.10" });`);
    const base = await buildJson(def, [], { env });
    const ref = `${privateRegistry.host}/zenml/pipeline-step:latest`;
    await push(base.imageId, ref, privateRegistry.creds);
    const zenmlEnv = { ...env, ZENML_IMAGE: ref, ZENML_REGISTRY_USERNAME: "zenml" };
    const wrong = await strata(["build", path.join(EXAMPLES, "zenml.ts")], {
      env: { ...zenmlEnv, ZENML_REGISTRY_PASSWORD: "not-the-password" },
    });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /401|credentials|unauthorized/i);
    assert.ok(!wrong.stderr.includes("not-the-password"));
    const unset = await strata(["build", path.join(EXAMPLES, "zenml.ts")], { env: { ...env, ZENML_IMAGE: "" } });
    assert.notEqual(unset.code, 0);
    assert.match(unset.stderr, /set ZENML_IMAGE/);
    const built = await buildJson(path.join(EXAMPLES, "zenml.ts"), [], {
      env: { ...zenmlEnv, ZENML_REGISTRY_PASSWORD: "zenml-registry-pw-4d2c" },
    });
    assert.ok(!built.stderr.includes("zenml-registry-pw-4d2c"));
    const r = await sh(built.imageId, "python -c 'import tinypkg; print(tinypkg.hello())'; echo $ZENML_STEP_OPERATOR");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello from tinypkg 2.0\nmodal\n");
  });

  test("vocab-nlp/modal_app.ts: Debian's Python 3.13, local data and the app's own package under /root", {
    timeout: 1_800_000,
  }, async () => {
    const built = await buildJson(path.join(EXAMPLES, "vocab-nlp", "modal_app.ts"), [], { env });
    const r = await strata(["run", built.imageId, "--", "sh", "-c", "cd /root && python -m pipeline && ls /root/data"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "models: en nl sr | deps: 2.0 0.1\nnl A1: de en\nen_freq.txt\nnl_freq.txt\nsr_freq.txt\n");
  });
});
