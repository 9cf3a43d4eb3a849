// fromDockerfile's `docker build` options (what `strata build -f` passes for --label, --no-cache-filter and
// --network): labels are one metadata step at the end (no other step changes), the filter forces exactly its stages'
// steps, and the network is written into the RUNs that name none or `default`, nested stages included.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { InvalidDefinitionError } from "../../src/errors.js";
import { Image } from "../../src/index.js";
import { render } from "../../src/plan/instructions.js";
import { planWithNetwork } from "../../src/plan/network.js";
import type { Plan, Step } from "../../src/plan/step.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

async function dockerfile(text: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-opts-"));
  dirs.push(dir);
  await fsp.writeFile(path.join(dir, "Dockerfile"), text);
  return path.join(dir, "Dockerfile");
}

const TWO_STAGES =
  "FROM scratch AS build\nRUN echo b > /b\nRUN --network=none echo n\n\nFROM scratch AS final\nRUN --network=default echo f\nCOPY --from=build /b /b\nLABEL own=1\n";

/** Every step of a plan with its nested stage plans, depth first, each once (by its description: its line). */
function allSteps(plan: Plan, seen = new Set<string>()): Step[] {
  const out: Step[] = [];
  for (const s of plan.steps) {
    for (const i of s.inputs) {
      if (i.kind === "stages") for (const p of i.plans) out.push(...allSteps(p, seen));
      if (i.kind === "select" && i.root.kind === "stage") out.push(...allSteps(i.root.plan, seen));
    }
    if (seen.has(s.description)) continue;
    seen.add(s.description);
    out.push(s);
  }
  return out;
}

describe("fromDockerfile labels (--label)", () => {
  test("one LABEL step at the end; every other step is the same as without labels", async () => {
    const df = await dockerfile(TWO_STAGES);
    const plain = Image.fromDockerfile(df).plan();
    const labelled = Image.fromDockerfile(df, { labels: { "org.example.v": "2", own: "cli" } }).plan();
    assert.equal(labelled.steps.length, plain.steps.length + 1);
    assert.deepEqual(labelled.steps.slice(0, -1), plain.steps);
    const last = labelled.steps.at(-1)!;
    assert.deepEqual(last.instructions.map(render), ["LABEL org.example.v=2 own=cli"]);
    assert.deepEqual(last.inputs, []);
  });

  test("bad labels are InvalidDefinitionErrors", async () => {
    const df = await dockerfile(TWO_STAGES);
    for (const labels of [["a"], { a: 1 }, { "": "x" }] as unknown[])
      assert.throws(
        () => Image.fromDockerfile(df, { labels: labels as Record<string, string> }),
        (e: unknown) => e instanceof InvalidDefinitionError && /fromDockerfile: labels/.test(e.message),
      );
  });
});

describe("fromDockerfile noCacheFilter (--no-cache-filter)", () => {
  test("forces exactly the named stages' steps (a scratch FROM is not rebuilt); names are case-insensitive", async () => {
    const df = await dockerfile(TWO_STAGES);
    const steps = allSteps(Image.fromDockerfile(df, { noCacheFilter: ["BUILD"] }).plan());
    const forced = steps.filter((s) => s.forceBuild).map((s) => s.description.replace(/^.*?:(\d+):\d+ /, "$1 "));
    assert.deepEqual(forced, ["2 RUN echo b > /b", "3 RUN --network=none echo n"]);
    assert.ok(steps.some((s) => !s.forceBuild && s.description.includes("echo f")));
    const none = allSteps(Image.fromDockerfile(df).plan());
    assert.ok(none.every((s) => !s.forceBuild));
  });

  test("a name no stage has is an error naming the stages", async () => {
    const df = await dockerfile(TWO_STAGES);
    assert.throws(
      () => Image.fromDockerfile(df, { noCacheFilter: ["biuld"] }),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /no stage named "biuld" \(did you mean build\?\) \(its named stages: build, final\)/.test(e.message),
    );
    assert.throws(
      () => Image.fromDockerfile(df, { noCacheFilter: "build" as unknown as string[] }),
      /array of stage names/,
    );
  });
});

describe("fromDockerfile network (--network)", () => {
  test("none/host go into every RUN naming none or default, nested stages too; an explicit RUN --network stays", async () => {
    const df = await dockerfile(TWO_STAGES);
    const runs = (p: Plan) =>
      allSteps(p)
        .flatMap((s) => s.instructions)
        .filter((i) => i.op === "RUN")
        .map(render);
    assert.deepEqual(runs(Image.fromDockerfile(df).plan()), [
      "RUN echo b > /b",
      "RUN --network=none echo n",
      "RUN echo f",
    ]);
    assert.deepEqual(
      runs(Image.fromDockerfile(df, { network: "default" }).plan()),
      runs(Image.fromDockerfile(df).plan()),
    );
    assert.deepEqual(runs(Image.fromDockerfile(df, { network: "host" }).plan()), [
      "RUN --network=host echo b > /b",
      "RUN --network=none echo n",
      "RUN --network=host echo f",
    ]);
    assert.deepEqual(runs(Image.fromDockerfile(df, { network: "none" }).plan()), [
      "RUN --network=none echo b > /b",
      "RUN --network=none echo n",
      "RUN --network=none echo f",
    ]);
  });

  test("RUN --network=host in a Dockerfile asks for the host network (granted by the network.host entitlement)", async () => {
    const df = await dockerfile("FROM scratch\nRUN --network=host echo h\n");
    assert.deepEqual(Image.fromDockerfile(df).plan().steps[1]!.instructions.map(render), ["RUN --network=host echo h"]);
  });

  test("an unknown network is an InvalidDefinitionError", async () => {
    const df = await dockerfile(TWO_STAGES);
    assert.throws(
      () => Image.fromDockerfile(df, { network: "bridge" as "none" }),
      /fromDockerfile: network must be "default", "none" or "host", got "bridge"/,
    );
  });

  test("planWithNetwork writes the network as the engine's default would, nested plans included", async () => {
    const df = await dockerfile(TWO_STAGES);
    const plan = Image.fromDockerfile(df).plan();
    const viaPlan = allSteps(planWithNetwork(plan, "none")).map((s) => s.instructions.map(render));
    const viaOption = allSteps(Image.fromDockerfile(df, { network: "none" }).plan()).map((s) =>
      s.instructions.map(render),
    );
    assert.deepEqual(viaPlan, viaOption);
  });
});
