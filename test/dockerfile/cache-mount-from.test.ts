// RUN --mount=type=cache with from= and source= (issue 12, item 10), as BuildKit's dockerfile2llb (convert_runmount.go)
// and parseMount (commands_runmount.go) have them: from= seeds the cache with a stage's (or image's) path, which is the
// step's input and so keyed; source= alone is a path inside the cache; from= takes no variable.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { DockerfileSyntaxError } from "../../src/dockerfile/errors.js";
import { planDockerfile } from "../../src/dockerfile/plan-stages.js";
import { Image } from "../../src/index.js";
import { render } from "../../src/plan/instructions.js";
import type { Step } from "../../src/plan/step.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

async function plan(text: string): Promise<Step[]> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-cache-from-"));
  dirs.push(dir);
  await fsp.writeFile(path.join(dir, "Dockerfile"), text);
  return Image.fromDockerfile(path.join(dir, "Dockerfile")).plan().steps;
}

const runOf = (steps: Step[]) => steps.find((s) => s.instructions[0]?.op === "RUN")!;

test("from=<stage>: the cache is seeded by a select of the stage's source, rendered as seed= and read as a stage", async () => {
  const steps = await plan(
    "FROM scratch AS build\nRUN make\nFROM scratch\nRUN --mount=type=cache,from=build,source=/out,target=/c,id=x true\n",
  );
  const run = runOf(steps.slice(1));
  assert.deepEqual(run.instructions.map(render), [
    "RUN --mount=type=cache,id=x,target=/c,sharing=shared,seed=mount0 true",
  ]);
  const input = run.inputs.find((i) => i.name === "mount0");
  assert.ok(input && input.kind === "select", "the seed is a select input");
  assert.deepEqual(input.patterns, ["/out"]);
  assert.equal(input.root.kind, "stage");
  assert.ok(
    steps.some((s) => s.inputs.some((i) => i.kind === "stages")),
    "the stage the cache is seeded from is built first",
  );
});

test("from= without source= seeds from the stage's root", async () => {
  const steps = await plan("FROM scratch AS b\nRUN x\nFROM scratch\nRUN --mount=type=cache,from=b,target=/c true\n");
  const input = runOf(steps.slice(1)).inputs.find((i) => i.name === "mount0");
  assert.ok(input && input.kind === "select");
  assert.deepEqual(input.patterns, ["/"]);
});

test("source= without from= is a path inside the cache, joined onto / as BuildKit does (.. stays inside)", async () => {
  const cases: [string, string][] = [
    ["source=sel", "source=sel"],
    ["source=/a/b/", "source=a/b"],
    ["source=../../x", "source=x"],
  ];
  for (const [flag, rendered] of cases) {
    const steps = await plan(`FROM scratch\nRUN --mount=type=cache,${flag},target=/c,id=i true\n`);
    assert.deepEqual(runOf(steps).instructions.map(render), [
      `RUN --mount=type=cache,id=i,target=/c,sharing=shared,${rendered} true`,
    ]);
  }
  const root = await plan("FROM scratch\nRUN --mount=type=cache,source=/,target=/c,id=i true\n");
  assert.deepEqual(runOf(root).instructions.map(render), ["RUN --mount=type=cache,id=i,target=/c,sharing=shared true"]);
});

test("a cache mount without from= or source= renders as before (its key does not change)", async () => {
  const steps = await plan("FROM scratch\nRUN --mount=type=cache,target=/c,id=i,mode=0700,uid=1 true\n");
  assert.deepEqual(runOf(steps).instructions.map(render), [
    "RUN --mount=type=cache,id=i,target=/c,sharing=shared,mode=700,uid=1 true",
  ]);
  assert.deepEqual(runOf(steps).inputs, []);
});

test("from= refuses variable expansion with BuildKit's message, at the flag; a trailing $ is literal", () => {
  const text = "FROM scratch AS test\nFROM scratch\nENV ttt=test\nRUN --mount=from=$ttt,type=cache,target=/tmp ls\n";
  assert.throws(
    () => planDockerfile(text, {}),
    (e: unknown) =>
      e instanceof DockerfileSyntaxError &&
      e.line === 4 &&
      e.column === 5 &&
      e.message.includes("'from' doesn't support variable expansion, define alias stage instead"),
  );
  assert.throws(
    () => planDockerfile("FROM scratch\nRUN --mount=type=bind,from=${X},target=/m true\n", {}),
    /'from' doesn't support variable expansion/,
  );
  // `a$` is a (missing) image named "a$", not a variable.
  const p = planDockerfile("FROM scratch\nRUN --mount=type=cache,from=a$,target=/c true\n", {});
  assert.equal(p.stages.length, 1);
});
