// UsageWindow (pure): bytes count until their bucket has left the window; retryAfterMs is the time until enough
// bytes have aged out; the state round-trips through JSON.
import assert from "node:assert/strict";
import { test } from "node:test";
import { UsageWindow } from "../../src/service/usage-window.js";

test("UsageWindow: bytes age out bucket by bucket; retryAfterMs waits for just enough of them", () => {
  const w = new UsageWindow(60_000, 1000);
  w.add(10_000, 300);
  w.add(10_500, 200); // same bucket [10 s, 11 s)
  w.add(30_000, 400);
  assert.equal(w.used(30_000), 900);
  assert.equal(w.retryAfterMs(30_000, 100, 1000), 0);
  // 300 more needs 200 to leave: the first bucket (500) leaves at 11 s + 60 s.
  assert.equal(w.retryAfterMs(30_000, 300, 1000), 71_000 - 30_000);
  // 700 more needs both buckets gone: the second leaves at 31 s + 60 s.
  assert.equal(w.retryAfterMs(30_000, 700, 1000), 91_000 - 30_000);
  assert.equal(w.retryAfterMs(30_000, 1001, 1000), Number.POSITIVE_INFINITY);
  assert.equal(w.used(71_000), 400);
  assert.equal(w.used(91_000), 0);
});

test("UsageWindow: the saved state restores the same count", () => {
  const w = new UsageWindow(86_400_000, 3_600_000);
  w.add(5_000_000, 1234);
  const back = new UsageWindow(86_400_000, 3_600_000, JSON.parse(JSON.stringify(w.toJSON())));
  assert.equal(back.used(6_000_000), 1234);
  assert.equal(new UsageWindow(1000, 100, { bucketMs: 100, buckets: [{ start: Number.NaN, bytes: 5 }] }).used(0), 0);
});
