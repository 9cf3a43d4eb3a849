// The pure parts of the Dockerfile → engine translation: the steps a Dockerfile compiles to (one per instruction,
// metadata without inputs, build args, heredoc forms, secrets by name only), the .dockerignore lookup order, Go glob
// segments, --chmod modes and COPY destination rules.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { chmodFunction } from "../../src/engine/chown.js";
import { copyDestination } from "../../src/engine/docker-copy.js";
import { segmentMatcher } from "../../src/engine/select.js";
import { dockerignore } from "../../src/dockerfile/to-plan.js";
import { render } from "../../src/plan/instructions.js";
import type { Plan, Step } from "../../src/plan/step.js";
import { Image } from "../../src/index.js";
import { keyInputsFor } from "../../src/engine/build.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

async function dockerfile(text: string, files: Record<string, string> = {}): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-plan-"));
  dirs.push(dir);
  for (const [p, c] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await fsp.writeFile(path.join(dir, p), c);
  }
  await fsp.writeFile(path.join(dir, "Dockerfile"), text);
  return path.join(dir, "Dockerfile");
}

const ins = (s: Step) => s.instructions.map(render);

describe("Dockerfile → steps", () => {
  test("one step per instruction; metadata instructions have no inputs; RUN steps carry the ARGs in scope", async () => {
    const df = await dockerfile("FROM scratch\nARG A=1\nENV E=x\nCOPY a.txt /a\nRUN echo $A\nLABEL l=$A\nEXPOSE 80\n", {
      "a.txt": "a",
    });
    const plan: Plan = Image.fromDockerfile(df, { buildArgs: { A: "2" } }).plan();
    assert.equal(plan.steps.length, 7);
    assert.deepEqual(plan.steps[0]!.base, { kind: "scratch" });
    // BuildKit's empty image (dockerfile2llb emptyImage) has the default PATH and WorkingDir "/".
    assert.deepEqual(ins(plan.steps[0]!), [
      "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "WORKDIR /",
    ]);
    assert.deepEqual(
      plan.steps.slice(1).map((s) => ins(s)[0]),
      ["ARG A", "ENV E=x", "COPY a.txt /a", "RUN echo $A", "LABEL l=2", "EXPOSE 80/tcp"],
    );
    for (const i of [1, 2, 5, 6]) assert.deepEqual(plan.steps[i]!.inputs, []);
    assert.deepEqual(plan.steps[4]!.buildArgs, [["A", "2"]]);
    assert.deepEqual(plan.steps[5]!.buildArgs, [["A", "2"]], "LABEL used $A");
    assert.equal(plan.steps[2]!.buildArgs, undefined, "ENV did not use an arg");
    const copy = plan.steps[3]!.inputs[0]!;
    assert.equal(copy.kind, "select");
    assert.ok(copy.kind === "select" && copy.root.kind === "context" && copy.patterns[0] === "a.txt");
    assert.match(plan.steps[4]!.description, /Dockerfile:5:1 RUN echo \$A$/);
  });

  test("proxy build args reach RUN without an ARG line and stay out of the key (BuildKit: dockerfile2llb ProxyEnv, dropped from ExecOp's cache digest)", async () => {
    const df = await dockerfile("FROM scratch\nRUN echo one\nARG no_proxy\nRUN echo two\nLABEL l=x\n");
    const proxies = { HTTP_PROXY: "http://proxy:3128", no_proxy: "localhost", ftp_proxy: "ftp://p" };
    const steps = Image.fromDockerfile(df, { buildArgs: { ...proxies, OTHER: "o" } }).plan().steps;
    const [, one, , two, label] = steps;
    // Undeclared: passed to RUN as proxy env, not as a keyed build arg.
    assert.equal(one!.buildArgs, undefined);
    // Each kind in both spellings, as BuildKit's exec op sets them (its testBuiltinArgs gives http_proxy, reads $HTTP_PROXY).
    assert.deepEqual(one!.proxyEnv, [
      ["FTP_PROXY", "ftp://p"],
      ["HTTP_PROXY", "http://proxy:3128"],
      ["NO_PROXY", "localhost"],
      ["ftp_proxy", "ftp://p"],
      ["http_proxy", "http://proxy:3128"],
      ["no_proxy", "localhost"],
    ]);
    // Declared with ARG: an ordinary (keyed) build arg as well.
    assert.deepEqual(two!.buildArgs, [["no_proxy", "localhost"]]);
    assert.deepEqual(two!.proxyEnv, one!.proxyEnv);
    // Only RUN gets them.
    assert.equal(label!.proxyEnv, undefined);
    const plain = Image.fromDockerfile(df, { buildArgs: { OTHER: "o" } }).plan().steps[1]!;
    assert.equal(plain.proxyEnv, undefined);
    const builder = { version: "2026.11" } as unknown as Parameters<typeof keyInputsFor>[0];
    assert.deepEqual(
      keyInputsFor(builder, one!, null, []),
      keyInputsFor(builder, plain, null, []),
      "proxies do not bust the cache",
    );
  });

  test("RUN --network: none and host reach the step (the sandbox grants or refuses host), default leaves the builder's", async () => {
    const df = await dockerfile(
      "FROM scratch\nRUN --network=host true\nRUN --network=none true\nRUN --network=default true\nRUN true\n",
    );
    const [, host, none, dflt, plain] = Image.fromDockerfile(df).plan().steps;
    assert.deepEqual(host!.instructions, [{ op: "RUN", command: "true", network: "host" }]);
    assert.deepEqual(none!.instructions, [{ op: "RUN", command: "true", network: "none" }]);
    assert.deepEqual(dflt!.instructions, [{ op: "RUN", command: "true" }]);
    assert.deepEqual(plain!.instructions, [{ op: "RUN", command: "true" }]);
  });

  test("RUN heredocs compile as BuildKit runs them", async () => {
    const df = await dockerfile(
      "FROM scratch\nRUN <<EOF\necho simple\nEOF\nRUN <<EOF\n#!/bin/sh\necho script\nEOF\nRUN cat <<EOF > /x\nbody\nEOF\n",
    );
    const [, simple, script, complex] = Image.fromDockerfile(df).plan().steps;
    assert.deepEqual(simple!.instructions, [{ op: "RUN", command: "echo simple\n" }]);
    const r = script!.instructions[0]!;
    assert.ok(r.op === "RUN" && r.command === "/dev/pipes/EOF");
    assert.deepEqual(r.op === "RUN" && r.mounts, [
      { type: "bind", source: "<<EOF", target: "/dev/pipes/EOF", readonly: true },
    ]);
    assert.deepEqual(script!.inputs, [
      { kind: "inline", name: "<<EOF", content: "#!/bin/sh\necho script\n", mode: 0o755 },
    ]);
    assert.deepEqual(complex!.instructions, [{ op: "RUN", command: "cat <<EOF > /x\nbody\nEOF" }]);
  });

  test("secrets are in a plan by name only; mounts render into the key text", async () => {
    const df = await dockerfile(
      "FROM scratch\nRUN --mount=type=secret,id=tok --mount=type=cache,target=/c --mount=type=tmpfs,target=/t true\n",
    );
    const plan = Image.fromDockerfile(df, { secrets: { tok: "the-value-123" }, secretsAsEnv: false }).plan();
    assert.ok(!JSON.stringify(plan).includes("the-value-123"));
    const run = plan.steps[1]!;
    assert.deepEqual(run.secrets, ["tok"]);
    assert.equal(run.secretsAsEnv, false);
    assert.deepEqual(ins(run), [
      "RUN --mount=type=secret,id=tok,target=/run/secrets/tok --mount=type=cache,id=/c,target=/c,sharing=shared --mount=type=tmpfs,target=/t true",
    ]);
  });

  test("a secret with env= and no target is env only; with a target, both (BuildKit dispatchSecret: the default /run/secrets/<id> applies only without env)", async () => {
    const df = await dockerfile(
      "FROM scratch\nRUN --mount=type=secret,id=tok,env=T true\nRUN --mount=type=secret,id=tok,env=T,target=/run/secrets/tok true\nRUN --mount=type=secret,id=tok,env=T,target=/s/t true\nRUN --mount=type=secret,id=tok true\n",
    );
    const steps = Image.fromDockerfile(df, { secrets: { tok: "v" } }).plan().steps;
    assert.deepEqual(
      steps.slice(1).map((s) => ins(s)[0]),
      [
        "RUN --mount=type=secret,id=tok,env=T true",
        "RUN --mount=type=secret,id=tok,target=/run/secrets/tok,env=T true",
        "RUN --mount=type=secret,id=tok,target=/s/t,env=T true",
        "RUN --mount=type=secret,id=tok,target=/run/secrets/tok true",
      ],
    );
  });

  test("--exclude dropping a matched source by name: kept as an excluded match (no entries) and keyed as copy.excluded", async () => {
    // BuildKit prepares the destination directory for every matched source before excludes filter the copy, so whether
    // an excluded source exists changes the result (an empty directory or nothing): it must change the key.
    const { keyInputsFor } = await import("../../src/engine/build.js");
    const { resolveInput } = await import("../../src/engine/inputs.js");
    const { loadBuilderVersion } = await import("../../src/builder-version.js");
    const keyed = async (files: Record<string, string>) => {
      const df = await dockerfile("FROM scratch\nCOPY --exclude=*.txt *.txt /d/\n", files);
      const step = Image.fromDockerfile(df).plan().steps[1]!;
      const input = step.inputs[0]!;
      const r = await resolveInput(input);
      return { r, extra: keyInputsFor(loadBuilderVersion(), step, null, [r]).extra };
    };
    const some = await keyed({ "a.txt": "a" });
    assert.deepEqual(some.r.entries, []);
    assert.deepEqual(some.r.matches, [{ rel: "a.txt", real: "a.txt", type: "file", excluded: true }]);
    assert.deepEqual(some.extra, [["copy.excluded", '["src/a.txt"]']]);
    const none = await keyed({ "a.md": "a" });
    assert.deepEqual(none.r.matches, []);
    assert.deepEqual(none.extra, []);
  });

  test("multi-stage: the target's chain starts with its FROM stage's steps; read stages are embedded and prefetched", async () => {
    const unused = await dockerfile(
      "FROM scratch AS a\nENV A=1\nFROM scratch AS b\nENV B=1\nFROM a\nCOPY --from=b /x /x\nFROM scratch AS last\n",
    );
    assert.equal(
      Image.fromDockerfile(unused).plan().steps.length,
      1,
      "the default target is the last stage, which needs no other",
    );
    const df2 = await dockerfile(
      "FROM scratch AS a\nENV A=1\nFROM scratch AS b\nENV B=1\nFROM a\nCOPY --from=b /x /x\n",
    );
    const p2 = Image.fromDockerfile(df2).plan();
    assert.deepEqual(
      p2.steps.map((s) => ins(s).join(";")),
      [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin;WORKDIR /",
        "ENV A=1",
        "COPY --from=b /x /x",
      ],
    );
    const stages = p2.steps[0]!.inputs.find((i) => i.kind === "stages");
    assert.ok(stages && stages.kind === "stages" && stages.plans.length === 1);
    const sel = p2.steps[2]!.inputs[0]!;
    assert.ok(sel.kind === "select" && sel.root.kind === "stage" && sel.root.stage === "b");
    assert.deepEqual(
      sel.kind === "select" && sel.root.kind === "stage" && sel.root.plan.steps.map((s) => ins(s).join(";")),
      ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin;WORKDIR /", "ENV B=1"],
    );
  });

  test("calls chained after fromDockerfile expand against the target stage's final ENV", async () => {
    const df = await dockerfile(
      "FROM scratch AS base\nENV ROOT=/opt/r\nWORKDIR /srv\nFROM base AS app\nENV BIN=$ROOT/bin\nWORKDIR app\nFROM scratch AS other\nENV ROOT=/wrong\n",
      { "x.txt": "x" },
    );
    const ctx = path.dirname(df);
    const last = (img: Image): string[] => ins(img.plan().steps.at(-1)!);
    const app = Image.fromDockerfile(df, { target: "app" });
    assert.deepEqual(last(app.dockerfileCommands(["COPY x.txt $BIN/"], { contextDir: ctx })), [
      "COPY x.txt /opt/r/bin/",
    ]);
    assert.deepEqual(
      last(app.dockerfileCommands(["ENV PATH=$BIN:$PATH"], { contextDir: ctx })),
      [`ENV PATH=/opt/r/bin:${"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}`],
      "FROM scratch's default PATH carries through",
    );
    const base = Image.fromDockerfile(df, { target: "base" });
    assert.deepEqual(
      last(base.dockerfileCommands(["COPY x.txt ${BIN:-none}/"], { contextDir: ctx })),
      ["COPY x.txt none/"],
      "only what the target stage set",
    );
    // SDK config calls in between are seen too.
    assert.deepEqual(last(app.env({ ROOT: "/mine" }).dockerfileCommands(["COPY x.txt $ROOT/"], { contextDir: ctx })), [
      "COPY x.txt /mine/",
    ]);
  });

  test(".dockerignore lookup: <Dockerfile>.dockerignore, then beside the Dockerfile, then in the context", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-ign-"));
    dirs.push(dir);
    const ctx = path.join(dir, "ctx");
    await fsp.mkdir(ctx);
    const df = path.join(dir, "app.Dockerfile");
    await fsp.writeFile(path.join(ctx, ".dockerignore"), "from-context\n");
    assert.deepEqual(dockerignore(df, ctx), ["from-context"]);
    await fsp.writeFile(path.join(dir, ".dockerignore"), "beside\n");
    assert.deepEqual(dockerignore(df, ctx), ["beside"]);
    await fsp.writeFile(df + ".dockerignore", "# c\n/per-file/\n!keep\n");
    assert.deepEqual(dockerignore(df, ctx), ["per-file", "!keep"]);
  });
});

describe("helpers", () => {
  test("Go filepath.Match segments", () => {
    const m = (p: string, s: string) => segmentMatcher(p).test(s);
    assert.ok(m("*.txt", "a.txt") && m("*.txt", ".hidden.txt") && !m("*.txt", "a.txt.bak"));
    assert.ok(m("file?.md", "file1.md") && !m("file?.md", "file10.md"));
    assert.ok(m("[a-c]x", "bx") && !m("[a-c]x", "dx") && m("[^a-c]x", "dx") && !m("[^a-c]x", "ax"));
    assert.ok(m("\\*", "*") && !m("\\*", "a") && m("a-b.(c)", "a-b.(c)") && m("é*", "été"));
    assert.throws(() => segmentMatcher("[abc"));
    assert.throws(() => segmentMatcher("[z-a]"));
    assert.throws(() => segmentMatcher("x\\"));
  });

  test("--chmod: octal and symbolic modes", () => {
    const f = (spec: string, mode: number, dir = false) => chmodFunction(spec)(mode, dir).toString(8);
    assert.equal(f("755", 0o600), "755");
    assert.equal(f("0640", 0o777), "640");
    assert.equal(f("u=rwX,go=rX", 0o600), "644");
    assert.equal(f("u=rwX,go=rX", 0o700), "755");
    assert.equal(f("u=rwX,go=rX", 0o700, true), "755");
    assert.equal(f("u=rwX,go=rX", 0o600, true), "755");
    assert.equal(f("+x", 0o644), "755");
    assert.equal(f("a-w,u+w", 0o666), "644");
    assert.equal(f("g=u", 0o750), "770");
    assert.equal(f("o-rwx", 0o777), "770");
    assert.equal(f("u+s", 0o755), "4755");
    assert.throws(() => chmodFunction("u=rwz"));
  });

  test("COPY destinations: relative to WORKDIR; a trailing slash, ., or several sources make a directory", () => {
    assert.deepEqual(copyDestination("x", "/app", 1), { abs: "/app/x", dir: false });
    assert.deepEqual(copyDestination("x/", "/app", 1), { abs: "/app/x", dir: true });
    assert.deepEqual(copyDestination(".", "/app", 1), { abs: "/app", dir: true });
    assert.deepEqual(copyDestination("/abs/../y", "/app", 1), { abs: "/y", dir: false });
    assert.deepEqual(copyDestination("/y", "/", 2), { abs: "/y", dir: true });
    assert.deepEqual(copyDestination("/", "/", 1), { abs: "/", dir: true });
  });
});
