// Get-or-create through the build service: identical concurrent requests join one build; different images that
// share steps run each shared step once (the engine's single flight, across builds of one server).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import { after, before, test } from "node:test";
import { sandboxRunCount } from "../../src/sandbox/runc.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, startService, type TestService } from "../support/service.js";

let svc: TestService;
const dirs: string[] = [];
before(async () => {
  svc = await startService();
});
after(async () => {
  await svc.close();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

test("20 concurrent identical build requests join one build: each layer's sandbox runs exactly once", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const image = base.runCommands("sleep 0.3; echo a > /a").runCommands("echo b > /b").cmd(["cat", "/a"]);
  const before = sandboxRunCount();
  const logs: string[][] = Array.from({ length: 20 }, () => []);
  const results = await Promise.all(
    logs.map((lines) => remoteBuildImage(image, { server: svc.url, statCache: false, log: (l) => lines.push(l) })),
  );
  assert.equal(sandboxRunCount() - before, 2, "two RUN steps, each run once for all 20 requests");
  assert.equal(new Set(results.map((r) => r.buildId)).size, 1, "every request got the same build id");
  assert.equal(new Set(results.map((r) => r.imageId)).size, 1);
  assert.equal(results.filter((r) => !r.joined).length, 1, "one request created the build, 19 joined it");
  for (const lines of logs) {
    assert.ok(
      lines.some((l) => l.startsWith("=> Step 3: runCommands sleep 0.3; echo a > /a")),
      "every client streamed the build's log",
    );
    assert.ok(lines.some((l) => /^=> Image sha256:/.test(l)));
  }
  // Asking again later: the finished build is reused (all cached), nothing runs.
  const again = await remoteBuildImage(image, { server: svc.url, statCache: false, log: () => undefined });
  assert.equal(again.imageId, results[0]!.imageId);
  assert.equal(again.buildId, results[0]!.buildId);
  assert.ok(again.steps.every((s) => s.cached));
  assert.equal(sandboxRunCount() - before, 2);
});

test("20 requests for 20 different images sharing a base step run the base's RUN once", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const shared = base.runCommands("sleep 0.5; echo shared > /shared");
  const images = Array.from({ length: 20 }, (_, i) => shared.runCommands(`echo ${i} > /n`));
  const before = sandboxRunCount();
  const results = await Promise.all(
    images.map((img) => remoteBuildImage(img, { server: svc.url, statCache: false, log: () => undefined })),
  );
  assert.equal(sandboxRunCount() - before, 21, "the shared RUN once, then one RUN per image");
  assert.equal(new Set(results.map((r) => r.buildId)).size, 20, "20 definitions, 20 builds");
  assert.equal(new Set(results.map((r) => r.imageId)).size, 20);
  const sharedIds = new Set(
    results.map((r) => r.steps.find((s) => s.description.startsWith("runCommands sleep 0.5"))!.imageId),
  );
  assert.equal(sharedIds.size, 1, "every image is built on the same base layer");
  // The built images are in the server's store with their layers.
  const rec = await svc.store.getImage(results[7]!.imageId);
  assert.ok(rec && rec.layers.length === 3);
});
