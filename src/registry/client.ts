/**
 * HTTP access to one repository of an OCI distribution registry.
 *
 *  - `RegistryClient.request` is the single HTTP entry point: manual redirects (Authorization dropped across origins,
 *    https→http refused), challenge-driven auth (Basic; Bearer tokens, anonymous or with credentials, cached per
 *    realm+service+scope with expiry; one retry on a 401 after a token was sent), `Accept-Encoding: identity`.
 *  - `withRetries` wraps whole operations (request + body) and retries `RegistryError.temporary` failures with
 *    exponential backoff, honouring `Retry-After`.
 * Credentials never appear in an error message: URLs are shown without their query, and the credentials' source is
 * named instead of their values. Every request (redirects and token requests included) goes through the client's
 * fetch policy (`src/net/`): a refused address is a FetchPolicyError, never retried.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import {
  basicAuthorization,
  cachedToken,
  credentialId,
  getToken,
  invalidateToken,
  mergeScopes,
  repositoryScope,
  resolveCredentialProvider,
  tokenCacheKey,
  tokenExpiry,
  SECRET_PASSWORD,
  SECRET_USERNAME,
  type CredentialProvider,
  type DockerConfigOptions,
  type RegistryCredentials,
  type SecretInput,
} from "./auth.js";
import {
  abortReason,
  discard,
  displayUrl,
  errorDetail,
  errorFromResponse,
  networkError,
  readBody,
  type HttpMethod,
} from "./http.js";
import { RegistryAuthError, RegistryError } from "./errors.js";
import { isInsecureHost, type ImageReference } from "./reference.js";
import { originEndpoint, type RegistryEndpoint } from "./endpoints.js";
import { defaultFetchPolicy, policyRefusal, type FetchPolicy } from "../net/fetch-policy.js";
import { FetchPolicyError } from "../errors.js";
import { parseWwwAuthenticate, type AuthChallenge } from "./www-authenticate.js";

export interface RegistryOptions {
  /**
   * Speak plain HTTP to the registry (loopback, STRATA_INSECURE_REGISTRIES hosts and the fetch policy's listed
   * registries always do). A policy that restricts plain HTTP refuses it for any other registry.
   */
  insecure?: boolean;
  /** Where the client may connect, and whether `insecure` is allowed. Default: the permissive policy. */
  fetchPolicy?: FetchPolicy;
  signal?: AbortSignal;
  /**
   * Login variables: `REGISTRY_USERNAME` + `REGISTRY_PASSWORD` (a plain object or the SDK's `Secret`). Without them
   * Docker's config.json (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`) is consulted.
   */
  secret?: SecretInput;
  /** A credential provider that wins over `secret` and config.json (ECR, GCP, …). */
  credentials?: CredentialProvider;
  /** Where Docker's config.json is looked for; `false` skips it. */
  dockerConfig?: DockerConfigOptions | false;
}

export interface RegistryClientOptions extends RegistryOptions {
  /** Token scopes to ask for up front besides `repository:<name>:pull` (e.g. push, or pull on a mount source). */
  scopes?: readonly string[];
  /** Total attempts for temporary failures (default 3). */
  attempts?: number;
  /** First backoff delay in ms, doubled per attempt (default 300). */
  retryDelayMs?: number;
  /** Longest `Retry-After` honoured, in ms (default 60 s); a longer one fails at once, saying how long. */
  maxRetryAfterMs?: number;
  /**
   * The host to send requests to: a mirror of the reference's registry (from the fetch policy's registry config,
   * see `endpoints.ts`). Default: the registry itself. A mirror logs in with Docker's config.json for the mirror's own
   * host only — never with the build's secret, which is for the registry.
   */
  endpoint?: RegistryEndpoint;
}

export interface FetchResult {
  res: Response;
  /** The URL that produced `res` (after redirects). */
  url: URL;
}

export interface RequestOptions {
  method?: HttpMethod;
  headers?: Record<string, string>;
  /**
   * A factory for the request body: called for every send, because a request answered with an auth challenge is
   * sent again. Return a fresh stream each time.
   */
  body?: () => Uint8Array | string | WebReadableStream<Uint8Array>;
  signal?: AbortSignal;
  /** `false`: return 3xx responses as they are instead of following them (default true). */
  followRedirects?: boolean;
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;

/**
 * The last auth challenge each registry origin sent (per process), so a new client can send a cached token (or
 * Basic credentials) on its first request instead of collecting a 401 first.
 */
const knownChallenges = new Map<string, AuthChallenge>();

/** HTTP access to one repository of one registry. */
export class RegistryClient {
  readonly baseUrl: URL;
  readonly insecure: boolean;
  /** The host requests go to (a mirror, or the registry itself). */
  readonly endpoint: RegistryEndpoint;
  readonly signal: AbortSignal | undefined;
  readonly attempts: number;
  readonly fetchPolicy: FetchPolicy;
  /** Whether Docker's config.json may log in (not on the service: see FetchPolicy.operatorLogins). */
  private readonly operatorLogins: boolean;
  private readonly retryDelayMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly provider: CredentialProvider | undefined;
  private credsPromise: Promise<RegistryCredentials | undefined> | undefined;
  private scopes: string[];
  private authorization: string | undefined;
  private pendingAuth: Promise<string> | undefined;

  constructor(
    readonly reference: ImageReference,
    opts: RegistryClientOptions = {},
  ) {
    const policy = opts.fetchPolicy ?? defaultFetchPolicy();
    const endpoint = opts.endpoint ?? originEndpoint(reference.registry, policy.registryConfig);
    this.endpoint = endpoint;
    // A mirror was chosen by whoever set the policy (the operator, on the service): its connections may reach it.
    this.fetchPolicy = endpoint.mirror ? policy.forMirror(endpoint.host) : policy;
    const listed = endpoint.http || this.fetchPolicy.listsInsecure(reference.registry);
    if (opts.insecure === true && !listed && !endpoint.mirror) {
      try {
        this.fetchPolicy.checkInsecure(reference.registry);
      } catch (e) {
        throw e instanceof FetchPolicyError ? e.within(`image ${reference}`) : e;
      }
    }
    this.insecure = listed || (opts.insecure === true && !endpoint.mirror);
    this.baseUrl = new URL(`${this.insecure ? "http" : "https"}://${endpoint.host}/`);
    this.signal = opts.signal;
    // On the service, never the operator's own Docker login: a client's registry sees the build's secrets or nothing.
    // A mirror is the operator's (or the local user's) own choice: it logs in with config.json for its host only.
    this.operatorLogins = this.fetchPolicy.operatorLogins;
    this.provider = endpoint.mirror
      ? resolveCredentialProvider({ ...(opts.dockerConfig !== undefined ? { dockerConfig: opts.dockerConfig } : {}) })
      : resolveCredentialProvider(this.operatorLogins ? opts : { ...opts, dockerConfig: false });
    this.scopes = mergeScopes([repositoryScope(reference.repository, ["pull"])], opts.scopes);
    this.attempts = Math.max(1, opts.attempts ?? 3);
    this.retryDelayMs = opts.retryDelayMs ?? 300;
    this.maxRetryAfterMs = opts.maxRetryAfterMs ?? 60_000;
  }

  /** How messages name the host: the registry, or `mirror <host> of <registry>`. */
  get hostLabel(): string {
    return this.endpoint.mirror ? `${this.endpoint.label} of ${this.reference.registry}` : this.reference.registry;
  }

  /** `/v2/<repository>/<kind>/<ref>` as an absolute URL. */
  url(kind: "manifests" | "blobs", ref: string): URL {
    return new URL(`/v2${this.endpoint.path}/${this.reference.repository}/${kind}/${ref}`, this.baseUrl);
  }

  /** `/v2/<repository>/blobs/uploads/` (plus query parameters). */
  uploadsUrl(query: Record<string, string> = {}): URL {
    const u = new URL(`/v2${this.endpoint.path}/${this.reference.repository}/blobs/uploads/`, this.baseUrl);
    for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
    return u;
  }

  /** Adds token scopes (e.g. `repository:<other>:pull` before a cross-repository mount). */
  addScopes(scopes: readonly string[]): void {
    this.scopes = mergeScopes(this.scopes, scopes);
  }

  /** The credentials this client would log in with (resolved once), or undefined for anonymous. */
  credentials(): Promise<RegistryCredentials | undefined> {
    const host = this.endpoint.mirror ? this.endpoint.host : this.reference.registry;
    this.credsPromise ??= this.provider ? this.provider(host) : Promise.resolve(undefined);
    return this.credsPromise;
  }

  /** One GET (no retries); see `request`. */
  async fetch(
    url: URL,
    headers: Record<string, string> = {},
    signal: AbortSignal | undefined = this.signal,
  ): Promise<FetchResult> {
    return this.request(url, { headers, signal });
  }

  /**
   * One request (no retries): follows redirects, answers auth challenges from the registry, and returns whatever
   * response results — except a 401 that persists after logging in, which throws a `RegistryAuthError` saying what to
   * set. Network failures become temporary `RegistryError`s.
   */
  async request(url: URL, opts: RequestOptions = {}): Promise<FetchResult> {
    const signal = opts.signal ?? this.signal;
    const method = opts.method ?? "GET";
    if (this.authorization === undefined) await this.preauthorize();
    for (let round = 0; ; round++) {
      const sent = this.authorization;
      const result = await this.send(url, method, opts, sent, signal);
      if (result.res.status !== 401 || result.url.origin !== this.baseUrl.origin) return result;
      const challenge = result.res.headers.get("www-authenticate") ?? "";
      if (round >= 2) throw await this.unauthorized(result, method, challenge);
      await discard(result.res);
      if (this.authorization !== sent) continue; // another request refreshed the credentials meanwhile
      this.pendingAuth ??= this.authorize(challenge, result.url, sent, signal).finally(() => {
        this.pendingAuth = undefined;
      });
      this.authorization = await this.pendingAuth;
    }
  }

  /** Runs `fn` up to `attempts` times while it fails with a temporary `RegistryError`, backing off in between. */
  async withRetries<T>(fn: (attempt: number) => Promise<T>, signal: AbortSignal | undefined = this.signal): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn(attempt);
      } catch (e) {
        if (signal?.aborted) throw abortReason(signal, e);
        if (!(e instanceof RegistryError) || !e.temporary) throw e;
        if (e.retryAfterMs !== undefined && e.retryAfterMs > this.maxRetryAfterMs) {
          throw new RegistryError(
            `${e.message} (the registry asked to wait ${Math.ceil(e.retryAfterMs / 1000)} s before retrying; giving up instead)`,
            {
              status: e.status,
              codes: [...e.codes],
              temporary: true,
              url: e.url,
              retryAfterMs: e.retryAfterMs,
              cause: e.cause,
            },
          );
        }
        if (attempt >= this.attempts) {
          if (this.attempts === 1) throw e;
          throw new RegistryError(`${e.message} (gave up after ${attempt} attempts)`, {
            status: e.status,
            codes: [...e.codes],
            temporary: true,
            url: e.url,
            cause: e.cause,
          });
        }
        await this.backoff(attempt, e.retryAfterMs, signal);
      }
    }
  }

  /** Waits before retry `attempt` + 1: `Retry-After` when given, else exponential backoff with jitter. */
  async backoff(
    attempt: number,
    retryAfterMs: number | undefined,
    signal: AbortSignal | undefined = this.signal,
  ): Promise<void> {
    const delay =
      retryAfterMs !== undefined
        ? Math.min(retryAfterMs, this.maxRetryAfterMs)
        : this.retryDelayMs * 2 ** (attempt - 1) * (1 + Math.random() * 0.25);
    await sleep(delay, undefined, signal ? { signal } : undefined).catch((err: unknown) => {
      throw signal?.aborted ? abortReason(signal, err) : err;
    });
  }

  private async send(
    start: URL,
    method: HttpMethod,
    opts: RequestOptions,
    authorization: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<FetchResult> {
    let url = start;
    let m: HttpMethod = method;
    let withBody = opts.body !== undefined;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const h: Record<string, string> = { "accept-encoding": "identity", "user-agent": "strata", ...opts.headers };
      // Never send registry credentials to another origin (S3/CDN redirect targets reject or leak them).
      if (authorization !== undefined && url.origin === this.baseUrl.origin) h["authorization"] = authorization;
      const init: RequestInit & { duplex?: "half" } = { method: m, headers: h, redirect: "manual", signal };
      if (withBody && opts.body) {
        const body = opts.body();
        init.body = body as RequestInit["body"];
        if (typeof body === "object" && !(body instanceof Uint8Array)) init.duplex = "half";
      }
      let res: Response;
      try {
        res = await this.fetchPolicy.fetch(url, init);
      } catch (e) {
        if (signal?.aborted) throw abortReason(signal, e);
        const refusal = policyRefusal(e);
        if (refusal) throw refusal.within(`image ${this.reference} (${displayUrl(url)})`);
        throw networkError(url, e, this.insecure);
      }
      const location = res.headers.get("location");
      if (opts.followRedirects === false || !REDIRECT_STATUSES.has(res.status) || location === null)
        return { res, url };
      await discard(res);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new RegistryError(`${displayUrl(url)} redirected to an invalid location "${location}"`, {
          status: res.status,
          url: displayUrl(url),
        });
      }
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new RegistryError(`${displayUrl(url)} redirected to unsupported scheme ${next.protocol}`, {
          status: res.status,
          url: displayUrl(url),
        });
      }
      if (url.protocol === "https:" && next.protocol === "http:" && !this.insecure) {
        throw new RegistryError(
          `${displayUrl(url)} redirected from https to plain http (${displayUrl(next)}); refusing the downgrade (list the registry in STRATA_INSECURE_REGISTRIES if this is intended)`,
          {
            status: res.status,
            url: displayUrl(url),
          },
        );
      }
      // 303 (and 301/302 for POST, as browsers do) turn into a GET without a body.
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && m === "POST")) {
        if (m !== "HEAD") m = "GET";
        withBody = false;
      }
      url = next;
    }
    throw new RegistryError(
      `${displayUrl(start)}: more than ${MAX_REDIRECTS} redirects; the registry or its storage backend is misconfigured`,
      { url: displayUrl(start) },
    );
  }

  /** Uses what an earlier client learnt about this registry: a still-valid cached token, or Basic credentials. */
  private async preauthorize(): Promise<void> {
    const challenge = knownChallenges.get(this.baseUrl.origin);
    if (!challenge) return;
    const creds = await this.credentials();
    if (challenge.scheme.toLowerCase() === "basic") {
      if (creds) this.authorization ??= basicAuthorization(creds);
      return;
    }
    const realm = challenge.params["realm"];
    if (!realm) return;
    let tokenUrl: URL;
    try {
      tokenUrl = new URL(realm);
    } catch {
      return;
    }
    const token = cachedToken(
      tokenCacheKey(tokenUrl.origin + tokenUrl.pathname, challenge.params["service"], this.scopes, credentialId(creds)),
    );
    if (token !== undefined) this.authorization ??= `Bearer ${token}`;
  }

  /** Answers a 401 challenge with an Authorization header value, or throws saying what is needed. */
  private async authorize(
    header: string,
    url: URL,
    sent: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const challenges = parseWwwAuthenticate(header);
    const bearer = challenges.find((c) => c.scheme.toLowerCase() === "bearer");
    const basic = challenges.find((c) => c.scheme.toLowerCase() === "basic");
    const creds = await this.credentials();
    const known = bearer ?? basic;
    if (known) knownChallenges.set(this.baseUrl.origin, known);
    if (bearer) return `Bearer ${await this.bearerToken(bearer, creds, url, sent, signal)}`;
    if (basic) {
      const registry = this.hostLabel;
      if (!creds) {
        const realm = basic.params["realm"] ? ` (realm "${basic.params["realm"]}")` : "";
        throw new RegistryAuthError(
          `registry ${registry} requires a username and password (HTTP Basic auth${realm}) for ${displayUrl(url)}, and no credentials are configured for it; ${howToLogIn(registry, this.operatorLogins)}`,
          { url: displayUrl(url) },
        );
      }
      const value = basicAuthorization(creds);
      if (sent === value) {
        throw new RegistryAuthError(
          `registry ${registry} rejected the username and password from ${creds.source ?? "the credential provider"} (401 Unauthorized for ${displayUrl(url)}); ${howToFix(registry, creds)}`,
          {
            url: displayUrl(url),
          },
        );
      }
      return value;
    }
    throw new RegistryAuthError(
      `${displayUrl(url)} answered 401 Unauthorized with no usable WWW-Authenticate challenge (${header ? `"${header}"` : "none"}); the registry's auth scheme is not supported`,
      {
        url: displayUrl(url),
      },
    );
  }

  /**
   * A bearer token for the challenge's realm/service and the union of the challenge's scope and ours, from the
   * cache or the token service. A token that was just refused (`sent`) is dropped from the cache first, so a 401
   * with `invalid_token` / `insufficient_scope` (or an expired token) gets exactly one fresh token.
   */
  private async bearerToken(
    challenge: AuthChallenge,
    creds: RegistryCredentials | undefined,
    url: URL,
    sent: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const realm = challenge.params["realm"];
    let tokenUrl: URL;
    try {
      tokenUrl = new URL(realm ?? "");
    } catch {
      throw new RegistryError(
        `${displayUrl(url)} asked for a Bearer token but its challenge has no valid realm URL (${realm === undefined ? "missing" : `"${realm}"`})`,
        { status: 401, url: displayUrl(url) },
      );
    }
    if (tokenUrl.protocol !== "https:" && tokenUrl.protocol !== "http:") {
      throw new RegistryError(`${displayUrl(url)} names a token realm with unsupported scheme ${tokenUrl.protocol}`, {
        status: 401,
        url: displayUrl(url),
      });
    }
    if (creds && tokenUrl.protocol === "http:" && !this.insecure && !isInsecureHost(tokenUrl.host)) {
      throw new RegistryAuthError(
        `registry ${this.hostLabel} sends logins to a plain-http token service (${displayUrl(tokenUrl)}); refusing to send credentials unencrypted (list ${tokenUrl.host} in STRATA_INSECURE_REGISTRIES if this is intended)`,
        {
          url: displayUrl(tokenUrl),
        },
      );
    }
    const service = challenge.params["service"];
    if (challenge.params["scope"]) this.scopes = mergeScopes(this.scopes, challenge.params["scope"]);
    const scopes = [...this.scopes];
    const key = tokenCacheKey(tokenUrl.origin + tokenUrl.pathname, service, scopes, credentialId(creds));
    if (sent?.startsWith("Bearer ")) invalidateToken(key, sent.slice(7));

    if (service) tokenUrl.searchParams.set("service", service);
    for (const s of scopes) tokenUrl.searchParams.append("scope", s);
    return getToken(key, () => this.requestToken(tokenUrl, creds, signal));
  }

  private async requestToken(
    tokenUrl: URL,
    creds: RegistryCredentials | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ token: string; expiresAt: number }> {
    const headers: Record<string, string> = { "user-agent": "strata", accept: "application/json" };
    if (creds) headers["authorization"] = basicAuthorization(creds);
    const registry = this.hostLabel;
    const res = await this.withRetries(async () => {
      let r: Response;
      try {
        r = await this.fetchPolicy.fetch(tokenUrl, { headers, ...(signal ? { signal } : {}), redirect: "follow" });
      } catch (e) {
        if (signal?.aborted) throw abortReason(signal, e);
        const refusal = policyRefusal(e);
        if (refusal) throw refusal.within(`the token service of registry ${registry} (${displayUrl(tokenUrl)})`);
        throw networkError(tokenUrl, e, false);
      }
      if (r.status === 401 || r.status === 403) {
        const detail = await errorDetail(r);
        throw new RegistryAuthError(
          creds
            ? `the token service of registry ${registry} (${displayUrl(tokenUrl)}) rejected the username and password from ${creds.source ?? "the credential provider"} (${r.status}${detail}); ${howToFix(registry, creds)}`
            : `the token service of registry ${registry} (${displayUrl(tokenUrl)}) refused an anonymous token (${r.status}${detail}); ${howToLogIn(registry, this.operatorLogins)}`,
          { status: r.status, url: displayUrl(tokenUrl) },
        );
      }
      if (!r.ok)
        throw await errorFromResponse(
          r,
          tokenUrl,
          `token request for ${this.reference}`,
          "the token service does not know this repository",
          "GET",
        );
      return r;
    }, signal);
    const body = await readBody(res, 1024 * 1024, `token response from ${displayUrl(tokenUrl)}`);
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
    } catch {
      // handled below
    }
    const token = json["token"] || json["access_token"];
    if (typeof token !== "string" || token.length === 0) {
      throw new RegistryError(
        `token response from ${displayUrl(tokenUrl)} has no "token" or "access_token" string; the token service is misbehaving`,
        { status: res.status, url: displayUrl(tokenUrl) },
      );
    }
    return { token, expiresAt: tokenExpiry(json) };
  }

  /** The error for a 401 that persisted after logging in (or after the one retry with a fresh token). */
  private async unauthorized(result: FetchResult, method: HttpMethod, challenge: string): Promise<RegistryAuthError> {
    const detail = await errorDetail(result.res);
    const creds = await this.credentials();
    const registry = this.hostLabel;
    const error = parseWwwAuthenticate(challenge).find((c) => c.scheme.toLowerCase() === "bearer")?.params["error"];
    const why = error === "insufficient_scope" ? " (insufficient_scope: the token does not grant this access)" : "";
    const who = creds ? `the credentials from ${creds.source ?? "the credential provider"}` : "anonymous access";
    const fix = creds ? howToFix(registry, creds) : howToLogIn(registry, this.operatorLogins);
    return new RegistryAuthError(
      `registry ${registry} answered ${method} ${displayUrl(result.url)} with 401 Unauthorized${detail}${why}: it does not accept ${who} for ${this.reference.repository}; ${fix}`,
      {
        url: displayUrl(result.url),
      },
    );
  }
}

function howToLogIn(registry: string, operatorLogins: boolean): string {
  if (!operatorLogins)
    return `set ${SECRET_USERNAME} and ${SECRET_PASSWORD} in the image's secret: a build service logs in to a client's registry only with the build's own secrets, never with its operator's Docker login`;
  return `set ${SECRET_USERNAME} and ${SECRET_PASSWORD} in the image's secret (for the CLI: in the environment), or log in with \`docker login ${registry}\` so ~/.docker/config.json has credentials for it`;
}

function howToFix(registry: string, creds: RegistryCredentials): string {
  return `check the username and password${creds.source?.includes(SECRET_USERNAME) ? ` in ${SECRET_USERNAME}/${SECRET_PASSWORD}` : ""}, and that the account may access this repository on ${registry}`;
}
