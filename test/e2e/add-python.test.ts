// addPython end to end: a busybox base with glibc but no Python, from a loopback registry, gets a runnable Python
// from a standalone-layout tarball. The tarball is a TEST FIXTURE built from this machine's Python
// (test/support/python-fixture.ts), not a python-build-standalone build: GitHub is not reachable from the tests.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { buildJson, busyboxProject, scratchSpace, strata, tempDir } from "../support/strata.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { copyGlibcFor, hostPythonAvailable, hostPythonTarball } from "../support/python-fixture.js";

const exec = promisify(execFile);
const RELEASE_FILE = "cpython-3.11.5+20230826-x86_64_v3-unknown-linux-gnu-install_only.tar.gz";
const skip = hostPythonAvailable()
  ? false
  : "needs the host's /usr/bin/python3.11 and its standard library (Debian 12) to build the fixture";

const space = scratchSpace();
let registry: TestRegistry;
let fixtures: string;
let tarball: string;
let baseRef: string;

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Serves files of `dir` over loopback HTTP (a python-build-standalone mirror stand-in); counts requests. */
async function serveDir(dir: string): Promise<{ url: string; requests: string[]; server: Server }> {
  const requests: string[] = [];
  const server = createServer(async (req, res) => {
    requests.push(req.url ?? "");
    const file = path.join(dir, decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    try {
      const body = await fsp.readFile(file);
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

async function definition(body: string): Promise<string> {
  const dir = await space.scratch();
  const def = path.join(dir, "image.ts");
  await fsp.writeFile(def, `import { Image } from "strata";\n${body}\n`);
  return def;
}

before(async () => {
  if (skip) return;
  registry = await startRegistry();
  fixtures = await space.scratch();
  tarball = await hostPythonTarball(fixtures);
  // The base: busybox plus glibc (as a real base for python-build-standalone needs), no Python.
  const base = await busyboxProject(`export default base.cmd(["sh"]);\n`);
  space.track(base.dir);
  await copyGlibcFor(path.join(base.dir, "rootfs"));
  const built = await buildJson(base.def);
  const out = await tempDir();
  space.track(out);
  assert.equal((await strata(["export", built.imageId, "--oci", path.join(out, "layout")])).code, 0);
  baseRef = `${registry.host}/team/busybox-glibc:${base.tag}`;
  await exec("skopeo", [
    "--insecure-policy",
    "copy",
    "--dest-tls-verify=false",
    `oci:${path.join(out, "layout")}:latest`,
    `docker://${baseRef}`,
  ]);
});

after(async () => {
  await registry?.stop();
  await space.cleanup();
});

describe("addPython", { skip }, () => {
  test("fromRegistry({ addPython }) puts a runnable Python on a base without one; keys follow the tarball's content, not its path", async () => {
    const noPython = await strata([
      "run",
      (await buildJson(await definition(`export default Image.fromRegistry(${JSON.stringify(baseRef)});`))).imageId,
      "--",
      "sh",
      "-c",
      "ls /usr/local/bin 2>&1; command -v python3 || echo no python",
    ]);
    assert.match(noPython.stdout, /no python/, `exit ${noPython.code}: ${noPython.stderr}`);

    const def = await definition(
      `export default Image.fromRegistry(${JSON.stringify(baseRef)}, { addPython: "3.11" });`,
    );
    const env = { STRATA_PYTHON_STANDALONE: tarball };
    const first = await buildJson(def, [], { env });
    assert.deepEqual(
      first.steps.map((s) => s.description.replace(/ \(from .*\)$/, "")),
      [
        `fromRegistry ${baseRef}`,
        "addPython 3.11: CPython 3.11.5+20230826 → /usr/local",
        "addPython 3.11: /usr/local/bin/python → python3",
        "addPython 3.11: env TERMINFO_DIRS",
      ],
    );
    assert.deepEqual(
      first.steps.map((s) => s.cached),
      [true, false, false, false],
    );
    assert.equal(first.sandboxes, 0, "no step ran a command in the base (it has no Python, and need not have a shell)");

    const run = await strata([
      "run",
      first.imageId,
      "--",
      "python3",
      "-c",
      "import sys, json; print(json.dumps([sys.version_info[:2], sys.prefix, sys.executable]))",
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), [[3, 11], "/usr/local", "/usr/local/bin/python3"]);
    const viaLink = await strata([
      "run",
      first.imageId,
      "--",
      "/usr/local/bin/python",
      "-c",
      "print('hello from python')",
    ]);
    assert.equal(viaLink.stdout, "hello from python\n", viaLink.stderr);
    const files = await strata([
      "run",
      first.imageId,
      "--",
      "sh",
      "-c",
      "readlink /usr/local/bin/python; stat -c '%u:%g %a' /usr/local/bin/python3.11 /usr/local/lib/python3.11/os.py; echo $TERMINFO_DIRS",
    ]);
    assert.equal(
      files.stdout,
      "/usr/local/bin/python3\n0:0 755\n0:0 644\n/etc/terminfo:/lib/terminfo:/usr/share/terminfo:/usr/lib/terminfo\n",
    );

    // Cached: nothing rebuilt. The same tarball under another name and path gives the same keys (content, not path).
    const again = await buildJson(def, [], { env });
    assert.equal(again.imageId, first.imageId);
    assert.ok(again.steps.every((s) => s.cached));
    const elsewhere = path.join(await space.scratch(), "renamed.tgz");
    await fsp.copyFile(tarball, elsewhere);
    await fsp.utimes(elsewhere, new Date(0), new Date(0));
    const moved = await buildJson(def, [], { env: { STRATA_PYTHON_STANDALONE: elsewhere } });
    assert.equal(moved.imageId, first.imageId);
    // The release's own file name in a directory works too.
    const dir = await space.scratch();
    await fsp.copyFile(tarball, path.join(dir, RELEASE_FILE));
    assert.equal((await buildJson(def, [], { env: { STRATA_PYTHON_STANDALONE: dir } })).imageId, first.imageId);
  });

  test("a different tarball is a different key; setupDockerfileCommands run after addPython, with python3 on PATH", async () => {
    const other = await hostPythonTarball(await space.scratch(), "other.tar.gz", {
      "lib/python3.11/strata_marker.py": "WHO = 'other build'\n",
    });
    const def = await definition(
      `export default Image.fromRegistry(${JSON.stringify(baseRef)}, { addPython: "3.11", setupDockerfileCommands: ["RUN python3 -c \\"import strata_marker; print(strata_marker.WHO)\\" > /who"] });`,
    );
    const a = await buildJson(def, [], { env: { STRATA_PYTHON_STANDALONE: other } });
    assert.equal(a.steps.length, 5);
    assert.equal((await strata(["run", a.imageId, "--", "cat", "/who"])).stdout, "other build\n");
    const plain = await buildJson(
      await definition(`export default Image.fromRegistry(${JSON.stringify(baseRef)}, { addPython: "3.11" });`),
      [],
      { env: { STRATA_PYTHON_STANDALONE: tarball } },
    );
    assert.notEqual(a.steps[1]!.key, plain.steps[1]!.key);
    assert.equal(a.steps[0]!.key, plain.steps[0]!.key);
  });

  test("downloads from a mirror (ADD --unpack=true of a URL in the python stage): same content, same keys as the local tarball", async () => {
    const mirrorDir = await space.scratch();
    await fsp.mkdir(path.join(mirrorDir, "pbs", "20230826"), { recursive: true });
    await fsp.copyFile(tarball, path.join(mirrorDir, "pbs", "20230826", RELEASE_FILE));
    const mirror = await serveDir(mirrorDir);
    try {
      const def = await definition(
        `export default Image.fromRegistry(${JSON.stringify(baseRef)}, { addPython: "3.11" });`,
      );
      const local = await buildJson(def, [], { env: { STRATA_PYTHON_STANDALONE: tarball } });
      const downloaded = await buildJson(def, [], { env: { STRATA_PYTHON_STANDALONE_MIRROR: `${mirror.url}/pbs` } });
      assert.deepEqual(mirror.requests, [`/pbs/20230826/${RELEASE_FILE}`]);
      assert.deepEqual(
        downloaded.steps.map((s) => s.key),
        local.steps.map((s) => s.key),
      );
      assert.equal(downloaded.imageId, local.imageId);
    } finally {
      mirror.server.close();
    }
  });

  test("Dockerfile ADD --unpack=true <url> extracts a remote archive; without it the archive is copied as a file", async () => {
    const served = await space.scratch();
    const src = await space.scratch();
    await fsp.mkdir(path.join(src, "pkg"));
    await fsp.writeFile(path.join(src, "pkg", "hello.txt"), "remote archive\n");
    await exec("tar", ["-czf", path.join(served, "pkg.tar.gz"), "--owner=0", "--group=0", "-C", src, "pkg"]);
    const web = await serveDir(served);
    try {
      const ctx = await space.scratch();
      await fsp.writeFile(
        path.join(ctx, "Dockerfile"),
        `FROM ${baseRef}\nADD --unpack=true ${web.url}/pkg.tar.gz /opt/\nADD ${web.url}/pkg.tar.gz /raw/\n`,
      );
      const r = await strata(["build", "-f", path.join(ctx, "Dockerfile"), ctx]);
      assert.equal(r.code, 0, r.stderr);
      const id = r.stdout.trim().split("\n").pop()!;
      const out = await strata(["run", id, "--", "sh", "-c", "cat /opt/pkg/hello.txt; ls /raw"]);
      assert.equal(out.stdout, "remote archive\npkg.tar.gz\n", out.stderr);
    } finally {
      web.server.close();
    }
  });

  test("an unreachable download fails with the URL and how to provide the build, and caches nothing", async () => {
    const home = await space.scratch();
    const port = await closedPort();
    const mirror = `http://127.0.0.1:${port}/pbs`;
    const def = await definition(
      `export default Image.fromRegistry(${JSON.stringify(baseRef)}, { addPython: "3.11" });`,
    );
    const failed = await strata(["build", def], {
      home,
      env: { STRATA_PYTHON_STANDALONE_MIRROR: mirror, STRATA_PYTHON_STANDALONE: "" },
    });
    assert.equal(failed.code, 1, failed.stderr);
    assert.ok(failed.stderr.includes(`${mirror}/20230826/${RELEASE_FILE}`), failed.stderr);
    assert.match(failed.stderr, /download failed/);
    assert.match(failed.stderr, /set STRATA_PYTHON_STANDALONE to the file \(or to a directory holding it\)/);
    // Nothing downloaded or half-downloaded is kept.
    const downloads = await fsp.readdir(path.join(home, "downloads")).catch(() => []);
    assert.deepEqual(downloads, []);
    // The next attempt tries again (and fails the same way); with the tarball provided, it builds.
    const again = await strata(["build", def], {
      home,
      env: { STRATA_PYTHON_STANDALONE_MIRROR: mirror, STRATA_PYTHON_STANDALONE: "" },
    });
    assert.equal(again.code, 1);
    const ok = await buildJson(def, [], { home, env: { STRATA_PYTHON_STANDALONE: tarball } });
    // The base was pulled before the download failed; the addPython steps were never cached.
    assert.deepEqual(
      ok.steps.map((s) => s.cached),
      [true, false, false, false],
    );
  });
});
