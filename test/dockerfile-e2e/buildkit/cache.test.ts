// Ported from BuildKit frontend/dockerfile/dockerfile_cache_test.go (see ../README.md for the table). BuildKit's cache
// exporters and importers (local, registry, inline) have no counterpart — Strata's cache is its store — and
// testNoCache needs --no-cache-filter (branch dfitems): not here.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_cache_test.go", { concurrency: 4 }, () => {
  // BuildKit exports the image under two names and compares their targets; a second build of the same definition is
  // the same image here too.
  test("testReproducibleIDs", async () => {
    const opts = {
      dockerfile: "\nFROM busybox\nENV foo=bar\nCOPY foo /\nRUN echo bar > bar\n",
      files: { foo: { content: "foo-contents", mode: 0o600 } },
    };
    const one = await bk.build(opts);
    const two = await bk.build(opts);
    assert.equal(two.built.imageId, one.built.imageId);
  });

  // #2008: renaming the file a wildcard COPY matched invalidates the cache. `alpine` → busybox.
  test("testWildcardRenameCache", async () => {
    const dockerfile = "\nFROM busybox\nCOPY file* /files/\nRUN ls /files/file1\n";
    await bk.build({ dockerfile, files: { file1: { content: "foo", mode: 0o600 } } });
    // the context again with its file renamed (BuildKit renames it in place between the two solves)
    const err = await bk.buildFails({ dockerfile, files: { file2: { content: "foo", mode: 0o600 } } });
    assert.match(err.message, /ls \/files\/file1/);
  });
});
