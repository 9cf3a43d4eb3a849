/**
 * Connections to the Redis that holds the build queue (STRATA_REDIS_URL), for `strata serve` and `strata worker`.
 *
 * - Redis must require a password. A RUN step with the host network can reach a Redis on the build machine; open,
 *   it could read every queued job and forge any build's result. So before using Redis the service and the workers
 *   check both that the URL carries a password and that Redis refuses a client without one (a Redis without
 *   `requirepass` ignores the password a client sends, so the URL alone proves nothing). `--insecure-redis`
 *   (STRATA_REDIS_INSECURE=1) skips the check, for a Redis the operator protects otherwise.
 * - `rediss://` connects over TLS (ioredis), verifying the server's certificate against the system CAs, or against
 *   the PEM file STRATA_REDIS_CA names (a private CA or a self-signed certificate).
 */
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { Redis, type RedisOptions } from "ioredis";
import { StrataError } from "../errors.js";

/** Where the queue's Redis is and how to trust it. */
export interface RedisTarget {
  /** `redis://[:password@]host:port[/db]`, or `rediss://…` for TLS. */
  url: string;
  /** PEM file of the CA that signed the server's certificate (`rediss://` only). Default: the system's CAs. */
  caFile?: string;
  /** Use a Redis that answers without a password. Default false (refused). */
  insecure?: boolean;
}

/** Redis could not be reached, or a queue operation failed. */
export class QueueError extends StrataError {
  override readonly code = "QUEUE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "QueueError";
  }
}

/** The Redis target the environment names: STRATA_REDIS_URL, STRATA_REDIS_CA, STRATA_REDIS_INSECURE=1. */
export function redisTargetFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  flags: { insecure?: boolean } = {},
): RedisTarget | undefined {
  const url = env.STRATA_REDIS_URL?.trim();
  if (!url) return undefined;
  const caFile = env.STRATA_REDIS_CA?.trim();
  const insecure = flags.insecure || env.STRATA_REDIS_INSECURE === "1";
  return { url, ...(caFile ? { caFile } : {}), ...(insecure ? { insecure } : {}) };
}

/** Accepts a bare URL where a target is expected. */
export function toTarget(t: RedisTarget | string): RedisTarget {
  return typeof t === "string" ? { url: t } : t;
}

/** ioredis options for the target's TLS (none for `redis://`); checks that the URL is a Redis URL. */
function tlsOptions(t: RedisTarget): Pick<RedisOptions, "tls"> {
  let scheme: string;
  try {
    scheme = new URL(t.url).protocol;
  } catch {
    throw new QueueError(
      `STRATA_REDIS_URL is not a URL: expected redis://:<password>@<host>:<port> (or rediss:// for TLS)`,
    );
  }
  if (scheme !== "redis:" && scheme !== "rediss:")
    throw new QueueError(
      `STRATA_REDIS_URL ${redactUrl(t.url)} is not a Redis URL: expected redis://:<password>@<host>:<port> (or rediss:// for TLS)`,
    );
  if (!t.caFile) return {};
  if (scheme !== "rediss:")
    throw new QueueError(
      `STRATA_REDIS_CA is set but STRATA_REDIS_URL ${redactUrl(t.url)} is not rediss://: a CA is only used for TLS; use rediss://`,
    );
  let ca: Buffer;
  try {
    ca = readFileSync(t.caFile);
  } catch (e) {
    throw new QueueError(
      `cannot read STRATA_REDIS_CA ${t.caFile}: ${e instanceof Error ? e.message : String(e)}; it names the PEM file of the CA that signed Redis's certificate`,
    );
  }
  return { tls: { ca } };
}

/**
 * A Redis connection for commands (`blocking` for one that waits in XREAD or BullMQ's blocking calls: those must
 * retry forever rather than fail a request while Redis restarts).
 */
export function openRedis(target: RedisTarget | string, name: string, opts: { blocking?: boolean } = {}): Redis {
  const t = toTarget(target);
  const r = new Redis(t.url, {
    connectionName: name,
    maxRetriesPerRequest: opts.blocking ? null : 20,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(times * 100, 2000),
    ...tlsOptions(t),
  });
  // Connection errors are retried by ioredis; commands report them. Without a listener they would be "unhandled".
  // The last one is kept for checkRedis's message (a TLS or DNS failure otherwise shows only as a timeout).
  r.on("error", (e: unknown) => lastErrors.set(r, e instanceof Error ? e.message : String(e)));
  return r;
}

const lastErrors = new WeakMap<Redis, string>();

/** Connection options for BullMQ (which creates, and on close closes, its own connections). */
export function bullConnection(
  target: RedisTarget | string,
  name: string,
): {
  url: string;
  connectionName: string;
  maxRetriesPerRequest: null;
  retryStrategy: (times: number) => number;
} & Pick<RedisOptions, "tls"> {
  const t = toTarget(target);
  return {
    url: t.url,
    connectionName: name,
    maxRetriesPerRequest: null,
    retryStrategy: (times) => Math.min(times * 100, 2000),
    ...tlsOptions(t),
  };
}

/** Node's TLS verification error codes: the server's certificate is not trusted (a retry cannot help). */
const TLS_TRUST_ERRORS = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** Waits until `r` answers PING, or fails with a clear message after `timeoutMs`. */
export async function checkRedis(r: Redis, url: string, timeoutMs = 10_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let onError: ((e: Error & { code?: string }) => void) | undefined;
  try {
    await Promise.race([
      r.ping(),
      // A certificate Redis's client does not trust will not become trusted by retrying: fail at once.
      new Promise((_, reject) => {
        onError = (e) => {
          if (TLS_TRUST_ERRORS.has(e.code ?? "")) reject(new Error(`TLS handshake refused (last error: ${e.message})`));
        };
        r.on("error", onError);
      }),
      new Promise((_, reject) => {
        timer = setTimeout(() => {
          const last = lastErrors.get(r);
          reject(new Error(`no answer within ${timeoutMs / 1000}s${last ? ` (last error: ${last})` : ""}`));
        }, timeoutMs);
      }),
    ]);
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (/NOAUTH|WRONGPASS|invalid password|invalid username-password/i.test(message))
      throw new QueueError(
        `Redis at ${redactUrl(url)} refused the ${new URL(url).password ? "password in" : "connection without a password of"} STRATA_REDIS_URL (${message}); give its password as redis://:<password>@<host>:<port>`,
        { cause: e },
      );
    throw new QueueError(`cannot reach Redis at ${redactUrl(url)} (STRATA_REDIS_URL): ${message}`, { cause: e });
  } finally {
    clearTimeout(timer);
    if (onError) r.off("error", onError);
  }
}

/**
 * Refuses a Redis that does not require a password (see the module comment), unless the target is `insecure`:
 * the URL must carry one, and a connection without it must be refused (NOAUTH). Call after {@link checkRedis}.
 */
export async function requireRedisAuth(target: RedisTarget | string, timeoutMs = 10_000): Promise<void> {
  const t = toTarget(target);
  if (t.insecure) return;
  const how =
    "Redis must require a password, since build steps with the host network can reach it: set `requirepass` (or an ACL user) in Redis and give it as redis://:<password>@<host>:<port> in STRATA_REDIS_URL, or pass --insecure-redis (STRATA_REDIS_INSECURE=1) if Redis is protected otherwise";
  const u = new URL(t.url);
  if (!u.password) throw new QueueError(`STRATA_REDIS_URL ${redactUrl(t.url)} has no password. ${how}`);
  let reply: string;
  try {
    reply = await pingWithoutAuth(u, tlsOptions(t).tls, timeoutMs);
  } catch (e) {
    throw new QueueError(
      `could not check that Redis at ${redactUrl(t.url)} requires a password (a connection without one failed: ${e instanceof Error ? e.message : String(e)}). ${how}`,
      { cause: e },
    );
  }
  // `-NOAUTH Authentication required.` is what we want; `+PONG` means anyone may use it.
  if (reply.startsWith("+"))
    throw new QueueError(
      `Redis at ${redactUrl(t.url)} answers commands without a password: anyone who reaches it could read the build queue and forge build results. ${how}`,
    );
  if (!/^-NOAUTH/i.test(reply))
    throw new QueueError(
      `could not check that Redis at ${redactUrl(t.url)} requires a password (PING without one answered ${JSON.stringify(reply.slice(0, 200))}). ${how}`,
    );
}

/**
 * Sends PING on a fresh connection that does not authenticate, and resolves to the first reply line (RESP 2, as a
 * client that never says HELLO). Raw, so no client library's handshake decides what is asked.
 */
function pingWithoutAuth(u: URL, tlsOpts: RedisOptions["tls"] | undefined, timeoutMs: number): Promise<string> {
  const host = u.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1";
  const port = Number(u.port || 6379);
  return new Promise((resolve, reject) => {
    const secure = u.protocol === "rediss:";
    const socket = secure
      ? tls.connect({ host, port, ...(tlsOpts ?? {}), ...(net.isIP(host) ? {} : { servername: host }) })
      : net.connect({ host, port });
    let buf = "";
    const finish = (err: Error | undefined, line?: string) => {
      socket.destroy();
      if (err) reject(err);
      else resolve(line!);
    };
    socket.setTimeout(timeoutMs, () => finish(new Error(`no answer within ${timeoutMs / 1000}s`)));
    socket.on("error", (e) => finish(e));
    socket.on(secure ? "secureConnect" : "connect", () => socket.write("PING\r\n"));
    socket.on("data", (c: Buffer) => {
      buf += c.toString("latin1");
      const end = buf.indexOf("\r\n");
      if (end >= 0) finish(undefined, buf.slice(0, end));
    });
    socket.on("close", () => finish(new Error("the connection closed before an answer")));
  });
}

/** The URL without its password (for messages). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(an invalid URL)";
  }
}
