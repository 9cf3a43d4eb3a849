/**
 * `strata serve [--port 8080] [--host 127.0.0.1] [--tenants FILE] [--max-builds N] [--verbose] [--allow-network-host]
 * [--step-timeout 1h] [--max-step-timeout 4h] [--insecure-redis] [--allow-fetch host[:port]|CIDR]…
 * [--insecure-registry host:port]… [--fetch-max-bytes 2GiB] [--fetch-timeout 1h] [--fetch-idle-timeout 60s]
 * [--registry-config FILE]`: runs
 * the build service on the store the environment names (S3 with STRATA_S3_BUCKET, else STRATA_HOME), until SIGTERM
 * or SIGINT. With `--tenants`, every request needs the bearer token of a tenant in FILE (SIGHUP reloads it; a bad
 * file keeps the old tenants); with STRATA_TOKEN instead, that token (one tenant). Prints the listening URL on stdout.
 *
 * Front door, quota, TLS and metrics flags: serve-flags.ts.
 *
 * With STRATA_REDIS_URL, builds are queued for `strata worker`s: Redis must require a password (refused otherwise,
 * unless `--insecure-redis`), `rediss://` uses TLS (STRATA_REDIS_CA: a private CA's PEM file), and
 * STRATA_WORKER_TOKEN is required — workers fetch each build's secret values from this service with it.
 */
import { parseArgs } from "node:util";
import type { ServiceSandboxOptions } from "../sandbox/runc.js";
import { SANDBOX_FLAGS, sandboxOptions } from "./sandbox-flags.js";
import { FETCH_FLAGS, describeFetchPolicy, fetchPolicyOf } from "./fetch-flags.js";
import type { FetchPolicy } from "../net/fetch-policy.js";
import { DOOR_FLAGS, doorConfig, type DoorConfig } from "./serve-flags.js";
import { readFile } from "node:fs/promises";

export async function cmdServe(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      port: { type: "string", default: "8080" },
      host: { type: "string", default: "127.0.0.1" },
      "max-builds": { type: "string" },
      tenants: { type: "string" },
      verbose: { type: "boolean" },
      "insecure-redis": { type: "boolean" },
      ...SANDBOX_FLAGS,
      ...FETCH_FLAGS,
      ...DOOR_FLAGS,
    },
  });
  if (positionals.length) {
    process.stderr.write(`strata serve: unexpected argument "${positionals[0]}"\n`);
    return 2;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`strata serve: --port expects a port number (0-65535), got "${values.port}"\n`);
    return 2;
  }
  const maxBuilds = values["max-builds"] === undefined ? undefined : Number(values["max-builds"]);
  if (maxBuilds !== undefined && (!Number.isInteger(maxBuilds) || maxBuilds < 1)) {
    process.stderr.write(`strata serve: --max-builds expects a positive integer, got "${values["max-builds"]}"\n`);
    return 2;
  }
  let sandbox: ServiceSandboxOptions;
  let door: DoorConfig;
  let tls: { cert: Buffer; key: Buffer } | undefined;
  try {
    sandbox = sandboxOptions(values);
    door = doorConfig(values);
    tls = door.tls ? await readTls(door.tls) : undefined;
  } catch (e) {
    process.stderr.write(`strata serve: ${(e as Error).message}\n`);
    return 2;
  }
  let fetchPolicy: FetchPolicy;
  try {
    fetchPolicy = fetchPolicyOf(values);
  } catch (e) {
    process.stderr.write(`strata serve: ${(e as Error).message}\n`);
    return 2;
  }
  const token = process.env.STRATA_TOKEN || undefined;
  const tenantsFile = values.tenants;
  if (tenantsFile !== undefined && token) {
    process.stderr.write(
      "strata serve: both --tenants and STRATA_TOKEN are set: put that token in the tenants file (as a tenant of its own) and unset STRATA_TOKEN\n",
    );
    return 2;
  }
  const { TenantTable, tenantChanges } = await import("../service/tenants.js");
  let tenants: import("../service/tenants.js").TenantTable | undefined;
  if (tenantsFile !== undefined) {
    try {
      tenants = await TenantTable.load(tenantsFile);
    } catch (e) {
      process.stderr.write(`strata serve: ${(e as Error).message}\n`);
      return 2;
    }
  }
  const host = values.host!;
  const { openStoreFromEnv } = await import("../store/s3/open.js");
  const store = await openStoreFromEnv();
  const { BuildService } = await import("../service/server.js");
  const service = await BuildService.create({
    store,
    ...(tenants ? { tenants } : { token }),
    maxConcurrentBuilds: maxBuilds,
    logRequests: values.verbose ?? false,
    sandbox,
    ...(values["insecure-redis"] ? { insecureRedis: true } : {}),
    fetchPolicy,
    frontDoor: door.frontDoor,
    quotas: door.quotas,
    ...(door.maxRunningPerTenant !== undefined ? { maxRunningPerTenant: door.maxRunningPerTenant } : {}),
    ...(tls ? { tls } : {}),
    ...(process.env.STRATA_METRICS_TOKEN ? { metricsToken: process.env.STRATA_METRICS_TOKEN } : {}),
  });
  // A server outlives any one request or build: a stray rejection is logged, not fatal.
  const onUnhandled = (e: unknown) =>
    process.stderr.write(`strata serve: unhandled error (continuing): ${e instanceof Error ? e.stack : String(e)}\n`);
  process.on("unhandledRejection", onUnhandled);
  let url: string;
  let where = `${host}:${port}`;
  try {
    url = await service.listen(port, host);
    if (door.metricsListen) {
      where = `${door.metricsListen.host}:${door.metricsListen.port} (--metrics-listen)`;
      const metricsUrl = await service.listenMetrics(door.metricsListen.port, door.metricsListen.host);
      process.stderr.write(`strata serve: metrics on ${metricsUrl}/metrics\n`);
    }
  } catch (e) {
    process.off("unhandledRejection", onUnhandled);
    await service.close(0);
    const code = (e as NodeJS.ErrnoException).code;
    process.stderr.write(
      `strata serve: cannot listen on ${where}: ${code === "EADDRINUSE" ? "the port is in use" : code === "EACCES" ? "permission denied" : e instanceof Error ? e.message : String(e)}\n`,
    );
    return 1;
  }
  // SIGHUP re-reads the TLS certificate and key (a renewed certificate is served without a restart).
  const reloadTls = () => {
    if (!door.tls) return;
    readTls(door.tls).then(
      (t) => {
        service.setTls(t);
        process.stderr.write("strata serve: SIGHUP: reloaded the TLS certificate and key\n");
      },
      (e: unknown) =>
        process.stderr.write(`strata serve: SIGHUP: kept the old TLS certificate: ${(e as Error).message}\n`),
    );
  };
  const loopback = host === "127.0.0.1" || host === "::1" || host === "localhost";
  if (!token && !tenants && !loopback)
    process.stderr.write(
      `strata serve: warning: listening on ${host} without STRATA_TOKEN; anyone who can reach it can run builds\n`,
    );
  const auth = tenants
    ? `${tenants.tenants.length} tenant(s) from ${tenantsFile}, bearer token required`
    : token
      ? "bearer token required"
      : "no authentication";
  process.stderr.write(`strata serve: listening on ${url} (store ${store.root}, ${auth}${tls ? ", TLS" : ""})\n`);
  process.stderr.write(`strata serve: ${describeFetchPolicy(fetchPolicy)}\n`);
  // The listeners stay installed until the shutdown is over: execa's exit hooks re-raise a signal nobody else
  // listens to, which would kill this process before running builds are terminated. They go in before the URL is
  // printed: until a process listens for SIGTERM, SIGTERM kills it outright, and whoever waits for the URL may send
  // it at once.
  let stopping = false;
  let onSignal: (signal: NodeJS.Signals) => void = () => undefined;
  const stopped = new Promise<void>((resolve) => {
    onSignal = (signal) => {
      if (stopping) {
        process.stderr.write(`strata serve: ${signal} again: exiting now\n`);
        process.exit(130);
      }
      stopping = true;
      process.stderr.write(`strata serve: ${signal}: terminating running builds and shutting down\n`);
      resolve();
    };
  });
  // SIGHUP: read the TLS files and the tenants file again; a file that does not validate leaves things as they were.
  let reloading = Promise.resolve();
  const onHup = () => {
    reloadTls();
    reloading = reloading.then(async () => {
      if (tenantsFile === undefined) {
        if (!door.tls)
          process.stderr.write("strata serve: SIGHUP: no --tenants file or TLS to reload; nothing changed\n");
        return;
      }
      try {
        const next = await TenantTable.load(tenantsFile);
        const { added, removed } = tenantChanges(service.tenants, next);
        service.setTenants(next);
        process.stderr.write(
          `strata serve: SIGHUP: reloaded ${tenantsFile}: ${next.tenants.length} tenant(s); added [${added.join(", ")}], removed [${removed.join(", ")}]\n`,
        );
      } catch (e) {
        process.stderr.write(
          `strata serve: SIGHUP: kept the previous ${service.tenants.tenants.length} tenant(s): ${(e as Error).message}\n`,
        );
      }
    });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  process.on("SIGHUP", onHup);
  process.stdout.write(url + "\n");
  try {
    await stopped;
    await service.close();
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    process.off("SIGHUP", onHup);
    process.off("unhandledRejection", onUnhandled);
  }
  process.stderr.write("strata serve: stopped\n");
  return 0;
}

/** Reads the TLS certificate chain and key; an unreadable one is a ConfigError naming the file. */
async function readTls(files: { certFile: string; keyFile: string }): Promise<{ cert: Buffer; key: Buffer }> {
  const { ConfigError } = await import("../errors.js");
  const read = async (file: string, what: string) => {
    try {
      return await readFile(file);
    } catch (e) {
      throw new ConfigError(`cannot read the TLS ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  };
  return {
    cert: await read(files.certFile, "certificate (--tls-cert)"),
    key: await read(files.keyFile, "key (--tls-key)"),
  };
}
