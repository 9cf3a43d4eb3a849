// ECR logins end to end: @aws-sdk/client-ecr (and client-sts for web identity) pointed at a loopback stand-in
// that verifies every request's SigV4 signature for real, then a real docker-registry that accepts the resulting
// `AWS:<password>` Basic credentials (htpasswd), or trades them for bearer tokens (token auth).
import { after, before, beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac, randomBytes } from "node:crypto";
import http from "node:http";
import { promises as fsp } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { InvalidDefinitionError } from "../../src/errors.js";
import { credentialsFor } from "../../src/registry/credentials.js";
import { clearEcrCache, ecrCredentials, parseEcrHost } from "../../src/registry/ecr.js";
import { RegistryAuthError, RegistryError } from "../../src/registry/errors.js";
import { pullImage, resolveImage } from "../../src/registry/pull.js";
import { LocalStore } from "../../src/store/local.js";
import { canonicalRequest, signingKey, startAwsStandin, type AwsStandin } from "../support/aws-standin.js";
import { createTestLayout, startRegistry, type TestLayout, type TestRegistry } from "../support/registry.js";

const ACCESS_KEY_ID = "AKIASTRATATEST000001";
const SECRET_ACCESS_KEY = `strataTestSecret/${randomBytes(12).toString("base64url")}`;
const ROLE_ARN = "arn:aws:iam::123456789012:role/strata-builder";
const WEB_TOKEN = `eyJhbGciOiJSUzI1NiJ9.${randomBytes(24).toString("base64url")}.${randomBytes(32).toString("base64url")}`;

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

/** Asserts the message names no secret value. */
function assertNoSecrets(e: unknown, ...secrets: string[]): void {
  const msg = e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : String(e);
  for (const s of [SECRET_ACCESS_KEY, WEB_TOKEN, ...secrets])
    assert.ok(!msg.includes(s), `message leaks a secret value: ${msg}`);
}

describe("ECR logins against a SigV4-verifying stand-in and a real registry", () => {
  let aws: AwsStandin;
  let reg: TestRegistry;
  let layout: TestLayout;
  const staticSecret = (): Record<string, string> => ({
    AWS_ACCESS_KEY_ID: ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
    AWS_REGION: "us-east-1",
  });

  before(async () => {
    aws = await startAwsStandin({
      region: "us-east-1",
      keys: { [ACCESS_KEY_ID]: { secretAccessKey: SECRET_ACCESS_KEY } },
      roles: { [ROLE_ARN]: WEB_TOKEN },
    });
    // bcrypt looks at the first 72 bytes only; the stand-in's passwords are 32 hex characters.
    reg = await startRegistry({ auth: "htpasswd", users: { AWS: aws.password } });
    layout = await createTestLayout();
    await layout.build("base", { layers: [{ "etc/ecr.txt": "from ecr\n" }, { "etc/second.txt": "second\n" }] });
    await layout.push("base", `${reg.host}/team/base:7`, { creds: `AWS:${aws.password}` });
  });
  beforeEach(() => clearEcrCache());
  after(async () => {
    await reg?.stop();
    await aws?.close();
    await layout?.cleanup();
    for (const d of tempDirs) await fsp.rm(d, { recursive: true, force: true });
  });

  test("static keys: GetAuthorizationToken is signed and verified, the registry accepts AWS:<password>, the token is cached", async () => {
    // Without credentials the registry refuses.
    await assert.rejects(resolveImage(`${reg.host}/team/base:7`, { dockerConfig: false }), RegistryAuthError);

    const provider = credentialsFor("ecr", staticSecret(), { ecr: { env: { STRATA_ECR_ENDPOINT: aws.endpoint } } });
    assert.ok(provider);
    const dir = await tempDir("strata-ecr-store-");
    const store = await LocalStore.open(dir);
    const before = aws.tokensIssued;
    const pulled = await pullImage(`${reg.host}/team/base:7`, store, { credentials: provider, dockerConfig: false });
    assert.equal(pulled.layers.length, 2);
    assert.equal(
      await fsp.readFile(path.join(await store.layerDir(pulled.layers[0]!), "etc/ecr.txt"), "utf8"),
      "from ecr\n",
    );
    assert.equal(aws.tokensIssued, before + 1);
    const last = aws.requests.at(-1)!;
    assert.deepEqual(
      [last.service, last.action, last.accessKeyId, last.status],
      ["ecr", "GetAuthorizationToken", ACCESS_KEY_ID, 200],
    );

    // The credentials the registry got: AWS + the stand-in's password.
    const creds = await provider(reg.host);
    assert.equal(creds?.username, "AWS");
    assert.equal(creds?.password, aws.password);
    assert.match(creds?.source ?? "", /ECR login token .*AWS_ACCESS_KEY_ID\/AWS_SECRET_ACCESS_KEY/);
    assert.ok(!(creds?.source ?? "").includes(SECRET_ACCESS_KEY));

    // Cached: another resolve (even through a new provider for the same identity) asks AWS nothing.
    const again = await resolveImage(`${reg.host}/team/base:7`, {
      credentials: ecrCredentials(staticSecret(), { endpoint: aws.endpoint }),
      dockerConfig: false,
    });
    assert.equal(again.manifestDigest, pulled.manifestDigest);
    assert.equal(aws.tokensIssued, before + 1);
  });

  test("a wrong secret key: the stand-in rejects the signature and the error names the variables, not the values", async () => {
    const wrong = `${SECRET_ACCESS_KEY}-but-wrong`;
    const provider = ecrCredentials({ ...staticSecret(), AWS_SECRET_ACCESS_KEY: wrong }, { endpoint: aws.endpoint });
    const err = await resolveImage(`${reg.host}/team/base:7`, { credentials: provider, dockerConfig: false }).then(
      () => assert.fail("expected the login to fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof RegistryAuthError, String(err));
    assert.match(err.message, /InvalidSignatureException/);
    assert.match(err.message, /AWS_SECRET_ACCESS_KEY is not the secret key of AWS_ACCESS_KEY_ID/);
    assert.match(err.message, new RegExp(`ECR login for ${reg.host.replace(/\./g, "\\.")}`));
    assertNoSecrets(err, wrong);
    const last = aws.requests.at(-1)!;
    assert.deepEqual([last.service, last.status, last.error], ["ecr", 403, "InvalidSignatureException"]);
  });

  test("AWS errors are translated: unknown key, AccessDenied, expired session token, unreachable endpoint", async () => {
    const unknown = ecrCredentials(
      { ...staticSecret(), AWS_ACCESS_KEY_ID: "AKIAUNKNOWN000000000" },
      { endpoint: aws.endpoint },
    );
    await assert.rejects(
      unknown(reg.host),
      (e: unknown) =>
        e instanceof RegistryAuthError && /does not recognise the access key in AWS_ACCESS_KEY_ID/.test(e.message),
    );

    const deniedId = "AKIADENIED0000000001";
    aws.keys[deniedId] = { secretAccessKey: "denied-secret-key-1234", denied: true };
    const denied = ecrCredentials(
      { ...staticSecret(), AWS_ACCESS_KEY_ID: deniedId, AWS_SECRET_ACCESS_KEY: "denied-secret-key-1234" },
      { endpoint: aws.endpoint },
    );
    await assert.rejects(denied(reg.host), (e: unknown) => {
      assert.ok(e instanceof RegistryAuthError);
      assert.match(e.message, /AccessDeniedException/);
      assert.match(e.message, /may not call ecr:GetAuthorizationToken/);
      assertNoSecrets(e, "denied-secret-key-1234");
      return true;
    });

    const expiredId = "ASIAEXPIRED000000001";
    const sessionToken = randomBytes(40).toString("base64");
    aws.keys[expiredId] = { secretAccessKey: "expired-secret-key-1234", sessionToken, expiresAt: Date.now() - 1000 };
    const expired = ecrCredentials(
      {
        ...staticSecret(),
        AWS_ACCESS_KEY_ID: expiredId,
        AWS_SECRET_ACCESS_KEY: "expired-secret-key-1234",
        AWS_SESSION_TOKEN: sessionToken,
      },
      { endpoint: aws.endpoint },
    );
    await assert.rejects(expired(reg.host), (e: unknown) => {
      assert.ok(e instanceof RegistryAuthError);
      assert.match(e.message, /ExpiredTokenException/);
      assert.match(
        e.message,
        /temporary credentials have expired; provide fresh AWS_ACCESS_KEY_ID\/AWS_SECRET_ACCESS_KEY\/AWS_SESSION_TOKEN/,
      );
      assertNoSecrets(e, "expired-secret-key-1234", sessionToken);
      return true;
    });
    // A wrong session token with the right (temporary) key is refused too.
    const badSession = ecrCredentials(
      {
        ...staticSecret(),
        AWS_ACCESS_KEY_ID: expiredId,
        AWS_SECRET_ACCESS_KEY: "expired-secret-key-1234",
        AWS_SESSION_TOKEN: "not-the-session-token",
      },
      { endpoint: aws.endpoint },
    );
    await assert.rejects(badSession(reg.host), /AWS_SESSION_TOKEN does not belong to it/);

    const port = await closedPort();
    const unreachable = ecrCredentials(staticSecret(), { endpoint: `http://127.0.0.1:${port}`, maxAttempts: 1 });
    await assert.rejects(unreachable(reg.host), (e: unknown) => {
      assert.ok(e instanceof RegistryError && !(e instanceof RegistryAuthError));
      assert.equal(e.temporary, true);
      assert.match(e.message, /could not reach http:\/\/127\.0\.0\.1:\d+\/ \(ECONNREFUSED\)/);
      assertNoSecrets(e);
      return true;
    });
  });

  test("token cache: used until expiresAt minus the margin, then refreshed; a failed refresh falls back to a still-valid token", async () => {
    // A token-auth registry whose user table we can rotate, so a stale ECR password would really be refused.
    const users: Record<string, string> = { AWS: aws.password };
    const original = aws.password;
    const treg = await startRegistry({ auth: "token", users });
    try {
      await layout.push("base", `${treg.host}/team/base:7`, { creds: `AWS:${aws.password}` });
      const t0 = Date.now();
      let clock = t0;
      const opts = { endpoint: aws.endpoint, now: () => clock };
      const provider = ecrCredentials(staticSecret(), opts);
      const start = aws.tokensIssued;
      await resolveImage(`${treg.host}/team/base:7`, { credentials: provider, dockerConfig: false });
      assert.equal(aws.tokensIssued, start + 1);

      // 11 h later: still within 12 h − 5 min → cached.
      clock = t0 + 11 * 3600_000;
      assert.equal((await provider(treg.host))?.password, aws.password);
      assert.equal(aws.tokensIssued, start + 1);

      // Rotate the password at "AWS" and at the registry; past the refresh point a new token is fetched and accepted.
      const oldPassword = aws.password;
      aws.password = randomBytes(16).toString("hex");
      users["AWS"] = aws.password;
      clock = t0 + 12 * 3600_000 - 4 * 60_000;
      await resolveImage(`${treg.host}/team/base:7`, {
        credentials: ecrCredentials(staticSecret(), opts),
        dockerConfig: false,
      });
      assert.equal(aws.tokensIssued, start + 2);
      assert.notEqual((await provider(treg.host))?.password, oldPassword);

      // Past the refresh point again, AWS now refuses: the cached token is still valid, so it is used.
      const live = aws.tokensIssued;
      aws.keys[ACCESS_KEY_ID]!.denied = true;
      try {
        clock = Date.now() + 12 * 3600_000 - 30_000; // past the refresh point, before the stand-in's expiresAt
        assert.equal((await provider(treg.host))?.password, aws.password);
        assert.equal(aws.requests.at(-1)?.error, "AccessDeniedException", "a refresh was attempted");
        // Once it has expired, the failure surfaces.
        clock = Date.now() + 13 * 3600_000;
        await assert.rejects(provider(treg.host), /AccessDeniedException/);
      } finally {
        aws.keys[ACCESS_KEY_ID]!.denied = false;
      }
      assert.equal(aws.tokensIssued, live);
    } finally {
      aws.password = original; // the htpasswd registry of the other tests knows this one
      await treg.stop();
    }
  });

  test("web identity: STS AssumeRoleWithWebIdentity with a token file, then ECR signed with the temporary keys", async () => {
    const dir = await tempDir("strata-ecr-web-");
    const tokenFile = path.join(dir, "token");
    await fsp.writeFile(tokenFile, `${WEB_TOKEN}\n`);
    const env = { STRATA_ECR_ENDPOINT: aws.endpoint, STRATA_STS_ENDPOINT: aws.endpoint };
    const secret = {
      AWS_ROLE_ARN: ROLE_ARN,
      AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile,
      AWS_REGION: "us-east-1",
      AWS_ROLE_SESSION_NAME: "strata-test",
    };
    const provider = credentialsFor("ecr", secret, { ecr: { env } })!;
    const n = aws.requests.length;
    const store = await LocalStore.open(await tempDir("strata-ecr-store-"));
    const pulled = await pullImage(`${reg.host}/team/base:7`, store, { credentials: provider, dockerConfig: false });
    assert.equal(pulled.layers.length, 2);
    const calls = aws.requests.slice(n);
    assert.equal(calls.length, 2, JSON.stringify(calls));
    assert.deepEqual(
      [calls[0]!.service, calls[0]!.action, calls[0]!.status, calls[0]!.roleSessionName],
      ["sts", "AssumeRoleWithWebIdentity", 200, "strata-test"],
    );
    assert.deepEqual([calls[1]!.service, calls[1]!.status], ["ecr", 200]);
    assert.match(calls[1]!.accessKeyId ?? "", /^ASIA/, "ECR was signed with the role's temporary key");
    assert.match((await provider(reg.host))?.source ?? "", /AWS_ROLE_ARN .*AWS_WEB_IDENTITY_TOKEN_FILE/);

    // The inline token form works too (a fresh identity: new STS session).
    clearEcrCache();
    const inline = ecrCredentials(
      { AWS_ROLE_ARN: ROLE_ARN, AWS_WEB_IDENTITY_TOKEN: WEB_TOKEN, AWS_REGION: "us-east-1" },
      { endpoint: aws.endpoint, stsEndpoint: aws.endpoint },
    );
    assert.equal((await inline(reg.host))?.password, aws.password);

    // A token STS does not accept, a role it does not trust, a missing file.
    await fsp.writeFile(tokenFile, "eyJub3QiOiJ0aGlzIn0.forged.token\n");
    clearEcrCache();
    await assert.rejects(credentialsFor("ecr", secret, { ecr: { env } })!(reg.host), (e: unknown) => {
      assert.ok(e instanceof RegistryAuthError);
      assert.match(e.message, /InvalidIdentityToken/);
      assert.match(e.message, /STS did not accept the web identity token from AWS_WEB_IDENTITY_TOKEN_FILE/);
      assertNoSecrets(e, "forged");
      return true;
    });
    await assert.rejects(
      ecrCredentials({ ...secret, AWS_ROLE_ARN: "arn:aws:iam::123456789012:role/other" }, { env })(reg.host),
      (e: unknown) =>
        e instanceof RegistryAuthError &&
        /assume the role in AWS_ROLE_ARN; check the role's trust policy/.test(e.message),
    );
    await assert.rejects(
      ecrCredentials({ ...secret, AWS_WEB_IDENTITY_TOKEN_FILE: path.join(dir, "missing") }, { env })(reg.host),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /AWS_WEB_IDENTITY_TOKEN_FILE names .*missing, which cannot be read \(ENOENT\)/.test(e.message),
    );
  });

  test("missing or inconsistent variables are named before any AWS call", () => {
    const n = aws.requests.length;
    assert.throws(
      () => ecrCredentials({}),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY .* or AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE/.test(
          e.message,
        ),
    );
    assert.throws(
      () => ecrCredentials({ AWS_ACCESS_KEY_ID: ACCESS_KEY_ID }),
      /has AWS_ACCESS_KEY_ID but not AWS_SECRET_ACCESS_KEY/,
    );
    assert.throws(
      () => ecrCredentials({ AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY }),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /has AWS_SECRET_ACCESS_KEY but not AWS_ACCESS_KEY_ID/.test(e.message) &&
        !e.message.includes(SECRET_ACCESS_KEY),
    );
    assert.throws(
      () => ecrCredentials({ AWS_ROLE_ARN: ROLE_ARN }),
      /has AWS_ROLE_ARN but neither AWS_WEB_IDENTITY_TOKEN_FILE nor AWS_WEB_IDENTITY_TOKEN/,
    );
    assert.throws(
      () => ecrCredentials({ AWS_WEB_IDENTITY_TOKEN: WEB_TOKEN }),
      /has AWS_WEB_IDENTITY_TOKEN but not AWS_ROLE_ARN/,
    );
    assert.throws(
      () => ecrCredentials({ AWS_ROLE_ARN: "not-an-arn", AWS_WEB_IDENTITY_TOKEN: WEB_TOKEN }),
      /AWS_ROLE_ARN is not an IAM role ARN/,
    );
    assert.throws(
      () => credentialsFor("ecr", { REGISTRY_USERNAME: "u", REGISTRY_PASSWORD: "p" }),
      InvalidDefinitionError,
    );
    // On the build service, a token file would be the operator's (its own service-account token): refused.
    const fileSecret = { AWS_ROLE_ARN: ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE: "/var/run/secrets/token" };
    assert.throws(
      () => ecrCredentials(fileSecret, { tokenFiles: false }),
      /AWS_WEB_IDENTITY_TOKEN_FILE names a file on the build server, which would be the operator's.*AWS_WEB_IDENTITY_TOKEN/,
    );
    assert.ok(ecrCredentials(fileSecret), "a local build reads the user's own file");
    assert.ok(ecrCredentials({ ...fileSecret, AWS_WEB_IDENTITY_TOKEN: WEB_TOKEN }, { tokenFiles: false }));
    assert.equal(aws.requests.length, n);
  });

  test("the region comes from an ECR host name, else AWS_REGION (named when missing)", async () => {
    assert.deepEqual(parseEcrHost("123456789012.dkr.ecr.eu-west-1.amazonaws.com"), {
      accountId: "123456789012",
      fips: false,
      region: "eu-west-1",
    });
    assert.deepEqual(parseEcrHost("123456789012.dkr-ecr-fips.us-gov-west-1.amazonaws.com:443"), {
      accountId: "123456789012",
      fips: true,
      region: "us-gov-west-1",
    });
    assert.deepEqual(parseEcrHost("123456789012.dkr.ecr-fips.us-east-2.amazonaws.com"), {
      accountId: "123456789012",
      fips: true,
      region: "us-east-2",
    });
    assert.deepEqual(parseEcrHost("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"), {
      accountId: "123456789012",
      fips: false,
      region: "cn-north-1",
    });
    assert.equal(parseEcrHost("registry.example.com"), undefined);
    const noRegion = ecrCredentials(
      { AWS_ACCESS_KEY_ID: ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY },
      { endpoint: aws.endpoint },
    );
    await assert.rejects(
      noRegion(reg.host),
      (e: unknown) => e instanceof InvalidDefinitionError && /needs AWS_REGION/.test(e.message),
    );
    // An ECR host's own region wins over AWS_REGION; the stand-in only answers us-east-1, so eu-west-1 is refused
    // (its credential scope is checked) — proof the host's region was used to sign.
    const mismatched = ecrCredentials(staticSecret(), { endpoint: aws.endpoint, maxAttempts: 1 });
    await assert.rejects(
      mismatched("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
      /InvalidSignatureException.*scoped to a valid region/,
    );
    assert.equal((await mismatched("123456789012.dkr.ecr.us-east-1.amazonaws.com"))?.username, "AWS");
  });

  test("the stand-in's SigV4 verifier: AWS's published test vectors, and a body changed after signing is refused", async () => {
    const sha = (d: string): string => createHash("sha256").update(d).digest("hex");
    const sig = (url: string): string => {
      const canonical = canonicalRequest(
        "GET",
        url,
        { host: "example.amazonaws.com", "x-amz-date": "20150830T123600Z" },
        ["host", "x-amz-date"],
        sha(""),
      );
      const toSign = [
        "AWS4-HMAC-SHA256",
        "20150830T123600Z",
        "20150830/us-east-1/service/aws4_request",
        sha(canonical),
      ].join("\n");
      return createHmac(
        "sha256",
        signingKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "service"),
      )
        .update(toSign)
        .digest("hex");
    };
    assert.equal(sig("/"), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"); // get-vanilla
    assert.equal(
      sig("/?Param2=value2&Param1=value1"),
      "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ); // get-vanilla-query-order-key-case

    // A hand-signed GetAuthorizationToken: accepted as signed, refused once the body differs from what was signed.
    const host = new URL(aws.endpoint).host;
    const amzDate = new Date()
      .toISOString()
      .replace(/[-:]/g, "")
      .replace(/\.\d{3}/, "");
    const signed = "{}";
    const headers: Record<string, string> = {
      host,
      "x-amz-date": amzDate,
      "x-amz-target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
      "content-type": "application/x-amz-json-1.1",
    };
    const names = Object.keys(headers).sort();
    const canonical = canonicalRequest("POST", "/", headers, names, sha(signed));
    const scope = `${amzDate.slice(0, 8)}/us-east-1/ecr/aws4_request`;
    const signature = createHmac("sha256", signingKey(SECRET_ACCESS_KEY, amzDate.slice(0, 8), "us-east-1", "ecr"))
      .update(["AWS4-HMAC-SHA256", amzDate, scope, sha(canonical)].join("\n"))
      .digest("hex");
    const authorization = `AWS4-HMAC-SHA256 Credential=${ACCESS_KEY_ID}/${scope}, SignedHeaders=${names.join(";")}, Signature=${signature}`;
    const send = (body: string): Promise<{ status: number; text: string }> =>
      new Promise((resolve, reject) => {
        const req = http.request(
          `${aws.endpoint}/`,
          { method: "POST", headers: { ...headers, authorization, "content-length": Buffer.byteLength(body) } },
          (res) => {
            let text = "";
            res.on("data", (c: Buffer) => (text += c.toString()));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    const ok = await send(signed);
    assert.equal(ok.status, 200, ok.text);
    assert.match(ok.text, /authorizationToken/);
    const tampered = await send('{"registryIds":["210987654321"]}');
    assert.equal(tampered.status, 403);
    assert.match(tampered.text, /InvalidSignatureException/);
  });

  test("credentialsFor: registry logins keep the client's own chain", () => {
    assert.equal(credentialsFor("registry", { REGISTRY_USERNAME: "u", REGISTRY_PASSWORD: "p" }), undefined);
  });
});
