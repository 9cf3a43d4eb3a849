/**
 * Registry credentials and bearer tokens.
 *
 *  - Credential providers: a build secret (`REGISTRY_USERNAME` + `REGISTRY_PASSWORD`), Docker's `config.json`
 *    (`auths[host].auth`, `username`/`password`, `credHelpers` / `credsStore` helpers), or any provider a caller
 *    supplies (ECR, GCP, …). Providers return a `source` phrase used in error messages; the values themselves never
 *    appear in a message, a log line, the store or a cache key.
 *  - The token cache: bearer tokens keyed by realm + service + scope set + a hash of the credentials, valid until
 *    `issued_at`/now + `expires_in` (default 60 s), shared by every client in the process and single-flighted.
 *  - Scope arithmetic (`repository:a:pull` + `repository:a:push` = `repository:a:pull,push`).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { InvalidDefinitionError } from "../errors.js";
import { DOCKER_HUB } from "./reference.js";

export interface RegistryCredentials {
  username: string;
  password: string;
  /**
   * Where the credentials came from, for error messages ("the secret's REGISTRY_USERNAME/REGISTRY_PASSWORD",
   * "/root/.docker/config.json"). Never the values.
   */
  source?: string;
}

/** Supplies credentials for a registry host (`docker.io`, `host:5000`); undefined = anonymous. */
export type CredentialProvider = (registry: string) => Promise<RegistryCredentials | undefined>;

/**
 * Variables for a registry login: a plain object, or anything with a `values()` method returning one (the SDK's
 * `Secret`). Recognised names: `REGISTRY_USERNAME`, `REGISTRY_PASSWORD`.
 */
export type SecretInput = Readonly<Record<string, string>> | { values(): Record<string, string> };

export const SECRET_USERNAME = "REGISTRY_USERNAME";
export const SECRET_PASSWORD = "REGISTRY_PASSWORD";

function secretValues(secret: SecretInput): Record<string, string> {
  const maybe = secret as { values?: unknown };
  if (typeof maybe.values === "function") return (maybe.values as () => Record<string, string>).call(secret);
  return { ...(secret as Record<string, string>) };
}

/**
 * A provider answering every registry with `REGISTRY_USERNAME` / `REGISTRY_PASSWORD` from `secret`, or undefined
 * when the secret has neither. One without the other is an `InvalidDefinitionError` naming the missing variable.
 */
export function credentialsFromSecret(secret: SecretInput): CredentialProvider | undefined {
  const v = secretValues(secret);
  const username = v[SECRET_USERNAME];
  const password = v[SECRET_PASSWORD];
  if (username === undefined && password === undefined) return undefined;
  if (username === undefined || password === undefined) {
    const missing = username === undefined ? SECRET_USERNAME : SECRET_PASSWORD;
    const present = username === undefined ? SECRET_PASSWORD : SECRET_USERNAME;
    throw new InvalidDefinitionError(
      `the registry secret has ${present} but not ${missing}; set both (or neither, to use ~/.docker/config.json or anonymous access)`,
    );
  }
  if (username.includes(":"))
    throw new InvalidDefinitionError(`${SECRET_USERNAME} must not contain ':' (HTTP Basic auth cannot carry it)`);
  const creds: RegistryCredentials = {
    username,
    password,
    source: `the secret's ${SECRET_USERNAME}/${SECRET_PASSWORD}`,
  };
  return async () => creds;
}

// ---------------------------------------------------------------------------------------------------------------
// Docker config.json

export interface DockerConfigOptions {
  /** Directory holding config.json (default `$DOCKER_CONFIG`, else `~/.docker`). */
  configDir?: string;
  /** Environment for credential helpers and `DOCKER_CONFIG` (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

interface DockerConfigFile {
  auths?: Record<string, { auth?: unknown; username?: unknown; password?: unknown; identitytoken?: unknown }>;
  credHelpers?: Record<string, unknown>;
  credsStore?: unknown;
}

/** The config.json path Docker would read: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(opts: DockerConfigOptions = {}): string {
  const env = opts.env ?? process.env;
  const dir = opts.configDir ?? (env["DOCKER_CONFIG"] || path.join(env["HOME"] || os.homedir(), ".docker"));
  return path.join(dir, "config.json");
}

/** The key Docker stores a registry's credentials under (`https://index.docker.io/v1/` for Docker Hub). */
function dockerConfigKeys(registry: string): string[] {
  if (registry === DOCKER_HUB)
    return ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"];
  return [registry];
}

/** `https://host:5000/v1/` → `host:5000` (how Docker matches `auths` keys written by old clients). */
function normaliseConfigKey(key: string): string {
  let k = key.trim().toLowerCase();
  k = k.replace(/^[a-z][a-z0-9+.-]*:\/\//, "");
  const slash = k.indexOf("/");
  return slash >= 0 ? k.slice(0, slash) : k;
}

function lookup<T>(map: Record<string, T> | undefined, registry: string): T | undefined {
  if (!map) return undefined;
  const wanted = dockerConfigKeys(registry).map(normaliseConfigKey);
  for (const exact of dockerConfigKeys(registry)) if (Object.hasOwn(map, exact)) return map[exact];
  for (const [key, value] of Object.entries(map)) if (wanted.includes(normaliseConfigKey(key))) return value;
  return undefined;
}

/**
 * Reads credentials for a registry from Docker's config.json: `credHelpers[host]` / `credsStore` (runs
 * `docker-credential-<name> get`), else `auths[host].auth` (base64 `user:password`) or `username`/`password`.
 * A missing or unreadable file means anonymous; a malformed entry is an error naming the file and the key.
 */
export function dockerConfigCredentials(opts: DockerConfigOptions = {}): CredentialProvider {
  return async (registry) => {
    const file = dockerConfigPath(opts);
    let text: string;
    try {
      text = await fsp.readFile(file, "utf8");
    } catch {
      return undefined;
    }
    let cfg: DockerConfigFile;
    try {
      cfg = JSON.parse(text) as DockerConfigFile;
    } catch (e) {
      throw new InvalidDefinitionError(`${file} is not valid JSON (${(e as Error).message}); fix or remove it`);
    }
    if (typeof cfg !== "object" || cfg === null) return undefined;

    const helper = lookup(cfg.credHelpers, registry) ?? cfg.credsStore;
    if (typeof helper === "string" && helper.length > 0) {
      const fromHelper = await runCredentialHelper(helper, registry, opts.env ?? process.env);
      if (fromHelper) return fromHelper;
    }

    const entry = lookup(cfg.auths, registry);
    if (!entry || typeof entry !== "object") return undefined;
    const source = `${file} (auths entry for ${registry})`;
    if (typeof entry.auth === "string" && entry.auth.length > 0) {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon <= 0)
        throw new InvalidDefinitionError(
          `${source}: "auth" is not base64 of "username:password"; run \`docker login ${registry}\` again or fix the file`,
        );
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), source };
    }
    if (typeof entry.username === "string" && typeof entry.password === "string" && entry.username.length > 0) {
      return { username: entry.username, password: entry.password, source };
    }
    return undefined;
  };
}

/** Runs `docker-credential-<helper> get` with the server URL on stdin (Docker's credential-helper protocol). */
async function runCredentialHelper(
  helper: string,
  registry: string,
  env: NodeJS.ProcessEnv,
): Promise<RegistryCredentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper))
    throw new InvalidDefinitionError(`docker config names an invalid credential helper "${helper}"`);
  const bin = `docker-credential-${helper}`;
  const server = registry === DOCKER_HUB ? "https://index.docker.io/v1/" : registry;
  const out = await new Promise<string | undefined>((resolve, reject) => {
    const child = execFile(bin, ["get"], { env, timeout: 30_000, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT")
        return reject(
          new InvalidDefinitionError(
            `docker config uses the credential helper "${helper}", but ${bin} is not on PATH; install it or remove the helper from config.json`,
          ),
        );
      // "credentials not found in native keychain": the helper has nothing for this host → anonymous.
      if (/not found/i.test(`${stdout}${stderr}`)) return resolve(undefined);
      reject(
        new InvalidDefinitionError(
          `${bin} get failed for ${registry} (${
            String(stderr || err.message)
              .trim()
              .split("\n")[0]
          })`,
        ),
      );
    });
    child.stdin?.end(server);
  });
  if (out === undefined) return undefined;
  let json: { Username?: unknown; Secret?: unknown };
  try {
    json = JSON.parse(out) as typeof json;
  } catch {
    throw new InvalidDefinitionError(`${bin} get printed something that is not JSON for ${registry}`);
  }
  if (typeof json.Username !== "string" || typeof json.Secret !== "string" || json.Secret.length === 0)
    return undefined;
  if (json.Username === "<token>") return undefined; // identity tokens (OAuth refresh tokens) are not supported
  return { username: json.Username, password: json.Secret, source: `credential helper ${bin}` };
}

export interface CredentialOptions {
  /** Wins over everything else (ECR, GCP and other cloud providers plug in here). */
  credentials?: CredentialProvider;
  /** `REGISTRY_USERNAME` / `REGISTRY_PASSWORD`; when it has neither, Docker's config.json is consulted. */
  secret?: SecretInput;
  /** Where to look for config.json (tests); `false` turns the Docker config lookup off. */
  dockerConfig?: DockerConfigOptions | false;
}

/** The provider a client uses: `credentials`, else the secret's variables, else Docker's config.json. */
export function resolveCredentialProvider(opts: CredentialOptions): CredentialProvider | undefined {
  if (opts.credentials) return opts.credentials;
  const fromSecret = opts.secret !== undefined ? credentialsFromSecret(opts.secret) : undefined;
  if (fromSecret) return fromSecret;
  if (opts.dockerConfig === false) return undefined;
  return dockerConfigCredentials(opts.dockerConfig ?? {});
}

export function basicAuthorization(creds: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`, "utf8").toString("base64")}`;
}

/** An opaque id for a credential pair (sha256 of both, truncated): keys the in-memory token cache only. */
export function credentialId(creds: RegistryCredentials | undefined): string {
  if (!creds) return "anonymous";
  return createHash("sha256").update(creds.username).update("\0").update(creds.password).digest("hex").slice(0, 32);
}

// ---------------------------------------------------------------------------------------------------------------
// Scopes

/**
 * Merges scope strings (`type:name:action[,action]`), combining the actions of equal resources and sorting the
 * result, so equal access sets give equal cache keys. Malformed scopes are kept verbatim.
 */
export function mergeScopes(...lists: readonly (readonly string[] | string | undefined)[]): string[] {
  const actions = new Map<string, Set<string>>();
  const verbatim = new Set<string>();
  for (const list of lists) {
    if (list === undefined) continue;
    const items = typeof list === "string" ? list.split(" ") : list.flatMap((s) => s.split(" "));
    for (const scope of items) {
      if (!scope) continue;
      const last = scope.lastIndexOf(":");
      const first = scope.indexOf(":");
      if (first <= 0 || last === first) {
        verbatim.add(scope);
        continue;
      }
      const resource = scope.slice(0, last);
      const set = actions.get(resource) ?? new Set<string>();
      for (const a of scope.slice(last + 1).split(",")) if (a) set.add(a);
      actions.set(resource, set);
    }
  }
  const out = [...verbatim];
  for (const [resource, set] of actions) out.push(`${resource}:${[...set].sort().join(",")}`);
  return out.sort();
}

/** `repository:<name>:pull[,push]`. */
export function repositoryScope(repository: string, actions: readonly ("pull" | "push")[]): string {
  return `repository:${repository}:${[...new Set(actions)].sort().join(",")}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Token cache

interface CachedToken {
  token: string;
  /** ms since the epoch */
  expiresAt: number;
}

const DEFAULT_TOKEN_SECONDS = 60;
const tokens = new Map<string, CachedToken>();
const inflight = new Map<string, Promise<CachedToken>>();

export function tokenCacheKey(
  realm: string,
  service: string | undefined,
  scopes: readonly string[],
  credId: string,
): string {
  return JSON.stringify([realm, service ?? "", [...scopes].sort(), credId]);
}

/**
 * When a token stops being used: `issued_at` (if given and not in the future) or now, plus `expires_in` seconds
 * (default 60), less a small margin so a token is not sent just as it expires.
 */
export function tokenExpiry(body: { expires_in?: unknown; issued_at?: unknown }, now = Date.now()): number {
  const seconds =
    typeof body.expires_in === "number" && Number.isFinite(body.expires_in) && body.expires_in > 0
      ? body.expires_in
      : DEFAULT_TOKEN_SECONDS;
  let start = now;
  if (typeof body.issued_at === "string") {
    const t = Date.parse(body.issued_at);
    if (Number.isFinite(t) && t < now) start = t;
  }
  const lifetime = seconds * 1000;
  return start + lifetime - Math.min(5000, lifetime / 10);
}

/** A cached token that is still valid, if any. */
export function cachedToken(key: string, now = Date.now()): string | undefined {
  const t = tokens.get(key);
  if (!t) return undefined;
  if (t.expiresAt <= now) {
    tokens.delete(key);
    return undefined;
  }
  return t.token;
}

/** Drops `token` from the cache (only if it is still the one cached under `key`). */
export function invalidateToken(key: string, token: string): void {
  if (tokens.get(key)?.token === token) tokens.delete(key);
}

/** Returns the cached token for `key`, or runs `fetchToken` once for all concurrent callers and caches it. */
export async function getToken(key: string, fetchToken: () => Promise<CachedToken>): Promise<string> {
  const hit = cachedToken(key);
  if (hit !== undefined) return hit;
  let p = inflight.get(key);
  if (!p) {
    p = fetchToken().finally(() => inflight.delete(key));
    inflight.set(key, p);
  }
  const t = await p;
  tokens.set(key, t);
  return t.token;
}

/** Forgets every cached token (tests; after credentials change). */
export function clearTokenCache(): void {
  tokens.clear();
}
