/**
 * Network namespaces for sandboxed RUN steps, prepared ahead of use so a step does not wait for them.
 *
 * Each namespace is held by a small `sleep` process that made it (`unshare --user --net`, with the user namespace
 * mapped to the sandbox's id range, so a step running in that user namespace owns its network namespace and can mount
 * a fresh sysfs), has its loopback up, and has a slirp4netns process attached: a user-mode TCP/IP stack that gives the
 * namespace egress through the host's sockets (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) with
 * `--disable-host-loopback`. slirp4netns runs with the guard's group id, so the host firewall table of
 * `egress-guard.ts` rejects what it would open to the host's own addresses and metadata endpoints.
 *
 * Every process is started with a parent-death signal: if the builder dies, the namespace goes with it. A namespace is
 * used by one step and then destroyed; the pool keeps one spare ready.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fsp } from "node:fs";
import { execa } from "execa";
import { SandboxError } from "../errors.js";
import { ensureEgressGuard } from "./egress-guard.js";
import { HOST_ID_BASE, ID_COUNT, SLIRP_GID } from "./ids.js";

export interface PreparedNetwork {
  /** `/proc/<pid>/ns/net` of the holder: the container joins it. */
  netPath: string;
  /** `/proc/<pid>/ns/user` of the holder (owner of the network namespace). */
  userPath: string;
  /** The resolv.conf a step in this namespace should see. */
  resolvConf: string;
  /** Kills the holder and slirp4netns; the namespace disappears with its last user. */
  release(): void;
}

export const SANDBOX_RESOLV_CONF = "nameserver 10.0.2.3\noptions edns0\n";

async function which(name: string): Promise<string | undefined> {
  for (const dir of ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]) {
    const p = `${dir}/${name}`;
    if (await fsp.access(p).then(() => true, () => false)) return p;
  }
  return undefined;
}

function kill(p: ChildProcess | undefined): void {
  if (p && p.exitCode === null && p.signalCode === null) {
    try {
      p.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

async function waitForNamespace(pid: number, holder: ChildProcess): Promise<void> {
  const own = await fsp.readlink("/proc/self/ns/net");
  for (let i = 0; i < 400; i++) {
    if (holder.exitCode !== null || holder.signalCode !== null) break;
    const ns = await fsp.readlink(`/proc/${pid}/ns/net`).catch(() => own);
    const comm = await fsp.readFile(`/proc/${pid}/comm`, "utf8").catch(() => "");
    if (ns !== own && comm.trim() === "sleep") return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new SandboxError(`could not create a network namespace for the step (unshare --user --net exited with ${holder.exitCode ?? holder.signalCode})`);
}

/** Makes one namespace: holder, id maps, loopback up, slirp4netns ready. */
export async function prepareNetwork(): Promise<PreparedNetwork> {
  const [setpriv, unshare, slirp, ip] = await Promise.all([which("setpriv"), which("unshare"), which("slirp4netns"), which("ip")]);
  if (!setpriv || !unshare || !slirp || !ip) {
    const missing = [!setpriv && "setpriv", !unshare && "unshare", !slirp && "slirp4netns", !ip && "ip"].filter(Boolean).join(", ");
    throw new SandboxError(`the sandbox network needs ${missing}: install them (\`npm run setup\`), or build with network none`);
  }
  await ensureEgressGuard();
  const holder = spawn(setpriv, ["--pdeathsig", "KILL", "--", unshare, "--user", "--net", "--", "sleep", "2147483647"], { stdio: "ignore" });
  holder.unref();
  let slirpProc: ChildProcess | undefined;
  const release = () => {
    kill(slirpProc);
    kill(holder);
  };
  try {
    const pid = holder.pid;
    if (pid === undefined) throw new SandboxError("could not start the network namespace holder (setpriv/unshare)");
    await waitForNamespace(pid, holder);
    await fsp.writeFile(`/proc/${pid}/uid_map`, `0 ${HOST_ID_BASE} ${ID_COUNT}\n`);
    await fsp.writeFile(`/proc/${pid}/gid_map`, `0 ${HOST_ID_BASE} ${ID_COUNT}\n`);
    const netPath = `/proc/${pid}/ns/net`;
    const userPath = `/proc/${pid}/ns/user`;
    const lo = await execa("nsenter", [`--net=${netPath}`, "--", ip, "link", "set", "lo", "up"], { reject: false });
    if (lo.exitCode !== 0) throw new SandboxError(`could not bring up loopback in the step's network namespace: ${lo.stderr}`);
    slirpProc = spawn(
      setpriv,
      [
        "--regid", String(SLIRP_GID), "--clear-groups", "--pdeathsig", "KILL", "--",
        slirp, `--userns-path=${userPath}`, "--netns-type=path", "--configure", "--mtu=65520", "--disable-host-loopback",
        "--enable-sandbox", "--enable-seccomp", "--ready-fd=3", netPath, "tap0",
      ],
      { stdio: ["ignore", "ignore", "pipe", "pipe"] },
    );
    slirpProc.unref();
    const stderr: Buffer[] = [];
    slirpProc.stderr?.on("data", (c: Buffer) => stderr.push(c));
    const ready = slirpProc.stdio[3] as NodeJS.ReadableStream | null;
    await new Promise<void>((resolve, reject) => {
      const fail = (why: string) => reject(new SandboxError(`slirp4netns did not start (${why}): ${Buffer.concat(stderr).toString().trim().slice(-500)}`));
      const timer = setTimeout(() => fail("no ready signal in 10 s"), 10_000);
      ready?.once("data", () => {
        clearTimeout(timer);
        resolve();
      });
      slirpProc!.once("exit", (code, sig) => {
        clearTimeout(timer);
        fail(`exited with ${code ?? sig}`);
      });
    });
    (ready as unknown as { destroy?: () => void })?.destroy?.();
    slirpProc.stderr?.removeAllListeners("data");
    (slirpProc.stderr as unknown as { destroy?: () => void })?.destroy?.();
    return { netPath, userPath, resolvConf: SANDBOX_RESOLV_CONF, release };
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
    } catch (e) {
      // A failed spare (e.g. the guard could not be installed) is retried once, fresh, so the error is current.
      got = await prepareNetwork().catch(() => {
        throw e;
      });
    }
    this.#refill();
    return got;
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
