// Ported from BuildKit frontend/dockerfile/dockerfile_multistage_test.go (see ../README.md for the table). `alpine`
// bases are busybox (nothing of alpine is read).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_multistage_test.go", { concurrency: 4 }, () => {
  test("testMultiStageImplicitFrom", async () => {
    let r = await bk.build({ dockerfile: "\nFROM scratch\nCOPY --from=busybox /etc/passwd test\n" });
    assert.match((await r.readFile("/test")) ?? "", /root/);

    // testing masked image will load actual stage
    r = await bk.build({
      dockerfile:
        "\nFROM busybox AS golang\nRUN mkdir -p /usr/bin && echo -n foo > /usr/bin/go\n\n" +
        "FROM scratch\nCOPY --from=golang /usr/bin/go go\n",
    });
    assert.match((await r.readFile("/go")) ?? "", /foo/);
  });

  test("testMultiStageCaseInsensitive", async () => {
    const r = await bk.build({
      dockerfile:
        "\nFROM scratch AS STAge0\nCOPY foo bar\nFROM scratch AS staGE1\nCOPY --from=staGE0 bar baz\n" +
        "FROM scratch\nCOPY --from=stage1 baz bax\n",
      files: { foo: { content: "foo-contents", mode: 0o600 } },
      target: "Stage1",
    });
    assert.match((await r.readFile("/baz")) ?? "", /foo-contents/);
  });

  test("testOutOfOrderStage", async () => {
    for (const src of ["/", "/d2"]) {
      const err = await bk.buildFails({
        dockerfile:
          `\nFROM busybox AS target\nCOPY --from=build ${src} /out\n\n` +
          "FROM busybox AS build\nCOPY /Dockerfile /d2\n\nFROM target\n",
      });
      assert.match(err.message, /cannot copy from stage/);
      assert.match(err.message, /needs to be defined before current stage/);
    }
  });

  test("testEmptyStages", async () => {
    const err = await bk.buildFails({ dockerfile: "ARG foo=bar" });
    // BuildKit: `dockerfile contains no stages to build`; Strata: `the Dockerfile has no FROM instruction, so it has no
    // stage to build` (with its location).
    assert.match(err.message, /no stages? to build/);
  });
});
