/**
 * `strata worker [--concurrency N] [--grace 30s] [--job-lock 30s] [--stalled-interval 15s] [--step-lock 30s]
 * [--service URL]… [--insecure-redis] [--allow-network-host] [--step-timeout 1h] [--max-step-timeout 4h]
 * [--allow-fetch …] [--insecure-registry …] [--fetch-max-bytes …] [--fetch-timeout …] [--fetch-idle-timeout …]
 * [--registry-config FILE]` (the
 * sandbox and fetch flags as `strata serve`'s):
 * takes builds from the queue that `strata serve` fills when STRATA_REDIS_URL is set, and runs them on the store
 * the environment names (STRATA_S3_BUCKET …, shared with the server and the other workers; else STRATA_HOME, for
 * workers on the server's machine). Runs until SIGTERM or SIGINT: it then stops taking jobs, lets running builds
 * finish for the grace period and gives the rest back to the queue. Prints its name on stdout once it takes jobs.
 *
 * Environment: STRATA_REDIS_URL (required; Redis must require a password, see redis-connect.ts), STRATA_REDIS_CA,
 * STRATA_REDIS_PREFIX (default `strata`), STRATA_SERVICE_URL (the build services that queue builds, comma-separated;
 * or `--service`, repeated) and STRATA_WORKER_TOKEN (the services' worker token; both required: a build's secret
 * values are fetched from the service that queued it), STRATA_CA_FILE (the CA of an https:// service, as for
 * `strata build`), the store's variables.
 */
import { parseArgs } from "node:util";
import { parseDuration, type ServiceSandboxOptions } from "../sandbox/runc.js";
import { SANDBOX_FLAGS, sandboxOptions } from "./sandbox-flags.js";
import { FETCH_FLAGS, fetchPolicyOf } from "./fetch-flags.js";
import type { FetchPolicy } from "../net/fetch-policy.js";
import { serviceAgent } from "../service/tls.js";

/** Parses `30s`, `1500ms`, `2m`, `1h` or a plain number of milliseconds. */
function parseMs(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  try {
    return parseDuration(v, `--${flag}`, "ms");
  } catch (e) {
    throw new WorkerUsageError((e as Error).message);
  }
}

class WorkerUsageError extends Error {}

/** The build services: `--service` flags, else STRATA_SERVICE_URL (comma-separated); each an http(s) URL. */
function serviceUrls(flags: string[]): string[] {
  const list = flags.length ? flags : (process.env.STRATA_SERVICE_URL ?? "").split(",");
  return list
    .map((u) => u.trim())
    .filter(Boolean)
    .map((u) => {
      let parsed: URL;
      try {
        parsed = new URL(u);
      } catch {
        throw new WorkerUsageError(`"${u}" is not a build service URL (expected http://host:port or https://…)`);
      }
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:")
        throw new WorkerUsageError(`"${u}" is not a build service URL (expected http://host:port or https://…)`);
      return u;
    });
}

export async function cmdWorker(argv: string[]): Promise<number> {
  let opts: {
    concurrency?: number;
    graceMs: number;
    jobLockMs?: number;
    stalledIntervalMs?: number;
    stepLockMs?: number;
    sandbox: ServiceSandboxOptions;
    services: string[];
    insecureRedis: boolean;
    fetchPolicy: FetchPolicy;
  };
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        concurrency: { type: "string" },
        grace: { type: "string" },
        "job-lock": { type: "string" },
        "stalled-interval": { type: "string" },
        "step-lock": { type: "string" },
        service: { type: "string", multiple: true },
        "insecure-redis": { type: "boolean" },
        ...SANDBOX_FLAGS,
        ...FETCH_FLAGS,
      },
    });
    if (positionals.length) throw new WorkerUsageError(`unexpected argument "${positionals[0]}"`);
    const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
    if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1))
      throw new WorkerUsageError(`--concurrency expects a positive integer, got "${values.concurrency}"`);
    opts = {
      ...(concurrency !== undefined ? { concurrency } : {}),
      graceMs: parseMs("grace", values.grace) ?? 30_000,
      jobLockMs: parseMs("job-lock", values["job-lock"]),
      stalledIntervalMs: parseMs("stalled-interval", values["stalled-interval"]),
      stepLockMs: parseMs("step-lock", values["step-lock"]),
      services: serviceUrls(values.service ?? []),
      insecureRedis: values["insecure-redis"] ?? false,
      sandbox: (() => {
        try {
          return sandboxOptions(values);
        } catch (e) {
          throw new WorkerUsageError((e as Error).message);
        }
      })(),
      fetchPolicy: (() => {
        try {
          return fetchPolicyOf(values);
        } catch (e) {
          throw new WorkerUsageError((e as Error).message);
        }
      })(),
    };
  } catch (e) {
    if (
      e instanceof WorkerUsageError ||
      (e instanceof TypeError && String((e as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS"))
    ) {
      process.stderr.write(`strata worker: ${(e as Error).message}\n`);
      return 2;
    }
    throw e;
  }
  const redisUrl = process.env.STRATA_REDIS_URL?.trim();
  if (!redisUrl) {
    process.stderr.write(
      "strata worker: STRATA_REDIS_URL is not set: it names the Redis that holds the build queue (e.g. redis://:<password>@127.0.0.1:6379), the same one `strata serve` uses\n",
    );
    return 2;
  }
  const workerToken = process.env.STRATA_WORKER_TOKEN?.trim();
  if (!opts.services.length || !workerToken) {
    process.stderr.write(
      `strata worker: ${!opts.services.length ? "no build service given" : "STRATA_WORKER_TOKEN is not set"}: a worker fetches each build's secret values from the service that queued it, so it needs the services' URLs (STRATA_SERVICE_URL=http://host:port[,…] or --service, repeated) and their worker token (STRATA_WORKER_TOKEN, as set for \`strata serve\`)\n`,
    );
    return 2;
  }
  try {
    // An https:// service is trusted as `strata build` trusts one (STRATA_CA_FILE): a bad CA file fails here.
    for (const u of opts.services) serviceAgent(new URL(u)).destroy();
  } catch (e) {
    process.stderr.write(`strata worker: ${(e as Error).message}\n`);
    return 2;
  }
  const { openStoreFromEnv } = await import("../store/s3/open.js");
  const store = await openStoreFromEnv();
  const { BuildWorker } = await import("../service/worker.js");
  const onUnhandled = (e: unknown) =>
    process.stderr.write(`strata worker: unhandled error (continuing): ${e instanceof Error ? e.stack : String(e)}\n`);
  process.on("unhandledRejection", onUnhandled);
  let worker: import("../service/worker.js").BuildWorker;
  try {
    worker = await BuildWorker.start({
      redisUrl,
      workerToken,
      ...(process.env.STRATA_REDIS_CA?.trim() ? { redisCaFile: process.env.STRATA_REDIS_CA.trim() } : {}),
      ...(opts.insecureRedis || process.env.STRATA_REDIS_INSECURE === "1" ? { insecureRedis: true } : {}),
      secretsFrom: { services: opts.services, token: workerToken },
      store,
      ...(process.env.STRATA_REDIS_PREFIX ? { prefix: process.env.STRATA_REDIS_PREFIX } : {}),
      ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
      ...(opts.jobLockMs !== undefined ? { jobLockMs: opts.jobLockMs } : {}),
      ...(opts.stalledIntervalMs !== undefined ? { stalledIntervalMs: opts.stalledIntervalMs } : {}),
      ...(opts.stepLockMs !== undefined ? { stepLockMs: opts.stepLockMs } : {}),
      sandbox: opts.sandbox,
      fetchPolicy: opts.fetchPolicy,
    });
  } catch (e) {
    process.off("unhandledRejection", onUnhandled);
    process.stderr.write(`strata worker: error: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  // Listeners stay installed until the shutdown is over (execa's exit hooks would re-raise an unheard signal).
  // They go in before the name is printed: until a process listens for SIGTERM, SIGTERM kills it outright, and
  // whoever waits for the name may send it at once.
  let stopping = false;
  let onSignal: (signal: NodeJS.Signals) => void = () => undefined;
  const stopped = new Promise<void>((resolve) => {
    onSignal = (signal) => {
      if (stopping) {
        process.stderr.write(`strata worker: ${signal} again: giving running builds back to the queue now\n`);
        worker.abortRunning();
        return;
      }
      stopping = true;
      process.stderr.write(
        `strata worker: ${signal}: taking no more builds; waiting up to ${opts.graceMs / 1000}s for ${worker.running} running\n`,
      );
      resolve();
    };
  });
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  process.stdout.write(worker.name + "\n");
  try {
    await stopped;
    await worker.close(opts.graceMs);
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    process.off("unhandledRejection", onUnhandled);
    (store as { close?: () => void }).close?.();
  }
  process.stderr.write("strata worker: stopped\n");
  return 0;
}
