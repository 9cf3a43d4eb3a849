// Image paths whose `..` would climb above `/` are clamped (as Docker resolves them); every other path keeps its exact
// text, so no existing key changes.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { clampImagePath, clampInstructionPaths } from "../../src/plan/image-path.js";
import type { Instruction } from "../../src/plan/instructions.js";
import { Image } from "../../src/sdk/image.js";

describe("clampImagePath", () => {
  const cases: [string, string][] = [
    // climbing above / → cleaned
    ["/../../x", "/x"],
    ["/..", "/"],
    ["/../", "/"],
    ["/a/../../b/./c", "/b/c"],
    ["/../x/", "/x/"],
    ["/../x/.", "/x/"],
    ["/../x/y/..", "/x/"],
    ["//..//x", "/x"],
    // not climbing → exactly as written
    ["/app/", "/app/"],
    ["/a/../b", "/a/../b"],
    ["/a/./b//c", "/a/./b//c"],
    ["/", "/"],
    // relative → as written (resolved against the working directory when the step runs)
    ["../../x", "../../x"],
    ["sub/dir", "sub/dir"],
  ];
  for (const [p, want] of cases)
    test(`${JSON.stringify(p)} → ${JSON.stringify(want)}`, () => assert.equal(clampImagePath(p), want));
});

describe("clampInstructionPaths", () => {
  test("WORKDIR, COPY/ADD destinations and every RUN mount target; other instructions untouched", () => {
    assert.deepEqual(clampInstructionPaths({ op: "WORKDIR", path: "/../w", create: true }), {
      op: "WORKDIR",
      path: "/w",
      create: true,
    });
    assert.deepEqual(clampInstructionPaths({ op: "COPY", source: "s", dest: "/../d/", sources: ["a"] }), {
      op: "COPY",
      source: "s",
      dest: "/d/",
      sources: ["a"],
    });
    assert.deepEqual(clampInstructionPaths({ op: "ADD", source: "s", dest: "/../../f", sources: ["a"] }), {
      op: "ADD",
      source: "s",
      dest: "/f",
      sources: ["a"],
    });
    const run: Instruction = {
      op: "RUN",
      command: "true",
      mounts: [
        { type: "cache", id: "c", target: "/../c", sharing: "shared" },
        { type: "tmpfs", target: "/t/../../t" },
        { type: "secret", id: "S", target: "/../s" },
        { type: "secret", id: "E", env: "E" },
        { type: "bind", source: "in", target: "/../../b", readonly: true },
      ],
    };
    assert.deepEqual(clampInstructionPaths(run), {
      op: "RUN",
      command: "true",
      mounts: [
        { type: "cache", id: "c", target: "/c", sharing: "shared" },
        { type: "tmpfs", target: "/t" },
        { type: "secret", id: "S", target: "/s" },
        { type: "secret", id: "E", env: "E" },
        { type: "bind", source: "in", target: "/b", readonly: true },
      ],
    });
    const untouched: Instruction[] = [
      { op: "WORKDIR", path: "/app/" },
      { op: "RUN", command: "true", mounts: [{ type: "tmpfs", target: "/a/../t" }] },
      { op: "VOLUME", paths: ["/../v"] },
      { op: "ENV", vars: [["A", "/../x"]] },
    ];
    for (const ins of untouched) assert.equal(clampInstructionPaths(ins), ins, "the same object when nothing changes");
  });
});

describe("Image.plan clamps what the SDK and Dockerfile lines wrote", () => {
  test("workdir, dockerfileCommands WORKDIR/COPY/RUN --mount and copy: false destinations", () => {
    const plan = Image.fromScratch()
      .workdir("/../../srv")
      .dockerfileCommands(["WORKDIR /../w", "RUN --mount=type=tmpfs,target=/../../t true", "WORKDIR ../x"])
      .addLocalFile("/etc/hostname", "/../../h", { copy: false })
      .plan("2026.11");
    assert.deepEqual(
      plan.steps.slice(1).map((s) => s.instructions),
      [
        [{ op: "WORKDIR", path: "/srv" }],
        [{ op: "WORKDIR", path: "/w", create: true }],
        [{ op: "RUN", command: "true", mounts: [{ type: "tmpfs", target: "/t" }] }],
        [{ op: "WORKDIR", path: "../x", create: true }],
      ],
    );
    assert.equal(plan.deferred[0]!.remotePath, "/h");
  });
});
