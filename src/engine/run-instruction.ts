/** Runs one RUN instruction of a step in the sandbox: its mounts, user, environment and working directory. */
import { DEFAULT_HOSTNAME } from "../plan/hostname.js";
import path from "node:path";
import { promises as fsp } from "node:fs";
import { InvalidDefinitionError, StepFailedError } from "../errors.js";
import { lexicalImagePath, secureJoin } from "../layer/secure-join.js";
import type { ImageConfig } from "../oci/types.js";
import type { Instruction } from "../plan/instructions.js";
import type { Step } from "../plan/step.js";
import type { Executor } from "../sandbox/runc.js";
import type { StepLimits } from "../sandbox/step-limits.js";
import { resolveUser } from "../sandbox/user.js";
import type { BuildStore } from "../store/store.js";
import { DEFAULT_PATH, DEFAULT_SHELL, envMap } from "./config.js";
import type { ResolvedInput } from "./inputs.js";
import { redactor, type LineLog } from "./log.js";
import { defaultNetwork } from "./network.js";
import { runMounts } from "./run-mounts.js";

/** What a RUN reads of its step executor. */
export interface RunContext {
  store: BuildStore;
  executor: Executor;
  /** This build's resource limits for its RUN steps (capped by the executor's policy). */
  limits?: Partial<StepLimits> | undefined;
  signal?: AbortSignal | undefined;
}

/** Runs the RUN `ins` of `step` on `rootfs` (the mounted step root); a failure is a `StepFailedError`. */
export async function runInstruction(
  ctx: RunContext,
  index: number,
  step: Step,
  secrets: Readonly<Record<string, string>>,
  ins: Extract<Instruction, { op: "RUN" }>,
  rc: ImageConfig["config"],
  rootfs: string,
  work: string,
  inputFiles: string,
  inputsByName: Map<string, ResolvedInput>,
  log: LineLog,
  noteMountPoint: (dest: string) => void,
): Promise<void> {
  let argv = typeof ins.command === "string" ? [...(rc.Shell ?? DEFAULT_SHELL), ins.command] : [...ins.command];
  // /etc/resolv.conf and /etc/hosts are the executor's: they depend on the step's network.
  // The working directory and every mount target as absolute image paths, `..` stopping at `/` (a relative mount
  // target is relative to the working directory, as in BuildKit).
  const cwd = lexicalImagePath(rc.WorkingDir || "/");
  const target = (t: string) => lexicalImagePath(path.posix.resolve(cwd, t));
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const made = await runMounts({
      store: ctx.store,
      index,
      step,
      secrets,
      ins,
      rootfs,
      work,
      inputFiles,
      inputsByName,
      target,
      argv,
      cleanups,
    });
    const { mounts, secretEnv } = made;
    argv = made.argv;
    for (const m of mounts) noteMountPoint(m.destination);
    const user = await resolveUser(rootfs, rc.User);
    // Build args sit below the image's ENV (an ENV of the same name wins, as in BuildKit).
    // Proxy build args (not keyed) sit below both.
    const env = new Map<string, string>([...(step.proxyEnv ?? []), ...(step.buildArgs ?? [])]);
    for (const [k, v] of envMap(rc.Env)) env.set(k, v);
    if (!env.has("PATH")) env.set("PATH", DEFAULT_PATH);
    if (!env.has("HOME")) env.set("HOME", user.home || "/root");
    for (const [k, v] of Object.entries(step.env)) env.set(k, v);
    if (step.secretsAsEnv !== false) for (const [k, v] of Object.entries(secrets)) env.set(k, v);
    for (const [k, v] of secretEnv) env.set(k, v);
    // Definitions refuse NUL bytes when written; a secret's value arrives only now (a file given to `--secret`).
    for (const [k, v] of env)
      if (v.includes("\0"))
        throw new InvalidDefinitionError(
          `${step.description}: environment variable ${k} holds a NUL byte, which no environment can hold` +
            (secretEnv.has(k) || Object.hasOwn(secrets, k)
              ? `; it is a secret's value: mount that secret as a file instead (RUN --mount=type=secret without env=)`
              : ""),
        );
    // Created inside the image (symlinks followed within it), never on the host.
    await fsp.mkdir(secureJoin(rootfs, cwd), { recursive: true });
    const command = typeof ins.command === "string" ? ins.command : JSON.stringify(ins.command);
    if (step.method === "runCommands" || step.method === "aptInstall" || step.method === "pipInstall")
      log.line(`$ ${command}`);
    const r = await ctx.executor.run(
      {
        rootfs,
        argv,
        env: [...env].map(([k, v]) => `${k}=${v}`),
        cwd,
        uid: user.uid,
        gid: user.gid,
        additionalGids: user.additionalGids,
        mounts,
        network: ins.network ?? defaultNetwork(),
        hostname: ins.hostname ?? DEFAULT_HOSTNAME,
        overlayDir: work,
        ...(ctx.limits ? { limits: ctx.limits } : {}),
      },
      { timeoutMs: step.timeoutMs, onOutput: (t) => log.write(t), signal: ctx.signal },
    );
    log.flush();
    if (r.exitCode !== 0 || r.timedOut) {
      throw new StepFailedError(
        index,
        step.description,
        redactor(Object.values(secrets))(command),
        r.exitCode,
        [...log.tail],
        r.durationMs,
        r.timedOut,
        {
          ...(r.timeoutMs !== undefined ? { timeoutMs: r.timeoutMs } : {}),
          ...(r.limit ? { limit: r.limit } : {}),
        },
      );
    }
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  }
}
