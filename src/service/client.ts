/**
 * The build service's client: takes a Plan and its secret values, walks and hashes its local inputs, uploads only the
 * files the server lacks (by content digest), asks the server to get-or-create the build, streams its log
 * (reconnecting from the last cursor when the connection drops) and returns the result — or throws the same
 * errors a local build throws (a failing step is a StepFailedError). A request refused for a quota (429) or because the
 * server is full (503 with `Retry-After`) is sent again after the wait the server asks for (client-retry.ts), with a
 * log line per wait.
 */
import { limitsFromEnv } from "../sandbox/step-limits.js";
import { createReadStream } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import http from "node:http";
import https from "node:https";
import type { Readable } from "node:stream";
import type { BuiltImage, StepResult } from "../engine/build.js";
import type { LogSink } from "../engine/log.js";
import { StatCache } from "../context/walk.js";
import { InvalidDefinitionError, NotFoundError, StepFailedError, StrataError } from "../errors.js";
import type { Plan, SecretValues } from "../plan/step.js";
import { parseDigest } from "../util/digest.js";
import { compileRequest, type LocalBlob } from "./wire/encode.js";
import type { BuildInfo, BuildStatus, CreateResponse, ErrorBody, WireFailure, WireResult } from "./wire/responses.js";
import { serviceAgent, tlsHint } from "./tls.js";
import { BUSY_RETRY_DEFAULTS, busyRetryWait, type BusyRetryPolicy } from "./client-retry.js";

export interface RemoteBuildOptions {
  /** Base URL of the build server, e.g. `http://builder:8080`. */
  server: string;
  /** Bearer token (default: STRATA_TOKEN). */
  token?: string;
  /** The build's secret values; each step's travel with it (the names it lists). Default: none. */
  secrets?: SecretValues;
  forceBuild?: boolean;
  ignoreCache?: boolean;
  /** Receives the build's log lines. Default: stderr. */
  log?: LogSink;
  chainName?: string;
  /** Stat cache for hashing local files: a file path, a cache, or false for none. Default: `<STRATA_HOME>/statcache.json`. */
  statCache?: string | StatCache | false;
  /** Parallel uploads. Default 8. */
  uploadConcurrency?: number;
  /** Consecutive failed reconnects of the log stream before giving up. Default 10. */
  maxReconnects?: number;
  /**
   * Retrying requests the server refuses for a quota (429) or as full (503 with `Retry-After`), after the wait it
   * asks for; `false`: fail at once. Default: up to 10 retries, each wait at most 60 s, 10 min in all.
   */
  busyRetry?: BusyRetryPolicy | false;
  signal?: AbortSignal;
}

export interface RemoteBuiltImage extends BuiltImage {
  buildId: string;
  /** Bytes of context files uploaded for this build (files the server already had are not sent). */
  uploadedBytes: number;
  uploadedFiles: number;
  /** True when the request joined a build that was already queued, running or finished. */
  joined: boolean;
}

/** The build server refused a request or failed a build with an error that has no local counterpart. */
export class RemoteBuildError extends StrataError {
  override readonly code: string;
  /** The server's `Retry-After` header, when it sent one. */
  readonly retryAfter?: string;
  constructor(
    code: string,
    message: string,
    readonly status?: number,
    options?: { cause?: unknown; retryAfter?: string },
  ) {
    super(message, options);
    this.code = code;
    this.name = "RemoteBuildError";
    if (options?.retryAfter !== undefined) this.retryAfter = options.retryAfter;
  }
}

const envFlag = (name: string) => ["1", "true", "yes"].includes((process.env[name] ?? "").toLowerCase());

/** Builds `plan` on a build server (with `opts.secrets`, the values of the secrets its steps name). */
export async function remoteBuild(plan: Plan, opts: RemoteBuildOptions): Promise<RemoteBuiltImage> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + "\n"));
  const client = new ServiceClient(opts.server, opts.token ?? process.env.STRATA_TOKEN, opts.signal, {
    busyRetry: opts.busyRetry ?? {},
    log,
  });
  try {
    const statCache = await openStatCache(opts.statCache);
    const { request, files } = await compileRequest(plan, statCache, opts.secrets);
    await statCache?.save().catch(() => undefined);
    request.forceBuild = opts.forceBuild ?? envFlag("STRATA_FORCE_BUILD");
    request.ignoreCache = opts.ignoreCache ?? envFlag("STRATA_IGNORE_CACHE");
    // STRATA_STEP_MEMORY / _PIDS / _CPUS ask the service for this build's limits (it caps them at its maximum).
    const limits = limitsFromEnv();
    if (Object.keys(limits).length) request.limits = limits;
    if (opts.chainName) request.chainName = opts.chainName;

    const upload = { bytes: 0, files: 0 };
    await uploadMissing(client, files, [...files.keys()], upload, opts.uploadConcurrency ?? 8);
    let created: CreateResponse;
    try {
      created = await client.json<CreateResponse>("POST", "/v1/images", request);
    } catch (e) {
      // Content that vanished from the server between the check and the request: send it and ask again.
      if (!(e instanceof RemoteBuildError && e.code === "MISSING_BLOBS")) throw e;
      await uploadMissing(client, files, [...files.keys()], upload, opts.uploadConcurrency ?? 8);
      created = await client.json<CreateResponse>("POST", "/v1/images", request);
    }
    const extra = {
      buildId: created.buildId,
      uploadedBytes: upload.bytes,
      uploadedFiles: upload.files,
      joined: created.joined,
    };
    if (created.status === "succeeded" && created.result) {
      logCachedResult(created.result, log);
      return { ...toBuilt(created.result), ...extra };
    }
    const end = await followLogs(client, created.buildId, log, opts.maxReconnects ?? 10);
    if (end.status === "succeeded" && end.result) return { ...toBuilt(end.result), ...extra };
    throw failureError(end.status, end.failure, created.buildId);
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Compiling the request

async function openStatCache(opt: RemoteBuildOptions["statCache"]): Promise<StatCache | undefined> {
  if (opt === false) return undefined;
  if (opt instanceof StatCache) return opt;
  if (typeof opt === "string") return StatCache.load(opt);
  const { StoreLayout } = await import("../store/layout.js");
  return StatCache.load(StoreLayout.default().statCacheFile);
}

// ---------------------------------------------------------------------------------------------------------------
// Uploads

const CHECK_BATCH = 20_000;

async function uploadMissing(
  client: ServiceClient,
  files: Map<string, LocalBlob>,
  digests: string[],
  count: { bytes: number; files: number },
  concurrency: number,
): Promise<void> {
  const missing: string[] = [];
  for (let i = 0; i < digests.length; i += CHECK_BATCH) {
    const r = await client.json<{ missing: string[] }>("POST", "/v1/blobs/check", {
      digests: digests.slice(i, i + CHECK_BATCH),
    });
    missing.push(...r.missing);
  }
  let next = 0;
  const worker = async () => {
    while (next < missing.length) {
      const d = missing[next++]!;
      const f = files.get(d);
      if (!f)
        throw new RemoteBuildError(
          "MISSING_BLOBS",
          `the build server asks for ${d}, which is not one of this build's files`,
        );
      try {
        await client.upload(`/v1/blobs/${d}`, () => createReadStream(f.absPath), f.size);
      } catch (e) {
        if (e instanceof RemoteBuildError && e.code === "DIGEST_MISMATCH") {
          throw new RemoteBuildError(
            e.code,
            `${f.absPath} changed while it was being uploaded; run the build again (${e.message})`,
            e.status,
          );
        }
        throw e;
      }
      count.bytes += f.size;
      count.files++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, missing.length) }, worker));
}

// ---------------------------------------------------------------------------------------------------------------
// Following the log

interface StreamEnd {
  status: BuildStatus;
  result?: WireResult;
  failure?: WireFailure;
}

async function followLogs(
  client: ServiceClient,
  buildId: string,
  log: LogSink,
  maxReconnects: number,
): Promise<StreamEnd> {
  let cursor = 0;
  let failures = 0;
  let lastError: unknown;
  for (;;) {
    let end: StreamEnd | undefined;
    try {
      await client.events(`/v1/images/${buildId}/logs?after=${cursor}`, (ev) => {
        if (ev.event === "result") {
          end = JSON.parse(ev.data) as StreamEnd;
          return;
        }
        if (ev.event === "gap") {
          const g = JSON.parse(ev.data) as { dropped: number };
          log(`   … ${g.dropped} log lines no longer kept by the server …`);
        } else if (ev.event === "message") {
          log(JSON.parse(ev.data) as string);
        }
        if (ev.id !== undefined) {
          cursor = Number(ev.id);
          failures = 0;
        }
      });
    } catch (e) {
      if (client.aborted) throw e;
      if (e instanceof RemoteBuildError && e.status !== undefined && e.status < 500) throw e;
      lastError = e;
    }
    if (end) return end;
    if (++failures > maxReconnects) {
      // The stream is gone; the build may still have finished: ask once.
      const info = await client.json<BuildInfo>("GET", `/v1/images/${buildId}`).catch(() => undefined);
      if (info && info.status !== "queued" && info.status !== "building") return info;
      throw new RemoteBuildError(
        "STREAM_LOST",
        `lost the log stream of build ${buildId} after ${maxReconnects} reconnects: ${lastError instanceof Error ? lastError.message : "the server kept closing it"}`,
        undefined,
        { cause: lastError },
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** failures, 5000)));
  }
}

function logCachedResult(result: WireResult, log: LogSink): void {
  for (const s of result.steps) {
    log(`=> Step ${s.index}: ${s.description}`);
    log(`   cached in ${s.seconds.toFixed(2)}s → ${s.imageId.slice(7, 19)}`);
  }
  log(
    `=> Image ${result.imageId} (${result.steps.length} steps, 0 built, ${result.steps.length} cached) on the build server`,
  );
}

function toBuilt(r: WireResult): BuiltImage {
  const steps: StepResult[] = r.steps.map((s) => ({
    index: s.index,
    description: s.description,
    cached: s.cached,
    seconds: s.seconds,
    key: s.key,
    imageId: parseDigest(s.imageId),
    ...(s.layer ? { layer: parseDigest(s.layer) } : {}),
  }));
  return { imageId: parseDigest(r.imageId), steps };
}

/** The error a local build would have thrown for this failure. */
export function failureError(status: BuildStatus, f: WireFailure | undefined, buildId: string): StrataError {
  if (!f) return new RemoteBuildError(status.toUpperCase(), `remote build ${buildId} ended with status ${status}`);
  if (status === "terminated") return new RemoteBuildError("TERMINATED", f.message);
  if (f.code === "STEP_FAILED" && f.step !== undefined) {
    return new StepFailedError(
      f.step,
      f.description ?? "",
      f.command ?? "",
      f.exitCode ?? null,
      f.logTail ?? [],
      f.durationMs ?? 0,
      f.timedOut ?? status === "timeout",
      {
        ...(typeof f.timeoutMs === "number" ? { timeoutMs: f.timeoutMs } : {}),
        ...(typeof f.limit === "string" ? { limit: f.limit } : {}),
      },
    );
  }
  if (f.code === "INVALID_DEFINITION") return new InvalidDefinitionError(f.message);
  if (f.code === "NOT_FOUND") return new NotFoundError(f.message);
  return new RemoteBuildError(f.code, `remote build ${buildId} failed: ${f.message}`);
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/** A small keep-alive HTTP client for the service's endpoints. */
export class ServiceClient {
  readonly #base: URL;
  readonly #token?: string;
  readonly #agent: http.Agent;
  readonly #signal?: AbortSignal;
  readonly #busyRetry: BusyRetryPolicy | false;
  readonly #log: LogSink;

  /** `opts.busyRetry`: see RemoteBuildOptions (default here: no retries); `opts.log` gets a line per wait. */
  constructor(
    server: string,
    token?: string,
    signal?: AbortSignal,
    opts: { busyRetry?: BusyRetryPolicy | false; log?: LogSink } = {},
  ) {
    let base: URL;
    try {
      base = new URL(server.endsWith("/") ? server : server + "/");
    } catch {
      throw new RemoteBuildError(
        "BAD_SERVER",
        `STRATA_SERVER=${JSON.stringify(server)} is not a URL (expected e.g. http://builder:8080)`,
      );
    }
    if (base.protocol !== "http:" && base.protocol !== "https:")
      throw new RemoteBuildError("BAD_SERVER", `the build server URL ${server} must start with http:// or https://`);
    this.#base = base;
    this.#token = token;
    this.#agent = serviceAgent(base);
    this.#signal = signal;
    this.#busyRetry = opts.busyRetry ?? false;
    this.#log = opts.log ?? ((l: string) => process.stderr.write(l + "\n"));
  }

  close(): void {
    this.#agent.destroy();
  }

  #request(method: string, pathname: string, headers: Record<string, string | number> = {}): http.ClientRequest {
    const url = new URL(pathname.replace(/^\//, ""), this.#base);
    const mod = url.protocol === "https:" ? https : http;
    return mod.request(url, {
      method,
      agent: this.#agent,
      headers: { ...(this.#token ? { authorization: `Bearer ${this.#token}` } : {}), ...headers },
      ...(this.#signal ? { signal: this.#signal } : {}),
    });
  }

  #where(method: string, pathname: string): string {
    return `${method} ${new URL(pathname.replace(/^\//, ""), this.#base).href}`;
  }

  /** Sends a request and reads the whole response; a non-2xx status throws a RemoteBuildError with the server's message. */
  async #send(
    method: string,
    pathname: string,
    body?: Buffer | (() => Readable),
    headers: Record<string, string | number> = {},
  ): Promise<{ status: number; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const req = this.#request(method, pathname, headers);
      req.on("error", (e) => reject(unreachable(this.#where(method, pathname), e)));
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (e) => reject(unreachable(this.#where(method, pathname), e)));
        res.on("end", () => {
          const buf = Buffer.concat(chunks);
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve({ status, body: buf });
          else reject(httpError(this.#where(method, pathname), status, buf, res.headers["retry-after"]));
        });
      });
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        const src = body();
        src.on("error", (e) => {
          req.destroy(e);
          reject(new RemoteBuildError("LOCAL_READ", `could not read a file to upload: ${e.message}`));
        });
        src.pipe(req);
      }
    });
  }

  /**
   * A request, sent again once when a kept-alive connection turns out to be closed by the server (the classic reuse
   * race). Every endpoint tolerates that: uploads and checks are idempotent, and a second get-or-create joins the
   * build the first one created.
   */
  async #sendRetrying(
    method: string,
    pathname: string,
    body?: Buffer | (() => Readable),
    headers: Record<string, string | number> = {},
  ): Promise<{ status: number; body: Buffer }> {
    try {
      return await this.#send(method, pathname, body, headers);
    } catch (e) {
      const code =
        e instanceof RemoteBuildError && e.cause instanceof Error ? (e.cause as NodeJS.ErrnoException).code : undefined;
      if ((code !== "ECONNRESET" && code !== "EPIPE") || this.#signal?.aborted) throw e;
      return this.#send(method, pathname, body, headers);
    }
  }

  /**
   * `send`, sent again while the server answers 429 (or 503 with `Retry-After`) and the retry policy allows, after
   * the wait the server asks for (one log line per wait). The last refusal is thrown, saying how long it waited.
   */
  async #busyRetrying<T>(send: () => Promise<T>): Promise<T> {
    let waited = 0;
    for (let retries = 0; ; retries++) {
      try {
        return await send();
      } catch (e) {
        if (!(e instanceof RemoteBuildError) || this.#busyRetry === false || this.#signal?.aborted) throw e;
        const wait = busyRetryWait({ status: e.status, retryAfter: e.retryAfter }, retries, waited, this.#busyRetry);
        if (wait === undefined) {
          if (!retries) throw e;
          throw new RemoteBuildError(
            e.code,
            `${e.message} — still refused after ${retries} ${retries === 1 ? "retry" : "retries"} over ${Math.round(waited / 1000)} s`,
            e.status,
            { cause: e, ...(e.retryAfter !== undefined ? { retryAfter: e.retryAfter } : {}) },
          );
        }
        const most = this.#busyRetry.attempts ?? BUSY_RETRY_DEFAULTS.attempts;
        this.#log(
          `=> The build server is busy (${e.status} ${e.code}): retrying in ${Math.ceil(wait / 1000)} s (retry ${retries + 1} of at most ${most}): ${e.message}`,
        );
        await sleep(wait, undefined, this.#signal ? { signal: this.#signal } : {});
        waited += wait;
      }
    }
  }

  async json<T>(method: string, pathname: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const r = await this.#busyRetrying(() =>
      this.#sendRetrying(
        method,
        pathname,
        payload,
        payload ? { "content-type": "application/json", "content-length": payload.length } : {},
      ),
    );
    return JSON.parse(r.body.toString("utf8")) as T;
  }

  async upload(pathname: string, open: () => Readable, size: number): Promise<void> {
    await this.#busyRetrying(() =>
      this.#sendRetrying("PUT", pathname, open, {
        "content-type": "application/octet-stream",
        "content-length": size,
      }),
    );
  }

  /** A GET whose 2xx response is handed over unread (a blob, a log); any other status throws as {@link json} does. */
  open(pathname: string): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = this.#request("GET", pathname);
      req.on("error", (e) => reject(unreachable(this.#where("GET", pathname), e)));
      req.on("response", (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(res);
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => reject(httpError(this.#where("GET", pathname), status, Buffer.concat(chunks))));
        res.on("error", (e) => reject(unreachable(this.#where("GET", pathname), e)));
      });
      req.end();
    });
  }

  get aborted(): boolean {
    return this.#signal?.aborted ?? false;
  }

  /**
   * Reads a server-sent event stream until the server ends it. Resolves when the stream ends (cleanly or not —
   * the caller decides from the events it saw); rejects on a non-2xx status or when the connection fails.
   */
  events(pathname: string, onEvent: (e: SseEvent) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = this.#request("GET", pathname, { accept: "text/event-stream" });
      req.on("error", (e) => reject(unreachable(this.#where("GET", pathname), e)));
      req.on("response", (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => reject(httpError(this.#where("GET", pathname), status, Buffer.concat(chunks))));
          res.on("error", (e) => reject(unreachable(this.#where("GET", pathname), e)));
          return;
        }
        res.setEncoding("utf8");
        let buf = "";
        let failed = false;
        res.on("data", (chunk: string) => {
          buf += chunk.replace(/\r\n?/g, "\n");
          let sep: number;
          while ((sep = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, sep);
            buf = buf.slice(sep + 2);
            const ev: SseEvent = { event: "message", data: "" };
            const data: string[] = [];
            let any = false;
            for (const line of block.split("\n")) {
              if (line === "" || line.startsWith(":")) continue;
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              if (field === "data") data.push(value);
              else if (field === "event") ev.event = value;
              else if (field === "id") ev.id = value;
              else continue;
              any = true;
            }
            if (!any) continue;
            ev.data = data.join("\n");
            try {
              onEvent(ev);
            } catch (e) {
              failed = true;
              res.destroy();
              reject(e);
              return;
            }
          }
        });
        res.on("end", () => {
          if (!failed) resolve();
        });
        res.on("error", (e) => {
          if (!failed) reject(unreachable(this.#where("GET", pathname), e));
        });
        // A connection cut mid-stream ends without an error on some paths: the caller sees no result and reconnects.
        res.on("close", () => {
          if (!failed) resolve();
        });
      });
      req.end();
    });
  }
}

function unreachable(where: string, e: Error): RemoteBuildError {
  const code = (e as NodeJS.ErrnoException).code;
  return new RemoteBuildError(
    "UNREACHABLE",
    `${where}: cannot reach the build server (${code ?? e.message})${tlsHint(code) || "; is `strata serve` running there and STRATA_SERVER right?"}`,
    undefined,
    { cause: e },
  );
}

function httpError(where: string, status: number, body: Buffer, retryAfter?: string): RemoteBuildError {
  let code = `HTTP_${status}`;
  let message = body.toString("utf8").slice(0, 2000) || `HTTP ${status}`;
  try {
    const parsed = JSON.parse(body.toString("utf8")) as Partial<ErrorBody>;
    if (parsed.error?.message) {
      code = parsed.error.code ?? code;
      message = parsed.error.message;
    }
  } catch {
    // not JSON: keep the raw text
  }
  const hint = status === 401 ? " (set STRATA_TOKEN to the server's token)" : "";
  return new RemoteBuildError(
    code,
    `the build server refused ${where} (${status}): ${message}${hint}`,
    status,
    retryAfter !== undefined ? { retryAfter } : undefined,
  );
}
