// A plan is plain JSON data: no class instances, functions or undefined-valued fields, so cloning it or sending it as
// JSON gives back an equal plan. Checked for every SDK base and every Dockerfile fixture that plans.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import type { Plan } from "../../src/plan/step.js";
import { Image } from "../../src/sdk/image.js";
import { Secret } from "../../src/sdk/secret.js";
import { readFixture } from "../dockerfile/fixtures.js";
import { REPO_ROOT } from "../support/strata.js";
import { everySdkBase } from "../support/sdk-bases.js";

const BV = "2026.11";
const tmp = mkdtempSync(path.join(os.tmpdir(), "strata-plain-plan-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function assertPlainData(plan: Plan, what: string): void {
  assert.deepStrictEqual(structuredClone(plan), plan, `${what}: structuredClone(plan) differs from the plan`);
  assert.deepStrictEqual(
    JSON.parse(JSON.stringify(plan)),
    plan,
    `${what}: the plan's JSON round trip differs from the plan`,
  );
}

/** A layer method of each kind, with optional fields left unset (they must be absent from the plan, not undefined). */
function withSteps(img: Image): Image {
  return img
    .aptInstall("jq")
    .pipInstall("requests", { secrets: Secret.fromObject({ PIP_TOKEN: "t" }) })
    .uvPipInstall("httpx")
    .runCommands("echo hi", { env: { A: "1" }, timeout: 5 })
    .runFunction(() => 1)
    .env({ B: "2" })
    .workdir("/app")
    .dockerfileCommands(["RUN echo from-lines", "COPY . /ctx"], { contextDir: tmp })
    .addLocalDir(tmp, "/late");
}

function dockerfile(name: string, text: string): string {
  const dir = path.join(tmp, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "Dockerfile"), text);
  return path.join(dir, "Dockerfile");
}

describe("a plan is plain data", () => {
  test("for every SDK base, with steps chained on it", () => {
    const bases = everySdkBase(dockerfile);
    for (const [name, img] of bases) {
      assertPlainData(img.plan(BV), name);
      assertPlainData(withSteps(img).plan(BV), `${name} with steps`);
    }
  });

  test("the values travel beside the plan: secretValues() merges every step's, nested Dockerfile stages included", () => {
    const df = dockerfile(
      "values",
      "FROM scratch AS a\nRUN --mount=type=secret,id=tok true\nFROM scratch\nCOPY --from=a / /a\n",
    );
    const given = Secret.fromObject({ tok: "v", unused: "u" });
    // BuildKit's meaning: only the secrets some RUN mounts are used.
    const img = Image.fromDockerfile(df, { secrets: given, secretsAsEnv: false }).runCommands("x", {
      secrets: { OTHER: "o" },
    });
    assert.deepEqual(img.secretValues(), { tok: "v", OTHER: "o" }, "only secrets some step uses");
    // Modal's (the default): every RUN gets every given secret as env, so all of them are used.
    const asEnv = Image.fromDockerfile(df, { secrets: given }).runCommands("x", { secrets: { OTHER: "o" } });
    assert.deepEqual(asEnv.secretValues(), { tok: "v", unused: "u", OTHER: "o" });
    const plan = img.plan(BV);
    assert.ok(!JSON.stringify(plan).includes('"v"'));
    assert.throws(
      () => img.runCommands("y", { secrets: { tok: "w" } }),
      /secret tok is given two different values in one image: by "fromDockerfile .*" and by "runCommands y"/,
    );
  });

  test("for every Dockerfile fixture case that plans (fixtures/dockerfiles and the parser tables)", () => {
    let planned = 0;
    const cases = path.join(REPO_ROOT, "fixtures", "dockerfiles");
    for (const name of readdirSync(cases).sort()) {
      const dir = path.join(cases, name);
      if (!existsSync(path.join(dir, "Dockerfile"))) continue;
      const expect = JSON.parse(readFileSync(path.join(dir, "expected.json"), "utf8")) as {
        buildArgs?: Record<string, string>;
        target?: string;
        secrets?: Record<string, string>;
        serve?: unknown;
      };
      const context = existsSync(path.join(dir, "context")) ? path.join(dir, "context") : dir;
      const buildArgs = { ...(expect.buildArgs ?? {}), ...(expect.serve ? { BASE_URL: "http://127.0.0.1:1" } : {}) };
      const img = Image.fromDockerfile(path.join(dir, "Dockerfile"), {
        contextDir: context,
        buildArgs,
        ...(expect.target ? { target: expect.target } : {}),
        ...(expect.secrets ? { secrets: expect.secrets } : {}),
      });
      assertPlainData(img.plan(BV), `fixtures/dockerfiles/${name}`);
      planned++;
    }
    assert.ok(planned >= 40, `only ${planned} fixture cases planned`);

    const tables: [string, string][] = [];
    const parser = readFixture<{ cases: { name: string; dockerfile: string }[] }>("parser-cases.json");
    for (const c of parser.cases) tables.push([`parser-cases ${c.name}`, c.dockerfile]);
    tables.push(["heredoc-cases", readFixture<{ dockerfile: string }>("heredoc-cases.json").dockerfile]);
    let tablePlanned = 0;
    for (const [i, [what, text]] of tables.entries()) {
      let img: Image;
      try {
        img = Image.fromDockerfile(dockerfile(`table-${i}`, text), { contextDir: tmp });
      } catch {
        continue; // a case Strata refuses (Windows paths, unsupported flags): no plan to check
      }
      assertPlainData(img.plan(BV), what);
      tablePlanned++;
    }
    assert.ok(tablePlanned >= 10, `only ${tablePlanned} table Dockerfiles planned`);
  });
});
