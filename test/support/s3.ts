// Test helpers for the S3 store: a real S3-compatible server (s3rver from npm) on a free loopback port with its
// data in a mkdtemp dir, a loopback proxy that injects faults between the store and that server, and a port on
// which nothing listens.

import { promises as fsp } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import S3rver from "s3rver";

export interface TestS3 {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  bucket: string;
  /** s3rver's fixed credentials (it verifies SigV4 signatures against them). */
  credentials: { accessKeyId: string; secretAccessKey: string };
  region: string;
  /** Where s3rver keeps its objects. */
  directory: string;
  stop(): Promise<void>;
}

/** Starts s3rver on 127.0.0.1:<free port> with one empty bucket; resolves once it is listening. */
export async function startS3(bucket = "strata-test"): Promise<TestS3> {
  const directory = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-s3rver-"));
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory,
    configureBuckets: [{ name: bucket, configs: [] }],
  });
  makePutsAtomic(server);
  const addr = await server.run();
  let stopped = false;
  return {
    endpoint: `http://127.0.0.1:${addr.port}`,
    bucket,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    region: "us-east-1",
    directory,
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.close();
      await fsp.rm(directory, { recursive: true, force: true });
    },
  };
}

/** The parts of s3rver's filesystem store that `makePutsAtomic` wraps. */
interface S3rverFilesystemStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  putObject(object: { bucket: string; key: string }): Promise<unknown>;
}

let staging = 0;

/**
 * s3rver writes an object in place (truncate, then write), so a GET racing a PUT of the same key can read a
 * truncated object — which S3 never serves: a PUT is atomic, and readers see the old object or the new one. Every
 * PUT (multipart completions included) is staged under a key no listing covers, then its files are renamed into
 * place, so the stand-in keeps S3's guarantee that Strata's store relies on.
 */
function makePutsAtomic(server: S3rver): void {
  const store = (server as unknown as { store: S3rverFilesystemStore }).store;
  const put = store.putObject.bind(store);
  store.putObject = async (object) => {
    const stagingKey = `.strata-staging/${process.pid}-${++staging}`;
    const result = await put(
      Object.assign(Object.create(Object.getPrototypeOf(object) as object) as object, object, {
        key: stagingKey,
      }) as typeof object,
    );
    const target = store.getResourcePath(object.bucket, object.key, "object");
    await fsp.mkdir(path.dirname(target), { recursive: true });
    // The content first: a reader meanwhile gets the new bytes with the old metadata at worst, never a torn object.
    for (const resource of ["object", "object.md5", "metadata.json"]) {
      await fsp
        .rename(
          store.getResourcePath(object.bucket, stagingKey, resource),
          store.getResourcePath(object.bucket, object.key, resource),
        )
        .catch((e: NodeJS.ErrnoException) => {
          if (e.code !== "ENOENT" || resource === "object") throw e;
        });
    }
    return result;
  };
}

/** A loopback port with nothing listening on it (bound, then released). */
export async function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** What the fault proxy does with the n-th request (1-based). */
export type Fault = "pass" | "500" | "503-slowdown" | "reset";

export interface FaultProxy {
  endpoint: string;
  /** Requests seen, by what was done with them. */
  counts: Record<Fault, number>;
  stop(): Promise<void>;
}

/**
 * A plain HTTP proxy on 127.0.0.1:<free port> in front of `target` that answers some requests with 500 or 503
 * SlowDown, or resets their connection, as `decide` says; the rest are forwarded unchanged (headers included,
 * so SigV4 signatures made for the proxy's host still verify).
 */
export async function startFaultProxy(
  target: string,
  decide: (n: number, req: http.IncomingMessage) => Fault,
): Promise<FaultProxy> {
  const t = new URL(target);
  const counts: Record<Fault, number> = { pass: 0, "500": 0, "503-slowdown": 0, reset: 0 };
  let n = 0;
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const fault = decide(++n, req);
    counts[fault]++;
    if (fault === "reset") {
      req.socket.destroy();
      return;
    }
    if (fault === "500" || fault === "503-slowdown") {
      req.resume();
      req.on("end", () => {
        const [status, code] = fault === "500" ? [500, "InternalError"] : [503, "SlowDown"];
        res.writeHead(status, { "content-type": "application/xml" });
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected by the test proxy</Message></Error>`,
        );
      });
      return;
    }
    const upstream = http.request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", () => req.socket.destroy());
    req.pipe(upstream);
  });
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const addr = server.address() as net.AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${addr.port}`,
    counts,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
