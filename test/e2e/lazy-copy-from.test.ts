// Lazy `COPY --from=<registry image>`: a large eStargz image (64 MB of incompressible data over three layers) on a
// loopback docker-registry, behind a proxy that counts the bytes it serves. A Dockerfile build that copies one small
// file from it transfers under 5% of the layer bytes, a rebuild transfers no blob bytes at all, globs and directories
// are lazy too, whiteouts and opaque directories in upper layers hide lower files, and an image pushed without
// eStargz still works (the full pull).
import assert from "node:assert/strict";
import { createCipheriv, createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { nestedBuilds } from "../../src/engine/build.js";
import { fileInputs, resolveInput } from "../../src/engine/inputs.js";
import { lazyImageRoot } from "../../src/engine/lazy-root.js";
import { pushImage } from "../../src/registry/push.js";
import { LocalStore } from "../../src/store/local.js";
import type { ImageRecord } from "../../src/store/store.js";
import { startCountingProxy, type CountingProxy } from "../support/counting-proxy.js";
import { makeStoreImage } from "../support/registry-image.js";
import { startCuttingProxy } from "../support/registry-proxy.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { makeBusyboxTree, nonce, scratchSpace, strata, type BuildJson } from "../support/strata.js";

const MB = 1024 * 1024;
/** Deterministic incompressible bytes (AES-128-CTR keystream of a seed). */
function noise(seed: string, n: number): Buffer {
  const key = createHash("sha256").update(seed).digest();
  return createCipheriv("aes-128-ctr", key.subarray(0, 16), key.subarray(16, 32)).update(Buffer.alloc(n));
}

const OS_RELEASE = 'NAME="Lazy Linux"\nID=lazy\nVERSION_ID=1\n';
const HELLO = "a small file in the top layer\n";

let reg: TestRegistry;
let proxy: CountingProxy;
let home: string;
const space = scratchSpace();
let lazyLayers: { digest: string; size: number }[] = [];
let plainLayers: { digest: string; size: number }[] = [];
const LAZY_REPO = "lazy/big";
const PLAIN_REPO = "lazy/plain";
const lazyRef = (): string => `${proxy.host}/${LAZY_REPO}:1`;
const plainRef = (): string => `${proxy.host}/${PLAIN_REPO}:1`;
const layerBytes = (ls: { size: number }[]): number => ls.reduce((n, l) => n + l.size, 0);

async function makeImage(store: LocalStore): Promise<ImageRecord> {
  return makeStoreImage(
    store,
    [
      {
        "etc/os-release": OS_RELEASE,
        "lib/x/one.txt": "one\n",
        "lib/x/two.txt": "two\n",
        "gone/hidden.txt": "whited out above\n",
        "gone/kept.txt": "kept\n",
        "opq/old.txt": "hidden by an opaque dir above\n",
        "conf/base.conf": "base=1\n",
      },
      {
        "gone/.wh.hidden.txt": "",
        "opq/.wh..wh..opq": "",
        "opq/new.txt": "new\n",
        "conf/app.conf": "app=1\n",
        "conf/db.conf": "db=1\n",
        "conf/notes.txt": "not a .conf\n",
      },
      {},
    ],
    {
      label: "lazy-copy-from",
      populate: async (i, dir) => {
        await fsp.mkdir(path.join(dir, "data"), { recursive: true });
        await fsp.writeFile(path.join(dir, `data/layer${i}.bin`), noise(`layer${i}`, [24, 24, 16][i]! * MB));
        if (i === 0) {
          await fsp.mkdir(path.join(dir, "lib/x"), { recursive: true });
          await fsp.writeFile(path.join(dir, "lib/x/blob.bin"), noise("lib", 256 * 1024));
        }
        if (i === 1) {
          await fsp.mkdir(path.join(dir, "etc"), { recursive: true });
          await fsp.symlink("os-release", path.join(dir, "etc/alt-release"));
          await fsp.symlink("/lib/x", path.join(dir, "xlink"));
        }
        if (i === 2) {
          await fsp.mkdir(path.join(dir, "small"), { recursive: true });
          await fsp.writeFile(path.join(dir, "small/hello.txt"), HELLO);
          await fsp.chown(path.join(dir, "small/hello.txt"), 1000, 1000);
          await fsp.chmod(path.join(dir, "small/hello.txt"), 0o640);
        }
      },
    },
  );
}

before(async () => {
  reg = await startRegistry();
  proxy = await startCountingProxy(reg.host);
  const work = await space.scratch();
  const store = await LocalStore.open(path.join(work, "store"));
  const image = await makeImage(store);
  await pushImage(store, image, `${reg.host}/${LAZY_REPO}:1`, { estargz: true, dockerConfig: false });
  await pushImage(store, image, `${reg.host}/${PLAIN_REPO}:1`, { dockerConfig: false });
  const manifest = async (repo: string) => {
    const res = await fetch(`${reg.url}/v2/${repo}/manifests/1`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    return ((await res.json()) as { layers: { digest: string; size: number }[] }).layers;
  };
  lazyLayers = await manifest(LAZY_REPO);
  plainLayers = await manifest(PLAIN_REPO);
  // A private store: the lazy cache (store/lazy/) must start empty for the byte counts to mean anything.
  home = await space.scratch();
});
after(async () => {
  await proxy?.close();
  await reg?.stop();
  await space.cleanup();
});

/** Builds `body` (Dockerfile lines after a busybox base) with the CLI; returns the build and the blob bytes served. */
async function build(body: string): Promise<BuildJson & { lazyBytes: number; plainBytes: number }> {
  const dir = await space.scratch();
  await makeBusyboxTree(path.join(dir, "rootfs"));
  await fsp.writeFile(path.join(dir, "Dockerfile"), `FROM scratch\nCOPY rootfs/ /\nENV N=${nonce()}\n${body}`);
  return buildIn(dir);
}

async function buildIn(dir: string): Promise<BuildJson & { lazyBytes: number; plainBytes: number }> {
  proxy.reset();
  const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), dir, "--json"], { home });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  const built = JSON.parse(lines[lines.length - 1]!) as BuildJson;
  return {
    ...built,
    lazyBytes: proxy.blobBytes(
      LAZY_REPO,
      lazyLayers.map((l) => l.digest),
    ),
    plainBytes: proxy.blobBytes(
      PLAIN_REPO,
      plainLayers.map((l) => l.digest),
    ),
  };
}

async function run(imageId: string, script: string): Promise<string> {
  const r = await strata(["run", imageId, "--", "sh", "-c", script], { home });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

describe("COPY --from=<eStargz image>", () => {
  test("one small file: under 5% of the layer bytes transferred; content, mode and owner kept; a rebuild transfers nothing", async () => {
    const dir = await space.scratch();
    await makeBusyboxTree(path.join(dir, "rootfs"));
    await fsp.writeFile(
      path.join(dir, "Dockerfile"),
      `FROM scratch\nCOPY rootfs/ /\nENV N=${nonce()}\nCOPY --from=${lazyRef()} /small/hello.txt /x\n`,
    );
    const first = await buildIn(dir);
    const total = layerBytes(lazyLayers);
    const ratio = first.lazyBytes / total;
    console.log(
      `# lazy COPY --from of one file: ${first.lazyBytes} of ${total} layer bytes (${(ratio * 100).toFixed(3)}%)`,
    );
    assert.ok(total > 60 * MB, `the image is large (${total} bytes)`);
    assert.ok(first.lazyBytes > 0, "something was fetched");
    assert.ok(ratio < 0.05, `transferred ${first.lazyBytes} of ${total} layer bytes`);
    assert.equal(await run(first.imageId, "cat /x; stat -c '%a %u %g' /x"), `${HELLO}640 1000 1000\n`);

    const again = await buildIn(dir);
    assert.equal(again.imageId, first.imageId);
    assert.ok(
      again.steps.every((s) => s.cached),
      JSON.stringify(again.steps),
    );
    assert.equal(again.lazyBytes, 0, "the second build reads no blob bytes");
  });

  test("globs, directories and symlinks are lazy too", async () => {
    const b = await build(
      `COPY --from=${lazyRef()} /conf/*.conf /confs/\n` +
        `COPY --from=${lazyRef()} /lib/x /libx\n` +
        `COPY --from=${lazyRef()} /etc/alt-release /alt\n` +
        `COPY --from=${lazyRef()} /xlink/one.txt /one\n` +
        `COPY --from=${lazyRef()} /e*/os-rel* /globbed/\n`,
    );
    const ratio = b.lazyBytes / layerBytes(lazyLayers);
    console.log(`# lazy glob/dir COPY --from: ${b.lazyBytes} bytes (${(ratio * 100).toFixed(3)}%)`);
    assert.ok(ratio < 0.05, `transferred ${b.lazyBytes}`);
    assert.equal(
      await run(b.imageId, "ls /confs | tr '\\n' ' '; cat /confs/app.conf /confs/db.conf"),
      "app.conf base.conf db.conf app=1\ndb=1\n",
    );
    assert.equal(
      await run(b.imageId, "ls /libx | tr '\\n' ' '; cat /libx/one.txt; wc -c < /libx/blob.bin"),
      "blob.bin one.txt two.txt one\n262144\n",
    );
    assert.equal(await run(b.imageId, "cat /alt /one; ls /globbed"), `${OS_RELEASE}one\nos-release\n`);
  });

  test("whiteouts and opaque directories in upper layers hide lower files", async () => {
    const b = await build(`COPY --from=${lazyRef()} /gone /gone\nCOPY --from=${lazyRef()} /opq /opq\n`);
    assert.equal(await run(b.imageId, "ls -A /gone | tr '\\n' ' '; ls -A /opq"), "kept.txt new.txt\n");
    const dir = await space.scratch();
    await makeBusyboxTree(path.join(dir, "rootfs"));
    await fsp.writeFile(
      path.join(dir, "Dockerfile"),
      `FROM scratch\nCOPY rootfs/ /\nCOPY --from=${lazyRef()} /gone/hidden.txt /h\n`,
    );
    const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), dir], { home });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
    const r2 = await strata(["build", "-f", path.join(dir, "Dockerfile"), dir], { home });
    assert.match(r2.stderr, /not found/, "the same answer from the lazy cache");
  });

  test("an image without eStargz layers takes the full pull", async () => {
    const b = await build(`COPY --from=${plainRef()} /small/hello.txt /x\n`);
    assert.equal(await run(b.imageId, "cat /x"), HELLO);
    assert.ok(b.plainBytes >= layerBytes(plainLayers), `pulled ${b.plainBytes} of ${layerBytes(plainLayers)}`);
  });

  test("COPY --from=<image> / (the whole image) takes the full pull and still works", async () => {
    const b = await build(`COPY --from=${lazyRef()} / /whole/\n`);
    assert.equal(await run(b.imageId, "cat /whole/small/hello.txt; ls -A /whole/gone"), `${HELLO}kept.txt\n`);
  });

  test("the lazy tree keys a selection exactly as the full pull does (names, types, modes, owners, digests)", async () => {
    const store = await LocalStore.open(path.join(await space.scratch(), "store"));
    const ctx = nestedBuilds(store, { store });
    const cases: { patterns: string[]; parents?: boolean }[] = [
      { patterns: ["/small/hello.txt"] },
      { patterns: ["/conf/*.conf", "/lib/x"] },
      { patterns: ["/gone", "/opq", "/etc/alt-release", "/xlink/one.txt", "/e*/os-rel*"] },
      { patterns: ["/lib/./x/*.txt"], parents: true },
      { patterns: ["/*/*.conf"] },
    ];
    for (const c of cases) {
      const keyed = async (ref: string) => {
        const r = await resolveInput(
          {
            kind: "select",
            name: "src",
            root: { kind: "image", ref },
            patterns: c.patterns,
            ...(c.parents ? { parents: true } : {}),
          },
          undefined,
          ctx,
        );
        return { inputs: fileInputs([r]), matches: r.matches };
      };
      proxy.reset();
      const lazy = await keyed(lazyRef());
      const lazyBytes = proxy.blobBytes(
        LAZY_REPO,
        lazyLayers.map((l) => l.digest),
      );
      const full = await keyed(plainRef());
      assert.deepEqual(lazy, full, JSON.stringify(c));
      assert.ok(lazy.inputs.length > 0);
      assert.ok(lazyBytes < layerBytes(lazyLayers) * 0.05, `${JSON.stringify(c)}: ${lazyBytes} bytes`);
    }
  });

  test("a registry that ignores Range headers: the lazy path steps aside (the caller pulls) instead of failing", async () => {
    const noRanges = await startCuttingProxy(reg.host, {
      cutAfterBytes: Number.MAX_SAFE_INTEGER,
      cuts: 0,
      ignoreRange: true,
    });
    try {
      const store = await LocalStore.open(path.join(await space.scratch(), "store"));
      const root = await lazyImageRoot(`${noRanges.host}/${LAZY_REPO}:1`, store, { patterns: ["/small/hello.txt"] });
      assert.equal(root, undefined);
      assert.ok(
        noRanges.requests.some((r) => r.range !== undefined && r.status === 200),
        "a ranged read was answered with the whole blob",
      );
      const direct = await lazyImageRoot(lazyRef(), store, { patterns: ["/small/hello.txt"] });
      assert.ok(direct && direct.bytesRead > 0 && direct.bytesRead < direct.layerBytes * 0.05);
      assert.equal(await fsp.readFile(path.join(direct.dir, "small/hello.txt"), "utf8"), HELLO);
    } finally {
      await noRanges.close();
    }
  });
});
