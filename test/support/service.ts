// Build-service test helpers: an in-process `BuildService` on a free loopback port with its own store, `strata serve`
// as a child process, raw HTTP requests, busybox images defined with the SDK, and a loopback proxy that cuts log
// streams (to exercise the client's resume).
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Image } from "../../src/index.js";
import { BuildService, type BuildServiceOptions } from "../../src/service/server.js";
import { LocalStore } from "../../src/store/local.js";
import { REPO_ROOT, makeBusyboxTree, nonce, tempDir } from "./strata.js";

export interface TestService {
  url: string;
  service: BuildService;
  store: LocalStore;
  home: string;
  /** Lines the server logged about itself. */
  serverLog: string[];
  close(): Promise<void>;
}

/** Starts a service in this process on 127.0.0.1:<free port> with a fresh store (or `home`). */
export async function startService(opts: Partial<BuildServiceOptions> & { home?: string } = {}): Promise<TestService> {
  const home = opts.home ?? (await tempDir("strata-service-"));
  const store = await LocalStore.open(home);
  const serverLog: string[] = [];
  const service = await BuildService.create({ ...opts, store, log: (l) => serverLog.push(l) });
  const url = await service.listen(0, "127.0.0.1");
  return {
    url,
    service,
    store,
    home,
    serverLog,
    async close() {
      await service.close(5000);
      if (!opts.home) await fsp.rm(home, { recursive: true, force: true });
    },
  };
}

/** `strata serve` (cmdServe) in a child process; resolves once it printed its URL. */
export async function spawnServe(
  env: Record<string, string>,
  args: string[] = [],
): Promise<{ url: string; child: ChildProcess; stderr: () => string; exited: Promise<number | null> }> {
  const script = `import(${JSON.stringify(path.join(REPO_ROOT, "dist/src/cli/serve.js"))}).then((m) => m.cmdServe(${JSON.stringify(["--port", "0", ...args])})).then((c) => process.exit(c), (e) => { console.error(e); process.exit(70); });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /^(https?:\/\/\S+)\n/m.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`strata serve exited (${code}) before listening:\n${stderr}`)));
  });
  return { url, child, stderr: () => stderr, exited };
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: () => any;
}

/** One plain HTTP request (no retries, no client logic). */
export function raw(
  url: string,
  method: string,
  pathname: string,
  opts: { body?: string | Buffer; headers?: Record<string, string>; token?: string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(pathname, url), {
      method,
      headers: {
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
        ...(opts.body !== undefined ? { "content-length": String(Buffer.byteLength(opts.body)) } : {}),
        ...opts.headers,
      },
    });
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
      });
    });
    req.end(opts.body);
  });
}

export interface SseEvent {
  event: string;
  id?: string;
  data: string;
}

/**
 * Opens a log stream and reads events; `stopAfter` returning true closes the connection (as a dropped client
 * would). Resolves with the events read.
 */
export function readSse(
  url: string,
  pathname: string,
  opts: { headers?: Record<string, string>; stopAfter?: (e: SseEvent, all: SseEvent[]) => boolean } = {},
): Promise<{ status: number; events: SseEvent[] }> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(pathname, url), { method: "GET", headers: opts.headers ?? {}, agent: false });
    req.on("error", reject);
    req.on("response", (res) => {
      const events: SseEvent[] = [];
      let buf = "";
      let done = false;
      const finish = () => {
        if (!done) {
          done = true;
          resolve({ status: res.statusCode ?? 0, events });
        }
      };
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buf += chunk;
        let sep: number;
        while (!done && (sep = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, sep);
          buf = buf.slice(sep + 2);
          const ev: SseEvent = { event: "message", data: "" };
          let any = false;
          for (const line of block.split("\n")) {
            if (line.startsWith(":") || line === "") continue;
            any = true;
            const i = line.indexOf(":");
            const k = line.slice(0, i);
            const v = line.slice(i + 1).replace(/^ /, "");
            if (k === "event") ev.event = v;
            else if (k === "id") ev.id = v;
            else if (k === "data") ev.data = ev.data ? ev.data + "\n" + v : v;
          }
          if (!any) continue;
          events.push(ev);
          if (opts.stopAfter?.(ev, events)) {
            req.destroy();
            finish();
          }
        }
      });
      res.on("end", finish);
      res.on("close", finish);
    });
    req.end();
  });
}

/**
 * A loopback HTTP proxy in front of `target` that cuts every log stream after `cutAfter` events (the first
 * `cuts` streams only), so a client must reconnect with its cursor.
 */
export async function cuttingProxy(
  target: string,
  cutAfter: number,
  cuts: number,
): Promise<{ url: string; streamsCut: () => number; close: () => Promise<void> }> {
  let cut = 0;
  const server = http.createServer((req, res) => {
    const up = http.request(
      new URL(req.url ?? "/", target),
      { method: req.method, headers: req.headers, agent: false },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        const isLog = (req.url ?? "").includes("/logs");
        if (!isLog || cut >= cuts) {
          upRes.pipe(res);
          return;
        }
        let events = 0;
        upRes.on("data", (c: Buffer) => {
          // Forward whole events only up to the cut, then drop the connection mid-stream.
          const text = c.toString("utf8");
          const parts = text.split("\n\n");
          for (let i = 0; i < parts.length - 1; i++) {
            if (events >= cutAfter) {
              cut++;
              upRes.destroy();
              res.destroy();
              return;
            }
            res.write(parts[i] + "\n\n");
            if (!parts[i]!.startsWith(":")) events++;
          }
          if (parts[parts.length - 1]) res.write(parts[parts.length - 1]);
        });
        upRes.on("end", () => res.end());
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    streamsCut: () => cut,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A busybox base defined with the SDK (a copied rootfs plus a unique env), in a fresh temp dir. */
export async function busyboxBase(): Promise<{ dir: string; base: Image; tag: string }> {
  const dir = await tempDir("strata-service-project-");
  const tag = nonce();
  await makeBusyboxTree(path.join(dir, "rootfs"));
  const base = Image.fromScratch().addLocalDir(path.join(dir, "rootfs"), "/", { copy: true }).env({ TEST_NONCE: tag });
  return { dir, base, tag };
}
