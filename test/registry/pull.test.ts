import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { DigestMismatchError } from "../../src/errors.js";
import { MediaType } from "../../src/oci/types.js";
import { RegistryError, UnsupportedImageError } from "../../src/registry/errors.js";
import { formatSize } from "../../src/registry/http.js";
import { pullImage, resolveImage } from "../../src/registry/pull.js";
import { parseWwwAuthenticate } from "../../src/registry/www-authenticate.js";
import { LocalStore } from "../../src/store/local.js";
import { digestHex, sha256Bytes, type Digest } from "../../src/util/digest.js";
import { createTestLayout, startRegistry, type TestLayout, type TestRegistry } from "../support/registry.js";

const tempDirs: string[] = [];

async function newStore(): Promise<{ store: LocalStore; dir: string }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-pull-store-"));
  tempDirs.push(dir);
  return { store: await LocalStore.open(dir), dir };
}

interface ManifestInfo {
  digest: Digest;
  size: number;
  mediaType: string;
  json: { config: { digest: Digest }; layers: { digest: Digest; size: number; mediaType: string }[] };
}

const ACCEPT_ALL = [
  MediaType.ociIndex,
  MediaType.dockerManifestList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
].join(", ");

async function getManifest(reg: TestRegistry, repo: string, ref: string): Promise<ManifestInfo> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT_ALL } });
  assert.equal(res.status, 200, `GET manifest ${repo}:${ref}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  return {
    digest: sha256Bytes(bytes),
    size: bytes.length,
    mediaType: res.headers.get("content-type")!,
    json: JSON.parse(bytes.toString("utf8")) as ManifestInfo["json"],
  };
}

async function putManifest(
  reg: TestRegistry,
  repo: string,
  ref: string,
  mediaType: string,
  body: unknown,
): Promise<void> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, {
    method: "PUT",
    headers: { "content-type": mediaType },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.equal(res.status, 201, `PUT manifest ${repo}:${ref}: ${text}`);
}

function assertProgressLine(line: string): void {
  assert.match(
    line,
    /^(pulling sha256:[0-9a-f]{12}… \d+(\.\d)? (B|kB|MB)( \(config\))?|sha256:[0-9a-f]{12}… already present|downloading sha256:[0-9a-f]{12}… .* of .* \(\d+%\))$/,
  );
}

describe("pull from a real registry (docker-registry 2.8.2)", () => {
  let reg: TestRegistry;
  let layout: TestLayout;

  before(async () => {
    reg = await startRegistry();
    layout = await createTestLayout();
    await layout.build("base", {
      layers: [
        { "etc/hello.txt": "hello\n" },
        { "usr/share/strata/readme.txt": "layer two\n", "etc/second.txt": "second\n" },
      ],
    });
    await layout.build("amd", { layers: [{ "platform.txt": "amd64\n" }] });
    await layout.build("arm", { layers: [{ "platform.txt": "arm64\n" }], architecture: "arm64" });
    await layout.build("tamper", { layers: [{ "tamper.txt": "this layer will be corrupted in the registry\n" }] });
    await layout.push("base", `${reg.host}/test/img:1`);
    await layout.push("amd", `${reg.host}/test/multi:amd`);
    await layout.push("arm", `${reg.host}/test/multi:arm`);
    await layout.push("amd", `${reg.host}/test/multi-docker:amd`, { format: "v2s2" });
    await layout.push("arm", `${reg.host}/test/multi-docker:arm`, { format: "v2s2" });
    await layout.push("tamper", `${reg.host}/test/tamper:1`);

    // An OCI index: arm64 first, then an attestation manifest that claims linux/amd64 (must be skipped), then amd64.
    const amd = await getManifest(reg, "test/multi", "amd");
    const arm = await getManifest(reg, "test/multi", "arm");
    const entry = (m: ManifestInfo, architecture: string, extra: object = {}): object => ({
      mediaType: m.mediaType,
      digest: m.digest,
      size: m.size,
      platform: { os: "linux", architecture },
      ...extra,
    });
    const attestation = {
      annotations: { "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amd.digest },
    };
    await putManifest(reg, "test/multi", "all", MediaType.ociIndex, {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [
        entry(arm, "arm64"),
        entry(arm, "amd64", attestation),
        { ...entry(arm, "unknown"), platform: { os: "unknown", architecture: "unknown" } },
        entry(amd, "amd64"),
      ],
    });
    await putManifest(reg, "test/multi", "arm-only", MediaType.ociIndex, {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [entry(arm, "arm64"), entry(arm, "amd64", attestation)],
    });

    const damd = await getManifest(reg, "test/multi-docker", "amd");
    const darm = await getManifest(reg, "test/multi-docker", "arm");
    assert.equal(damd.mediaType, MediaType.dockerManifest);
    await putManifest(reg, "test/multi-docker", "all", MediaType.dockerManifestList, {
      schemaVersion: 2,
      mediaType: MediaType.dockerManifestList,
      manifests: [entry(darm, "arm64"), entry(damd, "amd64")],
    });
  });

  after(async () => {
    await reg?.stop();
    await layout?.cleanup();
    for (const d of tempDirs) await fsp.rm(d, { recursive: true, force: true });
  });

  test("pulls every blob into the store, layers unpack, and a second pull skips what is present", async () => {
    const { store, dir } = await newStore();
    const lines: string[] = [];
    const ref = `${reg.host}/test/img:1`;
    const pulled = await pullImage(ref, store, { onProgress: (l) => lines.push(l) });
    const remote = await getManifest(reg, "test/img", "1");

    assert.equal(pulled.manifestDigest, remote.digest);
    assert.equal(pulled.configDigest, remote.json.config.digest);
    assert.equal(pulled.layers.length, 2);
    assert.deepEqual(
      pulled.config.rootfs.diff_ids,
      pulled.layers.map((l) => l.diffId),
    );
    assert.equal(pulled.config.os, "linux");
    assert.equal(pulled.config.architecture, "amd64");
    assert.deepEqual(pulled.config.config.Cmd, ["/bin/sh"]);
    for (const [i, l] of pulled.layers.entries()) {
      assert.equal(l.digest, remote.json.layers[i]!.digest);
      assert.equal(l.size, remote.json.layers[i]!.size);
      assert.equal(l.mediaType, MediaType.ociLayerGzip);
      assert.ok(await store.hasBlob(l.digest), `layer ${i} stored`);
    }
    assert.ok(await store.hasBlob(pulled.manifestDigest), "manifest stored");
    assert.ok(await store.hasBlob(pulled.configDigest), "config stored");
    assert.equal(sha256Bytes(await store.readBlob(pulled.manifestDigest)), pulled.manifestDigest);
    assert.equal((await store.readBlob(pulled.manifestDigest)).length, pulled.manifestSize);

    const l0 = await store.layerDir(pulled.layers[0]!);
    const l1 = await store.layerDir(pulled.layers[1]!);
    assert.equal(await fsp.readFile(path.join(l0, "etc/hello.txt"), "utf8"), "hello\n");
    assert.equal(await fsp.readFile(path.join(l1, "usr/share/strata/readme.txt"), "utf8"), "layer two\n");
    assert.equal(await fsp.readFile(path.join(l1, "etc/second.txt"), "utf8"), "second\n");

    assert.equal(lines.filter((l) => l.startsWith("pulling")).length, 3, lines.join("\n"));
    lines.forEach(assertProgressLine);
    assert.deepEqual(
      (await fsp.readdir(path.join(dir, "tmp"))).filter((n) => n.startsWith("pull-")),
      [],
      "temp dir removed",
    );

    // Second pull: nothing downloaded again.
    const lines2: string[] = [];
    const again = await pullImage(ref, store, { onProgress: (l) => lines2.push(l) });
    assert.deepEqual(again.layers, pulled.layers);
    assert.equal(again.manifestDigest, pulled.manifestDigest);
    assert.equal(lines2.filter((l) => l.startsWith("pulling")).length, 0, lines2.join("\n"));
    lines2.forEach(assertProgressLine);
  });

  test("resolves a tag and pulls by digest (with and without a tag)", async () => {
    const { store } = await newStore();
    const resolved = await resolveImage(`${reg.host}/test/img:1`);
    assert.equal(resolved.manifestDigest, (await getManifest(reg, "test/img", "1")).digest);
    assert.equal(resolved.reference.toString(), `${reg.host}/test/img:1`);
    const byDigest = await pullImage(`${reg.host}/test/img@${resolved.manifestDigest}`, store);
    assert.equal(byDigest.manifestDigest, resolved.manifestDigest);
    assert.equal(byDigest.layers.length, 2);
    const both = await resolveImage(`${reg.host}/test/img:ignored-tag@${resolved.manifestDigest}`);
    assert.equal(both.manifestDigest, resolved.manifestDigest);
  });

  test("an OCI index resolves to its linux/amd64 manifest, skipping attestation entries", async () => {
    const { store } = await newStore();
    const amd = await getManifest(reg, "test/multi", "amd");
    const resolved = await resolveImage(`${reg.host}/test/multi:all`);
    assert.equal(resolved.manifestDigest, amd.digest);
    const pulled = await pullImage(`${reg.host}/test/multi:all`, store);
    assert.equal(pulled.manifestDigest, amd.digest);
    assert.equal(pulled.config.architecture, "amd64");
    assert.equal(
      await fsp.readFile(path.join(await store.layerDir(pulled.layers[0]!), "platform.txt"), "utf8"),
      "amd64\n",
    );
    // The index itself, fetched by digest, resolves the same way.
    const index = await getManifest(reg, "test/multi", "all");
    assert.equal((await resolveImage(`${reg.host}/test/multi@${index.digest}`)).manifestDigest, amd.digest);
  });

  test("a Docker manifest list resolves to linux/amd64 and keeps Docker layer media types", async () => {
    const { store } = await newStore();
    const pulled = await pullImage(`${reg.host}/test/multi-docker:all`, store);
    assert.equal(pulled.manifestDigest, (await getManifest(reg, "test/multi-docker", "amd")).digest);
    assert.equal(pulled.layers[0]!.mediaType, MediaType.dockerLayerGzip);
    assert.equal(
      await fsp.readFile(path.join(await store.layerDir(pulled.layers[0]!), "platform.txt"), "utf8"),
      "amd64\n",
    );
  });

  test("an index without linux/amd64, and an arm64 image, are refused clearly", async () => {
    const { store } = await newStore();
    await assert.rejects(resolveImage(`${reg.host}/test/multi:arm-only`), (e: unknown) => {
      assert.ok(e instanceof UnsupportedImageError, String(e));
      assert.match(e.message, /no linux\/amd64 image \(it offers: linux\/arm64\)/);
      return true;
    });
    await assert.rejects(pullImage(`${reg.host}/test/multi:arm`, store), (e: unknown) => {
      assert.ok(e instanceof UnsupportedImageError, String(e));
      assert.match(e.message, /linux\/arm64 image according to its config/);
      return true;
    });
  });

  test("a blob tampered with in the registry is rejected with DigestMismatchError and not stored", async () => {
    const { store, dir } = await newStore();
    const m = await getManifest(reg, "test/tamper", "1");
    const layer = m.json.layers[0]!;
    const hex = digestHex(layer.digest);
    const data = path.join(reg.storageDir, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
    const bytes = await fsp.readFile(data);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff; // same size, different content
    await fsp.writeFile(data, bytes);

    await assert.rejects(pullImage(`${reg.host}/test/tamper:1`, store), (e: unknown) => {
      assert.ok(e instanceof DigestMismatchError, String(e));
      assert.match(e.message, new RegExp(`expected ${layer.digest}`));
      return true;
    });
    assert.equal(await store.hasBlob(layer.digest), false, "tampered layer must not be stored");
    assert.equal(await store.hasBlob(m.digest), false, "manifest must not be stored when a layer failed");
    assert.deepEqual(
      (await fsp.readdir(path.join(dir, "tmp"))).filter((n) => n.startsWith("pull-")),
      [],
      "temp dir removed",
    );
  });

  test("an unknown tag or repository is a RegistryError 404 naming the URL", async () => {
    const { store } = await newStore();
    await assert.rejects(pullImage(`${reg.host}/test/img:nope`, store), (e: unknown) => {
      assert.ok(e instanceof RegistryError, String(e));
      assert.equal(e.status, 404);
      assert.ok(e.codes.includes("MANIFEST_UNKNOWN"), e.codes.join(","));
      assert.equal(e.temporary, false);
      assert.equal(e.fault, "user");
      assert.ok(e.message.includes(`${reg.url}/v2/test/img/manifests/nope`), e.message);
      assert.match(e.message, /tag "nope" exist/);
      return true;
    });
    await assert.rejects(resolveImage(`${reg.host}/test/nothing-here:1`), (e: unknown) => {
      assert.ok(e instanceof RegistryError, String(e));
      assert.equal(e.status, 404);
      // 2.8.2 answers MANIFEST_UNKNOWN for a missing repository too; others say NAME_UNKNOWN.
      assert.ok(e.codes.includes("NAME_UNKNOWN") || e.codes.includes("MANIFEST_UNKNOWN"), e.codes.join(","));
      return true;
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Behaviour the plain local registry cannot show: token auth, cross-origin redirects, retries, odd registries.

interface FakeServer {
  host: string;
  url: string;
  close(): Promise<void>;
}

async function startFake(bind: string, handler: http.RequestListener): Promise<FakeServer> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, bind, resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    host: `${bind}:${port}`,
    url: `http://${bind}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: http.OutgoingHttpHeaders = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

describe("registry protocol details (fake servers)", () => {
  let layout: TestLayout;
  const servers: FakeServer[] = [];

  before(async () => {
    layout = await createTestLayout();
    await layout.build("t", { layers: [{ "a.txt": "a\n" }, { "b.txt": "b\n" }] });
  });
  after(async () => {
    for (const s of servers) await s.close();
    await layout?.cleanup();
    for (const d of tempDirs) await fsp.rm(d, { recursive: true, force: true });
  });

  async function readLayoutBlob(digest: string): Promise<Buffer> {
    return fsp.readFile(path.join(layout.dir, "blobs/sha256", digestHex(digest)));
  }

  test("parseWwwAuthenticate handles quoted commas, several challenges and escapes", () => {
    assert.deepEqual(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope"',
      ).map((c) => ({ ...c, params: { ...c.params } })),
      [
        {
          scheme: "Bearer",
          params: {
            realm: "https://auth.example/token",
            service: "registry.example",
            scope: "repository:a/b:pull,push repository:c:pull",
            error: "insufficient_scope",
          },
        },
      ],
    );
    const two = parseWwwAuthenticate(
      'Basic realm="basic \\"realm\\", with comma", Bearer realm=https://t.example/token , service=svc',
    );
    assert.equal(two.length, 2);
    assert.equal(two[0]!.scheme, "Basic");
    assert.equal(two[0]!.params["realm"], 'basic "realm", with comma');
    assert.equal(two[1]!.scheme, "Bearer");
    assert.equal(two[1]!.params["realm"], "https://t.example/token");
    assert.equal(two[1]!.params["service"], "svc");
    assert.deepEqual(parseWwwAuthenticate(""), []);
    assert.equal(formatSize(12_345_678), "12.3 MB");
  });

  test("anonymous bearer token, token refresh, and blob redirects to another origin without Authorization", async () => {
    const index = JSON.parse(await fsp.readFile(path.join(layout.dir, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    const manifestDigest = index.manifests[0]!.digest;
    const manifestBytes = await readLayoutBlob(manifestDigest);

    // "S3": another origin that refuses any Authorization header, like the real thing.
    const storageRequests: string[] = [];
    const storage = await startFake("127.0.0.2", (req, res) => {
      storageRequests.push(req.url ?? "");
      if (req.headers.authorization) return sendJson(res, 400, { error: "Only one auth mechanism allowed" });
      const m = /^\/blobs\/([0-9a-f]{64})\?sig=secret$/.exec(req.url ?? "");
      if (!m) return sendJson(res, 403, { error: "bad signature" });
      void readLayoutBlob(`sha256:${m[1]}`).then((b) => {
        res.writeHead(200, { "content-length": b.length, "content-type": "application/octet-stream" });
        res.end(b);
      });
    });
    servers.push(storage);

    let tokensIssued = 0;
    const uses = new Map<string, number>();
    let registry: FakeServer;
    registry = await startFake("127.0.0.1", (req, res) => {
      const url = new URL(req.url ?? "/", registry.url);
      if (url.pathname === "/token") {
        assert.equal(req.headers.authorization, undefined, "anonymous token request");
        assert.equal(url.searchParams.get("service"), "fake registry");
        // Our pull scope merged with the challenge's, sorted (equal access sets share a cached token).
        assert.deepEqual(url.searchParams.getAll("scope"), ["repository:other:pull", "repository:test/img:pull,push"]);
        tokensIssued++;
        return sendJson(res, 200, { access_token: `tok-${tokensIssued}`, expires_in: 300 });
      }
      const auth = req.headers.authorization ?? "";
      const token = /^Bearer (tok-\d+)$/.exec(auth)?.[1];
      // Each token is good for three requests, so a pull has to refresh once.
      const used = token ? (uses.get(token) ?? 0) + 1 : 0;
      if (token) uses.set(token, used);
      if (!token || used > 3) {
        return sendJson(
          res,
          401,
          { errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] },
          {
            "www-authenticate": `Bearer realm="${registry.url}/token",service="fake registry",scope="repository:test/img:pull,push repository:other:pull"`,
          },
        );
      }
      if (url.pathname === "/v2/test/img/manifests/latest") {
        res.writeHead(200, {
          "content-type": MediaType.ociManifest,
          "content-length": manifestBytes.length,
          "docker-content-digest": manifestDigest,
        });
        return res.end(manifestBytes);
      }
      const blob = /^\/v2\/test\/img\/blobs\/sha256:([0-9a-f]{64})$/.exec(url.pathname);
      if (blob) {
        res.writeHead(307, { location: `${storage.url}/blobs/${blob[1]}?sig=secret` });
        return res.end();
      }
      sendJson(res, 404, { errors: [{ code: "NAME_UNKNOWN" }] });
    });
    servers.push(registry);

    const { store } = await newStore();
    const pulled = await pullImage(`${registry.host}/test/img`, store, { concurrency: 2 });
    assert.equal(pulled.manifestDigest, manifestDigest);
    assert.equal(pulled.layers.length, 2);
    for (const l of pulled.layers) assert.ok(await store.hasBlob(l.digest));
    assert.equal(storageRequests.length, 3, "config + 2 layers fetched from the redirect target");
    assert.equal(tokensIssued, 2, "one token, refreshed once when it stopped working");
    assert.equal(await fsp.readFile(path.join(await store.layerDir(pulled.layers[1]!), "b.txt"), "utf8"), "b\n");
  });

  test("5xx is retried, then reported as temporary; 404 after a retry is final", async () => {
    let hits = 0;
    const fake = await startFake("127.0.0.1", (req, res) => {
      hits++;
      if (req.url === "/v2/flaky/manifests/t" && hits <= 2)
        return sendJson(res, 503, { errors: [{ code: "UNAVAILABLE", message: "try later" }] });
      if (req.url === "/v2/flaky/manifests/t")
        return sendJson(res, 404, { errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] });
      sendJson(res, 502, {});
    });
    servers.push(fake);
    await assert.rejects(resolveImage(`${fake.host}/flaky:t`), (e: unknown) => {
      assert.ok(e instanceof RegistryError, String(e));
      assert.equal(e.status, 404);
      assert.deepEqual(e.codes, ["MANIFEST_UNKNOWN"]);
      return true;
    });
    assert.equal(hits, 3);
    hits = 100;
    await assert.rejects(resolveImage(`${fake.host}/down:t`), (e: unknown) => {
      assert.ok(e instanceof RegistryError, String(e));
      assert.equal(e.status, 502);
      assert.equal(e.temporary, true);
      assert.match(e.message, /server error.*gave up after 3 attempts/);
      return true;
    });
    assert.equal(hits, 103);
  });

  test("aborting a pull stops a stalled download and leaves nothing behind", async () => {
    const index = JSON.parse(await fsp.readFile(path.join(layout.dir, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    const manifestDigest = index.manifests[0]!.digest;
    const manifestBytes = await readLayoutBlob(manifestDigest);
    const configDigest = (JSON.parse(manifestBytes.toString("utf8")) as { config: { digest: string } }).config.digest;
    let stalled = 0;
    const fake = await startFake("127.0.0.1", (req, res) => {
      if (req.url === "/v2/slow/manifests/latest") {
        res.writeHead(200, { "content-type": MediaType.ociManifest });
        return res.end(manifestBytes);
      }
      const blob = /^\/v2\/slow\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? "");
      if (!blob) return sendJson(res, 404, {});
      void readLayoutBlob(blob[1]!).then((b) => {
        res.writeHead(200, { "content-length": b.length });
        if (blob[1] === configDigest) return res.end(b);
        stalled++;
        res.write(b.subarray(0, 10)); // then never finish
      });
    });
    servers.push(fake);
    const { store, dir } = await newStore();
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(pullImage(`${fake.host}/slow`, store, { signal: ac.signal }), (e: unknown) => {
      assert.equal((e as Error).name, "AbortError", String(e));
      return true;
    });
    assert.ok(Date.now() - started < 5000);
    assert.ok(stalled >= 1);
    assert.deepEqual(
      (await fsp.readdir(path.join(dir, "tmp"))).filter((n) => n.startsWith("pull-")),
      [],
      "temp dir removed",
    );
  });

  test("a Basic challenge without credentials says credentials are needed", async () => {
    const fake = await startFake("127.0.0.1", (_req, res) =>
      sendJson(res, 401, { errors: [{ code: "UNAUTHORIZED" }] }, { "www-authenticate": 'Basic realm="basic-realm"' }),
    );
    servers.push(fake);
    await assert.rejects(resolveImage(`${fake.host}/private:t`), (e: unknown) => {
      assert.ok(e instanceof RegistryError, String(e));
      assert.equal(e.status, 401);
      assert.match(e.message, /requires a username and password \(HTTP Basic auth \(realm "basic-realm"\)\)/);
      assert.match(e.message, /no credentials are configured/);
      return true;
    });
  });

  test("schema1 manifests and zstd layers are refused clearly", async () => {
    const zstdManifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: "sha256:" + "1".repeat(64), size: 10 },
        layers: [
          { mediaType: "application/vnd.oci.image.layer.v1.tar+zstd", digest: "sha256:" + "2".repeat(64), size: 10 },
        ],
      }),
    );
    const fake = await startFake("127.0.0.1", (req, res) => {
      if (req.url === "/v2/old/manifests/t") {
        res.writeHead(200, { "content-type": "application/vnd.docker.distribution.manifest.v1+prettyjws" });
        return res.end(JSON.stringify({ schemaVersion: 1, name: "old", tag: "t", fsLayers: [] }));
      }
      if (req.url === "/v2/zstd/manifests/t") {
        res.writeHead(200, { "content-type": MediaType.ociManifest });
        return res.end(zstdManifest);
      }
      sendJson(res, 404, { errors: [{ code: "NAME_UNKNOWN" }] });
    });
    servers.push(fake);
    await assert.rejects(resolveImage(`${fake.host}/old:t`), (e: unknown) => {
      assert.ok(e instanceof UnsupportedImageError, String(e));
      assert.match(e.message, /schema1/);
      return true;
    });
    const { store } = await newStore();
    await assert.rejects(pullImage(`${fake.host}/zstd:t`, store), (e: unknown) => {
      assert.ok(e instanceof UnsupportedImageError, String(e));
      assert.match(e.message, /zstd-compressed.*not supported yet/);
      return true;
    });
  });
});
