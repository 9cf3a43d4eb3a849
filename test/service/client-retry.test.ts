// When the service client asks again (pure): 429 after Retry-After, 503 only with it; caps on each wait, the number
// of retries and the total wait; a Retry-After beyond the total fails at once.
import assert from "node:assert/strict";
import { test } from "node:test";
import { busyRetryWait } from "../../src/service/client-retry.js";

test("429 waits for Retry-After (seconds or a date); without one, a short default", () => {
  assert.equal(busyRetryWait({ status: 429, retryAfter: "10" }, 0, 0), 10_000);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(busyRetryWait({ status: 429, retryAfter: "Thu, 01 Jan 2026 00:00:07 GMT" }, 0, 0, {}, now), 7_000);
  assert.equal(busyRetryWait({ status: 429, retryAfter: undefined }, 0, 0), 5_000);
  assert.equal(busyRetryWait({ status: 429, retryAfter: "0" }, 0, 0), 250, "never a busy loop");
});

test("503 only with Retry-After; other statuses never", () => {
  assert.equal(busyRetryWait({ status: 503, retryAfter: "10" }, 0, 0), 10_000);
  assert.equal(busyRetryWait({ status: 503, retryAfter: undefined }, 0, 0), undefined);
  for (const status of [400, 401, 404, 413, 500, undefined])
    assert.equal(busyRetryWait({ status, retryAfter: "1" }, 0, 0), undefined, String(status));
});

test("each wait is capped, and so are the retries and the total wait", () => {
  assert.equal(busyRetryWait({ status: 429, retryAfter: "300" }, 0, 0), 60_000, "capped at 60 s");
  assert.equal(busyRetryWait({ status: 429, retryAfter: "300" }, 0, 0, { maxWaitMs: 1000 }), 1000);
  assert.equal(busyRetryWait({ status: 429, retryAfter: "1" }, 9, 0), 1000, "the 10th retry");
  assert.equal(busyRetryWait({ status: 429, retryAfter: "1" }, 10, 0), undefined, "no 11th");
  assert.equal(busyRetryWait({ status: 429, retryAfter: "1" }, 0, 0, { attempts: 0 }), undefined);
  assert.equal(busyRetryWait({ status: 429, retryAfter: "60" }, 3, 9 * 60_000), 60_000, "just within 10 min");
  assert.equal(busyRetryWait({ status: 429, retryAfter: "60" }, 3, 9 * 60_000 + 1), undefined, "past 10 min");
  // A store quota counted over days: not asked again at all.
  assert.equal(busyRetryWait({ status: 429, retryAfter: String(30 * 86_400) }, 0, 0), undefined);
});
