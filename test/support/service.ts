// Build-service test helpers: an in-process `BuildService` on a free loopback port with its own store, `strata serve`
// as a child process, raw HTTP requests, busybox images defined with the SDK, and a loopback proxy that cuts log
// streams (to exercise the client's resume).
//
// STRATA_TEST_TENANTS=1 runs every service with tenants on: a tenants table of the tests' tenant (`tests`, scoped)
// and a decoy, `startService` and `spawnServe` alike (a test's own token becomes the `tests` tenant's). Clients
// authenticate as `tests` without being told: STRATA_TOKEN is set in this process, and `raw`/`readSse` send its
// token to services started without one.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import http from "node:http";
import os from "node:os";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Image } from "../../src/index.js";
import { fetchPolicyOf } from "../../src/cli/fetch-flags.js";
import type { FetchPolicy } from "../../src/net/fetch-policy.js";
import { BuildService, type BuildServiceOptions } from "../../src/service/server.js";
import { TenantTable } from "../../src/service/tenants.js";
import type { Store } from "../../src/store/store.js";
import { LocalStore } from "../../src/store/local.js";
import { REPO_ROOT, makeBusyboxTree, nonce, tempDir } from "./strata.js";

/** Whether the tests run with tenants on (STRATA_TEST_TENANTS=1). */
export const TENANTS_ON = ["1", "true", "yes"].includes((process.env.STRATA_TEST_TENANTS ?? "").toLowerCase());
/** The tests' tenant's token when tenants are on and a test gives none. */
const TEST_TOKEN = `tests-${randomBytes(16).toString("hex")}`;
if (TENANTS_ON && !process.env.STRATA_TOKEN) process.env.STRATA_TOKEN = TEST_TOKEN;
/** Services (by origin) started with the implicit token: `raw` and `readSse` send it to them. */
const implicitTokens = new Map<string, string>();

const tokenHash = (t: string) => createHash("sha256").update(t).digest();

/** With tenants on: the tenants of a service whose test gave `token` (none: the implicit one). Else nothing. */
export function testTenantOptions(token?: string): { tenants?: TenantTable } {
  if (!TENANTS_ON) return {};
  return {
    tenants: TenantTable.of([
      { tenant: "tests", tokenSha256: tokenHash(token ?? TEST_TOKEN) },
      { tenant: "decoy", tokenSha256: tokenHash(randomBytes(16).toString("hex")) },
    ]),
  };
}

/** Marks a service started by a test without a token (with tenants on, `raw` then authenticates to it). */
export function registerImplicitToken(url: string): string {
  if (TENANTS_ON) implicitTokens.set(new URL(url).origin, TEST_TOKEN);
  return url;
}

function implicitAuth(url: string, headers: Record<string, string> | undefined): Record<string, string> {
  const token = implicitTokens.get(new URL(url).origin);
  if (!token || Object.keys(headers ?? {}).some((h) => h.toLowerCase() === "authorization")) return {};
  return { authorization: `Bearer ${token}` };
}

export interface TestService {
  url: string;
  service: BuildService;
  store: LocalStore;
  /**
   * The store as the tests' tenant sees it: `store` itself, or with tenants on its scoped view (a local build on it
   * hits what the service built for the tests, and its index and chains are the ones the service reads).
   */
  view: Store;
  home: string;
  /** Lines the server logged about itself. */
  serverLog: string[];
  close(): Promise<void>;
}

/**
 * The fetch policy `strata serve --allow-fetch <rule>…` would have: the service's default (public addresses only)
 * plus these allowances, for tests whose builds fetch from loopback servers (`startService({ fetchPolicy })`).
 */
export function allowFetch(...rules: string[]): FetchPolicy {
  return fetchPolicyOf({ "allow-fetch": rules }, {});
}

/**
 * Starts a service in this process on 127.0.0.1:<free port> with a fresh store (or `home`). Its builds fetch from
 * public addresses only (the service's default) unless `fetchPolicy` says more (see `allowFetch`).
 */
export async function startService(opts: Partial<BuildServiceOptions> & { home?: string } = {}): Promise<TestService> {
  const home = opts.home ?? (await tempDir("strata-service-"));
  const store = await LocalStore.open(home);
  const serverLog: string[] = [];
  const tenants = opts.tenants || opts.token === undefined ? {} : testTenantOptions(opts.token);
  const implicit = TENANTS_ON && !opts.tenants && opts.token === undefined;
  const service = await BuildService.create({
    ...opts,
    ...tenants,
    ...(implicit ? testTenantOptions() : {}),
    store,
    log: (l) => serverLog.push(l),
  });
  const url = await service.listen(0, "127.0.0.1");
  if (implicit) registerImplicitToken(url);
  const view = TENANTS_ON && !opts.tenants ? service.builds.storeFor({ id: "tests", scope: "tests" }) : store;
  return {
    url,
    service,
    store,
    view,
    home,
    serverLog,
    async close() {
      await service.close(5000);
      if (!opts.home) await fsp.rm(home, { recursive: true, force: true });
    },
  };
}

/**
 * `strata serve` (cmdServe) in a child process; resolves once it printed its URL. Builds that fetch from loopback
 * servers need `--allow-fetch 127.0.0.1:<port>` in `args`.
 */
export async function spawnServe(
  env: Record<string, string>,
  args: string[] = [],
): Promise<{ url: string; child: ChildProcess; stderr: () => string; exited: Promise<number | null> }> {
  const childEnv = { ...process.env, ...env };
  let implicit = false;
  if (TENANTS_ON) {
    if (!args.includes("--tenants")) {
      // The test's token (or the implicit one) becomes the `tests` tenant's, in a tenants file.
      const token = env.STRATA_TOKEN ?? TEST_TOKEN;
      implicit = env.STRATA_TOKEN === undefined;
      const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-test-tenants-"));
      const file = path.join(dir, "tenants.json");
      await fsp.writeFile(
        file,
        JSON.stringify([
          { tenant: "tests", tokenSha256: tokenHash(token).toString("hex") },
          { tenant: "decoy", tokenSha256: tokenHash(randomBytes(16).toString("hex")).toString("hex") },
        ]),
      );
      args = ["--tenants", file, ...args];
      childEnv.STRATA_TOKEN = "";
    } else if (env.STRATA_TOKEN === undefined) childEnv.STRATA_TOKEN = "";
  }
  const script = `import(${JSON.stringify(path.join(REPO_ROOT, "dist/src/cli/serve.js"))}).then((m) => m.cmdServe(${JSON.stringify(["--port", "0", ...args])})).then((c) => process.exit(c), (e) => { console.error(e); process.exit(70); });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: childEnv,
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
  if (implicit) registerImplicitToken(url);
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
        ...(opts.token ? { authorization: `Bearer ${opts.token}` } : implicitAuth(url, opts.headers)),
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
    const req = http.request(new URL(pathname, url), {
      method: "GET",
      headers: { ...implicitAuth(url, opts.headers), ...opts.headers },
      agent: false,
    });
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
