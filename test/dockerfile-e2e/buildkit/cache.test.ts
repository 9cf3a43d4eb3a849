// Ported from BuildKit frontend/dockerfile/dockerfile_cache_test.go (see ../README.md for the table). BuildKit's cache
// exporters and importers (local, registry, inline) have no counterpart — Strata's cache is its store.
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

  // BuildKit's `no-cache` attribute: empty is the whole build (`forceBuild`, `strata build --force-build`), a stage
  // name is `--no-cache-filter` (`noCacheFilter`), which rebuilds only that stage.
  test("testNoCache", async () => {
    const dockerfile = `
FROM busybox AS s0
RUN cat /dev/urandom | head -c 100 | sha256sum | tee unique
FROM busybox AS s1
RUN cat /dev/urandom | head -c 100 | sha256sum | tee unique2
FROM scratch
COPY --from=s0 unique /
COPY --from=s1 unique2 /
`;
    const one = await bk.build({ dockerfile });
    const two = await bk.build({ dockerfile, forceBuild: true });
    const three = await bk.build({ dockerfile, noCacheFilter: ["s1"] });
    const [u1d1, u1d2, u2d1, u2d2] = [
      await one.readFile("/unique"),
      await two.readFile("/unique"),
      await one.readFile("/unique2"),
      await two.readFile("/unique2"),
    ];
    assert.ok(u1d1 && u1d2 && u2d1 && u2d2);
    assert.notEqual(u1d1, u1d2);
    assert.notEqual(u2d1, u2d2);
    assert.equal(await three.readFile("/unique"), u1d2);
    assert.notEqual(await three.readFile("/unique2"), u2d1);
    assert.notEqual(await three.readFile("/unique2"), u2d2);
  });
});
