// `strata build -f Dockerfile`: the same output contract as SDK builds, build args, targets and secrets.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { makeBusyboxTree, nonce, scratchSpace, strata } from "../support/strata.js";

const space = scratchSpace();
after(() => space.cleanup());

test("strata build -f Dockerfile with --build-arg, --target and --secret; a changed arg rebuilds only the steps using it", async () => {
  const dir = await space.scratch();
  await makeBusyboxTree(path.join(dir, "rootfs"));
  await fsp.writeFile(
    path.join(dir, "Dockerfile"),
    `FROM scratch AS base\nCOPY rootfs/ /\nRUN echo ${nonce()} > /nonce\n\nFROM base AS final\nRUN echo unrelated > /u\nARG GREETING=hello\nRUN echo $GREETING > /g\nRUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /toklen\nCMD ["cat", "/g"]\n\nFROM base AS other\nRUN echo other > /o\n`,
  );
  const build = async (args: string[]) => {
    const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), ...args, dir, "--json"], {
      env: { TOK: "s3cret-token" },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stderr.includes("s3cret-token"));
    return {
      ...(JSON.parse(r.stdout.trim().split("\n").pop()!) as {
        imageId: string;
        steps: { description: string; cached: boolean }[];
      }),
      sandboxes: r.sandboxes,
    };
  };
  const a = await build(["--build-arg", "GREETING=hi", "--secret", "id=tok,env=TOK", "--target", "final"]);
  assert.equal((await strata(["run", a.imageId])).stdout, "hi\n");
  assert.equal((await strata(["run", a.imageId, "--", "cat", "/toklen"])).stdout.trim(), "12");
  assert.ok(!a.steps.some((s) => s.description.includes("echo other")), "stage `other` is not built for target final");
  const b = await build(["--build-arg", "GREETING=bye", "--secret", "id=tok,env=TOK", "--target", "final"]);
  // As in BuildKit, a RUN sees every ARG in scope (so those after `ARG GREETING` rebuild); steps before it do not.
  const cachedUnrelated = b.steps.find((s) => s.description.includes("echo unrelated"));
  assert.equal(cachedUnrelated?.cached, true, "a step that does not use the arg stays cached");
  assert.equal(b.steps.find((s) => s.description.includes("echo $GREETING"))?.cached, false);
  assert.equal((await strata(["run", b.imageId])).stdout, "bye\n");
  const bad = await strata(["build", "-f", path.join(dir, "Dockerfile"), "--build-arg", "NOEQUALS", dir]);
  assert.equal(bad.code, 2);
});

test("strata build: a NUL byte in a COPY destination is a located Dockerfile error, not an internal error", async () => {
  const dir = await space.scratch();
  await fsp.mkdir(path.join(dir, "bb"));
  await fsp.writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY bb/ /\0\n");
  const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), dir]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Dockerfile:2:11\b.*NUL/);
  assert.doesNotMatch(r.stderr, /internal error|ERR_INVALID_ARG_VALUE/);
});
