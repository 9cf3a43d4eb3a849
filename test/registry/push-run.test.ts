// A pushed image runs: a busybox image made in a store (no runc needed to build it) is pushed as OCI and as Docker
// v2 schema 2, then podman pulls it from the registry and runs it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { pushImage } from "../../src/registry/push.js";
import { LocalStore } from "../../src/store/local.js";
import { makeStoreImage } from "../support/registry-image.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { makeBusyboxTree } from "../support/strata.js";

const exec = promisify(execFile);
let reg: TestRegistry;
let work: string;
before(async () => {
  reg = await startRegistry({ auth: "htpasswd" });
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-push-run-"));
});
after(async () => {
  await reg?.stop();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

test("an image pushed as OCI and as Docker v2 pulls into podman and runs", async () => {
  const store = await LocalStore.open(path.join(work, "store"));
  const image = await makeStoreImage(store, [{}, { "hello.txt": "hello from a pushed image\n" }], {
    cmd: ["/bin/sh", "-c", "cat /hello.txt"],
    populate: async (i, dir) => {
      if (i === 0) await makeBusyboxTree(dir);
    },
  });
  const secret = { REGISTRY_USERNAME: "alice", REGISTRY_PASSWORD: reg.users["alice"]! };
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
  // podman's default ulimits exceed this machine's hard limits: run with none (inherit ours).
  const conf = path.join(work, "containers.conf");
  await fsp.writeFile(conf, "[containers]\ndefault_ulimits = []\n");
  const env = { ...process.env, CONTAINERS_CONF: conf };
  try {
    for (const format of ["oci", "docker"] as const) {
      const ref = `${reg.host}/team/runnable-${format}:1`;
      const pushed = await pushImage(store, image, ref, { format, secret, dockerConfig: false });
      await exec("podman", [...podman, "pull", "--quiet", "--tls-verify=false", "--creds", reg.creds!, ref], { env });
      const out = await exec("podman", [...podman, "run", "--rm", "--network", "none", ref], { env });
      assert.equal(out.stdout, "hello from a pushed image\n");
      // Both pushes share a config, so podman keeps one image with both digests.
      const repoDigests = (
        await exec("podman", [...podman, "image", "inspect", "--format", "{{json .RepoDigests}}", ref], { env })
      ).stdout;
      assert.ok(
        (JSON.parse(repoDigests) as string[]).includes(`${reg.host}/team/runnable-${format}@${pushed.manifestDigest}`),
        repoDigests,
      );
    }
  } finally {
    await exec("podman", [...podman, "rmi", "-a", "-f"], { env }).catch(() => undefined);
  }
});
