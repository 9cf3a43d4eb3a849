// Ported from BuildKit frontend/dockerfile/dockerfile_workdir_test.go (see ../README.md for the table).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_workdir_test.go", { concurrency: 4 }, () => {
  test("testWorkdirCreatesDir", async () => {
    const r = await bk.build({ dockerfile: "FROM scratch\nWORKDIR /foo\nWORKDIR /\n" });
    assert.equal((await r.tree()).get("/foo")?.type, "dir");
  });

  test("testWorkdirUser", async () => {
    await bk.build({
      dockerfile:
        'FROM busybox\nRUN adduser -D user\nUSER user\nWORKDIR /mydir\nRUN [ "$(stat -c "%U %G" /mydir)" == "user user" ]\n',
    });
  });

  test("testWorkdirCopyIgnoreRelative", async () => {
    // The relative source of COPY --from is still read from the stage's root, not its WORKDIR.
    await bk.build({
      dockerfile:
        "FROM scratch AS base\nWORKDIR /foo\nCOPY Dockerfile /\nFROM scratch\n# relative path still loaded as absolute\nCOPY --from=base Dockerfile .\n",
    });
  });

  test("testWorkdirExists", async () => {
    await bk.build({
      dockerfile:
        'FROM busybox\nRUN adduser -D user\nRUN mkdir /mydir && chown user:user /mydir\nWORKDIR /mydir\nRUN [ "$(stat -c "%U %G" /mydir)" == "user user" ]\n',
    });
  });

  // BuildKit compares the OCI layout's index.json of two builds with SOURCE_DATE_EPOCH, the cache pruned between them
  // (and 3 s apart): here the second build is forced (no cache read), and the two image ids (the config's digest, and
  // so every layer's) must be equal. `alpine` → busybox.
  test("testWorkdirSourceDateEpochReproducible", async () => {
    const epoch = String(Date.UTC(2023, 0, 10, 15, 34, 56) / 1000);
    // One context directory for both builds, as BuildKit's: history comments name the Dockerfile's path.
    const opts = {
      dockerfile: "\nFROM busybox\nWORKDIR /mydir\n",
      buildArgs: { SOURCE_DATE_EPOCH: epoch },
      contextDir: await bk.tempDir(),
    };
    const one = await bk.build(opts);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const two = await bk.build({ ...opts, forceBuild: true });
    assert.deepEqual(await two.config(), await one.config());
    assert.equal(two.built.imageId, one.built.imageId);
  });
});
