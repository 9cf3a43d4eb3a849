/**
 * The operator's metrics listener: `GET /metrics` in the Prometheus text format, on its own address
 * (`strata serve --metrics-listen`), optionally behind a bearer token (STRATA_METRICS_TOKEN), with the API's
 * header timeout and a small connection cap.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type http from "node:http";
import { listenGuarded, type FrontDoorOptions } from "./front-door.js";
import type { ServiceMetrics } from "./metrics.js";

export interface MetricsListener {
  url: string;
  close(): Promise<void>;
}

/** Scrapers are few: this many connections at most. */
const MAX_SCRAPE_CONNECTIONS = 16;

export async function serveMetrics(
  metrics: ServiceMetrics,
  port: number,
  host: string,
  opts: { token?: string; frontDoor: Required<FrontDoorOptions>; log: (line: string) => void },
): Promise<MetricsListener> {
  const want = opts.token ? createHash("sha256").update(opts.token).digest() : undefined;
  const door = { ...opts.frontDoor, maxConnections: MAX_SCRAPE_CONNECTIONS, maxConnectionsPerClient: 0 };
  const handler: http.RequestListener = (req, res) => {
    const reply = (status: number, text: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
      res.end(text);
    };
    const url = new URL(req.url ?? "/", "http://metrics.invalid");
    if (url.pathname !== "/metrics") return reply(404, "not found: metrics are at /metrics\n");
    if (req.method !== "GET" && req.method !== "HEAD") return reply(405, "use GET\n", { allow: "GET, HEAD" });
    if (want) {
      const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "");
      const given = createHash("sha256")
        .update(m?.[1]?.trim() ?? "")
        .digest();
      if (!m || !timingSafeEqual(given, want))
        return reply(401, "this metrics endpoint requires `Authorization: Bearer <STRATA_METRICS_TOKEN>`\n", {
          "www-authenticate": 'Bearer realm="strata-metrics"',
        });
    }
    metrics.scrape().then(
      ({ contentType, text }) => {
        res.writeHead(200, { "content-type": contentType });
        res.end(req.method === "HEAD" ? undefined : text);
      },
      (e: unknown) => {
        opts.log(`metrics scrape failed: ${e instanceof Error ? e.stack : String(e)}`);
        reply(500, "the metrics could not be collected; see the server log\n");
      },
    );
  };
  const { server, url } = await listenGuarded({ door, handler, busy: () => false, port, host });
  return {
    url,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
