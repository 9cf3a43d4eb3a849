// A transparent HTTP proxy in front of a test registry that counts the response body bytes it forwards, per request
// path: what a client actually transferred (e.g. how much of an image's layer blobs a lazy pull read).
import http from "node:http";

export interface CountedRequest {
  method: string;
  path: string;
  status: number;
  range: string | undefined;
  /** Response body bytes forwarded to the client. */
  bytes: number;
}

export interface CountingProxy {
  /** `127.0.0.1:<port>` (an image reference host). */
  host: string;
  requests: CountedRequest[];
  /** Body bytes of GETs of `/v2/<repository>/blobs/<digest>` (all digests, or only those given). */
  blobBytes(repository: string, digests?: readonly string[]): number;
  /** Forgets the requests seen so far. */
  reset(): void;
  close(): Promise<void>;
}

/** Starts the proxy on 127.0.0.1 forwarding to `target` (`host:port`). */
export async function startCountingProxy(target: string): Promise<CountingProxy> {
  const targetHost = target.slice(0, target.lastIndexOf(":"));
  const targetPort = Number(target.slice(target.lastIndexOf(":") + 1));
  const requests: CountedRequest[] = [];
  let self = "";
  const server = http.createServer((req, res) => {
    const upstream = http.request(
      {
        host: targetHost,
        port: targetPort,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target },
      },
      (up) => {
        const record: CountedRequest = {
          method: req.method ?? "",
          path: new URL(req.url ?? "/", "http://x").pathname,
          status: up.statusCode ?? 0,
          range: typeof req.headers.range === "string" ? req.headers.range : undefined,
          bytes: 0,
        };
        requests.push(record);
        const headers = { ...up.headers };
        if (typeof headers.location === "string")
          headers.location = headers.location.replace(`//${target}/`, `//${self}/`);
        res.writeHead(up.statusCode ?? 502, headers);
        up.on("data", (c: Buffer) => {
          record.bytes += c.length;
        });
        up.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  self = `127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  return {
    host: self,
    requests,
    blobBytes(repository, digests) {
      const prefix = `/v2/${repository}/blobs/`;
      return requests
        .filter(
          (r) =>
            r.method === "GET" &&
            r.path.startsWith(prefix) &&
            (!digests || digests.includes(r.path.slice(prefix.length))),
        )
        .reduce((n, r) => n + r.bytes, 0);
    },
    reset() {
      requests.length = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
