/**
 * Google Artifact Registry / Container Registry logins from a service-account key (`SERVICE_ACCOUNT_JSON`).
 *
 *  - `access_token` mode (default): an RS256 JWT (`iss` = client_email, `scope` = cloud-platform, `aud` = the token
 *    URI, one hour) signed with the key's `private_key`, exchanged at the token URI for an OAuth access token
 *    (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`). The registry login is username `oauth2accesstoken`,
 *    password = the access token; the registry's own Bearer flow turns that into a registry token.
 *  - `json_key` mode: username `_json_key`, password = the key file's JSON text (long-lived; no token exchange).
 * Access tokens are cached in memory (per key and token URI) until their expiry less a margin; concurrent logins
 * share one exchange; a failed refresh falls back to a still-valid cached token.
 * The token URI is `opts.tokenUri`, else `STRATA_GCP_TOKEN_URI`, else the key's `token_uri`, else Google's; it must be
 * https unless it is on loopback. Messages name the variable and the service account's e-mail, never key material
 * or tokens.
 */
import { createHash, createPrivateKey, sign, type KeyObject } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { InvalidDefinitionError } from "../errors.js";
import type { CredentialProvider, RegistryCredentials } from "./auth.js";
import { RegistryAuthError, RegistryError } from "./errors.js";
import { defaultFetchPolicy, policyRefusal, type FetchPolicy } from "../net/fetch-policy.js";

export const GCP_SECRET_VAR = "SERVICE_ACCOUNT_JSON";
export const GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token";
export const GCP_SCOPE = "https://www.googleapis.com/auth/cloud-platform";
export const JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/** The registry username that carries an OAuth access token as its password. */
export const GCP_ACCESS_TOKEN_USER = "oauth2accesstoken";
/** The registry username that carries a whole key file as its password. */
export const GCP_JSON_KEY_USER = "_json_key";

export type GcpAuthMode = "access_token" | "json_key";

export interface GcpOptions {
  /** Token endpoint (wins over `STRATA_GCP_TOKEN_URI` and the key's `token_uri`). */
  tokenUri?: string;
  /** `access_token` (default) or `json_key`. */
  mode?: GcpAuthMode;
  /** Refresh a token this long before it expires (default 5 minutes; at most half the token's lifetime). */
  refreshMarginMs?: number;
  /** Attempts at the token endpoint for network errors, 429 and 5xx (default 3). */
  attempts?: number;
  /** Where `STRATA_GCP_TOKEN_URI` is read (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Clock in ms since the epoch (tests). */
  now?: () => number;
  /** Where the token endpoint may be (a key's `token_uri` is the client's choice). Default: permissive. */
  fetchPolicy?: FetchPolicy;
}

/** The validated fields of a service-account key. */
export interface ServiceAccountKey {
  clientEmail: string;
  privateKeyId: string | undefined;
  privateKey: KeyObject;
  /** The key's own `token_uri` (may be absent). */
  tokenUri: string | undefined;
  projectId: string | undefined;
}

interface CachedToken {
  creds: RegistryCredentials;
  expiresAt: number;
  refreshAt: number;
}

const tokens = new Map<string, CachedToken>();
const inflight = new Map<string, Promise<CachedToken>>();

/** Forgets every cached access token (tests; after a key changes). */
export function clearGcpCache(): void {
  tokens.clear();
}

const DEFAULT_MARGIN_MS = 5 * 60_000;
const JWT_LIFETIME_S = 3600;

/**
 * Parses and checks a service-account key file's text. Throws an `InvalidDefinitionError` naming what is wrong (never
 * quoting the text: JSON.parse's own message would).
 */
export function parseServiceAccountKey(text: string): ServiceAccountKey {
  const V = GCP_SECRET_VAR;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new InvalidDefinitionError(
      `${V} is not valid JSON; set it to the whole content of the service account's key file (IAM → Service accounts → Keys → Add key → JSON)`,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new InvalidDefinitionError(`${V} must be a JSON object (a service account key file)`);
  const j = json as Record<string, unknown>;
  const type = j["type"];
  if (type !== undefined && type !== "service_account") {
    const kind = typeof type === "string" ? `"${type}"` : "not a string";
    const why =
      type === "external_account"
        ? "workload identity federation configurations are not supported"
        : type === "authorized_user"
          ? "user credentials (gcloud auth application-default login) are not supported"
          : "only service account keys are supported";
    throw new InvalidDefinitionError(
      `${V} has "type" ${kind}: ${why}; use a service account key file ("type": "service_account")`,
    );
  }
  const clientEmail = j["client_email"];
  if (typeof clientEmail !== "string" || !/^[^@\s]+@[^@\s]+$/.test(clientEmail))
    throw new InvalidDefinitionError(`${V} has no valid "client_email" (the service account's e-mail address)`);
  const pem = j["private_key"];
  if (typeof pem !== "string" || !pem.includes("PRIVATE KEY"))
    throw new InvalidDefinitionError(
      `${V} has no "private_key" PEM (service account ${clientEmail}); use a JSON key file, not a P12 one`,
    );
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: "pem" });
  } catch {
    throw new InvalidDefinitionError(
      `the "private_key" in ${V} (service account ${clientEmail}) is not a readable PEM private key; the JSON may have lost its "\\n" escapes`,
    );
  }
  if (privateKey.asymmetricKeyType !== "rsa")
    throw new InvalidDefinitionError(
      `the "private_key" in ${V} (service account ${clientEmail}) is a ${privateKey.asymmetricKeyType ?? "non-RSA"} key; RS256 needs an RSA key`,
    );
  const privateKeyId = j["private_key_id"];
  if (privateKeyId !== undefined && typeof privateKeyId !== "string")
    throw new InvalidDefinitionError(`${V} has a "private_key_id" that is not a string`);
  const tokenUri = j["token_uri"];
  if (tokenUri !== undefined && typeof tokenUri !== "string")
    throw new InvalidDefinitionError(`${V} has a "token_uri" that is not a string`);
  const projectId = j["project_id"];
  return {
    clientEmail,
    privateKeyId: privateKeyId || undefined,
    privateKey,
    tokenUri: tokenUri || undefined,
    projectId: typeof projectId === "string" ? projectId : undefined,
  };
}

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h);
}

function checkTokenUri(value: string, what: string): URL {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new InvalidDefinitionError(`${what} is not a URL ("${value}")`);
  }
  if (u.protocol === "https:") return u;
  if (u.protocol === "http:" && isLoopback(u.hostname)) return u;
  throw new InvalidDefinitionError(
    `${what} (${u.origin}${u.pathname}) must be https (plain http only on loopback): the signed assertion would travel unencrypted`,
  );
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

/** The signed JWT assertion for the token endpoint. */
export function serviceAccountAssertion(
  key: ServiceAccountKey,
  audience: string,
  nowSeconds: number,
  scope = GCP_SCOPE,
): string {
  const header: Record<string, string> = { alg: "RS256", typ: "JWT" };
  if (key.privateKeyId !== undefined) header["kid"] = key.privateKeyId;
  const claims = { iss: key.clientEmail, scope, aud: audience, iat: nowSeconds, exp: nowSeconds + JWT_LIFETIME_S };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(sign("sha256", Buffer.from(input), key.privateKey))}`;
}

function secretText(secret: Readonly<Record<string, string>>): string {
  const v = secret[GCP_SECRET_VAR];
  if (typeof v !== "string" || v.trim() === "") {
    const others = Object.keys(secret).filter((k) => k !== GCP_SECRET_VAR);
    const hint = others.includes("GOOGLE_APPLICATION_CREDENTIALS")
      ? " (GOOGLE_APPLICATION_CREDENTIALS is a path; put the file's content in it instead)"
      : "";
    throw new InvalidDefinitionError(
      `the GCP secret has no ${GCP_SECRET_VAR}; set it to the content of a service account key file${hint}`,
    );
  }
  return v;
}

/**
 * A credential provider for Google Artifact Registry / Container Registry from `{ SERVICE_ACCOUNT_JSON }`. The key
 * is validated at once (an `InvalidDefinitionError` says what is wrong); the token exchange happens when a registry
 * asks for credentials.
 */
export function gcpCredentials(
  secret: { readonly SERVICE_ACCOUNT_JSON: string } | Readonly<Record<string, string>>,
  opts: GcpOptions = {},
): CredentialProvider {
  const text = secretText(secret as Readonly<Record<string, string>>);
  const key = parseServiceAccountKey(text);
  const mode = opts.mode ?? "access_token";
  if (mode === "json_key") {
    const creds: RegistryCredentials = {
      username: GCP_JSON_KEY_USER,
      password: text,
      source: `${GCP_SECRET_VAR} as a ${GCP_JSON_KEY_USER} login (service account ${key.clientEmail})`,
    };
    return async () => creds;
  }
  if (mode !== "access_token")
    throw new InvalidDefinitionError(`unknown GCP auth mode "${String(mode)}"; use "access_token" or "json_key"`);
  const env = opts.env ?? process.env;
  const envUri = env["STRATA_GCP_TOKEN_URI"];
  const [uriText, uriWhat] =
    opts.tokenUri !== undefined
      ? [opts.tokenUri, "the tokenUri option"]
      : envUri !== undefined && envUri !== ""
        ? [envUri, "STRATA_GCP_TOKEN_URI"]
        : key.tokenUri !== undefined
          ? [key.tokenUri, `the "token_uri" in ${GCP_SECRET_VAR}`]
          : [GOOGLE_TOKEN_URI, "Google's token endpoint"];
  const tokenUrl = checkTokenUri(uriText, uriWhat);
  const now = opts.now ?? Date.now;
  const margin = opts.refreshMarginMs ?? DEFAULT_MARGIN_MS;
  const attempts = Math.max(1, opts.attempts ?? 3);
  const policy = opts.fetchPolicy ?? defaultFetchPolicy();
  const cacheKey = createHash("sha256")
    .update(JSON.stringify([key.clientEmail, key.privateKeyId ?? "", text, tokenUrl.href]))
    .digest("hex");

  return async (registry) => {
    const hit = tokens.get(cacheKey);
    if (hit && now() < hit.refreshAt) return hit.creds;
    try {
      let p = inflight.get(cacheKey);
      if (!p) {
        p = exchange(key, tokenUrl, registry, now, margin, attempts, policy).finally(() => inflight.delete(cacheKey));
        inflight.set(cacheKey, p);
      }
      const fresh = await p;
      tokens.set(cacheKey, fresh);
      return fresh.creds;
    } catch (e) {
      const still = tokens.get(cacheKey);
      if (still && now() < still.expiresAt) return still.creds;
      throw e;
    }
  };
}

interface TokenErrorBody {
  error?: unknown;
  error_description?: unknown;
}

async function exchange(
  key: ServiceAccountKey,
  tokenUrl: URL,
  registry: string,
  now: () => number,
  margin: number,
  attempts: number,
  policy: FetchPolicy,
): Promise<CachedToken> {
  const where = `${tokenUrl.origin}${tokenUrl.pathname}`;
  const prefix = `GCP login for ${registry} (service account ${key.clientEmail}): the token endpoint ${where}`;
  for (let attempt = 1; ; attempt++) {
    const fetchedAt = now();
    const assertion = serviceAccountAssertion(key, tokenUrl.href, Math.floor(fetchedAt / 1000));
    const body = new URLSearchParams({ grant_type: JWT_BEARER_GRANT, assertion }).toString();
    let res: Response;
    try {
      res = await policy.fetch(tokenUrl, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          accept: "application/json",
          "user-agent": "strata",
        },
        body,
        redirect: "error",
        signal: AbortSignal.timeout(30_000),
      });
    } catch (e) {
      const refusal = policyRefusal(e);
      if (refusal) throw refusal.within(prefix);
      if (attempt < attempts) {
        await sleep(300 * 2 ** (attempt - 1));
        continue;
      }
      const code = errCode(e);
      throw new RegistryError(
        `${prefix} could not be reached (${code}); check the network${tokenUrl.href === GOOGLE_TOKEN_URI ? "" : " and the token URI (STRATA_GCP_TOKEN_URI or the key's token_uri)"} and retry`,
        {
          temporary: true,
          url: where,
          cause: e,
        },
      );
    }
    const raw = await res.text().catch(() => "");
    if (res.status === 429 || res.status >= 500) {
      if (attempt < attempts) {
        await sleep(300 * 2 ** (attempt - 1));
        continue;
      }
      throw new RegistryError(`${prefix} answered ${res.status}${describeError(raw, assertion)}; retry later`, {
        status: res.status,
        temporary: true,
        url: where,
      });
    }
    if (!res.ok) throw tokenError(res.status, raw, assertion, prefix, key, where);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      throw new RegistryError(`${prefix} answered 200 with a body that is not JSON; the endpoint is misbehaving`, {
        status: res.status,
        url: where,
      });
    }
    const accessToken = json["access_token"];
    if (typeof accessToken !== "string" || accessToken === "")
      throw new RegistryError(`${prefix} answered without an "access_token"; the endpoint is misbehaving`, {
        status: res.status,
        url: where,
      });
    const expiresIn =
      typeof json["expires_in"] === "number" && Number.isFinite(json["expires_in"]) && json["expires_in"] > 0
        ? json["expires_in"]
        : JWT_LIFETIME_S;
    const expiresAt = fetchedAt + expiresIn * 1000;
    return {
      creds: {
        username: GCP_ACCESS_TOKEN_USER,
        password: accessToken,
        source: `an OAuth access token for service account ${key.clientEmail} (from ${GCP_SECRET_VAR})`,
      },
      expiresAt,
      refreshAt: expiresAt - Math.min(margin, (expiresIn * 1000) / 2),
    };
  }
}

function errCode(e: unknown): string {
  for (let cur: unknown = e, depth = 0; cur && depth < 4; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string") return code;
    const name = (cur as { name?: unknown }).name;
    if (name === "TimeoutError") return "timed out";
  }
  return e instanceof Error ? e.message : String(e);
}

function describeError(raw: string, assertion: string): string {
  let body: TokenErrorBody = {};
  try {
    body = JSON.parse(raw) as TokenErrorBody;
  } catch {
    return "";
  }
  const parts = [body.error, body.error_description].filter((p): p is string => typeof p === "string" && p !== "");
  return parts.length ? `: ${parts.join(": ").split(assertion).join("<assertion>")}` : "";
}

/** A 4xx from the token endpoint, explained. Google answers `{"error": "invalid_grant", "error_description": …}`. */
function tokenError(
  status: number,
  raw: string,
  assertion: string,
  prefix: string,
  key: ServiceAccountKey,
  where: string,
): RegistryAuthError {
  let body: TokenErrorBody = {};
  try {
    body = JSON.parse(raw) as TokenErrorBody;
  } catch {
    // not JSON
  }
  const error = typeof body.error === "string" ? body.error : "";
  const description = typeof body.error_description === "string" ? body.error_description : "";
  const said = describeError(raw, assertion);
  const keyId = key.privateKeyId !== undefined ? ` (private_key_id ${key.privateKeyId})` : "";
  let hint: string;
  if (/signature/i.test(description))
    hint = `the key in ${GCP_SECRET_VAR}${keyId} is not a current key of ${key.clientEmail}: it was deleted, disabled or belongs to another account; create a new JSON key`;
  else if (/iat|exp|timeframe|short-lived|clock/i.test(description))
    hint = "the JWT's time claims were refused; fix this machine's clock (NTP)";
  else if (/not found|does not exist|invalid_email|account/i.test(description))
    hint = `the service account ${key.clientEmail} does not exist or is disabled; check ${GCP_SECRET_VAR}`;
  else if (/aud/i.test(description))
    hint = "the token URI does not match the key's token_uri; leave STRATA_GCP_TOKEN_URI unset for Google";
  else if (error === "unauthorized_client" || error === "invalid_client" || error === "access_denied")
    hint = `the service account ${key.clientEmail} may not get tokens; check that it and its key are enabled`;
  else hint = `check ${GCP_SECRET_VAR}`;
  return new RegistryAuthError(`${prefix} refused the service account's JWT (${status}${said}): ${hint}`, {
    status,
    url: where,
  });
}
