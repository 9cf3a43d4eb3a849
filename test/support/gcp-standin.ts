// A loopback stand-in for Google's OAuth token endpoint (the `token_uri` of a service-account key): it takes
// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`, verifies the JWT's RS256 signature
// with the public key registered for its `iss` (the service account's e-mail), checks the claims (aud = this
// endpoint, scope, iat/exp: not in the future, not expired, at most an hour), and answers
// `{access_token, expires_in, token_type}` — or Google's error shapes (`invalid_grant` "Invalid JWT Signature.", …).
// `serviceAccountJson` makes a key file pointing at the stand-in, with a fresh RSA key pair.

import { generateKeyPairSync, randomBytes, verify, type KeyObject } from "node:crypto";
import http from "node:http";

export interface GcpTokenRequest {
  /** The JWT's `iss`, if it could be read. */
  iss: string | undefined;
  status: number;
  /** OAuth error code when refused. */
  error?: string;
  /** The access token handed out. */
  accessToken?: string;
}

export interface GcpStandinOptions {
  /** Lifetime of access tokens, seconds (default 3599, like Google). */
  expiresIn?: number;
  /**
   * Makes each access token (default `ya29.<random>`); tests that need a fixed password for an htpasswd registry
   * return a constant.
   */
  issueToken?: () => string;
  /** Called with every access token handed out (e.g. to let a token-auth registry accept it). */
  onIssue?: (accessToken: string) => void;
}

export interface GcpStandin {
  /** `http://127.0.0.1:<port>/token` */
  tokenUri: string;
  /** client_email → public key */
  accounts: Map<string, KeyObject>;
  requests: GcpTokenRequest[];
  expiresIn: number;
  /** A new service account (RSA key pair) registered with the stand-in; returns its key-file JSON text. */
  serviceAccountJson(email?: string, extra?: Record<string, unknown>): string;
  close(): Promise<void>;
}

export const CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SKEW_S = 60;

/** A key-file JSON for `email` with `privateKey`, pointing at `tokenUri`. */
export function keyFileJson(
  email: string,
  privateKeyPem: string,
  tokenUri: string,
  extra: Record<string, unknown> = {},
): string {
  const project = email.split("@")[1]?.split(".")[0] ?? "strata-test";
  return JSON.stringify(
    {
      type: "service_account",
      project_id: project,
      private_key_id: randomBytes(20).toString("hex"),
      private_key: privateKeyPem,
      client_email: email,
      client_id: String(100000000000000000000n + BigInt(Math.floor(Math.random() * 1e9))),
      auth_uri: "https://accounts.google.com/o/oauth2/auth",
      token_uri: tokenUri,
      auth_provider_x509_cert_url: "https://www.googleapis.com/oauth2/v1/certs",
      client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(email)}`,
      universe_domain: "googleapis.com",
      ...extra,
    },
    null,
    2,
  );
}

export function newRsaKeyPair(): { privateKeyPem: string; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), publicKey };
}

function decodeJson(part: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(Buffer.from(part, "base64url").toString("utf8")) as unknown;
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export async function startGcpStandin(opts: GcpStandinOptions = {}): Promise<GcpStandin> {
  const accounts = new Map<string, KeyObject>();
  const requests: GcpTokenRequest[] = [];
  const state = { expiresIn: opts.expiresIn ?? 3599 };
  let tokenUri = "";

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const reply = (status: number, body: Record<string, unknown>): void => {
        const text = JSON.stringify(body);
        res
          .writeHead(status, {
            "content-type": "application/json; charset=utf-8",
            "content-length": Buffer.byteLength(text),
            "cache-control": "no-store",
          })
          .end(text);
      };
      let iss: string | undefined;
      const refuse = (status: number, error: string, description: string): void => {
        requests.push({ iss, status, error });
        reply(status, { error, error_description: description });
      };
      const url = new URL(req.url ?? "/", "http://localhost");
      if (url.pathname !== "/token" || req.method !== "POST") {
        requests.push({ iss, status: 404 });
        res.writeHead(404).end();
        return;
      }
      if (!(req.headers["content-type"] ?? "").startsWith("application/x-www-form-urlencoded"))
        return refuse(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded");
      const form = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
      if (form.get("grant_type") !== JWT_BEARER)
        return refuse(400, "unsupported_grant_type", `Invalid grant_type: ${form.get("grant_type") ?? ""}`);
      const assertion = form.get("assertion") ?? "";
      const parts = assertion.split(".");
      if (parts.length !== 3) return refuse(400, "invalid_grant", "Invalid JWT: not a compact JWS");
      const header = decodeJson(parts[0]!);
      const claims = decodeJson(parts[1]!);
      if (!header || !claims) return refuse(400, "invalid_grant", "Invalid JWT: unreadable header or claims");
      iss = typeof claims["iss"] === "string" ? claims["iss"] : undefined;
      if (header["alg"] !== "RS256") return refuse(400, "invalid_grant", "Invalid JWT: alg must be RS256");
      const publicKey = iss !== undefined ? accounts.get(iss) : undefined;
      if (!publicKey) return refuse(400, "invalid_grant", "Invalid grant: account not found");
      const signature = Buffer.from(parts[2]!, "base64url");
      if (!verify("sha256", Buffer.from(`${parts[0]}.${parts[1]}`), publicKey, signature))
        return refuse(400, "invalid_grant", "Invalid JWT Signature.");
      if (claims["aud"] !== tokenUri) return refuse(400, "invalid_grant", `Invalid JWT: audience must be ${tokenUri}`);
      const scopes = typeof claims["scope"] === "string" ? claims["scope"].split(" ") : [];
      if (!scopes.includes(CLOUD_PLATFORM_SCOPE))
        return refuse(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.");
      const now = Math.floor(Date.now() / 1000);
      const iat = claims["iat"];
      const exp = claims["exp"];
      if (
        typeof iat !== "number" ||
        typeof exp !== "number" ||
        iat > now + SKEW_S ||
        exp <= now - SKEW_S ||
        exp - iat > 3600
      ) {
        return refuse(
          400,
          "invalid_grant",
          "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
      }
      const accessToken = opts.issueToken ? opts.issueToken() : `ya29.${randomBytes(48).toString("base64url")}`;
      opts.onIssue?.(accessToken);
      requests.push({ iss, status: 200, accessToken });
      reply(200, { access_token: accessToken, expires_in: state.expiresIn, token_type: "Bearer" });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  tokenUri = `http://127.0.0.1:${port}/token`;
  return {
    tokenUri,
    accounts,
    requests,
    get expiresIn() {
      return state.expiresIn;
    },
    set expiresIn(v: number) {
      state.expiresIn = v;
    },
    serviceAccountJson(
      email = `builder-${randomBytes(3).toString("hex")}@strata-test.iam.gserviceaccount.com`,
      extra = {},
    ) {
      const { privateKeyPem, publicKey } = newRsaKeyPair();
      accounts.set(email, publicKey);
      return keyFileJson(email, privateKeyPem, tokenUri, extra);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
