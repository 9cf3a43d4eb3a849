/**
 * What the service and its workers tell each other through Redis is signed, so that write access to Redis alone
 * (another tenant's RUN step on the host network, a leaked password) can neither claim a build's outcome nor change
 * what a worker builds:
 *
 * - the **job** the service queues (build id, job token, tenant scope, the request's digest, whether it has secrets):
 *   a worker runs only a job whose MAC verifies — a job rewritten to another tenant's scope, or one added by hand, is
 *   refused;
 * - every **event** a worker appends to the build's stream (`start`, `line`, `done`): the service ignores (and logs)
 *   an entry whose MAC does not verify, so a forged `done` never hands out an image id (nor a grant to it).
 *
 * The key is derived (HKDF-SHA256) from the worker token that the service and its workers already share
 * (STRATA_WORKER_TOKEN, job-secrets.ts), never the token itself. Each MAC binds the job (build id and the job's random
 * token): a signed entry or job copied to another build does not verify. Each event also carries its writer's random
 * id and a sequence number, so an entry replayed within its own stream is ignored as well.
 */
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";

/** The key every job and event MAC of one service and its workers is made with. */
export function queueSigningKey(workerToken: string): Buffer {
  return Buffer.from(hkdfSync("sha256", workerToken, "strata-queue", "strata-queue-mac/1", 32));
}

/** The job an event stream belongs to: the build (job) id and the job's random token. */
export interface JobIdentity {
  buildId: string;
  token: string;
}

/** The parts of a queued job its MAC covers. */
export interface JobClaims extends JobIdentity {
  /** sha256 of the request as queued (job-secrets.ts `requestDigest`). */
  requestDigest: string;
  scope?: string;
  hasSecrets: boolean;
}

function hmac(key: Buffer, ...parts: string[]): Buffer {
  const h = createHmac("sha256", key);
  // Every part but the last is free of newlines (checked by the callers' formats), so the joined text is unambiguous.
  h.update(parts.join("\n"));
  return h.digest();
}

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

const SAFE = /^[\x21-\x7e]*$/;

/** The MAC of a job (base64url). */
export function signJob(key: Buffer, job: JobClaims): string {
  return hmac(
    key,
    "strata-job-mac/1",
    job.buildId,
    job.token,
    job.requestDigest,
    job.scope === undefined ? "-" : `+${job.scope}`,
    job.hasSecrets ? "secrets" : "none",
  ).toString("base64url");
}

/** Whether `mac` is the job's MAC (constant time). */
export function verifyJob(key: Buffer, job: JobClaims, mac: unknown): boolean {
  if (
    typeof mac !== "string" ||
    ![job.buildId, job.token, job.requestDigest, job.scope ?? ""].every((p) => SAFE.test(p))
  )
    return false;
  return equal(Buffer.from(signJob(key, job)), Buffer.from(mac));
}

/** The kinds of entries in a build's event stream. */
export type EventType = "start" | "line" | "done";
const EVENT_TYPES: ReadonlySet<string> = new Set<EventType>(["start", "line", "done"]);

/** Signs the entries one writer (one attempt of a worker) appends to a job's stream. */
export class EventSigner {
  readonly #writer = randomBytes(6).toString("hex");
  #seq = 0;
  constructor(
    private readonly key: Buffer,
    private readonly job: JobIdentity,
  ) {}

  /** The stream entry's fields: `t <type> d <data> n <writer>.<seq> m <mac>`. */
  fields(type: EventType, data: string): string[] {
    const n = `${this.#writer}.${++this.#seq}`;
    return ["t", type, "d", data, "n", n, "m", eventMac(this.key, this.job, n, type, data).toString("base64url")];
  }
}

function eventMac(key: Buffer, job: JobIdentity, n: string, type: string, data: string): Buffer {
  return hmac(key, "strata-event-mac/1", job.buildId, job.token, n, type, data);
}

/** A stream entry as checked: its type and data, or why it was rejected. */
export type CheckedEvent = { ok: true; type: EventType; data: string } | { ok: false; type?: string; reason: string };

/** Checks the entries of one job's stream, in order (one verifier per reader of the stream). */
export class EventVerifier {
  /** The highest sequence number seen of each writer. */
  readonly #seen = new Map<string, number>();
  constructor(
    private readonly key: Buffer,
    private readonly job: JobIdentity,
  ) {}

  check(fields: readonly string[]): CheckedEvent {
    if (fields.length !== 8 || fields[0] !== "t" || fields[2] !== "d" || fields[4] !== "n" || fields[6] !== "m")
      return { ok: false, ...(fields[0] === "t" ? { type: String(fields[1]) } : {}), reason: "it is not signed" };
    const [, type, , data, , n, , mac] = fields as [string, string, string, string, string, string, string, string];
    const m = /^([0-9a-f]{12})\.([1-9][0-9]{0,15})$/.exec(n);
    if (!EVENT_TYPES.has(type) || !m) return { ok: false, type, reason: "it is malformed" };
    if (!equal(eventMac(this.key, this.job, n, type, data), Buffer.from(mac, "base64url")))
      return { ok: false, type, reason: "its signature does not verify" };
    const [writer, seq] = [m[1]!, Number(m[2])];
    if (seq <= (this.#seen.get(writer) ?? 0)) return { ok: false, type, reason: "it replays an earlier entry" };
    this.#seen.set(writer, seq);
    return { ok: true, type: type as EventType, data };
  }
}
