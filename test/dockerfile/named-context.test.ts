// Named build contexts (`--build-context`, BuildKit's `context:<name>`): parsing values and names as buildx does, and
// how FROM, COPY --from and RUN --mount from= resolve them in the plan (before stages and images, as BuildKit does).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import {
  buildContextFlags,
  contextName,
  parseBuildContexts,
  parseContextValue,
} from "../../src/dockerfile/named-context.js";
import { planDockerfile } from "../../src/dockerfile/plan-stages.js";
import { InvalidDefinitionError } from "../../src/errors.js";
import { Image } from "../../src/index.js";
import { render } from "../../src/plan/instructions.js";
import type { SelectRoot, Step } from "../../src/plan/step.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});
async function tmp(files: Record<string, string> = {}): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-named-ctx-"));
  dirs.push(dir);
  for (const [p, c] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await fsp.writeFile(path.join(dir, p), c);
  }
  return dir;
}

const invalid = (re: RegExp) => (e: unknown) => e instanceof InvalidDefinitionError && re.test(e.message);

describe("named context values and names", () => {
  test("names are normalised as image references, as buildx's parseContextNames and dockerui's NamedContext do", () => {
    assert.equal(contextName("alpine"), "alpine");
    assert.equal(contextName("alpine:latest"), "alpine");
    assert.equal(contextName("docker.io/library/alpine:latest"), "alpine");
    assert.equal(contextName("docker.io/library/alpine:3.18"), "alpine:3.18");
    assert.equal(contextName("localhost:5000/a/b:latest"), "localhost:5000/a/b");
    assert.equal(contextName("base"), "base");
    assert.equal(contextName("Base"), undefined, "not a valid reference: never matches");
  });

  test("values: directories, docker-image:// (scratch too), oci-layout://, git URLs; others refused with the reason", () => {
    assert.deepEqual(
      parseContextValue("a", "rel/dir", (p) => `/abs/${p}`),
      { kind: "dir", path: "/abs/rel/dir" },
    );
    assert.deepEqual(parseContextValue("a", "docker-image://alpine:3"), { kind: "image", ref: "alpine:3" });
    assert.deepEqual(parseContextValue("a", "docker-image://scratch"), { kind: "scratch" });
    assert.deepEqual(parseContextValue("a", `oci-layout:///l@sha256:${"a".repeat(64)}`), {
      kind: "oci-layout",
      dir: "/l",
      digest: `sha256:${"a".repeat(64)}`,
    });
    assert.deepEqual(parseContextValue("a", "oci-layout:///l:v1"), { kind: "oci-layout", dir: "/l", tag: "v1" });
    assert.deepEqual(parseContextValue("a", "https://example.test/r.git#main:sub"), {
      kind: "git",
      url: "https://example.test/r.git#main:sub",
    });
    assert.throws(() => parseContextValue("a", "docker-image://Bad"), invalid(/build context "a": invalid image ref/));
    assert.throws(() => parseContextValue("a", "https://example.test/file.tar"), invalid(/not a git repository/));
    assert.throws(() => parseContextValue("a", "s3://bucket/x"), invalid(/unsupported context type s3/));
    assert.throws(() => parseContextValue("a", ""), invalid(/empty/));
    assert.throws(() => parseContextValue("a", "dir\0x"), invalid(/NUL/));
  });

  test("flags: name=value (the value may hold '='); bad, reserved and duplicate names are errors", () => {
    assert.deepEqual(buildContextFlags(["a=x=y", "b=docker-image://r"]), { a: "x=y", b: "docker-image://r" });
    assert.throws(() => buildContextFlags(["novalue"]), invalid(/expects name=value/));
    assert.throws(() => buildContextFlags(["a=1", "a=2"]), invalid(/given twice/));
    assert.throws(() => parseBuildContexts({ "Bad Name": "/x" }), invalid(/invalid build context name/));
    assert.throws(() => parseBuildContexts({ context: "/x" }), invalid(/reserved/));
    assert.throws(() => parseBuildContexts({ scratch: "/x" }), invalid(/reserved/));
    assert.throws(
      () => parseBuildContexts({ alpine: "/x", "alpine:latest": "/y" }),
      invalid(/name the same context alpine/),
    );
  });
});

describe("planning with named contexts", () => {
  const contexts = (o: Record<string, string>) => parseBuildContexts(o, (p) => p);

  test("a stage of the context's name is replaced (its FROM and instructions unused), including a stage FROM another stage", () => {
    const plan = planDockerfile(
      "FROM busybox AS parent\nFROM parent AS base\nRUN echo base > /out\nFROM base\nRUN true\n",
      { namedContexts: contexts({ base: "docker-image://registry.test/img:1" }) },
    );
    const base = plan.stages[1]!;
    assert.deepEqual(base.base, {
      kind: "context",
      name: "base",
      context: { kind: "image", ref: "registry.test/img:1" },
    });
    assert.equal(base.instructions.length, 0);
    assert.deepEqual(plan.buildOrder, [1, 2], "stage parent is no longer needed");
  });

  test("FROM <name> reads the context before an image of that name; the image context's config is expanded", () => {
    const plan = planDockerfile("FROM alpine:latest\nENV P=$FOO/x\n", {
      namedContexts: contexts({ alpine: "docker-image://registry.test/base:2" }),
      baseImage: (ref) => (ref === "registry.test/base:2" ? { env: ["FOO=/from-ctx"], workingDir: "/w" } : undefined),
    });
    const s = plan.stages[0]!;
    assert.equal(s.base.kind, "context");
    assert.deepEqual(
      s.env.find(([k]) => k === "P"),
      ["P", "/from-ctx/x"],
    );
    assert.equal(s.workdir, "/w");
  });

  test("scratch is never a named context; stages named like a context win only when they are the context", () => {
    const plan = planDockerfile("FROM scratch\n", { namedContexts: contexts({ foo: "/d" }) });
    assert.deepEqual(plan.stages[0]!.base, { kind: "scratch" });
  });
});

describe("Dockerfile steps with named contexts", () => {
  const roots = (s: Step): SelectRoot[] => s.inputs.flatMap((i) => (i.kind === "select" ? [i.root] : []));

  test("COPY --from and RUN --mount from= read a directory context with its own .dockerignore; FROM a directory copies it in", async () => {
    const ctx = await tmp({ out: "o", out2: "o2", ".dockerignore": "out2\n" });
    const main = await tmp({
      Dockerfile:
        "FROM scratch AS a\nCOPY --from=files /o* /\nRUN --mount=from=files,target=/in true\n" +
        "FROM files AS b\nRUN true\n",
    });
    const df = path.join(main, "Dockerfile");
    const a = Image.fromDockerfile(df, { buildContexts: { files: ctx }, target: "a" }).plan();
    assert.deepEqual(roots(a.steps[1]!), [{ kind: "context", localPath: ctx, ignore: ["out2"] }]);
    assert.deepEqual(roots(a.steps[2]!), [{ kind: "context", localPath: ctx, ignore: ["out2"] }]);
    const b = Image.fromDockerfile(df, { buildContexts: { files: ctx }, target: "b" }).plan();
    assert.deepEqual(b.steps[0]!.base, { kind: "scratch" });
    assert.deepEqual(b.steps[1]!.instructions.map(render), ["COPY --from=files . /"]);
    assert.deepEqual(roots(b.steps[1]!), [{ kind: "context", localPath: ctx, ignore: ["out2"] }]);
    assert.match(b.steps[1]!.description, /Dockerfile:4:1 FROM files AS b \(context files\)$/);
  });

  test("COPY --from=<image context> selects from the image; a replaced stage is read from its context directly", async () => {
    const main = await tmp({
      Dockerfile: "FROM scratch AS base\nCOPY x /x\nFROM scratch\nCOPY --from=base /a /\nCOPY --from=img /b /\n",
    });
    const plan = Image.fromDockerfile(path.join(main, "Dockerfile"), {
      buildContexts: { base: "docker-image://registry.test/base:1", img: "docker-image://registry.test/img:1" },
    }).plan();
    assert.deepEqual(roots(plan.steps[1]!), [{ kind: "image", ref: "registry.test/base:1" }]);
    assert.deepEqual(roots(plan.steps[2]!), [{ kind: "image", ref: "registry.test/img:1" }]);
  });

  test("a directory context that does not exist, or is a file, is an error naming it", async () => {
    const main = await tmp({ Dockerfile: "FROM scratch\n", file: "x" });
    const df = path.join(main, "Dockerfile");
    assert.throws(
      () => Image.fromDockerfile(df, { buildContexts: { a: path.join(main, "nope") } }),
      invalid(/build context a: .*nope does not exist/),
    );
    assert.throws(
      () => Image.fromDockerfile(df, { buildContexts: { a: path.join(main, "file") } }),
      invalid(/build context a: .*file is not a directory/),
    );
    assert.throws(
      () => Image.fromDockerfile(df, { buildContexts: { a: 3 as unknown as string } }),
      invalid(/buildContexts: a must be a string/),
    );
  });
});
