/**
 * The outbound fetch policy as data, and its decisions (pure): which hosts and addresses a fetch made on a client's
 * behalf may connect to, which registries may be spoken to over plain HTTP, and the limits of a URL download. The
 * shell that applies it to connections is `fetch-policy.ts`.
 */
import { FetchPolicyConfigError } from "../errors.js";
import {
  canonicalIp,
  cidrContains,
  classifyAddress,
  describeAddress,
  formatIp,
  parseCidr,
  parseIp,
  type Cidr,
  type IpAddress,
} from "./ip-address.js";

/** One operator allowance: a host name or an address range, on one port or on any. */
export interface AllowRule {
  /** As the operator wrote it. */
  readonly text: string;
  /** A host name (lowercase): matches that name as requested, whatever it resolves to. */
  readonly host?: string;
  /** An address or range: matches a connection to an address in it. */
  readonly range?: Cidr;
  /** Only this port (any port when absent). */
  readonly port?: number;
}

/** Where a policy came from, which decides how its messages say to change it. */
export type PolicyOrigin = "service" | "local";

export interface FetchPolicyConfig {
  readonly origin: PolicyOrigin;
  /** Refuse loopback, link-local, private, shared, unique-local, unspecified, multicast and reserved addresses. */
  readonly restrictAddresses: boolean;
  /** Hosts and ranges allowed despite `restrictAddresses`. */
  readonly allow: readonly AllowRule[];
  /** Refuse a client's `insecure: true` for a registry the operator did not list. */
  readonly restrictInsecure: boolean;
  /** Registries (`host:port`, or `host` for any port) that speak plain HTTP, lowercase. */
  readonly insecureRegistries: readonly string[];
  /** Largest URL download (`ADD <url>`), in bytes; no cap when absent. */
  readonly maxDownloadBytes?: number;
  /** Longest TCP (+TLS) connect, DNS included. Default 30 s. */
  readonly connectTimeoutMs: number;
  /** Longest wait for response headers, or between two chunks of a body. */
  readonly idleTimeoutMs?: number;
  /** Longest URL download, from the request to the last byte; none when absent. */
  readonly downloadTimeoutMs?: number;
}

/** The service's defaults: only public addresses, only listed plain-HTTP registries, 2 GiB and 1 h per download. */
export const SERVICE_DEFAULTS = {
  maxDownloadBytes: 2 * 1024 ** 3,
  connectTimeoutMs: 30_000,
  idleTimeoutMs: 60_000,
  downloadTimeoutMs: 60 * 60_000,
} as const;

/** A policy that refuses nothing (local builds, by default): today's behaviour. */
export function permissiveConfig(): FetchPolicyConfig {
  return {
    origin: "local",
    restrictAddresses: false,
    allow: [],
    restrictInsecure: false,
    insecureRegistries: [],
    connectTimeoutMs: SERVICE_DEFAULTS.connectTimeoutMs,
  };
}

/** The service's policy with the operator's allowances and limits. */
export function serviceConfig(
  opts: {
    allow?: readonly AllowRule[];
    insecureRegistries?: readonly string[];
    maxDownloadBytes?: number;
    connectTimeoutMs?: number;
    idleTimeoutMs?: number;
    downloadTimeoutMs?: number;
  } = {},
): FetchPolicyConfig {
  return {
    origin: "service",
    restrictAddresses: true,
    allow: opts.allow ?? [],
    restrictInsecure: true,
    insecureRegistries: (opts.insecureRegistries ?? []).map((r) => r.toLowerCase()),
    maxDownloadBytes: opts.maxDownloadBytes ?? SERVICE_DEFAULTS.maxDownloadBytes,
    connectTimeoutMs: opts.connectTimeoutMs ?? SERVICE_DEFAULTS.connectTimeoutMs,
    idleTimeoutMs: opts.idleTimeoutMs ?? SERVICE_DEFAULTS.idleTimeoutMs,
    downloadTimeoutMs: opts.downloadTimeoutMs ?? SERVICE_DEFAULTS.downloadTimeoutMs,
  };
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$/;

function parsePort(p: string, text: string, flag: string): number {
  if (!/^\d{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535)
    throw new FetchPolicyConfigError(`${flag} ${JSON.stringify(text)}: the port must be 1-65535`);
  return Number(p);
}

/**
 * Parses an allowance: `host`, `host:port`, an address (`127.0.0.1`, `::1`), `address:port` (`[::1]:5000` for IPv6),
 * or a range (`10.0.0.0/8`, `fd00::/8`, optionally `[fd00::/8]:5000`). `flag` names the option in messages.
 */
export function parseAllowRule(text: string, flag = "--allow-fetch"): AllowRule {
  const t = text.trim().toLowerCase();
  const bad = () =>
    new FetchPolicyConfigError(
      `${flag} ${JSON.stringify(text)}: expected host[:port], an address[:port] ([::1]:5000 for IPv6) or a range (10.0.0.0/8, fd00::/8)`,
    );
  if (t === "") throw bad();
  let hostPart = t;
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(t);
  if (bracketed) {
    hostPart = bracketed[1]!;
    if (bracketed[2] !== undefined) port = parsePort(bracketed[2], text, flag);
  } else if ((t.match(/:/g) ?? []).length === 1) {
    const i = t.indexOf(":");
    hostPart = t.slice(0, i);
    port = parsePort(t.slice(i + 1), text, flag);
  }
  const withPort = port !== undefined ? { port } : {};
  if (/^[\d.]+(\/\d+)?$/.test(hostPart) || hostPart.includes(":")) {
    const range = parseCidr(hostPart);
    if (!range) throw bad();
    return { text, range: { address: canonicalIp(range.address), prefix: range.prefix }, ...withPort };
  }
  if (!HOST_NAME.test(hostPart)) throw bad();
  return { text, host: hostPart.replace(/\.$/, ""), ...withPort };
}

/** Parses a comma-separated list of allowances (`STRATA_ALLOW_FETCH`); empty entries are skipped. */
export function parseAllowList(list: string, flag: string): AllowRule[] {
  return list
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s) => parseAllowRule(s, flag));
}

/** A connection about to be made: the host as the URL names it, its port, and the address it resolved to. */
export interface ConnectTarget {
  /** Host name or address literal from the URL (lowercase; IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** The address to connect to (the host itself when it is a literal). */
  readonly address: string;
}

export type Verdict =
  | { readonly allowed: true; readonly rule?: AllowRule }
  | {
      readonly allowed: false;
      /** Why: `127.0.0.1 is a loopback address (127.0.0.0/8)`. */
      readonly reason: string;
      /** The allowance that would let it through: `127.0.0.1:5000`. */
      readonly allowWith: string;
    };

function ruleMatches(rule: AllowRule, host: string, port: number, ip: IpAddress): boolean {
  if (rule.port !== undefined && rule.port !== port) return false;
  if (rule.host !== undefined) return rule.host === host.replace(/\.$/, "");
  return rule.range !== undefined && cidrContains(rule.range, ip);
}

function hostWithPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Decides one connection. An address that is not an IP address at all is refused (resolvers return addresses). */
export function decide(cfg: FetchPolicyConfig, t: ConnectTarget): Verdict {
  if (!cfg.restrictAddresses) return { allowed: true };
  const parsed = parseIp(t.address);
  if (!parsed) return { allowed: false, reason: `${t.address} is not an IP address`, allowWith: t.host };
  const ip = canonicalIp(parsed);
  const rule = cfg.allow.find((r) => ruleMatches(r, t.host, t.port, ip));
  if (rule) return { allowed: true, rule };
  const cls = classifyAddress(parsed);
  if (cls.kind === "public") return { allowed: true };
  const hostIsAddress = parseIp(t.host) !== undefined;
  const described = describeAddress(parsed, cls);
  return {
    allowed: false,
    reason: hostIsAddress ? described : `${t.host} resolved to ${described.replace(/ is /, ", ")}`,
    allowWith: hostWithPort(hostIsAddress ? formatIp(ip) : t.host, t.port),
  };
}

/** `--allow-fetch X` for the service, `STRATA_ALLOW_FETCH=X` for a local build. */
export function allowHint(cfg: FetchPolicyConfig, allowWith: string): string {
  return cfg.origin === "service"
    ? `an operator can allow it with --allow-fetch ${allowWith} (or STRATA_ALLOW_FETCH)`
    : `allow it with STRATA_ALLOW_FETCH=${allowWith}, or unset STRATA_FETCH_POLICY`;
}

/** The name of the policy in messages. */
export function policyName(cfg: FetchPolicyConfig): string {
  return cfg.origin === "service" ? "the service's fetch policy" : "the fetch policy (STRATA_FETCH_POLICY=restricted)";
}

/** The message for a refused connection: `connecting to 127.0.0.1:5000 is refused by the service's fetch policy: …`. */
export function refusalMessage(cfg: FetchPolicyConfig, t: ConnectTarget, v: Extract<Verdict, { allowed: false }>) {
  return `connecting to ${hostWithPort(t.host, t.port)} is refused by ${policyName(cfg)}: ${v.reason}; ${allowHint(cfg, v.allowWith)}`;
}

function hostOf(registry: string): string {
  const r = registry.toLowerCase();
  if (r.startsWith("[")) return r.slice(0, r.indexOf("]") + 1);
  const c = r.indexOf(":");
  return c >= 0 ? r.slice(0, c) : r;
}

/** True when the operator listed `registry` (`host:port` exactly, or its host for any port) as plain HTTP. */
export function listedInsecure(cfg: FetchPolicyConfig, registry: string): boolean {
  const full = registry.toLowerCase();
  return cfg.insecureRegistries.some((e) => e === full || e === hostOf(full));
}

/**
 * The refusal of a client's `insecure: true` for `registry`, or undefined when the policy allows it (not
 * restricted, or the registry is listed).
 */
export function insecureRefusal(cfg: FetchPolicyConfig, registry: string): string | undefined {
  if (!cfg.restrictInsecure || listedInsecure(cfg, registry)) return undefined;
  const how =
    cfg.origin === "service"
      ? `an operator can list it with --insecure-registry ${registry} (or STRATA_INSECURE_REGISTRIES)`
      : `list it in STRATA_INSECURE_REGISTRIES`;
  return `plain HTTP (insecure) to registry ${registry} is refused by ${policyName(cfg)}: the operator has not listed it as an insecure registry; ${how}, or drop \`insecure\` to use HTTPS`;
}

/** How to change a limit: `an operator can raise it with --fetch-timeout` / `raise it with STRATA_FETCH_TIMEOUT`. */
export function limitHint(cfg: FetchPolicyConfig, flag: string, env: string): string {
  return cfg.origin === "service" ? `an operator can raise it with ${flag} (or ${env})` : `raise it with ${env}`;
}

/** `1500ms`, `30s`, `5m`, `1h` (or a plain number of seconds) as ms. */
export function parseFetchDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m?.[2] ?? "s"];
  const ms = m ? Math.round(Number(m[1]) * unit!) : Number.NaN;
  if (!Number.isFinite(ms) || ms <= 0)
    throw new FetchPolicyConfigError(`${what} ${JSON.stringify(text)}: expected a duration such as 30s, 5m or 1h`);
  return ms;
}

/** `1000`, `64KiB`, `500MB`, `2GiB` (B, kB/KB, MB, GB, KiB, MiB, GiB) as bytes. */
export function parseByteSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?$/i.exec(text.trim());
  const units: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };
  const n = m ? Math.floor(Number(m[1]) * units[(m[2] ?? "b").toLowerCase()]!) : Number.NaN;
  if (!Number.isFinite(n) || n < 1)
    throw new FetchPolicyConfigError(`${what} ${JSON.stringify(text)}: expected a size such as 500MB or 2GiB`);
  return n;
}

/** The operator's settings, as flags or environment variables give them (strings, unparsed). */
export interface FetchSettings {
  allow?: readonly string[];
  insecureRegistries?: readonly string[];
  maxBytes?: string;
  timeout?: string;
  idleTimeout?: string;
}

/**
 * The service's policy from settings: the flags' values, each list extended and each limit defaulted by the
 * environment (`STRATA_ALLOW_FETCH`, `STRATA_INSECURE_REGISTRIES`, `STRATA_FETCH_MAX_BYTES`, `STRATA_FETCH_TIMEOUT`,
 * `STRATA_FETCH_IDLE_TIMEOUT`). Throws a FetchPolicyConfigError naming the malformed setting.
 */
export function serviceConfigFrom(flags: FetchSettings, env: NodeJS.ProcessEnv): FetchPolicyConfig {
  const list = (v: string | undefined) => (v ?? "").split(",").filter((s) => s.trim() !== "");
  const allow = [
    ...(flags.allow ?? []).map((r) => parseAllowRule(r, "--allow-fetch")),
    ...parseAllowList(env["STRATA_ALLOW_FETCH"] ?? "", "STRATA_ALLOW_FETCH"),
  ];
  const insecure = [...(flags.insecureRegistries ?? []), ...list(env["STRATA_INSECURE_REGISTRIES"])].map((r) =>
    r.trim(),
  );
  for (const r of insecure)
    if (!/^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:\d{1,5})?$/i.test(r))
      throw new FetchPolicyConfigError(`--insecure-registry ${JSON.stringify(r)}: expected host or host:port`);
  const maxBytes = flags.maxBytes ?? env["STRATA_FETCH_MAX_BYTES"];
  const timeout = flags.timeout ?? env["STRATA_FETCH_TIMEOUT"];
  const idle = flags.idleTimeout ?? env["STRATA_FETCH_IDLE_TIMEOUT"];
  return serviceConfig({
    allow,
    insecureRegistries: insecure,
    ...(maxBytes ? { maxDownloadBytes: parseByteSize(maxBytes, "--fetch-max-bytes") } : {}),
    ...(timeout ? { downloadTimeoutMs: parseFetchDuration(timeout, "--fetch-timeout") } : {}),
    ...(idle ? { idleTimeoutMs: parseFetchDuration(idle, "--fetch-idle-timeout") } : {}),
  });
}
