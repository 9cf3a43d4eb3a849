// The extras the engine derives (a debian base's recipe, WORKDIR creation, env values) come from what a step runs,
// never from the plan's own `extra`, and give the keys the SDK and Dockerfile steps always had.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { loadBuilderVersion } from "../../src/builder-version.js";
import { keyInputsFor } from "../../src/engine/build.js";
import { derivedExtra, isDerivedExtra, stepExtra } from "../../src/keys/step-extra.js";
import { initKeys, stepKey } from "../../src/keys/step-key.js";
import type { Step } from "../../src/plan/step.js";
import { debianSlimStep } from "../../src/plan/debian-slim.js";
import { Image } from "../../src/sdk/image.js";
import type { Digest } from "../../src/util/digest.js";

const b = loadBuilderVersion("2026.11");
const PARENT = ("sha256:" + "0".repeat(64)) as Digest;
before(() => initKeys());

describe("derived extras", () => {
  test("names only the engine sets", () => {
    for (const n of [
      "base",
      "base.manifest",
      "base.anything",
      "env.PATH",
      "link.workdir",
      "link.owners",
      "workdir.create",
      "copy.excluded",
    ])
      assert.ok(isDerivedExtra(n), n);
    for (const n of ["function.source", "function.args", "uvVersion", "ignore", "basement", "environment"])
      assert.ok(!isDerivedExtra(n), n);
  });

  test("a debian base's key covers the recipe it builds, whatever the plan's extras say", () => {
    const step = debianSlimStep(b, { pythonVersion: "3.11" });
    const key = (s: Step) => stepKey(keyInputsFor(b, s, null, []));
    const official = key(step);
    // The key this base has always had (the recipe was in the SDK step's extras until the engine derived it).
    assert.equal(
      official,
      stepKey({
        ...keyInputsFor(b, { ...step, base: { kind: "scratch" } }, null, []),
        extra: [["base", JSON.stringify(step.base)]],
      }),
    );
    assert.equal(
      key({ ...step, extra: [["base", JSON.stringify({ ...step.base, suite: "forged" })]] }),
      official,
      "a forged recipe in extra is ignored",
    );
    const other = {
      ...step,
      base: { ...(step.base as Extract<Step["base"], { kind: "debian" }>), mirror: "http://127.0.0.1:1/evil" },
    };
    assert.notEqual(key(other), official, "another recipe is another key");
    assert.notEqual(key({ ...step, base: { kind: "scratch" } }), official);
  });

  test("a WORKDIR that creates its directory is keyed apart from one that only sets the config", () => {
    const make = (create?: boolean): Step => ({
      ...Image.fromScratch().plan(b).steps[0]!,
      base: undefined,
      instructions: [{ op: "WORKDIR", path: "/w", ...(create === undefined ? {} : { create }) }],
    });
    assert.deepEqual(derivedExtra(make(true)), [["workdir.create", "true"]]);
    assert.deepEqual(derivedExtra(make()), []);
    const key = (s: Step) => stepKey(keyInputsFor(b, s, PARENT, []));
    assert.notEqual(key(make(true)), key(make()));
    assert.equal(
      key({ ...make(), extra: [["workdir.create", "true"]] }),
      key(make()),
      "the plan cannot claim a creation it does not do",
    );
    // A Dockerfile WORKDIR (which creates) keeps the key it had when to-plan added the extra itself.
    const docker = Image.fromScratch().dockerfileCommands(["WORKDIR /q"]).plan(b).steps[1]!;
    assert.equal(
      stepKey(keyInputsFor(b, docker, PARENT, [])),
      stepKey({
        ...keyInputsFor(b, { ...docker, instructions: [{ op: "WORKDIR", path: "/q" }] }, PARENT, []),
        instructions: ["WORKDIR /q"],
        extra: [["workdir.create", "true"]],
      }),
    );
  });

  test("env values come from the step's env; an env.* extra in the plan is dropped", () => {
    const step: Step = {
      ...Image.fromScratch().plan(b).steps[0]!,
      base: undefined,
      instructions: [{ op: "RUN", command: "true" }],
      env: { A: "1" },
      extra: [
        ["env.A", "2"],
        ["env.B", "3"],
        ["uvVersion", "0.9.5"],
      ],
    };
    assert.deepEqual(stepExtra(step), [
      ["uvVersion", "0.9.5"],
      ["env.A", "1"],
    ]);
  });
});
