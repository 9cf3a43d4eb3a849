// forceBuild and ignoreCache through the service behave as they do locally: a forced build gets new image ids and
// replaces the cache entries (later normal builds get the forced images); ignoreCache rebuilds without touching the
// index (later normal builds get the previous images back).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
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

/** Every index entry (path → content) of the store. */
async function indexSnapshot(home: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const root = path.join(home, "index");
  for (const sub of await fsp.readdir(root)) {
    for (const f of await fsp.readdir(path.join(root, sub)))
      out.set(`${sub}/${f}`, await fsp.readFile(path.join(root, sub, f), "utf8"));
  }
  return out;
}

test("forceBuild through the service: new image ids, entries replaced, later normal builds get the forced images", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const image = base.runCommands("echo a > /a").runCommands("echo b > /b");
  const opts = { server: svc.url, statCache: false as const, log: () => undefined };
  const first = await remoteBuildImage(image, opts);
  let before = sandboxRunCount();
  const forced = await remoteBuildImage(image, { ...opts, forceBuild: true });
  assert.equal(sandboxRunCount() - before, 2, "both RUNs again");
  assert.ok(forced.steps.every((s) => !s.cached));
  assert.notEqual(forced.imageId, first.imageId, "a forced build gets a new image id");
  assert.notEqual(forced.buildId, first.buildId, "a forced build is a build of its own");
  assert.equal(
    forced.steps[0]!.key,
    first.steps[0]!.key,
    "the first forced step keeps its key (later ones have new parents)",
  );
  // Two forced requests at once are two builds (never joined to the earlier one).
  const again = await remoteBuildImage(image, { ...opts, forceBuild: true });
  assert.notEqual(again.buildId, forced.buildId);
  before = sandboxRunCount();
  const normal = await remoteBuildImage(image, opts);
  assert.equal(sandboxRunCount() - before, 0);
  assert.ok(normal.steps.every((s) => s.cached));
  assert.equal(
    normal.imageId,
    again.imageId,
    "the normal build after a forced one gets the forced images (entries replaced)",
  );
});

test("per-step forceBuild through the service rebuilds that step and later ones only", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const opts = { server: svc.url, statCache: false as const, log: () => undefined };
  const plain = base.runCommands("echo a > /a").runCommands("echo b > /b").runCommands("echo c > /c");
  const first = await remoteBuildImage(plain, opts);
  const forcedImage = base
    .runCommands("echo a > /a")
    .runCommands("echo b > /b", { forceBuild: true })
    .runCommands("echo c > /c");
  const forced = await remoteBuildImage(forcedImage, opts);
  const k = forced.steps.findIndex((s) => s.description.includes("echo b"));
  assert.ok(forced.steps.slice(0, k).every((s) => s.cached));
  assert.ok(forced.steps.slice(k).every((s) => !s.cached));
  assert.equal(forced.steps[k]!.key, first.steps[k]!.key);
  assert.notEqual(forced.steps[k]!.imageId, first.steps[k]!.imageId);
  const second = await remoteBuildImage(forcedImage, opts);
  assert.ok(!second.steps[k]!.cached, "a step marked forceBuild rebuilds every time, as locally");
});

test("ignoreCache through the service: rebuilds everything, leaves the index untouched", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const image = base.runCommands("echo a > /a").runCommands("echo b > /b");
  const opts = { server: svc.url, statCache: false as const, log: () => undefined };
  const first = await remoteBuildImage(image, opts);
  const index = await indexSnapshot(svc.home);
  const before = sandboxRunCount();
  const ignored = await remoteBuildImage(image, { ...opts, ignoreCache: true });
  assert.equal(sandboxRunCount() - before, 2);
  assert.ok(ignored.steps.filter((s) => s.description !== "fromScratch").every((s) => !s.cached));
  assert.notEqual(ignored.imageId, first.imageId);
  assert.deepEqual(await indexSnapshot(svc.home), index, "the index is exactly as before");
  const normal = await remoteBuildImage(image, opts);
  assert.equal(normal.imageId, first.imageId, "the next normal build gets the previous images back");
  assert.ok(normal.steps.every((s) => s.cached));
});
