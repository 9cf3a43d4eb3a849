/**
 * `strata serve`'s front-door, quota, TLS and metrics flags, each with an environment variable of the same name
 * (`--max-connections` ↔ STRATA_MAX_CONNECTIONS); a flag wins over its variable. Parsing is pure; unset values are
 * left to the service's defaults (front-door.ts, quotas.ts).
 */
import { ConfigError } from "../errors.js";
import { parseDuration } from "../sandbox/runc.js";
import { parseMemory } from "../sandbox/step-limits.js";
import type { FrontDoorOptions } from "../service/front-door.js";
import type { TenantQuotaLimits } from "../service/quotas.js";

export const DOOR_FLAGS = {
  /** Open connections in all (default 1024). */
  "max-connections": { type: "string" },
  /** Open connections from one client address; 0 for no such cap (default 128). */
  "max-connections-per-client": { type: "string" },
  /** Request headers must arrive within this (default 20s). */
  "header-timeout": { type: "string" },
  /** A non-streaming request's body must arrive within this (default 60s). */
  "request-timeout": { type: "string" },
  /** A connection with no traffic for this long is closed (default 60s). */
  "idle-timeout": { type: "string" },
  /** Builds one tenant may have queued or running (default 32). */
  "tenant-max-builds": { type: "string" },
  /** Builds one tenant may run at once (default: all slots with one tenant, half with several). */
  "tenant-max-running": { type: "string" },
  /** Bytes one tenant may be uploading at once (default 8GiB). */
  "tenant-upload-in-flight": { type: "string" },
  /** Bytes one tenant may upload per hour (default 32GiB). */
  "tenant-upload-per-hour": { type: "string" },
  /** Store bytes one tenant may add per 30 days (default 200GiB). */
  "tenant-store-bytes": { type: "string" },
  /** Serve HTTPS with this PEM certificate chain (needs --tls-key). */
  "tls-cert": { type: "string" },
  /** The PEM private key of --tls-cert. */
  "tls-key": { type: "string" },
  /** Serve GET /metrics (Prometheus) on this HOST:PORT, apart from the API (default: no metrics listener). */
  "metrics-listen": { type: "string" },
} as const;

type DoorFlag = keyof typeof DOOR_FLAGS;

export interface DoorConfig {
  frontDoor: FrontDoorOptions;
  quotas: TenantQuotaLimits;
  maxRunningPerTenant?: number;
  tls?: { certFile: string; keyFile: string };
  metricsListen?: { host: string; port: number };
}

/** The configuration the flags (else their STRATA_* variables) ask for; throws ConfigError naming a bad one. */
export function doorConfig(
  values: Partial<Record<DoorFlag, string>>,
  env: NodeJS.ProcessEnv = process.env,
): DoorConfig {
  const get = (flag: DoorFlag): { value: string; source: string } | undefined => {
    const v = values[flag];
    if (v !== undefined) return { value: v, source: `--${flag}` };
    const name = `STRATA_${flag.toUpperCase().replace(/-/g, "_")}`;
    const e = env[name];
    return e !== undefined && e.trim() !== "" ? { value: e.trim(), source: name } : undefined;
  };
  const count = (flag: DoorFlag, min: number): number | undefined => {
    const v = get(flag);
    if (!v) return undefined;
    const n = Number(v.value);
    if (!Number.isSafeInteger(n) || n < min)
      throw new ConfigError(`${v.source}: expects a whole number ≥ ${min}, got ${JSON.stringify(v.value)}`);
    return n;
  };
  const duration = (flag: DoorFlag): number | undefined => {
    const v = get(flag);
    return v ? parseDuration(v.value, v.source) : undefined;
  };
  const size = (flag: DoorFlag): number | undefined => {
    const v = get(flag);
    if (!v) return undefined;
    try {
      return parseMemory(v.value, v.source);
    } catch (e) {
      throw new ConfigError((e as Error).message.replace("invalid memory size", "invalid size"));
    }
  };
  const out: DoorConfig = {
    frontDoor: defined({
      maxConnections: count("max-connections", 1),
      maxConnectionsPerClient: count("max-connections-per-client", 0),
      headersTimeoutMs: duration("header-timeout"),
      requestTimeoutMs: duration("request-timeout"),
      idleTimeoutMs: duration("idle-timeout"),
    }),
    quotas: defined({
      maxActiveBuilds: count("tenant-max-builds", 1),
      maxUploadBytesInFlight: size("tenant-upload-in-flight"),
      maxUploadBytesPerWindow: size("tenant-upload-per-hour"),
      maxStoreBytes: size("tenant-store-bytes"),
    }),
  };
  const running = count("tenant-max-running", 1);
  if (running !== undefined) out.maxRunningPerTenant = running;
  const cert = get("tls-cert");
  const key = get("tls-key");
  if (Boolean(cert) !== Boolean(key))
    throw new ConfigError(
      `${cert ? cert.source : key!.source} needs ${cert ? "--tls-key (or STRATA_TLS_KEY)" : "--tls-cert (or STRATA_TLS_CERT)"} too: HTTPS needs both the certificate and its key`,
    );
  if (cert && key) out.tls = { certFile: cert.value, keyFile: key.value };
  const metrics = get("metrics-listen");
  if (metrics) out.metricsListen = hostPort(metrics.value, metrics.source);
  return out;
}

/** `HOST:PORT`, `[v6]:PORT` or `PORT` (loopback). */
export function hostPort(s: string, source: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]+):)?(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new ConfigError(
      `${source}: expects HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464) or a port, got ${JSON.stringify(s)}`,
    );
  return { host: m[1] ? m[1].replace(/^\[|\]$/g, "") : "127.0.0.1", port };
}

function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
