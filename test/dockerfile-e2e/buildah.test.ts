// Differential check against buildah: every case marked `"buildah": true` is also built with `buildah bud --layers`
// (private --root/--runroot, runc) and the final filesystem trees (paths, types, modes, owners, link targets,
// contents) and the config fields both builders set are compared. Differences must be zero or documented in the
// case (`buildahAccept`, `buildahIgnorePaths`, `buildahIgnoreConfig`, with `buildahNote` saying why).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { LocalStore } from "../../src/index.js";
import {
  buildahCase,
  buildCase,
  diffConfigs,
  diffTrees,
  haveBuildah,
  loadCases,
  prepare,
  privateBuildah,
  privateStore,
  strataConfig,
  strataTree,
  unexpected,
  type Buildah,
} from "./support.js";

const cases = loadCases().filter((c) => c.expect.buildah);
let store: LocalStore;
let cleanupStore: () => Promise<void>;
let buildah: Buildah | undefined;

before(async () => {
  const s = await privateStore();
  store = s.store;
  cleanupStore = s.cleanup;
  if (haveBuildah()) buildah = await privateBuildah();
});
after(async () => {
  await cleanupStore?.();
  await buildah?.cleanup();
});

test("at least 15 cases are compared with buildah", () => {
  assert.ok(cases.length >= 15, `only ${cases.length} cases`);
});

describe("Strata vs buildah bud", { concurrency: 3 }, () => {
  for (const c of cases) {
    test(c.name, { skip: !haveBuildah() && "buildah or runc is not installed" }, async () => {
      const p = await prepare(c);
      // Start the builds in a new second: everything prepare made is older than `since`, all the builds make is not.
      await new Promise((r) => setTimeout(r, 1010 - (Date.now() % 1000)));
      const since = Math.floor(Date.now() / 1000);
      try {
        const r = await buildCase(p, c, store);
        const ours = await strataTree(store, r.imageId);
        const ourConfig = await strataConfig(store, r.imageId);
        const theirs = await buildahCase(buildah!, p, c);
        const diffs = [
          ...diffTrees(ours, theirs.tree, c.expect.buildahIgnorePaths, since),
          ...diffConfigs(ourConfig, theirs.config, c.expect.buildahIgnoreConfig),
        ];
        const bad = unexpected(diffs, c.expect.buildahAccept);
        assert.deepEqual(bad, [], `${c.name}: undocumented differences from buildah:\n${bad.join("\n")}`);
        if (diffs.length) assert.ok(c.expect.buildahNote, `${c.name}: documented differences need a buildahNote`);
      } finally {
        await p.close();
      }
    });
  }
});
