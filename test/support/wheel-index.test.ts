import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { access, chmod, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import { startWheelIndex, UV_DOUBLE_PATH, WHEELS_DIR, type WheelIndex } from "./wheel-index.js";

const execFileP = promisify(execFile);

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

interface Anchor {
  href: string;
  text: string;
}

function anchors(html: string): Anchor[] {
  return [...html.matchAll(/<a href="([^"]*)">([^<]*)<\/a>/g)].map((m) => ({ href: m[1] ?? "", text: m[2] ?? "" }));
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

async function run(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> {
  try {
    const { stdout, stderr } = await execFileP(file, args, { env: env ?? process.env });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: unknown; stderr?: unknown };
    return {
      code: typeof e.code === "number" ? e.code : null,
      stdout: typeof e.stdout === "string" ? e.stdout : "",
      stderr: typeof e.stderr === "string" ? e.stderr : "",
    };
  }
}

describe("wheel index (scripts/serve-wheels.mjs)", () => {
  let index: WheelIndex;
  let base: string;

  before(async () => {
    index = await startWheelIndex({ host: "127.0.0.1", port: 0 });
    assert.match(index.url, /^http:\/\/127\.0\.0\.1:\d+\/simple$/);
    assert.notEqual(index.port, 0);
    base = index.url.replace(/\/simple$/, "");
  });

  after(async () => {
    await index.close();
  });

  test("fixture wheels are present", async () => {
    const files = (await readdir(WHEELS_DIR)).sort();
    assert.deepEqual(files, [
      "otherpkg-0.1-py3-none-any.whl",
      "tinypkg-1.0-py3-none-any.whl",
      "tinypkg-2.0-py3-none-any.whl",
    ]);
  });

  test("/simple/ lists the projects", async () => {
    const res = await fetch(`${index.url}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
    const links = anchors(await res.text());
    assert.deepEqual(
      links.map((a) => [a.href, a.text]),
      [
        ["/simple/otherpkg/", "otherpkg"],
        ["/simple/tinypkg/", "tinypkg"],
      ],
    );
  });

  test("/simple/tinypkg/ links every version with a matching sha256 fragment", async () => {
    const res = await fetch(`${index.url}/tinypkg/`);
    assert.equal(res.status, 200);
    const links = anchors(await res.text());
    assert.deepEqual(
      links.map((a) => a.text),
      ["tinypkg-1.0-py3-none-any.whl", "tinypkg-2.0-py3-none-any.whl"],
    );
    for (const link of links) {
      const m = /^\/packages\/([^#]+)#sha256=([0-9a-f]{64})$/.exec(link.href);
      assert.ok(m, `unexpected href ${link.href}`);
      assert.equal(m[1], link.text);
      const onDisk = await readFile(path.join(WHEELS_DIR, link.text));
      assert.equal(m[2], sha256(onDisk), `sha256 fragment of ${link.text}`);
    }
  });

  test("/packages/<file> serves the exact wheel bytes", async () => {
    const name = "tinypkg-1.0-py3-none-any.whl";
    const res = await fetch(`${base}/packages/${name}`);
    assert.equal(res.status, 200);
    const body = new Uint8Array(await res.arrayBuffer());
    const onDisk = await readFile(path.join(WHEELS_DIR, name));
    assert.equal(body.length, onDisk.length);
    assert.equal(sha256(body), sha256(onDisk));
    // A wheel is a zip: local file header magic.
    assert.deepEqual([...body.subarray(0, 4)], [0x50, 0x4b, 0x03, 0x04]);
  });

  test("/simple/<name> without a trailing slash redirects to the normalized slash form", async () => {
    const res = await fetch(`${index.url}/tinypkg`, { redirect: "manual" });
    assert.equal(res.status, 301);
    assert.equal(res.headers.get("location"), "/simple/tinypkg/");
    await res.arrayBuffer();

    const res2 = await fetch(`${index.url}/TinyPkg/`, { redirect: "manual" });
    assert.equal(res2.status, 301);
    assert.equal(res2.headers.get("location"), "/simple/tinypkg/");
    await res2.arrayBuffer();

    const followed = await fetch(`${index.url}/TinyPkg`);
    assert.equal(followed.status, 200);
    assert.equal(anchors(await followed.text()).length, 2);
  });

  test("unknown project and unknown file are 404", async () => {
    const res = await fetch(`${index.url}/no-such-project/`);
    assert.equal(res.status, 404);
    await res.arrayBuffer();
    const res2 = await fetch(`${base}/packages/nope-1.0-py3-none-any.whl`);
    assert.equal(res2.status, 404);
    await res2.arrayBuffer();
    const res3 = await fetch(`${base}/packages/..%2Fmake-wheels.py`);
    assert.equal(res3.status, 404);
    await res3.arrayBuffer();
  });

  const pip = spawnSync("python3", ["-m", "pip", "--version"], { encoding: "utf8" });
  test("real pip can download from the index", {
    skip: pip.status === 0 ? false : "python3 -m pip not available",
  }, async () => {
    const dest = await mkdtemp(path.join(tmpdir(), "strata-pip-dl-"));
    try {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        PIP_CONFIG_FILE: "/dev/null",
        PIP_DISABLE_PIP_VERSION_CHECK: "1",
      };
      delete env["PIP_FIND_LINKS"];
      delete env["PIP_EXTRA_INDEX_URL"];
      delete env["PIP_INDEX_URL"];
      const r = await run(
        "python3",
        ["-m", "pip", "download", "--no-deps", "--index-url", index.url, "-d", dest, "tinypkg==2.0"],
        env,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await readdir(dest), ["tinypkg-2.0-py3-none-any.whl"]);
    } finally {
      await rm(dest, { recursive: true, force: true });
    }
  });
});

describe("uv test double (fixtures/uv-double/uv)", () => {
  test("is executable", async () => {
    await access(UV_DOUBLE_PATH, fsConstants.X_OK);
  });

  test("uv --version", async () => {
    const r = await run(UV_DOUBLE_PATH, ["--version"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "uv 0.0.0-test-double (pip-backed)\n");
  });

  test("unknown subcommands and options exit 2", async () => {
    for (const args of [["venv"], ["pip", "sync", "req.txt"], [], ["pip", "install", "--frobnicate", "x"]]) {
      const r = await run(UV_DOUBLE_PATH, args);
      assert.equal(r.code, 2, `uv ${args.join(" ")}`);
      assert.match(r.stderr, /test double/);
    }
  });

  test("uv pip install translates to python3 -m pip install", async () => {
    // A fake python3 that records its arguments, so no real pip runs.
    const dir = await mkdtemp(path.join(tmpdir(), "strata-uv-double-"));
    try {
      const fake = path.join(dir, "python3");
      await writeFile(
        fake,
        [
          "#!/bin/sh",
          'if [ "$3" = install ] && [ "$4" = --help ]; then echo "  --break-system-packages"; exit 0; fi',
          'for a in "$@"; do printf "%s\\n" "$a"; done',
          "",
        ].join("\n"),
      );
      await chmod(fake, 0o755);
      const r = await run(
        UV_DOUBLE_PATH,
        [
          "pip",
          "install",
          "--system",
          "--python",
          "/usr/bin/python3",
          "--compile-bytecode",
          "--no-cache",
          "--index-url",
          "http://127.0.0.1:1/simple",
          "--prerelease",
          "allow",
          "-r",
          "requirements file.txt",
          "tinypkg==1.0",
        ],
        { ...process.env, PATH: `${dir}:/usr/bin:/bin` },
      );
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(
        r.stdout.split("\n").filter((l) => l !== ""),
        [
          "-m",
          "pip",
          "install",
          "--disable-pip-version-check",
          "--break-system-packages",
          "--index-url",
          "http://127.0.0.1:1/simple",
          "--pre",
          "-r",
          "requirements file.txt",
          "tinypkg==1.0",
        ],
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
