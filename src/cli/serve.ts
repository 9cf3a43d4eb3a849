/**
 * `strata serve [--port 8080] [--host 127.0.0.1] [--max-builds N] [--verbose] [--allow-network-host]
 * [--step-timeout 1h] [--max-step-timeout 4h] [front door, quota, TLS and metrics flags: serve-flags.ts]`: runs the
 * build service on the store
 * the environment names (S3 with STRATA_S3_BUCKET, else STRATA_HOME), until SIGTERM or SIGINT. With STRATA_TOKEN
 * set, every request needs `Authorization: Bearer <token>`. Prints the listening URL on stdout.
 */
import { parseArgs } from "node:util";
import type { ServiceSandboxOptions } from "../sandbox/runc.js";
import { SANDBOX_FLAGS, sandboxOptions } from "./sandbox-flags.js";
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
      verbose: { type: "boolean" },
      ...SANDBOX_FLAGS,
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
  const token = process.env.STRATA_TOKEN || undefined;
  const host = values.host!;
  const { openStoreFromEnv } = await import("../store/s3/open.js");
  const store = await openStoreFromEnv();
  const { BuildService } = await import("../service/server.js");
  const service = await BuildService.create({
    store,
    token,
    maxConcurrentBuilds: maxBuilds,
    logRequests: values.verbose ?? false,
    sandbox,
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
  const onHup = () => {
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
  // Only with TLS: otherwise SIGHUP keeps its default meaning (the tenants file reload may add its own listener).
  if (door.tls) process.on("SIGHUP", onHup);
  const loopback = host === "127.0.0.1" || host === "::1" || host === "localhost";
  if (!token && !loopback)
    process.stderr.write(
      `strata serve: warning: listening on ${host} without STRATA_TOKEN; anyone who can reach it can run builds\n`,
    );
  process.stderr.write(
    `strata serve: listening on ${url} (store ${store.root}, ${token ? "bearer token required" : "no authentication"}${tls ? ", TLS" : ""})\n`,
  );
  process.stdout.write(url + "\n");
  // The listeners stay installed until the shutdown is over: execa's exit hooks re-raise a signal nobody else
  // listens to, which would kill this process before running builds are terminated.
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
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  try {
    await stopped;
    await service.close();
  } finally {
    process.off("SIGHUP", onHup);
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
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
