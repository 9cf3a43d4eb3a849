// Pulls through Debian's docker-registry 2.8.2 in four configurations started here: plain, htpasswd (bcrypt), token
// auth with a local token server (RS256 JWTs), and blob redirects to a second origin that rejects Authorization.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { clearTokenCache } from "../../src/registry/auth.js";
import { RegistryAuthError } from "../../src/registry/errors.js";
import { pullImage, resolveImage, type PullOptions } from "../../src/registry/pull.js";
import { pushImage } from "../../src/registry/push.js";
import { LocalStore } from "../../src/store/local.js";
import { makeStoreImage } from "../support/registry-image.js";
import {
  createTestLayout,
  startRegistry,
  type StartRegistryOptions,
  type TestLayout,
  type TestRegistry,
} from "../support/registry.js";

const tempDirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}
async function newStore(): Promise<LocalStore> {
  return LocalStore.open(await tempDir("strata-cfg-store-"));
}

const BIG = randomBytes(200_000).toString("base64");
const LAYERS: Record<string, string>[] = [
  { "etc/one.txt": "one\n" },
  { "usr/share/two/readme.txt": "two\n", "usr/share/two/big.txt": BIG },
  { "etc/three.txt": "three\n" },
];

async function checkPulled(store: LocalStore, ref: string, opts: PullOptions): Promise<void> {
  const pulled = await pullImage(ref, store, opts);
  assert.equal(pulled.layers.length, 3);
  const dirs = await Promise.all(pulled.layers.map((l) => store.layerDir(l)));
  assert.equal(await fsp.readFile(path.join(dirs[0]!, "etc/one.txt"), "utf8"), "one\n");
  assert.equal(await fsp.readFile(path.join(dirs[1]!, "usr/share/two/readme.txt"), "utf8"), "two\n");
  assert.equal(await fsp.readFile(path.join(dirs[1]!, "usr/share/two/big.txt"), "utf8"), BIG);
  assert.equal(await fsp.readFile(path.join(dirs[2]!, "etc/three.txt"), "utf8"), "three\n");
  for (const l of pulled.layers) assert.ok(await store.hasBlob(l.digest));
}

function secretFor(reg: TestRegistry, password?: string): Record<string, string> {
  const [user, pw] = Object.entries(reg.users)[0]!;
  return { REGISTRY_USERNAME: user, REGISTRY_PASSWORD: password ?? pw };
}

let layout: TestLayout;
before(async () => {
  layout = await createTestLayout();
  await layout.build("multi", { layers: LAYERS });
});
after(async () => {
  await layout?.cleanup();
  for (const d of tempDirs) await fsp.rm(d, { recursive: true, force: true });
});

const CONFIGS: { name: string; opts: StartRegistryOptions }[] = [
  { name: "plain", opts: {} },
  { name: "htpasswd (bcrypt)", opts: { auth: "htpasswd" } },
  {
    name: "token auth",
    opts: { auth: "token", readOnlyUsers: ["reader"], users: { alice: "alice-s3cret", reader: "reader-pw" } },
  },
  {
    name: "blob redirects to an origin that rejects Authorization (with token auth)",
    opts: { auth: "token", redirectTo: "127.0.0.2" },
  },
];

for (const { name, opts } of CONFIGS) {
  describe(`docker-registry 2.8.2: ${name}`, () => {
    let reg: TestRegistry;
    const ref = (): string => `${reg.host}/team/multi:1`;
    before(async () => {
      reg = await startRegistry(opts);
      await layout.push("multi", ref(), reg.creds ? { creds: reg.creds } : {});
    });
    after(async () => {
      await reg?.stop();
    });

    test("pulls a multi-layer image and every layer unpacks", async () => {
      const secret = reg.auth ? secretFor(reg) : undefined;
      await checkPulled(await newStore(), ref(), { ...(secret ? { secret } : {}), dockerConfig: false });
      if (reg.blobOrigin) {
        const gets = reg.blobOrigin.requests.filter((r) => r.method === "GET");
        assert.ok(
          gets.length >= 4,
          `config + 3 layers came from the second origin: ${JSON.stringify(reg.blobOrigin.requests)}`,
        );
        assert.ok(
          reg.blobOrigin.requests.every((r) => !r.hadAuthorization && r.status === 200),
          JSON.stringify(reg.blobOrigin.requests),
        );
      }
    });

    test("pushes an image from a store (OCI and Docker formats) and pulls it back", async () => {
      const secret = reg.auth ? secretFor(reg) : undefined;
      const auth = { ...(secret ? { secret } : {}), dockerConfig: false as const };
      const store = await newStore();
      const image = await makeStoreImage(store, LAYERS, { label: name });
      for (const format of ["oci", "docker"] as const) {
        const target = `${reg.host}/team/pushed-${format}:1`;
        const first = await pushImage(store, image, target, { ...auth, format });
        // Pushing again finds every blob (a redirect to storage counts as found).
        const again = await pushImage(store, image, target, { ...auth, format });
        assert.ok(
          again.blobs.every((b) => b.how === "existing"),
          JSON.stringify(again.blobs),
        );
        assert.equal(again.manifestDigest, first.manifestDigest);
        const back = await newStore();
        const pulled = await pullImage(target, back, auth);
        assert.equal(pulled.manifestDigest, first.manifestDigest);
        assert.equal(pulled.configDigest, image.configDigest);
        assert.equal(
          await fsp.readFile(path.join(await back.layerDir(pulled.layers[1]!), "usr/share/two/big.txt"), "utf8"),
          BIG,
        );
      }
      if (reg.blobOrigin)
        assert.ok(
          reg.blobOrigin.requests.every((r) => !r.hadAuthorization),
          JSON.stringify(reg.blobOrigin.requests),
        );
    });

    if (opts.auth) {
      test("credentials from Docker's config.json (auths[host].auth) work", async () => {
        const dir = await tempDir("strata-dockercfg-");
        const [user, pw] = Object.entries(reg.users)[0]!;
        await fsp.writeFile(
          path.join(dir, "config.json"),
          JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${user}:${pw}`).toString("base64") } } }),
        );
        clearTokenCache();
        await checkPulled(await newStore(), ref(), { dockerConfig: { env: { DOCKER_CONFIG: dir } } });
      });

      test("no credentials: a 401 error naming the registry and what to set", async () => {
        clearTokenCache();
        await assert.rejects(resolveImage(ref(), { dockerConfig: false }), (e: unknown) => {
          assert.ok(e instanceof RegistryAuthError, String(e));
          assert.equal(e.status, 401);
          assert.equal(e.fault, "user");
          assert.ok(e.message.includes(reg.host), e.message);
          assert.match(e.message, /REGISTRY_USERNAME and REGISTRY_PASSWORD/);
          assert.match(e.message, /docker login/);
          return true;
        });
      });

      test("wrong password: a 401 error naming the registry, the credentials' source and what to check — never the password", async () => {
        clearTokenCache();
        const wrong = "not-the-password-Zq9";
        await assert.rejects(
          pullImage(ref(), await newStore(), { secret: secretFor(reg, wrong), dockerConfig: false }),
          (e: unknown) => {
            assert.ok(e instanceof RegistryAuthError, String(e));
            assert.equal(e.status, 401);
            assert.ok(e.message.includes(reg.host), e.message);
            assert.match(
              e.message,
              /rejected the username and password from the secret's REGISTRY_USERNAME\/REGISTRY_PASSWORD/,
            );
            assert.ok(!e.message.includes(wrong), "password not in the message");
            assert.ok(!JSON.stringify(e).includes(wrong), "password not in the error's fields");
            assert.ok(
              !String(e.stack).includes(Buffer.from(`alice:${wrong}`).toString("base64")),
              "no Authorization value in the stack",
            );
            return true;
          },
        );
      });
    }

    if (opts.auth === "token") {
      test("tokens are cached per realm+service+scope and honour issued_at/expires_in", async () => {
        const ts = reg.tokenServer!;
        clearTokenCache();
        const secret = secretFor(reg);
        const before = ts.requests.length;
        await resolveImage(ref(), { secret, dockerConfig: false });
        await resolveImage(ref(), { secret, dockerConfig: false });
        await checkPulled(await newStore(), ref(), { secret, dockerConfig: false });
        const fresh = ts.requests.slice(before);
        assert.equal(fresh.length, 1, `one token for repository:team/multi:pull, reused: ${JSON.stringify(fresh)}`);
        assert.deepEqual(fresh[0]!.scopes, ["repository:team/multi:pull"]);
        assert.equal(fresh[0]!.user, "alice");
        assert.equal(fresh[0]!.service, ts.service);

        // A token issued an hour ago with expires_in 300 is already expired: every new operation fetches one.
        clearTokenCache();
        ts.issuedAtOffset = -3600;
        try {
          const mark = ts.requests.length;
          await resolveImage(ref(), { secret, dockerConfig: false });
          await resolveImage(ref(), { secret, dockerConfig: false });
          assert.equal(ts.requests.length - mark, 2);
        } finally {
          ts.issuedAtOffset = 0;
        }
      });
    }
  });
}
