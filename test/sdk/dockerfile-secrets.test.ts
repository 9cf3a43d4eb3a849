// Secrets in Dockerfile steps (issue 13, item 4): the SDK's dockerfileCommands, fromDockerfile and a registry base's
// setupDockerfileCommands give every RUN the secrets as environment variables, as Modal does; a secret mount keeps
// BuildKit's meaning; `strata build -f … --secret` (secretsAsEnv: false) keeps BuildKit's meaning throughout. Names
// are keyed, values never; plans without secrets keep their keys.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { stepExtra } from "../../src/keys/step-extra.js";
import type { Step } from "../../src/plan/step.js";
import { Image } from "../../src/sdk/image.js";

const BV = "2026.11";
const tmp = mkdtempSync(path.join(os.tmpdir(), "strata-df-secrets-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const df = path.join(tmp, "Dockerfile");
writeFileSync(
  df,
  "FROM scratch\nRUN echo $TOKEN\nCOPY Dockerfile /d\nRUN --mount=type=secret,id=TOKEN cat /run/secrets/TOKEN\n",
);

const runs = (steps: Step[]) => steps.filter((s) => s.instructions.some((i) => i.op === "RUN"));

describe("Dockerfile steps of the SDK get secrets as env", () => {
  test("dockerfileCommands: every RUN lists every secret and gets them as env; other steps do not", () => {
    const plan = Image.fromScratch()
      .dockerfileCommands(["RUN echo $TOKEN", "ENV A=1", "RUN true"], { secrets: { TOKEN: "s3cret", B: "b" } })
      .plan(BV);
    const [run1, env, run2] = plan.steps.slice(1);
    for (const r of [run1!, run2!]) {
      assert.deepEqual(r.secrets, ["B", "TOKEN"]);
      assert.equal(r.secretsAsEnv, true);
      assert.deepEqual(
        stepExtra(r).filter(([k]) => k === "secrets.env"),
        [["secrets.env", "true"]],
      );
    }
    assert.deepEqual(env!.secrets, []);
    assert.ok(!JSON.stringify(plan).includes("s3cret"), "values never enter the plan");
  });

  test("fromDockerfile: every RUN; a secret mount is still a mount", () => {
    const img = Image.fromDockerfile(df, { secrets: { TOKEN: "t" } });
    const [plain, mounted] = runs(img.plan(BV).steps);
    assert.deepEqual(plain!.secrets, ["TOKEN"]);
    assert.equal(plain!.secretsAsEnv, true);
    assert.deepEqual(mounted!.secrets, ["TOKEN"]);
    const ins = mounted!.instructions[0]!;
    assert.ok(ins.op === "RUN" && ins.mounts?.some((m) => m.type === "secret" && m.target === "/run/secrets/TOKEN"));
    assert.deepEqual(img.secretValues(), { TOKEN: "t" });
  });

  test("secretsAsEnv: false is BuildKit's meaning (what strata build -f uses): only the mounting RUN", () => {
    const [plain, mounted] = runs(
      Image.fromDockerfile(df, { secrets: { TOKEN: "t" }, secretsAsEnv: false }).plan(BV).steps,
    );
    assert.deepEqual(plain!.secrets, []);
    assert.deepEqual(mounted!.secrets, ["TOKEN"]);
    assert.equal(mounted!.secretsAsEnv, false);
    assert.deepEqual(
      stepExtra(mounted!).filter(([k]) => k.startsWith("secrets.")),
      [],
      "BuildKit's keys unchanged",
    );
  });

  test("the same RUN with env secrets and with mount-only secrets has different key inputs", () => {
    const asEnv = runs(Image.fromDockerfile(df, { secrets: { TOKEN: "t" } }).plan(BV).steps)[1]!;
    const mountOnly = runs(
      Image.fromDockerfile(df, { secrets: { TOKEN: "t" }, secretsAsEnv: false }).plan(BV).steps,
    )[1]!;
    assert.notDeepEqual(stepExtra(asEnv), stepExtra(mountOnly));
  });

  test("a plan cannot claim the derived secrets.env extra itself", () => {
    const step = runs(Image.fromDockerfile(df, { secrets: { TOKEN: "t" }, secretsAsEnv: false }).plan(BV).steps)[1]!;
    const forged = { ...step, extra: [["secrets.env", "true"] as [string, string]] };
    assert.deepEqual(stepExtra(forged), stepExtra(step));
  });

  test("without secrets, the steps are exactly what they were (existing keys unchanged)", () => {
    const a = Image.fromDockerfile(df).plan(BV);
    const b = Image.fromDockerfile(df, { secretsAsEnv: false }).plan(BV);
    assert.deepEqual(a, b);
    for (const s of a.steps) assert.ok(s.secretsAsEnv !== true);
  });

  test("env reaches every RUN (keyed), not the image config", () => {
    const plan = Image.fromScratch()
      .dockerfileCommands(["RUN true", "ENV A=1"], { env: { MODE: "x" } })
      .plan(BV);
    assert.deepEqual(plan.steps[1]!.env, { MODE: "x" });
    assert.deepEqual(plan.steps[2]!.env, {});
    assert.throws(
      () => Image.fromScratch().dockerfileCommands(["RUN true"], { env: { "1A": "x" } }),
      /not a valid variable name/,
    );
  });

  test("setupDockerfileCommands: the RUNs get `secrets`, never the registry login `secret`", () => {
    const img = Image.fromRegistry("127.0.0.1:5000/base:1", {
      secret: { REGISTRY_USERNAME: "u", REGISTRY_PASSWORD: "p" },
      setupDockerfileCommands: ["RUN echo $PIP_TOKEN"],
      secrets: { PIP_TOKEN: "tok" },
    });
    const steps = img.plan(BV).steps;
    assert.deepEqual(steps[0]!.secrets, ["REGISTRY_PASSWORD", "REGISTRY_USERNAME"]);
    assert.deepEqual(steps[1]!.secrets, ["PIP_TOKEN"]);
    assert.equal(steps[1]!.secretsAsEnv, true);
  });
});
