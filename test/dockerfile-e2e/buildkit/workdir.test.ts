// Ported from BuildKit frontend/dockerfile/dockerfile_workdir_test.go (see ../README.md for the table).
// testWorkdirSourceDateEpochReproducible waits for SOURCE_DATE_EPOCH (branch dfctx).
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
});
