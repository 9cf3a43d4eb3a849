/** Runs one command in a runc container on a prepared root filesystem, streaming its output. */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { StringDecoder } from "node:string_decoder";
import { execa } from "execa";
import { MissingToolError, SandboxError } from "../errors.js";
import { pidAlive, uniqueSuffix } from "../util/fs.js";
import { runtimeSpec, type SandboxSpec } from "./runtime-spec.js";

export interface RunOptions {
  /** Directory for the bundle (config.json); must not be inside the rootfs. */
  bundleDir: string;
  timeoutMs?: number;
  /** Output as text (decoded as UTF-8 across chunk boundaries), e.g. for build logs. */
  onOutput?: (text: string, stream: "stdout" | "stderr") => void;
  /** Output as raw bytes, e.g. to pass a container's stdout through unchanged. */
  onData?: (chunk: Buffer, stream: "stdout" | "stderr") => void;
  signal?: AbortSignal;
}

export interface RunResult {
  exitCode: number;
  timedOut: boolean;
  durationMs: number;
}

/** Runs sandboxed commands. One implementation today (runc); the engine depends only on this. */
export interface Executor {
  run(spec: SandboxSpec, opts: RunOptions): Promise<RunResult>;
}

export const RUNC_ROOT = "/run/strata-runc";

let runsStarted = 0;
/** How many sandboxes this process has started (tests count them). */
export function sandboxRunCount(): number {
  return runsStarted;
}

async function runcBinary(): Promise<string> {
  for (const p of [process.env.STRATA_RUNC, "/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"]) {
    if (p && (await fsp.access(p).then(() => true, () => false))) return p;
  }
  throw new MissingToolError("runc", "install it (`apt-get install runc`, or run `npm run setup`), or set STRATA_RUNC to its path");
}

export class RuncExecutor implements Executor {
  async run(spec: SandboxSpec, opts: RunOptions): Promise<RunResult> {
    const runc = await runcBinary();
    await fsp.mkdir(opts.bundleDir, { recursive: true });
    await fsp.writeFile(path.join(opts.bundleDir, "config.json"), JSON.stringify(runtimeSpec(spec)));
    // The owner pid in the id lets `reapStaleContainers` recognise containers whose builder died.
    const id = `strata-${uniqueSuffix()}`;
    const started = Date.now();
    runsStarted++;
    const counterFile = process.env.STRATA_SANDBOX_COUNTER;
    if (counterFile) await fsp.appendFile(counterFile, `${id}\n`);
    const child = execa(runc, ["--root", RUNC_ROOT, "run", "--bundle", opts.bundleDir, id], {
      stdin: "ignore",
      buffer: false,
      reject: false,
      encoding: "buffer",
    });
    const forward = (stream: "stdout" | "stderr") => {
      const decoder = new StringDecoder("utf8");
      return (chunk: Buffer) => {
        opts.onData?.(chunk, stream);
        if (opts.onOutput) {
          const text = decoder.write(chunk);
          if (text) opts.onOutput(text, stream);
        }
      };
    };
    child.stdout?.on("data", forward("stdout"));
    child.stderr?.on("data", forward("stderr"));
    let timedOut = false;
    const kill = async () => {
      await execa(runc, ["--root", RUNC_ROOT, "kill", id, "KILL"], { reject: false });
    };
    const timer = opts.timeoutMs ? setTimeout(() => { timedOut = true; void kill(); }, opts.timeoutMs) : undefined;
    const onAbort = () => void kill();
    opts.signal?.addEventListener("abort", onAbort);
    // Aborted before the listener existed (e.g. SIGTERM between steps): stop the container we just started.
    if (opts.signal?.aborted) void kill();
    try {
      const r = await child;
      if (r.exitCode === undefined && !timedOut) throw new SandboxError(`runc did not start: ${r.message ?? "unknown error"}`);
      return { exitCode: r.exitCode ?? (r.signal ? 128 : 1), timedOut, durationMs: Date.now() - started };
    } finally {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      await execa(runc, ["--root", RUNC_ROOT, "delete", "-f", id], { reject: false });
    }
  }
}

/** Kills and deletes containers left by builders that died (kill -9), so their mounts can be released. */
export async function reapStaleContainers(): Promise<void> {
  let runc: string;
  try {
    runc = await runcBinary();
  } catch {
    return;
  }
  const r = await execa(runc, ["--root", RUNC_ROOT, "list", "-q"], { reject: false });
  for (const id of r.stdout.split("\n").filter(Boolean)) {
    const m = /^strata-(\d+)-/.exec(id);
    if (!m || pidAlive(Number(m[1]))) continue;
    await execa(runc, ["--root", RUNC_ROOT, "kill", id, "KILL"], { reject: false });
    await execa(runc, ["--root", RUNC_ROOT, "delete", "-f", id], { reject: false });
  }
}
