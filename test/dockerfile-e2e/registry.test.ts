// Dockerfiles and registry images (a loopback docker-registry): FROM <registry image> with the base's ENV visible to
// expansion and its ONBUILD triggers run in the child build (via resolveBaseImages), and COPY --from=<image ref>.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { resolveBaseImages } from "../../src/dockerfile/base-images.js";
import { Image, type LocalStore } from "../../src/index.js";
import { pushImage } from "../../src/registry/push.js";
import { makeBusyboxTree, nonce } from "../support/strata.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { privateStore, strataConfig, strataTree } from "./support.js";

let registry: TestRegistry;
let store: LocalStore;
let cleanupStore: () => Promise<void>;
const dirs: string[] = [];
before(async () => {
  registry = await startRegistry();
  const s = await privateStore();
  store = s.store;
  cleanupStore = s.cleanup;
});
after(async () => {
  await registry?.stop();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  await cleanupStore?.();
});

async function project(
  dockerfile: string,
  files: Record<string, string> = {},
  busybox = true,
): Promise<{ dockerfile: string; context: string }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-reg-"));
  dirs.push(dir);
  const context = path.join(dir, "context");
  await fsp.mkdir(context, { recursive: true });
  if (busybox) await makeBusyboxTree(path.join(context, "rootfs"));
  for (const [p, c] of Object.entries(files)) await fsp.writeFile(path.join(context, p), c);
  await fsp.writeFile(path.join(dir, "Dockerfile"), dockerfile);
  return { dockerfile: path.join(dir, "Dockerfile"), context };
}

test("FROM a registry image: its ENV is expanded, its ONBUILD triggers run (then are consumed); COPY --from=<image ref> pulls", async () => {
  const base = await project(
    "FROM scratch\nCOPY rootfs/ /\n" +
      // (The front end's planner does not give a scratch stage BuildKit's default PATH, so it is spelled out here.)
      `ENV PATH=/opt/base/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin BASE_NONCE=${nonce()}\n` +
      "RUN mkdir -p /opt/base/bin && printf '#!/bin/sh\\necho from-base-tool\\n' > /opt/base/bin/basetool && chmod 755 /opt/base/bin/basetool\n" +
      "WORKDIR /srv\n" +
      "ONBUILD COPY trigger.txt /srv/trigger.txt\n" +
      "ONBUILD RUN echo onbuild-ran > /srv/onbuild.txt\n",
  );
  const built = await Image.fromDockerfile(base.dockerfile, { contextDir: base.context }).build({
    store,
    log: () => undefined,
  });
  const ref = `${registry.host}/dockerfile/base:1`;
  await pushImage(store, (await store.getImage(built.imageId))!, ref, { dockerConfig: false });

  const child = await project(
    `FROM ${ref} AS app\nENV PATH=/child/bin:$PATH\nRUN basetool > tool.txt\n` +
      `FROM scratch AS copier\nCOPY --from=${ref} /opt/base/bin/basetool /copied-tool\n`,
    { "trigger.txt": "from the child's context\n" },
    false,
  );
  assert.deepEqual(
    await resolveBaseImages(child.dockerfile, { store }),
    {},
    "the default target (copier) starts FROM scratch",
  );
  const baseImages = await resolveBaseImages(child.dockerfile, { store, target: "app" });
  assert.deepEqual(Object.keys(baseImages), [ref]);
  assert.deepEqual(baseImages[ref]!.onBuild, [
    "COPY trigger.txt /srv/trigger.txt",
    "RUN echo onbuild-ran > /srv/onbuild.txt",
  ]);

  const app = await Image.fromDockerfile(child.dockerfile, {
    contextDir: child.context,
    target: "app",
    baseImages,
  }).build({ store, log: () => undefined });
  const tree = await strataTree(store, app.imageId);
  assert.equal(tree.get("/srv/trigger.txt")?.content, "from the child's context\n");
  assert.equal(tree.get("/srv/onbuild.txt")?.content, "onbuild-ran\n");
  assert.equal(tree.get("/srv/tool.txt")?.content, "from-base-tool\n");
  const cfg = (await strataConfig(store, app.imageId)).config as {
    Env: string[];
    WorkingDir: string;
    OnBuild?: unknown;
  };
  assert.ok(
    cfg.Env.includes("PATH=/child/bin:/opt/base/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    JSON.stringify(cfg.Env),
  );
  assert.equal(cfg.WorkingDir, "/srv");
  assert.ok(
    cfg.OnBuild == null || (Array.isArray(cfg.OnBuild) && cfg.OnBuild.length === 0),
    "the triggers are consumed by the child build",
  );

  const copier = await Image.fromDockerfile(child.dockerfile, {
    contextDir: child.context,
    target: "copier",
    baseImages,
  }).build({ store, log: () => undefined });
  const t2 = await strataTree(store, copier.imageId);
  assert.equal(t2.get("/copied-tool")?.mode, "0755");
  assert.ok(t2.get("/copied-tool")?.content?.includes("from-base-tool"));
  const again = await Image.fromDockerfile(child.dockerfile, {
    contextDir: child.context,
    target: "copier",
    baseImages,
  }).build({ store, log: () => undefined });
  assert.ok(again.steps.every((s) => s.cached));
});
