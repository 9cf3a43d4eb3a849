/**
 * Secret values of queued builds, kept out of Redis: the service strips them from the job it queues and holds them
 * in memory; a worker that starts the job fetches them from the service over an authenticated channel and keeps them
 * in memory only (BuildKit's secrets fetched from the client's session at use, never stored in daemon state).
 *
 *   POST /v1/internal/jobs/<build id>/secrets   {token, request}   Authorization: Bearer <worker token>
 *     → 200 {secrets?} | 404 SECRETS_GONE | 401
 *
 * - The worker token (STRATA_WORKER_TOKEN) is a credential of its own, shared by the service and its workers; it is
 *   never a client's token, and a client's token never opens this endpoint. Compared in constant time (of hashes).
 * - A job's values are released only for that job: its build id, the job's token (a random name the service gave
 *   this enqueue) and the digest of the job's request as the worker read it from Redis. A job changed in Redis after
 *   it was queued (other steps that would print the values) gets nothing.
 * - Values are held until the service stops following the build (so a retried job, after a worker died, fetches them
 *   again). A service that restarted has none: the worker fails the build with SECRETS_GONE, asking for a resubmit.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { StrataError } from "../errors.js";
import { queueSigningKey } from "./queue-signing.js";
import type { BuildRequest } from "./wire/schema.js";

/** A request's secret values, as they travel (since format strata-build/4: one build-wide map, by name). */
export interface SecretParts {
  secrets?: BuildRequest["secrets"];
}

/** The request without any secret value, and the values (undefined when it has none). */
export function splitSecrets(req: BuildRequest): { request: BuildRequest; secrets?: SecretParts } {
  const { secrets, ...request } = req;
  return secrets && Object.keys(secrets).length > 0 ? { request, secrets: { secrets } } : { request };
}

/** The request with its values put back (a new object; `req` is not changed). */
export function joinSecrets(req: BuildRequest, parts: SecretParts): BuildRequest {
  return parts.secrets ? { ...req, secrets: parts.secrets } : { ...req };
}

/** The digest a job's request is known by (of its JSON, as queued and as read back from Redis). */
export function requestDigest(req: BuildRequest): string {
  return `sha256:${createHash("sha256").update(JSON.stringify(req)).digest("hex")}`;
}

/** The shortest worker token accepted. */
export const MIN_WORKER_TOKEN_CHARS = 32;

/** The worker credential, checked in constant time; also the root of the queue's signing key (queue-signing.ts). */
export class WorkerToken {
  readonly #hash: Buffer;
  /** The key jobs and their events are signed with (derived from the token). */
  readonly signingKey: Buffer;
  constructor(token: string) {
    if (token.length < MIN_WORKER_TOKEN_CHARS)
      throw new JobSecretsError(
        "WORKER_TOKEN",
        `STRATA_WORKER_TOKEN is ${token.length} characters long; it must have at least ${MIN_WORKER_TOKEN_CHARS} (e.g. \`openssl rand -hex 32\`), the same for the service and its workers`,
      );
    this.#hash = sha256(token);
    this.signingKey = queueSigningKey(token);
  }
  /** The token's SHA-256 (to check that no tenant's token is the workers'). */
  get sha256(): Buffer {
    return Buffer.from(this.#hash);
  }
  /** Whether `given` is the token (constant time). */
  matches(given: string): boolean {
    return timingSafeEqual(sha256(given), this.#hash);
  }
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** The secret values of the jobs this service queued and still follows, in memory only. */
export class HeldSecrets {
  readonly #byJob = new Map<string, { digest: string; parts: SecretParts }>();

  hold(buildId: string, token: string, digest: string, parts: SecretParts): void {
    this.#byJob.set(`${buildId}/${token}`, { digest, parts });
  }

  release(buildId: string, token: string): void {
    this.#byJob.delete(`${buildId}/${token}`);
  }

  /** The job's values if it is held and its request digest is the one queued; else undefined. */
  lookup(buildId: string, token: string, digest: string): SecretParts | undefined {
    const held = this.#byJob.get(`${buildId}/${token}`);
    if (!held) return undefined;
    const a = Buffer.from(held.digest);
    const b = Buffer.from(digest);
    return a.length === b.length && timingSafeEqual(a, b) ? held.parts : undefined;
  }

  /** Jobs held now (for tests and diagnostics). */
  get size(): number {
    return this.#byJob.size;
  }
}

/**
 * The worker token a service with a queue needs (`given`, else STRATA_WORKER_TOKEN), refused when it is also a client's
 * token (`STRATA_TOKEN` or any tenant's, `isClientToken`).
 */
export function queueWorkerToken(given: string | undefined, isClientToken: (token: string) => boolean): WorkerToken {
  const token = given ?? (process.env.STRATA_WORKER_TOKEN?.trim() || undefined);
  if (!token)
    throw new JobSecretsError(
      "WORKER_TOKEN",
      "builds run on workers (STRATA_REDIS_URL is set), and workers fetch each build's secret values from this service with a token of their own: set STRATA_WORKER_TOKEN (at least 32 characters, e.g. `openssl rand -hex 32`) here and on every `strata worker`",
    );
  if (isClientToken(token))
    throw new JobSecretsError(
      "WORKER_TOKEN",
      "STRATA_WORKER_TOKEN is the same as STRATA_TOKEN or a tenant's token: a client's token must not open the workers' endpoint; choose another worker token",
    );
  return new WorkerToken(token);
}

/** What the workers' endpoint answers: the values, or an HTTP error. */
export type JobSecretsAnswer =
  | { values: SecretParts }
  | { status: number; code: string; message: string; headers?: Record<string, string> };

/**
 * Answers `POST /v1/internal/jobs/<build id>/secrets` (`parts`: the path's segments). Without a queue or a worker
 * token the endpoint does not exist (404); the credential is checked before the body is read.
 */
export async function answerJobSecrets(
  held: HeldSecrets | undefined,
  workerToken: WorkerToken | undefined,
  req: { method: string; parts: string[]; authorization: string | undefined; readBody: () => Promise<unknown> },
): Promise<JobSecretsAnswer> {
  const { parts } = req;
  if (!workerToken || !held || parts.length !== 5 || parts[2] !== "jobs" || parts[4] !== "secrets")
    return { status: 404, code: "NOT_FOUND", message: `no such endpoint /${parts.join("/")}` };
  const m = /^Bearer\s+(.+)$/i.exec(req.authorization ?? "");
  if (!m || !workerToken.matches(m[1]!.trim()))
    return {
      status: 401,
      code: "UNAUTHORIZED",
      message: "this endpoint is for build workers: send `Authorization: Bearer <worker token>` (STRATA_WORKER_TOKEN)",
      headers: { "www-authenticate": 'Bearer realm="strata-workers"' },
    };
  if (req.method !== "POST")
    return {
      status: 405,
      code: "METHOD_NOT_ALLOWED",
      message: `${req.method} is not allowed here (allowed: POST)`,
      headers: { allow: "POST" },
    };
  const query = parseJobSecretsQuery(await req.readBody());
  if (!query)
    return {
      status: 400,
      code: "BAD_REQUEST",
      message: 'expected {"token": "<job token>", "request": "sha256:<hex>"}',
    };
  const values = held.lookup(parts[3]!, query.token, query.request);
  if (!values)
    return {
      status: 404,
      code: "SECRETS_GONE",
      message:
        "this service holds no secret values for that job (it did not queue it, has restarted, or the job's request changed in Redis)",
    };
  return { values };
}

/** What a worker sends to get a job's values. */
export interface JobSecretsQuery {
  token: string;
  request: string;
}

/** Parses the body of a secrets request; undefined when malformed. */
export function parseJobSecretsQuery(v: unknown): JobSecretsQuery | undefined {
  if (!v || typeof v !== "object") return undefined;
  const { token, request } = v as Record<string, unknown>;
  if (typeof token !== "string" || typeof request !== "string") return undefined;
  if (!/^[0-9a-f]{1,64}$/.test(token) || !/^sha256:[0-9a-f]{64}$/.test(request)) return undefined;
  return { token, request };
}

/** A queued build's secret values could not be had. */
export class JobSecretsError extends StrataError {
  constructor(
    override readonly code: "SECRETS_GONE" | "SECRETS_UNAVAILABLE" | "WORKER_TOKEN",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "JobSecretsError";
  }
}
