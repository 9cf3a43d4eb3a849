/**
 * When the build service client asks again (pure): a 429 (a tenant quota: builds, uploads, store) after its
 * `Retry-After`, and a 503 (the server's build slots are full) only when it says when (`Retry-After`); anything else
 * is not retried here. Each wait is capped, and so are the number of retries and the total time spent waiting: a
 * quota that does not free up fails the build with the server's own message, and one whose `Retry-After` is beyond
 * the total (a store quota, counted over days) fails at once.
 */
import { parseRetryAfter } from "../registry/http.js";

export interface BusyRetryPolicy {
  /** Retries at most (0: none). Default 10. */
  attempts?: number;
  /** Longest single wait, ms; a longer `Retry-After` is cut to it (the server says again if still busy). Default 60 s. */
  maxWaitMs?: number;
  /** Longest total wait over all retries of one request, ms. Default 10 min. */
  maxTotalMs?: number;
}

export const BUSY_RETRY_DEFAULTS: Required<BusyRetryPolicy> = {
  attempts: 10,
  maxWaitMs: 60_000,
  maxTotalMs: 10 * 60_000,
};

/** How long a 429 without `Retry-After` waits. */
const DEFAULT_429_WAIT_MS = 5_000;

/** An answer the client may retry: its status and `Retry-After` header. */
export interface BusyAnswer {
  status: number | undefined;
  retryAfter: string | undefined;
}

/** How long to wait before retry number `retries + 1`, having waited `waitedMs` already; undefined: do not retry. */
export function busyRetryWait(
  answer: BusyAnswer,
  retries: number,
  waitedMs: number,
  policy: BusyRetryPolicy = {},
  now = Date.now(),
): number | undefined {
  const p = { ...BUSY_RETRY_DEFAULTS, ...policy };
  const asked = parseRetryAfter(answer.retryAfter ?? null, now);
  let wait: number | undefined;
  if (answer.status === 429) wait = asked ?? DEFAULT_429_WAIT_MS;
  else if (answer.status === 503 && asked !== undefined) wait = asked;
  if (wait === undefined || retries >= p.attempts) return undefined;
  // A server that asks for longer than this client would wait in all (a store quota: days) is not asked again.
  if (waitedMs + wait > p.maxTotalMs) return undefined;
  wait = Math.min(Math.max(wait, 250), p.maxWaitMs);
  return waitedMs + wait > p.maxTotalMs ? undefined : wait;
}
