/**
 * `ADD <url>`: downloads into the store (`<store>/downloads/`), keyed by content. The previous download of a URL is
 * revalidated with `If-None-Match` / `If-Modified-Since`, so an unchanged remote file is not fetched again; a changed
 * one gets a new digest and so busts the step's key. `--checksum=sha256:<hex>` must match the content. The download
 * obeys the build's fetch policy (`src/net/`): the addresses it (and every redirect) connects to, its size and its
 * time.
 */
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream, promises as fsp } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import {
  DockerfileSyntaxError,
  FetchPolicyError,
  InvalidDefinitionError,
  StrataError,
  type SourceLocation,
} from "../errors.js";
import { defaultFetchPolicy, policyRefusal, undiciCode, type FetchPolicy } from "../net/fetch-policy.js";
import { limitHint, policyName } from "../net/fetch-rules.js";

export interface FetchedUrl {
  /** host path of the downloaded content */
  file: string;
  digest: string;
  size: number;
  /** the file name ADD gives it: Content-Disposition's, else the URL path's last segment, else `__unnamed__` */
  name: string;
  /** the mtime ADD gives it (ms): the response's Last-Modified, else 0 (the Unix epoch), as BuildKit does */
  mtimeMs: number;
}

/** An HTTP date as ms since the epoch; 0 when absent or not a date (BuildKit's http source: `time.Unix(0, 0)`). */
export function lastModifiedMs(header: string | null | undefined): number {
  if (!header) return 0;
  const ms = Date.parse(header);
  return Number.isFinite(ms) ? ms : 0;
}

interface CacheMeta {
  url: string;
  etag?: string;
  lastModified?: string;
  digest: string;
  size: number;
  name: string;
}

/** A download failed (network error or an HTTP error status). */
export class UrlFetchError extends StrataError {
  override readonly code = "URL_FETCH";
  override readonly fault = "user";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UrlFetchError";
  }
}

function fail(loc: SourceLocation | undefined, message: string): Error {
  return loc ? new DockerfileSyntaxError(loc, message) : new InvalidDefinitionError(message);
}

function fileName(url: URL, disposition: string | null): string {
  const m = disposition ? /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition) : null;
  if (m?.[1]) {
    const n = path.posix.basename(decodeURIComponent(m[1]));
    if (n && n !== "." && n !== "..") return n;
  }
  const base = path.posix.basename(decodeURIComponent(url.pathname));
  return base === "" || base === "/" || base === "." || base === ".." ? "__unnamed__" : base;
}

function seconds(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000} min` : `${ms / 1000} s`;
}

/** Turns a failed request or transfer into the error that says why: the policy, a limit, or the network. */
function downloadError(url: string, e: unknown, policy: FetchPolicy, deadline: AbortSignal | undefined, where: string) {
  const refusal = policyRefusal(e);
  if (refusal) return refusal.within(`ADD ${url}`);
  if (e instanceof StrataError) return e;
  const cfg = policy.config;
  if (deadline?.aborted && cfg.downloadTimeoutMs !== undefined)
    return new UrlFetchError(
      `ADD ${url}: the download did not finish within ${seconds(cfg.downloadTimeoutMs)}, the limit of ${policyName(cfg)}; ${limitHint(cfg, "--fetch-timeout", "STRATA_FETCH_TIMEOUT")}${where}`,
      { cause: e },
    );
  const code = undiciCode(e);
  if ((code === "UND_ERR_BODY_TIMEOUT" || code === "UND_ERR_HEADERS_TIMEOUT") && cfg.idleTimeoutMs !== undefined)
    return new UrlFetchError(
      `ADD ${url}: the server stalled: no data for ${seconds(cfg.idleTimeoutMs)} (${code === "UND_ERR_HEADERS_TIMEOUT" ? "waiting for the response headers" : "in the middle of the body"}), the idle limit of ${policyName(cfg)}; ${limitHint(cfg, "--fetch-idle-timeout", "STRATA_FETCH_IDLE_TIMEOUT")}${where}`,
      { cause: e },
    );
  const cause = (e as { cause?: unknown }).cause;
  const detail = cause instanceof Error ? `${(e as Error).message}: ${cause.message}` : (e as Error).message;
  return new UrlFetchError(`ADD ${url}: download failed: ${detail}${where}`, { cause: e });
}

export async function fetchUrl(
  url: string,
  opts: {
    cacheDir: string;
    checksum?: string;
    location?: SourceLocation;
    signal?: AbortSignal;
    /** Where it may connect, and the size and time limits. Default: the permissive policy (a local build). */
    policy?: FetchPolicy;
  },
): Promise<FetchedUrl> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw fail(opts.location, `ADD source ${JSON.stringify(url)} is not a valid URL`);
  }
  const policy = opts.policy ?? defaultFetchPolicy();
  const where = opts.location ? ` (${opts.location.file}:${opts.location.line})` : "";
  try {
    policy.checkUrl(parsed);
  } catch (e) {
    throw e instanceof FetchPolicyError ? e.within(`ADD ${url}`) : e;
  }
  if (opts.checksum !== undefined && !/^sha256:[0-9a-f]{64}$/.test(opts.checksum)) {
    throw fail(opts.location, `--checksum ${JSON.stringify(opts.checksum)} must be sha256:<64 lowercase hex digits>`);
  }
  await fsp.mkdir(opts.cacheDir, { recursive: true });
  const metaFile = path.join(opts.cacheDir, `url-${createHash("sha256").update(url).digest("hex")}.json`);
  const meta = await fsp.readFile(metaFile, "utf8").then(
    (t) => JSON.parse(t) as CacheMeta,
    () => undefined,
  );
  const contentOf = (digest: string) => path.join(opts.cacheDir, digest.slice("sha256:".length));
  const cachedOk =
    meta &&
    (await fsp.access(contentOf(meta.digest)).then(
      () => true,
      () => false,
    ));

  // A pinned checksum already in the cache needs no request at all.
  if (
    opts.checksum &&
    (await fsp.access(contentOf(opts.checksum)).then(
      () => true,
      () => false,
    )) &&
    meta?.digest === opts.checksum
  ) {
    const mtimeMs = lastModifiedMs(meta.lastModified);
    return { file: contentOf(meta.digest), digest: meta.digest, size: meta.size, name: meta.name, mtimeMs };
  }
  // Named as the registry client names itself, so a server's logs tell Strata's ADD requests apart.
  const headers: Record<string, string> = { "user-agent": "strata" };
  if (cachedOk && meta?.etag) headers["if-none-match"] = meta.etag;
  else if (cachedOk && meta?.lastModified) headers["if-modified-since"] = meta.lastModified;
  const cfg = policy.config;
  const deadline = cfg.downloadTimeoutMs !== undefined ? AbortSignal.timeout(cfg.downloadTimeoutMs) : undefined;
  const signal = deadline && opts.signal ? AbortSignal.any([opts.signal, deadline]) : (deadline ?? opts.signal);
  const cap = cfg.maxDownloadBytes;
  const tooLarge = (size: string) =>
    new UrlFetchError(
      `ADD ${url}: the download is larger than ${policyName(cfg)} allows (${size}; the cap is ${cap} bytes); ${limitHint(cfg, "--fetch-max-bytes", "STRATA_FETCH_MAX_BYTES")}${where}`,
    );
  let res: Response;
  try {
    res = await policy.fetch(parsed, { headers, redirect: "follow", ...(signal ? { signal } : {}) });
  } catch (e) {
    if (opts.signal?.aborted) throw opts.signal.reason ?? e;
    throw downloadError(url, e, policy, deadline, where);
  }
  let result: FetchedUrl;
  if (res.status === 304 && cachedOk && meta) {
    // A 304 may carry the resource's Last-Modified again; else the one recorded with the download stands.
    const lm = res.headers.get("last-modified") ?? meta.lastModified;
    result = {
      file: contentOf(meta.digest),
      digest: meta.digest,
      size: meta.size,
      name: meta.name,
      mtimeMs: lastModifiedMs(lm),
    };
  } else {
    if (!res.ok || !res.body) {
      throw new UrlFetchError(`ADD ${url}: the server answered ${res.status} ${res.statusText}${where}`);
    }
    const length = res.headers.get("content-length");
    if (cap !== undefined && length !== null && /^\d+$/.test(length) && Number(length) > cap) {
      await res.body.cancel().catch(() => undefined);
      throw tooLarge(`Content-Length ${length}`);
    }
    const tmp = path.join(opts.cacheDir, `.tmp-${randomBytes(6).toString("hex")}`);
    const hash = createHash("sha256");
    let size = 0;
    try {
      const body = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
      await pipeline(
        body,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const c of source) {
            size += c.length;
            if (cap !== undefined && size > cap) throw tooLarge(`more than ${cap} bytes arrived`);
            hash.update(c);
            yield c;
          }
        },
        createWriteStream(tmp),
      );
      const digest = "sha256:" + hash.digest("hex");
      await fsp.rename(tmp, contentOf(digest));
      result = {
        file: contentOf(digest),
        digest,
        size,
        name: fileName(parsed, res.headers.get("content-disposition")),
        mtimeMs: lastModifiedMs(res.headers.get("last-modified")),
      };
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      if (opts.signal?.aborted) throw opts.signal.reason ?? e;
      throw downloadError(url, e, policy, deadline, where);
    }
    const next: CacheMeta = { url, digest: result.digest, size: result.size, name: result.name };
    const etag = res.headers.get("etag");
    const lm = res.headers.get("last-modified");
    if (etag) next.etag = etag;
    if (lm) next.lastModified = lm;
    await fsp.writeFile(metaFile + ".tmp", JSON.stringify(next));
    await fsp.rename(metaFile + ".tmp", metaFile);
  }
  if (opts.checksum !== undefined && opts.checksum !== result.digest) {
    throw fail(
      opts.location,
      `ADD ${url}: checksum mismatch: --checksum=${opts.checksum} but the content is ${result.digest}`,
    );
  }
  return result;
}
