// Ported from BuildKit frontend/dockerfile/dockerfile_onbuild_test.go (see ../README.md for the table). Bases are
// pushed to the harness's loopback registry (BuildKit's image exporter with push=true) and built FROM; `alpine` is
// the stand-in images.ts pushes. testOnBuildNamedContext needs an oci-layout named context (branch dfctx): not here.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";
import { pushAlpine, pushResult } from "./images.js";

const bk = buildkitHarness();
let alpine = "";
before(async () => {
  await bk.start();
  alpine = await pushAlpine(bk);
});
after(bk.stop);

describe("dockerfile_onbuild_test.go", { concurrency: 4 }, () => {
  test("testOnBuildCleared", async () => {
    const base = await bk.build({
      dockerfile: "\nFROM busybox\nONBUILD RUN mkdir -p /out && echo -n 11 >> /out/foo\n",
    });
    const target = await pushResult(bk, base, "buildkit/testonbuild:base");
    const child = await bk.build({ dockerfile: `\n\tFROM ${target}\n\t` });
    const target2 = await pushResult(bk, child, "buildkit/testonbuild:child");
    const r = await bk.build({
      dockerfile: `\n\tFROM ${target2} AS base\n\tFROM scratch\n\tCOPY --from=base /out /\n\t`,
    });
    assert.equal(await r.readFile("/foo"), "11");
  });

  // moby/buildkit#5578: ONBUILD rules of the parent image do not run again in a stage built FROM this stage.
  test("testOnBuildWithChildStage", async () => {
    const base = await bk.build({
      dockerfile: "\nFROM busybox\nONBUILD RUN mkdir -p /out && echo -n yes >> /out/didrun\n",
    });
    const target = await pushResult(bk, base, "buildkit/testonbuildstage:base");
    const r = await bk.build({
      dockerfile:
        `\nFROM ${target} AS base\n` +
        "RUN [ -f /out/didrun ] && touch /step1\nRUN rm /out/didrun\nRUN [ ! -f /out/didrun ] && touch /step2\n\n" +
        "FROM base AS child\nRUN [ ! -f /out/didrun ] && touch /step3\n\nFROM scratch\nCOPY --from=child /step* /\n",
    });
    const tree = await r.tree();
    for (const f of ["/step1", "/step2", "/step3"]) assert.ok(tree.has(f), `${f} is missing`);
  });

  test("testOnBuildInheritedStageRun", async () => {
    const r = await bk.build({
      dockerfile:
        "\nFROM busybox AS base\nONBUILD RUN mkdir -p /out && echo -n 11 >> /out/foo\n\n" +
        "FROM base AS mid\nRUN cp /out/foo /out/bar\n\nFROM scratch\nCOPY --from=mid /out/bar /\n",
    });
    assert.equal(await r.readFile("/bar"), "11");
  });

  test("testOnBuildInheritedStageWithFrom", async () => {
    const r = await bk.build({
      dockerfile:
        `\nFROM ${alpine} AS src\nRUN mkdir -p /in && echo -n 12 > /in/file\n\n` +
        "FROM busybox AS base\nONBUILD COPY --from=src /in/file /out/foo\n\n" +
        "FROM base AS mid\nRUN cp /out/foo /out/bar\n\nFROM scratch\nCOPY --from=mid /out/bar /\n",
    });
    assert.equal(await r.readFile("/bar"), "12");
  });

  // ONBUILD brings new dependencies: an image (`COPY --from=alpine`) and, nested, a stage of the child's Dockerfile
  // (`RUN --mount=from=inputstage`) that the child never names itself.
  test("testOnBuildNewDeps", async () => {
    const base = await bk.build({
      dockerfile: `\nFROM busybox\nONBUILD COPY --from=${alpine} /etc/alpine-release /out/alpine-release2\n`,
    });
    const target = await pushResult(bk, base, "buildkit/testonbuilddeps:base");
    let r = await bk.build({
      dockerfile: `\n\tFROM ${target} AS base\n\tRUN cat /out/alpine-release2 > /out/alpine-release3\n\tFROM scratch\n\tCOPY --from=base /out /\n\t`,
    });
    assert.ok(((await r.readFile("/alpine-release3")) ?? "").length > 5);

    // build another onbuild image to test the nested case
    const base2 = await bk.build({
      dockerfile:
        `\nFROM ${alpine}\n` +
        "ONBUILD RUN --mount=type=bind,target=/in,from=inputstage mkdir /out && cat /in/foo > /out/bar && cat /in/out/alpine-release2 > /out/bar2\n",
    });
    const target2 = await pushResult(bk, base2, "buildkit/testonbuilddeps:base2");
    r = await bk.build({
      dockerfile:
        `\n\tFROM ${target} AS inputstage\n\tRUN cat /out/alpine-release2 > /out/alpine-release4\n\tRUN echo -n foo > /foo\n` +
        `\tFROM ${target2} AS base\n\tRUN echo -n bar3 > /out/bar3\n\tFROM scratch\n\tCOPY --from=base /out /\n\t`,
    });
    assert.equal(await r.readFile("/bar"), "foo");
    assert.ok(((await r.readFile("/bar2")) ?? "").length > 5);
    assert.equal(await r.readFile("/bar3"), "bar3");
  });

  // BuildKit pushes this base as buildkit/testonbuild:base too; here tests share one registry, so it has its own name.
  test("testOnBuildWithCacheMount", async () => {
    const base = await bk.build({
      dockerfile:
        "\nFROM busybox\nONBUILD RUN --mount=type=cache,target=/cache echo -n 42 >> /cache/foo && echo -n 11 >> /bar\n",
    });
    const target = await pushResult(bk, base, "buildkit/testonbuildcache:base");
    await bk.build({
      dockerfile: `FROM ${target}\nRUN --mount=type=cache,target=/cache [ "$(cat /cache/foo)" = "42" ] && [ "$(cat /bar)" = "11" ]\n`,
    });
  });
});
