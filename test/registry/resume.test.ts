// Blob robustness: a connection cut mid-blob resumes with Range (against the real registry behind a cutting proxy),
// a server that ignores Range gets a full restart, 416 and bogus Content-Range restart cleanly, 429 honours
// Retry-After, 5xx is retried, and long transfers print progress lines.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { MediaType } from "../../src/oci/types.js";
import { parseContentRange } from "../../src/registry/blob-download.js";
import { pullImage } from "../../src/registry/pull.js";
import { LocalStore } from "../../src/store/local.js";
import { digestHex } from "../../src/util/digest.js";
import { startCuttingProxy } from "../support/registry-proxy.js";
import { createTestLayout, startRegistry, type TestLayout, type TestRegistry } from "../support/registry.js";

const tempDirs: string[] = [];
async function newStore(): Promise<{ store: LocalStore; dir: string }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-resume-store-"));
  tempDirs.push(dir);
  return { store: await LocalStore.open(dir), dir };
}

// Incompressible enough that the gzip layer is ~1 MB.
const BIG = randomBytes(750_000).toString("base64");

let layout: TestLayout;
let layerSize = 0;
let layerDigest = "";
before(async () => {
  layout = await createTestLayout();
  await layout.build("big", { layers: [{ "small.txt": "small\n" }, { "big.txt": BIG }] });
  const index = JSON.parse(await fsp.readFile(path.join(layout.dir, "index.json"), "utf8")) as {
    manifests: { digest: string }[];
  };
  const manifest = JSON.parse(
    await fsp.readFile(path.join(layout.dir, "blobs/sha256", digestHex(index.manifests[0]!.digest)), "utf8"),
  ) as { layers: { digest: string; size: number }[] };
  layerSize = manifest.layers[1]!.size;
  layerDigest = manifest.layers[1]!.digest;
});
after(async () => {
  await layout?.cleanup();
  for (const d of tempDirs) await fsp.rm(d, { recursive: true, force: true });
});

async function checkBig(store: LocalStore, ref: string, lines: string[]): Promise<void> {
  const pulled = await pullImage(ref, store, {
    onProgress: (l) => lines.push(l),
    retryDelayMs: 20,
    dockerConfig: false,
  });
  assert.equal(pulled.layers[1]!.digest, layerDigest);
  assert.equal(await fsp.readFile(path.join(await store.layerDir(pulled.layers[1]!), "big.txt"), "utf8"), BIG);
}

describe("resuming against docker-registry 2.8.2 behind a proxy that cuts connections", () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startRegistry();
    await layout.push("big", `${reg.host}/team/big:1`);
  });
  after(async () => {
    await reg?.stop();
  });

  test("a connection cut mid-blob resumes with Range: bytes=N- and a verified 206", async () => {
    assert.ok(layerSize > 600_000, `layer is ${layerSize} bytes`);
    const proxy = await startCuttingProxy(reg.host, { cutAfterBytes: 300_000 });
    try {
      const { store, dir } = await newStore();
      const lines: string[] = [];
      await checkBig(store, `${proxy.host}/team/big:1`, lines);
      const blobPath = `/v2/team/big/blobs/${layerDigest}`;
      const gets = proxy.requests.filter((r) => r.method === "GET" && r.path === blobPath);
      assert.equal(gets.length, 2, JSON.stringify(gets));
      assert.equal(gets[0]!.cut, true);
      assert.equal(gets[0]!.range, undefined);
      const m = /^bytes=(\d+)-$/.exec(gets[1]!.range ?? "");
      assert.ok(m, `second request carries Range: ${JSON.stringify(gets[1])}`);
      const from = Number(m[1]);
      assert.ok(from > 0 && from <= 300_000, `resumed from ${from}`);
      assert.equal(gets[1]!.status, 206);
      assert.equal(gets[1]!.contentRange, `bytes ${from}-${layerSize - 1}/${layerSize}`);
      assert.ok(
        lines.some((l) => /transfer broke off after .* of .*; resuming$/.test(l)),
        lines.join("\n"),
      );
      assert.deepEqual(
        (await fsp.readdir(path.join(dir, "tmp"))).filter((n) => n.startsWith("pull-")),
        [],
        "temp dir removed",
      );
    } finally {
      await proxy.close();
    }
  });

  test("several cuts in a row: every resume that makes progress continues (no retry budget used up)", async () => {
    const proxy = await startCuttingProxy(reg.host, { cutAfterBytes: 150_000, cuts: 5 });
    try {
      const { store } = await newStore();
      const lines: string[] = [];
      await checkBig(store, `${proxy.host}/team/big:1`, lines);
      const gets = proxy.requests.filter((r) => r.method === "GET" && r.path.endsWith(layerDigest));
      assert.ok(gets.length >= 5, JSON.stringify(gets));
      assert.ok(
        gets.slice(1).every((g) => g.status === 206 && /^bytes=\d+-$/.test(g.range ?? "")),
        JSON.stringify(gets),
      );
    } finally {
      await proxy.close();
    }
  });

  test("a server that ignores Range gets a full restart from its 200 response", async () => {
    const proxy = await startCuttingProxy(reg.host, { cutAfterBytes: 300_000, ignoreRange: true });
    try {
      const { store } = await newStore();
      const lines: string[] = [];
      await checkBig(store, `${proxy.host}/team/big:1`, lines);
      const gets = proxy.requests.filter((r) => r.method === "GET" && r.path.endsWith(layerDigest));
      assert.equal(gets.length, 2);
      assert.match(gets[1]!.range ?? "", /^bytes=\d+-$/, "the client asked for a range");
      assert.equal(gets[1]!.status, 200, "the server sent everything");
      assert.ok(
        lines.some((l) => /ignored the Range request; downloading it again from the start$/.test(l)),
        lines.join("\n"),
      );
    } finally {
      await proxy.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Fake registries for what the real one does not do on demand.

interface Fake {
  host: string;
  close(): Promise<void>;
}
async function startFake(handler: http.RequestListener): Promise<Fake> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    host: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("retries, restarts and progress (fake registries)", () => {
  let manifestBytes: Buffer;
  const blobs = new Map<string, Buffer>();
  before(async () => {
    const index = JSON.parse(await fsp.readFile(path.join(layout.dir, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    manifestBytes = await fsp.readFile(path.join(layout.dir, "blobs/sha256", digestHex(index.manifests[0]!.digest)));
    const m = JSON.parse(manifestBytes.toString("utf8")) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)])
      blobs.set(d, await fsp.readFile(path.join(layout.dir, "blobs/sha256", digestHex(d))));
  });

  /** A registry serving the layout's "big" image; `blob` may answer a blob request itself (return true). */
  async function fakeRegistry(hooks: {
    manifest?: (res: http.ServerResponse) => boolean;
    blob?: (digest: string, data: Buffer, req: http.IncomingMessage, res: http.ServerResponse) => boolean;
  }): Promise<Fake> {
    return startFake((req, res) => {
      if (req.url === "/v2/big/manifests/latest") {
        if (hooks.manifest?.(res)) return;
        res.writeHead(200, { "content-type": MediaType.ociManifest, "content-length": manifestBytes.length });
        return res.end(manifestBytes);
      }
      const m = /^\/v2\/big\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? "");
      const data = m ? blobs.get(m[1]!) : undefined;
      if (!m || !data) {
        res.writeHead(404, { "content-type": "application/json" });
        return res.end(JSON.stringify({ errors: [{ code: "BLOB_UNKNOWN" }] }));
      }
      if (hooks.blob?.(m[1]!, data, req, res)) return;
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
      if (range) {
        const start = Number(range[1]);
        res.writeHead(206, {
          "content-length": data.length - start,
          "content-range": `bytes ${start}-${data.length - 1}/${data.length}`,
        });
        return res.end(data.subarray(start));
      }
      res.writeHead(200, { "content-length": data.length });
      res.end(data);
    });
  }

  test("429 with Retry-After is honoured, then the pull succeeds; a 503 on a blob is retried", async () => {
    let throttled = 0;
    let failedBlob = 0;
    const fake = await fakeRegistry({
      manifest: (res) => {
        if (throttled++ > 0) return false;
        res.writeHead(429, { "content-type": "application/json", "retry-after": "1" });
        res.end(JSON.stringify({ errors: [{ code: "TOOMANYREQUESTS", message: "slow down" }] }));
        return true;
      },
      blob: (digest, _data, _req, res) => {
        if (digest !== layerDigest || failedBlob++ > 0) return false;
        res.writeHead(503, { "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: "UNAVAILABLE" }] }));
        return true;
      },
    });
    try {
      const { store } = await newStore();
      const started = Date.now();
      const pulled = await pullImage(`${fake.host}/big`, store, { retryDelayMs: 10, dockerConfig: false });
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 950, `waited for Retry-After (${elapsed} ms)`);
      assert.ok(elapsed < 5000, `but not much longer (${elapsed} ms)`);
      assert.equal(throttled, 2);
      assert.equal(failedBlob, 2);
      assert.equal(pulled.layers.length, 2);
    } finally {
      await fake.close();
    }
  });

  test("a Retry-After longer than the limit fails at once, saying how long the registry asked to wait", async () => {
    const fake = await fakeRegistry({
      manifest: (res) => {
        res.writeHead(429, { "retry-after": "3600" });
        res.end();
        return true;
      },
    });
    try {
      const { store } = await newStore();
      const started = Date.now();
      await assert.rejects(pullImage(`${fake.host}/big`, store, { dockerConfig: false }), /asked to wait 3600 s/);
      assert.ok(Date.now() - started < 2000);
    } finally {
      await fake.close();
    }
  });

  test("416 on a resume and a bogus Content-Range both restart from zero; the result verifies", async () => {
    for (const mode of ["416", "bogus"] as const) {
      const seen: (string | undefined)[] = [];
      let cutDone = false;
      const fake = await fakeRegistry({
        blob: (digest, data, req, res) => {
          if (digest !== layerDigest) return false;
          seen.push(req.headers.range);
          if (!cutDone) {
            cutDone = true;
            res.writeHead(200, { "content-length": data.length });
            res.write(data.subarray(0, 200_000), () => res.socket?.destroy());
            return true;
          }
          if (req.headers.range && mode === "416") {
            // Like 2.8.2: a Content-Length for the whole blob and a tiny body; the client must not wait for it.
            res.writeHead(416, { "content-range": `bytes */${data.length}`, "content-length": data.length });
            res.write("416 Requested Range Not Satisfiable");
            return true;
          }
          if (req.headers.range && mode === "bogus") {
            res.writeHead(206, {
              "content-length": data.length - 10,
              "content-range": `bytes 10-${data.length - 1}/${data.length}`,
            });
            res.end(data.subarray(10));
            return true;
          }
          return false;
        },
      });
      try {
        const { store } = await newStore();
        const lines: string[] = [];
        const pulled = await pullImage(`${fake.host}/big`, store, {
          onProgress: (l) => lines.push(l),
          retryDelayMs: 10,
          dockerConfig: false,
        });
        assert.equal(await fsp.readFile(path.join(await store.layerDir(pulled.layers[1]!), "big.txt"), "utf8"), BIG);
        assert.equal(seen[0], undefined);
        assert.match(seen[1] ?? "", /^bytes=\d+-$/);
        assert.equal(
          seen[seen.length - 1],
          undefined,
          `${mode}: the last request starts from zero: ${JSON.stringify(seen)}`,
        );
      } finally {
        await fake.close();
      }
    }
  });

  test("long transfers print progress lines; layers download in parallel up to the limit", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const fake = await fakeRegistry({
      blob: (digest, data, _req, res) => {
        if (!blobs.has(digest) || data.length < 1000) return false;
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        res.writeHead(200, { "content-length": data.length });
        const parts = 5;
        const step = Math.ceil(data.length / parts);
        let i = 0;
        const tick = (): void => {
          res.write(data.subarray(i * step, (i + 1) * step));
          i++;
          if (i < parts) setTimeout(tick, 120);
          else {
            inFlight--;
            res.end();
          }
        };
        tick();
        return true;
      },
    });
    try {
      const { store } = await newStore();
      const lines: string[] = [];
      await pullImage(`${fake.host}/big`, store, {
        onProgress: (l) => lines.push(l),
        progressIntervalMs: 100,
        concurrency: 2,
        dockerConfig: false,
      });
      const progress = lines.filter((l) => l.startsWith("downloading "));
      assert.ok(progress.length >= 2, lines.join("\n"));
      for (const l of progress)
        assert.match(l, /^downloading sha256:[0-9a-f]{12}… \d+(\.\d)? (B|kB|MB) of \d+(\.\d)? (B|kB|MB) \(\d{1,2}%\)$/);
      assert.ok(maxInFlight <= 2);
    } finally {
      await fake.close();
    }
  });

  test("parseContentRange", () => {
    assert.deepEqual(parseContentRange("bytes 10-99/100"), { start: 10, end: 99, total: 100 });
    assert.deepEqual(parseContentRange("bytes 0-0/*"), { start: 0, end: 0, total: undefined });
    assert.equal(parseContentRange("bytes */100"), undefined);
    assert.equal(parseContentRange(null), undefined);
  });
});
