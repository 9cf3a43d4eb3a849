/**
 * `GET /v1/images/<build id>/logs?after=<cursor>`: a build's log as server-sent events, from a cursor (`after`, or
 * `Last-Event-ID` on a reconnect): a `gap` event for lines no longer kept, one event per line, then `result`.
 */
import type http from "node:http";
import type { Build } from "./build-record.js";
import { HttpError } from "./http-io.js";

/** What a log stream reads of its build service. */
export interface LogStreamContext {
  /** The open streams (ended by the service's close); a stream is in it while it is open. */
  streams: Set<http.ServerResponse>;
  /** SSE keep-alive comment interval (ms). Default 15 s. */
  heartbeatMs?: number | undefined;
}

/** Answers the request with the build's log lines after the cursor, following the build until it finishes. */
export function streamLogs(
  ctx: LogStreamContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  build: Build,
  url: URL,
): void {
  const raw = url.searchParams.get("after") ?? req.headers["last-event-id"];
  const rawAfter = Array.isArray(raw) ? raw[0] : raw;
  let after = 0;
  if (rawAfter !== undefined && rawAfter !== "") {
    if (!/^\d{1,15}$/.test(rawAfter))
      throw new HttpError(
        400,
        "BAD_CURSOR",
        `after=${JSON.stringify(rawAfter)} is not a log cursor (a non-negative integer from an event's id)`,
      );
    after = Number(rawAfter);
  }
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    "x-accel-buffering": "no",
  });
  res.flushHeaders();
  ctx.streams.add(res);
  const write = (text: string) => {
    if (!res.writableEnded && !res.destroyed) res.write(text);
  };
  const sendLine = (cursor: number, line: string) => write(`id: ${cursor}\ndata: ${JSON.stringify(line)}\n\n`);
  const sendResult = () => {
    const info = build.info();
    const payload = {
      status: info.status,
      lastCursor: info.lastCursor,
      ...(info.result ? { result: info.result } : {}),
      ...(info.failure ? { failure: info.failure } : {}),
    };
    write(`event: result\ndata: ${JSON.stringify(payload)}\n\n`);
    res.end();
  };
  // Snapshot and subscribe in one synchronous turn: no line is missed or sent twice.
  const { lines, dropped } = build.linesAfter(after);
  if (dropped > 0) write(`event: gap\ndata: ${JSON.stringify({ dropped, from: after + 1, to: after + dropped })}\n\n`);
  for (const l of lines) sendLine(l.cursor, l.line);
  if (build.finished) {
    sendResult();
    ctx.streams.delete(res);
    return;
  }
  const heartbeat = setInterval(() => write(": keep-alive\n\n"), ctx.heartbeatMs ?? 15_000);
  const unsubscribe = build.subscribe((e) => {
    if (e.type === "line") sendLine(e.cursor, e.line);
    else sendResult();
  });
  res.on("close", () => {
    clearInterval(heartbeat);
    unsubscribe();
    ctx.streams.delete(res);
  });
}
