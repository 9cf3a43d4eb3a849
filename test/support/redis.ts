// A real Redis (Debian's /usr/bin/redis-server) on a free loopback port for the worker tests: no persistence
// (`--save "" --appendonly no`), its working directory a mkdtemp dir removed by stop(). It requires a password
// (`requirepass`, random per server, in the URL) unless a test asks for an open one; with `tls`, it speaks only TLS
// (`rediss://`) with a self-signed certificate for 127.0.0.1 made here with openssl (`ca` is its file).
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fsp, readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";

export interface TestRedis {
  /** `redis://:<password>@127.0.0.1:<port>` (`rediss://` with TLS; no password for an open server). */
  url: string;
  /** The URL without the password. */
  urlWithoutPassword: string;
  /** The `requirepass` password (undefined for an open server). */
  password?: string;
  /** With TLS: the PEM file of the self-signed CA (give it as STRATA_REDIS_CA). */
  ca?: string;
  port: number;
  /** Redis's working directory (nothing is persisted there; tests scan it). */
  dir: string;
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

/** Answers PING over a raw socket (true once Redis accepts commands; with a password, after AUTH). */
function ping(port: number, password: string | undefined, ca: string | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const s = ca ? tls.connect({ port, host: "127.0.0.1", ca: readFileSync(ca) }) : net.connect(port, "127.0.0.1");
    let buf = "";
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.on("error", () => done(false));
    s.on(ca ? "secureConnect" : "connect", () => s.write(password ? `AUTH ${password}\r\nPING\r\n` : "PING\r\n"));
    s.on("data", (c: Buffer) => {
      buf += c.toString();
      if (buf.includes("+PONG\r\n") || buf.startsWith("-")) done(buf.includes("+PONG\r\n") && !buf.startsWith("-"));
    });
  });
}

/** A self-signed certificate for 127.0.0.1 (and localhost) in `dir`: cert.pem (also the CA), key.pem. */
function makeCert(dir: string): { cert: string; key: string } {
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { stdio: "ignore" },
  );
  return { cert, key };
}

export interface StartRedisOptions {
  /** Require this password; `false`: an open server (to test that Strata refuses it). Default: a random one. */
  password?: string | false;
  /** Speak only TLS, with a self-signed certificate made for this server. Default false. */
  tls?: boolean;
}

/** Starts redis-server on 127.0.0.1:<free port>; resolves once it answers PING. */
export async function startRedis(opts: StartRedisOptions = {}): Promise<TestRedis> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-redis-"));
  const password = opts.password === false ? undefined : (opts.password ?? randomBytes(18).toString("base64url"));
  const certs = opts.tls ? makeCert(dir) : undefined;
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const listen = certs
      ? [
          "--port",
          "0",
          "--tls-port",
          String(port),
          "--tls-cert-file",
          certs.cert,
          "--tls-key-file",
          certs.key,
          "--tls-ca-cert-file",
          certs.cert,
          "--tls-auth-clients",
          "no",
        ]
      : ["--port", String(port)];
    const child = spawn(
      REDIS_SERVER,
      [
        ...listen,
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
        ...(password ? ["--requirepass", password] : []),
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
      if (await ping(port, password, certs?.cert)) {
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
    const scheme = certs ? "rediss" : "redis";
    return {
      url: `${scheme}://${password ? `:${encodeURIComponent(password)}@` : ""}127.0.0.1:${port}`,
      urlWithoutPassword: `${scheme}://127.0.0.1:${port}`,
      ...(password ? { password } : {}),
      ...(certs ? { ca: certs.cert } : {}),
      port,
      dir,
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
