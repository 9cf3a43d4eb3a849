// A Debian base image for tests that build real-world Dockerfiles: made with mmdebstrap from Debian's archive (minbase,
// with the path excludes of Docker Hub's debian:*-slim), kept as a tarball in the shared test home so a run makes it
// once (concurrent test processes wait for the one making it), and pushed to a loopback registry under Docker Hub
// names (`library/debian:<tag>`) so a registry mirror can serve `FROM debian:bookworm-slim` unmodified.
import { execFile } from "node:child_process";
import { existsSync, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { commitLayer } from "../../src/layer/commit.js";
import { MediaType, type ImageConfig, type Manifest } from "../../src/oci/types.js";
import { pushImage } from "../../src/registry/push.js";
import type { ImageRecord, Store } from "../../src/store/store.js";
import { SHARED_HOME } from "./strata.js";

const run = promisify(execFile);

/** Bump when the recipe changes, so an old tarball in a long-lived test home is not reused. */
const RECIPE = "v1";
const MIRROR = "http://deb.debian.org/debian";
/** What debuerreotype's slimify leaves out of debian:*-slim (docs but their copyrights, man pages, locales). */
const SLIM_EXCLUDES = [
  "path-exclude=/usr/share/doc/*",
  "path-include=/usr/share/doc/*/copyright",
  "path-exclude=/usr/share/man/*",
  "path-exclude=/usr/share/groff/*",
  "path-exclude=/usr/share/info/*",
  "path-exclude=/usr/share/locale/*",
  "path-exclude=/usr/share/lintian/*",
  "path-exclude=/usr/share/linda/*",
];
/** Docker Hub's debian image config. */
const DEBIAN_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const STALE_LOCK_MS = 20 * 60_000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The path of a tarball of a Debian `suite` minbase root filesystem, made by mmdebstrap the first time any test of
 * the run asks (the others wait), then reused from the shared test home.
 */
export async function debianBaseTarball(suite = "bookworm"): Promise<string> {
  const dir = path.join(SHARED_HOME, "fixtures");
  await fsp.mkdir(dir, { recursive: true });
  const tarball = path.join(dir, `debian-${suite}-minbase-${RECIPE}.tar`);
  const lock = `${tarball}.lock`;
  for (;;) {
    if (existsSync(tarball)) return tarball;
    try {
      await fsp.mkdir(lock);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const st = await fsp.stat(lock).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > STALE_LOCK_MS) await fsp.rm(lock, { recursive: true, force: true });
      await sleep(1000);
      continue;
    }
    try {
      if (existsSync(tarball)) return tarball;
      const tmp = `${tarball}.tmp-${process.pid}.tar`; // mmdebstrap writes a tarball when the name ends in .tar
      const args = ["--variant=minbase", "--mode=unshare", "--quiet"];
      for (const opt of SLIM_EXCLUDES) args.push(`--dpkgopt=${opt}`);
      args.push("--", suite, tmp, MIRROR);
      await run("mmdebstrap", args, { maxBuffer: 64 << 20 });
      await fsp.rename(tmp, tarball);
      return tarball;
    } finally {
      await fsp.rm(lock, { recursive: true, force: true });
    }
  }
}

/** Turns the tarball into a one-layer image in `store`, configured as Docker Hub's debian images are. */
export async function debianBaseImage(store: Store, tarball: string): Promise<ImageRecord> {
  const rootfs = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-debian-base-"));
  try {
    // Without mmdebstrap's device nodes, as Docker Hub's debian images (debuerreotype) have none: a puller that
    // creates them (buildah) and one that skips them from untrusted layers (Strata) then see the same tree.
    await run("tar", ["--numeric-owner", "--exclude=./dev/*", "-xpf", tarball, "-C", rootfs]);
    const layer = await commitLayer(store, rootfs, { epoch: 1_767_225_600, overlay: false });
    const created = "2026-01-01T00:00:00Z";
    const config: ImageConfig = {
      created,
      architecture: "amd64",
      os: "linux",
      config: { Env: [DEBIAN_PATH], Cmd: ["bash"] },
      rootfs: { type: "layers", diff_ids: [layer.diffId] },
      history: [{ created, created_by: `mmdebstrap --variant=minbase ${path.basename(tarball)}` }],
    };
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDigest = await store.putBlobBytes(configBytes);
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: configDigest, size: configBytes.length },
      layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
    };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    const manifestDigest = await store.putBlobBytes(manifestBytes);
    const record: ImageRecord = {
      id: configDigest,
      configDigest,
      configSize: configBytes.length,
      manifestDigest,
      manifestSize: manifestBytes.length,
      layers: [layer],
    };
    await store.putImage(record);
    return record;
  } finally {
    await fsp.rm(rootfs, { recursive: true, force: true });
  }
}

/** Pushes `image` to `registryHost` as `library/debian:<tag>` for every tag (Docker Hub's name for `debian:<tag>`). */
export async function pushDebianTags(
  store: Store,
  image: ImageRecord,
  registryHost: string,
  tags: readonly string[],
): Promise<void> {
  for (const tag of tags) await pushImage(store, image, `${registryHost}/library/debian:${tag}`, {});
}
