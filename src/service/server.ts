/**
 * The build service over HTTP (node:http, JSON, SSE):
 *
 *   POST /v1/blobs/check        {digests}            → {missing}
 *   PUT  /v1/blobs/sha256:<hex>  raw file bytes       → 201 {digest, size} (streamed to disk, verified)
 *   HEAD /v1/blobs/sha256:<hex>                       → 200 | 404
 *   POST /v1/images             BuildRequest         → 202 {buildId, status, joined} | 200 {…, imageId, result}
 *   GET  /v1/images/<build id>                       → BuildInfo (+ image config and layers on success)
 *   GET  /v1/images/sha256:<hex>                     → ImageInfo of a stored image
 *   GET  /v1/images/<build id>/logs?after=<cursor>   → text/event-stream: `id: <cursor>` + `data: <JSON string>` per
 *                                                      line, then `event: result` with {status, result|failure}
 *   POST /v1/internal/jobs/<build id>/secrets        → a queued build's secret values, for its worker only
 *                                                      (worker token; job-secrets.ts)
 *   /v1/names…, /v1/resolve/<ref>, GET /v1/images/sha256:<hex>/record|logs, GET /v1/blobs/sha256:<hex>, POST /v1/push
 *                                                    → names, and images built here for clients (image-routes.ts)
 *
 * Every request is handled inside a catch: a malformed one gets a 4xx with `{error: {code, message}}`, an
 * unexpected failure a 500 (and a line in the server log), never a crash. With tenants (tenants.ts: a tenants file,
 * or STRATA_TOKEN as the one tenant `default`), every request needs `Authorization: Bearer <token>` and acts as the
 * tenant the token names: builds, logs, images and blobs of another tenant are not found (404; a blob another tenant
 * uploaded is "missing"), and sharing (joins, cache, trees) stays within the tenant.
 */
import { RuncExecutor, servicePolicy, type ServiceSandboxOptions } from "../sandbox/runc.js";
import { randomBytes } from "node:crypto";
import type http from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import { knownBuilderVersions } from "../builder-version.js";
import type { Executor } from "../sandbox/runc.js";
import type { NamedStore } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { checkDebianBases } from "./bases.js";
import type { Build } from "./build-record.js";
import { Builds, MissingBlobsError, MissingImageError } from "./builds.js";
import { answerJobSecrets, queueWorkerToken, type WorkerToken } from "./job-secrets.js";
import type { BuildQueue } from "./queue.js";
import { DEFAULT_TENANT, TenantTable, type Tenant } from "./tenants.js";
import { InputTrees } from "./trees.js";
import { FetchPolicy } from "../net/fetch-policy.js";
import { serviceConfig } from "../net/fetch-rules.js";
import { parseBlobCheck, parseBuildRequest } from "./wire/decode.js";
import { isDigestString, WireError } from "./wire/limits.js";
import type { BuildInfo, CreateResponse } from "./wire/responses.js";
import { ConfigError } from "../errors.js";
import { FRONT_DOOR_DEFAULTS, listenGuarded, requestDeadline, type FrontDoorOptions } from "./front-door.js";
import { ServiceMetrics } from "./metrics.js";
import { serveMetrics, type MetricsListener } from "./metrics-server.js";
import {
  TenantQuotas,
  builtLayerBytes,
  defaultTenantRunning,
  storeUsageRecords,
  type TenantQuotaLimits,
} from "./quotas.js";
import { receiveBlob } from "./blob-upload.js";
import { sendError } from "./error-response.js";
import { HttpError, decodePart, definedOnly, readJson, sendJson } from "./http-io.js";
import { streamLogs } from "./log-stream.js";
import { handleImageRoute, type ImageRoutesContext } from "./image-routes.js";

export interface BuildServiceOptions {
  store: NamedStore;
  /** Who may build (`strata serve --tenants FILE`); replaced at run time with {@link BuildService.setTenants}. */
  tenants?: TenantTable;
  /** Without `tenants`: the bearer token of the one tenant `default` (`STRATA_TOKEN`); none: no authentication. */
  token?: string;
  /** Builds running at once; more wait as `queued`. Default 8. */
  maxConcurrentBuilds?: number;
  /** Builds queued or running at most; a new one beyond gets 503. Default 512. */
  maxActiveBuilds?: number;
  /** Largest single uploaded file. Default 8 GiB. */
  maxBlobBytes?: number;
  /** Input trees kept materialised. Default 256. */
  maxTrees?: number;
  /** Finished builds kept in memory. Default 1000. */
  maxFinishedBuilds?: number;
  maxLogLines?: number;
  maxLogBytes?: number;
  /** SSE keep-alive comment interval. Default 15 s. */
  heartbeatMs?: number;
  /** The server's own log (errors; every request when `logRequests`). Default: stderr. */
  log?: (line: string) => void;
  logRequests?: boolean;
  /** Runs the steps. Default: runc under `servicePolicy(sandbox)`. */
  executor?: Executor;
  /** The sandbox policy of the default executor: the network.host entitlement, step timeouts. */
  sandbox?: ServiceSandboxOptions;
  /**
   * Run builds on `strata worker` processes through a BullMQ queue in this Redis instead of in this process
   * (default: STRATA_REDIS_URL; an empty string means in-process). The store must be the one the workers use.
   */
  redisUrl?: string;
  /** Key prefix in Redis (default: STRATA_REDIS_PREFIX, else `strata`). */
  redisPrefix?: string;
  /** PEM file of the CA of Redis's TLS certificate (default: STRATA_REDIS_CA; else the system's CAs). */
  redisCaFile?: string;
  /** Use a Redis that answers without a password (default: STRATA_REDIS_INSECURE=1). Refused otherwise. */
  insecureRedis?: boolean;
  /**
   * The credential workers fetch queued builds' secret values with (default: STRATA_WORKER_TOKEN; at least 32
   * characters, never a client's token). Required with a queue.
   */
  workerToken?: string;
  /** A queue to use instead of connecting to `redisUrl` (closed by the service). */
  queue?: BuildQueue;
  /**
   * Where builds may fetch from on a client's behalf (ADD URLs, registry bases, COPY --from images, GCP token
   * endpoints) and the limits of URL downloads. Default: the service's policy with no allowances (public addresses
   * only, no client-chosen plain HTTP, 2 GiB and 1 h per download).
   */
  fetchPolicy?: FetchPolicy;
  /** Timeouts and connection caps (see front-door.ts for the defaults and why). */
  frontDoor?: FrontDoorOptions;
  /** Per-tenant quotas (see quotas.ts for the defaults). */
  quotas?: TenantQuotaLimits;
  /** Builds one tenant runs at once. Default: all slots with one tenant, half of them with several. */
  maxRunningPerTenant?: number;
  /** Serve HTTPS with this certificate chain and key (PEM). Default: plain HTTP. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Bearer token the metrics listener requires (STRATA_METRICS_TOKEN). Default: none. */
  metricsToken?: string;
}

export class BuildService {
  readonly builds: Builds;
  readonly trees: InputTrees;
  readonly #opts: BuildServiceOptions;
  readonly #log: (line: string) => void;
  #tenants: TenantTable;
  /** The tenant each request authenticated as (see {@link authenticate}). */
  readonly #requestTenants = new WeakMap<http.IncomingMessage, Tenant>();
  readonly #maxBlob: number;
  #server?: http.Server | https.Server;
  readonly #door: Required<FrontDoorOptions>;
  readonly quotas: TenantQuotas;
  readonly metrics: ServiceMetrics;
  /** Sockets whose request the handler is still answering (not idle on the client's side). */
  readonly #busy = new WeakMap<Socket, http.IncomingMessage>();
  #connections: { open: () => number } = { open: () => 0 };
  #metricsListener?: MetricsListener;
  /** Store accounting of finished builds in progress (awaited by close). */
  readonly #counting = new Set<Promise<void>>();
  readonly #streams = new Set<http.ServerResponse>();
  #builderVersions?: string[];
  /** The queue builds go to (scale-out mode), if any. */
  readonly queue?: BuildQueue;
  readonly #workerToken?: WorkerToken;
  readonly #images: ImageRoutesContext;

  private constructor(
    opts: BuildServiceOptions,
    trees: InputTrees,
    queue: BuildQueue | undefined,
    workerToken: WorkerToken | undefined,
    joinSecret: Buffer,
  ) {
    this.#opts = opts;
    this.#workerToken = workerToken;
    this.#log = opts.log ?? ((l) => process.stderr.write(`${new Date().toISOString()} ${l}\n`));
    this.#tenants = opts.tenants ?? TenantTable.single(opts.token);
    this.#maxBlob = opts.maxBlobBytes ?? 8 * 1024 ** 3;
    this.trees = trees;
    this.queue = queue;
    this.#door = { ...FRONT_DOOR_DEFAULTS, ...definedOnly(opts.frontDoor ?? {}) };
    this.quotas = new TenantQuotas(opts.quotas, { records: storeUsageRecords(opts.store), log: this.#log });
    this.metrics = new ServiceMetrics({
      active: () => this.builds.active.map((b) => ({ tenant: b.tenant.id, status: b.status })),
      storeBytes: async () => {
        const out = new Map<string, number>();
        for (const t of this.quotas.tenants) out.set(t, await this.quotas.storeBytes(t));
        return out;
      },
      openConnections: () => this.#connections.open(),
    });
    const slots = opts.maxConcurrentBuilds ?? 8;
    const fetchPolicy = opts.fetchPolicy ?? new FetchPolicy(serviceConfig());
    this.builds = new Builds({
      store: opts.store,
      trees,
      maxConcurrent: opts.maxConcurrentBuilds,
      maxActive: opts.maxActiveBuilds,
      maxFinished: opts.maxFinishedBuilds,
      maxLogLines: opts.maxLogLines,
      maxLogBytes: opts.maxLogBytes,
      executor: opts.executor ?? new RuncExecutor(servicePolicy(opts.sandbox)),
      fetchPolicy,
      ...(queue ? { queue } : {}),
      log: this.#log,
      joinSecret,
      quotas: this.quotas,
      // Read at each admission: a SIGHUP reload that adds or removes tenants changes the default share.
      maxRunningPerTenant: () => opts.maxRunningPerTenant ?? defaultTenantRunning(slots, this.#tenants.tenants.length),
      onFinished: (b) => this.#buildFinished(b),
    });
    this.#images = {
      store: opts.store,
      storeFor: (t) => this.builds.storeFor(t),
      visibility: this.builds.visibility,
      fetchPolicy,
    };
  }

  /** The tenants now in force. */
  get tenants(): TenantTable {
    return this.#tenants;
  }

  /** Replaces the tenants (SIGHUP's reload): later requests authenticate against `table`; running builds go on. */
  setTenants(table: TenantTable): void {
    if (this.#workerToken && table.hasTokenHash(this.#workerToken.sha256))
      throw new ConfigError(
        "the new tenants file gives a tenant the workers' token (STRATA_WORKER_TOKEN); choose another",
      );
    this.#tenants = table;
  }

  /** Metrics and store accounting of a finished build: the layers it built count against its tenant's store quota. */
  #buildFinished(b: Build): void {
    this.metrics.buildFinished(b.tenant.id, b.status, b.result);
    if (!b.result) return;
    const counting = builtLayerBytes(this.#opts.store, b.result)
      .then((bytes) => this.quotas.addStored(b.tenant.id, bytes))
      .catch((e: unknown) => this.#log(`could not count the layers of build ${b.id}: ${String(e)}`))
      .finally(() => this.#counting.delete(counting));
    this.#counting.add(counting);
  }

  static async create(opts: BuildServiceOptions): Promise<BuildService> {
    // Builds of killed servers leave temp dirs and containers behind: reclaim them before serving.
    await opts.store.recover(async () => (await import("../sandbox/runc.js")).reapStaleContainers());
    const redisUrl = opts.redisUrl ?? process.env.STRATA_REDIS_URL ?? "";
    const log = opts.log ?? ((l: string) => process.stderr.write(`${new Date().toISOString()} ${l}\n`));
    const clients = opts.tenants ?? TenantTable.single(opts.token);
    const workerToken =
      redisUrl || opts.queue ? queueWorkerToken(opts.workerToken, (t) => !!clients.authenticate(t)) : undefined;
    // bullmq and ioredis are loaded only in scale-out mode.
    const q = redisUrl && !opts.queue ? await import("./queue.js") : undefined;
    const caFile = opts.redisCaFile ?? (process.env.STRATA_REDIS_CA?.trim() || undefined);
    const queue =
      opts.queue ??
      (q
        ? await q.BuildQueue.connect(
            {
              url: redisUrl,
              ...(caFile ? { caFile } : {}),
              insecure: opts.insecureRedis ?? process.env.STRATA_REDIS_INSECURE === "1",
            },
            {
              prefix: opts.redisPrefix ?? (process.env.STRATA_REDIS_PREFIX || undefined),
              log,
              signingKey: workerToken!.signingKey,
            },
          )
        : undefined);
    if (q && queue)
      log(
        `builds run on \`strata worker\` processes: queue in Redis at ${q.redactUrl(redisUrl)} (prefix ${queue.keys.prefix})`,
      );
    try {
      // Servers of one queue share the join secret (so their identical requests join one job); alone, it is random.
      const joinSecret = queue ? await queue.joinSecret() : randomBytes(32);
      return new BuildService(
        opts,
        await InputTrees.open(opts.store, { maxTrees: opts.maxTrees }),
        queue,
        workerToken,
        joinSecret,
      );
    } catch (e) {
      await queue?.close();
      throw e;
    }
  }

  /** The request listener (usable with any node:http server). */
  readonly handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const t0 = process.hrtime.bigint();
    const socket = req.socket;
    this.#busy.set(socket, req);
    res.once("close", () => {
      if (this.#busy.get(socket) === req) this.#busy.delete(socket);
    });
    this.#handle(req, res)
      .catch((e: unknown) => sendError({ metrics: this.metrics, log: this.#log }, req, res, e))
      .catch((e: unknown) => {
        this.#log(`could not answer ${req.method} ${req.url}: ${e instanceof Error ? e.stack : String(e)}`);
        res.destroy();
      })
      .finally(() => {
        if (this.#opts.logRequests)
          this.#log(
            `${req.method} ${req.url} ${res.statusCode} ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)}ms tenant=${this.#requestTenants.get(req)?.id ?? "-"}`,
          );
      });
  };

  /** Listens on `host:port` (port 0: any free port); resolves to the base URL. */
  async listen(port: number, host = "127.0.0.1"): Promise<string> {
    const door = await listenGuarded({
      door: this.#door,
      ...(this.#opts.tls ? { tls: this.#opts.tls } : {}),
      handler: this.handler,
      busy: (socket) => this.#busy.get(socket)?.complete === true,
      counters: { refused: (r) => this.metrics.connectionRefused(r), timedOut: (p) => this.metrics.timedOut(p) },
      port,
      host,
    });
    this.#server = door.server;
    this.#connections = door;
    return door.url;
  }

  /** Replaces the TLS certificate and key for new connections (after a renewal; `strata serve` on SIGHUP). */
  setTls(tls: { cert: string | Buffer; key: string | Buffer }): void {
    if (!(this.#server instanceof https.Server))
      throw new Error("this build service was not started with TLS (--tls-cert, --tls-key)");
    this.#server.setSecureContext(tls);
  }

  /**
   * Serves `GET /metrics` (Prometheus text) on its own listener, for the operator: not on the API port, where tenants
   * would see each other's names and activity. With `metricsToken`, a scrape needs `Authorization: Bearer <it>`.
   */
  async listenMetrics(port: number, host = "127.0.0.1"): Promise<string> {
    this.#metricsListener = await serveMetrics(this.metrics, port, host, {
      ...(this.#opts.metricsToken ? { token: this.#opts.metricsToken } : {}),
      frontDoor: this.#door,
      log: this.#log,
    });
    return this.#metricsListener.url;
  }

  /** Stops listening, ends log streams, terminates running builds (waiting up to `graceMs` for them). */
  async close(graceMs = 30_000): Promise<void> {
    const server = this.#server;
    const closed = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    await this.builds.close(graceMs);
    await this.queue?.close();
    for (const s of this.#streams) s.end();
    server?.closeIdleConnections();
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
    server?.closeAllConnections();
    await this.#metricsListener?.close();
    await Promise.all(this.#counting);
    await this.quotas.flush();
  }

  // -------------------------------------------------------------------------------------------------------------

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://service.invalid");
    const parts = url.pathname.split("/").filter(Boolean);
    // Workers' own endpoint: the worker token, never a client's (job-secrets.ts).
    if (parts[0] === "v1" && parts[1] === "internal") return this.#internal(req, res, parts);
    const tenant = this.authenticate(req);
    const streaming = (req.method === "PUT" && parts[1] === "blobs") || parts[3] === "logs";
    if (!streaming) this.#deadline(req, res);
    if (parts[0] !== "v1")
      throw new HttpError(404, "NOT_FOUND", `no such endpoint ${url.pathname} (the API is under /v1/)`);
    const method = req.method ?? "GET";
    const allow = (methods: string[]) => {
      if (!methods.includes(method))
        throw new HttpError(
          405,
          "METHOD_NOT_ALLOWED",
          `${method} is not allowed on ${url.pathname} (allowed: ${methods.join(", ")})`,
          { allow: methods.join(", ") },
        );
    };
    if (await handleImageRoute(this.#images, req, res, parts, tenant)) return;
    if (parts[1] === "blobs" && parts.length === 3 && parts[2] === "check") {
      allow(["POST"]);
      const digests = parseBlobCheck(await readJson(req));
      return sendJson(res, 200, { missing: await this.builds.visibility.missing(tenant, digests) });
    }
    if (parts[1] === "blobs" && parts.length === 3) {
      allow(["GET", "PUT", "HEAD"]);
      const digest = decodePart(parts[2]!);
      if (!isDigestString(digest))
        throw new HttpError(
          400,
          "BAD_DIGEST",
          `"${digest}" is not a blob digest: expected sha256:<64 lowercase hex digits>`,
        );
      if (method === "HEAD") {
        res.writeHead((await this.builds.visibility.blobVisible(tenant, digest as Digest)) ? 200 : 404).end();
        return;
      }
      const upload = {
        store: this.#opts.store,
        maxBlob: this.#maxBlob,
        quotas: this.quotas,
        visibility: this.builds.visibility,
        metrics: this.metrics,
      };
      return receiveBlob(upload, req, res, digest as Digest, tenant);
    }
    if (parts[1] === "images" && parts.length === 2) {
      allow(["POST"]);
      return this.#createImage(req, res, tenant);
    }
    if (parts[1] === "images" && (parts.length === 3 || (parts.length === 4 && parts[3] === "logs"))) {
      allow(["GET"]);
      const id = decodePart(parts[2]!);
      if (parts.length === 3 && id.startsWith("sha256:")) {
        const image = isDigestString(id) ? await this.builds.image(id, tenant) : undefined;
        if (!image) throw new HttpError(404, "NOT_FOUND", `image ${id} is not in the server's store`);
        return sendJson(res, 200, image);
      }
      if (!/^[0-9a-f]{64}$/.test(id))
        throw new HttpError(
          404,
          "NOT_FOUND",
          `"${id}" is not a build id (64 hex digits) or an image id (sha256:<hex>)`,
        );
      const build = await this.builds.get(id, tenant);
      if (!build) throw new HttpError(404, "NOT_FOUND", `no build ${id} on this server`);
      if (parts.length === 3) return sendJson(res, 200, await this.#buildInfo(build));
      return streamLogs({ streams: this.#streams, heartbeatMs: this.#opts.heartbeatMs }, req, res, build, url);
    }
    throw new HttpError(404, "NOT_FOUND", `no such endpoint ${url.pathname}`);
  }

  /**
   * The tenant a request is (its bearer token's; the one tenant `default` when the service requires no token), or a
   * 401. Remembered per request, so any handler (quotas, metrics) can ask again.
   */
  authenticate(req: http.IncomingMessage): Tenant {
    const known = this.#requestTenants.get(req);
    if (known) return known;
    const tenant = this.#authenticate(req);
    this.#requestTenants.set(req, tenant);
    return tenant;
  }

  #authenticate(req: http.IncomingMessage): Tenant {
    const table = this.#tenants;
    if (table.open) return DEFAULT_TENANT;
    const h = req.headers.authorization;
    const m = h ? /^Bearer\s+(.+)$/i.exec(h) : null;
    const challenge = { "www-authenticate": 'Bearer realm="strata"' };
    if (!m)
      throw new HttpError(
        401,
        "UNAUTHORIZED",
        "this build server requires a token: send `Authorization: Bearer <token>` (set STRATA_TOKEN on the client)",
        challenge,
      );
    const tenant = table.authenticate(m[1]!.trim());
    if (!tenant)
      throw new HttpError(401, "UNAUTHORIZED", "the bearer token is not valid for this build server", challenge);
    return tenant;
  }

  /** `POST /v1/internal/jobs/<build id>/secrets`: a queued build's secret values, for the worker that runs it. */
  async #internal(req: http.IncomingMessage, res: http.ServerResponse, parts: string[]): Promise<void> {
    const a = await answerJobSecrets(this.queue?.secrets, this.#workerToken, {
      method: req.method ?? "GET",
      parts,
      authorization: req.headers.authorization,
      readBody: () => readJson(req),
    });
    if (!("values" in a)) throw new HttpError(a.status, a.code, a.message, a.headers);
    sendJson(res, 200, a.values, { "cache-control": "no-store" });
  }

  /** A non-streaming request's body must arrive within the request timeout: else 408, and the connection closes. */
  #deadline(req: http.IncomingMessage, res: http.ServerResponse): void {
    const ms = this.#door.requestTimeoutMs;
    requestDeadline(req, ms, () => {
      this.metrics.timedOut("request");
      if (!res.headersSent) {
        res.setHeader("connection", "close");
        sendJson(res, 408, {
          error: { code: "REQUEST_TIMEOUT", message: `the request body did not arrive within ${ms} ms` },
        });
      }
      res.once("finish", () => req.socket.destroy());
      setTimeout(() => req.socket.destroy(), 1000).unref();
    });
  }

  async #createImage(req: http.IncomingMessage, res: http.ServerResponse, tenant: Tenant): Promise<void> {
    const body = parseBuildRequest(await readJson(req));
    this.#builderVersions ??= knownBuilderVersions();
    if (!this.#builderVersions.includes(body.builderVersion)) {
      throw new WireError(
        `builderVersion: "${body.builderVersion}" is not a builder version this server knows (known: ${this.#builderVersions.join(", ")})`,
      );
    }
    checkDebianBases(body);
    let got;
    try {
      got = await this.builds.getOrCreate(body, tenant);
    } catch (e) {
      this.metrics.buildRequest(tenant.id, "refused");
      if (e instanceof MissingBlobsError) throw new HttpError(400, e.code, e.message, {}, e.missing.slice(0, 1000));
      if (e instanceof MissingImageError) throw new HttpError(400, e.code, e.message);
      if (e instanceof Error && (e as { code?: unknown }).code === "TERMINATED")
        throw new HttpError(503, "SHUTTING_DOWN", e.message);
      if (e instanceof Error && (e as { code?: unknown }).code === "BUSY")
        throw new HttpError(503, "BUSY", e.message, { "retry-after": "10" });
      throw e;
    }
    const { build, joined } = got;
    this.metrics.buildRequest(tenant.id, joined ? "joined" : "created");
    const out: CreateResponse = { buildId: build.id, status: build.status, joined };
    if (build.status === "succeeded" && build.result) {
      out.imageId = build.result.imageId;
      // A request answered by a finished build was all cache hits, as a local build would report.
      out.result = joined
        ? { imageId: build.result.imageId, steps: build.result.steps.map((s) => ({ ...s, cached: true, seconds: 0 })) }
        : build.result;
    }
    sendJson(res, build.finished ? 200 : 202, out);
  }

  async #buildInfo(build: Build): Promise<BuildInfo> {
    const info = build.info();
    if (build.status === "succeeded" && build.result) {
      const image = await this.builds.image(build.result.imageId, build.tenant).catch(() => undefined);
      if (image) info.image = image;
    }
    return info;
  }
}
