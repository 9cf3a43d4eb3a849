/**
 * The `strata` command line. A thin shell over the engine: parses arguments, loads only the modules the command
 * needs (start-up cost matters for cached builds), prints results, and maps errors to exit codes.
 */
import { asNetworkMode, type NetworkMode } from "../sandbox/runtime-spec.js";
import { parseArgs } from "node:util";
import path from "node:path";
import type { Store } from "../store/store.js";
import { ClosedStdout } from "./closed-stdout.js";

/** Set by {@link main}: what happens when stdout's reader goes (`strata images | head`). */
let stdoutWatch: ClosedStdout | undefined;

/** Throws NeedsRootError for a non-root local build, before any work (see src/build.ts). */
async function requireRoot(): Promise<void> {
  (await import("../build.js")).requireRootForLocalBuild();
}

const USAGE = `usage: strata <command> [options]

commands:
  build <file.ts> [--export NAME] [--force-build] [--ignore-cache] [--network sandbox|none|host] [--json]
                                   build the Image a definition file exports
  build -f Dockerfile [--build-arg K=V]... [--target T] [--secret id=N,src=F|env=V] [<context>] [--json]
                                   build a Dockerfile, every instruction its own cached step
  explain <file.ts> [--export NAME]
                                   show each step's key, whether it would hit, and why not
  run <image> [--network sandbox|none|host] [-e K=V] [--] [cmd...]
                                   run a built image (exit code propagated)
  export <image> (--oci DIR | --docker-archive FILE) [--tag NAME]
                                   write an OCI image layout or a docker-archive tarball
  inspect <image>                  config, layers and the chain of steps with keys (JSON)
  images [--json]                  list built images
  pull <ref>                       fetch an image from a registry into the store
  push <image> <ref> [--format oci|docker]
                                   upload an image to a registry
  serve [--port 8080] [--host 127.0.0.1] [--tenants FILE] [--max-builds N] [--verbose] [--allow-network-host]
        [--step-timeout 1h] [--max-step-timeout 4h] [--insecure-redis] [--allow-fetch host[:port]|CIDR]...
        [--insecure-registry host:port]... [--fetch-max-bytes 2GiB] [--fetch-timeout 1h]
        [--fetch-idle-timeout 60s]
                                   run the build service (clients set STRATA_SERVER=http://host:port);
                                   builds fetch from public addresses only unless --allow-fetch says more;
                                   --tenants: JSON [{"tenant", "token"|"tokenSha256"}], reloaded on SIGHUP
  worker [--concurrency N] [--grace 30s] [--job-lock 30s] [--stalled-interval 15s] [--step-lock 30s]
         [--service URL]… [--insecure-redis]
                                   run builds from the queue of \`strata serve\` (STRATA_REDIS_URL + the S3 store);
                                   takes serve's sandbox and fetch policy flags
  cache prune --older-than <dur> [--dry-run] [--json]
                                   remove index entries, images and blobs nothing recent references (30d, 12h, 90m)

environment: STRATA_HOME (store location, default ~/.cache/strata), STRATA_BUILDER_VERSION,
  STRATA_FORCE_BUILD=1, STRATA_IGNORE_CACHE=1,
  STRATA_UV_IMAGE (a repository mirroring ghcr.io/astral-sh/uv; builder 2026.12+), STRATA_UV_BINARY (2026.11 only),
  STRATA_S3_BUCKET / STRATA_S3_ENDPOINT / STRATA_S3_PREFIX (store layers and the index in S3),
  REGISTRY_USERNAME / REGISTRY_PASSWORD or DOCKER_CONFIG (registry login for pull and push),
  STRATA_INSECURE_REGISTRIES (plain-HTTP registries besides loopback),
  STRATA_FETCH_POLICY=restricted / STRATA_ALLOW_FETCH (local builds: fetch as the service does; default open),
  STRATA_SERVER / STRATA_TOKEN (build on a strata service; the token also protects \`strata serve\`),
  STRATA_REDIS_URL / STRATA_REDIS_PREFIX (serve: queue builds for \`strata worker\` processes; Redis must
  require a password, redis://:<password>@host:port, or rediss:// for TLS with STRATA_REDIS_CA for a private CA),
  STRATA_WORKER_TOKEN (serve and worker with a queue: workers fetch builds' secrets from the service with it, and
  jobs and their reports are signed with a key derived from it),
  STRATA_SERVICE_URL (worker: the build services, comma-separated, that queue builds; STRATA_CA_FILE for https)`;

class UsageError extends Error {}

/** The S3 store when STRATA_S3_BUCKET is set, else the local store at STRATA_HOME. */
async function openStore(): Promise<Store> {
  const { openStoreFromEnv } = await import("../store/s3/open.js");
  return openStoreFromEnv();
}

async function cmdBuild(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      export: { type: "string" },
      "force-build": { type: "boolean" },
      "ignore-cache": { type: "boolean" },
      json: { type: "boolean" },
      "builder-version": { type: "string" },
      file: { type: "string", short: "f" },
      "build-arg": { type: "string", multiple: true },
      target: { type: "string" },
      secret: { type: "string", multiple: true },
      network: { type: "string" },
    },
  });
  if (values.network !== undefined) {
    networkFlag(values.network);
    // The build's default network for RUN steps that name none (read by the engine, and keyed).
    process.env.STRATA_NETWORK = values.network;
  }
  if (values.file !== undefined) return printResult(await buildDockerfile(values, positionals), values.json);
  if (positionals.length !== 1)
    throw new UsageError("build takes exactly one definition file (or -f Dockerfile <context>)");
  const file = positionals[0]!;
  const flags = {
    forceBuild: values["force-build"] || undefined,
    ignoreCache: values["ignore-cache"] || undefined,
    builderVersion: values["builder-version"],
  };
  // On a build service (STRATA_SERVER, read by src/build.ts) the client opens no store; local builds never load the HTTP client.
  const { buildsRemotely } = await import("../build.js");
  const result = buildsRemotely()
    ? await (await import("./remote-build.js")).remoteBuildDefinition(file, { exportName: values.export, ...flags })
    : await buildLocally(file, values.export, flags);
  return printResult(result, values.json);
}

function printResult(
  result: {
    imageId: string;
    steps: {
      index: number;
      description: string;
      cached: boolean;
      seconds: number;
      layer?: string;
      key: string;
      imageId: string;
    }[];
  },
  json: boolean | undefined,
): number {
  if (json) {
    const steps = result.steps.map((s) => ({
      index: s.index,
      description: s.description,
      cached: s.cached,
      seconds: Number(s.seconds.toFixed(3)),
      layer: s.layer ?? null,
      key: s.key,
      imageId: s.imageId,
    }));
    process.stdout.write(JSON.stringify({ imageId: result.imageId, steps }) + "\n");
  } else {
    process.stdout.write(result.imageId + "\n");
  }
  return 0;
}

/** `--network`'s value as a network mode, or a usage error. */
function networkFlag(v: string): NetworkMode {
  const mode = asNetworkMode(v);
  if (!mode) throw new UsageError(`--network is sandbox, none or host, got "${v}"`);
  return mode;
}

/** Parses `K=V` flags (`--build-arg`). */
function keyValues(flag: string, items: readonly string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items ?? []) {
    const i = item.indexOf("=");
    if (i <= 0) throw new UsageError(`--${flag} expects K=V, got "${item}"`);
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return out;
}

/** `--secret id=NAME,src=FILE` or `--secret id=NAME,env=VAR` (as docker build); the values never reach a layer or log. */
async function secretFlags(items: readonly string[] | undefined): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const item of items ?? []) {
    const fields = Object.fromEntries(
      item.split(",").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
    );
    const id = fields.id;
    if (!id || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(id))
      throw new UsageError(`--secret needs id=<name> (a valid variable name), got "${item}"`);
    if (fields.src) out[id] = await (await import("node:fs/promises")).readFile(fields.src, "utf8");
    else if (fields.env) {
      const v = process.env[fields.env];
      if (v === undefined) throw new UsageError(`--secret ${id}: environment variable ${fields.env} is not set`);
      out[id] = v;
    } else {
      const v = process.env[id];
      if (v === undefined) throw new UsageError(`--secret ${item}: give src=<file> or env=<variable>`);
      out[id] = v;
    }
  }
  return out;
}

/** `strata build -f Dockerfile [--build-arg K=V] [--target T] [--secret …] <context>`. */
async function buildDockerfile(
  values: {
    file?: string;
    "build-arg"?: string[];
    target?: string;
    secret?: string[];
    "force-build"?: boolean;
    "ignore-cache"?: boolean;
    "builder-version"?: string;
  },
  positionals: string[],
) {
  if (positionals.length > 1) throw new UsageError("build -f takes at most one context directory");
  const dockerfile = path.resolve(values.file!);
  const contextDir = path.resolve(positionals[0] ?? path.dirname(dockerfile));
  const buildArgs = keyValues("build-arg", values["build-arg"]);
  const secrets = await secretFlags(values.secret);
  const flags = {
    forceBuild: values["force-build"] || undefined,
    ignoreCache: values["ignore-cache"] || undefined,
    builderVersion: values["builder-version"],
    chainName: `${dockerfile}#${values.target ?? "default"}`,
  };
  const { resolveBaseImages } = await import("../dockerfile/base-images.js");
  const { Image } = await import("../sdk/image.js");
  const make = (baseImages: Awaited<ReturnType<typeof resolveBaseImages>>) =>
    Image.fromDockerfile(dockerfile, {
      contextDir,
      buildArgs,
      target: values.target,
      secrets: Object.keys(secrets).length ? [secrets] : undefined,
      // docker build's meaning: a --secret reaches a RUN only through its --mount=type=secret.
      secretsAsEnv: false,
      baseImages,
    });
  // On a build service the client reads only the base images' configs (for expansion) and uploads the context files
  // the service lacks; locally the bases are pulled into the store (the build needs their layers anyway).
  const { build, buildsRemotely } = await import("../build.js");
  if (!buildsRemotely()) await requireRoot();
  const store = buildsRemotely() ? undefined : await openStore();
  const image = make(
    await resolveBaseImages(dockerfile, { ...(store ? { store } : {}), buildArgs, target: values.target }),
  );
  const { builderVersion, ...options } = flags;
  return build(image.plan(builderVersion), { ...(store ? { store } : {}), ...options, secrets: image.secretValues() });
}

async function buildLocally(
  file: string,
  exportName: string | undefined,
  flags: { forceBuild?: boolean; ignoreCache?: boolean; builderVersion?: string },
) {
  await requireRoot();
  const store = await openStore();
  const { loadDefinition } = await import("../load/definition.js");
  const image = await loadDefinition(file, store.layout.definitionsDir, exportName);
  const { build } = await import("../build.js");
  const { builderVersion, ...options } = flags;
  return build(image.plan(builderVersion), {
    store,
    ...options,
    secrets: image.secretValues(),
    chainName: `${path.resolve(file)}#${exportName ?? "default"}`,
  });
}

async function cmdExplain(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { export: { type: "string" }, json: { type: "boolean" } },
  });
  if (positionals.length !== 1) throw new UsageError("explain takes exactly one definition file");
  const file = positionals[0]!;
  const store = await openStore();
  const { loadDefinition } = await import("../load/definition.js");
  const image = await loadDefinition(file, store.layout.definitionsDir, values.export);
  const { explain, formatExplain } = await import("../engine/explain.js");
  const report = await explain(image.plan(), store, `${path.resolve(file)}#${values.export ?? "default"}`, {
    secrets: image.secretValues(),
  });
  process.stdout.write(values.json ? JSON.stringify(report) + "\n" : formatExplain(report));
  return 0;
}

async function cmdRun(argv: string[]): Promise<number> {
  const dd = argv.indexOf("--");
  const own = dd >= 0 ? argv.slice(0, dd) : argv;
  const { values, positionals } = parseArgs({
    args: own,
    allowPositionals: true,
    options: { network: { type: "string" }, env: { type: "string", short: "e", multiple: true } },
  });
  if (positionals.length < 1) throw new UsageError("run needs an image id");
  const args = dd >= 0 ? argv.slice(dd + 1) : positionals.slice(1);
  const env: Record<string, string> = {};
  for (const e of values.env ?? []) {
    const i = e.indexOf("=");
    if (i <= 0) throw new UsageError(`-e expects K=V, got "${e}"`);
    env[e.slice(0, i)] = e.slice(i + 1);
  }
  const network = values.network === undefined ? undefined : networkFlag(values.network);
  if (process.getuid && process.getuid() !== 0) {
    const { NeedsRootError } = await import("../errors.js");
    throw new NeedsRootError(
      process.getuid(),
      `strata run starts a runc container, which needs root, and this process runs as uid ${process.getuid()}: run it as root (e.g. sudo -E)`,
    );
  }
  const store = await openStore();
  const image = await store.resolveImage(positionals[0]!);
  const { runImage } = await import("../engine/run.js");
  // A closed stdout (`strata run … | head`) stops the container, as SIGPIPE would stop a local process.
  const signal = stdoutWatch?.signal();
  return runImage(store, image, { args, env, ...(network ? { network } : {}), ...(signal ? { signal } : {}) });
}

async function cmdExport(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { oci: { type: "string" }, "docker-archive": { type: "string" }, tag: { type: "string" } },
  });
  if (positionals.length !== 1) throw new UsageError("export needs one image id");
  if (!values.oci === !values["docker-archive"])
    throw new UsageError("export needs exactly one of --oci DIR or --docker-archive FILE");
  const store = await openStore();
  const image = await store.resolveImage(positionals[0]!);
  const layout = await import("../oci/layout.js");
  if (values.oci) {
    await layout.writeLayout(store, image, values.oci, values.tag ?? "latest");
    process.stderr.write(`wrote OCI layout ${values.oci} (ref ${values.tag ?? "latest"})\n`);
  } else {
    await layout.writeDockerArchive(
      store,
      image,
      values["docker-archive"]!,
      values.tag ?? `localhost/strata:${image.id.slice(7, 19)}`,
    );
    process.stderr.write(`wrote docker-archive ${values["docker-archive"]}\n`);
  }
  return 0;
}

async function cmdInspect(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new UsageError("inspect needs one image id");
  const store = await openStore();
  const image = await store.resolveImage(positionals[0]!);
  const config = JSON.parse((await store.readBlob(image.configDigest)).toString()) as unknown;
  const chain = [];
  for (
    let cur: typeof image | undefined = image;
    cur;
    cur = cur.parent ? await store.getImage(cur.parent) : undefined
  ) {
    chain.unshift({
      imageId: cur.id,
      step: cur.step?.index,
      description: cur.step?.description,
      key: cur.step?.key,
      forced: cur.step?.forced,
      builtAt: cur.step?.builtAt,
    });
  }
  process.stdout.write(
    JSON.stringify(
      { id: image.id, manifestDigest: image.manifestDigest, config, layers: image.layers, chain },
      null,
      2,
    ) + "\n",
  );
  return 0;
}

async function cmdImages(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: "boolean" } } });
  const store = await openStore();
  const images = (await store.listImages()).sort((a, b) =>
    (b.step?.builtAt ?? "").localeCompare(a.step?.builtAt ?? ""),
  );
  if (values.json) {
    process.stdout.write(
      JSON.stringify(
        images.map((i) => ({ id: i.id, builtAt: i.step?.builtAt, step: i.step?.description, layers: i.layers.length })),
      ) + "\n",
    );
    return 0;
  }
  process.stdout.write("IMAGE ID       BUILT                     LAYERS  STEP\n");
  for (const i of images) {
    process.stdout.write(
      `${i.id.slice(7, 19)}   ${(i.step?.builtAt ?? "").padEnd(24)}  ${String(i.layers.length).padStart(6)}  ${i.step?.description ?? ""}\n`,
    );
  }
  return 0;
}

async function cmdPull(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new UsageError("pull needs one image reference");
  await requireRoot();
  const { Image } = await import("../sdk/image.js");
  const secret: Record<string, string> = {};
  for (const k of ["REGISTRY_USERNAME", "REGISTRY_PASSWORD"]) if (process.env[k]) secret[k] = process.env[k]!;
  const r = await Image.fromRegistry(positionals[0]!, { secret }).build({ store: await openStore() });
  process.stdout.write(r.imageId + "\n");
  return 0;
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  build: cmdBuild,
  explain: cmdExplain,
  run: cmdRun,
  export: cmdExport,
  inspect: cmdInspect,
  images: cmdImages,
  pull: cmdPull,
  push: async (argv) => (await import("./push.js")).cmdPush(argv),
  serve: async (argv) => (await import("./serve.js")).cmdServe(argv),
  worker: async (argv) => (await import("./worker.js")).cmdWorker(argv),
  cache: async (argv) => (await import("./cache.js")).cmdCache(argv),
};

export async function main(argv: string[]): Promise<number> {
  stdoutWatch ??= new ClosedStdout();
  const code = await runCommand(argv);
  return stdoutWatch.exitCode(code);
}

async function runCommand(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "--help" || cmd === "-h" || cmd === "help") {
    process.stdout.write(USAGE + "\n");
    return cmd ? 0 : 2;
  }
  const fn = COMMANDS[cmd];
  if (!fn) {
    process.stderr.write(`strata: unknown command "${cmd}"\n${USAGE}\n`);
    return 2;
  }
  try {
    return await fn(rest);
  } catch (e) {
    if (
      e instanceof UsageError ||
      (e instanceof TypeError && "code" in e && String((e as { code: unknown }).code).startsWith("ERR_PARSE_ARGS"))
    ) {
      process.stderr.write(`strata ${cmd}: ${(e as Error).message}\n`);
      return 2;
    }
    const { StrataError } = await import("../errors.js");
    if (e instanceof StrataError) {
      process.stderr.write(`strata ${cmd}: error: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`strata ${cmd}: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
    return 70;
  }
}
