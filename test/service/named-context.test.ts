// Named directory contexts over the build service: the client selects from each context as from the main one (its own
// .dockerignore applied) and uploads only those files, so a remote build keys and builds as a local one does.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { Image } from "../../src/sdk/image.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { startService, type TestService } from "../support/service.js";
import { makeBusyboxTree, nonce, tempDir } from "../support/strata.js";

let svc: TestService;
const dirs: string[] = [];
before(async () => {
  svc = await startService();
});
after(async () => {
  assert.deepEqual(
    svc.serverLog.filter((l) => /internal error/.test(l)),
    [],
  );
  await svc.close();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

test("named directory contexts travel to the service: same keys and image as a local build, ignored files left out", async () => {
  const main = await tempDir("strata-service-named-");
  const tools = await tempDir("strata-service-named-tools-");
  const data = await tempDir("strata-service-named-data-");
  dirs.push(main, tools, data);
  await makeBusyboxTree(tools);
  await fsp.writeFile(path.join(data, "a.txt"), `a-${nonce()}\n`);
  await fsp.writeFile(path.join(data, "secret.key"), "never uploaded\n");
  await fsp.writeFile(path.join(data, ".dockerignore"), "*.key\n");
  await fsp.writeFile(
    path.join(main, "Dockerfile"),
    "FROM tools\nCOPY --from=data . /data/\nRUN --mount=from=data,target=/m cat /m/a.txt > /m.txt && ls /m > /ls.txt\n",
  );
  const image = Image.fromDockerfile(path.join(main, "Dockerfile"), { buildContexts: { tools, data } });
  const remote = await remoteBuildImage(image, { server: svc.url, statCache: false, log: () => undefined });
  const local = await image.build({ store: svc.view, log: () => undefined });
  assert.deepEqual(
    local.steps.map((s) => [s.description, s.key]),
    remote.steps.map((s) => [s.description, s.key]),
  );
  assert.ok(
    local.steps.every((s) => s.cached),
    "a local build on the service's store hits every step",
  );
  assert.equal(local.imageId, remote.imageId);
  const rec = (await svc.view.getImage(remote.imageId as never))!;
  const { strataTree } = await import("../dockerfile-e2e/support.js");
  const tree = await strataTree(svc.view, rec.id);
  assert.equal(tree.get("/m.txt")?.content, await fsp.readFile(path.join(data, "a.txt"), "utf8"));
  assert.equal(tree.get("/ls.txt")?.content, "a.txt\n");
  assert.equal(tree.has("/data/secret.key"), false);
  assert.ok(tree.has("/bin/busybox"));
});
