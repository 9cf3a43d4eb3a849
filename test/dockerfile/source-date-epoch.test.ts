// SOURCE_DATE_EPOCH in the Dockerfile front end (BuildKit's dockerfile_source_date_epoch_test.go, the parts decided
// before a build): the build arg, a global `ARG SOURCE_DATE_EPOCH=<default>` and its override, "" as unset, invalid
// values; every step of the build then carries the epoch as the extra key input `sourceDateEpoch`.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { DockerfileSyntaxError } from "../../src/dockerfile/errors.js";
import { planDockerfile } from "../../src/dockerfile/plan-stages.js";
import { InvalidDefinitionError } from "../../src/errors.js";
import { Image } from "../../src/index.js";
import { parseSourceDateEpoch, stepSourceDateEpoch } from "../../src/plan/source-date-epoch.js";
import { keyInputsFor } from "../../src/engine/build.js";
import { initKeys, stepKey } from "../../src/keys/step-key.js";
import { loadBuilderVersion } from "../../src/builder-version.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});
async function dockerfile(text: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-sde-"));
  dirs.push(dir);
  await fsp.writeFile(path.join(dir, "Dockerfile"), text);
  await fsp.writeFile(path.join(dir, "f"), "f");
  return path.join(dir, "Dockerfile");
}
const invalid = (re: RegExp) => (e: unknown) => e instanceof InvalidDefinitionError && re.test(e.message);

describe("SOURCE_DATE_EPOCH values", () => {
  test("whole seconds; '' is unset; anything else says how to give one", () => {
    assert.equal(parseSourceDateEpoch("1700000001"), 1700000001);
    assert.equal(parseSourceDateEpoch("0"), 0);
    assert.equal(parseSourceDateEpoch(""), undefined);
    assert.throws(
      () => parseSourceDateEpoch("not-a-timestamp"),
      invalid(/^invalid SOURCE_DATE_EPOCH: not-a-timestamp/),
    );
    assert.throws(() => parseSourceDateEpoch("context"), invalid(/not a context or stage name/));
    assert.throws(() => parseSourceDateEpoch("-1"), invalid(/whole seconds/));
    assert.throws(() => parseSourceDateEpoch("1.5"), invalid(/whole seconds/));
    assert.throws(() => parseSourceDateEpoch("99999999999999"), invalid(/whole seconds/));
  });

  test("testSourceDateEpochDockerfileDefault/-Override/-Invalid: the global ARG default, the build arg over it", () => {
    const text = "ARG SOURCE_DATE_EPOCH=1700000001\nFROM scratch\nCOPY Dockerfile .\n";
    assert.equal(planDockerfile(text).sourceDateEpoch, 1700000001);
    assert.equal(planDockerfile(text, { buildArgs: { SOURCE_DATE_EPOCH: "1700000002" } }).sourceDateEpoch, 1700000002);
    assert.equal(planDockerfile(text, { buildArgs: { SOURCE_DATE_EPOCH: "" } }).sourceDateEpoch, undefined);
    assert.equal(planDockerfile("FROM scratch\n").sourceDateEpoch, undefined);
    assert.deepEqual(planDockerfile("FROM scratch\n", { buildArgs: { SOURCE_DATE_EPOCH: "5" } }).unusedBuildArgs, []);
    // A bad default in the Dockerfile is the Dockerfile's error, located at its ARG (found by the fuzz test).
    assert.throws(
      () => planDockerfile("FROM scratch AS x\nARG A\n", { buildArgs: { SOURCE_DATE_EPOCH: "soon" } }),
      invalid(/^invalid SOURCE_DATE_EPOCH: soon /),
    );
    assert.throws(
      () => planDockerfile("# c\nARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\n"),
      (e: unknown) =>
        e instanceof DockerfileSyntaxError &&
        e.line === 2 &&
        e.column === 1 &&
        /invalid SOURCE_DATE_EPOCH: not-a-timestamp .*ARG SOURCE_DATE_EPOCH/.test(e.message),
    );
  });
});

describe("steps with SOURCE_DATE_EPOCH", () => {
  test("every step (the base too) carries the epoch; keys change only when an epoch is given", async () => {
    const df = await dockerfile("FROM scratch\nCOPY f /f\nARG SOURCE_DATE_EPOCH\nRUN echo $SOURCE_DATE_EPOCH\n");
    const plain = Image.fromDockerfile(df).plan();
    const withEpoch = Image.fromDockerfile(df, { sourceDateEpoch: 1700000001 }).plan();
    assert.ok(plain.steps.every((s) => stepSourceDateEpoch(s) === undefined));
    assert.ok(withEpoch.steps.every((s) => stepSourceDateEpoch(s) === 1700000001));
    const run = withEpoch.steps[3]!;
    assert.deepEqual(run.buildArgs, [["SOURCE_DATE_EPOCH", "1700000001"]], "RUN sees it through ARG");
    const viaArg = Image.fromDockerfile(df, { buildArgs: { SOURCE_DATE_EPOCH: "1700000001" } }).plan();
    assert.deepEqual(viaArg, withEpoch, "the option is the build arg");
    await initKeys();
    const b = loadBuilderVersion(plain.builderVersion);
    const key = (s: (typeof plain.steps)[number]) => stepKey(keyInputsFor(b, s, null, [], []));
    assert.notEqual(key(plain.steps[1]!), key(withEpoch.steps[1]!));
    assert.throws(
      () => Image.fromDockerfile(df, { sourceDateEpoch: 1, buildArgs: { SOURCE_DATE_EPOCH: "2" } }),
      invalid(/disagree/),
    );
    assert.throws(() => Image.fromDockerfile(df, { sourceDateEpoch: 1.5 }), invalid(/whole seconds/));
  });
});
