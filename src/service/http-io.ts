/**
 * The service's HTTP plumbing: the error type handlers throw (status + stable code), JSON responses, and reading
 * request bodies within bounds (a JSON body up to MAX_JSON_BYTES; the rest of a refused body drained, or the
 * connection reset).
 */
import type http from "node:http";
import { MAX_JSON_BYTES } from "./wire/limits.js";

/** An HTTP error with a status and a stable code. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    /** For MISSING_BLOBS: the digests the server lacks (at most 1000). */
    readonly missing?: string[],
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** How much of a refused request body is read (and discarded) so the client sees the response; beyond it, reset. */
const DRAIN_LIMIT = 64 * 1024 * 1024;

export function decodePart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new HttpError(400, "BAD_REQUEST", `malformed percent-encoding in the path segment "${part}"`);
  }
}

export function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** Reads (and discards) the rest of a request body, up to DRAIN_LIMIT bytes; rejects (and resets) beyond. */
export function drain(req: http.IncomingMessage): Promise<void> {
  if (req.complete || req.readableEnded) return Promise.resolve();
  return new Promise((resolve, reject) => {
    let n = 0;
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error("timed out draining the request body"));
    }, 30_000);
    req.on("data", (c: Buffer) => {
      n += c.length;
      if (n > DRAIN_LIMIT) {
        clearTimeout(timer);
        req.destroy();
        reject(new Error("request body too large to drain"));
      }
    });
    req.on("end", () => {
      clearTimeout(timer);
      resolve();
    });
    req.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.resume();
  });
}

/** Reads a JSON body of at most MAX_JSON_BYTES. */
export async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const declared = req.headers["content-length"] !== undefined ? Number(req.headers["content-length"]) : undefined;
  const tooLarge = () =>
    new HttpError(
      413,
      "TOO_LARGE",
      `the request body is larger than ${MAX_JSON_BYTES} bytes, the most this server accepts`,
    );
  if (declared !== undefined && declared > MAX_JSON_BYTES) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JSON_BYTES) over = true;
    if (over) {
      if (size > MAX_JSON_BYTES + DRAIN_LIMIT) {
        req.destroy();
        break;
      }
      continue;
    }
    chunks.push(chunk);
  }
  if (over) throw tooLarge();
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") throw new HttpError(400, "BAD_REQUEST", "the request body is empty; expected JSON");
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new HttpError(
      400,
      "BAD_JSON",
      `the request body is not valid JSON: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
}

export function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
