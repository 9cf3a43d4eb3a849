// Real-world Dockerfiles, unmodified (fixtures/real-dockerfiles/<case>/, each with SOURCE.md naming its repository,
// commit, path and licence), built by Strata and by buildah against a loopback registry acting as the docker.io
// mirror: one Debian bookworm base made with mmdebstrap (once per run, kept in the shared test home) is pushed there
// under every `debian:<tag>` the corpus names, Strata reaches it through its registry config (`[registry."docker.io"]
// mirrors = [...]`) and buildah through its registries.conf. The final trees and configs are compared; the
// differences each case expects are listed in its case.json with why. RUN steps reach only Debian's archive (apt).
import assert from "node:assert/strict";
import { promises as fsp, readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { resolveBaseImages } from "../../src/dockerfile/base-images.js";
import { Image, type LocalStore } from "../../src/index.js";
import { FetchPolicy } from "../../src/net/fetch-policy.js";
import { permissiveConfig } from "../../src/net/fetch-rules.js";
import { loadRegistryConfig } from "../../src/net/registry-config-file.js";
import { debianBaseImage, debianBaseTarball, pushDebianTags } from "../support/debian-base.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { REPO_ROOT } from "../support/strata.js";
import {
  buildahCase,
  diffConfigs,
  diffTrees,
  haveBuildah,
  privateBuildah,
  privateStore,
  strataConfig,
  strataTree,
  unexpected,
  type Buildah,
  type FixtureCase,
  type Prepared,
} from "./support.js";

const CORPUS = path.join(REPO_ROOT, "fixtures", "real-dockerfiles");
/** Files of a case that are about it, not part of its build context. */
const META = new Set(["SOURCE.md", "case.json", "LICENSE"]);

interface CorpusCase {
  /** The Dockerfile's name in the case folder (default `Dockerfile`). */
  dockerfile?: string;
  target?: string;
  /** Deliberate differences from buildah: paths left out, config keys skipped, diff lines accepted, and why. */
  buildahIgnorePaths?: string[];
  buildahIgnoreConfig?: string[];
  buildahAccept?: string[];
  buildahNote?: string;
}

/**
 * What two apt runs minutes apart write differently, whoever runs them: logs and caches stamped with the time of the
 * run. Every case that runs apt leaves these out of the comparison.
 */
const APT_NOISE = [
  "/var/log/apt",
  "/var/log/dpkg.log",
  "/var/log/alternatives.log",
  "/var/cache/ldconfig/aux-cache",
  "/var/cache/apt/pkgcache.bin",
  "/var/cache/apt/srcpkgcache.bin",
  "/var/cache/debconf/config.dat-old",
  "/var/cache/debconf/templates.dat-old",
  "/var/lib/dpkg/status-old",
];

const cases = readdirSync(CORPUS)
  .filter((n) => !n.includes("."))
  .sort()
  .map((name) => {
    const dir = path.join(CORPUS, name);
    const spec = JSON.parse(readFileSync(path.join(dir, "case.json"), "utf8")) as CorpusCase;
    return { name, dir, spec };
  });

/** The `debian:<tag>`s the corpus starts FROM. */
function debianTags(): string[] {
  const tags = new Set<string>();
  for (const c of cases) {
    const text = readFileSync(path.join(c.dir, c.spec.dockerfile ?? "Dockerfile"), "utf8");
    for (const m of text.matchAll(/^FROM\s+(?:--\S+\s+)*(?:docker\.io\/)?(?:library\/)?debian:(\S+)/gim))
      tags.add(m[1]!);
  }
  return [...tags].sort();
}

let registry: TestRegistry;
let store: LocalStore;
let cleanupStore: () => Promise<void>;
let buildah: Buildah | undefined;
let policy: FetchPolicy;
let work: string;

before(
  async () => {
    work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-real-world-"));
    const [tarball, reg, s] = await Promise.all([debianBaseTarball("bookworm"), startRegistry(), privateStore()]);
    registry = reg;
    store = s.store;
    cleanupStore = s.cleanup;
    await pushDebianTags(store, await debianBaseImage(store, tarball), registry.host, debianTags());
    // Strata: the registry config a user would write, read from its file. Names never resolve in this test's policy,
    // so nothing can reach docker.io itself even if the mirror failed.
    const toml = path.join(work, "registries.toml");
    await fsp.writeFile(toml, `[registry."docker.io"]\nmirrors = ["${registry.host}"]\n`);
    policy = new FetchPolicy(permissiveConfig(), {
      registryConfig: loadRegistryConfig(toml),
      resolve: async (host) => {
        throw Object.assign(new Error(`${host}: the corpus test resolves no names`), { code: "ENOTFOUND" });
      },
    });
    if (haveBuildah()) {
      buildah = await privateBuildah();
      // buildah: docker.io is the loopback registry (a mirror with no fallback, so buildah cannot reach docker.io).
      const conf = path.join(buildah.root, "registries.conf");
      await fsp.writeFile(
        conf,
        `unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n[[registry]]\nprefix = "docker.io"\nlocation = "${registry.host}"\ninsecure = true\n`,
      );
      buildah.env.CONTAINERS_REGISTRIES_CONF = conf;
    }
  },
  { timeout: 900_000 },
);

after(async () => {
  await buildah?.cleanup();
  await registry?.stop();
  await cleanupStore?.();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

test("the corpus has at least 10 real-world Dockerfiles, each with its source noted", () => {
  assert.ok(cases.length >= 10, `only ${cases.length} cases`);
  for (const c of cases) {
    const source = readFileSync(path.join(c.dir, "SOURCE.md"), "utf8");
    for (const field of ["Repository", "Commit", "Path", "Licence"])
      assert.match(source, new RegExp(`^- ${field}: \\S`, "m"), `${c.name}/SOURCE.md lacks ${field}`);
    assert.match(source, /^- Commit: [0-9a-f]{40}$/m, `${c.name}/SOURCE.md: a full commit id`);
  }
});

describe("real-world Dockerfiles: Strata vs buildah bud, bases through a loopback docker.io mirror", {
  concurrency: 3,
}, () => {
  for (const c of cases) {
    test(c.name, { timeout: 900_000, skip: !haveBuildah() && "buildah or runc is not installed" }, async (t) => {
      const root = await fsp.mkdtemp(path.join(work, `${c.name}-`));
      for (const n of readdirSync(c.dir)) {
        if (!META.has(n))
          await fsp.cp(path.join(c.dir, n), path.join(root, n), { recursive: true, preserveTimestamps: true });
      }
      const dockerfile = path.join(root, c.spec.dockerfile ?? "Dockerfile");
      const target = c.spec.target;
      const baseImages = await resolveBaseImages(dockerfile, {
        store,
        fetchPolicy: policy,
        ...(target ? { target } : {}),
      });
      const prepared: Prepared = { root, dockerfile, context: root, buildArgs: {}, close: async () => undefined };
      const fixture: FixtureCase = { name: c.name, dir: c.dir, expect: target ? { target } : {} };
      // Both builders at once: each mostly waits for apt.
      const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
        const t0 = Date.now();
        return [await fn(), (Date.now() - t0) / 1000];
      };
      const [[built, strataSeconds], [theirs, buildahSeconds]] = await Promise.all([
        timed(() =>
          Image.fromDockerfile(dockerfile, { contextDir: root, baseImages, ...(target ? { target } : {}) }).build({
            store,
            fetchPolicy: policy,
            log: () => undefined,
          }),
        ),
        timed(() => buildahCase(buildah!, prepared, fixture)),
      ]);
      t.diagnostic(`strata ${strataSeconds.toFixed(1)} s, buildah ${buildahSeconds.toFixed(1)} s (at once)`);
      const ours = await strataTree(store, built.imageId);
      const ourConfig = await strataConfig(store, built.imageId);
      const diffs = [
        ...diffTrees(ours, theirs.tree, [...APT_NOISE, ...(c.spec.buildahIgnorePaths ?? [])]),
        ...diffConfigs(ourConfig, theirs.config, c.spec.buildahIgnoreConfig),
      ];
      const bad = unexpected(diffs, c.spec.buildahAccept);
      assert.deepEqual(bad, [], `${c.name}: undocumented differences from buildah:\n${bad.join("\n")}`);
      if (diffs.length || c.spec.buildahIgnorePaths?.length)
        assert.ok(c.spec.buildahNote, `${c.name}: documented differences need a buildahNote`);
      // The base came through the mirror: the build resolved debian:* with a policy that resolves no names.
      assert.ok(ours.has("/etc/debian_version"), `${c.name}: a Debian tree`);
    });
  }
});
