// Registry mirrors against real registries on loopback: pulls go through the configured mirrors in order, fall back to
// the registry when a mirror fails or lacks the image, name every host when all fail, refuse a mirror's wrong content
// for a pinned digest, and give the same step key as the registry itself. Docker Hub names resolve through a mirror
// with a fetch policy whose resolver refuses every name, so nothing here can ever reach docker.io.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Image } from "../../src/index.js";
import { DigestMismatchError } from "../../src/errors.js";
import { FetchPolicy } from "../../src/net/fetch-policy.js";
import { permissiveConfig } from "../../src/net/fetch-rules.js";
import { parseRegistryConfig } from "../../src/net/registry-config.js";
import { loadRegistryConfig } from "../../src/net/registry-config-file.js";
import { openLazyImage } from "../../src/registry/estargz/lazy.js";
import { RegistryHostsError } from "../../src/registry/errors.js";
import { pullImage, resolveImage } from "../../src/registry/pull.js";
import { LocalStore } from "../../src/store/local.js";
import { sha256Bytes, type Digest } from "../../src/util/digest.js";
import { startCountingProxy, type CountingProxy } from "../support/counting-proxy.js";
import { createTestLayout, startRegistry, type TestLayout, type TestRegistry } from "../support/registry.js";
import { issueServerCert, makeTestCa, type TestCa } from "../support/tls.js";

const ACCEPT =
  "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

let mirror: TestRegistry;
let origin: TestRegistry;
let layout: TestLayout;
let counting: CountingProxy;
let liar: { host: string; close(): Promise<void> };
let closedPort: string;
let tlsMirror: TestRegistry;
let ca: TestCa;
const dirs: string[] = [];

async function manifestDigest(
  reg: TestRegistry,
  repo: string,
  tag: string,
): Promise<{ digest: Digest; bytes: Buffer }> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: ACCEPT } });
  assert.equal(res.status, 200);
  const bytes = Buffer.from(await res.arrayBuffer());
  return { digest: sha256Bytes(bytes), bytes };
}

async function newStore(): Promise<LocalStore> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-mirrors-store-"));
  dirs.push(dir);
  return LocalStore.open(dir);
}

/** A permissive policy with `toml` as its registry config; names (not address literals) never resolve. */
function policy(toml: string): FetchPolicy {
  return new FetchPolicy(permissiveConfig(), {
    registryConfig: parseRegistryConfig(toml, "mirrors-test.toml"),
    resolve: async (host) => {
      throw Object.assign(new Error(`test resolver: ${host} is not resolved here`), { code: "ENOTFOUND" });
    },
  });
}

/** A mirror that answers every manifest-by-digest request with `other`'s bytes (a mirror serving the wrong image). */
async function startLyingMirror(
  target: TestRegistry,
  other: Buffer,
): Promise<{ host: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && /\/manifests\/sha256:/.test(req.url ?? "")) {
      res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json" }).end(other);
      return;
    }
    const up = http.request(
      {
        host: "127.0.0.1",
        port: Number(target.host.split(":")[1]),
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

before(async () => {
  const caDir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-mirrors-ca-"));
  dirs.push(caDir);
  ca = await makeTestCa(caDir);
  const cert = await issueServerCert(ca, "registry");
  [mirror, origin, tlsMirror] = await Promise.all([startRegistry(), startRegistry(), startRegistry({ tls: cert })]);
  layout = await createTestLayout();
  await layout.build("one", { layers: [{ "one.txt": "one\n" }] });
  await layout.build("two", { layers: [{ "two.txt": "two\n" }] });
  await Promise.all([
    layout.push("one", `${origin.host}/test/img:1`),
    layout.push("one", `${mirror.host}/test/img:1`),
    layout.push("two", `${mirror.host}/prefix/test/only-prefixed:1`),
    layout.push("two", `${mirror.host}/test/only-mirror:1`),
    layout.push("two", `${origin.host}/test/only-origin:1`),
    layout.push("one", `${mirror.host}/library/debian:bookworm-slim`),
    layout.push("two", `${tlsMirror.host}/test/tls-only:1`),
  ]);
  counting = await startCountingProxy(mirror.host);
  liar = await startLyingMirror(mirror, (await manifestDigest(mirror, "test/only-mirror", "1")).bytes);
  // A port nothing listens on: a mirror that is down.
  const srv = http.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  closedPort = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
  await new Promise<void>((r) => srv.close(() => r()));
});

after(async () => {
  await Promise.all([
    mirror?.stop(),
    origin?.stop(),
    tlsMirror?.stop(),
    layout?.cleanup(),
    counting?.close(),
    liar?.close(),
  ]);
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

const section = (mirrors: string[]) => `[registry."${origin.host}"]\nmirrors = ${JSON.stringify(mirrors)}\n`;

describe("registry mirrors", () => {
  test("a pull goes through the mirror first: an image only the mirror has is pulled", async () => {
    const store = await newStore();
    const pulled = await pullImage(`${origin.host}/test/only-mirror:1`, store, {
      fetchPolicy: policy(section([mirror.host])),
    });
    assert.equal(pulled.manifestDigest, (await manifestDigest(mirror, "test/only-mirror", "1")).digest);
    assert.equal(String(pulled.reference), `${origin.host}/test/only-mirror:1`);
  });

  test("a mirror that lacks the image hands over to the registry, and says so", async () => {
    const store = await newStore();
    const lines: string[] = [];
    const pulled = await pullImage(`${origin.host}/test/only-origin:1`, store, {
      fetchPolicy: policy(section([mirror.host])),
      onProgress: (l) => lines.push(l),
    });
    assert.equal(pulled.manifestDigest, (await manifestDigest(origin, "test/only-origin", "1")).digest);
    const handover = lines.find((l) => l.startsWith(`mirror ${mirror.host} failed`));
    assert.ok(handover, lines.join("\n"));
    assert.match(handover, new RegExp(`trying ${origin.host.replace(/\./g, "\\.")}$`));
  });

  test("mirrors are tried in order: a mirror that is down is skipped for the next one", async () => {
    const store = await newStore();
    counting.reset();
    const pulled = await pullImage(`${origin.host}/test/img:1`, store, {
      fetchPolicy: policy(section([closedPort, counting.host])),
      attempts: 1,
    });
    assert.equal(pulled.manifestDigest, (await manifestDigest(mirror, "test/img", "1")).digest);
    assert.ok(
      counting.requests.some((r) => r.path.startsWith("/v2/test/img/blobs/")),
      "the layers came from the second mirror",
    );
  });

  test("a mirror with a path is asked below /v2/<path>/", async () => {
    // Only the mirror has it, and only below the prefix.
    const r = await resolveImage(`${origin.host}/test/only-prefixed:1`, {
      fetchPolicy: policy(section([`${mirror.host}/prefix`])),
    });
    assert.equal(r.manifestDigest, (await manifestDigest(mirror, "prefix/test/only-prefixed", "1")).digest);
    await assert.rejects(
      resolveImage(`${origin.host}/test/only-prefixed:1`, { fetchPolicy: policy(section([mirror.host])) }),
      RegistryHostsError,
    );
  });

  test("when every host fails, the error lists each host, in order, with why", async () => {
    const store = await newStore();
    await assert.rejects(
      pullImage(`${origin.host}/test/nowhere:1`, store, {
        fetchPolicy: policy(section([closedPort, mirror.host])),
        attempts: 1,
      }),
      (e: unknown) => {
        assert.ok(e instanceof RegistryHostsError, String(e));
        assert.deepEqual(
          e.failures.map((f) => f.host),
          [`mirror ${closedPort}`, `mirror ${mirror.host}`, origin.host],
        );
        assert.match(
          e.message,
          /from any of the 3 hosts tried, in order:\n1\. mirror 127\.0\.0\.1:\d+: could not reach/,
        );
        assert.match(
          e.message,
          /\n3\. 127\.0\.0\.1:\d+: .*MANIFEST_UNKNOWN|\n3\. 127\.0\.0\.1:\d+: .*not found|\n3\. .*404/,
        );
        return true;
      },
    );
  });

  test("a mirror answering a pinned digest with other content is refused; the registry serves the digest", async () => {
    const { digest } = await manifestDigest(origin, "test/img", "1");
    const store = await newStore();
    const lines: string[] = [];
    const pulled = await pullImage(`${origin.host}/test/img@${digest}`, store, {
      fetchPolicy: policy(section([liar.host])),
      onProgress: (l) => lines.push(l),
    });
    assert.equal(pulled.manifestDigest, digest);
    assert.ok(
      lines.some((l) => l.startsWith(`mirror ${liar.host} failed (digest mismatch`)),
      lines.join("\n"),
    );
    // Where only the lying mirror could answer, the pull fails and says why.
    await assert.rejects(
      resolveImage(`${origin.host}/test/only-origin@${digest}`, { fetchPolicy: policy(section([liar.host])) }),
      (e: unknown) => {
        assert.ok(e instanceof RegistryHostsError);
        assert.ok(e.failures[0]!.error instanceof DigestMismatchError, String(e.failures[0]!.error));
        return true;
      },
    );
  });

  test("Docker Hub names (debian:bookworm-slim) resolve through a docker.io mirror; nothing resolves docker.io", async () => {
    const p = policy(`[registry."docker.io"]\nmirrors = ["${mirror.host}"]\n`);
    const want = (await manifestDigest(mirror, "library/debian", "bookworm-slim")).digest;
    assert.equal((await resolveImage("debian:bookworm-slim", { fetchPolicy: p })).manifestDigest, want);
    assert.equal(
      (await resolveImage("docker.io/library/debian:bookworm-slim", { fetchPolicy: p })).manifestDigest,
      want,
    );
    const lazy = await openLazyImage("debian:bookworm-slim", { fetchPolicy: p });
    assert.equal(lazy.manifestDigest, want);
    const store = await newStore();
    assert.equal((await pullImage("debian:bookworm-slim", store, { fetchPolicy: p })).manifestDigest, want);
  });

  test("an HTTPS mirror with a private CA: trusted with `ca`, refused without, accepted with `insecure`", async () => {
    const file = path.join(ca.dir, "registries.toml");
    const tls = (settings: string) =>
      `${section([tlsMirror.host])}[registry."${tlsMirror.host}"]\nhttp = false\n${settings}`;
    const fromFile = async (toml: string): Promise<FetchPolicy> => {
      await fsp.writeFile(file, toml);
      return new FetchPolicy(permissiveConfig(), { registryConfig: loadRegistryConfig(file) });
    };
    const want = (await manifestDigest(mirror, "test/only-mirror", "1")).digest;
    const ref = `${origin.host}/test/tls-only:1`;
    const trusted = await fromFile(tls(`ca = [${JSON.stringify(ca.caFile)}]\n`));
    assert.equal((await resolveImage(ref, { fetchPolicy: trusted })).manifestDigest, want);
    const untrusted = await fromFile(tls(""));
    await assert.rejects(resolveImage(ref, { fetchPolicy: untrusted }), (e: unknown) => {
      assert.ok(e instanceof RegistryHostsError, String(e));
      assert.match(
        e.message,
        /1\. mirror 127\.0\.0\.1:\d+: could not reach https:\/\/127\.0\.0\.1:\d+\/v2\/test\/tls-only\/manifests\/1 \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER_CERT)/,
      );
      return true;
    });
    const insecure = await fromFile(tls("insecure = true\n"));
    assert.equal((await resolveImage(ref, { fetchPolicy: insecure })).manifestDigest, want);
    await Promise.all([trusted.close(), untrusted.close(), insecure.close()]);
  });

  test("COPY --from=<image> reads the image through the mirror", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-mirrors-df-"));
    dirs.push(dir);
    await fsp.writeFile(
      path.join(dir, "Dockerfile"),
      `FROM scratch\nCOPY --from=${origin.host}/test/only-mirror:1 /two.txt /copied\n`,
    );
    const store = await newStore();
    const built = await Image.fromDockerfile(path.join(dir, "Dockerfile"), { contextDir: dir }).build({
      store,
      fetchPolicy: policy(section([mirror.host])),
      log: () => undefined,
    });
    const record = await store.getImage(built.imageId);
    assert.equal(record?.layers.length, 1, "one layer: the copied file");
  });

  test("the same image through a mirror or from the registry has the same step key and image id", async () => {
    const ref = `${origin.host}/test/img:1`;
    const viaOrigin = await Image.fromRegistry(ref).build({
      store: await newStore(),
      fetchPolicy: policy(""),
      log: () => undefined,
    });
    counting.reset();
    const viaMirror = await Image.fromRegistry(ref).build({
      store: await newStore(),
      fetchPolicy: policy(section([counting.host])),
      log: () => undefined,
    });
    assert.ok(
      counting.requests.some((r) => r.path.startsWith("/v2/test/img/blobs/")),
      "the second build pulled through the mirror",
    );
    assert.equal(viaMirror.steps[0]!.key, viaOrigin.steps[0]!.key);
    assert.equal(viaMirror.imageId, viaOrigin.imageId);
  });
});
