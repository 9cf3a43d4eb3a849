// Table-driven Dockerfile behaviour: every case in fixtures/dockerfiles/<case>/ (Dockerfile, context/, expected.json)
// is built with Image.fromDockerfile from a scratch + busybox base, and its final filesystem (an overlay of the image's
// layers) and config are checked against expected.json.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { LocalStore } from "../../src/index.js";
import { buildCase, checkExpect, loadCases, prepare, privateStore, strataConfig, strataTree } from "./support.js";

const cases = loadCases();
let store: LocalStore;
let cleanup: () => Promise<void>;

before(async () => {
  const s = await privateStore();
  store = s.store;
  cleanup = s.cleanup;
});
after(async () => cleanup?.());

test("there are at least 40 behavioural cases", () => {
  assert.ok(cases.length >= 40, `only ${cases.length} cases`);
});

describe("Dockerfile cases", { concurrency: 4 }, () => {
  for (const c of cases) {
    test(`${c.name}: ${c.expect.description ?? ""}`, async () => {
      const p = await prepare(c);
      const log: string[] = [];
      try {
        const r = await buildCase(p, c, store, log).catch((e: Error) => {
          throw new Error(`${e.message}\n${log.join("\n")}`);
        });
        const tree = await strataTree(store, r.imageId);
        const config = await strataConfig(store, r.imageId);
        const errs = checkExpect(c.expect, tree, config);
        assert.deepEqual(errs, [], `case ${c.name}:\n${errs.join("\n")}`);
        // Every Dockerfile instruction is its own step (FROM included).
        assert.ok(r.steps.length >= 2);
        // Metadata-only steps add no layer.
        for (const s of r.steps)
          if (
            /:\d+ (ENV|LABEL|ARG|EXPOSE|CMD|ENTRYPOINT|USER|STOPSIGNAL|HEALTHCHECK|ONBUILD|MAINTAINER|VOLUME|SHELL)\b/i.test(
              s.description,
            )
          )
            assert.equal(s.layer, undefined, s.description);
      } finally {
        await p.close();
      }
    });
  }
});
