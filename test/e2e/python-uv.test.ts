// Builder version 2026.12 end to end: debianSlim({ pythonVersion: "3.10" }) gets python-build-standalone (a TEST
// FIXTURE in its install_only layout, made from this machine's Python by test/support/python-fixture.ts, served by a
// loopback HTTP mirror), pip, a compiler toolchain and uv; uvPipInstall and uvSync provision uv from a loopback
// registry holding a small uv test image (its /uv is the pip-backed test double, fixtures/uv-double). Every network
// source is on loopback: the wheel index, the registry, the tarball mirror (and Debian's archive, as for every base).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { hostPythonTarball, standaloneFixtureAvailable } from "../support/python-fixture.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { buildJson, nonce, scratchSpace, strata } from "../support/strata.js";
import { startWheelIndex, UV_DOUBLE_PATH, type WheelIndex } from "../support/wheel-index.js";

const exec = promisify(execFile);
const RELEASE = "20230826";
const RELEASE_FILE = `cpython-3.10.13+${RELEASE}-x86_64_v3-unknown-linux-gnu-install_only.tar.gz`;
const skip = standaloneFixtureAvailable()
  ? false
  : "needs the host's /usr/bin/python3.11, Debian's python3-pip and patchelf to build the python-build-standalone fixture";

const space = scratchSpace();
let registry: TestRegistry;
let index: WheelIndex;
let mirror: { url: string; requests: string[]; server: Server };
let env: Record<string, string>;

/** Serves the files of `dir` over loopback HTTP; counts requests. */
async function serveDir(dir: string): Promise<{ url: string; requests: string[]; server: Server }> {
  const requests: string[] = [];
  const server = createServer(async (req, res) => {
    requests.push(req.url ?? "");
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
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, server };
}

async function definition(body: string, files: Record<string, string> = {}): Promise<{ def: string; dir: string }> {
  const dir = await space.scratch();
  for (const [rel, content] of Object.entries(files)) await fsp.writeFile(path.join(dir, rel), content);
  const def = path.join(dir, "image.ts");
  await fsp.writeFile(def, `import { Image } from "strata";\n${body}\n`);
  return { def, dir };
}

/** Pushes a uv test image (`/uv`: the test double, `/uvx`: a stub) as `<registry>/<repo>:0.9.5`. */
async function pushUvImage(repo: string): Promise<void> {
  const { def, dir } = await definition(
    `export default Image.fromScratch().addLocalFile(${JSON.stringify(UV_DOUBLE_PATH)}, "/uv", { copy: true }).addLocalFile("./uvx", "/uvx", { copy: true });`,
    { uvx: '#!/bin/sh\necho "uvx (test double): not supported" >&2\nexit 2\n' },
  );
  await fsp.chmod(path.join(dir, "uvx"), 0o755);
  const built = await buildJson(def);
  const layout = path.join(dir, "layout");
  const exported = await strata(["export", built.imageId, "--oci", layout]);
  assert.equal(exported.code, 0, exported.stderr);
  await exec("skopeo", [
    "--insecure-policy",
    "copy",
    "--dest-tls-verify=false",
    `oci:${layout}:latest`,
    `docker://${registry.host}/${repo}:0.9.5`,
  ]);
}

before(async () => {
  if (skip) return;
  registry = await startRegistry();
  index = await startWheelIndex();
  await pushUvImage("astral-sh/uv");
  const served = await space.scratch();
  await fsp.mkdir(path.join(served, "pbs", RELEASE), { recursive: true });
  await hostPythonTarball(path.join(served, "pbs", RELEASE), RELEASE_FILE, {}, { standalone: true });
  mirror = await serveDir(served);
  env = {
    STRATA_BUILDER_VERSION: "2026.12",
    STRATA_UV_IMAGE: `${registry.host}/astral-sh/uv`,
    STRATA_PYTHON_STANDALONE_MIRROR: `${mirror.url}/pbs`,
    STRATA_PYTHON_STANDALONE: "",
    STRATA_UV_BINARY: "",
    // The pins are checked against Debian's live archive, which moves at each point release: this test is about
    // Python series and uv, so drift is a logged warning here, not a failure (the check itself: engine/debian-pins).
    STRATA_DEBIAN_PINS: "warn",
  };
});

after(async () => {
  mirror?.server.close();
  await index?.close();
  await registry?.stop();
  await space.cleanup();
});

const sh = async (id: string, script: string) => strata(["run", id, "--", "sh", "-c", script]);

describe("builder version 2026.12: every Python series, uv provisioned", { skip }, () => {
  test('debianSlim({ pythonVersion: "3.10" }): standalone CPython from the mirror, pip, uv and a toolchain; cached after', {
    timeout: 1_200_000,
  }, async () => {
    const { def } = await definition(`export default Image.debianSlim({ pythonVersion: "3.10" });`);
    const first = await buildJson(def, [], { env });
    assert.deepEqual(
      first.steps.map((s) => s.description.replace(/ \(from .*\)$/, "")),
      [
        "debianSlim python 3.10 (bookworm)",
        `addPython 3.10: CPython 3.10.13+${RELEASE} → /usr/local`,
        "addPython 3.10: /usr/local/bin/python → python3",
        "addPython 3.10: env TERMINFO_DIRS",
        "debianSlim: uv 0.9.5 → /usr/local/bin",
      ],
    );
    assert.ok(
      mirror.requests.includes(`/pbs/${RELEASE}/${RELEASE_FILE}`),
      `the tarball came from the mirror: ${mirror.requests}`,
    );
    const r = await sh(
      first.imageId,
      [
        "command -v python3; command -v python",
        "python3 -c 'import sys; print(sys.prefix)'",
        "dpkg-query -W python3 2>/dev/null || echo no Debian python3",
        "pip3 --version | cut -d' ' -f1",
        "uv --version",
        "gcc --version | head -1 | cut -d' ' -f1",
        "gfortran --version | head -1 | cut -d' ' -f1-2",
        "echo $TERMINFO_DIRS",
      ].join("; "),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      [
        "/usr/local/bin/python3",
        "/usr/local/bin/python",
        "/usr/local",
        "no Debian python3",
        "pip",
        "uv 0.0.0-test-double (pip-backed)",
        "gcc",
        "GNU Fortran",
        "/etc/terminfo:/lib/terminfo:/usr/share/terminfo:/usr/lib/terminfo",
        "",
      ].join("\n"),
    );
    const again = await buildJson(def, [], { env });
    assert.equal(again.imageId, first.imageId);
    assert.ok(again.steps.every((s) => s.cached));
    assert.equal(again.sandboxes, 0);
  });

  test("uvPipInstall without uv in the image: /uv of the uv image is mounted, keyed by content, never captured", {
    timeout: 1_200_000,
  }, async () => {
    const body = `export default Image.debianSlim({ pythonVersion: "3.10" })
  .runCommands("rm /usr/local/bin/uv /usr/local/bin/uvx # ${nonce()}")
  .uvPipInstall("tinypkg==2.0", { indexUrl: ${JSON.stringify(index.url)}, network: "host" });`;
    const { def } = await definition(body);
    const built = await buildJson(def, [], { env });
    const r = await sh(
      built.imageId,
      "python3 -c 'import tinypkg; print(tinypkg.VERSION)'; command -v uv || echo no uv; test -e /.uv && echo /.uv kept || echo no /.uv",
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "2.0\nno uv\nno /.uv\n");
    // The same uv from another repository (a mirror) is the same content: same keys, nothing rebuilt.
    await pushUvImage("mirror/uv");
    const mirrored = await buildJson(def, [], { env: { ...env, STRATA_UV_IMAGE: `${registry.host}/mirror/uv` } });
    assert.equal(mirrored.imageId, built.imageId);
    assert.ok(mirrored.steps.every((s) => s.cached));
    // A repository without the version is a build error naming the image, and nothing is cached.
    const missing = await strata(["build", def], { env: { ...env, STRATA_UV_IMAGE: `${registry.host}/nothing/uv` } });
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /nothing\/uv/);
  });

  test("uvSync installs exactly what uv.lock locks into /.uv/.venv, first on PATH; a new lock reruns the step", {
    timeout: 1_200_000,
  }, async () => {
    const pyproject = `[project]\nname = "app-${nonce()}"\nversion = "0.1.0"\nrequires-python = ">=3.10"\ndependencies = ["tinypkg>=1.0"]\n\n[project.optional-dependencies]\nmore = ["otherpkg"]\n`;
    const lock = (v: string) =>
      `version = 1\nrequires-python = ">=3.10"\n\n[[package]]\nname = "app"\nversion = "0.1.0"\nsource = { virtual = "." }\ndependencies = [{ name = "tinypkg" }]\n\n[package.optional-dependencies]\nmore = [{ name = "otherpkg" }]\n\n[[package]]\nname = "otherpkg"\nversion = "0.1"\nsource = { registry = "${index.url}" }\n\n[[package]]\nname = "tinypkg"\nversion = "${v}"\nsource = { registry = "${index.url}" }\n`;
    const { def, dir } = await definition(
      `export default Image.debianSlim({ pythonVersion: "3.10" }).uvSync("./project", { extras: ["more"], network: "host" });`,
    );
    await fsp.mkdir(path.join(dir, "project"));
    await fsp.writeFile(path.join(dir, "project", "pyproject.toml"), pyproject);
    await fsp.writeFile(path.join(dir, "project", "uv.lock"), lock("1.0"));
    const check = "python -c 'import sys, tinypkg, otherpkg; print(sys.prefix, tinypkg.VERSION)'; ls /.uv";
    const built = await buildJson(def, [], { env });
    const r = await strata(["run", built.imageId, "--", "sh", "-c", check]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "/.uv/.venv 1.0\npyproject.toml\nuv.lock\n", "the locked 1.0, although 2.0 is on the index");
    await fsp.writeFile(path.join(dir, "project", "uv.lock"), lock("2.0"));
    const relocked = await buildJson(def, [], { env });
    assert.deepEqual(
      relocked.steps.map((s) => s.cached),
      [true, true, true, true, true, false],
    );
    const r2 = await strata(["run", relocked.imageId, "--", "sh", "-c", check]);
    assert.equal(r2.stdout, "/.uv/.venv 2.0\npyproject.toml\nuv.lock\n");
  });
});
