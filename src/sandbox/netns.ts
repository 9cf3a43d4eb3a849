/**
 * Network namespaces for sandboxed RUN steps, prepared ahead of use so a step does not wait for them.
 *
 * Each namespace is held by a small process that made it (the sandbox helper's `netns`: a user namespace mapped to the
 * sandbox's id range and a network namespace it owns, so a step in that user namespace can mount a fresh sysfs), has
 * its loopback up, and has a slirp4netns process attached: a user-mode TCP/IP stack that gives the
 * namespace egress through the host's sockets (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) with
 * `--disable-host-loopback`. slirp4netns runs with the guard's group id, so the host firewall table of
 * `egress-guard.ts` rejects what it would open to the host's own addresses and metadata endpoints.
 *
 * Every process is started with a parent-death signal: if the builder dies, the namespace goes with it. A namespace is
 * used by one step and then destroyed; the pool keeps one spare ready.
 */
import { spawn } from "node:child_process";
import { promises as fsp, readFileSync } from "node:fs";
import { SandboxError } from "../errors.js";
import { ensureEgressGuard } from "./egress-guard.js";
import { HOST_ID_BASE, ID_COUNT, SLIRP_GID } from "./ids.js";
import { requireSandboxHelper } from "./userns.js";

export interface PreparedNetwork {
  /** `/proc/<pid>/ns/net` of the holder: the container joins it. */
  netPath: string;
  /** `/proc/<pid>/ns/user` of the holder (owner of the network namespace). */
  userPath: string;
  /** The resolv.conf a step in this namespace should see. */
  resolvConf: string;
  /** Kills the holder and slirp4netns; the namespace disappears with its last user. */
  release(): void;
  /** Whether the holder and slirp4netns are still running (a spare may have waited a long time). */
  alive(): boolean;
}

/**
 * slirp4netns's virtual network inside a step's own namespace: the gateway (which slirp4netns would map to the host's
 * loopback, were it not for --disable-host-loopback) and the DNS forwarder. Addresses of the namespace, not of any host.
 */
export const SLIRP_GATEWAY = "10.0.2.2";
export const SLIRP_DNS = "10.0.2.3";

export const SANDBOX_RESOLV_CONF = `nameserver ${SLIRP_DNS}\noptions edns0\n`;

async function which(name: string): Promise<string | undefined> {
  for (const dir of ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]) {
    const p = `${dir}/${name}`;
    if (
      await fsp.access(p).then(
        () => true,
        () => false,
      )
    )
      return p;
  }
  return undefined;
}

function kill(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** A process that exists and is not a zombie (a dead holder re-parented to init may wait to be reaped). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

let slirpPath: Promise<string | undefined> | undefined;

/**
 * Makes one namespace pair in one exec (`strata-sandbox-helper netns`): the holder (user + network namespace, ids
 * mapped, loopback up), then slirp4netns attached to it, ready when it writes to fd 3.
 */
export async function prepareNetwork(): Promise<PreparedNetwork> {
  const [helper, slirp] = await Promise.all([requireSandboxHelper(), (slirpPath ??= which("slirp4netns"))]);
  if (!slirp)
    throw new SandboxError(
      "the sandbox network needs slirp4netns: install it (`npm run setup`), or build with network none (`--network none`)",
    );
  await ensureEgressGuard();
  const args = [
    "netns",
    String(HOST_ID_BASE),
    String(ID_COUNT),
    String(SLIRP_GID),
    slirp,
    "--configure",
    "--mtu=65520",
    "--disable-host-loopback",
    "--enable-sandbox",
    "--enable-seccomp",
    "--ready-fd=3",
  ];
  const child = spawn(helper, args, { stdio: ["ignore", "pipe", "pipe", "pipe"] });
  child.unref();
  let holder: number | undefined;
  const release = () => {
    kill(child.pid);
    kill(holder);
  };
  try {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stderr?.on("data", (c: Buffer) => err.push(c));
    await new Promise<void>((resolve, reject) => {
      const fail = (why: string) =>
        reject(
          new SandboxError(
            `could not prepare the step's network (${why}): ${Buffer.concat(err).toString().trim().slice(-500)}`,
          ),
        );
      const timer = setTimeout(() => fail("not ready in 10 s"), 10_000);
      child.stdout?.on("data", (c: Buffer) => {
        out.push(c);
        const m = /^holder (\d+)$/m.exec(Buffer.concat(out).toString());
        if (m) holder = Number(m[1]);
      });
      (child.stdio[3] as NodeJS.ReadableStream | null)?.once("data", () => {
        clearTimeout(timer);
        if (holder === undefined) fail("no holder pid");
        else resolve();
      });
      child.once("exit", (code, sig) => {
        clearTimeout(timer);
        fail(`exited with ${code ?? sig}`);
      });
      child.once("error", (e) => {
        clearTimeout(timer);
        fail(e.message);
      });
    });
    for (const s of [child.stdout, child.stderr, child.stdio[3]]) (s as { destroy?: () => void } | null)?.destroy?.();
    child.removeAllListeners("exit");
    const pids = [holder!, child.pid!];
    const alive = () => pids.every(running);
    return {
      netPath: `/proc/${holder}/ns/net`,
      userPath: `/proc/${holder}/ns/user`,
      resolvConf: SANDBOX_RESOLV_CONF,
      release,
      alive,
    };
  } catch (e) {
    release();
    throw e;
  }
}

/** One spare namespace prepared ahead; each `take()` hands one out and starts preparing the next. */
export class NetworkPool {
  #spare: Promise<PreparedNetwork> | undefined;

  async take(): Promise<PreparedNetwork> {
    const next = this.#spare ?? prepareNetwork();
    this.#spare = undefined;
    let got: PreparedNetwork;
    try {
      got = await next;
      if (!got.alive()) {
        // Its processes were killed while it waited: make a fresh one.
        got.release();
        got = await prepareNetwork();
      }
    } catch (e) {
      // A failed spare (e.g. the guard could not be installed) is retried once, fresh, so the error is current.
      got = await prepareNetwork().catch(() => {
        throw e;
      });
    }
    this.#refill();
    return got;
  }

  /** Starts preparing a spare now if there is none (a builder about to run steps). */
  warm(): void {
    if (!this.#spare) this.#refill();
  }

  #refill(): void {
    const p = prepareNetwork();
    p.catch(() => undefined);
    this.#spare = p;
  }

  /** Kills the spare (tests; a process that exits loses it by the parent-death signal anyway). */
  async close(): Promise<void> {
    const s = this.#spare;
    this.#spare = undefined;
    if (s) (await s.catch(() => undefined))?.release();
  }
}

let shared: NetworkPool | undefined;
/** The process-wide pool. */
export function networkPool(): NetworkPool {
  shared ??= new NetworkPool();
  return shared;
}
