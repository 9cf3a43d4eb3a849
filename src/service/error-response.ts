/**
 * How a failed request is answered: a quota refusal is a 429 with Retry-After, a refused request its 4xx with
 * `{error: {code, message}}`, anything else a 500 (and a line in the server's log); the rest of the request body is
 * read first, so a client still sending sees the answer.
 */
import type http from "node:http";
import { QuotaExceededError } from "../errors.js";
import { drain, HttpError, sendJson } from "./http-io.js";
import type { ServiceMetrics } from "./metrics.js";
import { WireError } from "./wire/limits.js";
import type { ErrorBody } from "./wire/responses.js";

/** What an error response reads of its build service. */
export interface ErrorResponseContext {
  metrics: ServiceMetrics;
  /** The server's own log. */
  log: (line: string) => void;
}

/** Answers `req` with the response `e` calls for (or destroys a response whose headers went out already). */
export function sendError(
  ctx: ErrorResponseContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  e: unknown,
): Promise<void> {
  let status = 500;
  let body: ErrorBody;
  let headers: Record<string, string> = {};
  if (e instanceof QuotaExceededError) {
    ctx.metrics.quotaRefused(e.tenant, e.quota);
    status = 429;
    body = { error: { code: e.code, message: `${e.message} (retry after ${e.retryAfterSeconds} s)` } };
    headers = { "retry-after": String(e.retryAfterSeconds) };
  } else if (e instanceof HttpError) {
    status = e.status;
    body = { error: { code: e.code, message: e.message, ...(e.missing ? { missing: e.missing } : {}) } };
    headers = e.headers;
  } else if (e instanceof WireError) {
    status = e.status;
    body = { error: { code: e.code, message: e.message } };
  } else {
    ctx.log(`internal error handling ${req.method} ${req.url}: ${e instanceof Error ? e.stack : String(e)}`);
    body = {
      error: {
        code: "INTERNAL",
        message: `internal error on the build server: ${e instanceof Error ? e.message : String(e)}`,
      },
    };
  }
  if (res.headersSent) {
    res.destroy();
    return Promise.resolve();
  }
  // An unauthenticated client keeps no connection open (no keep-alive slot for a request that was refused).
  if (status === 401) res.setHeader("connection", "close");
  // Read what is left of the body first, so the client (still sending) sees the response instead of a reset.
  return drain(req).then(
    () => sendJson(res, status, body, headers),
    () => {
      res.setHeader("connection", "close");
      sendJson(res, status, body, headers);
    },
  );
}
