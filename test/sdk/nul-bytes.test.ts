// A NUL byte in any SDK string that reaches a path, argv word, environment entry, label or registry reference is an
// InvalidDefinitionError when the definition is written, naming the method and the argument (issue 12: a NUL reached
// a syscall at build time as `TypeError [ERR_INVALID_ARG_VALUE] … without null bytes`).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { InvalidDefinitionError } from "../../src/errors.js";
import { Image, Secret } from "../../src/index.js";

const NUL = "\0";
let dir = "";
let dockerfile = "";
before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-nul-"));
  dockerfile = path.join(dir, "Dockerfile");
  await fsp.writeFile(dockerfile, "FROM scratch\nARG A\nRUN --mount=type=secret,id=S true\n");
  await fsp.writeFile(path.join(dir, "f.txt"), "f\n");
  await fsp.writeFile(path.join(dir, "requirements.txt"), "x\n");
});
after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Each call, the method and argument its error must name. */
const cases: { call: () => unknown; method: string; argument: string }[] = [
  {
    call: () => Image.fromDockerfile(dockerfile, { buildArgs: { A: `x${NUL}y` } }),
    method: "fromDockerfile",
    argument: "buildArgs.A",
  },
  {
    call: () => Image.fromDockerfile(dockerfile, { buildArgs: { [`A${NUL}`]: "1" } }),
    method: "fromDockerfile",
    argument: "buildArgs has a key",
  },
  { call: () => Image.fromDockerfile(dockerfile, { target: `t${NUL}` }), method: "fromDockerfile", argument: "target" },
  {
    call: () => Image.fromDockerfile(dockerfile, { contextDir: `${dir}${NUL}` }),
    method: "fromDockerfile",
    argument: "contextDir",
  },
  { call: () => Image.fromDockerfile(dockerfile, { env: { E: NUL } }), method: "fromDockerfile", argument: "env.E" },
  {
    call: () => Image.fromDockerfile(dockerfile, { ignore: ["a", `b${NUL}`] }),
    method: "fromDockerfile",
    argument: "ignore[1]",
  },
  { call: () => Image.fromDockerfile(`${dockerfile}${NUL}`), method: "fromDockerfile", argument: "dockerfile" },
  {
    call: () => Image.fromDockerfile(dockerfile, { secrets: Secret.fromObject({ S: `v${NUL}` }) }),
    method: "fromDockerfile",
    argument: "secret S",
  },
  { call: () => Image.fromScratch().env({ A: `1${NUL}` }), method: "env", argument: "vars.A" },
  { call: () => Image.fromScratch().workdir(`/w${NUL}`), method: "workdir", argument: "dir" },
  { call: () => Image.fromScratch().user(`u${NUL}`), method: "user", argument: "user" },
  { call: () => Image.fromScratch().label({ k: `v${NUL}` }), method: "label", argument: "labels.k" },
  { call: () => Image.fromScratch().label({ [`k${NUL}`]: "v" }), method: "label", argument: "labels has a key" },
  { call: () => Image.fromScratch().entrypoint(["/bin/sh", `-${NUL}c`]), method: "entrypoint", argument: "argv[1]" },
  { call: () => Image.fromScratch().cmd([`x${NUL}`]), method: "cmd", argument: "argv[0]" },
  { call: () => Image.fromScratch().shell(["/bin/sh", `${NUL}`]), method: "shell", argument: "argv[1]" },
  {
    call: () => Image.fromScratch().runCommands("true", `echo ${NUL}`),
    method: "runCommands",
    argument: "arguments[1]",
  },
  {
    call: () => Image.fromScratch().runCommands("true", { env: { E: `${NUL}` } }),
    method: "runCommands",
    argument: "env.E",
  },
  {
    call: () => Image.fromScratch().runCommands("true", { secrets: [{ TOKEN: `a${NUL}` }] }),
    method: "runCommands",
    argument: "secret TOKEN",
  },
  { call: () => Image.fromScratch().aptInstall(["curl", `j${NUL}q`]), method: "aptInstall", argument: "arguments[1]" },
  {
    call: () => Image.fromScratch().pipInstall("a", { indexUrl: `http://x${NUL}` }),
    method: "pipInstall",
    argument: "indexUrl",
  },
  { call: () => Image.fromScratch().uvPipInstall(`a${NUL}`), method: "uvPipInstall", argument: "arguments[0]" },
  {
    call: () => Image.fromScratch().pipInstallFromRequirements(path.join(dir, `requirements.txt${NUL}`)),
    method: "pipInstallFromRequirements",
    argument: "requirements",
  },
  {
    call: () => Image.fromScratch().runFunction(() => 1, { env: { E: NUL } }),
    method: "runFunction",
    argument: "env.E",
  },
  {
    call: () => Image.fromScratch().addLocalFile(path.join(dir, "f.txt"), `/a${NUL}`, { copy: true }),
    method: "addLocalFile",
    argument: "remote",
  },
  {
    call: () => Image.fromScratch().addLocalFile(`${dir}${NUL}/f.txt`, "/a", { copy: true }),
    method: "addLocalFile",
    argument: "local",
  },
  {
    call: () => Image.fromScratch().addLocalDir(dir, `/d${NUL}`, { copy: true }),
    method: "addLocalDir",
    argument: "remote",
  },
  {
    call: () => Image.fromScratch().addLocalDir(dir, "/d", { ignore: [`*${NUL}`] }),
    method: "addLocalDir",
    argument: "ignore[0]",
  },
  {
    call: () => Image.fromScratch().dockerfileCommands(["RUN true"], { buildArgs: { A: NUL } }),
    method: "dockerfileCommands",
    argument: "buildArgs.A",
  },
  { call: () => Image.fromRegistry(`127.0.0.1:5000/x${NUL}`), method: "fromRegistry", argument: "ref" },
  {
    call: () => Image.fromRegistry("127.0.0.1:5000/x", { secret: { REGISTRY_PASSWORD: `p${NUL}` } }),
    method: "fromRegistry",
    argument: "secret.REGISTRY_PASSWORD",
  },
  {
    call: () => Image.fromRegistry("127.0.0.1:5000/x", { setupDockerfileCommands: ["RUN true"], env: { E: NUL } }),
    method: "fromRegistry",
    argument: "env.E",
  },
  { call: () => Image.fromId(`sha256:ab${NUL}`), method: "fromId", argument: "imageId" },
  { call: () => Image.debianSlim({ pythonVersion: `3.11${NUL}` }), method: "debianSlim", argument: "pythonVersion" },
];

describe("NUL bytes in SDK arguments", () => {
  for (const c of cases) {
    test(`${c.method}: ${c.argument}`, () => {
      assert.throws(c.call, (e: unknown) => {
        assert.ok(e instanceof InvalidDefinitionError, `not an InvalidDefinitionError: ${String(e)}`);
        assert.ok(e.message.startsWith(`${c.method}: `), e.message);
        assert.ok(e.message.includes(c.argument), `${e.message} does not name ${c.argument}`);
        assert.match(e.message, /NUL byte/);
        return true;
      });
    });
  }

  test("a file-mounted secret may hold any bytes: fromDockerfile with secretsAsEnv: false takes a NUL", () => {
    const img = Image.fromDockerfile(dockerfile, {
      secrets: Secret.fromObject({ S: `bin${NUL}ary` }),
      secretsAsEnv: false,
    });
    assert.equal(img.secretValues().S, `bin${NUL}ary`);
  });

  test("the same strings without a NUL are accepted", () => {
    Image.fromDockerfile(dockerfile, { buildArgs: { A: "x" }, env: { E: "1" }, secrets: { S: "v" } });
    Image.fromScratch()
      .env({ A: "1" })
      .workdir("/w")
      .label({ k: "v" })
      .runCommands("true", { env: { E: "e" } })
      .plan();
  });
});
