// A step gets the values of the secret names it lists from the build's SecretValues; a listed name the build has no
// value for is a MissingSecretError naming the secret and the step, before the step runs.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { buildPlan } from "../../src/engine/build.js";
import { MissingSecretError } from "../../src/errors.js";
import { stepSecretValues } from "../../src/plan/secrets.js";
import { Image } from "../../src/sdk/image.js";
import { LocalStore } from "../../src/store/local.js";

const home = mkdtempSync(path.join(os.tmpdir(), "strata-secrets-"));
after(() => rmSync(home, { recursive: true, force: true }));

describe("secret values", () => {
  test("a step gets exactly the values of the names it lists", () => {
    const step = { description: "runCommands x", secrets: ["A", "constructor"] };
    assert.deepEqual(stepSecretValues(step, { A: "1", constructor: "2", B: "3" }), { A: "1", constructor: "2" });
    assert.deepEqual(stepSecretValues({ description: "d", secrets: [] }, undefined), {});
  });

  test("a listed name without a value is a MissingSecretError naming it and the step (no inherited properties)", () => {
    for (const values of [undefined, {}, { B: "x" }] as (Record<string, string> | undefined)[]) {
      assert.throws(
        () => stepSecretValues({ description: "runCommands x", secrets: ["constructor"] }, values),
        (e: unknown) =>
          e instanceof MissingSecretError &&
          e.secret === "constructor" &&
          e.step === "runCommands x" &&
          /runCommands x: uses the secret "constructor"/.test(e.message),
      );
    }
  });

  test("buildPlan without the plan's secret values fails before the step runs; with them the names are keyed as before", async () => {
    const store = await LocalStore.open(home);
    const image = Image.fromScratch()
      .env({ X: "1" }, {})
      .runCommands("true", { secrets: { TOKEN: "t0k3n" } });
    await assert.rejects(
      buildPlan(image.plan(), { store, log: () => undefined }),
      (e: unknown) => e instanceof MissingSecretError && e.secret === "TOKEN",
    );
    assert.equal(image.plan().steps[2]!.secrets.join(","), "TOKEN");
  });
});
