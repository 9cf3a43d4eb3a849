/**
 * `strata worker` (cmdWorker from dist/) in a child process, for queue tests: resolves once the worker prints its
 * name (it then takes jobs and heeds SIGTERM); rejects with its stderr if it exits first.
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { REPO_ROOT } from "./strata.js";

export interface WorkerProc {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Default timings of a test worker: small locks and grace, two builds at a time. */
const TEST_ARGS = ["--concurrency", "2", "--job-lock", "5s", "--stalled-interval", "2s", "--grace", "5s"];

/** Starts a worker with `env` over this process's environment; `children` collects it for cleanup. */
export async function spawnWorker(
  env: Record<string, string>,
  args: string[] = [],
  children: ChildProcess[] = [],
): Promise<WorkerProc> {
  const argv = [...TEST_ARGS, ...args];
  const script = `import(${JSON.stringify(path.join(REPO_ROOT, "dist/src/cli/worker.js"))}).then((m) => m.cmdWorker(${JSON.stringify(argv)})).then((c) => process.exit(c), (e) => { console.error(e); process.exit(70); });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("\n")) resolve();
    });
    void exited.then((code) => reject(new Error(`strata worker exited (${code}) before taking jobs:\n${stderr}`)));
  });
  return { child, stderr: () => stderr, exited };
}
