// The wire round trip, without a server: every SDK base with chained steps of each kind, every Dockerfile fixture and
// a plan that sets every optional field are encoded (the client's compileRequest), sent through JSON, validated and
// decoded (the server's parseBuildRequest and planForRequest, with real input trees from a store). The decoded plan
// equals the original (local paths become server trees; a context selection becomes the client's literal matches),
// and every step's cache key is the same on both sides.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { loadBuilderVersion } from "../../src/builder-version.js";
import { keyInputsFor } from "../../src/engine/build.js";
import { resolveInput } from "../../src/engine/inputs.js";
import { isDerivedExtra } from "../../src/keys/step-extra.js";
import { initKeys, stepKey } from "../../src/keys/step-key.js";
import type { Instruction, RunMount } from "../../src/plan/instructions.js";
import { withoutUndefined } from "../../src/plan/plain.js";
import type { BaseSpec, Plan, SecretValues, SelectRoot, Step, StepInput } from "../../src/plan/step.js";
import { Image } from "../../src/sdk/image.js";
import { Secret } from "../../src/sdk/secret.js";
import { InputTrees, type TreeLease } from "../../src/service/trees.js";
import { parseBuildRequest, planForRequest } from "../../src/service/wire/decode.js";
import { compileRequest } from "../../src/service/wire/encode.js";
import type { BuildRequest } from "../../src/service/wire/schema.js";
import { LocalStore } from "../../src/store/local.js";
import type { Digest } from "../../src/util/digest.js";
import { readFixture } from "../dockerfile/fixtures.js";
import { loadCases, prepare } from "../dockerfile-e2e/support.js";
import { everySdkBase } from "../support/sdk-bases.js";

const BV = "2026.11";
const PARENT = `sha256:${"0".repeat(64)}` as Digest;
const tmp = mkdtempSync(path.join(os.tmpdir(), "strata-wire-roundtrip-"));
let store: LocalStore;
let trees: InputTrees;
const leases: TreeLease[] = [];
before(async () => {
  await initKeys();
  store = await LocalStore.open(path.join(tmp, "home"));
  trees = await InputTrees.open(store);
});
after(() => {
  for (const l of leases) l.release();
  rmSync(tmp, { recursive: true, force: true });
});

function write(rel: string, content: string): string {
  const p = path.join(tmp, rel);
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, content);
  return p;
}

/** Encode → JSON → validate → decode, as client and server do; the request as the server accepted it, and the plan. */
async function roundTrip(plan: Plan, values: SecretValues): Promise<{ request: BuildRequest; decoded: Plan }> {
  const { request, files } = await compileRequest(plan, undefined, values);
  for (const f of files.values()) await store.putBlobBytes(readFileSync(f.absPath));
  const wire = JSON.parse(JSON.stringify(request)) as unknown;
  const accepted = parseBuildRequest(wire);
  assert.deepEqual(accepted, wire, "the validator accepts the request as the client sends it");
  const decoded = await planForRequest(accepted, trees, leases, []);
  return { request: accepted, decoded };
}

/** What must survive the trip: everything but local paths (a tree on the server) and what the walk already applied. */
function comparable(plan: Plan): unknown {
  return withoutUndefined({
    builderVersion: plan.builderVersion,
    steps: plan.steps.map((s) => ({
      ...s,
      extra: s.extra.filter(([n]) => !isDerivedExtra(n)),
      inputs: s.inputs.map(comparableInput),
    })),
    deferred: plan.deferred.map((d) => ({ ...d, localPath: "<local>" })),
  });
}

function comparableInput(i: StepInput): unknown {
  switch (i.kind) {
    case "dir":
    case "file":
      // The client walked the path (applying a dir's ignore patterns); the server has a tree of exactly those entries.
      return { kind: i.kind, name: i.name };
    case "select":
      // A context selection travels as the client's matches; its keys are compared below.
      if (i.root.kind === "context") return { kind: i.kind, name: i.name, location: i.location };
      return { ...i, root: i.root.kind === "stage" ? { ...i.root, plan: comparable(i.root.plan) } : i.root };
    case "stages":
      return { ...i, plans: i.plans.map(comparable) };
    default:
      return i;
  }
}

/** Every plan of a chain: its nested plans (depth first) and itself. */
function allPlans(plan: Plan, out: Plan[] = []): Plan[] {
  for (const s of plan.steps) {
    for (const i of s.inputs) {
      if (i.kind === "stages") for (const p of i.plans) allPlans(p, out);
      if (i.kind === "select" && i.root.kind === "stage") allPlans(i.root.plan, out);
    }
  }
  out.push(plan);
  return out;
}

const isLocal = (i: StepInput) =>
  i.kind === "dir" || i.kind === "file" || i.kind === "inline" || (i.kind === "select" && i.root.kind === "context");

/** Each step's key (on a fixed parent) where its inputs are local files; undefined where they need a build or a download. */
async function keysOf(plan: Plan): Promise<(string | undefined)[]> {
  const out: (string | undefined)[] = [];
  for (const p of allPlans(plan)) {
    const b = loadBuilderVersion(p.builderVersion);
    for (const s of p.steps) {
      if (s.base?.kind === "image" || !s.inputs.every(isLocal)) {
        out.push(undefined);
        continue;
      }
      const resolved = [];
      for (const i of s.inputs) resolved.push(await resolveInput(i));
      out.push(stepKey(keyInputsFor(b, s, PARENT, resolved)));
    }
  }
  return out;
}

async function assertRoundTrip(plan: Plan, values: SecretValues, what: string): Promise<void> {
  const { decoded } = await roundTrip(plan, values);
  assert.deepEqual(comparable(decoded), comparable(plan), `${what}: the decoded plan differs`);
  const [local, remote] = [await keysOf(plan), await keysOf(decoded)];
  assert.deepEqual(remote, local, `${what}: the step keys differ`);
  keysCompared += local.filter((k) => k !== undefined).length;
}

/** Step keys compared so far (a test checks its cases compared some). */
let keysCompared = 0;

/** A layer method of each kind, chained on `img`. */
function withSteps(img: Image): Image {
  const ctx = path.join(tmp, "ctx");
  write("ctx/a.txt", "a\n");
  write("ctx/sub/b.md", "b\n");
  write("ctx/.dockerignore", "*.log\n");
  write("ctx/skip.log", "no\n");
  const single = write("single.txt", "single\n");
  return img
    .aptInstall("jq")
    .pipInstall("requests", { secrets: Secret.fromObject({ PIP_TOKEN: "t" }) })
    .uvPipInstall("httpx")
    .runCommands("echo hi", { env: { B: "2", A: "1" }, timeout: 5, secrets: Secret.fromObject({ API_TOKEN: "tok" }) })
    .runFunction((x: number) => x + 1, { args: [1] })
    .env({ B: "2" })
    .workdir("/app")
    .addLocalDir(ctx, "/ctx-copied", { copy: true, ignore: ["*.md"] })
    .addLocalFile(single, "/single.txt", { copy: true })
    .dockerfileCommands(
      ["RUN --mount=type=secret,id=API_TOKEN,env=T echo from-lines", "COPY . /ctx", "COPY --exclude=*.md sub/ /sub/"],
      { contextDir: ctx },
    )
    .addLocalDir(ctx, "/late")
    .addLocalFile(single, "/late-file.txt");
}

function dockerfile(name: string, text: string): string {
  return write(`df/${name}/Dockerfile`, text);
}

describe("wire round trip", () => {
  test("every SDK base, with steps of each kind chained on it", async () => {
    const bases = everySdkBase(dockerfile);
    for (const [name, img] of bases) {
      await assertRoundTrip(img.plan(BV), img.secretValues(), name);
      const chained = withSteps(img);
      await assertRoundTrip(chained.plan(BV), chained.secretValues(), `${name} with steps`);
    }
    assert.ok(keysCompared > 150, `only ${keysCompared} step keys compared`);
    // A registry base keeps its login kind on the wire (the server logs in the same way).
    const ecr = Image.fromAwsEcr("123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7", {
      secret: { AWS_ACCESS_KEY_ID: "AKID", AWS_SECRET_ACCESS_KEY: "k", AWS_REGION: "us-east-1" },
    });
    const { request } = await roundTrip(ecr.plan(BV), ecr.secretValues());
    assert.deepEqual(request.steps[0]!.base, {
      kind: "registry",
      ref: "123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7",
      login: "ecr",
    });
    assert.deepEqual(request.secrets, {
      AWS_ACCESS_KEY_ID: "AKID",
      AWS_REGION: "us-east-1",
      AWS_SECRET_ACCESS_KEY: "k",
    });
  });

  test("an ECR web identity token file is read by the client and sent as the token", async () => {
    const tokenFile = write("web-identity-token", "eyJ.token.sig\n");
    const img = Image.fromAwsEcr("123456789012.dkr.ecr.us-east-1.amazonaws.com/base:7", {
      secret: {
        AWS_ROLE_ARN: "arn:aws:iam::123456789012:role/pull",
        AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile,
        AWS_REGION: "us-east-1",
      },
    }).runCommands("true");
    const { request, decoded } = await roundTrip(img.plan(BV), img.secretValues());
    assert.deepEqual(request.steps[0]!.secrets, ["AWS_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN"]);
    assert.equal(request.secrets?.AWS_WEB_IDENTITY_TOKEN, "eyJ.token.sig");
    assert.ok(!JSON.stringify(request).includes(tokenFile), "the file's path is not sent");
    assert.deepEqual(await keysOf(decoded), await keysOf(img.plan(BV)), "a registry base's secrets are not keyed");
    // A request naming the file itself is refused: the service reads no file a request names.
    const forged = structuredClone(request) as unknown as {
      steps: { secrets: string[] }[];
      secrets: Record<string, string>;
    };
    forged.steps[0]!.secrets = ["AWS_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"];
    forged.secrets = {
      AWS_REGION: "us-east-1",
      AWS_ROLE_ARN: "arn:aws:iam::123456789012:role/pull",
      AWS_WEB_IDENTITY_TOKEN_FILE: "/var/run/secrets/token",
    };
    assert.throws(
      () => parseBuildRequest(forged),
      /steps\[0\]\.secrets: AWS_WEB_IDENTITY_TOKEN_FILE names a file.*send the token itself as AWS_WEB_IDENTITY_TOKEN/,
    );
  });

  test("every Dockerfile fixture case (fixtures/dockerfiles and the parser tables)", async () => {
    let cases = 0;
    for (const c of loadCases()) {
      // The case's context as the e2e suite lays it out (busybox tree, archives); `serve` cases' URLs are not fetched.
      const p = await prepare(c);
      try {
        const img = Image.fromDockerfile(p.dockerfile, {
          contextDir: p.context,
          buildArgs: p.buildArgs,
          ...(c.expect.target ? { target: c.expect.target } : {}),
          ...(c.expect.secrets ? { secrets: c.expect.secrets } : {}),
        });
        await assertRoundTrip(img.plan(BV), img.secretValues(), `fixtures/dockerfiles/${c.name}`);
      } finally {
        await p.close();
      }
      cases++;
    }
    assert.ok(cases >= 40, `only ${cases} fixture cases`);

    const tables: [string, string][] = [];
    for (const c of readFixture<{ cases: { name: string; dockerfile: string }[] }>("parser-cases.json").cases)
      tables.push([`parser-cases ${c.name}`, c.dockerfile]);
    tables.push(["heredoc-cases", readFixture<{ dockerfile: string }>("heredoc-cases.json").dockerfile]);
    let planned = 0;
    for (const [i, [what, text]] of tables.entries()) {
      let img: Image;
      try {
        const df = dockerfile(`table-${i}`, text);
        img = Image.fromDockerfile(df, { contextDir: path.dirname(df) });
      } catch {
        continue; // a case Strata refuses (Windows paths, unsupported flags): no plan to send
      }
      try {
        await assertRoundTrip(img.plan(BV), img.secretValues(), what);
      } catch (e) {
        // The tables come without a context: a COPY of a file they do not have cannot be selected by the client.
        if (/not found in the build context/.test(String(e))) continue;
        throw e;
      }
      planned++;
    }
    assert.ok(planned >= 10, `only ${planned} table Dockerfiles`);
  });

  test("every field of every plan type is accepted and comes back", async () => {
    const dir = path.join(tmp, "all-fields");
    write("all-fields/x.txt", "x\n");
    write("all-fields/d/y.txt", "y\n");
    const file = write("all-fields-file.txt", "f\n");
    // Required<…>: a field added to a plan type must be added here, or this file does not compile.
    const mounts: { [T in RunMount["type"]]: Required<Extract<RunMount, { type: T }>> } = {
      bind: { type: "bind", source: "ctx", target: "/b", readonly: false },
      cache: {
        type: "cache",
        id: "c",
        target: "/c/../cache",
        sharing: "locked",
        readonly: true,
        mode: 0o700,
        uid: 1,
        gid: 2,
        seed: "ctx",
        source: "sub/dir",
      },
      secret: {
        type: "secret",
        id: "TOK",
        target: "/run/t",
        env: "TOK_ENV",
        required: true,
        mode: 0o400,
        uid: 3,
        gid: 4,
      },
      tmpfs: { type: "tmpfs", target: "/t", size: 1024 },
    };
    const copy = {
      source: "ctx",
      dest: "rel/",
      sources: ["x.txt"],
      inputs: ["<<EOF"],
      from: "stage",
      chown: "1:2",
      chmod: "755",
      link: true,
      exclude: ["*.md"],
      parents: true,
    };
    const instructions: { [O in Instruction["op"]]: Required<Extract<Instruction, { op: O }>> } = {
      RUN: {
        op: "RUN",
        command: ["sh", "-c", "true"],
        mounts: Object.values(mounts),
        network: "none",
        hostname: "build-host",
      },
      COPY: { op: "COPY", ...copy },
      ADD: { op: "ADD", ...copy, unpack: false, checksum: "sha256:" + "1".repeat(64) },
      ENV: { op: "ENV", vars: [["A", "1"]] },
      WORKDIR: { op: "WORKDIR", path: "sub", create: true },
      USER: { op: "USER", user: "1000:1000" },
      ENTRYPOINT: { op: "ENTRYPOINT", argv: ["run"], keepCmd: true, shell: false },
      CMD: { op: "CMD", argv: ["echo hi"], shell: true },
      SHELL: { op: "SHELL", argv: ["/bin/bash", "-c"] },
      LABEL: { op: "LABEL", labels: [["k", "v"]] },
      ARG: { op: "ARG", names: ["A"] },
      EXPOSE: { op: "EXPOSE", ports: ["80/tcp"] },
      VOLUME: { op: "VOLUME", paths: ["/data"] },
      STOPSIGNAL: { op: "STOPSIGNAL", signal: "SIGTERM" },
      HEALTHCHECK: {
        op: "HEALTHCHECK",
        test: ["CMD", "true"],
        interval: 1e9,
        timeout: 2e9,
        startPeriod: 3e9,
        startInterval: 4e9,
        retries: 5,
      },
      ONBUILD: { op: "ONBUILD", expression: "RUN true" },
      MAINTAINER: { op: "MAINTAINER", name: "me" },
    };
    const stage: Plan = Image.fromScratch().env({ S: "1" }).plan(BV);
    const roots: { [K in SelectRoot["kind"]]: Required<Extract<SelectRoot, { kind: K }>> } = {
      context: { kind: "context", localPath: dir, ignore: ["*.log"] },
      stage: { kind: "stage", stage: "build", plan: stage },
      image: { kind: "image", ref: "127.0.0.1:5000/img:1", insecure: true },
      git: { kind: "git", url: "https://example.invalid/r.git#main:sub", keepGitDir: true, checksum: "abcd1234" },
    };
    const location = { file: "Dockerfile", line: 3, column: 1 };
    const inputs: { [K in StepInput["kind"]]: Required<Extract<StepInput, { kind: K }>> } = {
      dir: { kind: "dir", name: "ctx", localPath: dir, ignore: ["d"] },
      file: { kind: "file", name: "one", localPath: file },
      inline: { kind: "inline", name: "<<EOF", content: "heredoc\n", mode: 0o644 },
      select: {
        kind: "select",
        name: "sel",
        root: roots.context,
        patterns: ["*.txt", "d"],
        exclude: ["d/y.txt"],
        parents: false,
        location,
        excludedMatches: [],
      },
      url: {
        kind: "url",
        name: "url0",
        url: "https://example.invalid/f.tgz",
        checksum: "sha256:" + "2".repeat(64),
        location,
        help: "or copy it in",
      },
      stages: { kind: "stages", name: "stages", plans: [stage] },
    };
    const { excludedMatches: _contextOnly, ...fromElsewhere } = inputs.select;
    const bases: { [K in BaseSpec["kind"]]: Required<Extract<BaseSpec, { kind: K }>> } = {
      scratch: { kind: "scratch" },
      debian: Image.debianSlim().plan(BV).steps[0]!.base as Required<Extract<BaseSpec, { kind: "debian" }>>,
      registry: { kind: "registry", ref: "127.0.0.1:5000/base:1", insecure: true, login: "gcp", gcpMode: "json_key" },
      image: { kind: "image", imageId: "sha256:" + "3".repeat(64) },
    };
    const step = (s: Partial<Step>): Required<Step> => ({
      method: "dockerfile",
      description: "all fields",
      base: bases.scratch,
      instructions: [],
      inputs: [],
      secrets: [],
      secretsAsEnv: false,
      env: { Z: "1", A: "2" },
      buildArgs: [["A", "1"]],
      proxyEnv: [["HTTP_PROXY", "http://proxy"]],
      forceBuild: true,
      timeoutMs: 60_000,
      extra: [["uvVersion", "0.5"]],
      ...s,
    });
    const { base: _none, ...noBase } = step({});
    const plan: Plan = {
      builderVersion: BV,
      steps: [
        step({ base: bases.registry, secrets: ["SERVICE_ACCOUNT_JSON"], secretsAsEnv: true }),
        {
          ...noBase,
          instructions: Object.values(instructions),
          inputs: Object.values(inputs).filter((i) => i.kind !== "select"),
          secrets: ["TOK"],
        },
        // `excludedMatches` is a server's re-selection of a client's context (decode.ts), never a stage's or image's.
        {
          ...noBase,
          instructions: [instructions.COPY],
          inputs: [
            inputs.select,
            { ...fromElsewhere, name: "sel-stage", root: roots.stage },
            { ...fromElsewhere, name: "sel-image", root: roots.image },
            { ...fromElsewhere, name: "sel-git", root: roots.git },
          ],
        },
      ],
      deferred: [
        { kind: "dir", localPath: dir, remotePath: "/late", ignore: ["*.log"] },
        { kind: "file", localPath: file, remotePath: "/late-file", ignore: [] },
      ],
    };
    const values = { SERVICE_ACCOUNT_JSON: "{}", TOK: "secret" };
    const { decoded } = await roundTrip(plan, values);
    assert.deepEqual(comparable(decoded), comparable(plan));
    assert.deepEqual(await keysOf(decoded), await keysOf(plan));
    // Each base kind travels too (a debian base as its Python series, made again by the server).
    for (const base of Object.values(bases)) {
      const p: Plan = {
        builderVersion: BV,
        steps: [base.kind === "debian" ? Image.debianSlim().plan(BV).steps[0]! : step({ base, secrets: [] })],
        deferred: [],
      };
      const { decoded: d } = await roundTrip(p, {});
      assert.deepEqual(comparable(d), comparable(p), base.kind);
    }
  });
});
