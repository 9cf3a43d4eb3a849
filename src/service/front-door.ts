/**
 * The service's front door, before any request is authenticated: timeouts and connection caps on a node:http(s)
 * server, with slow clients (slowloris) in mind.
 *
 * - Header timeout (default 20 s): a request's headers must be complete this long after its first byte (or after
 *   the connection opened). A real client sends its few hundred header bytes in one write, so 20 s covers a very slow
 *   link many times over, while a connection that trickles header bytes is closed (408) within 20 s plus the check
 *   interval (1 s) — Apache's mod_reqtimeout uses the same first bound. Node's own default (60 s) is lost when
 *   `requestTimeout` is 0, which is how a trickle used to stay open for good.
 * - Request timeout (default 60 s) for requests that are not streams: a JSON body must have arrived this long after
 *   the request started. Uploads (`PUT /v1/blobs/…`, up to gigabytes) and log streams have no total bound; they have
 *   the idle timeout instead.
 * - Idle timeout (default 60 s): a connection on which nothing moved in either direction for this long is closed —
 *   unless the server itself is still working on a complete request (slow store calls are not the client's fault).
 *   Log streams send a keep-alive comment every 15 s, so they are never idle.
 * - Keep-alive timeout (default 65 s, above the 60 s idle timeout of common load balancers) between requests. An
 *   unauthenticated request never keeps its connection: a 401 closes it.
 * - Connection caps, counted from the TCP accept (before TLS and before any byte of HTTP): at most
 *   `maxConnections` in all (default 1024) and `maxConnectionsPerClient` from one remote address (default 128), so
 *   one host cannot take every connection while the header timeout recycles its slow ones. A refused connection is
 *   closed at once.
 * - TLS handshake timeout: the header timeout (a handshake is a few round trips).
 */
import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";

export interface FrontDoorOptions {
  /** Default 20 s. */
  headersTimeoutMs?: number;
  /** Body of a non-streaming request complete within this. Default 60 s. */
  requestTimeoutMs?: number;
  /** Default 60 s. */
  idleTimeoutMs?: number;
  /** Default 65 s. */
  keepAliveTimeoutMs?: number;
  /** Open connections in all. Default 1024. */
  maxConnections?: number;
  /** Open connections from one remote address (0: no such cap, e.g. behind a proxy). Default 128. */
  maxConnectionsPerClient?: number;
}

export const FRONT_DOOR_DEFAULTS: Required<FrontDoorOptions> = {
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 60_000,
  idleTimeoutMs: 60_000,
  keepAliveTimeoutMs: 65_000,
  maxConnections: 1024,
  maxConnectionsPerClient: 128,
};

/** How often node checks its header timeouts (its default, 30 s, would let a trickle live up to 50 s). */
const CHECK_INTERVAL_MS = 1000;

/** Options for http.createServer / https.createServer. */
export function serverOptions(o: Required<FrontDoorOptions>): http.ServerOptions {
  return {
    // The total request bound is ours (per route, `requestDeadline`): node's would cut long uploads.
    requestTimeout: 0,
    headersTimeout: o.headersTimeoutMs,
    keepAliveTimeout: o.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(CHECK_INTERVAL_MS, o.headersTimeoutMs),
  };
}

/** Counts of what the front door did (for metrics). */
export interface FrontDoorCounters {
  refused: (reason: "max-connections" | "max-connections-per-client") => void;
  timedOut: (phase: "headers" | "idle" | "request") => void;
}

/** A listening server behind the front door. */
export interface GuardedServer {
  server: http.Server | https.Server;
  /** `http(s)://host:port` */
  url: string;
  /** Open connections. */
  open(): number;
}

/**
 * Creates a node:http server (node:https with `tls`) with the front door's timeouts and caps, a 408/400 answer to
 * requests that time out in their headers or are malformed, and listens on `host:port` (0: any free port).
 */
export async function listenGuarded(o: {
  door: Required<FrontDoorOptions>;
  tls?: { cert: string | Buffer; key: string | Buffer };
  handler: http.RequestListener;
  /** Whether the handler is still working on the socket's complete request (then it is not idle). */
  busy: (socket: Socket) => boolean;
  counters?: FrontDoorCounters;
  port: number;
  host: string;
}): Promise<GuardedServer> {
  const options = serverOptions(o.door);
  const server = o.tls
    ? https.createServer({ ...options, ...o.tls, handshakeTimeout: o.door.headersTimeoutMs }, o.handler)
    : http.createServer(options, o.handler);
  const guard = guardConnections(server, o.door, o.busy, o.counters);
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    const [status, code, message] =
      err.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? [
            "408 Request Timeout",
            "REQUEST_TIMEOUT",
            `the request headers did not arrive within ${o.door.headersTimeoutMs} ms`,
          ]
        : ["400 Bad Request", "BAD_REQUEST", `malformed HTTP request: ${err.message}`];
    if (socket.writable)
      socket.end(
        `HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n` +
          JSON.stringify({ error: { code, message } }),
      );
    else socket.destroy();
    // A client that stops reading must not keep the socket open through end(): it is closed in any case.
    setTimeout(() => socket.destroy(), 1000).unref();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  const url = `${o.tls ? "https" : "http"}://${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`;
  return { server, url, open: guard.open };
}

/**
 * Applies the idle timeout and the connection caps to `server` (after `serverOptions` at creation). `busy` tells
 * whether the handler is still working on a socket's complete request.
 */
export function guardConnections(
  server: http.Server | https.Server,
  o: Required<FrontDoorOptions>,
  busy: (socket: Socket) => boolean,
  counters?: FrontDoorCounters,
): { open: () => number } {
  const perClient = new Map<string, number>();
  let open = 0;
  // The raw TCP socket: for an https server too, so a handshake that never ends holds a counted slot.
  server.on("connection", (socket: Socket) => {
    const addr = socket.remoteAddress ?? "?";
    const mine = perClient.get(addr) ?? 0;
    let reason: "max-connections" | "max-connections-per-client" | undefined;
    if (open >= o.maxConnections) reason = "max-connections";
    else if (o.maxConnectionsPerClient > 0 && mine >= o.maxConnectionsPerClient) reason = "max-connections-per-client";
    if (reason) {
      counters?.refused(reason);
      socket.destroy();
      return;
    }
    open++;
    perClient.set(addr, mine + 1);
    socket.once("close", () => {
      open--;
      const left = (perClient.get(addr) ?? 1) - 1;
      if (left > 0) perClient.set(addr, left);
      else perClient.delete(addr);
    });
  });
  server.timeout = o.idleTimeoutMs;
  // With a listener, node leaves a timed-out socket to us: close it unless the server is the slow side.
  server.on("timeout", (socket: Socket) => {
    if (busy(socket)) return;
    counters?.timedOut("idle");
    socket.destroy();
  });
  server.on("clientError", (err: NodeJS.ErrnoException) => {
    if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") counters?.timedOut("headers");
  });
  return { open: () => open };
}

/**
 * Bounds how long the client may take to send a non-streaming request's body: past `ms` with the body incomplete,
 * `onTimeout` runs (the server answers 408 and closes). Returns the cancel function.
 */
export function requestDeadline(req: http.IncomingMessage, ms: number, onTimeout: () => void): () => void {
  if (req.complete) return () => undefined;
  const timer = setTimeout(() => {
    if (!req.complete) onTimeout();
  }, ms);
  timer.unref();
  const cancel = () => clearTimeout(timer);
  req.once("end", cancel);
  req.once("close", cancel);
  return cancel;
}
