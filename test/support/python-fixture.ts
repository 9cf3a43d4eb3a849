// A TEST FIXTURE in python-build-standalone's install_only layout, built from this machine's Debian Python — not a
// real python-build-standalone build (those cannot be downloaded here). `python/bin/python3.11` is the host's
// /usr/bin/python3.11 and `python/lib/python3.11` its standard library (tests, caches and Debian's links to /etc
// left out), so copied to /usr/local it runs as /usr/local/bin/python3 with prefix /usr/local. Like a real build it
// needs glibc from the base: `copyGlibcFor` puts the ELF interpreter and the libraries it links into a rootfs.
import { execFile } from "node:child_process";
import { existsSync, promises as fsp } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";

const exec = promisify(execFile);

export const HOST_PYTHON = "/usr/bin/python3.11";
const HOST_STDLIB = "/usr/lib/python3.11";
/** Debian's pip (python3-pip), copied into a `standalone` fixture. */
const HOST_PIP_DIR = "/usr/lib/python3/dist-packages";
const LEFT_OUT = [
  "test",
  "idlelib",
  "tkinter",
  "turtledemo",
  "ensurepip",
  "lib2to3",
  "pydoc_data",
  "config-3.11-x86_64-linux-gnu",
  "sitecustomize.py",
  "site-packages",
  "dist-packages",
];

export function hostPythonAvailable(): boolean {
  return existsSync(HOST_PYTHON) && existsSync(path.join(HOST_STDLIB, "os.py"));
}

/** Whether a `standalone` fixture can be made: the host's Python, Debian's pip and patchelf. */
export function standaloneFixtureAvailable(): boolean {
  return hostPythonAvailable() && existsSync(path.join(HOST_PIP_DIR, "pip")) && existsSync("/usr/bin/patchelf");
}

/**
 * Writes `<dir>/<name>` (gzip tar, entries owned by root, top-level `python/`) and returns its path. `standalone`:
 * like a real install_only build, the binary finds its libraries in `python/lib` (RPATH `$ORIGIN/../lib`, set with
 * patchelf, holding the one it links that a base without Python lacks: libexpat) and pip is installed
 * (`lib/python3.11/dist-packages/pip`, `bin/pip3`, `bin/pip`) — a base needs nothing but glibc and its usual libraries.
 */
export async function hostPythonTarball(
  dir: string,
  name = "host-python3.11-test-fixture-install_only.tar.gz",
  extra: Record<string, string> = {},
  opts: { standalone?: boolean } = {},
): Promise<string> {
  const stage = await fsp.mkdtemp(path.join(dir, "stage-"));
  try {
    const py = path.join(stage, "python");
    await fsp.mkdir(path.join(py, "bin"), { recursive: true });
    await fsp.copyFile(HOST_PYTHON, path.join(py, "bin", "python3.11"));
    await fsp.chmod(path.join(py, "bin", "python3.11"), 0o755);
    await fsp.symlink("python3.11", path.join(py, "bin", "python3"));
    await fsp.mkdir(path.join(py, "lib"));
    await exec("cp", ["-a", HOST_STDLIB, path.join(py, "lib")]);
    const lib = path.join(py, "lib", "python3.11");
    for (const x of LEFT_OUT) await fsp.rm(path.join(lib, x), { recursive: true, force: true });
    await exec("find", [lib, "-name", "__pycache__", "-prune", "-exec", "rm", "-rf", "{}", "+"]);
    // Debian links its sysconfig data to another directory: make it a file.
    for (const f of await fsp.readdir(lib)) {
      const p = path.join(lib, f);
      if ((await fsp.lstat(p)).isSymbolicLink()) {
        const content = await fsp.readFile(p);
        await fsp.rm(p);
        await fsp.writeFile(p, content);
      }
    }
    if (opts.standalone) {
      // Debian's interpreter looks for packages in <prefix>/lib/python3.11/dist-packages (its site.py), where a real
      // build has site-packages; its stdlib's EXTERNALLY-MANAGED marker is Debian's, not a standalone build's.
      await fsp.rm(path.join(lib, "EXTERNALLY-MANAGED"), { force: true });
      const site = path.join(lib, "dist-packages");
      await fsp.mkdir(site, { recursive: true });
      for (const d of await fsp.readdir(HOST_PIP_DIR))
        if (d === "pip" || /^pip-.*\.dist-info$/.test(d)) await exec("cp", ["-a", path.join(HOST_PIP_DIR, d), site]);
      await exec("find", [site, "-name", "__pycache__", "-prune", "-exec", "rm", "-rf", "{}", "+"]);
      for (const bin of ["pip", "pip3"]) {
        await fsp.writeFile(path.join(py, "bin", bin), '#!/bin/sh\nexec "$(dirname "$0")/python3" -m pip "$@"\n');
        await fsp.chmod(path.join(py, "bin", bin), 0o755);
      }
      await fsp.copyFile(
        await fsp.realpath("/lib/x86_64-linux-gnu/libexpat.so.1"),
        path.join(py, "lib", "libexpat.so.1"),
      );
      await exec("patchelf", ["--set-rpath", "$ORIGIN/../lib", path.join(py, "bin", "python3.11")]);
    }
    for (const [rel, content] of Object.entries(extra)) await fsp.writeFile(path.join(py, rel), content);
    const out = path.join(dir, name);
    await exec("tar", ["-czf", out, "--owner=0", "--group=0", "--numeric-owner", "-C", stage, "python"]);
    return out;
  } finally {
    await fsp.rm(stage, { recursive: true, force: true });
  }
}

/** Copies the ELF interpreter and shared libraries `binary` links (per ldd) into `rootfs` at the same paths. */
export async function copyGlibcFor(rootfs: string, binary = HOST_PYTHON): Promise<void> {
  const { stdout } = await exec("ldd", [binary]);
  const files = new Set<string>();
  for (const line of stdout.split("\n")) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) files.add(m[1]!);
  }
  for (const f of files) {
    const to = path.join(rootfs, f);
    await fsp.mkdir(path.dirname(to), { recursive: true });
    await fsp.copyFile(await fsp.realpath(f), to);
    await fsp.chmod(to, 0o755);
  }
}
