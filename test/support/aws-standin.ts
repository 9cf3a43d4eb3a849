// A loopback stand-in for the two AWS APIs an ECR login uses, strict where it matters:
//  - ECR `GetAuthorizationToken` (JSON 1.1: POST /, `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken`),
//    answered only when the request's AWS Signature Version 4 verifies against the secret key of a known access key
//    (canonical request, string to sign and signing key derived here with node:crypto), the credential scope names
//    this region and service `ecr`, the timestamp is within 15 minutes, and a temporary key's session token matches.
//  - STS `AssumeRoleWithWebIdentity` (query protocol, form body, XML answer). Like AWS it is unsigned; the web
//    identity token must equal the one registered for the role. It mints temporary keys (ASIA…, secret, session
//    token, expiry) that the ECR side then verifies signatures against.
// Errors use AWS's shapes (`__type` for JSON 1.1, `<ErrorResponse>` for query) so the SDK parses them as it would
// AWS's own.

import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import http from "node:http";

export interface AwsKey {
  secretAccessKey: string;
  sessionToken?: string;
  /** ms since the epoch; past it the key's requests are refused with ExpiredTokenException. */
  expiresAt?: number;
  /** Refuse ecr:GetAuthorizationToken for this key with AccessDeniedException. */
  denied?: boolean;
}

export interface AwsStandinRequest {
  service: "ecr" | "sts" | "unknown";
  action: string;
  /** Access key id from the Authorization header, if any. */
  accessKeyId: string | undefined;
  status: number;
  /** AWS error code when refused. */
  error?: string;
  /** STS: the role session name asked for. */
  roleSessionName?: string;
}

export interface AwsStandinOptions {
  region?: string;
  /** access key id → key */
  keys?: Record<string, AwsKey>;
  /** role ARN → the web identity token STS accepts for it */
  roles?: Record<string, string>;
  /** Password inside the ECR authorization token (`AWS:<password>`). */
  password?: string;
  /** Lifetime of ECR tokens in seconds (default 12 h). */
  tokenSeconds?: number;
  /** Lifetime of STS sessions in seconds (default 3600). */
  sessionSeconds?: number;
}

export interface AwsStandin {
  /** `http://127.0.0.1:<port>`: both the ECR and the STS endpoint. */
  endpoint: string;
  region: string;
  keys: Record<string, AwsKey>;
  roles: Record<string, string>;
  /** Current ECR password; change it to rotate (the next token carries the new one). */
  password: string;
  tokenSeconds: number;
  sessionSeconds: number;
  requests: AwsStandinRequest[];
  /** Number of ECR tokens handed out. */
  readonly tokensIssued: number;
  close(): Promise<void>;
}

const ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921.";
const MAX_SKEW_MS = 15 * 60_000;

/** RFC 3986 encoding as SigV4 wants it (everything but unreserved characters). */
function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, "%20"));
  } catch {
    return s;
  }
}

function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

export function signingKey(secretAccessKey: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date), region), service), "aws4_request");
}

interface ParsedAuthorization {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

function parseAuthorization(header: string): ParsedAuthorization | undefined {
  const m = /^AWS4-HMAC-SHA256\s+(.*)$/.exec(header.trim());
  if (!m) return undefined;
  const fields: Record<string, string> = {};
  for (const part of m[1]!.split(",")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  const cred = fields["Credential"]?.split("/");
  if (cred?.length !== 5 || cred[4] !== "aws4_request" || !fields["SignedHeaders"] || !fields["Signature"])
    return undefined;
  return {
    accessKeyId: cred[0]!,
    date: cred[1]!,
    region: cred[2]!,
    service: cred[3]!,
    signedHeaders: fields["SignedHeaders"].split(";"),
    signature: fields["Signature"],
  };
}

/** The SigV4 canonical request for what arrived on the wire (non-S3 rules: the path is URI-encoded once more). */
export function canonicalRequest(
  method: string,
  rawUrl: string,
  headers: http.IncomingHttpHeaders,
  signedHeaders: readonly string[],
  payloadHash: string,
): string {
  const q = rawUrl.indexOf("?");
  const rawPath = q >= 0 ? rawUrl.slice(0, q) : rawUrl;
  const rawQuery = q >= 0 ? rawUrl.slice(q + 1) : "";
  const canonicalUri = rawPath.split("/").map(uriEncode).join("/") || "/";
  const pairs = rawQuery
    .split("&")
    .filter((p) => p !== "")
    .map((p) => {
      const eq = p.indexOf("=");
      const k = eq >= 0 ? p.slice(0, eq) : p;
      const v = eq >= 0 ? p.slice(eq + 1) : "";
      return [uriEncode(safeDecode(k)), uriEncode(safeDecode(v))] as const;
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const canonicalQuery = pairs.map(([k, v]) => `${k}=${v}`).join("&");
  const canonicalHeaders = signedHeaders
    .map((name) => {
      const raw = headers[name];
      const value = Array.isArray(raw) ? raw.join(",") : (raw ?? "");
      return `${name}:${value.trim().replace(/\s+/g, " ")}\n`;
    })
    .join("");
  return [method, canonicalUri, canonicalQuery, canonicalHeaders, signedHeaders.join(";"), payloadHash].join("\n");
}

type Verdict =
  | { ok: true; accessKeyId: string; key: AwsKey }
  | { ok: false; status: number; code: string; message: string; accessKeyId?: string };

/** Verifies a request's SigV4 signature for `service` in `region`. */
function verifySigV4(
  req: http.IncomingMessage,
  body: Buffer,
  keys: Record<string, AwsKey>,
  region: string,
  service: string,
): Verdict {
  const header = req.headers.authorization;
  if (!header)
    return {
      ok: false,
      status: 403,
      code: "MissingAuthenticationTokenException",
      message: "Missing Authentication Token",
    };
  const auth = parseAuthorization(header);
  if (!auth)
    return {
      ok: false,
      status: 403,
      code: "IncompleteSignatureException",
      message: "Authorization header requires Credential, SignedHeaders and Signature parameters",
    };
  const key = Object.hasOwn(keys, auth.accessKeyId) ? keys[auth.accessKeyId] : undefined;
  if (!key)
    return {
      ok: false,
      status: 403,
      code: "UnrecognizedClientException",
      message: "The security token included in the request is invalid.",
      accessKeyId: auth.accessKeyId,
    };
  const fail = (status: number, code: string, message: string): Verdict => ({
    ok: false,
    status,
    code,
    message,
    accessKeyId: auth.accessKeyId,
  });
  if (auth.region !== region || auth.service !== service)
    return fail(
      403,
      "InvalidSignatureException",
      `Credential should be scoped to a valid region and service: expected ${region}/${service}, got ${auth.region}/${auth.service}.`,
    );
  const signed = new Set(auth.signedHeaders);
  if (!signed.has("host"))
    return fail(403, "InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization.");
  const amzDate = req.headers["x-amz-date"];
  if (typeof amzDate !== "string" || !signed.has("x-amz-date") || !/^\d{8}T\d{6}Z$/.test(amzDate))
    return fail(
      403,
      "IncompleteSignatureException",
      "Authorization header requires existence of a valid, signed 'X-Amz-Date' header.",
    );
  if (amzDate.slice(0, 8) !== auth.date)
    return fail(
      403,
      "InvalidSignatureException",
      "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.",
    );
  const t = Date.parse(
    `${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`,
  );
  if (!Number.isFinite(t) || Math.abs(Date.now() - t) > MAX_SKEW_MS)
    return fail(
      403,
      "InvalidSignatureException",
      "Signature expired: the request time is more than 15 minutes from the server's time.",
    );
  const payloadHash = sha256Hex(body);
  const claimed = req.headers["x-amz-content-sha256"];
  if (typeof claimed === "string" && claimed !== "UNSIGNED-PAYLOAD" && claimed !== payloadHash)
    return fail(
      400,
      "XAmzContentSHA256Mismatch",
      "The provided 'x-amz-content-sha256' header does not match what was computed.",
    );
  const canonical = canonicalRequest(req.method ?? "GET", req.url ?? "/", req.headers, auth.signedHeaders, payloadHash);
  const scope = `${auth.date}/${auth.region}/${auth.service}/aws4_request`;
  const stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256Hex(canonical)].join("\n");
  const expected = createHmac("sha256", signingKey(key.secretAccessKey, auth.date, auth.region, auth.service))
    .update(stringToSign, "utf8")
    .digest();
  const given = /^[0-9a-f]{64}$/.test(auth.signature) ? Buffer.from(auth.signature, "hex") : Buffer.alloc(0);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return fail(
      403,
      "InvalidSignatureException",
      "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    );
  }
  // Only now, with a verified signature, look at the session.
  if (key.sessionToken !== undefined) {
    const token = req.headers["x-amz-security-token"];
    if (typeof token !== "string" || !signed.has("x-amz-security-token") || token !== key.sessionToken)
      return fail(403, "UnrecognizedClientException", "The security token included in the request is invalid.");
  }
  if (key.expiresAt !== undefined && Date.now() >= key.expiresAt)
    return fail(403, "ExpiredTokenException", "The security token included in the request is expired");
  return { ok: true, accessKeyId: auth.accessKeyId, key };
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

export async function startAwsStandin(opts: AwsStandinOptions = {}): Promise<AwsStandin> {
  const state = {
    region: opts.region ?? "us-east-1",
    keys: opts.keys ?? {},
    roles: opts.roles ?? {},
    password: opts.password ?? randomBytes(16).toString("hex"),
    tokenSeconds: opts.tokenSeconds ?? 12 * 3600,
    sessionSeconds: opts.sessionSeconds ?? 3600,
    tokensIssued: 0,
  };
  const requests: AwsStandinRequest[] = [];

  const jsonReply = (res: http.ServerResponse, status: number, body: unknown, errorType?: string): void => {
    const text = JSON.stringify(body);
    const headers: Record<string, string | number> = {
      "content-type": "application/x-amz-json-1.1",
      "content-length": Buffer.byteLength(text),
      "x-amzn-requestid": randomUUID(),
    };
    if (errorType) headers["x-amzn-errortype"] = errorType;
    res.writeHead(status, headers).end(text);
  };
  const xmlReply = (res: http.ServerResponse, status: number, text: string): void => {
    res
      .writeHead(status, {
        "content-type": "text/xml",
        "content-length": Buffer.byteLength(text),
        "x-amzn-requestid": randomUUID(),
      })
      .end(text);
  };
  const stsError = (res: http.ServerResponse, status: number, code: string, message: string): void => {
    xmlReply(
      res,
      status,
      `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error><RequestId>${randomUUID()}</RequestId></ErrorResponse>`,
    );
  };

  const handleEcr = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, target: string): void => {
    const action = target.slice(ECR_TARGET_PREFIX.length);
    const verdict = verifySigV4(req, body, state.keys, state.region, "ecr");
    if (!verdict.ok) {
      requests.push({
        service: "ecr",
        action,
        accessKeyId: verdict.accessKeyId,
        status: verdict.status,
        error: verdict.code,
      });
      jsonReply(res, verdict.status, { __type: verdict.code, message: verdict.message }, verdict.code);
      return;
    }
    if (action !== "GetAuthorizationToken") {
      requests.push({
        service: "ecr",
        action,
        accessKeyId: verdict.accessKeyId,
        status: 400,
        error: "UnknownOperationException",
      });
      jsonReply(res, 400, { __type: "UnknownOperationException" }, "UnknownOperationException");
      return;
    }
    if (verdict.key.denied) {
      requests.push({
        service: "ecr",
        action,
        accessKeyId: verdict.accessKeyId,
        status: 400,
        error: "AccessDeniedException",
      });
      const message =
        "User: arn:aws:iam::123456789012:user/strata-test is not authorized to perform: ecr:GetAuthorizationToken on resource: * because no identity-based policy allows the ecr:GetAuthorizationToken action";
      jsonReply(res, 400, { __type: "AccessDeniedException", message }, "AccessDeniedException");
      return;
    }
    state.tokensIssued++;
    requests.push({ service: "ecr", action, accessKeyId: verdict.accessKeyId, status: 200 });
    const expiresAt = Math.floor(Date.now() / 1000) + state.tokenSeconds;
    jsonReply(res, 200, {
      authorizationData: [
        {
          authorizationToken: Buffer.from(`AWS:${state.password}`).toString("base64"),
          expiresAt,
          proxyEndpoint: `https://123456789012.dkr.ecr.${state.region}.amazonaws.com`,
        },
      ],
    });
  };

  const handleSts = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    params: URLSearchParams,
    body: Buffer,
  ): void => {
    const action = params.get("Action") ?? "";
    const record = (status: number, error?: string): void => {
      requests.push({
        service: "sts",
        action,
        accessKeyId: undefined,
        status,
        ...(error ? { error } : {}),
        ...(params.get("RoleSessionName") ? { roleSessionName: params.get("RoleSessionName")! } : {}),
      });
    };
    if (req.headers.authorization !== undefined) {
      // AssumeRoleWithWebIdentity is unsigned; a signed request must still verify.
      const verdict = verifySigV4(req, body, state.keys, state.region, "sts");
      if (!verdict.ok) {
        record(verdict.status, verdict.code);
        stsError(res, verdict.status, verdict.code, verdict.message);
        return;
      }
    }
    if (action !== "AssumeRoleWithWebIdentity") {
      record(400, "InvalidAction");
      stsError(
        res,
        400,
        "InvalidAction",
        `Could not find operation ${action} for version ${params.get("Version") ?? ""}`,
      );
      return;
    }
    const roleArn = params.get("RoleArn") ?? "";
    const sessionName = params.get("RoleSessionName") ?? "";
    const token = params.get("WebIdentityToken") ?? "";
    if (!roleArn || !sessionName || !token) {
      record(400, "ValidationError");
      stsError(res, 400, "ValidationError", "RoleArn, RoleSessionName and WebIdentityToken are required");
      return;
    }
    const expected = Object.hasOwn(state.roles, roleArn) ? state.roles[roleArn]! : undefined;
    if (expected === undefined) {
      record(403, "AccessDenied");
      stsError(res, 403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity");
      return;
    }
    const a = Buffer.from(token);
    const b = Buffer.from(expected);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      record(400, "InvalidIdentityToken");
      stsError(
        res,
        400,
        "InvalidIdentityToken",
        "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements",
      );
      return;
    }
    const accessKeyId = `ASIA${randomBytes(8).toString("hex").toUpperCase()}`;
    const secretAccessKey = randomBytes(30).toString("base64");
    const sessionToken = randomBytes(96).toString("base64");
    const expiresAt = Date.now() + state.sessionSeconds * 1000;
    state.keys[accessKeyId] = { secretAccessKey, sessionToken, expiresAt };
    record(200);
    xmlReply(
      res,
      200,
      `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <AssumedRoleId>AROA${randomBytes(8).toString("hex").toUpperCase()}:${xmlEscape(sessionName)}</AssumedRoleId>
      <Arn>${xmlEscape(roleArn.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/"))}/${xmlEscape(sessionName)}</Arn>
    </AssumedRoleUser>
    <Provider>strata-test-oidc</Provider>
    <Credentials>
      <AccessKeyId>${accessKeyId}</AccessKeyId>
      <SecretAccessKey>${xmlEscape(secretAccessKey)}</SecretAccessKey>
      <SessionToken>${xmlEscape(sessionToken)}</SessionToken>
      <Expiration>${new Date(expiresAt).toISOString()}</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>system:serviceaccount:ci:builder</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>${randomUUID()}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`,
    );
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const target = req.headers["x-amz-target"];
      if (req.method === "POST" && typeof target === "string" && target.startsWith(ECR_TARGET_PREFIX)) {
        handleEcr(req, res, body, target);
        return;
      }
      const type = req.headers["content-type"] ?? "";
      if (req.method === "POST" && type.startsWith("application/x-www-form-urlencoded")) {
        handleSts(req, res, new URLSearchParams(body.toString("utf8")), body);
        return;
      }
      requests.push({ service: "unknown", action: `${req.method} ${req.url}`, accessKeyId: undefined, status: 404 });
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get region() {
      return state.region;
    },
    keys: state.keys,
    roles: state.roles,
    get password() {
      return state.password;
    },
    set password(v: string) {
      state.password = v;
    },
    get tokenSeconds() {
      return state.tokenSeconds;
    },
    set tokenSeconds(v: number) {
      state.tokenSeconds = v;
    },
    get sessionSeconds() {
      return state.sessionSeconds;
    },
    set sessionSeconds(v: number) {
      state.sessionSeconds = v;
    },
    requests,
    get tokensIssued() {
      return state.tokensIssued;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
