// BuildKit's progress names for Dockerfile steps (dockerfile2llb prefixCommand), as Strata's step descriptions show them.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { planDockerfile } from "../../src/dockerfile/plan-stages.js";
import { progressPrefixes } from "../../src/dockerfile/progress-names.js";

/** The prefixes of stage `i`, FROM first, as [instruction text, prefix]. */
function names(text: string, i: number): [string, string][] {
  const plan = planDockerfile(text);
  const stage = plan.stages[i]!;
  const out: [string, string][] = [];
  const p = progressPrefixes(plan, i);
  if (p.has(stage)) out.push([stage.original, p.get(stage)!]);
  for (const pi of stage.instructions) if (p.has(pi)) out.push([pi.original, p.get(pi)!]);
  return out;
}

describe("progressPrefixes", () => {
  test("names the stage when there are several, counting an image FROM, RUN, COPY, ADD and WORKDIR", () => {
    const df =
      'FROM busybox AS base\nWORKDIR /out\nENV A=1\nRUN echo "base" > base\nFROM scratch\nCOPY --from=base /out /out\n';
    assert.deepEqual(names(df, 0), [
      ["FROM busybox AS base", "[base 1/3] "],
      ["WORKDIR /out", "[base 2/3] "],
      ['RUN echo "base" > base', "[base 3/3] "],
    ]);
    // FROM scratch makes no vertex; an unnamed stage is stage-<index>.
    assert.deepEqual(names(df, 1), [["COPY --from=base /out /out", "[stage-1 1/1] "]]);
  });

  test("a single stage has no name, unless COPY --from names an image (a stage of its own in BuildKit)", () => {
    assert.deepEqual(names("FROM busybox AS only\nRUN true\n", 0), [
      ["FROM busybox AS only", "[1/2] "],
      ["RUN true", "[2/2] "],
    ]);
    assert.deepEqual(names("FROM scratch\nCOPY --from=busybox /bin/sh /sh\n", 0), [
      ["COPY --from=busybox /bin/sh /sh", "[stage-0 1/1] "],
    ]);
  });

  test("indexes are padded to the width of the total; metadata-only stages get no prefix", () => {
    const runs = Array.from({ length: 10 }, (_, i) => `RUN echo ${i}`).join("\n");
    const got = names(`FROM scratch\n${runs}\n`, 0);
    assert.equal(got[0]![1], "[ 1/10] ");
    assert.equal(got[9]![1], "[10/10] ");
    assert.deepEqual(names("FROM scratch\nENV A=1\nLABEL b=2\n", 0), []);
  });
});
