// A loopback HTTP server for BuildKit's ADD <url> tests (its testutil/httpserver): fixed responses with an ETag and
// an optional Last-Modified, answering HEAD and conditional requests, recording every request it gets.
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface HttpResponse {
  content: string | Buffer;
  etag?: string;
  lastModified?: Date;
}

export interface RecordedRequest {
  method: string;
  headers: http.IncomingHttpHeaders;
}

export interface TestHttpServer {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The requests made for `path`, in order. */
  requests(path: string): RecordedRequest[];
  close(): Promise<void>;
}

/** Serves `routes` (path → response) on 127.0.0.1, port 0; anything else is a 404. */
export async function startHttpServer(routes: Record<string, HttpResponse>): Promise<TestHttpServer> {
  const seen = new Map<string, RecordedRequest[]>();
  const server = http.createServer((req, res) => {
    const p = (req.url ?? "/").split("?")[0] ?? "/";
    const list = seen.get(p) ?? [];
    list.push({ method: req.method ?? "", headers: req.headers });
    seen.set(p, list);
    const r = routes[p];
    if (!r) {
      res.writeHead(404).end("not found");
      return;
    }
    const body = Buffer.from(r.content);
    const headers: http.OutgoingHttpHeaders = { "content-length": body.length };
    if (r.etag) headers.etag = `"${r.etag}"`;
    if (r.lastModified) headers["last-modified"] = r.lastModified.toUTCString();
    if (r.etag && req.headers["if-none-match"] === `"${r.etag}"`) {
      res.writeHead(304, headers).end();
      return;
    }
    res.writeHead(200, headers);
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: (p) => [...(seen.get(p) ?? [])],
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
