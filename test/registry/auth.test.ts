// Credential providers (secret, Docker config.json, credential helpers), scope merging, token expiry, Retry-After,
// and token-cache behaviour against small fake servers.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { InvalidDefinitionError } from "../../src/errors.js";
import {
  clearTokenCache,
  credentialsFromSecret,
  dockerConfigCredentials,
  mergeScopes,
  resolveCredentialProvider,
  tokenExpiry,
} from "../../src/registry/auth.js";
import { RegistryClient } from "../../src/registry/client.js";
import { parseRetryAfter } from "../../src/registry/http.js";
import { parseReference } from "../../src/registry/reference.js";
import { Secret } from "../../src/sdk/secret.js";

const tempDirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-auth-"));
  tempDirs.push(d);
  return d;
}
after(async () => {
  for (const d of tempDirs) await fsp.rm(d, { recursive: true, force: true });
});

describe("credential providers", () => {
  test("a secret with REGISTRY_USERNAME/REGISTRY_PASSWORD (plain object or Secret) answers every registry", async () => {
    const fromObject = credentialsFromSecret({
      REGISTRY_USERNAME: "u",
      REGISTRY_PASSWORD: "p:with:colons",
      OTHER: "x",
    });
    assert.deepEqual(await fromObject!("example.com"), {
      username: "u",
      password: "p:with:colons",
      source: "the secret's REGISTRY_USERNAME/REGISTRY_PASSWORD",
    });
    const fromSecret = credentialsFromSecret(Secret.fromObject({ REGISTRY_USERNAME: "u2", REGISTRY_PASSWORD: "p2" }));
    assert.equal((await fromSecret!("h:5000"))?.username, "u2");
    assert.equal(credentialsFromSecret({ AWS_REGION: "x" }), undefined);
    assert.throws(
      () => credentialsFromSecret({ REGISTRY_USERNAME: "u" }),
      (e: unknown) => e instanceof InvalidDefinitionError && /not REGISTRY_PASSWORD/.test(e.message),
    );
    assert.throws(() => credentialsFromSecret({ REGISTRY_PASSWORD: "p" }), /not REGISTRY_USERNAME/);
  });

  test("Docker config.json: auths by host, old URL-style keys, Docker Hub's key, username/password fields", async () => {
    const dir = await tempDir();
    const b64 = (s: string): string => Buffer.from(s).toString("base64");
    await fsp.writeFile(
      path.join(dir, "config.json"),
      JSON.stringify({
        auths: {
          "registry.example.com:5000": { auth: b64("alice:pw:1") },
          "https://old.example.com/v1/": { auth: b64("bob:pw2") },
          "https://index.docker.io/v1/": { auth: b64("hubuser:hubtoken") },
          "split.example.com": { username: "carol", password: "pw3" },
          "broken.example.com": { auth: b64("no-colon") },
        },
      }),
    );
    const p = dockerConfigCredentials({ configDir: dir });
    assert.deepEqual(await p("registry.example.com:5000"), {
      username: "alice",
      password: "pw:1",
      source: `${path.join(dir, "config.json")} (auths entry for registry.example.com:5000)`,
    });
    assert.equal((await p("old.example.com"))?.username, "bob");
    assert.equal((await p("docker.io"))?.password, "hubtoken");
    assert.equal((await p("split.example.com"))?.username, "carol");
    assert.equal(await p("unknown.example.com"), undefined);
    await assert.rejects(
      p("broken.example.com"),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /not base64 of "username:password"/.test(e.message) &&
        !e.message.includes("no-colon"),
    );
    // DOCKER_CONFIG via env; a missing file is anonymous.
    assert.equal(
      (await dockerConfigCredentials({ env: { DOCKER_CONFIG: dir } })("split.example.com"))?.password,
      "pw3",
    );
    assert.equal(await dockerConfigCredentials({ configDir: path.join(dir, "nope") })("split.example.com"), undefined);
  });

  test("Docker config.json credential helpers (credHelpers, credsStore)", async () => {
    const dir = await tempDir();
    const bin = path.join(dir, "bin");
    await fsp.mkdir(bin);
    await fsp.writeFile(
      path.join(bin, "docker-credential-fake"),
      '#!/bin/sh\nread server\nif [ "$1" = get ] && [ "$server" = "helped.example.com" ]; then echo \'{"ServerURL":"helped.example.com","Username":"helper-user","Secret":"helper-pw"}\'; else echo "credentials not found in native keychain"; exit 1; fi\n',
      { mode: 0o755 },
    );
    await fsp.writeFile(
      path.join(dir, "config.json"),
      JSON.stringify({
        credHelpers: { "helped.example.com": "fake", "other.example.com": "fake" },
        auths: { "other.example.com": { auth: Buffer.from("o:p").toString("base64") } },
      }),
    );
    const env = { PATH: `${bin}:${process.env.PATH ?? ""}` };
    const p = dockerConfigCredentials({ configDir: dir, env });
    assert.deepEqual(await p("helped.example.com"), {
      username: "helper-user",
      password: "helper-pw",
      source: "credential helper docker-credential-fake",
    });
    assert.equal((await p("other.example.com"))?.username, "o", "helper has nothing: fall back to auths");
    await fsp.writeFile(path.join(dir, "config.json"), JSON.stringify({ credsStore: "missing-helper" }));
    await assert.rejects(p("x.example.com"), /docker-credential-missing-helper is not on PATH/);
  });

  test("precedence: explicit provider, then the secret, then config.json", async () => {
    const dir = await tempDir();
    await fsp.writeFile(
      path.join(dir, "config.json"),
      JSON.stringify({ auths: { "h.example.com": { auth: Buffer.from("cfg:pw").toString("base64") } } }),
    );
    const explicit = async () => ({ username: "explicit", password: "x" });
    assert.equal(
      (
        await resolveCredentialProvider({
          credentials: explicit,
          secret: { REGISTRY_USERNAME: "s", REGISTRY_PASSWORD: "p" },
        })!("h.example.com")
      )?.username,
      "explicit",
    );
    assert.equal(
      (
        await resolveCredentialProvider({
          secret: { REGISTRY_USERNAME: "s", REGISTRY_PASSWORD: "p" },
          dockerConfig: { configDir: dir },
        })!("h.example.com")
      )?.username,
      "s",
    );
    assert.equal(
      (await resolveCredentialProvider({ secret: {}, dockerConfig: { configDir: dir } })!("h.example.com"))?.username,
      "cfg",
    );
    assert.equal(resolveCredentialProvider({ dockerConfig: false }), undefined);
  });
});

describe("scopes, expiry, Retry-After", () => {
  test("mergeScopes combines actions per resource and sorts", () => {
    assert.deepEqual(mergeScopes(["repository:a:pull"], "repository:a:push repository:b/c:pull", undefined), [
      "repository:a:pull,push",
      "repository:b/c:pull",
    ]);
    assert.deepEqual(mergeScopes(["repository:host:5000/x:pull"]), ["repository:host:5000/x:pull"]);
    assert.deepEqual(mergeScopes(["registry:catalog:*", "registry:catalog:*"]), ["registry:catalog:*"]);
  });

  test("tokenExpiry: expires_in (default 60 s) from issued_at when it is in the past, else from now", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    assert.equal(tokenExpiry({}, now), now + 60_000 - 5000);
    assert.equal(tokenExpiry({ expires_in: 300 }, now), now + 300_000 - 5000);
    assert.equal(
      tokenExpiry({ expires_in: 300, issued_at: "2025-12-31T23:58:00Z" }, now),
      now - 120_000 + 300_000 - 5000,
    );
    assert.equal(
      tokenExpiry({ expires_in: 300, issued_at: "2026-01-01T00:10:00Z" }, now),
      now + 300_000 - 5000,
      "a future issued_at (clock skew) is ignored",
    );
    assert.equal(tokenExpiry({ expires_in: 10 }, now), now + 10_000 - 1000);
  });

  test("parseRetryAfter: seconds and HTTP dates", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    assert.equal(parseRetryAfter("3", now), 3000);
    assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:10 GMT", now), 10_000);
    assert.equal(parseRetryAfter(null, now), undefined);
    assert.equal(parseRetryAfter("soon", now), undefined);
  });
});

describe("token flow against fake servers", () => {
  async function fake(handler: http.RequestListener): Promise<{ url: string; host: string; close(): Promise<void> }> {
    const server = http.createServer(handler);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const addr = server.address();
    const port = typeof addr === "object" && addr ? addr.port : 0;
    return {
      url: `http://127.0.0.1:${port}`,
      host: `127.0.0.1:${port}`,
      close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
    };
  }

  test("concurrent requests share one token fetch; a 401 invalid_token gets exactly one fresh token and one retry", async () => {
    clearTokenCache();
    let tokenRequests = 0;
    let revoked = "";
    const seenAuth: string[] = [];
    let base = "";
    const srv = await fake((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === "/token") {
        tokenRequests++;
        assert.equal(req.headers.authorization, `Basic ${Buffer.from("u:p").toString("base64")}`);
        res.writeHead(200, { "content-type": "application/json" });
        // Slow, so concurrent callers overlap.
        setTimeout(() => res.end(JSON.stringify({ token: `t${tokenRequests}`, expires_in: 300 })), 50);
        return;
      }
      const auth = req.headers.authorization ?? "";
      seenAuth.push(auth);
      if (!auth.startsWith("Bearer ") || auth === `Bearer ${revoked}`) {
        res.writeHead(401, {
          "www-authenticate": `Bearer realm="${base}/token",service="svc",scope="repository:r:pull"${auth ? ',error="invalid_token"' : ""}`,
        });
        return res.end();
      }
      res.writeHead(200);
      res.end("ok");
    });
    base = srv.url;
    try {
      const client = new RegistryClient(parseReference(`${srv.host}/r:t`), {
        secret: { REGISTRY_USERNAME: "u", REGISTRY_PASSWORD: "p" },
        dockerConfig: false,
      });
      const results = await Promise.all([1, 2, 3, 4].map(() => client.fetch(client.url("blobs", "x"))));
      for (const r of results) assert.equal(r.res.status, 200);
      assert.equal(tokenRequests, 1, "single flight");
      revoked = "t1";
      const again = await client.fetch(client.url("blobs", "x"));
      assert.equal(again.res.status, 200);
      assert.equal(tokenRequests, 2, "one fresh token after invalid_token");
      assert.equal(seenAuth[seenAuth.length - 1], "Bearer t2");

      // A second client for the same registry reuses the cached token on its first request (no 401 round trip).
      const before = seenAuth.length;
      const other = new RegistryClient(parseReference(`${srv.host}/r:t`), {
        secret: { REGISTRY_USERNAME: "u", REGISTRY_PASSWORD: "p" },
        dockerConfig: false,
      });
      assert.equal((await other.fetch(other.url("blobs", "x"))).res.status, 200);
      assert.deepEqual(seenAuth.slice(before), ["Bearer t2"]);
    } finally {
      await srv.close();
    }
  });
});
