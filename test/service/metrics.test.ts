// `/metrics` on the operator's listener, scraped and parsed by a Prometheus text-format parser (not by regexes of
// our own): builds by tenant and outcome, step cache hits and misses, the step-duration histogram, queue depth,
// store bytes, get-or-create results, default process metrics; the API port does not serve it; a metrics token is
// enforced. Two tenants of a tenants table.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import { after, test } from "node:test";
import parsePrometheusTextFormat, { type PromFamily } from "parse-prometheus-text-format";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, raw, startService } from "../support/service.js";
import { nonce } from "../support/strata.js";
import { parseTenants, TenantTable } from "../../src/service/tenants.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

function sample(families: PromFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  const f = families.find((x) => x.name === name);
  const m = f?.metrics.find((s) => Object.entries(labels).every(([k, v]) => s.labels?.[k] === v));
  if (!m) return undefined;
  return Number(m.value ?? m.count);
}

test("/metrics on the metrics listener, parsed as Prometheus text: builds, cache, durations, queue, store bytes", async () => {
  const alice = "alice-" + nonce();
  const bob = "bob-" + nonce();
  const metricsToken = "scrape-" + nonce();
  const svc = await startService({
    tenants: TenantTable.of(
      parseTenants(
        JSON.stringify([
          { tenant: "alice", token: alice },
          { tenant: "bob", token: bob },
        ]),
        "test",
      ),
    ),
    metricsToken,
  });
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  try {
    const metricsUrl = await svc.service.listenMetrics(0, "127.0.0.1");
    const image = base.runCommands("echo counted > /counted");
    const opts = { server: svc.url, statCache: false as const, log: () => undefined };
    const first = await remoteBuildImage(image, { ...opts, token: alice });
    const again = await remoteBuildImage(image, { ...opts, token: alice });
    assert.equal(again.joined, true);
    const failed = await remoteBuildImage(base.runCommands("exit 3"), { ...opts, token: bob }).catch((e: unknown) => e);
    assert.ok(failed instanceof Error);

    assert.equal((await raw(metricsUrl, "GET", "/metrics")).status, 401, "the metrics token is required");
    const scrape = await raw(metricsUrl, "GET", "/metrics", { token: metricsToken });
    assert.equal(scrape.status, 200);
    assert.match(String(scrape.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusTextFormat(scrape.text);
    const type = (name: string) => families.find((f) => f.name === name)?.type;

    assert.equal(type("strata_builds_total"), "COUNTER");
    assert.equal(sample(families, "strata_builds_total", { tenant: "alice", outcome: "succeeded" }), 1);
    assert.equal(sample(families, "strata_builds_total", { tenant: "bob", outcome: "failed" }), 1);
    assert.equal(sample(families, "strata_build_requests_total", { tenant: "alice", result: "created" }), 1);
    assert.equal(sample(families, "strata_build_requests_total", { tenant: "alice", result: "joined" }), 1);

    // Alice's build: its steps' cache results (the base steps may be hits from other tests' builds, the RUN is new).
    const steps = first.steps.length;
    const hits = sample(families, "strata_steps_total", { tenant: "alice", cache: "hit" }) ?? 0;
    const misses = sample(families, "strata_steps_total", { tenant: "alice", cache: "miss" }) ?? 0;
    assert.equal(hits + misses, steps);
    assert.equal(misses, first.steps.filter((s) => !s.cached).length);
    assert.ok(misses >= 1);

    assert.equal(type("strata_step_duration_seconds"), "HISTOGRAM");
    const hist = families.find((f) => f.name === "strata_step_duration_seconds")!.metrics[0]!;
    assert.ok(Number(hist.count) >= misses, `histogram count ${hist.count}`);
    assert.ok(hist.buckets && "+Inf" in hist.buckets);

    assert.equal(type("strata_queue_depth"), "GAUGE");
    assert.equal(sample(families, "strata_queue_depth"), 0);
    assert.ok((sample(families, "strata_store_bytes", { tenant: "alice" }) ?? 0) > 0, "alice's uploads and layer");
    assert.ok((sample(families, "strata_connections_open") ?? 0) >= 0);
    assert.ok((sample(families, "process_cpu_user_seconds_total") ?? -1) >= 0, "default process metrics");
    assert.ok(families.some((f) => f.name === "nodejs_heap_size_used_bytes"));

    // The API port does not serve metrics: tenants never see each other's names or activity there.
    assert.equal((await raw(svc.url, "GET", "/metrics", { token: alice })).status, 404);
  } finally {
    await svc.close();
  }
});
