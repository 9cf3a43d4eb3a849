/**
 * The `strata` command line. A thin shell over the engine: parses arguments, loads only the modules the command
 * needs (start-up cost matters for cached builds), prints results, and maps errors to exit codes.
 */
import { asNetworkMode, type NetworkMode } from "../sandbox/runtime-spec.js";
import { parseArgs } from "node:util";
import path from "node:path";
import type { NamedStore } from "../store/store.js";
import { ClosedStdout } from "./closed-stdout.js";

/** Set by {@link main}: what happens when stdout's reader goes (`strata images | head`). */
let stdoutWatch: ClosedStdout | undefined;

/** Throws NeedsRootError for a non-root local build, before any work (see src/build.ts). */
async function requireRoot(): Promise<void> {
  (await import("../build.js")).requireRootForLocalBuild();
}

const USAGE = `usage: strata <command> [options]

commands:
  build <file.ts> [--export NAME] [--tag NAME[:TAG]]... [--force-build] [--ignore-cache]
        [--network default|none|host] [--json]
                                   build the Image a definition file exports (and name it)
  build -f Dockerfile [--build-arg K=V]... [--target T] [--secret id=N,src=F|env=V] [--label K=V]...
        [--no-cache-filter STAGE[,STAGE]]... [--network default|none|host] [--tag NAME[:TAG]]...
        [--build-context name=DIR|docker-image://REF|GIT-URL]... [<context>] [--json]
                                   <context> may be a git URL (https://host/repo.git#ref:subdir, git://…);
                                   -f then names a file in it (default Dockerfile)
        (build takes --registry-config FILE: registry mirrors, http, insecure, ca; see STRATA_REGISTRY_CONFIG)
                                   build a Dockerfile, every instruction its own cached step
                                   (--network: RUNs naming none; host needs the network.host entitlement)
  explain <file.ts> [--export NAME]
                                   show each step's key, whether it would hit, and why not
  explain --builder-version [--json]
                                   the builder version in force and what it pins
  run <image> [-i] [-t] [--network sandbox|none|host] [-e K=V] [--] [cmd...]
                                   run a built image (exit code propagated); -it: an interactive shell with a TTY
  export <image> (--oci DIR | --docker-archive FILE) [--tag NAME]
                                   write an OCI image layout or a docker-archive tarball
  inspect <image>                  config, layers and the chain of steps with keys (JSON)
  logs <image> [--json]            the stored build log of every step of an image (secrets redacted)
  images [--all] [--json]          list named images (--all: every step image of the store)
  tag <image> NAME[:TAG]           name an image (tag \`latest\` unless given)
  rmi [-f] NAME[:TAG]|<image id>…  remove names (-f: every name of an image); \`cache prune\` then removes the content
  pull <ref> [--registry-config F] fetch an image from a registry into the store (with STRATA_SERVER: an image
                                   the build service holds, by name or id)
  push <image> <ref> [--format oci|docker]
                                   upload an image to a registry (with STRATA_SERVER: the service pushes it)
  (<image> is a name, NAME[:TAG], or an id or id prefix; with STRATA_SERVER set, images built on the service are
   found there and fetched into the local store as needed)
  serve [--port 8080] [--host 127.0.0.1] [--tenants FILE] [--max-builds N] [--verbose] [--allow-network-host]
        [--step-timeout 1h] [--max-step-timeout 4h] [--insecure-redis] [--allow-fetch host[:port]|CIDR]...
        [--insecure-registry host:port]... [--fetch-max-bytes 2GiB] [--fetch-timeout 1h]
        [--fetch-idle-timeout 60s] [--registry-config FILE]
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
  SOURCE_DATE_EPOCH (build -f: the build arg of that name unless --build-arg gives it: reproducible timestamps),
  STRATA_S3_BUCKET / STRATA_S3_ENDPOINT / STRATA_S3_PREFIX (store layers and the index in S3),
  REGISTRY_USERNAME / REGISTRY_PASSWORD or DOCKER_CONFIG (registry login for pull and push),
  STRATA_INSECURE_REGISTRIES (plain-HTTP registries besides loopback),
  STRATA_REGISTRY_CONFIG (TOML as buildkitd.toml's [registry."docker.io"] mirrors = [...], http, insecure, ca:
  pulls try the mirrors in order, then the registry; for serve and worker it is the operator's),
  STRATA_FETCH_POLICY=restricted / STRATA_ALLOW_FETCH (local builds: fetch as the service does; default open),
  STRATA_SERVER / STRATA_TOKEN (build on a strata service; the token also protects \`strata serve\`),
  STRATA_REDIS_URL / STRATA_REDIS_PREFIX (serve: queue builds for \`strata worker\` processes; Redis must
  require a password, redis://:<password>@host:port, or rediss:// for TLS with STRATA_REDIS_CA for a private CA),
  STRATA_WORKER_TOKEN (serve and worker with a queue: workers fetch builds' secrets from the service with it, and
  jobs and their reports are signed with a key derived from it),
  STRATA_SERVICE_URL (worker: the build services, comma-separated, that queue builds; STRATA_CA_FILE for https)`;

class UsageError extends Error {}

/** The S3 store when STRATA_S3_BUCKET is set, else the local store at STRATA_HOME. */
async function openStore(): Promise<NamedStore> {
  return (await import("./image-source.js")).openStore();
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
      "build-context": { type: "string", multiple: true },
      label: { type: "string", multiple: true },
      "no-cache-filter": { type: "string", multiple: true },
      "registry-config": { type: "string" },
      tag: { type: "string", short: "t", multiple: true },
    },
  });
  await registryConfigFlag(values["registry-config"]);
  // Names are checked before anything is built.
  const tag = values.tag?.length ? (await import("../util/image-name.js")).checkImageNames(values.tag) : undefined;
  // The build's network for RUN steps that name none: written into the plan (keyed, and sent to a build service).
  const network = values.network === undefined ? undefined : buildNetworkFlag(values.network);
  // A git URL as the context is a Dockerfile build (its Dockerfile, or -f, inside the repository).
  const gitContext = positionals.length === 1 && (await import("./git-context.js")).isGitContext(positionals[0]!);
  if (values.file !== undefined || gitContext)
    return printResult(await buildDockerfile(values, positionals, network, tag), values.json);
  if (positionals.length !== 1)
    throw new UsageError("build takes exactly one definition file (or -f Dockerfile <context>)");
  if (values.label?.length)
    throw new UsageError("--label is for Dockerfile builds (-f); a definition sets labels with .label({ k: v })");
  if (values["no-cache-filter"]?.length)
    throw new UsageError(
      "--no-cache-filter is for Dockerfile builds (-f); in a definition pass { forceBuild: true } to the steps to rebuild",
    );
  const file = positionals[0]!;
  const flags = {
    forceBuild: values["force-build"] || undefined,
    ignoreCache: values["ignore-cache"] || undefined,
    builderVersion: values["builder-version"],
    ...(network !== undefined && network !== "default" ? { network } : {}),
    ...(tag ? { tag } : {}),
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

/**
 * `strata build --network`: BuildKit's `default`, `none` or `host` (`sandbox` is Strata's name of the default), or a
 * usage error.
 */
function buildNetworkFlag(v: string): "default" | "none" | "host" {
  if (v === "default" || v === "sandbox") return "default";
  if (v === "none" || v === "host") return v;
  throw new UsageError(`--network is default, none or host, got "${v}"`);
}

/** `--no-cache-filter a,b` (repeatable) as stage names. */
function stageList(items: readonly string[] | undefined): string[] {
  const out: string[] = [];
  for (const item of items ?? [])
    for (const name of item.split(",")) {
      if (name.trim() === "") throw new UsageError(`--no-cache-filter expects stage names, got "${item}"`);
      out.push(name.trim());
    }
  return out;
}

/**
 * `--registry-config FILE` (mirrors, plain HTTP, TLS per registry): checked now, so a bad file fails before any work,
 * and passed on as STRATA_REGISTRY_CONFIG, which every fetch policy of this process reads.
 */
async function registryConfigFlag(file: string | undefined): Promise<void> {
  if (file === undefined) return;
  // Loaded only when the flag is given: every command starts without the TOML parser.
  (await import("../net/registry-config-file.js")).loadRegistryConfig(file);
  process.env.STRATA_REGISTRY_CONFIG = path.resolve(file);
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
    "build-context"?: string[];
    "force-build"?: boolean;
    "ignore-cache"?: boolean;
    "builder-version"?: string;
    label?: string[];
    "no-cache-filter"?: string[];
  },
  positionals: string[],
  network: "default" | "none" | "host" | undefined,
  tag: string[] | undefined,
) {
  if (positionals.length > 1) throw new UsageError("build -f takes at most one context directory");
  const { isGitContext, checkoutGitContext } = await import("./git-context.js");
  const { buildsRemotely } = await import("../build.js");
  if (!buildsRemotely()) await requireRoot();
  const store = buildsRemotely() ? undefined : await openStore();
  // A git context is checked out first; -f then names a file inside it (default Dockerfile), as with BuildKit.
  const git =
    positionals[0] !== undefined && isGitContext(positionals[0])
      ? await checkoutGitContext(positionals[0], store)
      : undefined;
  try {
    return await buildDockerfileIn(values, git ? git.dir : positionals[0], git !== undefined, store, network, tag);
  } finally {
    await git?.cleanup();
  }
}

async function buildDockerfileIn(
  values: Parameters<typeof buildDockerfile>[0],
  context: string | undefined,
  inGit: boolean,
  store: NamedStore | undefined,
  network: "default" | "none" | "host" | undefined,
  tag: string[] | undefined,
) {
  if (inGit && values.file !== undefined && (path.isAbsolute(values.file) || values.file.split("/").includes("..")))
    throw new UsageError(`-f ${values.file}: with a git context, -f names a file inside the repository`);
  const dockerfile = inGit ? path.join(context!, values.file ?? "Dockerfile") : path.resolve(values.file!);
  if (inGit) {
    // A repository's symlink must not make the client read a file of its own (its text would reach the build).
    const real = await (await import("node:fs/promises")).realpath(dockerfile).catch(() => undefined);
    const root = await (await import("node:fs/promises")).realpath(context!);
    if (real !== undefined && real !== root && !real.startsWith(root + path.sep))
      throw new UsageError(`-f ${values.file ?? "Dockerfile"}: it leads outside the git context`);
  }
  const contextDir = path.resolve(context ?? path.dirname(dockerfile));
  const buildArgs = keyValues("build-arg", values["build-arg"]);
  // As buildx and buildctl do: the client's SOURCE_DATE_EPOCH becomes the build arg, unless --build-arg gives one.
  const sde = process.env.SOURCE_DATE_EPOCH;
  if (sde !== undefined && !Object.hasOwn(buildArgs, "SOURCE_DATE_EPOCH")) buildArgs.SOURCE_DATE_EPOCH = sde;
  // As docker build: `--label k` alone is k with an empty value.
  const labels = keyValues(
    "label",
    values.label?.map((l) => (l.includes("=") ? l : `${l}=`)),
  );
  const noCacheFilter = stageList(values["no-cache-filter"]);
  const secrets = await secretFlags(values.secret);
  const { buildContextFlags } = await import("../dockerfile/named-context.js");
  const buildContexts = buildContextFlags(values["build-context"] ?? []);
  const flags = {
    forceBuild: values["force-build"] || undefined,
    ignoreCache: values["ignore-cache"] || undefined,
    builderVersion: values["builder-version"],
    chainName: `${dockerfile}#${values.target ?? "default"}`,
  };
  const { resolveBaseImages } = await import("../dockerfile/base-images.js");
  const { Image } = await import("../sdk/image.js");
  const { build } = await import("../build.js");
  const make = (baseImages: Awaited<ReturnType<typeof resolveBaseImages>>) =>
    Image.fromDockerfile(dockerfile, {
      contextDir,
      buildArgs,
      target: values.target,
      secrets: Object.keys(secrets).length ? [secrets] : undefined,
      // docker build's meaning: a --secret reaches a RUN only through its --mount=type=secret.
      secretsAsEnv: false,
      baseImages,
      buildContexts,
      ...(Object.keys(labels).length ? { labels } : {}),
      ...(noCacheFilter.length ? { noCacheFilter } : {}),
      ...(network ? { network } : {}),
    });
  // On a build service the client reads only the base images' configs (for expansion) and uploads the context files
  // the service lacks; locally the bases are pulled into the store (the build needs their layers anyway).
  const image = make(
    await resolveBaseImages(dockerfile, {
      ...(store ? { store } : {}),
      buildArgs,
      target: values.target,
      buildContexts,
    }),
  );
  const { builderVersion, ...options } = flags;
  return build(image.plan(builderVersion), {
    ...(store ? { store } : {}),
    ...options,
    ...(tag ? { tag } : {}),
    secrets: image.secretValues(),
  });
}

async function buildLocally(
  file: string,
  exportName: string | undefined,
  flags: {
    forceBuild?: boolean;
    ignoreCache?: boolean;
    builderVersion?: string;
    network?: "none" | "host";
    tag?: string[];
  },
) {
  await requireRoot();
  const store = await openStore();
  const { loadDefinition } = await import("../load/definition.js");
  const image = await loadDefinition(file, store.layout.definitionsDir, exportName);
  const { build } = await import("../build.js");
  const { builderVersion, network, ...options } = flags;
  const plan = image.plan(builderVersion);
  const { planWithNetwork } = await import("../plan/network.js");
  return build(network ? planWithNetwork(plan, network) : plan, {
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
    options: { export: { type: "string" }, json: { type: "boolean" }, "builder-version": { type: "boolean" } },
  });
  if (values["builder-version"]) {
    if (positionals.length) throw new UsageError("explain --builder-version takes no definition file");
    return (await import("./builder-info.js")).printBuilderVersion(values.json === true);
  }
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
    options: {
      network: { type: "string" },
      env: { type: "string", short: "e", multiple: true },
      interactive: { type: "boolean", short: "i" },
      tty: { type: "boolean", short: "t" },
    },
  });
  if (positionals.length < 1) throw new UsageError("run needs an image (a name or an id)");
  const tty = values.tty === true;
  const stdin = values.interactive === true;
  // isatty, not process.stdin: touching process.stdin would open it for reading in this process.
  const { isatty } = await import("node:tty");
  if (tty && stdin && !isatty(0))
    throw new UsageError("the input device is not a TTY: drop -t (`-i` alone passes stdin through without a TTY)");
  if (tty && !stdin && !isatty(1) && !isatty(2))
    throw new UsageError("-t needs a terminal on stdin, stdout or stderr; drop it when output goes to a file or pipe");
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
  const { store, image } = await (await import("./image-source.js")).localImage(positionals[0]!);
  const { runImage } = await import("../engine/run.js");
  // A closed stdout (`strata run … | head`) stops the container, as SIGPIPE would stop a local process.
  const signal = stdoutWatch?.signal();
  return runImage(store, image, {
    args,
    env,
    ...(network ? { network } : {}),
    ...(signal ? { signal } : {}),
    ...(tty || stdin ? { interactive: { tty, stdin } } : {}),
  });
}

async function cmdExport(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { oci: { type: "string" }, "docker-archive": { type: "string" }, tag: { type: "string" } },
  });
  if (positionals.length !== 1) throw new UsageError("export needs one image (a name or an id)");
  if (!values.oci === !values["docker-archive"])
    throw new UsageError("export needs exactly one of --oci DIR or --docker-archive FILE");
  const { store, image } = await (await import("./image-source.js")).localImage(positionals[0]!);
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

async function cmdPull(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { "registry-config": { type: "string" } },
  });
  await registryConfigFlag(values["registry-config"]);
  if (positionals.length !== 1) throw new UsageError("pull needs one image reference");
  const { buildsRemotely } = await import("../build.js");
  if (buildsRemotely()) return pullFromService(positionals[0]!);
  await requireRoot();
  const { Image } = await import("../sdk/image.js");
  const secret: Record<string, string> = {};
  for (const k of ["REGISTRY_USERNAME", "REGISTRY_PASSWORD"]) if (process.env[k]) secret[k] = process.env[k]!;
  const r = await Image.fromRegistry(positionals[0]!, { secret }).build({ store: await openStore() });
  process.stdout.write(r.imageId + "\n");
  return 0;
}

/**
 * `strata pull <name|id>` with STRATA_SERVER: copies an image the service holds, with its chain of steps and their logs,
 * into the local store (only what it lacks), and keeps its name there too.
 */
async function pullFromService(ref: string): Promise<number> {
  const { localImage } = await import("./image-source.js");
  const { store, image, fromService, name } = await localImage(ref, {
    chain: true,
    log: (l) => process.stderr.write(`${l}\n`),
  });
  if (!fromService) {
    const { NotFoundError } = await import("../errors.js");
    throw new NotFoundError(`${ref} is not on the build server (it is in the local store at ${store.root} already)`);
  }
  if (name) await store.putName({ name, imageId: image.id, createdAt: new Date().toISOString() });
  process.stdout.write(image.id + "\n");
  return 0;
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  build: cmdBuild,
  explain: cmdExplain,
  run: cmdRun,
  export: cmdExport,
  inspect: async (argv) => (await import("./image-info.js")).cmdInspect(argv),
  logs: async (argv) => (await import("./image-info.js")).cmdLogs(argv),
  images: async (argv) => (await import("./names.js")).cmdImages(argv),
  tag: async (argv) => (await import("./names.js")).cmdTag(argv),
  rmi: async (argv) => (await import("./names.js")).cmdRmi(argv),
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
    if (e instanceof StrataError && e.code === "USAGE") {
      process.stderr.write(`strata ${cmd}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof StrataError) {
      process.stderr.write(`strata ${cmd}: error: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`strata ${cmd}: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
    return 70;
  }
}
