// Log streaming: SSE with a cursor per line; a client that drops the connection resumes from its cursor (query
// `after` or the Last-Event-ID header) without losing or duplicating lines, and the client library does so itself.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { promises as fsp } from "node:fs";
import { after, before, test } from "node:test";
import type { Image } from "../../src/index.js";
import { ServiceClient } from "../../src/service/client.js";
import { compileRequest } from "../../src/service/wire/encode.js";
import { remoteBuildImage } from "../support/remote-image.js";
import type { CreateResponse } from "../../src/service/wire/responses.js";
import {
  busyboxBase,
  cuttingProxy,
  raw,
  readSse,
  startService,
  type SseEvent,
  type TestService,
} from "../support/service.js";

let svc: TestService;
const dirs: string[] = [];
before(async () => {
  svc = await startService();
});
after(async () => {
  await svc.close();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

const SLOW = "i=0; while test $i -lt 40; do i=$((i+1)); echo line-$i; sleep 0.03; done";

/** Starts a build through the API (uploading its context) and returns its id. */
async function startBuild(image: Image): Promise<string> {
  const { request, files } = await compileRequest(image.plan(), undefined, image.secretValues());
  const client = new ServiceClient(svc.url, process.env.STRATA_TOKEN);
  try {
    const { missing } = await client.json<{ missing: string[] }>("POST", "/v1/blobs/check", {
      digests: [...files.keys()],
    });
    for (const d of missing) {
      const f = files.get(d)!;
      await client.upload(`/v1/blobs/${d}`, () => fs.createReadStream(f.absPath), f.size);
    }
    const created = await client.json<CreateResponse>("POST", "/v1/images", request);
    return created.buildId;
  } finally {
    client.close();
  }
}

function lines(events: SseEvent[]): { id: number; line: string }[] {
  return events
    .filter((e) => e.event === "message")
    .map((e) => ({ id: Number(e.id), line: JSON.parse(e.data) as string }));
}

test("a client that disconnects mid-stream resumes from its cursor without losing or duplicating lines", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const id = await startBuild(base.runCommands(SLOW).runCommands("echo done > /done"));

  // First connection: read a few lines, then drop it while the build is still printing.
  const first = await readSse(svc.url, `/v1/images/${id}/logs`, {
    stopAfter: (_e, all) => lines(all).some((l) => l.line.includes("line-5")),
  });
  assert.equal(first.status, 200);
  const got = lines(first.events);
  assert.ok(got.length > 0);
  assert.ok(!first.events.some((e) => e.event === "result"), "dropped before the end");

  // Second connection resumes with ?after=<last id>; drop again a little later.
  const second = await readSse(svc.url, `/v1/images/${id}/logs?after=${got[got.length - 1]!.id}`, {
    stopAfter: (_e, all) => lines(all).some((l) => l.line.includes("line-20")),
  });
  got.push(...lines(second.events));

  // Third resumes with the standard Last-Event-ID header and reads to the end.
  const third = await readSse(svc.url, `/v1/images/${id}/logs`, {
    headers: { "last-event-id": String(got[got.length - 1]!.id) },
  });
  got.push(...lines(third.events));
  const result = third.events.find((e) => e.event === "result");
  assert.ok(result, "the stream ends with a result event");
  const payload = JSON.parse(result.data) as { status: string; result: { imageId: string }; lastCursor: number };
  assert.equal(payload.status, "succeeded");

  // Compared with the whole log read in one go after the build: same lines, same cursors, in order.
  const whole = lines((await readSse(svc.url, `/v1/images/${id}/logs?after=0`)).events);
  assert.deepEqual(got, whole);
  assert.deepEqual(
    got.map((l) => l.id),
    whole.map((_, i) => i + 1),
    "cursors are 1..n without gaps or repeats",
  );
  assert.equal(payload.lastCursor, whole.length);
  for (let i = 1; i <= 40; i++)
    assert.equal(whole.filter((l) => l.line.trim() === `line-${i}`).length, 1, `line-${i} exactly once`);

  // A finished build answers with its remaining lines and the result at once; the build record has the image.
  const tail = await readSse(svc.url, `/v1/images/${id}/logs?after=${whole.length - 2}`);
  assert.equal(lines(tail.events).length, 2);
  const info = (await raw(svc.url, "GET", `/v1/images/${id}`)).json();
  assert.equal(info.status, "succeeded");
  assert.equal(info.image.imageId, payload.result.imageId);
  assert.ok(Array.isArray(info.image.layers) && info.image.layers.length === 3);
  assert.ok(info.image.config.rootfs.diff_ids.length === 3);
});

test("remoteBuild reconnects through a proxy that cuts its log stream, and logs every line exactly once", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const proxy = await cuttingProxy(svc.url, 7, 4);
  try {
    const seen: string[] = [];
    const r = await remoteBuildImage(base.runCommands(SLOW), {
      server: proxy.url,
      statCache: false,
      log: (l) => seen.push(l),
    });
    assert.ok(proxy.streamsCut() >= 2, `the proxy cut the stream (${proxy.streamsCut()} times)`);
    const whole = lines((await readSse(svc.url, `/v1/images/${r.buildId}/logs`)).events).map((l) => l.line);
    assert.deepEqual(seen, whole, "the client's log is the server's log, no line lost or repeated");
  } finally {
    await proxy.close();
  }
});

test("a finished build's record and log survive a server restart (saved in the store)", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const other = await startService();
  let buildId: string;
  let imageId: string;
  let log: string[];
  try {
    const seen: string[] = [];
    const r = await remoteBuildImage(base.runCommands("echo persisted-line"), {
      server: other.url,
      statCache: false,
      log: (l) => seen.push(l),
    });
    buildId = r.buildId;
    imageId = r.imageId;
    log = seen;
  } finally {
    await other.service.close();
  }
  const again = await startService({ home: other.home });
  try {
    const info = (await raw(again.url, "GET", `/v1/images/${buildId}`)).json();
    assert.equal(info.status, "succeeded");
    assert.equal(info.result.imageId, imageId);
    const events = (await readSse(again.url, `/v1/images/${buildId}/logs`)).events;
    assert.deepEqual(
      lines(events).map((l) => l.line),
      log,
    );
    assert.equal(JSON.parse(events.find((e) => e.event === "result")!.data).status, "succeeded");
  } finally {
    await again.close();
    await fsp.rm(other.home, { recursive: true, force: true });
  }
});

test("the log kept in memory is bounded: a reader from the start is told how many early lines were dropped", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const small = await startService({ maxLogLines: 5 });
  try {
    const seen: string[] = [];
    const r = await remoteBuildImage(base.runCommands("i=0; while test $i -lt 30; do i=$((i+1)); echo n-$i; done"), {
      server: small.url,
      statCache: false,
      log: (l) => seen.push(l),
    });
    const events = (await readSse(small.url, `/v1/images/${r.buildId}/logs`)).events;
    const gap = events.find((e) => e.event === "gap");
    assert.ok(gap, "a gap event first");
    const kept = lines(events);
    assert.equal(kept.length, 5);
    assert.equal(JSON.parse(gap.data).dropped, kept[0]!.id - 1);
    assert.deepEqual(
      kept.map((l) => l.id),
      [1, 2, 3, 4, 5].map((i) => kept[0]!.id + i - 1),
    );
  } finally {
    await small.close();
  }
});
