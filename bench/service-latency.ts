/**
 * Benchmark: the build service's cached get-or-create latency, and bytes uploaded after a one-file edit.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/service-latency.js [--requests 1000] [--layers 10] [--in-process]
 *     [--tenants]
 *
 * Needs root and runc (the image is built once, for real, from a busybox base). `strata serve` runs as a child
 * process on a free loopback port with a store in a temp dir (removed at the end); `--in-process` runs the service
 * in this process instead. `--tenants` runs it with a tenants file (two tenants; the client is one of them).
 *
 *   get-or-create   `POST /v1/images` for an image whose every layer is built (a 10-layer image by default),
 *                   sequentially over one keep-alive connection: p50/p90/p99/max over N requests. Target p99 < 20 ms.
 *   client          the whole client path of a cached build (walk + hash the context with a warm stat cache,
 *                   blob check, POST), as `strata build` with STRATA_SERVER does it: p50/p99 over N/10 runs.
 *   one-file edit   bytes the client uploads for a rebuild after one file of a 500-file / 8 MiB context changed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Image } from "../src/sdk/image.js";
import { compileRequest } from "../src/service/wire/encode.js";
import { remoteBuildImage } from "../test/support/remote-image.js";
import { StatCache } from "../src/context/walk.js";

const REPO = fileURLToPath(new URL("../../", import.meta.url));

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function stats(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const f = (x: number) => x.toFixed(2).padStart(7);
  return `p50 ${f(percentile(s, 50))} ms  p90 ${f(percentile(s, 90))} ms  p99 ${f(percentile(s, 99))} ms  max ${f(s[s.length - 1]!)} ms  (n=${s.length})`;
}

async function busyboxTree(dir: string): Promise<void> {
  const bin = path.join(dir, "bin");
  await fsp.mkdir(bin, { recursive: true });
  await fsp.copyFile("/bin/busybox", path.join(bin, "busybox"));
  await fsp.chmod(path.join(bin, "busybox"), 0o755);
  for (const a of ["sh", "echo", "cat", "sleep"]) await fsp.symlink("busybox", path.join(bin, a));
  await fsp.mkdir(path.join(dir, "tmp"), { mode: 0o1777 });
  await fsp.mkdir(path.join(dir, "etc"));
  await fsp.writeFile(path.join(dir, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  await fsp.writeFile(path.join(dir, "etc/group"), "root:x:0:\n");
}

/** The client's token with `--tenants`. */
const TOKEN = randomBytes(16).toString("hex");

async function startServer(
  home: string,
  inProcess: boolean,
  tenantsFile: string | undefined,
): Promise<{ url: string; stop: () => Promise<void> }> {
  if (inProcess) {
    const { LocalStore } = await import("../src/store/local.js");
    const { BuildService } = await import("../src/service/server.js");
    const { TenantTable } = await import("../src/service/tenants.js");
    const service = await BuildService.create({
      store: await LocalStore.open(home),
      log: () => undefined,
      ...(tenantsFile ? { tenants: await TenantTable.load(tenantsFile) } : {}),
    });
    const url = await service.listen(0);
    return { url, stop: () => service.close() };
  }
  const script = `import(${JSON.stringify(path.join(REPO, "dist/src/cli/serve.js"))}).then((m) => m.cmdServe(${JSON.stringify(["--port", "0", ...(tenantsFile ? ["--tenants", tenantsFile] : [])])})).then((c) => process.exit(c));`;
  const child: ChildProcess = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: { ...process.env, STRATA_HOME: home, ...(tenantsFile ? { STRATA_TOKEN: "" } : {}) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /^(http:\/\/\S+)\n/m.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on("exit", (code) => reject(new Error(`strata serve exited with ${code}`)));
  });
  return {
    url,
    stop: async () => {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    },
  };
}

function post(agent: http.Agent, url: string, body: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL("/v1/images", url), {
      method: "POST",
      agent,
      headers: {
        "content-type": "application/json",
        "content-length": body.length,
        ...(process.env.STRATA_TOKEN ? { authorization: `Bearer ${process.env.STRATA_TOKEN}` } : {}),
      },
    });
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
    });
    req.end(body);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      requests: { type: "string", default: "1000" },
      layers: { type: "string", default: "10" },
      "in-process": { type: "boolean" },
      tenants: { type: "boolean" },
    },
  });
  const requests = Number(values.requests);
  const layers = Number(values.layers);
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-bench-service-"));
  const home = path.join(tmp, "store");
  let tenantsFile: string | undefined;
  if (values.tenants) {
    tenantsFile = path.join(tmp, "tenants.json");
    await fsp.writeFile(
      tenantsFile,
      JSON.stringify([
        { tenant: "bench", token: TOKEN },
        { tenant: "other", token: randomBytes(16).toString("hex") },
      ]),
    );
    process.env.STRATA_TOKEN = TOKEN; // the client's (remoteBuild and post use it)
  }
  const server = await startServer(home, values["in-process"] ?? false, tenantsFile);
  try {
    process.stderr.write(
      `service at ${server.url} (${values["in-process"] ? "in process" : "child process"}${tenantsFile ? ", tenants on" : ""}), store ${home}\n`,
    );
    await busyboxTree(path.join(tmp, "rootfs"));
    // A layers-deep image: the rootfs layer, then one RUN layer each.
    let image = Image.fromScratch()
      .addLocalDir(path.join(tmp, "rootfs"), "/", { copy: true })
      .env({ BENCH: randomBytes(6).toString("hex") });
    for (let i = 1; i < layers; i++) image = image.runCommands(`echo ${i} > /layer-${i}`);
    const statCachePath = path.join(tmp, "client-statcache.json");
    const t0 = Date.now();
    const cold = await remoteBuildImage(image, { server: server.url, statCache: statCachePath, log: () => undefined });
    process.stderr.write(
      `cold build: ${cold.steps.length} steps, ${cold.steps.filter((s) => s.layer).length} layers, ${((Date.now() - t0) / 1000).toFixed(2)} s\n`,
    );

    // 1. Cached get-or-create: the same request, sequentially, over one keep-alive connection.
    const { request } = await compileRequest(image.plan(), await StatCache.load(statCachePath));
    const body = Buffer.from(JSON.stringify(request));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < 50; i++) await post(agent, server.url, body); // warm-up
    const ms: number[] = [];
    for (let i = 0; i < requests; i++) {
      const s = process.hrtime.bigint();
      const r = await post(agent, server.url, body);
      ms.push(Number(process.hrtime.bigint() - s) / 1e6);
      if (r.status !== 200 || !r.text.includes(cold.imageId))
        throw new Error(`request ${i}: ${r.status} ${r.text.slice(0, 300)}`);
    }
    agent.destroy();

    // 2. The whole client path of a cached build.
    const clientMs: number[] = [];
    const statCache = await StatCache.load(statCachePath);
    for (let i = 0; i < Math.max(10, Math.round(requests / 10)); i++) {
      const s = process.hrtime.bigint();
      const r = await remoteBuildImage(image, { server: server.url, statCache, log: () => undefined });
      clientMs.push(Number(process.hrtime.bigint() - s) / 1e6);
      if (r.imageId !== cold.imageId) throw new Error("a cached build returned another image");
    }

    // 3. Bytes uploaded after a one-file edit of a 500-file, 8 MiB context.
    const ctx = path.join(tmp, "context");
    await fsp.mkdir(ctx);
    for (let i = 0; i < 500; i++) await fsp.writeFile(path.join(ctx, `f${i}.bin`), randomBytes(16 * 1024));
    const withCtx = image.addLocalDir(ctx, "/ctx", { copy: true });
    const first = await remoteBuildImage(withCtx, { server: server.url, statCache, log: () => undefined });
    await fsp.writeFile(path.join(ctx, "f123.bin"), randomBytes(16 * 1024));
    const edited = await remoteBuildImage(withCtx, { server: server.url, statCache, log: () => undefined });

    const sorted = [...ms].sort((a, b) => a - b);
    const p99 = percentile(sorted, 99);
    process.stdout.write(
      `\nStrata build service — cached get-or-create, ${layers}-layer image (${cold.steps.length} steps), ${requests} sequential requests\n` +
        `  POST /v1/images   ${stats(ms)}   target p99 < 20 ms: ${p99 < 20 ? "PASS" : "MISS"}\n` +
        `  client (walk+check+POST)  ${stats(clientMs)}\n` +
        `One-file edit of a 500-file / 8 MiB context: first build uploaded ${first.uploadedBytes} bytes (${first.uploadedFiles} files); ` +
        `after editing one 16 KiB file: ${edited.uploadedBytes} bytes (${edited.uploadedFiles} file)\n`,
    );
  } finally {
    await server.stop();
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
