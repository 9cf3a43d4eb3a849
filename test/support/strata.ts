// Shared e2e helpers: run the real `strata` CLI against a store, make busybox base trees, temp project dirs.
// The store is shared by every test of a run (STRATA_TEST_HOME, set by scripts/test.js) so expensive bases
// such as the Debian one are built once; tests keep their definitions unique (a nonce) so their steps don't collide.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fsp, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const CLI = path.join(REPO_ROOT, "bin", "strata.js");
export const SHARED_HOME = process.env.STRATA_TEST_HOME || path.join(os.tmpdir(), "strata-test-home");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Sandboxes (runc containers) the command started. */
  sandboxes: number;
}

export function nonce(): string {
  return randomBytes(6).toString("hex");
}

/** Runs `strata <args>` with STRATA_HOME set (default: the shared test store). */
export async function strata(
  args: string[],
  opts: { home?: string; env?: Record<string, string>; cwd?: string } = {},
): Promise<CliResult> {
  const counter = path.join(os.tmpdir(), `strata-count-${nonce()}`);
  await fsp.writeFile(counter, "");
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        cwd: opts.cwd ?? REPO_ROOT,
        env: { ...process.env, STRATA_HOME: opts.home ?? SHARED_HOME, STRATA_SANDBOX_COUNTER: counter, ...opts.env },
        maxBuffer: 64 * 1024 * 1024,
      },
      async (err, stdout, stderr) => {
        const sandboxes = readFileSync(counter, "utf8").split("\n").filter(Boolean).length;
        await fsp.rm(counter, { force: true });
        const code = err
          ? typeof (err as { code?: unknown }).code === "number"
            ? (err as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout, stderr, sandboxes });
      },
    );
  });
}

/** Starts `strata <args>` without waiting (for kill tests). */
export function strataSpawn(args: string[], opts: { home?: string; cwd?: string } = {}) {
  return spawn(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: { ...process.env, STRATA_HOME: opts.home ?? SHARED_HOME },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

export interface BuildJson {
  imageId: string;
  steps: {
    index: number;
    description: string;
    cached: boolean;
    seconds: number;
    layer: string | null;
    key: string;
    imageId: string;
  }[];
}

/** `strata build --json`; asserts success and parses the last stdout line. */
export async function buildJson(
  file: string,
  extra: string[] = [],
  opts: { home?: string; env?: Record<string, string> } = {},
): Promise<BuildJson & { sandboxes: number; stderr: string }> {
  const r = await strata(["build", file, "--json", ...extra], opts);
  if (r.code !== 0) throw new Error(`strata build ${file} failed (${r.code}):\n${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  return { ...(JSON.parse(lines[lines.length - 1]!) as BuildJson), sandboxes: r.sandboxes, stderr: r.stderr };
}

/** A temp directory removed by the returned cleanup. */
export async function tempDir(prefix = "strata-test-"): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Writes a busybox root tree (bin/busybox + applet links, /etc/passwd, /etc/group, /tmp) under `dir`. */
export async function makeBusyboxTree(dir: string): Promise<void> {
  const bin = path.join(dir, "bin");
  await fsp.mkdir(bin, { recursive: true });
  await fsp.copyFile("/bin/busybox", path.join(bin, "busybox"));
  await fsp.chmod(path.join(bin, "busybox"), 0o755);
  const applets = [
    "sh",
    "echo",
    "cat",
    "ls",
    "rm",
    "mkdir",
    "touch",
    "sleep",
    "id",
    "pwd",
    "env",
    "printf",
    "true",
    "false",
    "mv",
    "cp",
    "ln",
    "test",
    "find",
    "stat",
    "wc",
    "head",
    "grep",
    "sed",
    "chmod",
  ];
  for (const a of applets) await fsp.symlink("busybox", path.join(bin, a));
  await fsp.mkdir(path.join(dir, "etc"), { recursive: true });
  await fsp.writeFile(
    path.join(dir, "etc/passwd"),
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n",
  );
  await fsp.writeFile(path.join(dir, "etc/group"), "root:x:0:\nnogroup:x:65534:\napp:x:1000:\n");
  await fsp.mkdir(path.join(dir, "tmp"), { mode: 0o1777 });
  await fsp.chmod(path.join(dir, "tmp"), 0o1777);
  await fsp.mkdir(path.join(dir, "root"), { recursive: true });
}

/**
 * An ignore pattern that matches nothing but makes a test's rootfs step its own cache entry. Every busybox tree has
 * the same content, so without it all tests would share one entry for that step, and a test that force-builds (which
 * replaces entries) would change the parent of every other test's later steps mid-test: their next build misses.
 */
export function uniqueRootfsIgnore(tag: string): string {
  return `strata-test-unique-${tag}`;
}

/** Source of a definition file whose first steps are a busybox base (`./rootfs` under the definition's dir). */
export function busyboxHeader(tag: string): string {
  return (
    `import { Image, Secret } from "strata";\n` +
    `void Secret;\n` +
    `const base = Image.fromScratch().addLocalDir("./rootfs", "/", { copy: true, ignore: [${JSON.stringify(uniqueRootfsIgnore(tag))}] }).env({ TEST_NONCE: ${JSON.stringify(tag)} });\n`
  );
}

/** Creates a project dir with a busybox rootfs and a definition file; returns paths. */
export async function busyboxProject(
  body: string,
  files: Record<string, string> = {},
): Promise<{ dir: string; def: string; tag: string }> {
  const dir = await tempDir();
  const tag = nonce();
  await makeBusyboxTree(path.join(dir, "rootfs"));
  for (const [name, content] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await fsp.writeFile(path.join(dir, name), content);
  }
  const def = path.join(dir, "image.ts");
  await fsp.writeFile(def, busyboxHeader(tag) + body);
  return { dir, def, tag };
}

/**
 * Per-test-file scratch space: `project()` makes a busybox project and `scratch()` a temp dir; everything is removed
 * by `cleanup()` (register it with `after`).
 */
export function scratchSpace() {
  const dirs: string[] = [];
  return {
    async project(body: string, files: Record<string, string> = {}) {
      const p = await busyboxProject(body, files);
      dirs.push(p.dir);
      return p;
    },
    async scratch(): Promise<string> {
      const d = await tempDir();
      dirs.push(d);
      return d;
    },
    track(dir: string): void {
      dirs.push(dir);
    },
    async cleanup(): Promise<void> {
      for (const d of dirs.splice(0)) await fsp.rm(d, { recursive: true, force: true });
    },
  };
}
