/**
 * The outbound fetch policy applied to connections (the shell around `fetch-rules.ts`): every fetch made on a
 * client's behalf goes through `FetchPolicy.fetch`, whose undici dispatcher resolves each new connection's host
 * itself, decides every address, and connects to the address it checked — so a redirect to another host is checked
 * when its connection is made, and a name that resolves differently a moment later (DNS rebinding) changes nothing.
 */
import { lookup } from "node:dns/promises";
import { statSync } from "node:fs";
import { isIP } from "node:net";
import { rootCertificates } from "node:tls";
import type { Agent, buildConnector } from "undici";
import { FetchPolicyConfigError, FetchPolicyError } from "../errors.js";
import {
  decide,
  insecureRefusal,
  listedInsecure,
  parseAllowRule,
  permissiveConfig,
  refusalMessage,
  serviceConfigFrom,
  type FetchPolicyConfig,
} from "./fetch-rules.js";
import { formatIp, parseIp } from "./ip-address.js";
import { registryConfigFromEnv } from "./registry-config-file.js";
import { NO_REGISTRY_CONFIG, type RegistryConfig } from "./registry-config.js";

/** Resolves a host name to its addresses (the system resolver by default; tests pass their own). */
export type Resolver = (host: string) => Promise<readonly string[]>;

const systemResolver: Resolver = async (host) =>
  (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

let nextId = 0;

/** The variables a restricted local policy reads; builds with the same values share one policy (and its connections). */
const ENV_SETTINGS = [
  "STRATA_ALLOW_FETCH",
  "STRATA_INSECURE_REGISTRIES",
  "STRATA_FETCH_MAX_BYTES",
  "STRATA_FETCH_TIMEOUT",
  "STRATA_FETCH_IDLE_TIMEOUT",
  "STRATA_REGISTRY_CONFIG",
] as const;
let restricted: { settings: string; policy: FetchPolicy } | undefined;

/** A fetch policy: its rules (`config`), the registry mirrors and TLS settings, and the connections that obey them. */
export class FetchPolicy {
  readonly config: FetchPolicyConfig;
  /**
   * The registry configuration of whoever set the policy (the operator's `--registry-config` on the service, the
   * user's STRATA_REGISTRY_CONFIG locally): mirrors per registry, plain HTTP and TLS per host. Never a client's.
   */
  readonly registryConfig: RegistryConfig;
  /** Distinguishes policies in process-wide caches (an image opened under one policy is not reused under another). */
  readonly id = `fetch-policy-${nextId++}`;
  readonly #resolve: Resolver;
  #agent: Agent | undefined;
  #connector: buildConnector.connector | undefined;
  /** Connectors for hosts with their own TLS settings (`insecure`, `ca`), by host[:port]. */
  readonly #tlsConnectors = new Map<string, buildConnector.connector>();
  /** The policies mirror requests use (see `forMirror`), by host. */
  readonly #mirrorPolicies = new Map<string, FetchPolicy>();

  constructor(config: FetchPolicyConfig, opts: { resolve?: Resolver; registryConfig?: RegistryConfig } = {}) {
    this.config = config;
    this.#resolve = opts.resolve ?? systemResolver;
    this.registryConfig = opts.registryConfig ?? NO_REGISTRY_CONFIG;
  }

  /** Refuses nothing: a local build on the user's own machine, by default. */
  static permissive(): FetchPolicy {
    return new FetchPolicy(permissiveConfig());
  }

  /**
   * A local build's policy: permissive unless `STRATA_FETCH_POLICY=restricted`, which applies the service's rules
   * with `STRATA_ALLOW_FETCH` (comma-separated allowances) and `STRATA_INSECURE_REGISTRIES`.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): FetchPolicy {
    const mode = (env["STRATA_FETCH_POLICY"] ?? "").trim().toLowerCase();
    if (mode === "" || mode === "open") return defaultFetchPolicy(env);
    if (mode !== "restricted")
      throw new FetchPolicyConfigError(`STRATA_FETCH_POLICY=${mode}: expected "restricted" or "open" (the default)`);
    const settings = ENV_SETTINGS.map((k) => env[k] ?? "").join("\n");
    if (restricted?.settings !== settings)
      restricted = {
        settings,
        policy: new FetchPolicy(
          { ...serviceConfigFrom({}, env), origin: "local" },
          { registryConfig: registryConfigFromEnv(env) },
        ),
      };
    return restricted.policy;
  }

  /** This policy with another registry configuration (the operator's `--registry-config`). */
  withRegistryConfig(registryConfig: RegistryConfig): FetchPolicy {
    return new FetchPolicy(this.config, { resolve: this.#resolve, registryConfig });
  }

  /**
   * The policy for requests to a mirror the registry configuration names: this one, plus an allowance for the
   * mirror's host and port when addresses are restricted — whoever set the policy chose the mirror, so its pulls may
   * reach it even on a private address, while a client naming that host itself still may not.
   */
  forMirror(host: string): FetchPolicy {
    if (!this.config.restrictAddresses) return this;
    let policy = this.#mirrorPolicies.get(host);
    if (!policy) {
      const rule = parseAllowRule(host, "registry config mirror");
      policy = new FetchPolicy(
        { ...this.config, allow: [...this.config.allow, rule] },
        { resolve: this.#resolve, registryConfig: this.registryConfig },
      );
      this.#mirrorPolicies.set(host, policy);
    }
    return policy;
  }

  /** The undici dispatcher whose connections obey the policy (one per policy, so connections are pooled). */
  async #dispatcher(): Promise<Agent> {
    const { Agent, buildConnector } = await loadUndici();
    this.#buildConnector ??= buildConnector;
    const idle = this.config.idleTimeoutMs;
    this.#connector ??= buildConnector({ timeout: this.config.connectTimeoutMs });
    this.#agent ??= new Agent({
      connect: (opts, cb) => this.#connect(opts, cb),
      ...(idle !== undefined ? { headersTimeout: idle, bodyTimeout: idle } : {}),
    });
    return this.#agent;
  }

  /** `fetch` through the policy's dispatcher. A refused connection rejects with a TypeError whose cause is a FetchPolicyError (see `policyRefusal`). */
  async fetch(url: URL | string, init: RequestInit = {}): Promise<Response> {
    const [{ fetch: undiciFetch }, dispatcher] = await Promise.all([loadUndici(), this.#dispatcher()]);
    const withDispatcher = { ...init, dispatcher } as Parameters<typeof undiciFetch>[1];
    return undiciFetch(url, withDispatcher) as unknown as Promise<Response>;
  }

  /**
   * Checks what can be checked of a URL without the network (scheme; a host that is an address literal), so a
   * refused URL fails before any cache lookup or request. Names are checked when they are resolved.
   */
  checkUrl(url: URL): void {
    if (url.protocol !== "http:" && url.protocol !== "https:")
      throw new FetchPolicyError(`${url.protocol} URLs are not fetched; use http: or https:`);
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    if (isIP(host)) this.#decide(host, portOf(url.protocol, url.port), host);
  }

  /**
   * Whether a registry login may fall back to this process's own logins (Docker's config.json, `DOCKER_CONFIG`, its
   * credential helpers; files an ECR secret names). True for a local build, the user's own; false for the service
   * (`strata serve`, `strata worker`), whose own logins are its operator's: a client's build logs in only with its
   * own secrets, else anonymously.
   */
  get operatorLogins(): boolean {
    return this.config.origin !== "service";
  }

  /** True when the operator listed `registry` as a plain-HTTP registry (or its registry config says `http = true`). */
  listsInsecure(registry: string): boolean {
    return (
      listedInsecure(this.config, registry) || this.registryConfig.registries.get(registry.toLowerCase())?.http === true
    );
  }

  /** Throws a FetchPolicyError when a client's `insecure: true` for `registry` is not allowed. */
  checkInsecure(registry: string): void {
    const refusal = insecureRefusal(this.config, registry);
    if (refusal) throw new FetchPolicyError(refusal);
  }

  /** Closes the pooled connections. */
  async close(): Promise<void> {
    await this.#agent?.close();
    for (const p of this.#mirrorPolicies.values()) await p.close();
  }

  #decide(host: string, port: number, address: string): void {
    const target = { host, port, address };
    const v = decide(this.config, target);
    if (!v.allowed) throw new FetchPolicyError(refusalMessage(this.config, target, v));
  }

  /**
   * The address a connection to `host:port` goes to: the literal itself, or the host's first address once every
   * address it resolves to passed the policy (a FetchPolicyError otherwise). Connects to nothing.
   */
  async address(host: string, port: number): Promise<string> {
    if (isIP(host)) {
      this.#decide(host, port, host);
      return host;
    }
    if (!this.config.restrictAddresses && this.#resolve === systemResolver) return host;
    const addresses = await withTimeout(this.#resolve(host), this.config.connectTimeoutMs, host);
    if (addresses.length === 0) throw Object.assign(new Error(`${host} has no addresses`), { code: "ENOTFOUND" });
    // Every address must pass: a name that mixes public and internal addresses is refused, not half-used.
    for (const a of addresses) this.#decide(host, port, a);
    const first = parseIp(addresses[0]!);
    return first ? formatIp(first) : addresses[0]!;
  }

  /**
   * The connector for a connection to `host:port`: the default one, or, for a host whose registry config section
   * says `insecure = true` or names `ca` files, one that skips certificate verification or trusts those CAs too.
   */
  #connectorFor(host: string, port: number, protocol: string): buildConnector.connector {
    const fallback = this.#connector!;
    if (protocol !== "https:" || this.registryConfig.registries.size === 0) return fallback;
    const bracketed = isIP(host) === 6 ? `[${host}]` : host;
    // Docker Hub's API host takes the settings of its `docker.io` section, as in BuildKit.
    const names = bracketed === "registry-1.docker.io" ? [`${bracketed}:${port}`, bracketed, "docker.io"] : [];
    const name = (names.length ? names : [`${bracketed}:${port}`, bracketed]).find((n) =>
      this.registryConfig.registries.has(n),
    );
    if (name === undefined) return fallback;
    const settings = this.registryConfig.registries.get(name)!;
    const pems = this.registryConfig.caPems?.get(name) ?? [];
    if (!settings.insecure && pems.length === 0) return fallback;
    let connector = this.#tlsConnectors.get(name);
    if (!connector) {
      connector = this.#buildConnector!({
        timeout: this.config.connectTimeoutMs,
        ...(settings.insecure ? { rejectUnauthorized: false } : { ca: [...rootCertificates, ...pems] }),
      });
      this.#tlsConnectors.set(name, connector);
    }
    return connector;
  }
  #buildConnector: typeof buildConnector | undefined;

  #connect(opts: buildConnector.Options, cb: buildConnector.Callback): void {
    const host = opts.hostname.toLowerCase();
    const port = portOf(opts.protocol, opts.port);
    // Made with the dispatcher, before any connection: `#connect` only runs for a dispatcher's connections.
    const connector = this.#connectorFor(host.replace(/^\[(.*)\]$/, "$1"), port, opts.protocol);
    this.address(host, port).then(
      (address) => connector({ ...opts, hostname: address }, cb),
      (e: unknown) => cb(e instanceof Error ? e : new Error(String(e)), null),
    );
  }
}

function portOf(protocol: string, port: string): number {
  return Number(port) || (protocol === "https:" ? 443 : 80);
}

async function withTimeout<T>(p: Promise<T>, ms: number, host: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          Object.assign(new Error(`resolving ${host} took longer than ${ms / 1000} s`), {
            code: "UND_ERR_CONNECT_TIMEOUT",
          }),
        ),
      ms,
    );
    timer.unref();
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * undici, loaded at the first fetch: it takes ~50 ms to import, and most builds (every fully cached one) fetch nothing.
 */
type Undici = Pick<typeof import("undici"), "Agent" | "buildConnector" | "fetch">;
let undici: Promise<Undici> | undefined;
function loadUndici(): Promise<Undici> {
  undici ??= import("undici");
  return undici;
}

let shared: { settings: string; policy: FetchPolicy } | undefined;

/**
 * The process's permissive policy (one dispatcher for every caller that names no policy), with the registry
 * configuration STRATA_REGISTRY_CONFIG names (read again when the variable or the file changes).
 */
export function defaultFetchPolicy(env: NodeJS.ProcessEnv = process.env): FetchPolicy {
  const file = env["STRATA_REGISTRY_CONFIG"]?.trim() ?? "";
  const settings = file ? `${file}\n${fileStamp(file)}` : "";
  if (shared?.settings !== settings)
    shared = { settings, policy: new FetchPolicy(permissiveConfig(), { registryConfig: registryConfigFromEnv(env) }) };
  return shared.policy;
}

/** Size and mtime of a file ("" when it cannot be read: loading it then says why). */
function fileStamp(file: string): string {
  try {
    const st = statSync(file);
    return `${st.size}:${st.mtimeMs}`;
  } catch {
    return "";
  }
}

/** The FetchPolicyError in an error's cause chain (undici wraps connection errors as `TypeError: fetch failed`). */
export function policyRefusal(e: unknown): FetchPolicyError | undefined {
  for (let cur: unknown = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++)
    if (cur instanceof FetchPolicyError) return cur;
  return undefined;
}

/** An undici error code in an error's cause chain (`UND_ERR_BODY_TIMEOUT`, …), if any. */
export function undiciCode(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("UND_ERR")) return code;
  }
  return undefined;
}
