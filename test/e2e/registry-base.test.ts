// A base image from a plain anonymous registry on loopback (Debian's docker-registry): pull, build on it, run.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { buildJson, busyboxProject, SHARED_HOME, strata, tempDir } from "../support/strata.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";

const exec = promisify(execFile);
let registry: TestRegistry;
const cleanup: string[] = [];
before(async () => {
  registry = await startRegistry();
});
after(async () => {
  await registry.stop();
  for (const d of cleanup) await fsp.rm(d, { recursive: true, force: true });
});

test("fromRegistry pulls a base from a loopback registry, builds on it, and keys it by manifest digest", async () => {
  // Publish a busybox image built by Strata itself: export → skopeo copy into the registry.
  const base = await busyboxProject(`export default base.cmd(["sh"]);\n`);
  cleanup.push(base.dir);
  const built = await buildJson(base.def);
  const out = await tempDir();
  cleanup.push(out);
  assert.equal((await strata(["export", built.imageId, "--oci", path.join(out, "layout")])).code, 0);
  const ref = `${registry.host}/team/busybox:1`;
  await exec("skopeo", [
    "--insecure-policy",
    "copy",
    "--dest-tls-verify=false",
    `oci:${path.join(out, "layout")}:latest`,
    `docker://${ref}`,
  ]);

  const dir = await tempDir();
  cleanup.push(dir);
  const def = path.join(dir, "image.ts");
  await fsp.writeFile(
    def,
    `import { Image } from "strata";\nexport default Image.fromRegistry(${JSON.stringify(ref)}).runCommands("echo on-registry-base > /x");\n`,
  );
  const first = await buildJson(def);
  assert.equal(first.steps[0]!.cached, false);
  const run = await strata(["run", first.imageId, "--", "cat", "/x"]);
  assert.equal(run.stdout, "on-registry-base\n");
  const second = await buildJson(def);
  assert.equal(second.imageId, first.imageId);
  assert.equal(second.sandboxes, 0);
  // The same digest under another tag is a hit; a moved tag is a new base.
  const other = `${registry.host}/team/busybox:other`;
  await exec("skopeo", [
    "--insecure-policy",
    "copy",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
    `docker://${ref}`,
    `docker://${other}`,
  ]);
  await fsp.writeFile(def, (await fsp.readFile(def, "utf8")).replace(ref, other));
  const retagged = await buildJson(def);
  assert.equal(retagged.steps[0]!.key, first.steps[0]!.key);
  const pulled = await strata(["pull", ref]);
  assert.equal(pulled.code, 0, pulled.stderr);

  // setupDockerfileCommands: Dockerfile lines on the base, each its own cached step, before the chain's own steps.
  await fsp.writeFile(
    def,
    `import { Image } from "strata";\nexport default Image.fromRegistry(${JSON.stringify(ref)}, { setupDockerfileCommands: ["ENV SETUP=yes", "RUN echo $SETUP > /setup"] }).runCommands("cat /setup > /copied");\n`,
  );
  const setup = await buildJson(def);
  assert.equal(setup.steps.length, 4);
  assert.equal((await strata(["run", setup.imageId, "--", "cat", "/copied"])).stdout, "yes\n");
});

test("fromRegistry with a secret logs in to a token-auth registry; credentials stay out of keys, store and logs; push round-trips", async () => {
  const authRegistry = await startRegistry({ auth: "token", users: { alice: "alice-pw-9f8e7d" } });
  try {
    const base = await busyboxProject(`export default base.cmd(["sh"]);\n`);
    cleanup.push(base.dir);
    const built = await buildJson(base.def);
    const ref = `${authRegistry.host}/private/busybox:1`;
    const env = { REGISTRY_USERNAME: "alice", REGISTRY_PASSWORD: "alice-pw-9f8e7d" };
    const push = await strata(["push", built.imageId, ref], { env });
    assert.equal(push.code, 0, push.stderr);
    const dir = await tempDir();
    cleanup.push(dir);
    const def = path.join(dir, "image.ts");
    await fsp.writeFile(
      def,
      `import { Image, Secret } from "strata";\nexport default Image.fromRegistry(${JSON.stringify(ref)}, { secret: Secret.fromLocalEnv(["REGISTRY_USERNAME", "REGISTRY_PASSWORD"]) }).runCommands("echo private > /p");\n`,
    );
    const denied = await strata(["build", def], {
      env: { REGISTRY_USERNAME: "alice", REGISTRY_PASSWORD: "wrong-password" },
    });
    assert.equal(denied.code, 1);
    assert.ok(!denied.stderr.includes("wrong-password"));
    assert.match(denied.stderr, /401|credentials|unauthorized/i);
    const ok = await buildJson(def, [], { env });
    const run = await strata(["run", ok.imageId, "--", "cat", "/p"]);
    assert.equal(run.stdout, "private\n");
    assert.ok(!ok.stderr.includes("alice-pw-9f8e7d"));
    const inspect = await strata(["inspect", ok.imageId]);
    assert.ok(!inspect.stdout.includes("alice-pw-9f8e7d"));
    const grep = await exec("grep", [
      "-rl",
      "--binary-files=text",
      "alice-pw-9f8e7d",
      SHARED_HOME,
      "--exclude-dir=layers",
      "--exclude-dir=defs",
    ]).then(
      (x) => x.stdout,
      () => "",
    );
    assert.equal(grep, "");
  } finally {
    await authRegistry.stop();
  }
});
