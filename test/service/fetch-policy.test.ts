// The service's outbound fetch policy, replayed as attacks through the wire (loopback only): a client names
// `ADD http://127.0.0.1:<port>/x` (directly and through a redirect from an allowed host), a registry base and a
// `COPY --from=<image>` on a loopback registry, and plain HTTP to a registry the operator did not list. By default the
// service refuses each with an error naming its fetch policy; `strata serve --allow-fetch` lets the named ones through.
// Oversized and stalled downloads fail with errors naming the limit.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Image } from "../../src/sdk/image.js";
import { RemoteBuildError } from "../../src/service/client.js";
import { pushImage } from "../../src/registry/push.js";
import { LocalStore } from "../../src/store/local.js";
import { makeStoreImage } from "../support/registry-image.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { allowFetch, spawnServe, startService, type TestService } from "../support/service.js";
import { nonce, tempDir } from "../support/strata.js";

let registry: TestRegistry;
let imageRef: string;
let files: http.Server;
let filesPort: number;
let fileHits = 0;
let redirect: http.Server;
let redirectPort: number;
let strict: TestService;
let allowing: Awaited<ReturnType<typeof spawnServe>>;
let allowingHome: string;
const dirs: string[] = [];

async function listen(handler: http.RequestListener): Promise<[http.Server, number]> {
  const s = http.createServer(handler);
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return [s, (s.address() as AddressInfo).port];
}

before(async () => {
  registry = await startRegistry();
  const home = await tempDir("strata-fetch-policy-src-");
  dirs.push(home);
  const store = await LocalStore.open(home);
  const image = await makeStoreImage(store, [{ "hello.txt": "from the registry\n" }], { label: nonce() });
  imageRef = `${registry.host}/team/fetch-policy:1`;
  await pushImage(store, image, imageRef, { dockerConfig: false });
  [files, filesPort] = await listen((req, res) => {
    fileHits++;
    if (req.url === "/big") res.writeHead(200, { "content-length": "4096" }).end(Buffer.alloc(4096));
    else if (req.url === "/stall") res.writeHead(200).write("a few bytes, then nothing");
    else res.writeHead(200).end(`served ${req.url}\n`);
  });
  [redirect, redirectPort] = await listen((req, res) =>
    res.writeHead(302, { location: `http://127.0.0.1:${filesPort}${req.url}` }).end(),
  );
  strict = await startService();
  allowingHome = await tempDir("strata-fetch-policy-home-");
  dirs.push(allowingHome);
  allowing = await spawnServe({ STRATA_HOME: allowingHome }, [
    "--allow-fetch",
    `127.0.0.1:${filesPort}`,
    "--allow-fetch",
    registry.host,
    "--fetch-max-bytes",
    "1000",
    "--fetch-idle-timeout",
    "500ms",
  ]);
});

after(async () => {
  await strict?.close();
  allowing?.child.kill("SIGTERM");
  await allowing?.exited;
  await registry?.stop();
  for (const s of [files, redirect]) if (s) await new Promise<void>((r) => s.close(() => r()));
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

async function dockerfile(lines: string[]): Promise<Image> {
  const dir = await tempDir("strata-fetch-policy-df-");
  dirs.push(dir);
  await fsp.writeFile(path.join(dir, "Dockerfile"), [...lines, `ENV N=${nonce()}`, ""].join("\n"));
  return Image.fromDockerfile(path.join(dir, "Dockerfile"), { contextDir: dir });
}

const build = (server: string, image: Image) =>
  remoteBuildImage(image, { server, statCache: false, log: () => undefined });

async function refused(server: string, image: Image): Promise<RemoteBuildError> {
  const e = await build(server, image).then(
    () => assert.fail("the build should be refused"),
    (err: unknown) => err,
  );
  assert.ok(e instanceof RemoteBuildError, String(e));
  return e;
}

describe("ADD <url>", () => {
  test("a loopback URL is refused by default, naming the fetch policy and the flag; the server is never asked", async () => {
    const hits = fileHits;
    const e = await refused(strict.url, await dockerfile(["FROM scratch", `ADD http://127.0.0.1:${filesPort}/x /x`]));
    assert.equal(e.code, "FETCH_POLICY");
    assert.match(e.message, /refused by the service's fetch policy: 127\.0\.0\.1 is a loopback address/);
    assert.match(e.message, new RegExp(`--allow-fetch 127\\.0\\.0\\.1:${filesPort}`));
    assert.equal(fileHits, hits);
  });

  test("the service's own API on loopback is refused the same way", async () => {
    const port = new URL(strict.url).port;
    const e = await refused(
      strict.url,
      await dockerfile(["FROM scratch", `ADD http://127.0.0.1:${port}/v1/images /x`]),
    );
    assert.equal(e.code, "FETCH_POLICY");
  });

  test("allowed with --allow-fetch", async () => {
    const ok = await build(
      allowing.url,
      await dockerfile(["FROM scratch", `ADD http://127.0.0.1:${filesPort}/allowed.txt /x`]),
    );
    assert.ok(ok.imageId);
  });

  test("a redirect from an allowed host to a refused one is refused; the refused host is never asked", async () => {
    const hits = fileHits;
    const viaRedirect = await startService({
      fetchPolicy: allowFetch(`127.0.0.1:${redirectPort}`),
    });
    try {
      const e = await refused(
        viaRedirect.url,
        await dockerfile(["FROM scratch", `ADD http://127.0.0.1:${redirectPort}/r /x`]),
      );
      assert.equal(e.code, "FETCH_POLICY");
      assert.match(
        e.message,
        new RegExp(`connecting to 127\\.0\\.0\\.1:${filesPort} is refused by the service's fetch policy`),
      );
      assert.equal(fileHits, hits, "the redirect target was never asked");
    } finally {
      await viaRedirect.close();
    }
  });

  test("a download over the size cap and one that stalls fail with errors naming the limit", async () => {
    const big = await refused(
      allowing.url,
      await dockerfile(["FROM scratch", `ADD http://127.0.0.1:${filesPort}/big /x`]),
    );
    assert.equal(big.code, "URL_FETCH");
    assert.match(big.message, /larger than the service's fetch policy allows.*--fetch-max-bytes/);
    const t0 = Date.now();
    const stall = await refused(
      allowing.url,
      await dockerfile(["FROM scratch", `ADD http://127.0.0.1:${filesPort}/stall /x`]),
    );
    assert.equal(stall.code, "URL_FETCH");
    assert.match(stall.message, /stalled: no data for 0\.5 s.*--fetch-idle-timeout/);
    assert.ok(Date.now() - t0 < 10_000, "failed promptly");
  });
});

describe("registry images", () => {
  test("a registry base on loopback is refused by default and pulled with --allow-fetch", async () => {
    const base = () => Image.fromRegistry(imageRef).env({ N: nonce() });
    const e = await refused(strict.url, base());
    assert.equal(e.code, "FETCH_POLICY");
    assert.match(
      e.message,
      new RegExp(`connecting to ${registry.host.replace(/\./g, "\\.")} is refused by the service's fetch policy`),
    );
    const ok = await build(allowing.url, base());
    assert.ok(ok.imageId);
  });

  test("COPY --from=<loopback registry image> is refused by default and read with --allow-fetch", async () => {
    const df = () => dockerfile(["FROM scratch", `COPY --from=${imageRef} /hello.txt /hello.txt`]);
    const e = await refused(strict.url, await df());
    assert.equal(e.code, "FETCH_POLICY");
    assert.match(e.message, /fetch policy/);
    const ok = await build(allowing.url, await df());
    assert.ok(ok.imageId);
  });

  test("a client's insecure for a registry the operator did not list is refused, saying how to list it", async () => {
    const e = await refused(allowing.url, Image.fromRegistry("registry.example:5000/team/x:1", { insecure: true }));
    assert.equal(e.code, "FETCH_POLICY");
    assert.match(
      e.message,
      /plain HTTP \(insecure\) to registry registry\.example:5000 is refused.*--insecure-registry registry\.example:5000/,
    );
  });
});
