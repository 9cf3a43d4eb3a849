// Ported from BuildKit frontend/dockerfile/dockerfile_dockerignore_test.go (see ../README.md for the table).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_dockerignore_test.go", { concurrency: 4 }, () => {
  test("testDockerignore", async () => {
    const r = await bk.build({
      dockerfile: "FROM scratch\nCOPY . .\n",
      files: {
        foo: { content: "foo-contents", mode: 0o600 },
        bar: { content: "bar-contents", mode: 0o600 },
        baz: { content: "baz-contents", mode: 0o600 },
        bay: { content: "bay-contents", mode: 0o600 },
        ".dockerignore": { content: "\nba*\nDockerfile\n!bay\n.dockerignore\n", mode: 0o600 },
      },
    });
    const tree = await r.tree();
    assert.equal(await r.readFile("/foo"), "foo-contents");
    for (const gone of ["/.dockerignore", "/Dockerfile", "/bar", "/baz"]) assert.equal(tree.get(gone), undefined, gone);
    assert.equal(await r.readFile("/bay"), "bay-contents");
  });

  test("testDockerignoreInvalid", async () => {
    // BuildKit requires an error (not a hang): `!` alone is not a pattern.
    await bk.buildFails({
      dockerfile: "FROM scratch\nCOPY . .\n",
      files: { ".dockerignore": { content: "!\n", mode: 0o600 } },
    });
  });

  test("testDockerignoreOverride", async () => {
    const dockerfile = "FROM busybox\nCOPY . .\nRUN [ -f foo ] && [ ! -f bar ]\n";
    const dockerfile2 = "FROM busybox\nCOPY . .\nRUN [ ! -f foo ] && [ -f bar ]\n";
    const shared = {
      "Dockerfile.dockerignore": { content: "\nbar\n", mode: 0o600 },
      "Dockerfile2.dockerignore": { content: "\nfoo\n", mode: 0o600 },
      foo: { content: "contents0", mode: 0o600 },
      bar: { content: "contents0", mode: 0o600 },
    };
    await bk.build({ dockerfile, files: { ...shared, Dockerfile2: { content: dockerfile2, mode: 0o600 } } });
    // BuildKit's `filename` attribute: Dockerfile2, with its own ignore file.
    await bk.build({
      dockerfile: dockerfile2,
      dockerfileName: "Dockerfile2",
      files: { ...shared, Dockerfile: { content: dockerfile, mode: 0o600 } },
    });
  });
});
