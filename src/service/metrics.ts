/**
 * The service's Prometheus metrics (prom-client, one registry per service): builds by tenant and outcome, get-or-create
 * requests by result, step cache hits and misses (the hit ratio is `hit / (hit + miss)` in PromQL), step durations,
 * queue depth, store bytes per tenant, quota refusals, upload bytes, connections, plus prom-client's default process
 * and Node.js metrics. Served on the operator's metrics listener (`--metrics-listen`), never on the API port: tenant
 * names and activity are the operator's to see, not the tenants'.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { TenantId } from "./tenants.js";
import type { BuildStatus, WireResult } from "./wire/responses.js";

/** What the gauges read when scraped. */
export interface MetricsSource {
  /** Builds queued or running, with their tenant. */
  active(): { tenant: TenantId; status: BuildStatus }[];
  /** Store bytes counted per tenant (quota accounting). */
  storeBytes(): Promise<Map<TenantId, number>>;
  /** Open connections on the API listener. */
  openConnections(): number;
}

export class ServiceMetrics {
  readonly registry = new Registry();
  readonly #builds: Counter<"tenant" | "outcome">;
  readonly #requests: Counter<"tenant" | "result">;
  readonly #steps: Counter<"tenant" | "cache">;
  readonly #stepSeconds: Histogram<never>;
  readonly #quota: Counter<"tenant" | "quota">;
  readonly #uploadBytes: Counter<"tenant">;
  readonly #refused: Counter<"reason">;
  readonly #timeouts: Counter<"phase">;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.#builds = new Counter({
      name: "strata_builds_total",
      help: "Builds that finished, by tenant and outcome (succeeded, failed, timeout, terminated).",
      labelNames: ["tenant", "outcome"],
      registers,
    });
    this.#requests = new Counter({
      name: "strata_build_requests_total",
      help: "Get-or-create requests, by tenant and result (created, joined, refused).",
      labelNames: ["tenant", "result"],
      registers,
    });
    this.#steps = new Counter({
      name: "strata_steps_total",
      help: "Steps of finished builds, by tenant and cache result (hit, miss): the cache hit ratio is hit / (hit + miss).",
      labelNames: ["tenant", "cache"],
      registers,
    });
    this.#stepSeconds = new Histogram({
      name: "strata_step_duration_seconds",
      help: "How long steps that were built (not cache hits) took.",
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    });
    this.#quota = new Counter({
      name: "strata_quota_refusals_total",
      help: "Requests refused with 429, by tenant and quota (builds, upload-in-flight, upload-window, store).",
      labelNames: ["tenant", "quota"],
      registers,
    });
    this.#uploadBytes = new Counter({
      name: "strata_upload_bytes_total",
      help: "Bytes of context files accepted from clients, by tenant.",
      labelNames: ["tenant"],
      registers,
    });
    this.#refused = new Counter({
      name: "strata_connections_refused_total",
      help: "Connections closed at accept, by reason (max-connections, max-connections-per-client).",
      labelNames: ["reason"],
      registers,
    });
    this.#timeouts = new Counter({
      name: "strata_connection_timeouts_total",
      help: "Connections closed by a timeout, by phase (headers, request, idle).",
      labelNames: ["phase"],
      registers,
    });
    new Gauge({
      name: "strata_builds_active",
      help: "Builds queued (waiting for a slot or a worker: the queue depth) or running, by tenant and state.",
      labelNames: ["tenant", "state"],
      registers,
      collect() {
        this.reset();
        for (const b of source.active())
          this.inc({ tenant: b.tenant, state: b.status === "queued" ? "queued" : "running" });
      },
    });
    new Gauge({
      name: "strata_queue_depth",
      help: "Builds waiting to start, all tenants.",
      registers,
      collect() {
        this.set(source.active().filter((b) => b.status === "queued").length);
      },
    });
    new Gauge({
      name: "strata_store_bytes",
      help: "Store bytes a tenant added within the quota window (uploads + built layers; approximate).",
      labelNames: ["tenant"],
      registers,
      async collect() {
        this.reset();
        for (const [tenant, bytes] of await source.storeBytes()) this.set({ tenant }, bytes);
      },
    });
    new Gauge({
      name: "strata_connections_open",
      help: "Open connections on the API listener.",
      registers,
      collect() {
        this.set(source.openConnections());
      },
    });
  }

  /** A build finished. */
  buildFinished(tenant: TenantId, outcome: BuildStatus, result: WireResult | undefined): void {
    this.#builds.inc({ tenant, outcome });
    for (const s of result?.steps ?? []) {
      this.#steps.inc({ tenant, cache: s.cached ? "hit" : "miss" });
      if (!s.cached) this.#stepSeconds.observe(s.seconds);
    }
  }

  buildRequest(tenant: TenantId, result: "created" | "joined" | "refused"): void {
    this.#requests.inc({ tenant, result });
  }

  quotaRefused(tenant: TenantId, quota: string): void {
    this.#quota.inc({ tenant, quota });
  }

  uploaded(tenant: TenantId, bytes: number): void {
    this.#uploadBytes.inc({ tenant }, bytes);
  }

  connectionRefused(reason: "max-connections" | "max-connections-per-client"): void {
    this.#refused.inc({ reason });
  }

  timedOut(phase: "headers" | "idle" | "request"): void {
    this.#timeouts.inc({ phase });
  }

  /** The exposition: content type and text. */
  async scrape(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }
}
