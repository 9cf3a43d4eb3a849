// The front door, attacked before authentication (loopback only): connections that trickle header bytes
// (slowloris) are closed within 60 s while an authenticated build still succeeds; a trickled JSON body gets 408; a
// stalled upload is closed by the idle timeout while a slow but steady one and a log stream are not; the connection
// caps (per client address and in all) refuse at accept; an unauthenticated request keeps no connection.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import http from "node:http";
import { after, test } from "node:test";
import { FRONT_DOOR_DEFAULTS } from "../../src/service/front-door.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, raw, readSse, startService } from "../support/service.js";
import { connectOnly, trickle } from "../support/slow-client.js";
import { nonce } from "../support/strata.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

/** One request without keep-alive, optionally from another loopback address. */
function request(
  url: string,
  method: string,
  pathname: string,
  opts: { token?: string; localAddress?: string } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders } | { error: string }> {
  return new Promise((resolve) => {
    const req = http.request(new URL(pathname, url), {
      method,
      agent: false,
      headers:
        (opts.token ?? process.env.STRATA_TOKEN)
          ? { authorization: `Bearer ${opts.token ?? process.env.STRATA_TOKEN}` }
          : {},
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    });
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.end();
  });
}

test("50 connections trickling header bytes are each closed (408) within 60 s; an authenticated build succeeds meanwhile", async () => {
  const token = "door-" + nonce();
  const svc = await startService({ token });
  try {
    assert.ok(FRONT_DOOR_DEFAULTS.headersTimeoutMs <= 60_000);
    const slow = Array.from({ length: 50 }, () => trickle(svc.url, { intervalMs: 1000, maxMs: 90_000 }));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(slow.filter((s) => s.isOpen()).length, 50, "all 50 slow connections are open");

    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const t0 = Date.now();
    const built = await remoteBuildImage(base.runCommands(`echo door > /door`), {
      server: svc.url,
      token,
      statCache: false,
      log: () => undefined,
    });
    assert.match(built.imageId, /^sha256:/);
    const stillOpen = slow.filter((s) => s.isOpen()).length;
    assert.equal(stillOpen, 50, `the build (${Date.now() - t0} ms) finished while all 50 were open`);

    const ends = await Promise.all(slow.map((s) => s.closed));
    for (const e of ends) {
      assert.ok(e.closedAfterMs !== undefined, "the server closed the connection");
      assert.ok(e.closedAfterMs! < 60_000, `closed after ${e.closedAfterMs} ms`);
      assert.match(e.response, /^HTTP\/1\.1 408 /);
    }
    const latest = Math.max(...ends.map((e) => e.closedAfterMs!));
    assert.ok(latest <= FRONT_DOOR_DEFAULTS.headersTimeoutMs + 5000, `closed after the header timeout (${latest} ms)`);
  } finally {
    await svc.close();
  }
});

test("a JSON body trickled past the request timeout gets 408 and the connection closes", async () => {
  const token = "door-" + nonce();
  const svc = await startService({ token, frontDoor: { requestTimeoutMs: 2000 } });
  try {
    const t = trickle(svc.url, {
      head:
        `POST /v1/blobs/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        `Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"digests":[`,
      drip: " ",
      intervalMs: 200,
      maxMs: 20_000,
    });
    const end = await t.closed;
    assert.ok(end.closedAfterMs !== undefined && end.closedAfterMs < 6000, `closed after ${end.closedAfterMs} ms`);
    assert.match(end.response, /^HTTP\/1\.1 408 /);
    assert.match(end.response, /REQUEST_TIMEOUT/);
  } finally {
    await svc.close();
  }
});

test("a stalled upload is closed by the idle timeout; a slow but steady upload and a log stream are not", async () => {
  const token = "door-" + nonce();
  const svc = await startService({
    token,
    heartbeatMs: 300,
    frontDoor: { idleTimeoutMs: 1500, requestTimeoutMs: 1000 },
  });
  try {
    // Steady: 12 bytes, one every 400 ms (4.8 s: past the request timeout, never idle for 1.5 s).
    const body = "steady-bytes";
    const digest = "sha256:" + createHash("sha256").update(body).digest("hex");
    const steady = trickle(svc.url, {
      head:
        `PUT /v1/blobs/${digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
      drip: "",
      intervalMs: 400,
      maxMs: 20_000,
    });
    let i = 0;
    const feeder = setInterval(() => {
      if (i < body.length && steady.socket.writable) steady.socket.write(body[i++]!);
    }, 400);
    const stalled = trickle(svc.url, {
      head:
        `PUT /v1/blobs/sha256:${"1".repeat(64)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        "Content-Length: 100\r\n\r\nabc",
      drip: "",
      intervalMs: 60_000,
      maxMs: 20_000,
    });
    const [s, st] = await Promise.all([steady.closed, stalled.closed]);
    clearInterval(feeder);
    assert.match(s.response, /^HTTP\/1\.1 201 /, s.response);
    assert.ok(st.closedAfterMs !== undefined && st.closedAfterMs < 5000, `stalled closed after ${st.closedAfterMs}`);
    assert.ok(st.closedAfterMs! >= 1400, "not before the idle timeout");

    // A log stream of a build that runs for 4 s: heartbeats keep it open through the idle timeout.
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const build = remoteBuildImage(base.runCommands("sleep 4; echo slept"), {
      server: svc.url,
      token,
      statCache: false,
      log: () => undefined,
    });
    let buildId: string | undefined;
    for (let n = 0; n < 200 && !buildId; n++) {
      buildId = svc.service.builds.active[0]?.id;
      if (!buildId) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(buildId, "the build started");
    const sse = await readSse(svc.url, `/v1/images/${buildId}/logs`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(sse.status, 200);
    assert.ok(
      sse.events.some((e) => e.event === "result"),
      "the stream lasted until the result",
    );
    await build;
  } finally {
    await svc.close();
  }
});

test("connection caps refuse at accept: one address cannot take every connection; the total cap holds", async () => {
  const svc = await startService({ frontDoor: { maxConnectionsPerClient: 5, maxConnections: 12 } });
  const held: { socket: { destroy(): void } }[] = [];
  try {
    // 127.0.0.2 takes its 5; the 6th is refused; 127.0.0.1 is still served.
    for (let i = 0; i < 5; i++) {
      const c = await connectOnly(svc.url, "127.0.0.2");
      held.push(c);
      assert.equal(c.refused, false);
    }
    const sixth = await connectOnly(svc.url, "127.0.0.2");
    held.push(sixth);
    assert.equal(sixth.refused, true, "the 6th connection from one address is closed at once");
    const other = await request(svc.url, "GET", "/v1/images/sha256:" + "0".repeat(64));
    assert.ok("status" in other && other.status === 404, JSON.stringify(other));

    // 127.0.0.3 adds 5 more and 127.0.0.4 two: 12 in all, the cap. Then nobody gets in.
    for (const [addr, n] of [
      ["127.0.0.3", 5],
      ["127.0.0.4", 2],
    ] as const) {
      for (let i = 0; i < n; i++) {
        const c = await connectOnly(svc.url, addr);
        held.push(c);
        assert.equal(c.refused, false);
      }
    }
    const full = await request(svc.url, "GET", "/v1/images/sha256:" + "0".repeat(64));
    assert.ok("error" in full, `refused at the total cap: ${JSON.stringify(full)}`);
    for (const h of held.splice(0)) h.socket.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const again = await request(svc.url, "GET", "/v1/images/sha256:" + "0".repeat(64));
    assert.ok("status" in again && again.status === 404, "served again once connections closed");
  } finally {
    for (const h of held) h.socket.destroy();
    await svc.close();
  }
});

test("an unauthenticated request gets 401 and its connection closes (no keep-alive slot)", async () => {
  const svc = await startService({ token: "door-" + nonce() });
  try {
    const r = await raw(svc.url, "GET", `/v1/images/${"0".repeat(64)}`, { headers: { connection: "keep-alive" } });
    assert.equal(r.status, 401);
    assert.equal(r.headers.connection, "close");
  } finally {
    await svc.close();
  }
});
