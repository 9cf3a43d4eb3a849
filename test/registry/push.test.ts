// Push: images built in a LocalStore (no runc) go to Debian's docker-registry 2.8.2 (plain, htpasswd, token auth),
// are checked with skopeo, copied back with skopeo, and pulled back with our own client.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { InvalidDefinitionError } from "../../src/errors.js";
import { MediaType } from "../../src/oci/types.js";
import { clearTokenCache } from "../../src/registry/auth.js";
import { blobSources } from "../../src/registry/blob-sources.js";
import { RegistryAuthError, UnsupportedImageError } from "../../src/registry/errors.js";
import { pullImage } from "../../src/registry/pull.js";
import { pushImage, type PushOptions, type PushResult } from "../../src/registry/push.js";
import type { ImageRecord } from "../../src/store/store.js";
import { LocalStore } from "../../src/store/local.js";
import { sha256Bytes } from "../../src/util/digest.js";
import { makeStoreImage } from "../support/registry-image.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";

const exec = promisify(execFile);
const tempDirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}
after(async () => {
  for (const d of tempDirs) await fsp.rm(d, { recursive: true, force: true });
});

const BIG = randomBytes(150_000).toString("hex");
const LAYERS: Record<string, string>[] = [
  { "etc/os-release": "ID=strata-test\n" },
  { "app/main.txt": "hello from a pushed layer\n", "app/big.txt": BIG },
];

interface SkopeoInspect {
  Digest: string;
  Architecture: string;
  Os: string;
  Layers: string[];
}

async function skopeoInspect(ref: string, creds?: string, raw = false): Promise<string> {
  const args = [
    "inspect",
    "--tls-verify=false",
    ...(creds ? ["--creds", creds] : []),
    ...(raw ? ["--raw"] : []),
    `docker://${ref}`,
  ];
  const { stdout } = await exec("skopeo", args, { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/** skopeo's view of a pushed image agrees with what pushImage reported. */
async function checkWithSkopeo(
  ref: string,
  image: ImageRecord,
  result: PushResult,
  creds?: string,
): Promise<Record<string, unknown>> {
  const info = JSON.parse(await skopeoInspect(ref, creds)) as SkopeoInspect;
  assert.equal(info.Digest, result.manifestDigest);
  assert.equal(info.Architecture, "amd64");
  assert.equal(info.Os, "linux");
  assert.deepEqual(
    info.Layers,
    image.layers.map((l) => l.digest),
  );
  const raw = await skopeoInspect(ref, creds, true);
  assert.equal(sha256Bytes(raw), result.manifestDigest, "the manifest bytes hash to the reported digest");
  return JSON.parse(raw) as Record<string, unknown>;
}

/** Our client pulls it back: same config (image id), layers with the right files. */
async function pullBack(
  ref: string,
  image: ImageRecord,
  opts: { secret?: Record<string, string> } = {},
): Promise<void> {
  const store = await LocalStore.open(await tempDir("strata-pullback-"));
  const pulled = await pullImage(ref, store, { ...opts, dockerConfig: false });
  assert.equal(pulled.configDigest, image.configDigest);
  assert.deepEqual(
    pulled.layers.map((l) => l.digest),
    image.layers.map((l) => l.digest),
  );
  assert.deepEqual(
    pulled.layers.map((l) => l.diffId),
    image.layers.map((l) => l.diffId),
  );
  const l0 = await store.layerDir(pulled.layers[0]!);
  const l1 = await store.layerDir(pulled.layers[1]!);
  assert.equal(await fsp.readFile(path.join(l0, "etc/os-release"), "utf8"), "ID=strata-test\n");
  assert.equal(await fsp.readFile(path.join(l1, "app/main.txt"), "utf8"), "hello from a pushed layer\n");
  assert.equal(await fsp.readFile(path.join(l1, "app/big.txt"), "utf8"), BIG);
}

function hows(r: PushResult): string[] {
  return r.blobs.map((b) => b.how).sort();
}

describe("push to a plain registry", () => {
  let reg: TestRegistry;
  let store: LocalStore;
  let image: ImageRecord;
  const opts: PushOptions = { dockerConfig: false };

  before(async () => {
    reg = await startRegistry();
    store = await LocalStore.open(await tempDir("strata-push-store-"));
    image = await makeStoreImage(store, LAYERS);
  });
  after(async () => {
    await reg?.stop();
  });

  test("OCI: uploads every blob, skopeo inspects and copies it, our client pulls it back, a second push uploads nothing", async () => {
    const ref = `${reg.host}/team/app:1`;
    const lines: string[] = [];
    const result = await pushImage(store, image, ref, { ...opts, onProgress: (l) => lines.push(l) });
    assert.equal(result.mediaType, MediaType.ociManifest);
    assert.equal(result.manifestDigest, image.manifestDigest, "the stored OCI manifest is pushed byte for byte");
    assert.deepEqual(hows(result), ["uploaded", "uploaded", "uploaded"]);
    assert.ok(
      lines.some((l) => /^pushed manifest sha256:[0-9a-f]{12}… \(OCI\)$/.test(l)),
      lines.join("\n"),
    );
    assert.ok(lines.includes(`tagged ${reg.host}/team/app:1`), lines.join("\n"));

    const raw = await checkWithSkopeo(ref, image, result);
    assert.equal(raw["mediaType"], MediaType.ociManifest);
    await pullBack(ref, image);

    // skopeo copies it back to an OCI layout, and the blobs are the ones we pushed.
    const out = await tempDir("strata-skopeo-copy-");
    await exec("skopeo", [
      "--insecure-policy",
      "copy",
      "--src-tls-verify=false",
      `docker://${ref}`,
      `oci:${out}:copied`,
    ]);
    for (const l of image.layers) await fsp.access(path.join(out, "blobs/sha256", l.digest.slice(7)));

    const again = await pushImage(store, image, ref, opts);
    assert.deepEqual(hows(again), ["existing", "existing", "existing"]);
    assert.equal(again.manifestDigest, result.manifestDigest);
  });

  test("Docker v2 schema 2 (--format docker): media types converted, config (image id) unchanged", async () => {
    const ref = `${reg.host}/team/app-docker:1`;
    const result = await pushImage(store, image, ref, { ...opts, format: "docker" });
    assert.equal(result.mediaType, MediaType.dockerManifest);
    const raw = (await checkWithSkopeo(ref, image, result)) as {
      mediaType: string;
      config: { mediaType: string; digest: string };
      layers: { mediaType: string }[];
    };
    assert.equal(raw.mediaType, MediaType.dockerManifest);
    assert.equal(raw.config.mediaType, MediaType.dockerConfig);
    assert.equal(raw.config.digest, image.configDigest);
    assert.deepEqual(
      raw.layers.map((l) => l.mediaType),
      [MediaType.dockerLayerGzip, MediaType.dockerLayerGzip],
    );
    await pullBack(ref, image);
    const out = await tempDir("strata-skopeo-copy-");
    await exec("skopeo", ["--insecure-policy", "copy", "--src-tls-verify=false", `docker://${ref}`, `dir:${out}`]);
    assert.equal(
      JSON.parse(await fsp.readFile(path.join(out, "manifest.json"), "utf8")).mediaType,
      MediaType.dockerManifest,
    );
  });

  test("blobs known to be in another repository of the registry are mounted, not uploaded", async () => {
    // A store of its own: the earlier tests' pushes are recorded in the shared one.
    const store = await LocalStore.open(await tempDir("strata-push-mount-store-"));
    const image = await makeStoreImage(store, LAYERS);
    const other = await makeStoreImage(store, [...LAYERS, { "extra.txt": "only in the second image\n" }], {
      label: "mount",
    });
    const first = await pushImage(store, image, `${reg.host}/team/mount-src:1`, opts);
    assert.ok(first.blobs.every((b) => b.how !== "mounted"));
    assert.deepEqual(
      (await blobSources(store, image.layers[0]!.digest)).slice(0, 1),
      [{ registry: reg.host, repository: "team/mount-src" }],
      "the push recorded where the blobs now live",
    );
    const lines: string[] = [];
    const second = await pushImage(store, other, `${reg.host}/team/mount-dst:1`, {
      ...opts,
      onProgress: (l) => lines.push(l),
    });
    const byDigest = new Map(second.blobs.map((b) => [b.digest, b]));
    for (const l of image.layers) {
      assert.equal(byDigest.get(l.digest)?.how, "mounted", lines.join("\n"));
      assert.equal(byDigest.get(l.digest)?.from, "team/mount-src");
    }
    assert.equal(byDigest.get(other.layers[2]!.digest)?.how, "uploaded");
    assert.equal(byDigest.get(other.configDigest)?.how, "uploaded");
    assert.ok(
      lines.some((l) => /^mounted sha256:[0-9a-f]{12}… from team\/mount-src$/.test(l)),
      lines.join("\n"),
    );
    const info = JSON.parse(await skopeoInspect(`${reg.host}/team/mount-dst:1`)) as SkopeoInspect;
    assert.deepEqual(
      info.Layers,
      other.layers.map((l) => l.digest),
    );

    // mountFrom names a source explicitly; a source that lacks the blob falls back to an upload.
    const third = await makeStoreImage(store, [{ "fresh.txt": randomBytes(8).toString("hex") }], { label: "fresh" });
    const r = await pushImage(store, third, `${reg.host}/team/mount-fallback:1`, {
      ...opts,
      mountFrom: ["team/mount-src"],
    });
    assert.deepEqual(hows(r), ["uploaded", "uploaded"]);
    await skopeoInspect(`${reg.host}/team/mount-fallback:1`);
  });

  test("blobs above the monolithic limit go up as one streaming PATCH + PUT", async () => {
    const ref = `${reg.host}/team/streamed:1`;
    const store = await LocalStore.open(await tempDir("strata-push-stream-store-"));
    const image = await makeStoreImage(store, LAYERS, { label: "streamed" });
    const result = await pushImage(store, image, ref, { ...opts, monolithicLimit: 0 });
    assert.deepEqual(hows(result), ["uploaded", "uploaded", "uploaded"]);
    await checkWithSkopeo(ref, image, result);
    await pullBack(ref, image);
  });

  test("refuses a digest reference, and eStargz with a Docker manifest, clearly", async () => {
    await assert.rejects(
      pushImage(store, image, `${reg.host}/team/app@${image.manifestDigest}`, opts),
      InvalidDefinitionError,
    );
    await assert.rejects(
      pushImage(store, image, `${reg.host}/team/app:es`, { ...opts, estargz: true, format: "docker" }),
      (e: unknown) => {
        assert.ok(e instanceof UnsupportedImageError, String(e));
        assert.match(e.message, /eStargz layers need an OCI manifest/);
        return true;
      },
    );
  });

  test("CLI: strata push <image> <ref> [--format docker] prints ref@digest; usage errors exit 2", async () => {
    const cli = fileURLToPath(new URL("../../src/cli/push.js", import.meta.url));
    const run = (
      args: string[],
      env: Record<string, string> = {},
    ): Promise<{ code: number | null; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        const child = spawn(
          process.execPath,
          [
            "--input-type=module",
            "-e",
            `const m = await import(${JSON.stringify(cli)}); process.exitCode = await m.cmdPush(${JSON.stringify(args)});`,
          ],
          {
            env: {
              ...process.env,
              STRATA_HOME: store.root,
              DOCKER_CONFIG: path.join(store.root, "no-docker-config"),
              ...env,
            },
          },
        );
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
        child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
        child.on("close", (code) => resolve({ code, stdout, stderr }));
      });
    const ok = await run([image.id.slice(7, 19), `${reg.host}/team/cli:1`, "--format", "docker"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`^${reg.host.replace(/\./g, "\\.")}/team/cli@sha256:[0-9a-f]{64}\\n$`));
    assert.match(
      ok.stderr,
      /pushed .*team\/cli:1 \(Docker v2 schema 2\): \d+ uploaded, \d+ mounted, \d+ already there/,
    );
    const raw = JSON.parse(await skopeoInspect(`${reg.host}/team/cli:1`, undefined, true)) as { mediaType: string };
    assert.equal(raw.mediaType, MediaType.dockerManifest);

    const bad = await run([image.id, `${reg.host}/team/cli:2`, "--format", "v1"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--format is oci or docker/);
    assert.equal((await run([image.id])).code, 2);
    const es = await run([image.id, `${reg.host}/team/cli:3`, "--estargz"]);
    assert.equal(es.code, 0, es.stderr);
    const esRaw = JSON.parse(await skopeoInspect(`${reg.host}/team/cli:3`, undefined, true)) as {
      layers: { annotations?: Record<string, string> }[];
    };
    assert.ok(esRaw.layers.every((l) => l.annotations?.["containerd.io/snapshot/stargz/toc.digest"]));
  });
});

describe("push with credentials", () => {
  let store: LocalStore;
  let image: ImageRecord;
  before(async () => {
    store = await LocalStore.open(await tempDir("strata-push-auth-store-"));
    image = await makeStoreImage(store, LAYERS, { label: "auth" });
  });

  test("htpasswd: pushes with REGISTRY_USERNAME/REGISTRY_PASSWORD; without them the 401 says what to set", async () => {
    const reg = await startRegistry({ auth: "htpasswd" });
    try {
      const secret = { REGISTRY_USERNAME: "alice", REGISTRY_PASSWORD: reg.users["alice"]! };
      const ref = `${reg.host}/team/basic:1`;
      const result = await pushImage(store, image, ref, { secret, dockerConfig: false });
      await checkWithSkopeo(ref, image, result, reg.creds);
      await pullBack(ref, image, { secret });
      await assert.rejects(
        pushImage(store, image, `${reg.host}/team/basic:2`, { dockerConfig: false }),
        (e: unknown) => {
          assert.ok(e instanceof RegistryAuthError, String(e));
          assert.ok(e.message.includes(reg.host));
          assert.match(e.message, /REGISTRY_USERNAME and REGISTRY_PASSWORD/);
          return true;
        },
      );
    } finally {
      await reg.stop();
    }
  });

  test("token auth: push with pull,push scope, mounts need pull on the source, a read-only user gets insufficient_scope", async () => {
    const reg = await startRegistry({
      auth: "token",
      users: { alice: "alice-s3cret", reader: "reader-pw" },
      readOnlyUsers: ["reader"],
    });
    try {
      clearTokenCache();
      const ts = reg.tokenServer!;
      const secret = { REGISTRY_USERNAME: "alice", REGISTRY_PASSWORD: "alice-s3cret" };
      const ref = `${reg.host}/team/tok:1`;
      const result = await pushImage(store, image, ref, { secret, dockerConfig: false });
      assert.ok(
        ts.requests.some((r) => r.user === "alice" && r.scopes.includes("repository:team/tok:pull,push")),
        JSON.stringify(ts.requests),
      );
      await checkWithSkopeo(ref, image, result, reg.creds);
      await pullBack(ref, image, { secret });

      // Second repository: blobs are mounted from team/tok; the token covers pull on the source.
      const mounted = await pushImage(store, image, `${reg.host}/team/tok-copy:1`, { secret, dockerConfig: false });
      assert.deepEqual(hows(mounted), ["mounted", "mounted", "mounted"]);
      const last = ts.requests[ts.requests.length - 1]!;
      assert.deepEqual(last.scopes, ["repository:team/tok-copy:pull,push", "repository:team/tok:pull"]);

      await assert.rejects(
        pushImage(store, image, `${reg.host}/team/tok-ro:1`, {
          secret: { REGISTRY_USERNAME: "reader", REGISTRY_PASSWORD: "reader-pw" },
          dockerConfig: false,
        }),
        (e: unknown) => {
          assert.ok(e instanceof RegistryAuthError, String(e));
          assert.ok(e.message.includes(reg.host), e.message);
          assert.match(e.message, /insufficient_scope/);
          assert.ok(!e.message.includes("reader-pw"));
          return true;
        },
      );
    } finally {
      await reg.stop();
    }
  });
});
