/**
 * Registry HTTP responses, shared by the client, pull, push and the eStargz reader: reading bodies (bounded),
 * turning failures into `RegistryError`s that name the URL, the registry's error codes and what to do, and how URLs,
 * digests and sizes appear in messages (never with a URL's query, which may carry credentials).
 */
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { StrataError } from "../errors.js";
import { RegistryError } from "./errors.js";

export type HttpMethod = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";

/** URL without query or fragment (presigned redirect targets and upload locations carry secrets in the query). */
export function displayUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

export function shortDigest(d: string): string {
  return `${d.slice(0, 19)}…`;
}

/** Decimal units, one decimal place: `12.3 MB`. */
export function formatSize(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = bytes / 1000;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

export function isFsError(e: unknown): boolean {
  return (
    e instanceof Error &&
    typeof (e as NodeJS.ErrnoException).syscall === "string" &&
    /^(open|read|write|close|rename|mkdir|unlink|fsync|ftruncate|stat|fstat)$/.test(
      (e as NodeJS.ErrnoException).syscall!,
    )
  );
}

export function abortReason(signal: AbortSignal, fallback: unknown): unknown {
  return signal.reason ?? fallback;
}

export async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // ignore: we only want the connection back
  }
}

/** Reads a response body into memory, refusing more than `cap` bytes (or a Content-Length above it). */
export async function readBody(
  res: Response,
  cap: number,
  where: string,
  tooLarge?: () => StrataError,
): Promise<Buffer> {
  const len = res.headers.get("content-length");
  const error =
    tooLarge ??
    ((): StrataError => new RegistryError(`${where} is larger than ${formatSize(cap)}; refusing to read it`));
  if (len !== null && /^\d+$/.test(len) && Number(len) > cap) {
    await discard(res);
    throw error();
  }
  if (!res.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body as WebReadableStream<Uint8Array>) {
      n += chunk.length;
      if (n > cap) throw error();
      chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)); // a view: concat copies once
    }
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw networkError(
      new URL(res.url || "about:blank"),
      e,
      false,
      `reading ${where} broke off after ${formatSize(n)}`,
    );
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, n);
}

function errnoCode(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur && depth < 4; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/** A failed connection or broken-off transfer: temporary, so it is retried. */
export function networkError(url: URL, e: unknown, insecure: boolean, what?: string): RegistryError {
  const code = errnoCode(e);
  const detail = code ?? (e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e));
  let hint = "check the registry host name and your network connection";
  if (code && /SSL|TLS|CERT|EPROTO/i.test(code) && !insecure)
    hint += "; if the registry speaks plain HTTP, list it in STRATA_INSECURE_REGISTRIES";
  const message = what
    ? `${what} (${displayUrl(url)}: ${detail}); retry later`
    : `could not reach ${displayUrl(url)} (${detail}); ${hint}`;
  return new RegistryError(message, { temporary: true, url: displayUrl(url), cause: e });
}

interface RegistryErrorBody {
  errors?: { code?: unknown; message?: unknown; detail?: unknown }[];
}

async function parseErrorBody(res: Response): Promise<{ codes: string[]; messages: string[] }> {
  let text = "";
  try {
    text = (await readBody(res, 64 * 1024, "error response")).toString("utf8");
  } catch {
    // the status alone will have to do
  }
  const codes: string[] = [];
  const messages: string[] = [];
  try {
    const body = JSON.parse(text) as RegistryErrorBody;
    for (const err of body.errors ?? []) {
      if (typeof err.code === "string") codes.push(err.code);
      if (typeof err.message === "string" && err.message)
        messages.push(typeof err.code === "string" ? `${err.code}: ${err.message}` : err.message);
    }
  } catch {
    // not JSON (S3 answers XML, proxies HTML)
  }
  return { codes, messages };
}

/** The registry's error messages (else codes) in a response body, as `: …`; "" when it names none. */
export async function errorDetail(res: Response): Promise<string> {
  const { codes, messages } = await parseErrorBody(res);
  return messages.length ? `: ${messages.join("; ")}` : codes.length ? `: ${codes.join(", ")}` : "";
}

/** `Retry-After` as ms: delta-seconds or an HTTP date; undefined when absent or unparseable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - now) : undefined;
}

/** Turns a non-2xx response into a RegistryError naming the URL, the registry's error codes, and what to do. */
export async function errorFromResponse(
  res: Response,
  url: URL,
  where: string,
  notFoundHint: string,
  method: HttpMethod = "GET",
): Promise<RegistryError> {
  const { codes, messages } = await parseErrorBody(res);
  const status = res.status;
  const temporary = status === 408 || status === 429 || status >= 500;
  let hint: string;
  if (status === 404) hint = notFoundHint;
  else if (status === 401)
    hint =
      "the registry refused access: the repository may not exist, or it needs credentials (set REGISTRY_USERNAME and REGISTRY_PASSWORD, or `docker login`)";
  else if (status === 403)
    hint =
      "the registry denied access to this repository; check the name and that the account (or anonymous access) is allowed";
  else if (status === 429) hint = "the registry is rate-limiting requests; wait and try again later";
  else if (status >= 500) hint = "the registry had a server error; try again later";
  else hint = "the registry rejected the request";
  const detail = messages.length ? `: ${messages.join("; ")}` : codes.length ? `: ${codes.join(", ")}` : "";
  const retryAfterMs = status === 429 || status === 503 ? parseRetryAfter(res.headers.get("retry-after")) : undefined;
  return new RegistryError(
    `${where}: ${method} ${displayUrl(url)} answered ${status}${res.statusText ? ` ${res.statusText}` : ""}${detail} — ${hint}`,
    {
      status,
      codes,
      temporary,
      url: displayUrl(url),
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    },
  );
}
