// Child processes for the benchmarks: spawn, wait, time with performance.now(), keep each named child's command
// line and output in a log dir, and remember the running child so Ctrl-C can stop it.
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** reject on a non-zero exit (default true) */
  check?: boolean;
  /** names the child in errors and in its log file */
  what?: string;
}

let currentChild: ChildProcess | undefined;
let logDir: string | undefined;

/** From now on, every named child's command line and output are appended to `<dir>/<name>.log`. */
export function setLogDir(dir: string): void {
  logDir = dir;
}

/** Stops the child that is running now, if any (for Ctrl-C clean-up). */
export function killCurrentChild(): void {
  currentChild?.kill("SIGTERM");
}

async function saveLog(what: string, cmd: string, args: string[], r: RunResult): Promise<void> {
  if (!logDir) return;
  const file = path.join(
    logDir,
    what
      .replace(/[^a-z0-9]+/gi, "-")
      .replace(/^-|-$/g, "")
      .toLowerCase() + ".log",
  );
  const text = `$ ${cmd} ${args.join(" ")}\n# exit ${r.code}, ${r.seconds.toFixed(3)} s\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}\n\n`;
  await fsp.appendFile(file, text).catch(() => undefined);
}

/** Spawns a command, waits for it, and measures its wall time. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    currentChild = child;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on("data", (b: Buffer) => out.push(b));
    child.stderr!.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e) => {
      currentChild = undefined;
      reject(new Error(`${opts.what ?? cmd}: could not start ${cmd}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      const seconds = (performance.now() - t0) / 1000;
      currentChild = undefined;
      const r = {
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        seconds,
      };
      if (opts.what) void saveLog(opts.what, cmd, args, r);
      if (opts.check !== false && r.code !== 0) {
        const tail = (r.stderr + "\n" + r.stdout).trim().split("\n").slice(-25).join("\n");
        reject(new Error(`${opts.what ?? cmd} failed (exit ${r.code}): ${cmd} ${args.join(" ")}\n${tail}`));
        return;
      }
      resolve(r);
    });
  });
}
