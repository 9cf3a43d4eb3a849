// Ported from BuildKit frontend/dockerfile/dockerfile_core_test.go (see README.md in this folder for the table).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness, withBusybox } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_core_test.go", () => {
  test("testDockerfileDirs", async () => {
    const r = await bk.build({
      dockerfile:
        "FROM busybox\nCOPY foo /foo2\nCOPY foo /\nRUN echo -n bar > foo3\nRUN test -f foo\nRUN cmp -s foo foo2\nRUN cmp -s foo foo3\n",
      files: { foo: { content: "bar", mode: 0o600 } },
    });
    assert.equal(await r.readFile("/foo3"), "bar");
  });
});

describe("harness", () => {
  test("withBusybox rewrites Docker Hub's busybox in FROM and --from, and nothing else", () => {
    const ref = "127.0.0.1:5000/library/busybox:latest";
    assert.equal(
      withBusybox(
        "FROM busybox AS a\nFROM --platform=$BUILDPLATFORM busybox:1.36\nFROM docker.io/library/busybox:latest\n" +
          "COPY --from=busybox /bin/sh /x\nRUN --mount=type=bind,from=busybox,target=/b true\nRUN echo busybox\n" +
          "FROM mybusybox\nFROM busybox-extra\n",
        ref,
      ),
      `FROM ${ref} AS a\nFROM --platform=$BUILDPLATFORM ${ref}\nFROM ${ref}\n` +
        `COPY --from=${ref} /bin/sh /x\nRUN --mount=type=bind,from=${ref},target=/b true\nRUN echo busybox\n` +
        "FROM mybusybox\nFROM busybox-extra\n",
    );
  });
});
