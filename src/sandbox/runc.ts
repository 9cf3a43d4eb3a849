/**
 * Runs one command in a runc container on a prepared root filesystem, streaming its output: enforces the sandbox
 * policy (network entitlement, timeouts), joins a prepared network namespace, and keeps the container from outliving
 * its builder.
 */
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { StringDecoder } from "node:string_decoder";
import { execa } from "execa";
import { ConfigError, EntitlementError, MissingToolError, SandboxError } from "../errors.js";
import { pidAlive, uniqueSuffix } from "../util/fs.js";
import { createStepCgroup, reapStaleCgroups } from "./cgroup.js";
import { detectCgroupsOnce } from "./cgroup-layout.js";
import { capLimits, DEFAULT_LIMITS, limitFailureMessage, limitsFromEnv, type StepLimits } from "./step-limits.js";
import { unmountUnder } from "../layer/overlay.js";
import { HOST_ID_BASE } from "./ids.js";
import { networkPool } from "./netns.js";
import { reapStaleSecretDirs } from "./secret-dir.js";
import { idmapView, requireSandboxHelper, usernsEnabled } from "./userns.js";
import { defaultNetwork, runtimeSpec, type BindMount, type NetworkMode, type SandboxSpec } from "./runtime-spec.js";

export interface RunOptions {
  /** The step's own timeout; the executor's policy supplies a default and caps it. */
  timeoutMs?: number;
  /** Output as text (decoded as UTF-8 across chunk boundaries), e.g. for build logs. */
  onOutput?: (text: string, stream: "stdout" | "stderr") => void;
  /** Output as raw bytes, e.g. to pass a container's stdout through unchanged. */
  onData?: (chunk: Buffer, stream: "stdout" | "stderr") => void;
  signal?: AbortSignal;
  /**
   * `strata run -i`/`-t`: the container reads this process's stdin (`stdin`), and with a terminal (`tty`, the spec's
   * `terminal`) runc joins the container's pseudo-terminal to this process's terminal itself — raw mode, window size
   * and its changes — so its output is not seen by `onOutput`/`onData`. Default: stdin closed, output piped.
   */
  interactive?: { stdin: boolean; tty: boolean };
}

export interface RunResult {
  exitCode: number;
  timedOut: boolean;
  durationMs: number;
  /** The timeout that applied (ms), when one did. */
  timeoutMs?: number;
  /** A resource limit the step hit (memory, pids), in words, when it failed because of one. */
  limit?: string;
}

/**
 * Runs sandboxed commands. One implementation today (runc); the engine depends only on this. A stronger isolation
 * boundary (gVisor's runsc, Kata Containers) plugs in here: an Executor that turns the same SandboxSpec into that
 * runtime's invocation.
 */
export interface Executor {
  run(spec: SandboxSpec, opts: RunOptions): Promise<RunResult>;
  /** Starts getting ready for a run (namespaces, cgroup layout), so the first run() does not wait: a hint, never fails. */
  prepare?(): void;
  /**
   * Throws an EntitlementError when a step asking for `network` (undefined: the default) may not have it. The engine
   * asks before it reads the cache, as BuildKit validates entitlements before solving: a result built where they were
   * granted is no way around a builder that refuses them.
   */
  checkEntitlements?(request: { network?: NetworkMode }): void;
}

/** What the operator (or the local user) allows a step, and the defaults for steps that ask for nothing. */
export interface SandboxPolicy {
  /** The `network.host` entitlement: may a step use the host's network? */
  allowNetworkHost: boolean;
  /** The network of a step that names none. */
  defaultNetwork: NetworkMode;
  /** Timeout of a step that sets none (ms; undefined: none). */
  defaultTimeoutMs?: number;
  /** The longest timeout a step may have (ms; undefined: no maximum). A step asking for more gets this. */
  maxTimeoutMs?: number;
  /** Memory, pids and CPU of a step that asks for nothing. */
  defaultLimits: StepLimits;
  /** The most a step may ask for. */
  maxLimits: StepLimits;
}

/** What this machine has: the most a local step may ask for. */
function machineLimits(): StepLimits {
  return { memoryBytes: os.totalmem(), pids: 65536, cpus: os.availableParallelism() };
}

/** STRATA_MAX_STEP_MEMORY / _PIDS / _CPUS (the operator's maximum), parsed as STRATA_STEP_* are. */
function maxLimitsFromEnv(env: NodeJS.ProcessEnv): Partial<StepLimits> {
  return limitsFromEnv({
    STRATA_STEP_MEMORY: env.STRATA_MAX_STEP_MEMORY,
    STRATA_STEP_PIDS: env.STRATA_MAX_STEP_PIDS,
    STRATA_STEP_CPUS: env.STRATA_MAX_STEP_CPUS,
  });
}

export const RUNC_ROOT = "/run/strata-runc";
/** Where runc bundles (config.json) live: a tmpfs, never disk; 0700. */
export const BUNDLE_ROOT = "/run/strata-bundles";

/** Parses a duration in ms: `90s`, `30m`, `2h`, `1500ms`, or a bare number in `bare` units (default seconds) (pure). */
export function parseDuration(v: string, what: string, bare: "s" | "ms" = "s"): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new ConfigError(`${what}: ${JSON.stringify(v)} is not a duration (e.g. 90s, 30m, 2h)`);
  const n =
    Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const)[(m[2] ?? bare) as "ms" | "s" | "m" | "h"];
  if (!(n > 0)) throw new ConfigError(`${what}: ${JSON.stringify(v)} must be more than zero`);
  return Math.round(n);
}

/**
 * The local builder's policy from the environment: STRATA_NETWORK (the default network: sandbox, none or host),
 * STRATA_STEP_TIMEOUT and STRATA_MAX_STEP_TIMEOUT. Locally the host network is granted to a step that asks for it (a
 * definition's `network: "host"`, `RUN --network=host`, or STRATA_NETWORK=host / `--network host` for all): the user
 * is the operator. The service refuses it unless its operator passes --allow-network-host (`servicePolicy`).
 */
export function policyFromEnv(env: NodeJS.ProcessEnv = process.env): SandboxPolicy {
  const net = defaultNetwork(env);
  const machine = machineLimits();
  const maxLimits = { ...machine, ...maxLimitsFromEnv(env) };
  const defaultLimits = capLimits(limitsFromEnv(env), maxLimits, DEFAULT_LIMITS);
  return {
    allowNetworkHost: true,
    defaultNetwork: net,
    defaultLimits,
    maxLimits,
    ...(env.STRATA_STEP_TIMEOUT
      ? { defaultTimeoutMs: parseDuration(env.STRATA_STEP_TIMEOUT, "STRATA_STEP_TIMEOUT") }
      : {}),
    ...(env.STRATA_MAX_STEP_TIMEOUT
      ? { maxTimeoutMs: parseDuration(env.STRATA_MAX_STEP_TIMEOUT, "STRATA_MAX_STEP_TIMEOUT") }
      : {}),
  };
}

/** What a service operator sets: `--allow-network-host`, `--step-timeout`, `--max-step-timeout`. */
export interface ServiceSandboxOptions {
  allowNetworkHost?: boolean;
  stepTimeoutMs?: number;
  maxStepTimeoutMs?: number;
}

/** Defaults of a build service: a step runs at most an hour unless it asks, four hours whatever it asks. */
export const SERVICE_STEP_TIMEOUT_MS = 3_600_000;
export const SERVICE_MAX_STEP_TIMEOUT_MS = 4 * 3_600_000;

/**
 * The policy of a shared build service (`strata serve`, `strata worker`): no host network unless the operator grants
 * it, a default and a maximum step timeout (STRATA_STEP_TIMEOUT / STRATA_MAX_STEP_TIMEOUT or the flags override them).
 */
export function servicePolicy(o: ServiceSandboxOptions = {}, env: NodeJS.ProcessEnv = process.env): SandboxPolicy {
  const local = policyFromEnv(env);
  const maxTimeoutMs = o.maxStepTimeoutMs ?? local.maxTimeoutMs ?? SERVICE_MAX_STEP_TIMEOUT_MS;
  const defaultTimeoutMs = Math.min(o.stepTimeoutMs ?? local.defaultTimeoutMs ?? SERVICE_STEP_TIMEOUT_MS, maxTimeoutMs);
  // A step may ask for no more than the service's defaults unless the operator sets a higher maximum.
  const maxLimits = { ...local.defaultLimits, ...maxLimitsFromEnv(env) };
  const defaultLimits = capLimits({}, maxLimits, local.defaultLimits);
  return {
    allowNetworkHost: o.allowNetworkHost ?? false,
    defaultNetwork: local.defaultNetwork,
    defaultTimeoutMs,
    maxTimeoutMs,
    defaultLimits,
    maxLimits,
  };
}

/** The timeout a step gets under a policy (pure): its own, else the default; never above the maximum. */
export function effectiveTimeout(
  asked: number | undefined,
  policy: Pick<SandboxPolicy, "defaultTimeoutMs" | "maxTimeoutMs">,
): number | undefined {
  const t = asked ?? policy.defaultTimeoutMs;
  if (policy.maxTimeoutMs === undefined) return t;
  return t === undefined ? policy.maxTimeoutMs : Math.min(t, policy.maxTimeoutMs);
}

let runsStarted = 0;
/** How many sandboxes this process has started (tests count them). */
export function sandboxRunCount(): number {
  return runsStarted;
}

async function runcBinary(): Promise<string> {
  for (const p of [
    process.env.STRATA_RUNC,
    "/usr/sbin/runc",
    "/usr/bin/runc",
    "/usr/local/sbin/runc",
    "/usr/local/bin/runc",
  ]) {
    if (
      p &&
      (await fsp.access(p).then(
        () => true,
        () => false,
      ))
    )
      return p;
  }
  throw new MissingToolError(
    "runc",
    "install it (`apt-get install runc`, or run `npm run setup`), or set STRATA_RUNC to its path",
  );
}

const HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

export class RuncExecutor implements Executor {
  readonly policy: SandboxPolicy;
  constructor(policy?: Partial<SandboxPolicy>) {
    this.policy = { ...policyFromEnv(), ...policy };
  }

  prepare(): void {
    try {
      if (usernsEnabled() || this.policy.defaultNetwork === "sandbox") networkPool().warm();
      void detectCgroupsOnce().catch(() => undefined);
    } catch {
      // a hint: run() reports what is wrong
    }
  }

  checkEntitlements(request: { network?: NetworkMode }): void {
    if ((request.network ?? this.policy.defaultNetwork) === "host" && !this.policy.allowNetworkHost) {
      throw new EntitlementError(
        "this step asks for the host network, which this builder does not grant (the network.host entitlement): " +
          'drop `network: "host"` / `RUN --network=host` / `strata build --network host` (steps get their own network ' +
          "with internet access by default), " +
          "or ask the operator to start `strata serve --allow-network-host`",
      );
    }
  }

  async run(spec: SandboxSpec, opts: RunOptions): Promise<RunResult> {
    const network = spec.network ?? this.policy.defaultNetwork;
    this.checkEntitlements({ network });
    const runc = await runcBinary();
    // The owner pid in the id lets `reapStaleContainers` recognise containers whose builder died.
    const id = `strata-${uniqueSuffix()}`;
    await privateDir(BUNDLE_ROOT);
    const bundle = path.join(BUNDLE_ROOT, id);
    await privateDir(bundle);
    const cleanups: (() => void | Promise<void>)[] = [() => fsp.rm(bundle, { recursive: true, force: true })];
    // Puts the step's filesystem back as the engine mounted it; a failure here is the step's failure.
    let restore: (() => Promise<void>) | undefined;
    try {
      const mounts: BindMount[] = [];
      let netnsPath: string | undefined;
      const userns = usernsEnabled();
      // A prepared namespace pair: its network namespace for a sandboxed step, its user namespace for every step.
      const net = network === "sandbox" || userns ? await networkPool().take() : undefined;
      if (net) cleanups.push(() => net.release());
      if (network === "sandbox" && net) {
        netnsPath = net.netPath;
        await fsp.writeFile(path.join(bundle, "resolv.conf"), net.resolvConf, { mode: 0o644 });
        await fsp.writeFile(path.join(bundle, "hosts"), `${HOSTS}127.0.1.1\t${spec.hostname}\n`, { mode: 0o644 });
        mounts.push({ source: path.join(bundle, "resolv.conf"), destination: "/etc/resolv.conf", readonly: true });
        mounts.push({ source: path.join(bundle, "hosts"), destination: "/etc/hosts", readonly: true });
      } else {
        for (const p of ["/etc/resolv.conf", "/etc/hosts"]) {
          if (
            await fsp.access(p).then(
              () => true,
              () => false,
            )
          )
            mounts.push({ source: p, destination: p, readonly: true });
        }
      }
      const limits = capLimits(spec.limits ?? {}, this.policy.maxLimits, this.policy.defaultLimits);
      const cgroup = await createStepCgroup(id, limits);
      cleanups.push(() => cgroup.remove());
      let full: SandboxSpec = {
        ...spec,
        network,
        mounts: [...mounts.filter((m) => !spec.mounts.some((s) => s.destination === m.destination)), ...spec.mounts],
      };
      if (userns && net) {
        const view = await idmapView({
          userns: net.userPath,
          stage: bundle,
          rootfs: spec.rootfs,
          mounts: full.mounts,
          ...(spec.overlayDir ? { overlayDir: spec.overlayDir } : {}),
        });
        restore = view.restore;
        full = { ...full, rootfs: view.rootfs, mounts: view.mounts };
      }
      const ctx = {
        ...(netnsPath ? { netnsPath } : {}),
        ...(userns && net ? { usernsPath: net.userPath } : {}),
        cgroupsPath: cgroup.runcPath,
        oomScoreAdj: STEP_OOM_SCORE_ADJ,
      };
      await fsp.writeFile(path.join(bundle, "config.json"), JSON.stringify(runtimeSpec(full, ctx)), { mode: 0o600 });
      const result = await this.#runBundle(runc, id, bundle, effectiveTimeout(opts.timeoutMs, this.policy), opts);
      if (result.exitCode !== 0 && !result.timedOut) {
        const limit = limitFailureMessage(await cgroup.usage(), limits);
        if (limit) return { ...result, limit };
      }
      return result;
    } finally {
      try {
        await restore?.();
      } finally {
        for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
      }
    }
  }

  async #runBundle(
    runc: string,
    id: string,
    bundle: string,
    timeoutMs: number | undefined,
    opts: RunOptions,
  ): Promise<RunResult> {
    const started = Date.now();
    runsStarted++;
    const counterFile = process.env.STRATA_SANDBOX_COUNTER;
    if (counterFile) await fsp.appendFile(counterFile, `${id}\n`);
    const helper = await requireSandboxHelper();
    const io = opts.interactive;
    const child = execa(helper, ["supervise", runc, RUNC_ROOT, id, "--bundle", bundle, id], {
      stdin: io?.stdin ? "inherit" : "ignore",
      ...(io?.tty ? { stdout: "inherit", stderr: "inherit" } : {}),
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
    const timer = timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          void kill();
        }, timeoutMs)
      : undefined;
    const onAbort = () => void kill();
    opts.signal?.addEventListener("abort", onAbort);
    // Aborted before the listener existed (e.g. SIGTERM between steps): stop the container we just started.
    if (opts.signal?.aborted) void kill();
    try {
      const r = await child;
      if (r.exitCode === undefined && !timedOut)
        throw new SandboxError(`runc did not start: ${r.message ?? "unknown error"}`);
      return {
        exitCode: r.exitCode ?? (r.signal ? 128 : 1),
        timedOut,
        durationMs: Date.now() - started,
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      };
    } finally {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      // `runc run` deletes its container when it exits; only one left behind (runc killed) needs `runc delete`.
      if (
        await fsp.access(path.join(RUNC_ROOT, id)).then(
          () => true,
          () => false,
        )
      ) {
        await execa(runc, ["--root", RUNC_ROOT, "delete", "-f", id], { reject: false });
      }
    }
  }
}

/**
 * A directory only root can read and only root and the sandbox's root (group HOST_ID_BASE, so runc can reach a
 * rootfs from inside the step's user namespace) can pass through: 0710 root:HOST_ID_BASE.
 */
export async function privateDir(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o710 });
  await fsp.chown(dir, 0, HOST_ID_BASE);
  await fsp.chmod(dir, 0o710);
}

/** A step's OOM score: above the builder's (0 by default), so under memory pressure the kernel picks a step first. */
export const STEP_OOM_SCORE_ADJ = 500;

/**
 * Kills and deletes containers left by builders that died (kill -9), so their mounts can be released; removes their
 * cgroups, secrets tmpfs and bundles.
 */
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
  // Their cgroups (limits set on strata/<id>, which runc leaves), secret files and bundles go too.
  await reapStaleCgroups().catch(() => undefined);
  await reapStaleSecretDirs().catch(() => undefined);
  for (const name of await fsp.readdir(BUNDLE_ROOT).catch(() => [] as string[])) {
    const m = /^strata-(\d+)-/.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    // The idmapped clones of a step whose builder died are still mounted in the bundle: detach them first.
    await unmountUnder(path.join(BUNDLE_ROOT, name));
    await fsp.rm(path.join(BUNDLE_ROOT, name), { recursive: true, force: true }).catch(() => undefined);
  }
}
