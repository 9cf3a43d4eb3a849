// Google Artifact Registry logins end to end: a service-account key made here (fresh RSA key pair) → RS256 JWT →
// a loopback token endpoint that verifies the signature and claims for real → `oauth2accesstoken` + access token
// (or `_json_key` + the key JSON) as Basic credentials at a real docker-registry's token service, which hands out the
// registry bearer token — the same two-step flow as <location>-docker.pkg.dev.
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { InvalidDefinitionError } from "../../src/errors.js";
import { credentialsFor } from "../../src/registry/credentials.js";
import { RegistryAuthError, RegistryError } from "../../src/registry/errors.js";
import { clearGcpCache, gcpCredentials, parseServiceAccountKey } from "../../src/registry/gcp.js";
import { pullImage, resolveImage } from "../../src/registry/pull.js";
import { LocalStore } from "../../src/store/local.js";
import { keyFileJson, newRsaKeyPair, startGcpStandin, type GcpStandin } from "../support/gcp-standin.js";
import { createTestLayout, startRegistry, type TestLayout, type TestRegistry } from "../support/registry.js";

const tempDirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

async function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function privateKeyOf(json: string): string {
  return (JSON.parse(json) as { private_key: string }).private_key;
}

function assertNoKeyMaterial(e: unknown, json: string): void {
  const msg = e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : String(e);
  assert.ok(!msg.includes("PRIVATE KEY"), `message leaks key material: ${msg}`);
  const body = privateKeyOf(json).split("\n")[1] ?? "";
  assert.ok(body.length > 20 && !msg.includes(body), `message leaks key material: ${msg}`);
}

describe("GCP logins against a JWT-verifying token endpoint and a real token-auth registry", () => {
  let google: GcpStandin;
  let reg: TestRegistry;
  let layout: TestLayout;
  // The registry's token service reads this table live: access tokens are added as they are issued.
  const users: Record<string, string> = { pusher: "pusher-s3cret" };
  const repo = "proj/repo/img";

  before(async () => {
    google = await startGcpStandin({ onIssue: (token) => (users["oauth2accesstoken"] = token) });
    reg = await startRegistry({ auth: "token", users });
    layout = await createTestLayout();
    await layout.build("img", { layers: [{ "etc/gcp.txt": "from artifact registry\n" }] });
    await layout.push("img", `${reg.host}/${repo}:v1`, { creds: "pusher:pusher-s3cret" });
  });
  beforeEach(() => clearGcpCache());
  after(async () => {
    await reg?.stop();
    await google?.close();
    await layout?.cleanup();
    for (const d of tempDirs) await fsp.rm(d, { recursive: true, force: true });
  });

  test("service account JSON → verified RS256 JWT → access token → oauth2accesstoken login → pull; the token is cached", async () => {
    const json = google.serviceAccountJson("builder@strata-test.iam.gserviceaccount.com");
    const provider = credentialsFor("gcp", { SERVICE_ACCOUNT_JSON: json });
    assert.ok(provider);
    const n = google.requests.length;
    const store = await LocalStore.open(await tempDir("strata-gcp-store-"));
    const pulled = await pullImage(`${reg.host}/${repo}:v1`, store, { credentials: provider, dockerConfig: false });
    assert.equal(pulled.layers.length, 1);
    assert.equal(
      await fsp.readFile(path.join(await store.layerDir(pulled.layers[0]!), "etc/gcp.txt"), "utf8"),
      "from artifact registry\n",
    );

    const calls = google.requests.slice(n);
    assert.equal(calls.length, 1);
    assert.deepEqual([calls[0]!.iss, calls[0]!.status], ["builder@strata-test.iam.gserviceaccount.com", 200]);
    // The registry's token service saw the oauth2accesstoken login (and accepted it).
    assert.ok(reg.tokenServer!.requests.some((r) => r.user === "oauth2accesstoken" && r.status === 200));
    const creds = await provider(reg.host);
    assert.deepEqual([creds?.username, creds?.password], ["oauth2accesstoken", calls[0]!.accessToken]);
    assert.match(
      creds?.source ?? "",
      /OAuth access token for service account builder@strata-test\.iam\.gserviceaccount\.com \(from SERVICE_ACCOUNT_JSON\)/,
    );

    // Cached: resolving again (through a new provider for the same key) does not go back to the token endpoint.
    await resolveImage(`${reg.host}/${repo}:v1`, {
      credentials: gcpCredentials({ SERVICE_ACCOUNT_JSON: json }),
      dockerConfig: false,
    });
    assert.equal(google.requests.length, n + 1);
  });

  test("a JWT signed with a different key is rejected by the token endpoint, with a clear error and no key material", async () => {
    const real = google.serviceAccountJson("rotated@strata-test.iam.gserviceaccount.com");
    const other = keyFileJson(
      "rotated@strata-test.iam.gserviceaccount.com",
      newRsaKeyPair().privateKeyPem,
      google.tokenUri,
      { private_key_id: "0123abcd" },
    );
    assert.notEqual(privateKeyOf(real), privateKeyOf(other));
    const err = await resolveImage(`${reg.host}/${repo}:v1`, {
      credentials: gcpCredentials({ SERVICE_ACCOUNT_JSON: other }),
      dockerConfig: false,
    }).then(
      () => assert.fail("expected the login to fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof RegistryAuthError, String(err));
    assert.match(err.message, /rotated@strata-test\.iam\.gserviceaccount\.com/);
    assert.match(err.message, /invalid_grant: Invalid JWT Signature\./);
    assert.match(
      err.message,
      /the key in SERVICE_ACCOUNT_JSON \(private_key_id 0123abcd\) is not a current key of rotated@/,
    );
    assertNoKeyMaterial(err, other);
    assert.deepEqual([google.requests.at(-1)!.status, google.requests.at(-1)!.error], [400, "invalid_grant"]);

    // An account the endpoint does not know.
    const ghost = keyFileJson(
      "ghost@strata-test.iam.gserviceaccount.com",
      newRsaKeyPair().privateKeyPem,
      google.tokenUri,
    );
    await assert.rejects(
      gcpCredentials({ SERVICE_ACCOUNT_JSON: ghost })(reg.host),
      (e: unknown) =>
        e instanceof RegistryAuthError && /service account ghost@.* does not exist or is disabled/.test(e.message),
    );
  });

  test("_json_key mode: the key JSON itself is the password (token-auth registry: no 72-byte bcrypt truncation)", async () => {
    const json = google.serviceAccountJson("jsonkey@strata-test.iam.gserviceaccount.com");
    assert.ok(Buffer.byteLength(json) > 72, "longer than bcrypt's 72-byte limit, hence the token-auth registry");
    users["_json_key"] = json;
    try {
      const provider = credentialsFor("gcp", { SERVICE_ACCOUNT_JSON: json }, { gcp: { mode: "json_key" } })!;
      const n = google.requests.length;
      const store = await LocalStore.open(await tempDir("strata-gcp-store-"));
      const pulled = await pullImage(`${reg.host}/${repo}:v1`, store, { credentials: provider, dockerConfig: false });
      assert.equal(pulled.layers.length, 1);
      assert.equal(google.requests.length, n, "no token exchange in json_key mode");
      assert.ok(reg.tokenServer!.requests.some((r) => r.user === "_json_key" && r.status === 200));
      const creds = await provider(reg.host);
      assert.deepEqual([creds?.username, creds?.password], ["_json_key", json]);
      assert.ok(!(creds?.source ?? "").includes("PRIVATE"));

      // A different key is refused by the registry, and the error names the source, not the JSON.
      const other = google.serviceAccountJson("jsonkey@strata-test.iam.gserviceaccount.com");
      await assert.rejects(
        resolveImage(`${reg.host}/${repo}:v1`, {
          credentials: gcpCredentials({ SERVICE_ACCOUNT_JSON: other }, { mode: "json_key" }),
          dockerConfig: false,
        }),
        (e: unknown) => {
          assert.ok(e instanceof RegistryAuthError);
          assert.match(e.message, /SERVICE_ACCOUNT_JSON as a _json_key login/);
          assertNoKeyMaterial(e, other);
          return true;
        },
      );
    } finally {
      delete users["_json_key"];
    }
  });

  test("token cache: refreshed once past expiry minus the margin, with a fresh JWT the endpoint accepts", async () => {
    google.expiresIn = 60;
    try {
      const json = google.serviceAccountJson();
      let offset = 0;
      const provider = gcpCredentials({ SERVICE_ACCOUNT_JSON: json }, { now: () => Date.now() + offset });
      const n = google.requests.length;
      const first = await provider(reg.host);
      assert.equal((await provider(reg.host))?.password, first?.password);
      assert.equal(google.requests.length, n + 1);
      // 60 s token: the margin is capped at half its life, so it is refreshed from 30 s on. (The stand-in allows
      // 60 s of clock skew on iat, so the shifted clock still makes an acceptable JWT.)
      offset = 31_000;
      const second = await provider(reg.host);
      assert.notEqual(second?.password, first?.password);
      assert.equal(google.requests.length, n + 2);
      assert.equal(google.requests.at(-1)!.status, 200);
      // The refreshed token works at the registry.
      await resolveImage(`${reg.host}/${repo}:v1`, { credentials: provider, dockerConfig: false });
    } finally {
      google.expiresIn = 3599;
    }
  });

  test("token URI: the key's token_uri, overridden by STRATA_GCP_TOKEN_URI or the option; plain http only on loopback", async () => {
    const json = google.serviceAccountJson();
    const port = await closedPort();
    const deadUri = `http://127.0.0.1:${port}/token`;
    const pointingNowhere = JSON.stringify({ ...(JSON.parse(json) as object), token_uri: deadUri });
    // The env override wins over the key's token_uri (and the JWT's aud follows it: the stand-in checks aud).
    const viaEnv = gcpCredentials(
      { SERVICE_ACCOUNT_JSON: pointingNowhere },
      { env: { STRATA_GCP_TOKEN_URI: google.tokenUri } },
    );
    assert.equal((await viaEnv(reg.host))?.username, "oauth2accesstoken");
    clearGcpCache();
    assert.equal(
      (
        await gcpCredentials(
          { SERVICE_ACCOUNT_JSON: pointingNowhere },
          { tokenUri: google.tokenUri, env: {} },
        )(reg.host)
      )?.username,
      "oauth2accesstoken",
    );

    // Unreachable: a temporary RegistryError naming the endpoint.
    await assert.rejects(
      gcpCredentials({ SERVICE_ACCOUNT_JSON: pointingNowhere }, { env: {}, attempts: 1 })(reg.host),
      (e: unknown) => {
        assert.ok(e instanceof RegistryError && !(e instanceof RegistryAuthError));
        assert.equal(e.temporary, true);
        assert.match(
          e.message,
          new RegExp(`token endpoint ${deadUri.replace(/[./]/g, "\\$&")} could not be reached \\(ECONNREFUSED\\)`),
        );
        return true;
      },
    );

    const remoteHttp = JSON.stringify({
      ...(JSON.parse(json) as object),
      token_uri: "http://oauth2.example.com/token",
    });
    assert.throws(
      () => gcpCredentials({ SERVICE_ACCOUNT_JSON: remoteHttp }, { env: {} }),
      (e: unknown) => e instanceof InvalidDefinitionError && /token_uri.* must be https/.test(e.message),
    );
  });

  test("the key is validated up front, without quoting it", () => {
    const json = google.serviceAccountJson();
    const base = JSON.parse(json) as Record<string, unknown>;
    const bad = (patch: Record<string, unknown>): string => JSON.stringify({ ...base, ...patch });
    const check = (text: string, re: RegExp): void => {
      assert.throws(
        () => gcpCredentials({ SERVICE_ACCOUNT_JSON: text }),
        (e: unknown) =>
          e instanceof InvalidDefinitionError &&
          re.test(e.message) &&
          !e.message.includes("PRIVATE KEY") &&
          !e.message.includes(String(base["private_key_id"])),
      );
    };
    assert.throws(
      () => gcpCredentials({} as { SERVICE_ACCOUNT_JSON: string }),
      /the GCP secret has no SERVICE_ACCOUNT_JSON/,
    );
    assert.throws(
      () => credentialsFor("gcp", { GOOGLE_APPLICATION_CREDENTIALS: "/path/key.json" }),
      /GOOGLE_APPLICATION_CREDENTIALS is a path/,
    );
    check(json.slice(0, -5), /SERVICE_ACCOUNT_JSON is not valid JSON/);
    check("[1]", /must be a JSON object/);
    check(bad({ type: "external_account" }), /workload identity federation configurations are not supported/);
    check(bad({ type: "authorized_user" }), /user credentials .* are not supported/);
    check(bad({ client_email: 5 }), /no valid "client_email"/);
    check(bad({ private_key: undefined }), /no "private_key" PEM/);
    check(
      bad({ private_key: "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n" }),
      /not a readable PEM private key/,
    );
    check(bad({ token_uri: "not a url" }), /"token_uri" in SERVICE_ACCOUNT_JSON is not a URL/);
    const k = parseServiceAccountKey(json);
    assert.equal(k.privateKey.asymmetricKeyType, "rsa");
    assert.equal(k.tokenUri, google.tokenUri);
  });
});
