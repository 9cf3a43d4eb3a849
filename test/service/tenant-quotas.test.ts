// TenantQuotas with a fake clock and in-memory records (no server): each quota refuses with its name and a
// Retry-After, per tenant; releases give room back; store usage is saved (writes coalesced) and read back.
import assert from "node:assert/strict";
import { test } from "node:test";
import { QuotaExceededError } from "../../src/errors.js";
import { TenantQuotas, defaultTenantRunning, type UsageRecords } from "../../src/service/quotas.js";

const refusal = async (p: Promise<unknown> | (() => unknown)) => {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    assert.ok(e instanceof QuotaExceededError, String(e));
    return e;
  }
  assert.fail("expected a QuotaExceededError");
};

test("TenantQuotas: builds per tenant; a release gives the slot back; other tenants unaffected", async () => {
  const q = new TenantQuotas({ maxActiveBuilds: 2 });
  const r1 = await q.admitBuild("a");
  await q.admitBuild("a");
  const e = await refusal(q.admitBuild("a"));
  assert.equal(e.quota, "builds");
  assert.equal(e.tenant, "a");
  assert.ok(e.retryAfterSeconds >= 1);
  await q.admitBuild("b");
  r1();
  r1();
  await q.admitBuild("a");
  assert.equal(q.activeBuilds("a"), 2);
});

test("TenantQuotas: uploads in flight (declared and chunked) and per window", async () => {
  let now = 1_000_000;
  const q = new TenantQuotas(
    { maxUploadBytesInFlight: 100, maxUploadBytesPerWindow: 250, uploadWindowMs: 60_000 },
    { now: () => now },
  );
  const a = await q.beginUpload("a", 80);
  assert.equal((await refusal(q.beginUpload("a", 30))).quota, "upload-in-flight");
  const chunked = await q.beginUpload("a", undefined);
  chunked.grow(20);
  assert.equal((await refusal(() => chunked.grow(1))).quota, "upload-in-flight");
  chunked.release(20);
  a.release(80);
  const b = await q.beginUpload("a", 100);
  b.release(100);
  // 200 bytes received in this minute: 60 more would pass the 250 per minute.
  const w = await refusal(q.beginUpload("a", 60));
  assert.equal(w.quota, "upload-window");
  assert.ok(w.retryAfterSeconds > 0 && w.retryAfterSeconds <= 62, String(w.retryAfterSeconds));
  (await q.beginUpload("b", 60)).release(60);
  now += 62_000;
  (await q.beginUpload("a", 60)).release(60);
});

test("TenantQuotas: store bytes refuse uploads and builds at the quota, are saved coalesced, and read back", async () => {
  const saved = new Map<string, string>();
  let writes = 0;
  const records: UsageRecords = {
    load: async (t) => saved.get(t),
    save: async (t, text) => {
      writes++;
      await new Promise((r) => setTimeout(r, 5));
      saved.set(t, text);
    },
  };
  const q = new TenantQuotas({ maxStoreBytes: 1000 }, { records });
  await Promise.all([q.addStored("a", 400), q.addStored("a", 300), q.addStored("a", 300)]);
  await q.flush();
  assert.ok(writes <= 2, `coalesced writes: ${writes}`);
  assert.equal((await refusal(q.admitBuild("a"))).quota, "store");
  assert.equal((await refusal(q.beginUpload("a", 1))).quota, "store");
  await q.admitBuild("b");
  const again = new TenantQuotas({ maxStoreBytes: 1000 }, { records });
  assert.equal(await again.storeBytes("a"), 1000);
  assert.equal(await again.storeBytes("b"), 0);
  saved.set("c", "{not json");
  assert.equal(await again.storeBytes("c"), 0, "an unreadable record counts from 0");
});

test("defaultTenantRunning: all slots for one tenant, half (rounded up, at least 1) for several", () => {
  assert.equal(defaultTenantRunning(8, 1), 8);
  assert.equal(defaultTenantRunning(8, 2), 4);
  assert.equal(defaultTenantRunning(3, 5), 2);
  assert.equal(defaultTenantRunning(1, 5), 1);
});
