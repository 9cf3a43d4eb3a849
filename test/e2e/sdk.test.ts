// The SDK used from code: image.build() in-process, single flight for concurrent builds of the same steps.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { Image, LocalStore } from "../../src/index.js";
import { sandboxRunCount } from "../../src/sandbox/runc.js";
import { makeBusyboxTree, nonce, SHARED_HOME, tempDir, uniqueRootfsIgnore } from "../support/strata.js";

const cleanup: string[] = [];
after(async () => {
  for (const d of cleanup) await fsp.rm(d, { recursive: true, force: true });
});

test("concurrent image.build() calls sharing steps run each sandbox once (single flight)", async () => {
  const dir = await tempDir();
  cleanup.push(dir);
  await makeBusyboxTree(path.join(dir, "rootfs"));
  const store = await LocalStore.open(SHARED_HOME);
  const n = nonce();
  const base = Image.fromScratch()
    .addLocalDir(path.join(dir, "rootfs"), "/", { copy: true, ignore: [uniqueRootfsIgnore(n)] })
    .env({ N: n });
  const shared = base.runCommands("sleep 0.5; echo shared > /shared");
  const images = [shared.runCommands("echo a > /a"), shared.runCommands("echo b > /b"), shared, shared];
  const before = sandboxRunCount();
  const lines: string[] = [];
  const results = await Promise.all(images.map((img) => img.build({ store, log: (l) => lines.push(l) })));
  assert.equal(sandboxRunCount() - before, 3, "shared step once, then a and b");
  assert.equal(results[2]!.imageId, results[3]!.imageId);
  assert.equal(results[0]!.steps[3]!.imageId, results[1]!.steps[3]!.imageId);
  assert.ok(lines.some((l) => l.startsWith("=> Step 3: runCommands sleep 0.5; echo shared > /shared")));
  const again = await images[0]!.build({ store, log: () => undefined });
  assert.equal(again.imageId, results[0]!.imageId);
  assert.ok(again.steps.every((s) => s.cached));
});
