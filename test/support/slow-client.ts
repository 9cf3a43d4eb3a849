// Slow HTTP clients for the front-door tests (loopback only): a connection that trickles header bytes (slowloris),
// one that trickles a body, and a count of how long the server kept each open. Every loop is bounded in time.
import net from "node:net";

export interface Trickle {
  socket: net.Socket;
  /** Resolves when the server closed the connection (or `maxMs` passed: then `closedAfterMs` is undefined). */
  closed: Promise<{ closedAfterMs?: number; response: string }>;
  /** Whether the server has closed it yet. */
  isOpen(): boolean;
}

/**
 * Opens a connection to `url` and sends `head` at once, then one byte of `drip` every `intervalMs` — never finishing
 * the request — until the server closes the connection or `maxMs` passed (then it closes it itself).
 */
export function trickle(
  url: string,
  opts: { head?: string; drip?: string; intervalMs?: number; maxMs?: number; localAddress?: string } = {},
): Trickle {
  const u = new URL(url);
  const head = opts.head ?? `GET /v1/images/${"0".repeat(64)} HTTP/1.1\r\nHost: ${u.host}\r\nX-Slow: `;
  const drip = opts.drip ?? "a";
  const t0 = Date.now();
  const socket = net.connect({
    host: u.hostname,
    port: Number(u.port),
    ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
  });
  let open = true;
  let response = "";
  socket.setEncoding("latin1");
  socket.on("data", (d: string) => (response += d));
  socket.on("error", () => undefined);
  socket.on("connect", () => socket.write(head));
  const timer = setInterval(() => {
    if (open && socket.writable) socket.write(drip);
  }, opts.intervalMs ?? 1000);
  const closed = new Promise<{ closedAfterMs?: number; response: string }>((resolve) => {
    const giveUp = setTimeout(() => {
      clearInterval(timer);
      resolve({ response });
      socket.destroy();
    }, opts.maxMs ?? 90_000);
    socket.on("close", () => {
      open = false;
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ closedAfterMs: Date.now() - t0, response });
    });
  });
  return { socket, closed, isOpen: () => open };
}

/** Opens a bare connection (nothing sent) and resolves once connected, or with the error/close that came first. */
export function connectOnly(url: string, localAddress?: string): Promise<{ socket: net.Socket; refused: boolean }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({
      host: u.hostname,
      port: Number(u.port),
      ...(localAddress ? { localAddress } : {}),
    });
    socket.on("error", () => undefined);
    // A refused connection is accepted by the kernel and then closed by the server: wait a moment for that.
    socket.on("connect", () => {
      const t = setTimeout(() => resolve({ socket, refused: false }), 150);
      socket.once("close", () => {
        clearTimeout(t);
        resolve({ socket, refused: true });
      });
    });
    socket.once("close", () => resolve({ socket, refused: true }));
  });
}
