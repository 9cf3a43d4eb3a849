// Ported from BuildKit frontend/dockerfile/dockerfile_platform_test.go (see ../README.md for the table): the one test
// a single-platform (linux/amd64) builder can run.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_platform_test.go", () => {
  test("testPlatformArgsImplicit", async () => {
    const r = await bk.build({
      dockerfile: "FROM scratch AS build-linux\nCOPY foo bar\nFROM build-${TARGETOS}\nCOPY foo2 bar2\n",
      files: { foo: { content: "d0", mode: 0o600 }, foo2: { content: "d1", mode: 0o600 } },
    });
    assert.equal(await r.readFile("/bar"), "d0");
    assert.equal(await r.readFile("/bar2"), "d1");
  });
});
