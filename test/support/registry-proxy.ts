// An HTTP proxy in front of a test registry that misbehaves on purpose: it cuts blob downloads after N bytes
// (a dropped connection mid-blob) and can ignore Range headers (a server without range support).

import http from "node:http";

export interface ProxyRequest {
  method: string;
  path: string;
  /** The Range header the client sent (before any stripping). */
  range: string | undefined;
  status: number;
  /** True when this response was cut short on purpose. */
  cut: boolean;
  contentRange: string | undefined;
}

export interface CuttingProxyOptions {
  /** Body bytes of a blob GET after which the connection is destroyed. */
  cutAfterBytes: number;
  /** How many blob responses to cut (default 1). */
  cuts?: number;
  /** Remove Range headers before forwarding, so the registry always answers 200 with the whole blob. */
  ignoreRange?: boolean;
}

export interface CuttingProxy {
  /** `127.0.0.1:<port>` (an image reference host). */
  host: string;
  url: string;
  requests: ProxyRequest[];
  close(): Promise<void>;
}

const BLOB_GET = /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/;

/** Starts the proxy on 127.0.0.1 forwarding to `target` (`host:port`). */
export async function startCuttingProxy(target: string, opts: CuttingProxyOptions): Promise<CuttingProxy> {
  const [targetHost, targetPort] = [
    target.slice(0, target.lastIndexOf(":")),
    Number(target.slice(target.lastIndexOf(":") + 1)),
  ];
  const requests: ProxyRequest[] = [];
  let cutsLeft = opts.cuts ?? 1;
  let self = "";

  const server = http.createServer((req, res) => {
    const headers = { ...req.headers, host: target };
    const range = typeof req.headers.range === "string" ? req.headers.range : undefined;
    if (opts.ignoreRange) delete headers.range;
    const upstream = http.request(
      { host: targetHost, port: targetPort, method: req.method, path: req.url, headers },
      (up) => {
        const pathname = new URL(req.url ?? "/", "http://x").pathname;
        const isBlob =
          req.method === "GET" && BLOB_GET.test(pathname) && (up.statusCode === 200 || up.statusCode === 206);
        const length = Number(up.headers["content-length"] ?? Number.NaN);
        const cut = isBlob && cutsLeft > 0 && (!Number.isFinite(length) || length > opts.cutAfterBytes);
        if (cut) cutsLeft--;
        requests.push({
          method: req.method ?? "",
          path: pathname,
          range,
          status: up.statusCode ?? 0,
          cut,
          contentRange: up.headers["content-range"],
        });
        const outHeaders = { ...up.headers };
        // Absolute Locations that name the registry must name the proxy instead.
        if (typeof outHeaders.location === "string")
          outHeaders.location = outHeaders.location.replace(`//${target}/`, `//${self}/`);
        res.writeHead(up.statusCode ?? 502, outHeaders);
        if (!cut) {
          up.pipe(res);
          return;
        }
        let sent = 0;
        up.on("data", (chunk: Buffer) => {
          if (sent >= opts.cutAfterBytes) return;
          const room = opts.cutAfterBytes - sent;
          const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
          sent += part.length;
          if (sent < opts.cutAfterBytes) {
            res.write(part);
            return;
          }
          res.write(part, () => {
            up.destroy();
            res.socket?.destroy();
          });
        });
        up.on("end", () => {
          if (sent < opts.cutAfterBytes) res.end();
        });
      },
    );
    upstream.on("error", () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  self = `127.0.0.1:${port}`;
  return {
    host: self,
    url: `http://${self}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
