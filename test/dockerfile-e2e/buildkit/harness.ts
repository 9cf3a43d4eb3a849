// The harness for BuildKit's Dockerfile integration tests ported into this suite (one file per BuildKit test file,
// one `test()` per BuildKit test function, named after it). A ported test writes its Dockerfile and context as
// BuildKit's does, builds it with Strata's Dockerfile front end, and asserts what BuildKit's test asserts.
//
// `FROM busybox` (and `busybox:<tag>`, `docker.io/library/busybox…`, `--from=busybox`) is served by a loopback
// registry holding a scratch image with Debian's busybox-static and every applet it lists; the Dockerfile text is
// rewritten to that registry's name for it (`busyboxRef()`), nothing else in it changes.
import { execFileSync } from "node:child_process";
import { promises as fsp } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { type BuildParams, build } from "../../../src/build.js";
import { resolveBaseImages } from "../../../src/dockerfile/base-images.js";
import type { BuiltImage } from "../../../src/engine/build.js";
import { Image, type LocalStore } from "../../../src/index.js";
import { pushImage } from "../../../src/registry/push.js";
import { startRegistry, type TestRegistry } from "../../support/registry.js";
import { privateStore, strataConfig, strataTree, type Tree } from "../support.js";

/** One file of a test's context (or of its Dockerfile's directory). */
export type ContextFile =
  | string
  | { content: string | Buffer; mode?: number; mtime?: Date }
  | { symlink: string }
  | { dir: true; mode?: number }
  /** a Unix socket (listening until the harness stops) */
  | { socket: true };

export interface BkBuildOptions {
  /** The Dockerfile's text (`FROM busybox` is served by the harness's registry). */
  dockerfile: string;
  /** Context files: relative path → content (parents are created). */
  files?: Record<string, ContextFile>;
  /** An existing (empty or earlier) directory to write the context into, e.g. from `tempDir()`; default a new one. */
  contextDir?: string;
  /** The Dockerfile's name in the context dir (BuildKit's `filename`); default `Dockerfile`. */
  dockerfileName?: string;
  /** The path (relative to the Dockerfile's dir) the build is given, e.g. a symlink in `files`; default the Dockerfile. */
  buildFile?: string;
  /** The Dockerfile in a directory of its own, outside the context (BuildKit's separate `dockerfile` local). */
  separateDockerfileDir?: boolean;
  buildArgs?: Record<string, string>;
  target?: string;
  /** BuildKit's `hostname` build option (`fromDockerfile`'s `hostname`). */
  hostname?: string;
  /** Secrets by id (`--secret id=…`): reach a RUN only through `--mount=type=secret`, as with docker build. */
  secrets?: Record<string, string>;
  forceBuild?: boolean;
  ignoreCache?: boolean;
  /** `--label k=v` (`fromDockerfile`'s `labels`). */
  labels?: Record<string, string>;
  /** `SOURCE_DATE_EPOCH` as `fromDockerfile`'s `sourceDateEpoch` option. */
  sourceDateEpoch?: number;
  /** `--no-cache-filter` (BuildKit's `no-cache` attribute naming stages). */
  noCacheFilter?: string[];
  /** `--network` for the whole build (BuildKit's `force-network-mode`). */
  network?: "default" | "none" | "host";
  /**
   * A git URL as the build's context (BuildKit's `context` attribute): checked out as `strata build <url>` does, the
   * Dockerfile then read from it (`dockerfile` and `files` are ignored).
   */
  gitContext?: string;
  /**
   * Named build contexts (`--build-context name=value`, BuildKit's `context:<name>`): a name that names busybox is
   * rewritten as the Dockerfile's `FROM busybox` is, so `{ busybox: … }` still replaces it.
   */
  buildContexts?: Record<string, string>;
  /** More of the engine's options for this build (an executor with another sandbox policy, step limits, …). */
  engine?: Pick<BuildParams, "executor" | "limits">;
}

export interface BkResult {
  built: BuiltImage;
  /** Build log lines (`=> Step …` and step output). */
  log: string[];
  /** The final filesystem (layers merged), keyed by absolute path. */
  tree(): Promise<Tree>;
  /** A file's content in the final filesystem, or undefined when absent. */
  readFile(p: string): Promise<string | undefined>;
  /** The image config blob (`config`, `history`, `rootfs`, …). */
  config(): Promise<ImageConfigJson>;
}

export interface ImageConfigJson {
  created?: string;
  author?: string;
  os?: string;
  architecture?: string;
  config: {
    Env?: string[];
    Cmd?: string[] | null;
    Entrypoint?: string[] | null;
    WorkingDir?: string;
    User?: string;
    Labels?: Record<string, string>;
    ExposedPorts?: Record<string, unknown>;
    Volumes?: Record<string, unknown>;
    StopSignal?: string;
    Shell?: string[];
    Healthcheck?: Record<string, unknown>;
    OnBuild?: string[] | null;
    ArgsEscaped?: boolean;
  };
  history?: { created?: string; created_by?: string; empty_layer?: boolean; comment?: string }[];
  rootfs: { type: string; diff_ids: string[] };
}

/** A harness per test file: `const bk = buildkitHarness();` then `before(bk.start)` / `after(bk.stop)`. */
export function buildkitHarness() {
  let registry: TestRegistry | undefined;
  let store: LocalStore | undefined;
  let cleanupStore: (() => Promise<void>) | undefined;
  let busybox = "";
  const dirs: string[] = [];
  const sockets: net.Server[] = [];

  const need = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error("buildkitHarness: call start() first (before(bk.start))");
    return v;
  };

  async function writeFiles(dir: string, files: Record<string, ContextFile>): Promise<void> {
    for (const [rel, f] of Object.entries(files)) {
      const abs = path.join(dir, rel);
      await fsp.mkdir(path.dirname(abs), { recursive: true });
      if (typeof f === "string") await fsp.writeFile(abs, f);
      else if ("symlink" in f) await fsp.symlink(f.symlink, abs);
      else if ("socket" in f) {
        const server = net.createServer();
        await new Promise<void>((resolve, reject) => server.once("error", reject).listen(abs, resolve));
        sockets.push(server);
      } else if ("dir" in f) {
        await fsp.mkdir(abs, { recursive: true });
        if (f.mode !== undefined) await fsp.chmod(abs, f.mode);
      } else {
        await fsp.writeFile(abs, f.content);
        if (f.mode !== undefined) await fsp.chmod(abs, f.mode);
        if (f.mtime) await fsp.utimes(abs, f.mtime, f.mtime);
      }
    }
  }

  /** Writes a context dir holding the Dockerfile (rewritten for busybox) and `files`. */
  async function context(opts: BkBuildOptions): Promise<{ dir: string; dockerfile: string }> {
    const dir = opts.contextDir ?? (await fsp.mkdtemp(path.join(os.tmpdir(), "strata-bk-")));
    if (opts.contextDir === undefined) dirs.push(dir);
    let dfDir = dir;
    if (opts.separateDockerfileDir) {
      dfDir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-bk-df-"));
      dirs.push(dfDir);
    }
    const dockerfile = path.join(dfDir, opts.dockerfileName ?? "Dockerfile");
    await writeFiles(dir, opts.files ?? {});
    await fsp.writeFile(dockerfile, withBusybox(opts.dockerfile, busybox));
    return { dir, dockerfile: opts.buildFile ? path.join(dfDir, opts.buildFile) : dockerfile };
  }

  async function gitContext(url: string): Promise<{ dir: string; dockerfile: string }> {
    const { checkoutGitContext } = await import("../../../src/cli/git-context.js");
    const co = await checkoutGitContext(url, need(store));
    return { dir: co.dir, dockerfile: path.join(co.dir, "Dockerfile") };
  }

  async function run(opts: BkBuildOptions): Promise<BkResult> {
    const s = need(store);
    const { dir, dockerfile } = opts.gitContext !== undefined ? await gitContext(opts.gitContext) : await context(opts);
    const log: string[] = [];
    const buildContexts = opts.buildContexts ? contextsWithBusybox(opts.buildContexts, busybox) : undefined;
    const baseImages = await resolveBaseImages(dockerfile, {
      store: s,
      ...(buildContexts ? { buildContexts } : {}),
      ...(opts.buildArgs ? { buildArgs: opts.buildArgs } : {}),
      ...(opts.target ? { target: opts.target } : {}),
    });
    const image = Image.fromDockerfile(dockerfile, {
      contextDir: dir,
      ...(opts.buildArgs ? { buildArgs: opts.buildArgs } : {}),
      ...(opts.target ? { target: opts.target } : {}),
      ...(opts.secrets ? { secrets: [opts.secrets], secretsAsEnv: false } : {}),
      ...(opts.hostname !== undefined ? { hostname: opts.hostname } : {}),
      ...(opts.labels ? { labels: opts.labels } : {}),
      ...(opts.sourceDateEpoch !== undefined ? { sourceDateEpoch: opts.sourceDateEpoch } : {}),
      ...(opts.noCacheFilter ? { noCacheFilter: opts.noCacheFilter } : {}),
      ...(opts.network ? { network: opts.network } : {}),
      ...(buildContexts ? { buildContexts } : {}),
      baseImages,
    });
    const built = await build(image.plan(), {
      store: s,
      log: (l: string) => log.push(l),
      ...(opts.forceBuild ? { forceBuild: true } : {}),
      ...(opts.ignoreCache ? { ignoreCache: true } : {}),
      secrets: image.secretValues(),
      ...opts.engine,
    });
    let tree: Tree | undefined;
    return {
      built,
      log,
      async tree() {
        tree ??= await strataTree(s, built.imageId);
        return tree;
      },
      async readFile(p: string) {
        tree ??= await strataTree(s, built.imageId);
        const e = tree.get(p.startsWith("/") ? p : `/${p}`);
        if (!e) return undefined;
        if (e.type !== "file") throw new Error(`${p} is a ${e.type}, not a file`);
        if (e.content === undefined) throw new Error(`${p} is binary or larger than 4 KiB`);
        return e.content;
      },
      async config() {
        return (await strataConfig(s, built.imageId)) as unknown as ImageConfigJson;
      },
    };
  }

  return {
    /** Starts the registry, pushes the busybox image and opens a private store. */
    async start(): Promise<void> {
      registry = await startRegistry();
      const s = await privateStore();
      store = s.store;
      cleanupStore = s.cleanup;
      busybox = await pushBusybox(store, registry.host);
    },
    async stop(): Promise<void> {
      for (const s of sockets.splice(0)) await new Promise<void>((resolve) => s.close(() => resolve()));
      await registry?.stop();
      await cleanupStore?.();
      for (const d of dirs.splice(0)) await fsp.rm(d, { recursive: true, force: true });
    },
    /** The registry reference `busybox` is rewritten to. */
    busyboxRef: () => busybox,
    get store(): LocalStore {
      return need(store);
    },
    get registryHost(): string {
      return need(registry).host;
    },
    /** Builds a Dockerfile; rejects with the build's error (its message carries the log on failure). */
    async build(opts: BkBuildOptions): Promise<BkResult> {
      return run(opts);
    },
    /** Builds a Dockerfile that must fail; returns the error (fails the test if the build succeeds). */
    async buildFails(opts: BkBuildOptions): Promise<Error> {
      let result: BkResult;
      try {
        result = await run(opts);
      } catch (e) {
        return e as Error;
      }
      throw new Error(`the build was expected to fail but produced ${result.built.imageId}`);
    },
    /** Pushes a built image to the harness's registry as `<registry>/<name>`; returns that reference. */
    async push(r: BkResult, name: string): Promise<string> {
      const s = need(store);
      const rec = await s.getImage(r.built.imageId);
      if (!rec) throw new Error(`image ${r.built.imageId} is not in the store`);
      const ref = `${need(registry).host}/${name}`;
      await pushImage(s, rec, ref, { dockerConfig: false });
      return ref;
    },
    /** A fresh temp dir holding `files` (a named context's directory), removed at stop(). */
    async dir(files: Record<string, ContextFile>): Promise<string> {
      const d = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-bk-ctx-"));
      dirs.push(d);
      await writeFiles(d, files);
      return d;
    },
    /** A fresh temp dir removed at stop(). */
    async tempDir(): Promise<string> {
      const d = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-bk-x-"));
      dirs.push(d);
      return d;
    },
  };
}

export type BuildkitHarness = ReturnType<typeof buildkitHarness>;

/**
 * Rewrites the Dockerfile's references to Docker Hub's busybox (`FROM busybox`, `FROM busybox:1.36 AS x`,
 * `FROM docker.io/library/busybox`, `--from=busybox`, `RUN --mount=from=busybox`) to `ref`.
 */
export function withBusybox(dockerfile: string, ref: string): string {
  const name =
    /(?<![\w./:-])(?:docker\.io\/)?(?:library\/)?busybox(?::[\w][\w.-]*)?(?:@sha256:[0-9a-f]{64})?(?![\w./:@-])/;
  return dockerfile
    .split("\n")
    .map((line) => {
      if (/^\s*FROM\s/i.test(line))
        return line.replace(new RegExp(`(FROM\\s+(?:--\\S+\\s+)*)${name.source}`, "i"), `$1${ref}`);
      return line.replace(new RegExp(`((?:--from|,from)=)${name.source}`, "g"), `$1${ref}`);
    })
    .join("\n");
}

/** Named contexts with a name that names busybox (as `withBusybox` matches it) renamed to `ref`. */
export function contextsWithBusybox(contexts: Record<string, string>, ref: string): Record<string, string> {
  return Object.fromEntries(Object.entries(contexts).map(([k, v]) => [withBusybox(`FROM ${k}`, ref).slice(5), v]));
}

const BUSYBOX_PASSWD = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`;
const BUSYBOX_GROUP = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nobody:x:65534:
`;
const BUSYBOX_SHADOW = BUSYBOX_PASSWD.split("\n")
  .filter(Boolean)
  .map((l) => `${l.split(":")[0]}:*:::::::\n`)
  .join("");

/**
 * `adduser` as Docker Hub's busybox has it (Debian's busybox-static leaves the applet out): the options BuildKit's
 * tests use, a new user with a group of its own (or -G's), uids from 1000 up, a home directory unless -H.
 */
const ADDUSER = `#!/bin/sh
set -e
home=; shell=/bin/sh; uid=; group=; nohome=
while [ $# -gt 0 ]; do
  case "$1" in
    -D|-S) shift ;;
    -H) nohome=1; shift ;;
    -h) home=$2; shift 2 ;;
    -s) shell=$2; shift 2 ;;
    -u) uid=$2; shift 2 ;;
    -G) group=$2; shift 2 ;;
    -g) shift 2 ;;
    -*) echo "adduser: unsupported option $1" >&2; exit 1 ;;
    *) break ;;
  esac
done
name=$1
[ -n "$name" ] || { echo "usage: adduser [-D] [-H] [-h DIR] [-s SHELL] [-u UID] [-G GROUP] USER" >&2; exit 1; }
if grep -q "^$name:" /etc/passwd; then echo "adduser: user '$name' in use" >&2; exit 1; fi
if [ -z "$uid" ]; then
  uid=1000
  while cut -d: -f3 /etc/passwd /etc/group | grep -qx "$uid"; do uid=$((uid + 1)); done
fi
if [ -n "$group" ]; then
  gid=$(grep "^$group:" /etc/group | cut -d: -f3)
  [ -n "$gid" ] || { echo "adduser: unknown group $group" >&2; exit 1; }
else
  gid=$uid
  echo "$name:x:$gid:" >> /etc/group
fi
home=\${home:-/home/$name}
echo "$name:x:$uid:$gid:Linux User,,,:$home:$shell" >> /etc/passwd
echo "$name:!:0:0:99999:7:::" >> /etc/shadow
if [ -z "$nohome" ]; then mkdir -p "$home"; chown "$uid:$gid" "$home"; fi
`;

/** Every applet Debian's busybox-static lists, as links to /bin/busybox, plus Docker Hub busybox's /etc files, /tmp. */
async function busyboxRoot(dir: string): Promise<void> {
  const bin = path.join(dir, "bin");
  await fsp.mkdir(bin, { recursive: true });
  await fsp.copyFile("/bin/busybox", path.join(bin, "busybox"));
  await fsp.chmod(path.join(bin, "busybox"), 0o755);
  const applets = execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const a of applets) if (a !== "busybox") await fsp.symlink("busybox", path.join(bin, a));
  if (!applets.includes("adduser")) await fsp.writeFile(path.join(bin, "adduser"), ADDUSER, { mode: 0o755 });
  await fsp.mkdir(path.join(dir, "etc"), { recursive: true });
  // Docker Hub's busybox image's accounts (BuildKit's tests rely on them: `wheel` holds root, `nobody` exists).
  await fsp.writeFile(path.join(dir, "etc/passwd"), BUSYBOX_PASSWD);
  await fsp.writeFile(path.join(dir, "etc/group"), BUSYBOX_GROUP);
  await fsp.writeFile(path.join(dir, "etc/shadow"), BUSYBOX_SHADOW, { mode: 0o600 });
  await fsp.mkdir(path.join(dir, "tmp"), { mode: 0o1777 });
  await fsp.chmod(path.join(dir, "tmp"), 0o1777);
  await fsp.mkdir(path.join(dir, "root"), { recursive: true });
  await fsp.mkdir(path.join(dir, "home"), { recursive: true });
}

/** Builds the busybox image (as Docker Hub's: PATH set, `CMD ["sh"]`) and pushes it; returns its reference. */
async function pushBusybox(store: LocalStore, host: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-bk-busybox-"));
  try {
    await busyboxRoot(path.join(dir, "rootfs"));
    await fsp.writeFile(
      path.join(dir, "Dockerfile"),
      'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nCMD ["sh"]\n',
    );
    const image = Image.fromDockerfile(path.join(dir, "Dockerfile"), { contextDir: dir });
    const built = await build(image.plan(), { store, log: () => undefined });
    const ref = `${host}/library/busybox:latest`;
    const rec = await store.getImage(built.imageId);
    if (!rec) throw new Error(`busybox image ${built.imageId} is not in the store`);
    await pushImage(store, rec, ref, { dockerConfig: false });
    return ref;
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
