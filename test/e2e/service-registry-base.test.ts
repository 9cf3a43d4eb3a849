// A registry base through `strata serve`: `Image.fromRegistry("127.0.0.1:<port>/t/base:1").runCommands(…)` builds on
// the service with the keys and image ids a local build gets (issue 11: the wire refused the base's login field).
// Anonymous and token-auth loopback registries; the registry credentials travel as the build's secrets, never in a
// key, a log or the server's store. The operator's own Docker login (DOCKER_CONFIG in the service's environment) never
// logs a client into a registry (a base or `COPY --from=<image>`); a local build keeps using it.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { startRegistry } from "../support/registry.js";
import { spawnServe } from "../support/service.js";
import { buildJson, busyboxProject, nonce, strata, tempDir } from "../support/strata.js";

const exec = promisify(execFile);
const cleanup: string[] = [];
let publishHome: string;
let layout: string;
before(async () => {
  // A small busybox image built by Strata, exported as an OCI layout to publish into the registries below.
  publishHome = await tempDir("strata-reg-publish-");
  cleanup.push(publishHome);
  const base = await busyboxProject(`export default base.cmd(["sh"]);\n`);
  cleanup.push(base.dir);
  const built = await buildJson(base.def, [], { home: publishHome });
  layout = path.join(publishHome, "layout");
  const exported = await strata(["export", built.imageId, "--oci", layout], { home: publishHome });
  assert.equal(exported.code, 0, exported.stderr);
});
after(async () => {
  for (const d of cleanup) await fsp.rm(d, { recursive: true, force: true });
});

async function publish(ref: string, creds?: string): Promise<void> {
  await exec("skopeo", [
    "--insecure-policy",
    "copy",
    "--dest-tls-verify=false",
    ...(creds ? ["--dest-creds", creds] : []),
    `oci:${layout}:latest`,
    `docker://${ref}`,
  ]);
}

/** A definition file: `fromRegistry(ref, …)` with a RUN and an ENV on it. */
async function definition(ref: string, params: string): Promise<string> {
  const dir = await tempDir();
  cleanup.push(dir);
  const def = path.join(dir, "image.ts");
  await fsp.writeFile(
    def,
    `import { Image, Secret } from "strata";\nvoid Secret;\nexport default Image.fromRegistry(${JSON.stringify(ref)}${params}).runCommands("echo on-registry-base > /x").env({ N: ${JSON.stringify(nonce())} });\n`,
  );
  return def;
}

/**
 * Builds `def` on a fresh `strata serve` (its own store), then locally on that store (every step a cache hit with the
 * same keys and ids) and on a store of its own (the same keys, and the same base image).
 */
async function compare(def: string, clientEnv: Record<string, string>): Promise<void> {
  const serverHome = await tempDir("strata-reg-serve-");
  const localHome = await tempDir("strata-reg-local-");
  cleanup.push(serverHome, localHome);
  // The service's fetch policy refuses loopback unless the operator allows it: the registry and its token service.
  const serve = await spawnServe({ STRATA_HOME: serverHome, STRATA_ALLOW_FETCH: "127.0.0.1" });
  try {
    const remote = await buildJson(def, [], { home: serverHome, env: { ...clientEnv, STRATA_SERVER: serve.url } });
    assert.equal(remote.sandboxes, 0, "the client ran nothing itself");
    assert.equal(remote.steps.length, 3);
    assert.match(remote.stderr, /=> Step 0: fromRegistry 127\.0\.0\.1:\d+\/t\/base:1/);
    const onServerStore = await buildJson(def, [], { home: serverHome, env: clientEnv });
    assert.deepEqual(
      onServerStore.steps.map((s) => [s.key, s.imageId]),
      remote.steps.map((s) => [s.key, s.imageId]),
      "same keys and image ids as the service's build",
    );
    assert.ok(
      onServerStore.steps.every((s) => s.cached),
      "a local build on the service's store hits every step",
    );
    assert.equal(onServerStore.imageId, remote.imageId);
    // A store of its own: the base (keyed by its manifest digest) is the same image; the RUN on it has the same key
    // (its own image id differs: a built config carries its build time).
    const elsewhere = await buildJson(def, [], { home: localHome, env: clientEnv });
    assert.equal(elsewhere.steps[0]!.key, remote.steps[0]!.key);
    assert.equal(elsewhere.steps[0]!.imageId, remote.steps[0]!.imageId);
    assert.equal(elsewhere.steps[1]!.key, remote.steps[1]!.key);
    const run = await strata(["run", remote.imageId, "--", "cat", "/x"], { home: serverHome });
    assert.equal(run.stdout, "on-registry-base\n");
    for (const v of Object.values(clientEnv)) {
      if (!v) continue;
      assert.ok(!remote.stderr.includes(v), "no credential in the streamed log");
      const grep = await exec("grep", ["-rl", "--binary-files=text", v, serverHome, "--exclude-dir=layers"]).then(
        (x) => x.stdout,
        () => "",
      );
      assert.equal(grep, "", "no credential in the service's store");
    }
  } finally {
    serve.child.kill("SIGTERM");
    await serve.exited;
  }
}

test("fromRegistry on an anonymous loopback registry builds through strata serve as it builds locally", {
  timeout: 300_000,
}, async () => {
  const registry = await startRegistry();
  try {
    const ref = `${registry.host}/t/base:1`;
    await publish(ref);
    await compare(await definition(ref, ""), {});
  } finally {
    await registry.stop();
  }
});

test("fromRegistry with a login secret on a token-auth registry: the credentials travel as the build's secrets", {
  timeout: 300_000,
}, async () => {
  const password = `pw-${nonce()}`;
  const registry = await startRegistry({ auth: "token", users: { alice: password } });
  try {
    const ref = `${registry.host}/t/base:1`;
    await publish(ref, `alice:${password}`);
    const def = await definition(ref, `, { secret: Secret.fromLocalEnv(["REGISTRY_USERNAME", "REGISTRY_PASSWORD"]) }`);
    await compare(def, { REGISTRY_USERNAME: "alice", REGISTRY_PASSWORD: password });
  } finally {
    await registry.stop();
  }
});

test("the service's operator login (DOCKER_CONFIG) never serves a client's registry; a local build still uses it", {
  timeout: 300_000,
}, async () => {
  const password = `pw-${nonce()}`;
  const registry = await startRegistry({ auth: "token", users: { alice: password } });
  const serverHome = await tempDir("strata-reg-operator-");
  const localHome = await tempDir("strata-reg-operator-local-");
  const dockerConfig = await tempDir("strata-reg-docker-config-");
  cleanup.push(serverHome, localHome, dockerConfig);
  try {
    const ref = `${registry.host}/t/base:1`;
    await publish(ref, `alice:${password}`);
    // The operator logged in to that registry: Docker's config.json in the service's environment.
    const auth = Buffer.from(`alice:${password}`).toString("base64");
    await fsp.writeFile(
      path.join(dockerConfig, "config.json"),
      JSON.stringify({ auths: { [registry.host]: { auth } } }),
    );
    const def = await definition(ref, "");
    const ctx = await tempDir("strata-reg-operator-ctx-");
    cleanup.push(ctx);
    await fsp.writeFile(path.join(ctx, "Dockerfile"), `FROM scratch\nCOPY --from=${ref} /bin/busybox /bb\n`);
    const dockerfileBuild = ["build", "-f", path.join(ctx, "Dockerfile"), ctx, "--json"];

    const serve = await spawnServe({
      STRATA_HOME: serverHome,
      STRATA_ALLOW_FETCH: "127.0.0.1",
      DOCKER_CONFIG: dockerConfig,
    });
    try {
      const env = { STRATA_SERVER: serve.url, DOCKER_CONFIG: "/nonexistent" };
      for (const args of [["build", def, "--json"], dockerfileBuild]) {
        const before = registry.tokenServer!.requests.length;
        const r = await strata(args, { home: localHome, env });
        assert.notEqual(r.code, 0, `an anonymous client built a private image with the operator's login: ${r.stdout}`);
        assert.match(r.stderr, /401 Unauthorized|refused an anonymous token/);
        assert.match(r.stderr, /never with its operator's Docker login/);
        const asked = registry.tokenServer!.requests.slice(before);
        assert.ok(asked.length > 0, "the service asked the token server");
        assert.ok(
          asked.every((q) => q.user === undefined),
          `every token request was anonymous: ${JSON.stringify(asked)}`,
        );
      }
    } finally {
      serve.child.kill("SIGTERM");
      await serve.exited;
    }

    // A local build is the user's own: Docker's config.json logs in as today.
    const before = registry.tokenServer!.requests.length;
    const local = await buildJson(def, [], { home: localHome, env: { DOCKER_CONFIG: dockerConfig } });
    assert.match(local.imageId, /^sha256:/);
    const r = await strata(dockerfileBuild, { home: localHome, env: { DOCKER_CONFIG: dockerConfig } });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(registry.tokenServer!.requests.slice(before).some((q) => q.user === "alice"));
  } finally {
    await registry.stop();
  }
});
