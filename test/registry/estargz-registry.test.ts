// eStargz against real servers on loopback: `pushImage({ estargz })` to Debian's docker-registry 2.8.2, checked
// with skopeo (inspect, copy back to an OCI layout), unpacked with umoci, pulled back by our client, run under
// podman; then read lazily with ranged requests (bytes counted), and materialised into a store in parallel.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { MediaType } from "../../src/oci/types.js";
import { UnsupportedImageError } from "../../src/registry/errors.js";
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from "../../src/registry/estargz/format.js";
import { NotLazyError, openLazyImage } from "../../src/registry/estargz/lazy.js";
import { EstargzReader } from "../../src/registry/estargz/read.js";
import { RegistryClient } from "../../src/registry/client.js";
import { pullImage } from "../../src/registry/pull.js";
import { pushImage } from "../../src/registry/push.js";
import { parseReference } from "../../src/registry/reference.js";
import { LocalStore } from "../../src/store/local.js";
import type { ImageRecord } from "../../src/store/store.js";
import { makeStoreImage } from "../support/registry-image.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { makeBusyboxTree } from "../support/strata.js";

const exec = promisify(execFile);
const sha = (b: Uint8Array): string => "sha256:" + createHash("sha256").update(b).digest("hex");

let reg: TestRegistry;
let work: string;
let store: LocalStore;
let image: ImageRecord;
const BIG = randomBytes(6 * 1024 * 1024);
const HELLO = "hello from an eStargz layer\n";
const REF = (): string => `${reg.host}/lazy/app:1`;

before(async () => {
  reg = await startRegistry();
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-estargz-reg-"));
  store = await LocalStore.open(path.join(work, "store"));
  image = await makeStoreImage(store, [{}, { "app/hello.txt": HELLO, "app/sub/deep.txt": "deep\n" }], {
    cmd: ["/bin/sh", "-c", "cat /app/hello.txt"],
    label: "estargz",
    populate: async (i, dir) => {
      if (i === 0) await makeBusyboxTree(dir);
      if (i === 1) {
        await fsp.mkdir(path.join(dir, "data"), { recursive: true });
        await fsp.writeFile(path.join(dir, "data/big.bin"), BIG);
        await fsp.symlink("/app/hello.txt", path.join(dir, "data/hello-link"));
      }
    },
  });
});
after(async () => {
  await reg?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

interface RawManifest {
  mediaType: string;
  config: { digest: string };
  layers: { mediaType: string; digest: string; size: number; annotations?: Record<string, string> }[];
}

describe("push --estargz", () => {
  let manifest: RawManifest;

  test("pushes eStargz layers with the TOC-digest and uncompressed-size annotations and a config naming the new diffIDs", async () => {
    const lines: string[] = [];
    const result = await pushImage(store, image, REF(), {
      estargz: { chunkSize: 256 * 1024 },
      dockerConfig: false,
      onProgress: (l) => lines.push(l),
    });
    assert.ok(
      lines.some((l) => /converted .* to eStargz/.test(l)),
      lines.join("\n"),
    );
    const raw = (await exec("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${REF()}`])).stdout;
    assert.equal(sha(Buffer.from(raw)), result.manifestDigest);
    manifest = JSON.parse(raw) as RawManifest;
    assert.equal(manifest.mediaType, MediaType.ociManifest);
    assert.equal(manifest.layers.length, 2);
    const config = JSON.parse(
      (await exec("skopeo", ["inspect", "--tls-verify=false", "--config", "--raw", `docker://${REF()}`])).stdout,
    ) as { rootfs: { diff_ids: string[] } };
    const local = await LocalStore.open(path.join(work, "store"));
    for (const [i, l] of manifest.layers.entries()) {
      assert.equal(l.mediaType, MediaType.ociLayerGzip);
      const blob = await local.readBlob(l.digest as never);
      const plain = gunzipSync(blob);
      assert.equal(l.annotations?.[UNCOMPRESSED_SIZE_ANNOTATION], String(plain.length));
      assert.match(l.annotations?.[TOC_DIGEST_ANNOTATION] ?? "", /^sha256:[0-9a-f]{64}$/);
      assert.equal(config.rootfs.diff_ids[i], sha(plain), "the config's diffID is the decompressed eStargz blob's");
      assert.notEqual(config.rootfs.diff_ids[i], image.layers[i]!.diffId, "the TOC entry changes the diffID");
    }
  });

  test("pushing again reuses the conversion (same manifest, blobs already there)", async () => {
    const again = await pushImage(store, image, REF(), { estargz: { chunkSize: 256 * 1024 }, dockerConfig: false });
    assert.deepEqual(again.blobs.map((b) => b.how).sort(), ["existing", "existing", "existing"]);
    assert.equal(
      sha(Buffer.from((await exec("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${REF()}`])).stdout)),
      again.manifestDigest,
    );
  });

  test("skopeo copies it back to an OCI layout and umoci unpacks it", async () => {
    const layout = path.join(work, "layout");
    await exec("skopeo", [
      "--insecure-policy",
      "copy",
      "--quiet",
      "--src-tls-verify=false",
      `docker://${REF()}`,
      `oci:${layout}:app`,
    ]);
    const bundle = path.join(work, "bundle");
    await exec("umoci", ["unpack", "--image", `${layout}:app`, bundle]);
    const rootfs = path.join(bundle, "rootfs");
    assert.equal(await fsp.readFile(path.join(rootfs, "app/hello.txt"), "utf8"), HELLO);
    assert.ok((await fsp.readFile(path.join(rootfs, "data/big.bin"))).equals(BIG));
    assert.equal(await fsp.readlink(path.join(rootfs, "bin/sh")), "busybox");
    // The eStargz bookkeeping entries are ordinary files in the unpacked tree (as with any eStargz image).
    assert.ok((await fsp.stat(path.join(rootfs, "stargz.index.json"))).isFile());
  });

  test("our client pulls it back (digests and diffIDs verified) and the layers unpack", async () => {
    const other = await LocalStore.open(path.join(work, "pullback"));
    const lines: string[] = [];
    const pulled = await pullImage(REF(), other, { dockerConfig: false, onProgress: (l) => lines.push(l) });
    assert.deepEqual(
      pulled.layers.map((l) => l.digest),
      manifest.layers.map((l) => l.digest),
    );
    assert.equal(
      lines.filter((l) => l.startsWith("fetched eStargz layer")).length,
      manifest.layers.length,
      lines.join("\n"),
    );
    const top = await other.layerDir(pulled.layers[1]!);
    assert.equal(await fsp.readFile(path.join(top, "app/hello.txt"), "utf8"), HELLO);
    assert.ok((await fsp.readFile(path.join(top, "data/big.bin"))).equals(BIG));
  });

  test("podman pulls it and runs it", async () => {
    const podRoot = path.join(work, "podman");
    const podman = [
      "--root",
      path.join(podRoot, "root"),
      "--runroot",
      path.join(podRoot, "runroot"),
      "--runtime",
      "/usr/sbin/runc",
      "--storage-driver",
      "vfs",
      "--cgroup-manager",
      "cgroupfs",
      "--events-backend",
      "none",
    ];
    const conf = path.join(work, "containers.conf");
    await fsp.writeFile(conf, "[containers]\ndefault_ulimits = []\n");
    const env = { ...process.env, CONTAINERS_CONF: conf };
    try {
      await exec("podman", [...podman, "pull", "--quiet", "--tls-verify=false", REF()], { env });
      const out = await exec("podman", [...podman, "run", "--rm", "--network", "none", REF()], { env });
      assert.equal(out.stdout, HELLO);
    } finally {
      await exec("podman", [...podman, "rmi", "-a", "-f"], { env }).catch(() => undefined);
    }
  });

  test("--estargz with --format docker is refused (Docker manifests drop the annotations)", async () => {
    await assert.rejects(
      pushImage(store, image, `${reg.host}/lazy/docker:1`, { estargz: true, format: "docker", dockerConfig: false }),
      (e: unknown) => {
        assert.ok(e instanceof UnsupportedImageError);
        assert.match(e.message, /OCI manifest/);
        return true;
      },
    );
  });
});

describe("lazy pull of the eStargz image", () => {
  test("reads one small file with ranged requests: TOC verified, under 5% of the layer bytes transferred", async () => {
    const lazy = await openLazyImage(REF(), { dockerConfig: false });
    assert.ok(lazy.fullyLazy);
    const afterToc = lazy.bytesRead;
    assert.equal((await lazy.readFile("/app/hello.txt")).toString(), HELLO);
    assert.equal((await lazy.readFile("/data/hello-link")).toString(), HELLO, "symlinks resolve inside the image");
    assert.match((await lazy.readFile("/etc/passwd")).toString(), /^root:x:0:0:/);
    assert.equal(lazy.stat("/bin/sh", false)?.entry.type, "symlink");
    assert.equal(lazy.stat("/bin/sh")?.path, "bin/busybox");
    assert.equal(await lazy.readFileIfExists("/etc/shadow"), undefined);
    const fraction = lazy.bytesRead / lazy.layerBytes;
    console.log(
      `# lazy read of 3 files: ${lazy.bytesRead} of ${lazy.layerBytes} layer bytes (${(fraction * 100).toFixed(2)}%), TOCs ${afterToc}`,
    );
    assert.ok(
      fraction < 0.05,
      `transferred ${lazy.bytesRead} of ${lazy.layerBytes} layer bytes (${(fraction * 100).toFixed(1)}%; TOCs ${afterToc})`,
    );
  });

  test("fetchFiles returns a directory tree across layers, and only its members are transferred", async () => {
    const lazy = await openLazyImage(REF(), { dockerConfig: false });
    const { files, missing } = await lazy.fetchFiles(["/app", "/nope"], { recursive: true });
    assert.deepEqual(missing, ["nope"]);
    const byPath = new Map(files.map((f) => [f.path, f]));
    assert.equal(byPath.get("app/hello.txt")?.content?.toString(), HELLO);
    assert.equal(byPath.get("app/sub/deep.txt")?.content?.toString(), "deep\n");
    assert.equal(byPath.get("app/hello.txt")?.layer, 1);
    assert.ok(lazy.bytesRead < lazy.layerBytes * 0.05);
  });

  test("materializeLayer fetches a whole layer in parallel ranges into a store (digest and diffID verified)", async () => {
    const lazy = await openLazyImage(REF(), { dockerConfig: false });
    const target = await LocalStore.open(path.join(work, "materialized"));
    const rec = await lazy.materializeLayer(target, 1, { rangeBytes: 512 * 1024, concurrency: 4 });
    assert.equal(rec.digest, lazy.layers[1]!.descriptor.digest);
    assert.ok(await target.hasBlob(rec.digest));
    const dir = await target.layerDir(rec);
    assert.ok((await fsp.readFile(path.join(dir, "data/big.bin"))).equals(BIG));
    assert.ok(lazy.bytesRead >= lazy.layers[1]!.descriptor.size);
  });

  test("a reader on the raw registry client checks the TOC digest from the annotation", async () => {
    const lazy = await openLazyImage(REF(), { dockerConfig: false });
    const d = lazy.layers[1]!.descriptor;
    const client = new RegistryClient(parseReference(REF()), { dockerConfig: false });
    const bad = { ...d, annotations: { ...d.annotations, [TOC_DIGEST_ANNOTATION]: `sha256:${"0".repeat(64)}` } };
    await assert.rejects(EstargzReader.openRegistry(client, bad), /DIGEST|digest/);
  });

  test("an image without eStargz layers is not lazy: reads say so, and the normal pull path is used", async () => {
    const ref = `${reg.host}/lazy/plain:1`;
    await pushImage(store, image, ref, { dockerConfig: false });
    const lazy = await openLazyImage(ref, { dockerConfig: false });
    assert.equal(lazy.fullyLazy, false);
    assert.throws(() => lazy.stat("/app/hello.txt"), NotLazyError);
    const pulled = await pullImage(ref, await LocalStore.open(path.join(work, "plain")), { dockerConfig: false });
    assert.deepEqual(
      pulled.layers.map((l) => l.diffId),
      image.layers.map((l) => l.diffId),
    );
  });
});
