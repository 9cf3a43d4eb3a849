// A real Redis (Debian's /usr/bin/redis-server) on a free loopback port for the worker tests: no persistence
// (`--save "" --appendonly no`), its working directory a mkdtemp dir removed by stop().
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fsp } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export interface TestRedis {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  port: number;
  child: ChildProcess;
  /** What redis-server printed (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

export const REDIS_SERVER = process.env.STRATA_TEST_REDIS_SERVER || "/usr/bin/redis-server";

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const a = srv.address() as net.AddressInfo;
      srv.close(() => resolve(a.port));
    });
  });
}

/** Answers PING over a raw socket (true once Redis accepts commands). */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let buf = "";
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.on("error", () => done(false));
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (c: Buffer) => {
      buf += c.toString();
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
  });
}

/** Starts redis-server on 127.0.0.1:<free port>; resolves once it answers PING. */
export async function startRedis(): Promise<TestRedis> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-redis-"));
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = spawn(
      REDIS_SERVER,
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
        "--protected-mode",
        "no",
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    let exitedEarly = false;
    void exited.then(() => (exitedEarly = true));
    const t0 = Date.now();
    let up = false;
    while (!exitedEarly && Date.now() - t0 < 10_000) {
      if (await ping(port)) {
        up = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!up) {
      child.kill("SIGKILL");
      await exited;
      // Someone took the port between our probe and redis binding it: try another.
      if (attempt < 5 && /Address already in use/i.test(out)) continue;
      await fsp.rm(dir, { recursive: true, force: true });
      throw new Error(`redis-server did not start on 127.0.0.1:${port}:\n${out}`);
    }
    let stopped = false;
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      child,
      output: () => out,
      async stop() {
        if (stopped) return;
        stopped = true;
        if (child.exitCode === null) {
          child.kill("SIGTERM");
          const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
          await exited;
          clearTimeout(killer);
        }
        await fsp.rm(dir, { recursive: true, force: true });
      },
    };
  }
}
