/**
 * The edge between Strata and the AWS SDK: classifying SDK errors (not found, retryable, fatal), retrying with
 * backoff, and translating whatever is left into a StoreError that names the bucket, the key and the cause.
 * Nothing outside `src/store/s3/` ever sees an SDK error.
 */
import { NotFoundError, StoreError, StrataError } from "../../errors.js";

/** The fields of SDK, smithy and Node network errors that classification looks at. */
interface ErrorLike {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: number; attempts?: number };
  $retryable?: { throttling?: boolean };
  cause?: unknown;
  errors?: unknown;
}

function fields(e: unknown): ErrorLike {
  return typeof e === "object" && e !== null ? (e as ErrorLike) : {};
}

/** Every error of a chain: the error itself, its `cause`s and the members of AggregateErrors (dual-stack connects). */
function chain(e: unknown, depth = 0): ErrorLike[] {
  if (depth > 8 || typeof e !== "object" || e === null) return [];
  const f = fields(e);
  const out = [f, ...chain(f.cause, depth + 1)];
  if (Array.isArray(f.errors)) for (const sub of f.errors) out.push(...chain(sub, depth + 1));
  return out;
}

const NOT_FOUND_NAMES = new Set(["NoSuchKey", "NotFound", "NoSuchUpload"]);
const THROTTLING_NAMES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "ProvisionedThroughputExceededException",
  "RequestLimitExceeded",
  "BandwidthLimitExceeded",
]);
const TRANSIENT_NAMES = new Set([
  "RequestTimeout",
  "RequestTimeoutException",
  "InternalError",
  "ServiceUnavailable",
  "TimeoutError",
  "ECONNRESET",
  "PriorRequestNotComplete",
  "IDPCommunicationError",
  "EC2ThrottledException",
]);
const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ECONNABORTED",
  "ERR_STREAM_PREMATURE_CLOSE",
  "UND_ERR_SOCKET",
]);

/** The object (or multipart upload) does not exist. A missing *bucket* is not this: that is a configuration error. */
export function isS3NotFound(e: unknown): boolean {
  const f = fields(e);
  if (f.name === "NoSuchBucket") return false;
  return (typeof f.name === "string" && NOT_FOUND_NAMES.has(f.name)) || f.$metadata?.httpStatusCode === 404;
}

/** Worth another attempt: 5xx (but 501), 429 and throttling, request timeouts, and transient network failures. */
export function isS3Retryable(e: unknown): boolean {
  if (e instanceof StrataError) return false;
  for (const f of chain(e)) {
    const status = f.$metadata?.httpStatusCode;
    if (status !== undefined && ((status >= 500 && status !== 501) || status === 429 || status === 408)) return true;
    if (f.$retryable) return true;
    if (typeof f.name === "string" && (THROTTLING_NAMES.has(f.name) || TRANSIENT_NAMES.has(f.name))) return true;
    if (typeof f.code === "string" && NETWORK_CODES.has(f.code)) return true;
  }
  return false;
}

function isNetworkFailure(e: unknown): boolean {
  return (
    chain(e).some((f) => typeof f.code === "string" && NETWORK_CODES.has(f.code)) || fields(e).name === "TimeoutError"
  );
}

/** One line saying what the SDK (or the network) reported: name, HTTP status, code, message. */
export function describeS3Error(e: unknown): string {
  const f = fields(e);
  const parts: string[] = [];
  const name = typeof f.name === "string" ? f.name : "Error";
  const status = f.$metadata?.httpStatusCode;
  const codes = [
    ...new Set(
      chain(e)
        .map((c) => c.code)
        .filter((c): c is string => typeof c === "string"),
    ),
  ];
  // A plain network Error is better named by its code (ECONNREFUSED) than by "Error".
  if (status || name !== "Error" || !codes.length) parts.push(status ? `${name} (HTTP ${status})` : name);
  if (codes.length && !codes.includes(name)) parts.push(codes.join("/"));
  let message = typeof f.message === "string" ? f.message : String(e);
  if (!message) {
    // AggregateErrors (a dual-stack connect that failed on every address) carry the detail in their members.
    message =
      chain(e)
        .map((c) => (typeof c.message === "string" ? c.message : ""))
        .find((m) => m) ?? "";
  }
  if (message && message !== name && message !== "UnknownError")
    parts.push(codes.length ? message.replace(new RegExp(`^(${codes.join("|")}): `), "") : message);
  return parts.join(": ");
}

/** What to do about a failure, for the end of a StoreError message. */
function hint(e: unknown, where: S3Where): string {
  const f = fields(e);
  const status = f.$metadata?.httpStatusCode;
  if (f.name === "NoSuchBucket")
    return ` — bucket "${where.bucket}" does not exist: create it, or set STRATA_S3_BUCKET to an existing bucket`;
  if (f.name === "CredentialsProviderError" || /credential/i.test(String(f.message ?? ""))) {
    return " — no usable AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or another source of the SDK's default chain";
  }
  if (/region is missing/i.test(String(f.message ?? ""))) return " — set AWS_REGION";
  if (
    status === 403 ||
    f.name === "AccessDenied" ||
    f.name === "InvalidAccessKeyId" ||
    f.name === "SignatureDoesNotMatch"
  ) {
    return ` — access denied: check the AWS credentials and their permissions on bucket "${where.bucket}"`;
  }
  if (isNetworkFailure(e))
    return ` — is the S3 endpoint ${where.endpoint ?? "(AWS default)"} reachable? (STRATA_S3_ENDPOINT)`;
  return "";
}

export interface S3Where {
  bucket: string;
  endpoint?: string;
}

export interface RetryPolicy {
  /** Attempts in all, including the first. */
  attempts: number;
  /** Backoff before attempt n+1 is a random delay up to min(maxDelayMs, baseDelayMs · 2^(n-1)) ("full jitter"). */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 200, maxDelayMs: 10_000 };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs one S3 operation with retries. `fn` should do the whole operation, body included (a dropped download is
 * retried from the start). A missing object becomes NotFoundError; Strata errors thrown by `fn` (a digest
 * mismatch) pass through untouched; anything else becomes a StoreError naming `s3://bucket/key`, the attempts
 * made and the cause.
 */
export async function withS3Retry<T>(
  where: S3Where,
  op: string,
  key: string,
  policy: RetryPolicy,
  fn: (attempt: number) => Promise<T>,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (e instanceof StrataError) throw e;
      const url = `s3://${where.bucket}/${key}`;
      if (isS3NotFound(e)) throw new NotFoundError(`${url} does not exist`);
      if (attempt < policy.attempts && isS3Retryable(e)) {
        await sleep(Math.random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1)));
        continue;
      }
      const tries = attempt > 1 ? ` after ${attempt} attempts` : "";
      throw new StoreError(`S3 ${op} ${url} failed${tries}: ${describeS3Error(e)}${hint(e, where)}`, { cause: e });
    }
  }
}
