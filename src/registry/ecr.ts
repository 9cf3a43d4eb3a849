/**
 * AWS ECR logins: a `CredentialProvider` that trades AWS credentials for an ECR registry password.
 *
 *  - Static keys (`AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`), or a web identity
 *    (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` or `AWS_WEB_IDENTITY_TOKEN`, optional `AWS_ROLE_SESSION_NAME`),
 *    exchanged for temporary keys with STS `AssumeRoleWithWebIdentity` (an unsigned call).
 *  - The keys sign ECR `GetAuthorizationToken` (`@aws-sdk/client-ecr`); its `authorizationToken` is base64 of
 *    `AWS:<password>`, which the registry accepts as HTTP Basic credentials.
 *  - Region: the one in an ECR host name (`<account>.dkr.ecr.<region>.amazonaws.com`, the token is regional), else
 *    `AWS_REGION` / `AWS_DEFAULT_REGION` from the secret.
 *  - ECR tokens (12 h) and STS sessions are cached in memory, per identity + region + endpoint, until their expiry
 *    less a margin; concurrent logins share one call. If a refresh fails while the old token is still valid, the old
 *    one is used.
 *  - Endpoints can be pointed elsewhere (tests): `opts.endpoint` / `STRATA_ECR_ENDPOINT`, `opts.stsEndpoint` /
 *    `STRATA_STS_ENDPOINT`.
 * Error messages name variables, never their values; AWS's own messages are passed through with secret values
 * removed.
 */
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
// The AWS SDK clients are imported when a login actually happens: definitions load this module, and most never
// talk to AWS.
import { InvalidDefinitionError } from "../errors.js";
import type { CredentialProvider, RegistryCredentials } from "./auth.js";
import { RegistryAuthError, RegistryError } from "./errors.js";

export interface EcrOptions {
  /** ECR API endpoint URL (default `STRATA_ECR_ENDPOINT`, else the SDK's regional endpoint). */
  endpoint?: string;
  /** STS endpoint URL for web identity (default `STRATA_STS_ENDPOINT`, else the SDK's regional endpoint). */
  stsEndpoint?: string;
  /** Refresh a token this long before it expires (default 5 minutes; at most half the token's lifetime). */
  refreshMarginMs?: number;
  /** Attempts per AWS call, including the SDK's own retries (default 3). */
  maxAttempts?: number;
  /**
   * Whether `AWS_WEB_IDENTITY_TOKEN_FILE` may name a file on this machine (default true). False on the build service:
   * the file would be its operator's (e.g. the service's own projected service-account token).
   */
  tokenFiles?: boolean;
  /** Where `STRATA_ECR_ENDPOINT` / `STRATA_STS_ENDPOINT` are read (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Clock in ms since the epoch (tests). */
  now?: () => number;
}

/** The variables of an ECR secret. */
export const AWS_VARS = {
  accessKeyId: "AWS_ACCESS_KEY_ID",
  secretAccessKey: "AWS_SECRET_ACCESS_KEY",
  sessionToken: "AWS_SESSION_TOKEN",
  region: "AWS_REGION",
  defaultRegion: "AWS_DEFAULT_REGION",
  roleArn: "AWS_ROLE_ARN",
  webIdentityTokenFile: "AWS_WEB_IDENTITY_TOKEN_FILE",
  webIdentityToken: "AWS_WEB_IDENTITY_TOKEN",
  roleSessionName: "AWS_ROLE_SESSION_NAME",
} as const;

/**
 * ECR host names (amazon-ecr-credential-helper's pattern): group 1 account id, group 2 `-fips`, group 3 region.
 */
const ECR_HOST =
  /^(\d{12})\.dkr[.-]ecr(-fips)?\.([a-zA-Z0-9][a-zA-Z0-9-_]*)\.(amazonaws\.(?:com(?:\.cn)?|eu)|on\.(?:aws|amazonwebservices\.com\.cn)|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$/;

export interface EcrHost {
  accountId: string;
  region: string;
  fips: boolean;
}

/** Parses an ECR registry host (`123456789012.dkr.ecr.us-east-1.amazonaws.com[:443]`); undefined for other hosts. */
export function parseEcrHost(registry: string): EcrHost | undefined {
  const host = registry.replace(/:\d+$/, "").toLowerCase();
  const m = ECR_HOST.exec(host);
  if (!m) return undefined;
  return { accountId: m[1]!, fips: m[2] !== undefined, region: m[3]! };
}

type AwsIdentity =
  | { kind: "static"; accessKeyId: string; secretAccessKey: string; sessionToken: string | undefined }
  | {
      kind: "webIdentity";
      roleArn: string;
      tokenFile: string | undefined;
      token: string | undefined;
      sessionName: string | undefined;
    };

interface AwsKeys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

interface Cached<T> {
  value: T;
  /** ms since the epoch: unusable from here on */
  expiresAt: number;
  /** ms since the epoch: fetch a new one from here on */
  refreshAt: number;
}

const ecrTokens = new Map<string, Cached<RegistryCredentials>>();
const stsSessions = new Map<string, Cached<AwsKeys>>();
const inflight = new Map<string, Promise<unknown>>();

/** Forgets every cached ECR token and STS session (tests; after credentials change). */
export function clearEcrCache(): void {
  ecrTokens.clear();
  stsSessions.clear();
}

const DEFAULT_MARGIN_MS = 5 * 60_000;
const ECR_TOKEN_HOURS = 12;

function present(v: Readonly<Record<string, string>>, name: string): string | undefined {
  const value = v[name];
  return typeof value === "string" && value.trim() !== "" ? value : undefined;
}

function parseIdentity(v: Readonly<Record<string, string>>): AwsIdentity {
  const V = AWS_VARS;
  const roleArn = present(v, V.roleArn);
  const tokenFile = present(v, V.webIdentityTokenFile);
  const token = present(v, V.webIdentityToken);
  const accessKeyId = present(v, V.accessKeyId);
  const secretAccessKey = present(v, V.secretAccessKey);
  if (roleArn !== undefined || tokenFile !== undefined || token !== undefined) {
    if (roleArn === undefined) {
      throw new InvalidDefinitionError(
        `the ECR secret has ${tokenFile !== undefined ? V.webIdentityTokenFile : V.webIdentityToken} but not ${V.roleArn}; a web identity login needs the ARN of the role to assume`,
      );
    }
    if (tokenFile === undefined && token === undefined) {
      const keys =
        accessKeyId !== undefined
          ? ` (assuming a role with static keys is not supported: drop ${V.roleArn} to use ${V.accessKeyId}/${V.secretAccessKey} directly)`
          : "";
      throw new InvalidDefinitionError(
        `the ECR secret has ${V.roleArn} but neither ${V.webIdentityTokenFile} nor ${V.webIdentityToken}; set one of them to the web identity (OIDC) token${keys}`,
      );
    }
    if (!/^arn:[a-z-]+:iam::\d{12}:role\/.+/.test(roleArn.trim())) {
      throw new InvalidDefinitionError(
        `${V.roleArn} is not an IAM role ARN (expected arn:aws:iam::<12-digit account>:role/<name>)`,
      );
    }
    const sessionName = present(v, V.roleSessionName);
    if (sessionName !== undefined && !/^[\w+=,.@-]{2,64}$/.test(sessionName)) {
      throw new InvalidDefinitionError(`${V.roleSessionName} must be 2–64 characters of letters, digits and +=,.@_-`);
    }
    return { kind: "webIdentity", roleArn: roleArn.trim(), tokenFile, token: token?.trim(), sessionName };
  }
  if (accessKeyId === undefined && secretAccessKey === undefined) {
    throw new InvalidDefinitionError(
      `the ECR secret has no AWS credentials: set ${V.accessKeyId} and ${V.secretAccessKey} (optionally ${V.sessionToken}), or ${V.roleArn} with ${V.webIdentityTokenFile} (or ${V.webIdentityToken}) for a web identity; and ${V.region}`,
    );
  }
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    const missing = accessKeyId === undefined ? V.accessKeyId : V.secretAccessKey;
    const has = accessKeyId === undefined ? V.secretAccessKey : V.accessKeyId;
    throw new InvalidDefinitionError(`the ECR secret has ${has} but not ${missing}; set both`);
  }
  return {
    kind: "static",
    accessKeyId: accessKeyId.trim(),
    secretAccessKey: secretAccessKey.trim(),
    sessionToken: present(v, V.sessionToken)?.trim(),
  };
}

function describeIdentity(id: AwsIdentity): string {
  if (id.kind === "static")
    return `the secret's ${AWS_VARS.accessKeyId}/${AWS_VARS.secretAccessKey}${id.sessionToken !== undefined ? `/${AWS_VARS.sessionToken}` : ""}`;
  return `the role in ${AWS_VARS.roleArn} assumed with the web identity token from ${id.tokenFile !== undefined ? AWS_VARS.webIdentityTokenFile : AWS_VARS.webIdentityToken}`;
}

function hashKey(parts: readonly (string | undefined)[]): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex");
}

/** Runs `fetch` once for all concurrent callers of `key`. */
function singleFlight<T>(key: string, fetch: () => Promise<T>): Promise<T> {
  let p = inflight.get(key) as Promise<T> | undefined;
  if (!p) {
    p = fetch().finally(() => inflight.delete(key));
    inflight.set(key, p);
  }
  return p;
}

/**
 * A cached value while it is fresh; otherwise a new one from `fetch` (single-flighted and cached). When the
 * refresh fails but the cached value has not expired yet, the cached value is used.
 */
async function cachedOrFetch<T>(
  cache: Map<string, Cached<T>>,
  key: string,
  now: () => number,
  fetch: () => Promise<Cached<T>>,
): Promise<T> {
  const hit = cache.get(key);
  if (hit && now() < hit.refreshAt) return hit.value;
  try {
    const fresh = await singleFlight(key, fetch);
    cache.set(key, fresh);
    return fresh.value;
  } catch (e) {
    const still = cache.get(key);
    if (still && now() < still.expiresAt) return still.value;
    throw e;
  }
}

function refreshTime(fetchedAt: number, expiresAt: number, marginMs: number): number {
  const lifetime = Math.max(0, expiresAt - fetchedAt);
  return expiresAt - Math.min(marginMs, lifetime / 2);
}

/**
 * A credential provider for AWS ECR registries from an ECR secret (see the module comment). Missing or inconsistent
 * variables throw an `InvalidDefinitionError` at once; the AWS calls happen when a registry asks for credentials.
 */
export function ecrCredentials(secret: Readonly<Record<string, string>>, opts: EcrOptions = {}): CredentialProvider {
  const identity = parseIdentity(secret);
  if (identity.kind === "webIdentity" && identity.token === undefined && opts.tokenFiles === false)
    throw new InvalidDefinitionError(
      `the ECR secret's ${AWS_VARS.webIdentityTokenFile} names a file on the build server, which would be the operator's, not yours; give the token itself as ${AWS_VARS.webIdentityToken}`,
    );
  const secretRegion = present(secret, AWS_VARS.region)?.trim() ?? present(secret, AWS_VARS.defaultRegion)?.trim();
  const env = opts.env ?? process.env;
  const now = opts.now ?? Date.now;
  const margin = opts.refreshMarginMs ?? DEFAULT_MARGIN_MS;
  const maxAttempts = Math.max(1, opts.maxAttempts ?? 3);
  const secrets = secretValuesOf(identity);

  return async (registry) => {
    const host = parseEcrHost(registry);
    const region = host?.region ?? secretRegion;
    if (region === undefined) {
      throw new InvalidDefinitionError(
        `the ECR secret needs ${AWS_VARS.region}: ${registry} is not an ECR host name (<account>.dkr.ecr.<region>.amazonaws.com) the region could be read from`,
      );
    }
    const endpoint = endpointUrl(
      opts.endpoint ?? env["STRATA_ECR_ENDPOINT"],
      opts.endpoint !== undefined ? "the ECR endpoint option" : "STRATA_ECR_ENDPOINT",
    );
    const stsEndpoint = endpointUrl(
      opts.stsEndpoint ?? env["STRATA_STS_ENDPOINT"],
      opts.stsEndpoint !== undefined ? "the STS endpoint option" : "STRATA_STS_ENDPOINT",
    );
    const fips = host?.fips ?? false;
    const idKey =
      identity.kind === "static"
        ? ["static", identity.accessKeyId, identity.secretAccessKey, identity.sessionToken]
        : ["web", identity.roleArn, identity.tokenFile, identity.token, identity.sessionName];
    const ctx: CallContext = { registry, region, identity, secrets: [...secrets], maxAttempts };

    const keys = async (): Promise<AwsKeys> => {
      if (identity.kind === "static") {
        return {
          accessKeyId: identity.accessKeyId,
          secretAccessKey: identity.secretAccessKey,
          ...(identity.sessionToken !== undefined ? { sessionToken: identity.sessionToken } : {}),
        };
      }
      const stsKey = hashKey(["sts", ...idKey, region, stsEndpoint]);
      return cachedOrFetch(stsSessions, stsKey, now, async () => {
        const fetchedAt = now();
        const session = await assumeRole(identity, ctx, stsEndpoint, now);
        return {
          value: session.keys,
          expiresAt: session.expiresAt,
          refreshAt: refreshTime(fetchedAt, session.expiresAt, margin),
        };
      });
    };

    const ecrKey = hashKey(["ecr", ...idKey, region, endpoint, stsEndpoint, String(fips)]);
    return cachedOrFetch(ecrTokens, ecrKey, now, async () => {
      const fetchedAt = now();
      const credentials = await keys();
      addSecrets(ctx, credentials.secretAccessKey, credentials.sessionToken);
      const token = await getAuthorizationToken(ctx, credentials, endpoint, fips, now);
      return {
        value: token.creds,
        expiresAt: token.expiresAt,
        refreshAt: refreshTime(fetchedAt, token.expiresAt, margin),
      };
    });
  };
}

interface CallContext {
  registry: string;
  region: string;
  identity: AwsIdentity;
  /** Values that must never appear in a message. */
  secrets: string[];
  maxAttempts: number;
}

function addSecrets(ctx: CallContext, ...values: (string | undefined)[]): void {
  for (const v of values) if (v !== undefined && v.length >= 4 && !ctx.secrets.includes(v)) ctx.secrets.push(v);
}

function secretValuesOf(id: AwsIdentity): string[] {
  const values = id.kind === "static" ? [id.secretAccessKey, id.sessionToken] : [id.token];
  return values.filter((s): s is string => s !== undefined && s.length >= 4);
}

function endpointUrl(value: string | undefined, what: string): string | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  try {
    const u = new URL(value.trim());
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
    return u.toString();
  } catch {
    throw new InvalidDefinitionError(`${what} is not an http(s) URL ("${value}")`);
  }
}

async function webIdentityToken(id: Extract<AwsIdentity, { kind: "webIdentity" }>): Promise<string> {
  if (id.token !== undefined) return id.token;
  const file = id.tokenFile!;
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "read error";
    throw new InvalidDefinitionError(
      `${AWS_VARS.webIdentityTokenFile} names ${file}, which cannot be read (${code}); point it at the projected service-account token (or set ${AWS_VARS.webIdentityToken})`,
    );
  }
  const token = text.trim();
  if (token === "")
    throw new InvalidDefinitionError(`the web identity token file ${file} (${AWS_VARS.webIdentityTokenFile}) is empty`);
  return token;
}

async function assumeRole(
  id: Extract<AwsIdentity, { kind: "webIdentity" }>,
  ctx: CallContext,
  endpoint: string | undefined,
  now: () => number,
): Promise<{ keys: AwsKeys; expiresAt: number }> {
  const token = await webIdentityToken(id);
  addSecrets(ctx, token);
  const { AssumeRoleWithWebIdentityCommand, STSClient } = await import("@aws-sdk/client-sts");
  const sts = new STSClient({
    region: ctx.region,
    maxAttempts: ctx.maxAttempts,
    ...(endpoint !== undefined ? { endpoint } : {}),
  });
  try {
    const out = await sts.send(
      new AssumeRoleWithWebIdentityCommand({
        RoleArn: id.roleArn,
        RoleSessionName: id.sessionName ?? `strata-${now()}`,
        WebIdentityToken: token,
      }),
    );
    const c = out.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken) {
      throw new RegistryError(
        `ECR login for ${ctx.registry}: STS AssumeRoleWithWebIdentity answered without temporary credentials; the STS endpoint is misbehaving`,
      );
    }
    const expiresAt =
      c.Expiration instanceof Date && Number.isFinite(c.Expiration.getTime())
        ? c.Expiration.getTime()
        : now() + 3600_000;
    return {
      keys: { accessKeyId: c.AccessKeyId, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken },
      expiresAt,
    };
  } catch (e) {
    if (e instanceof RegistryError || e instanceof InvalidDefinitionError) throw e;
    throw translateAwsError(e, "sts", ctx, endpoint);
  } finally {
    sts.destroy();
  }
}

async function getAuthorizationToken(
  ctx: CallContext,
  credentials: AwsKeys,
  endpoint: string | undefined,
  fips: boolean,
  now: () => number,
): Promise<{ creds: RegistryCredentials; expiresAt: number }> {
  // A FIPS host name (dkr.ecr-fips) means the FIPS API endpoint; an explicit endpoint replaces both.
  const { ECRClient, GetAuthorizationTokenCommand } = await import("@aws-sdk/client-ecr");
  const ecr = new ECRClient({
    region: ctx.region,
    credentials,
    maxAttempts: ctx.maxAttempts,
    ...(endpoint !== undefined ? { endpoint } : { useFipsEndpoint: fips }),
  });
  try {
    const out = await ecr.send(new GetAuthorizationTokenCommand({}));
    const data = out.authorizationData?.[0];
    const encoded = data?.authorizationToken;
    if (typeof encoded !== "string" || encoded === "") {
      throw new RegistryError(
        `ECR login for ${ctx.registry}: GetAuthorizationToken answered without an authorization token; the ECR endpoint is misbehaving`,
      );
    }
    const decoded = Buffer.from(encoded, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon <= 0 || colon === decoded.length - 1) {
      throw new RegistryError(
        `ECR login for ${ctx.registry}: the authorization token from GetAuthorizationToken is not base64 of "AWS:<password>"`,
      );
    }
    const expiresAt =
      data?.expiresAt instanceof Date && Number.isFinite(data.expiresAt.getTime())
        ? data.expiresAt.getTime()
        : now() + ECR_TOKEN_HOURS * 3600_000;
    const creds: RegistryCredentials = {
      username: decoded.slice(0, colon),
      password: decoded.slice(colon + 1),
      source: `an ECR login token (GetAuthorizationToken in ${ctx.region} with ${describeIdentity(ctx.identity)})`,
    };
    return { creds, expiresAt };
  } catch (e) {
    if (e instanceof RegistryError || e instanceof InvalidDefinitionError) throw e;
    throw translateAwsError(e, "ecr", ctx, endpoint);
  } finally {
    ecr.destroy();
  }
}

interface AwsErrorShape {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  cause?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  $fault?: unknown;
}

const NETWORK_CODES =
  /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|UND_ERR_.*|TimeoutError|RequestTimeout|ERR_SSL_.*|CERT_.*|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE)$/;

function networkCode(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur && depth < 5; cur = (cur as AwsErrorShape).cause, depth++) {
    const c = cur as AwsErrorShape;
    for (const v of [c.code, c.name]) if (typeof v === "string" && NETWORK_CODES.test(v)) return v;
  }
  return undefined;
}

function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join("***");
  return out;
}

/** Turns an AWS SDK error into a Strata error saying what is wrong and what to set, without secret values. */
function translateAwsError(
  e: unknown,
  service: "ecr" | "sts",
  ctx: CallContext,
  endpoint: string | undefined,
): RegistryError {
  const err = (e ?? {}) as AwsErrorShape;
  const name = typeof err.name === "string" ? err.name : "Error";
  const status = typeof err.$metadata?.httpStatusCode === "number" ? err.$metadata.httpStatusCode : undefined;
  const awsMessage = redact(typeof err.message === "string" ? err.message : String(e), ctx.secrets).trim();
  const op = service === "ecr" ? "ECR GetAuthorizationToken" : "STS AssumeRoleWithWebIdentity";
  const where = endpoint ?? (service === "ecr" ? `the ECR API in ${ctx.region}` : `STS in ${ctx.region}`);
  const prefix = `ECR login for ${ctx.registry}: ${op}`;
  const said = awsMessage ? ` (AWS said: ${name}: ${awsMessage})` : ` (${name})`;
  const V = AWS_VARS;
  const net = networkCode(e);
  if (net !== undefined && status === undefined) {
    const override =
      endpoint !== undefined ? (service === "ecr" ? " or STRATA_ECR_ENDPOINT" : " or STRATA_STS_ENDPOINT") : "";
    return new RegistryError(
      `${prefix} could not reach ${where} (${net}); check the network, ${V.region}${override}, and retry`,
      { temporary: true, cause: e },
    );
  }
  const auth = (hint: string, httpStatus = 403): RegistryAuthError =>
    new RegistryAuthError(`${prefix} was refused${said}: ${hint}`, { status: status ?? httpStatus });
  // The SDK names modelled errors with an "Exception" suffix (InvalidIdentityTokenException), unmodelled ones by code.
  switch (name.replace(/Exception$/, "")) {
    case "InvalidSignature":
    case "SignatureDoesNotMatch":
      return auth(
        ctx.identity.kind === "static"
          ? `the request signature does not match: ${V.secretAccessKey} is not the secret key of ${V.accessKeyId}; check both variables`
          : "the request signature made with the role's temporary keys was not accepted; retry, and check the clock of this machine",
      );
    case "UnrecognizedClient":
    case "InvalidClientTokenId":
      return auth(
        ctx.identity.kind === "static"
          ? `AWS does not recognise the access key in ${V.accessKeyId}${ctx.identity.sessionToken !== undefined ? ` (or ${V.sessionToken} does not belong to it)` : ""}; check the variables and that the key is active`
          : "AWS does not recognise the role's temporary keys; retry the login",
      );
    case "ExpiredToken":
      return auth(
        service === "sts"
          ? `the web identity token from ${ctx.identity.kind === "webIdentity" && ctx.identity.tokenFile !== undefined ? V.webIdentityTokenFile : V.webIdentityToken} has expired; provide a fresh one`
          : ctx.identity.kind === "static"
            ? `the temporary credentials have expired; provide fresh ${V.accessKeyId}/${V.secretAccessKey}/${V.sessionToken}`
            : "the role session has expired; retry the login",
      );
    case "RequestExpired":
      return auth("the request's timestamp is too far from AWS's clock; fix this machine's clock (NTP)");
    case "AccessDenied":
      return auth(
        service === "ecr"
          ? 'the identity may not call ecr:GetAuthorizationToken; grant it (resource "*") in the IAM policy, plus ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on the repository'
          : `STS refused to let the web identity assume the role in ${V.roleArn}; check the role's trust policy (federated principal, audience and subject conditions)`,
      );
    case "InvalidIdentityToken":
    case "IDPRejectedClaim":
    case "IDPCommunicationError":
      return auth(
        `STS did not accept the web identity token from ${ctx.identity.kind === "webIdentity" && ctx.identity.tokenFile !== undefined ? V.webIdentityTokenFile : V.webIdentityToken}; check that it is a valid OIDC token from the identity provider the role trusts`,
      );
    case "Throttling":
    case "TooManyRequests":
      return new RegistryError(`${prefix} was throttled${said}; retry later`, {
        status: status ?? 429,
        temporary: true,
      });
    default:
      break;
  }
  if (status === 401 || status === 403)
    return auth(`check ${describeIdentity(ctx.identity)} and the identity's IAM permissions`);
  const temporary = status === undefined || status >= 500 || err.$fault === "server";
  return new RegistryError(`${prefix} failed${said}${temporary ? "; retry later" : ""}`, {
    ...(status !== undefined ? { status } : {}),
    temporary,
  });
}
