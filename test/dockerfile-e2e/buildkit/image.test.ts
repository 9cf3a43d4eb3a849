// Ported from BuildKit frontend/dockerfile/dockerfile_image_test.go (see ../README.md for the table). Images BuildKit
// exports to containerd are pushed to the harness's loopback registry here.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_image_test.go", { concurrency: 4 }, () => {
  test("testPullScratch", async () => {
    const scratch = await bk.build({ dockerfile: "FROM scratch\nLABEL foo=bar\n" });
    const ref = await bk.push(scratch, "moby/testpullscratch:latest");
    const r = await bk.build({
      dockerfile: `FROM ${ref}\nLABEL bar=baz\nCOPY foo .\n`,
      files: { foo: { content: "foo-contents", mode: 0o600 } },
    });
    const img = await r.config();
    assert.equal(img.rootfs.type, "layers");
    assert.equal(img.rootfs.diff_ids.length, 1);
    assert.equal(img.config.Labels?.foo, "bar");
    assert.equal(img.config.Labels?.bar, "baz");
    // BuildKit's LLB mounts the layerless image read-write at /empty of a busybox RUN and exports the mount; a
    // Dockerfile reads the file it wrote there from the same RUN.
    const r2 = await bk.build({
      dockerfile: `FROM busybox\nRUN --mount=type=bind,from=${ref},target=/empty,rw sh -c "echo -n foo0 > /empty/foo && cp /empty/foo /foo"\n`,
    });
    assert.equal(await r2.readFile("/foo"), "foo0");
  });

  test("testDockerfileScratchConfig", async () => {
    const r = await bk.build({ dockerfile: "FROM scratch\nENV foo=bar\n" });
    const img = await r.config();
    assert.ok(img.os);
    assert.ok(img.architecture);
    assert.ok(img.config.WorkingDir);
    assert.equal(img.rootfs.type, "layers");
    assert.equal(img.rootfs.diff_ids.length, 0);
    assert.equal(img.history?.length, 1);
    assert.match(img.history[0]!.created_by ?? "", /ENV foo=bar/);
    assert.equal(img.history[0]!.empty_layer, true);
    assert.ok(img.config.Env?.includes("foo=bar"));
    assert.ok(img.config.Env?.some((e) => e.startsWith("PATH=")));
  });
});
