// Per-tenant quotas, replayed as the attacks (two tenants of a tenants table): a tenant at its build
// quota gets 429 with Retry-After — a forced build too — while another tenant's build starts at once (its running
// cap leaves slots free); uploads in flight and per window; store bytes, kept across a restart.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import http from "node:http";
import { after, test } from "node:test";
import { RemoteBuildError } from "../../src/service/client.js";
import { compileRequest } from "../../src/service/wire/encode.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, raw, startService } from "../support/service.js";
import { nonce, tempDir } from "../support/strata.js";
import { parseTenants, TenantTable } from "../../src/service/tenants.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

const tenants = () => {
  const alice = "alice-" + nonce();
  const bob = "bob-" + nonce();
  return {
    alice,
    bob,
    tenants: TenantTable.of(
      parseTenants(
        JSON.stringify([
          { tenant: "alice", token: alice },
          { tenant: "bob", token: bob },
        ]),
        "test",
      ),
    ),
  };
};

const blob = (size: number, fill: string) => {
  const body = Buffer.alloc(size, fill);
  return { body, digest: "sha256:" + createHash("sha256").update(body).digest("hex") };
};

const put = (url: string, token: string, b: { body: Buffer; digest: string }) =>
  raw(url, "PUT", `/v1/blobs/${b.digest}`, { token, body: b.body });

const waitFor = async (what: string, ok: () => boolean, ms = 30_000) => {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

test("at its build quota a tenant gets 429 with Retry-After (a forced build too) while another tenant's build starts", async () => {
  const t = tenants();
  const svc = await startService({
    tenants: t.tenants,
    maxConcurrentBuilds: 2,
    quotas: { maxActiveBuilds: 2 },
  });
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const pending: Promise<unknown>[] = [];
  try {
    // Alice: two long builds — one running (her cap is 1 of the 2 slots with two tenants), one queued.
    const slow = [1, 2].map((i) => base.runCommands(`echo alice-${i}; sleep 60`));
    for (const img of slow)
      pending.push(
        remoteBuildImage(img, { server: svc.url, token: t.alice, statCache: false, log: () => undefined }).catch(
          (e: unknown) => e,
        ),
      );
    const aliceBuilds = () => svc.service.builds.active.filter((b) => b.tenant.id === "alice");
    await waitFor("alice's two builds", () => aliceBuilds().length === 2);
    await waitFor("alice's first build to run", () => aliceBuilds().some((b) => b.status === "building"));
    assert.equal(aliceBuilds().filter((b) => b.status === "queued").length, 1, "her second build waits for her cap");

    // A third: 429 with Retry-After, as a raw request and through the client; forceBuild never joins, so it counts.
    const { request } = await compileRequest(slow[0]!.plan(), undefined, {});
    for (const forceBuild of [false, true]) {
      const r = await raw(svc.url, "POST", "/v1/images", {
        token: t.alice,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ...request, forceBuild, ...(forceBuild ? {} : { chainName: "x" }) }),
      });
      if (!forceBuild) {
        // The identical request joins her running build: no new build, no refusal.
        assert.equal(r.status, 202, r.text);
        continue;
      }
      assert.equal(r.status, 429, r.text);
      assert.equal(r.json().error.code, "QUOTA_EXCEEDED");
      assert.match(r.json().error.message, /tenant "alice" has 2 builds queued or running, its quota \(2\)/);
      assert.ok(Number(r.headers["retry-after"]) >= 1, `Retry-After: ${r.headers["retry-after"]}`);
    }
    const third = await remoteBuildImage(base.runCommands("echo alice-3"), {
      server: svc.url,
      token: t.alice,
      statCache: false,
      log: () => undefined,
      busyRetry: false,
    }).catch((e: unknown) => e);
    assert.ok(third instanceof RemoteBuildError, String(third));
    assert.equal(third.code, "QUOTA_EXCEEDED");
    assert.equal(third.status, 429);

    // Bob: his build starts at once and finishes while Alice's are still running and queued.
    const lines: string[] = [];
    const bob = await remoteBuildImage(base.runCommands("echo bob-was-here"), {
      server: svc.url,
      token: t.bob,
      statCache: false,
      log: (l) => lines.push(l),
    });
    assert.match(bob.imageId, /^sha256:/);
    assert.ok(lines.some((l) => l.trim() === "bob-was-here"));
    assert.equal(aliceBuilds().length, 2, "alice's builds are still queued or running");
    assert.ok(
      aliceBuilds().some((b) => b.status === "queued"),
      "bob did not wait behind alice's queue",
    );
  } finally {
    await svc.close();
    await Promise.all(pending);
  }
});

test("a client at its build quota waits for Retry-After and asks again: bounded, one log line per wait", async () => {
  const t = tenants();
  const svc = await startService({ tenants: t.tenants, quotas: { maxActiveBuilds: 1 } });
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const build = (cmd: string, opts: { busyRetry?: { attempts?: number; maxWaitMs?: number } } = {}) => {
    const lines: string[] = [];
    const result = remoteBuildImage(base.runCommands(cmd), {
      server: svc.url,
      token: t.alice,
      statCache: false,
      log: (l) => lines.push(l),
      ...opts,
    });
    return { lines, result };
  };
  try {
    const first = build(`echo first-${nonce()}; sleep 8`);
    await waitFor("alice's first build to run", () =>
      svc.service.builds.active.some((b) => b.tenant.id === "alice" && b.status === "building"),
    );
    // Bounded: one retry after at most 1 s, still at quota, then the server's message and how long it waited.
    const t0 = Date.now();
    const bounded = build(`echo bounded-${nonce()}`, { busyRetry: { attempts: 1, maxWaitMs: 1000 } });
    const err = await bounded.result.catch((e: unknown) => e);
    assert.ok(err instanceof RemoteBuildError, String(err));
    assert.equal(err.status, 429);
    assert.match(err.message, /its quota \(1\).*still refused after 1 retry over 1 s/s);
    assert.ok(Date.now() - t0 < 8000, "gave up without waiting the full Retry-After");
    assert.deepEqual(
      bounded.lines.filter((l) => l.startsWith("=> The build server is busy")).length,
      1,
      bounded.lines.join("\n"),
    );
    // The default: waits the 10 s the server asks for (once or twice) and goes through once the first build ended.
    const t1 = Date.now();
    const second = build(`echo second-${nonce()}`);
    const built = await second.result;
    assert.match(built.imageId, /^sha256:/);
    const waits = second.lines.filter((l) => l.startsWith("=> The build server is busy"));
    assert.ok(waits.length >= 1 && waits.length <= 2, second.lines.join("\n"));
    assert.match(
      waits[0]!,
      /^=> The build server is busy \(429 QUOTA_EXCEEDED\): retrying in 10 s \(retry 1 of at most 10\)/,
    );
    assert.ok(Date.now() - t1 >= 9000, "it waited for Retry-After");
    assert.match((await first.result).imageId, /^sha256:/);
  } finally {
    await svc.close();
  }
});

test("a client whose upload hits the in-flight quota waits for Retry-After and uploads once room is made", async () => {
  const t = tenants();
  const MiB = 1024 * 1024;
  const svc = await startService({ tenants: t.tenants, quotas: { maxUploadBytesInFlight: 8 * MiB } });
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  try {
    // Another upload of Alice's claims all but 1000 bytes of her in-flight quota, and hangs.
    const big = blob(8 * MiB - 1000, "z");
    const slow = http.request(new URL(`/v1/blobs/${big.digest}`, svc.url), {
      method: "PUT",
      agent: false,
      headers: { authorization: `Bearer ${t.alice}`, "content-length": String(big.body.length) },
    });
    const slowDone = new Promise<number>((resolve, reject) => {
      slow.on("response", (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      slow.on("error", reject);
    });
    slow.write(big.body.subarray(0, 100));
    await waitFor("alice's upload in flight", () => svc.service.quotas.uploadsInFlight("alice") === big.body.length);
    const lines: string[] = [];
    const built = remoteBuildImage(base.runCommands(`echo upload-${nonce()}`), {
      server: svc.url,
      token: t.alice,
      statCache: false,
      log: (l) => lines.push(l),
    });
    await waitFor("the client's wait", () => lines.some((l) => l.startsWith("=> The build server is busy (429")));
    assert.match(lines.find((l) => l.startsWith("=> The build server is busy"))!, /upload fewer files at once/);
    slow.end(big.body.subarray(100));
    assert.equal(await slowDone, 201);
    assert.match((await built).imageId, /^sha256:/);
  } finally {
    await svc.close();
  }
});

test("uploads in flight: at her quota a tenant gets 429 (Retry-After) while another tenant uploads", async () => {
  const t = tenants();
  const svc = await startService({ tenants: t.tenants, quotas: { maxUploadBytesInFlight: 1000 } });
  try {
    // Alice starts an 800-byte upload and sends only part of it.
    const big = blob(800, "a");
    const slow = http.request(new URL(`/v1/blobs/${big.digest}`, svc.url), {
      method: "PUT",
      agent: false,
      headers: { authorization: `Bearer ${t.alice}`, "content-length": "800" },
    });
    const slowDone = new Promise<number>((resolve, reject) => {
      slow.on("response", (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      slow.on("error", reject);
    });
    slow.write(big.body.subarray(0, 100));
    await waitFor("alice's upload in flight", () => svc.service.quotas.uploadsInFlight("alice") === 800);

    const small = blob(300, "b");
    const refused = await put(svc.url, t.alice, small);
    assert.equal(refused.status, 429, refused.text);
    assert.match(refused.json().error.message, /upload fewer files at once/);
    assert.ok(Number(refused.headers["retry-after"]) >= 1);
    assert.equal((await put(svc.url, t.bob, small)).status, 201, "bob uploads meanwhile");

    slow.end(big.body.subarray(100));
    assert.equal(await slowDone, 201);
    assert.equal((await put(svc.url, t.alice, blob(300, "c"))).status, 201, "alice uploads again once hers ended");
  } finally {
    await svc.close();
  }
});

test("upload bytes per window: past it a tenant gets 429 with the time until bytes age out; another tenant uploads", async () => {
  const t = tenants();
  const svc = await startService({
    tenants: t.tenants,
    quotas: { maxUploadBytesPerWindow: 1000, uploadWindowMs: 120_000 },
  });
  try {
    assert.equal((await put(svc.url, t.alice, blob(800, "d"))).status, 201);
    const r = await put(svc.url, t.alice, blob(300, "e"));
    assert.equal(r.status, 429, r.text);
    assert.match(r.json().error.message, /uploaded 800 bytes in the last 2 minute\(s\)/);
    const after = Number(r.headers["retry-after"]);
    assert.ok(after > 60 && after <= 125, `Retry-After ${after} s: until the 800 bytes leave the 2-minute window`);
    assert.equal((await put(svc.url, t.bob, blob(300, "e"))).status, 201);
  } finally {
    await svc.close();
  }
});

test("store bytes: at her quota a tenant's uploads and new builds get 429, kept across a restart; another tenant builds", async () => {
  const t = tenants();
  const home = await tempDir("strata-quota-home-");
  dirs.push(home);
  const MiB = 1024 * 1024;
  // Room for Bob's busybox upload and layers (about 3 MiB), not for Alice's 6 + 3 MiB.
  const opts = { tenants: t.tenants, home, quotas: { maxStoreBytes: 8 * MiB } };
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  let svc = await startService(opts);
  try {
    assert.equal((await put(svc.url, t.alice, blob(6 * MiB, "f"))).status, 201);
    const over = await put(svc.url, t.alice, blob(3 * MiB, "g"));
    assert.equal(over.status, 429, over.text);
    assert.match(over.json().error.message, /added 6291456 bytes .* quota is 8388608 bytes/);
    assert.equal((await put(svc.url, t.alice, blob(2 * MiB, "h"))).status, 201, "exactly up to the quota");
    assert.equal(await svc.service.quotas.storeBytes("alice"), 8 * MiB);
    await svc.close();

    // The count is kept in the store: a restarted server still refuses her.
    svc = await startService(opts);
    assert.equal(await svc.service.quotas.storeBytes("alice"), 8 * MiB);
    const err = await remoteBuildImage(base.runCommands("echo alice-store"), {
      server: svc.url,
      token: t.alice,
      statCache: false,
      log: () => undefined,
    }).catch((e: unknown) => e);
    assert.ok(err instanceof RemoteBuildError, String(err));
    assert.equal(err.status, 429);
    assert.match(err.message, /"alice" added \d+ bytes/);
    const bob = await remoteBuildImage(base.runCommands("echo bob-store"), {
      server: svc.url,
      token: t.bob,
      statCache: false,
      log: () => undefined,
    });
    assert.match(bob.imageId, /^sha256:/);
    // Bob's uploads count for him, not for Alice.
    assert.ok((await svc.service.quotas.storeBytes("bob")) > 0);
  } finally {
    await svc.close();
  }
});
