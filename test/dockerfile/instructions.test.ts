import { test, describe } from "node:test";
import assert from "node:assert/strict";
import type { PlannedInstruction } from "../../src/dockerfile/expand-instruction.js";
import { parseGoDuration, parseInstructions } from "../../src/dockerfile/parse-instructions.js";
import { parsePlatform, planDockerfile, type DockerfilePlan } from "../../src/dockerfile/plan-stages.js";
import { DockerfileSyntaxError } from "../../src/dockerfile/errors.js";
import { InvalidDefinitionError } from "../../src/errors.js";
import { readFixture } from "./fixtures.js";

interface ErrCase {
  name: string;
  dockerfile: string;
  line: number;
  column: number;
  contains: string;
  upstream: string;
}
const errs = readFixture<{ note: string; cases: ErrCase[] }>("instruction-error-cases.json");

function rejects(df: string, check: { line?: number; column?: number; contains?: string | RegExp }): void {
  assert.throws(
    () => planDockerfile(df),
    (e: unknown) => {
      assert.ok(e instanceof DockerfileSyntaxError, `expected DockerfileSyntaxError, got ${String(e)}`);
      if (check.line !== undefined) assert.equal(e.line, check.line, e.message);
      if (check.column !== undefined) assert.equal(e.column, check.column, e.message);
      if (typeof check.contains === "string") assert.ok(e.message.includes(check.contains), e.message);
      else if (check.contains) assert.match(e.message, check.contains);
      assert.equal(e.code, "DOCKERFILE_SYNTAX");
      assert.equal(e.fault, "user");
      return true;
    },
  );
}

function ins(plan: DockerfilePlan, stage = plan.target): PlannedInstruction[] {
  return [...plan.stages[stage]!.instructions];
}

describe("BuildKit instructions/parse_test.go tables (fixtures/dockerfile/instruction-error-cases.json)", () => {
  test("fixture names its upstream source", () => assert.match(errs.note, /[0-9a-f]{40}/));
  for (const c of errs.cases) {
    test(c.name, () => rejects(c.dockerfile, { line: c.line, column: c.column, contains: c.contains }));
  }
  test("TestHealthCheckCmd: shell form becomes CMD-SHELL", () => {
    const [hc] = ins(planDockerfile("FROM scratch\nHEALTHCHECK CMD hello world"));
    assert.equal(hc!.kind, "HEALTHCHECK");
    assert.deepEqual(hc!.kind === "HEALTHCHECK" && hc!.test, ["CMD-SHELL", "hello world"]);
  });
  test("TestParseOptInterval: below 1ms is rejected, 1ms and 0s are fine", () => {
    rejects("FROM scratch\nHEALTHCHECK --interval=50ns CMD x", { contains: "cannot be less than 1ms" });
    const [a, b] = ins(
      planDockerfile(
        'FROM scratch\nHEALTHCHECK --interval=1ms CMD x\nHEALTHCHECK --start-period=0s --retries=0 --start-interval=2m30s CMD ["x"]',
      ),
    );
    assert.ok(a!.kind === "HEALTHCHECK" && a!.intervalNs === 1e6);
    assert.ok(b!.kind === "HEALTHCHECK" && b!.startPeriodNs === 0 && b!.retries === 0 && b!.startIntervalNs === 150e9);
    assert.deepEqual(b!.kind === "HEALTHCHECK" && b!.test, ["CMD", "x"]);
  });
});

describe("error messages and locations", () => {
  test('unknown instruction reads "Dockerfile:12:5: unknown instruction "RUNN"" and suggests a fix', () => {
    const df = "FROM scratch\n" + "\n".repeat(10) + "    RUNN echo hi\n";
    try {
      planDockerfile(df);
      assert.fail("no error");
    } catch (e) {
      assert.ok(e instanceof DockerfileSyntaxError);
      assert.equal(e.message, 'Dockerfile:12:5: unknown instruction "RUNN" (did you mean RUN?)');
      assert.deepEqual([e.file, e.line, e.column], ["Dockerfile", 12, 5]);
    }
  });
  test("the file name option is used", () => {
    assert.throws(
      () => planDockerfile("FROM scratch\nFOO", { file: "build/app.Dockerfile" }),
      /^DockerfileSyntaxError: build\/app\.Dockerfile:2:1|build\/app\.Dockerfile:2:1/,
    );
  });
  test("unknown and bad flags point at the flag", () => {
    rejects("FROM scratch\nCOPY --chown=1 --form=x a b", {
      line: 2,
      column: 16,
      contains: 'unknown flag "--form" for COPY',
    });
    rejects("FROM scratch\nCOPY --link=maybe a b", { column: 6, contains: "expecting boolean value for flag --link" });
    rejects("FROM scratch\nCOPY --from a b", { contains: "missing a value on flag: --from" });
    rejects("FROM scratch\nCOPY --from=a --from=b a b", { contains: "duplicate flag specified: --from" });
    rejects("FROM scratch\nRUN --network=bridge true", { contains: "unsupported network mode" });
    rejects("FROM scratch\nRUN --security=x true", { contains: "unsupported security mode" });
    rejects("FROM scratch\nWORKDIR --x=1 /a", { contains: "WORKDIR takes no flags" });
    rejects("FROM --plaform=linux/amd64 scratch", { contains: "did you mean --platform?" });
  });
  test("instructions before FROM, empty files and files without FROM", () => {
    rejects("RUN true\nFROM scratch", { line: 1, contains: "no build stage" });
    rejects("", { contains: "file with no instructions" });
    rejects("# only\n# comments\n", { contains: "file with no instructions" });
    rejects("ARG A=1\n", { contains: "no FROM" });
  });
  test("missing arguments", () => {
    rejects("FROM", { line: 1, contains: "FROM requires either one or three arguments" });
    rejects("FROM a b", { contains: "FROM requires either one or three arguments" });
    rejects("FROM a AS 1x", { contains: "invalid name for build stage" });
    rejects("FROM scratch\nRUN", { contains: "RUN requires at least one argument" });
    rejects("FROM scratch\nSHELL /bin/sh -c", { contains: "JSON form" });
    rejects("FROM scratch\nHEALTHCHECK NONE x", { contains: "HEALTHCHECK NONE takes no arguments" });
    rejects("FROM scratch\nHEALTHCHECK FOO x", { contains: 'unknown type "FOO"' });
    rejects("FROM scratch\nHEALTHCHECK CMD", { contains: "missing command after HEALTHCHECK CMD" });
    rejects("FROM scratch\nENV A", { contains: "ENV must have two arguments" });
    rejects("FROM scratch\nENV A=1 B", { contains: "can't find = in" });
    rejects("FROM scratch\nLABEL =x", { contains: "LABEL names can not be blank" });
    rejects("FROM scratch\nARG =x", { contains: "ARG names can not be blank" });
    rejects("FROM scratch\nCOPY a <<EOF\nx\nEOF", { contains: "cannot accept a heredoc as a destination" });
    rejects('FROM scratch\nCMD [ "echo", [ "nested json" ] ]', { contains: "strings only" });
  });
});

describe("stages, targets and dependencies", () => {
  const multi = [
    "ARG BASE=alpine",
    "FROM scratch AS tools",
    "COPY a /a",
    "FROM ${BASE}:3.19 AS build",
    "COPY --from=tools /a /b",
    "RUN --mount=type=cache,target=/root/.cache --mount=type=bind,from=deps,source=/x,target=/y make",
    "FROM busybox AS deps",
    "RUN true",
    "FROM build AS unused",
    "FROM scratch",
    "COPY --from=build /out /out",
    "COPY --from=0 /a /a0",
    "COPY --from=docker.io/library/alpine:3 /etc/os-release /",
  ].join("\n");
  test("default target is the last stage; buildOrder lists needed stages, dependencies first", () => {
    const plan = planDockerfile(multi);
    assert.equal(plan.target, 4);
    assert.deepEqual(plan.buildOrder, [0, 2, 1, 4]);
    assert.deepEqual(plan.stages[1]!.base, { kind: "image", ref: "alpine:3.19" });
    assert.deepEqual(plan.stages[1]!.dependsOn, [0, 2]);
    assert.deepEqual(plan.stages[3]!.base, { kind: "stage", stage: 1 });
    assert.deepEqual(plan.stages[4]!.imageRefs, ["docker.io/library/alpine:3"]);
    const copies = ins(plan).filter((i) => i.kind === "COPY");
    assert.deepEqual(
      copies.map((c) => c.kind === "COPY" && [c.fromStage, c.fromImage]),
      [
        [1, undefined],
        [0, undefined],
        [undefined, "docker.io/library/alpine:3"],
      ],
    );
  });
  test("--target picks a stage by name (case-insensitive) and only what it needs", () => {
    const plan = planDockerfile(multi, { target: "Build", buildArgs: { BASE: "debian" } });
    assert.equal(plan.target, 1);
    assert.deepEqual(plan.buildOrder, [0, 2, 1]);
    assert.deepEqual(plan.stages[1]!.base, { kind: "image", ref: "debian:3.19" });
    assert.throws(() => planDockerfile(multi, { target: "nope" }), InvalidDefinitionError);
  });
  test("a broken stage the target does not need does not fail the plan", () => {
    const df = "FROM scratch AS a\nWORKDIR ${X:?must be set}\nFROM scratch AS b\nRUN true";
    assert.deepEqual(planDockerfile(df).buildOrder, [1]);
    rejects(df.replace("AS b", "AS b\nCOPY --from=a /x /x"), { line: 2, contains: "X: must be set" });
  });
  test("COPY --from with a variable, the current stage, a bad index; duplicate names; cycles", () => {
    rejects("FROM scratch\nARG S=a\nCOPY --from=$S x y", {
      line: 3,
      column: 6,
      contains: "variable expansion is not supported for --from",
    });
    rejects("FROM scratch AS a\nCOPY --from=a x y", { contains: "refers to the current stage" });
    rejects("FROM scratch\nCOPY --from=0 x y", { contains: "invalid stage index" });
    rejects("FROM scratch\nCOPY --from=7 x y", { contains: "invalid stage index" });
    rejects("FROM scratch AS a\nFROM scratch AS A", { line: 2, contains: 'duplicate stage name "a"' });
    rejects("FROM scratch AS a\nCOPY --from=b x y\nFROM a AS b", { contains: "circular dependency detected on stage" });
  });
  test('COPY --from a stage defined later is an error (BuildKit dispatchState: "cannot copy from stage …, it needs to be defined before current stage …")', () => {
    // dockerfile2llb dispatches stages in order and refuses a COPY source stage not yet dispatched; unnamed stages
    // are called stage-<index> in the message.
    assert.throws(
      () =>
        planDockerfile("FROM scratch AS a\nCOPY --from=later x y\nFROM scratch AS later\nCOPY z /z", { target: "a" }),
      /Dockerfile:2:1: cannot copy from stage "later", it needs to be defined before current stage "a"/,
    );
    rejects(
      "FROM scratch AS a\nCOPY --from=later x y\nFROM scratch AS later\nCOPY z /z\nFROM scratch\nCOPY --from=a y y",
      {
        line: 2,
        column: 1,
        contains: 'cannot copy from stage "later", it needs to be defined before current stage "a"',
      },
    );
    rejects("FROM scratch\nCOPY --from=1 x y\nFROM scratch\nCOPY z /z\nFROM scratch\nCOPY --from=0 y y", {
      line: 2,
      contains: 'cannot copy from stage "1", it needs to be defined before current stage "stage-0"',
    });
    // an earlier stage, by name or index, is fine
    assert.doesNotThrow(() =>
      planDockerfile("FROM scratch AS a\nCOPY z /z\nFROM scratch\nCOPY --from=a z /z\nCOPY --from=0 z /y"),
    );
  });
  test("FROM <stage> inherits ENV and WORKDIR; FROM x AS x is the image x", () => {
    const plan = planDockerfile("FROM alpine AS alpine\nENV P=/x\nWORKDIR /w\nFROM alpine\nWORKDIR sub\nENV Q=$P");
    assert.deepEqual(plan.stages[0]!.base, { kind: "image", ref: "alpine" });
    assert.deepEqual(plan.stages[1]!.base, { kind: "stage", stage: 0 });
    const [wd, env] = ins(plan);
    assert.ok(wd!.kind === "WORKDIR" && wd!.resolved === "/w/sub");
    assert.ok(env!.kind === "ENV" && env!.env[0]!.value === "/x");
  });
  test("FROM --platform expands global args and is parsed", () => {
    const plan = planDockerfile("FROM --platform=$BUILDPLATFORM scratch AS b\nFROM --platform=linux/arm64/v8 scratch");
    assert.deepEqual(plan.stages[0]!.platform, { os: "linux", architecture: "amd64" });
    assert.deepEqual(plan.stages[1]!.platform, { os: "linux", architecture: "arm64", variant: "v8" });
    assert.deepEqual(parsePlatform("x86_64"), { os: "linux", architecture: "amd64" });
    assert.equal(parsePlatform("plan10/amd64"), undefined);
    rejects("FROM ${NOPE}", { contains: "should not be blank" });
  });
});

describe("ARG scoping and expansion (BuildKit dispatch rules)", () => {
  test("global ARGs are only for FROM unless redeclared; platform ARGs likewise", () => {
    const plan = planDockerfile(
      [
        "ARG V=1",
        "ARG IMG=busybox:${V}",
        "FROM $IMG",
        "ENV A=[$V] T=[$TARGETARCH]",
        "ARG V",
        "ARG TARGETARCH",
        "ENV B=[$V] T=[$TARGETARCH]",
      ].join("\n"),
    );
    assert.deepEqual(plan.stages[0]!.base, { kind: "image", ref: "busybox:1" });
    assert.deepEqual(plan.metaArgs, [
      { key: "V", value: "1" },
      { key: "IMG", value: "busybox:1" },
    ]);
    const envs = ins(plan).filter((i) => i.kind === "ENV");
    assert.deepEqual(
      envs.map((e) => e.kind === "ENV" && e.env.map((kv) => kv.value)),
      [
        ["[]", "[]"],
        ["[1]", "[amd64]"],
      ],
    );
  });
  test("--build-arg overrides defaults, global and in-stage; unused build args are reported", () => {
    const plan = planDockerfile("ARG G=g\nFROM scratch\nARG G\nARG S=s\nLABEL g=$G s=$S", {
      buildArgs: { G: "G!", S: "S!", X: "x" },
    });
    const label = ins(plan).find((i) => i.kind === "LABEL")!;
    assert.deepEqual(label.kind === "LABEL" && label.labels.map((l) => l.value), ["G!", "S!"]);
    assert.deepEqual(label.usedArgs, ["G", "S"]);
    assert.deepEqual(plan.unusedBuildArgs, ["X"]);
  });
  test("ENV wins over ARG; an ARG is in scope from its line on; unset ARG expands to the :- default", () => {
    const plan = planDockerfile(
      "FROM scratch\nLABEL a=${A:-before}\nARG A=arg\nLABEL a=$A\nENV A=env\nLABEL a=$A\nARG U\nLABEL u=${U-unset}",
    );
    const labels = ins(plan).filter((i) => i.kind === "LABEL");
    assert.deepEqual(
      labels.map((l) => l.kind === "LABEL" && l.labels[0]!.value),
      ["before", "arg", "env", "unset"],
    );
    assert.deepEqual(
      labels.map((l) => l.usedArgs),
      [[], ["A"], [], []],
    );
  });
  test("one ENV sees one snapshot (ENV abc=bye def=$abc)", () => {
    const plan = planDockerfile("FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc");
    const envs = ins(plan).filter((i) => i.kind === "ENV");
    assert.deepEqual(
      envs.map((e) => e.kind === "ENV" && e.env.map((kv) => `${kv.key}=${kv.value}`)),
      [["abc=hello"], ["abc=bye", "def=hello"], ["ghi=bye"]],
    );
  });
  test("RUN, CMD, ENTRYPOINT, SHELL and HEALTHCHECK are not expanded; RUN sees the ARGs in scope", () => {
    const plan = planDockerfile(
      'FROM scratch\nARG A=1\nENV E=2\nRUN echo $A ${s%s}\nCMD echo $A\nENTRYPOINT ["$A"]\nHEALTHCHECK CMD $A',
    );
    const [, , run, cmd, ep, hc] = ins(plan);
    assert.ok(run!.kind === "RUN");
    assert.deepEqual(run!.command, ["echo $A ${s%s}"]);
    assert.deepEqual(run!.argsInScope, [["A", "1"]]);
    assert.deepEqual(run!.usedArgs, []);
    assert.ok(cmd!.kind === "CMD" && cmd!.command[0] === "echo $A" && cmd!.prependShell);
    assert.ok(ep!.kind === "ENTRYPOINT" && ep!.command[0] === "$A" && !ep!.prependShell);
    assert.ok(hc!.kind === "HEALTHCHECK" && hc!.test[1] === "$A");
  });
  test("ENV/LABEL quoting, legacy ENV form, ARG name expansion", () => {
    const plan = planDockerfile(
      'FROM scratch\nENV a="x y" b=\'$c\' c=d\\ e\nENV legacy value with  spaces\nARG N=K\nARG ${N}_V=v\nLABEL "k 1"=$K_V',
    );
    const [e1, e2, , a2, l] = ins(plan);
    assert.deepEqual(e1!.kind === "ENV" && e1!.env, [
      { key: "a", value: "x y" },
      { key: "b", value: "$c" },
      { key: "c", value: "d e" },
    ]);
    assert.deepEqual(e2!.kind === "ENV" && e2!.env, [{ key: "legacy", value: "value with  spaces" }]);
    assert.deepEqual(a2!.kind === "ARG" && a2!.args, [{ key: "K_V", value: "v" }]);
    assert.deepEqual(l!.kind === "LABEL" && l!.labels, [{ key: "k 1", value: "v" }]);
  });
  test("expansion errors carry the instruction's location", () => {
    rejects("FROM scratch\n\n  WORKDIR ${DIR:?set DIR}", { line: 3, column: 3, contains: "DIR: set DIR" });
    rejects("FROM scratch\nENV A=${B", { line: 2, contains: "missing '}'" });
    rejects('FROM scratch\nCOPY "a b" /c', { line: 2, contains: "double-quote" });
  });
  test("a --build-arg replaces an ARG's default without expanding it (BuildKit: the default is only evaluated when no build arg is given)", () => {
    // Issue 12: BuildKit's dispatchArg/meta-arg handling takes the --build-arg value as is and never expands the
    // default, so `${FOO:?msg}` in the default does not fail when BAR is given; without the build arg it does.
    const staged = "FROM scratch\nARG BAR=${FOO:?need-FOO}\nLABEL bar=$BAR";
    const label = ins(planDockerfile(staged, { buildArgs: { BAR: "given" } })).find((i) => i.kind === "LABEL")!;
    assert.deepEqual(label.kind === "LABEL" && label.labels.map((l) => l.value), ["given"]);
    rejects(staged, { line: 2, contains: "need-FOO" });
    const global = "ARG BAR=${FOO:?need-FOO}\nFROM scratch\nARG BAR\nLABEL bar=$BAR";
    const plan = planDockerfile(global, { buildArgs: { BAR: "given" } });
    assert.deepEqual(plan.metaArgs, [{ key: "BAR", value: "given" }]);
    const gl = ins(plan).find((i) => i.kind === "LABEL")!;
    assert.deepEqual(gl.kind === "LABEL" && gl.labels.map((l) => l.value), ["given"]);
    rejects(global, { line: 1, contains: "need-FOO" });
  });
  test("TARGETSTAGE is the target stage's name, `default` for an unnamed last stage (BuildKit's automatic ARG)", () => {
    // BuildKit predefines TARGETSTAGE in the global scope like the platform ARGs: usable in FROM and in a stage
    // after `ARG TARGETSTAGE`; it names the stage being built (--target, else the last stage, `default` if unnamed).
    const df =
      "ARG IMG=${TARGETSTAGE}\nFROM scratch AS build\nARG TARGETSTAGE\nLABEL t=$TARGETSTAGE\nFROM scratch\nARG TARGETSTAGE\nLABEL t=$TARGETSTAGE";
    const label = (p: DockerfilePlan) => {
      const l = ins(p).find((i) => i.kind === "LABEL")!;
      return l.kind === "LABEL" ? l.labels[0]!.value : undefined;
    };
    const last = planDockerfile(df);
    assert.equal(label(last), "default");
    assert.deepEqual(last.metaArgs, [{ key: "IMG", value: "default" }]);
    const build = planDockerfile(df, { target: "build" });
    assert.equal(label(build), "build");
    assert.deepEqual(build.metaArgs, [{ key: "IMG", value: "build" }]);
    const named = planDockerfile("FROM scratch AS one\nFROM scratch AS Two\nARG TARGETSTAGE\nLABEL t=$TARGETSTAGE");
    assert.equal(label(named), "two");
  });
  test("escape directive applies to expansion", () => {
    const plan = planDockerfile("# escape=`\nFROM scratch\nENV A=C:\\dir B=`$x");
    const [e] = ins(plan);
    assert.deepEqual(e!.kind === "ENV" && e!.env.map((kv) => kv.value), ["C:\\dir", "$x"]);
  });
});

describe("COPY, ADD, RUN mounts, EXPOSE, WORKDIR, VOLUME, ONBUILD", () => {
  test("COPY/ADD flags and expansion", () => {
    const plan = planDockerfile(
      [
        "FROM scratch",
        "ARG U=1000 M=0755 D=/app",
        "COPY --chown=$U:$U --chmod=$M --link --parents --exclude=*.md --exclude=tmp src/ $D/",
        "ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false --chmod=u=rwX,go=rX https://x/y.tar.gz /z",
        "COPY --link=false a b",
      ].join("\n"),
    );
    const [, c, a, c2] = ins(plan);
    assert.ok(c!.kind === "COPY");
    assert.deepEqual(
      {
        chown: c!.chown,
        chmod: c!.chmod,
        link: c!.link,
        parents: c!.parents,
        exclude: c!.exclude,
        sources: c!.sources,
        dest: c!.dest,
        used: c!.usedArgs,
      },
      {
        chown: "1000:1000",
        chmod: "0755",
        link: true,
        parents: true,
        exclude: ["*.md", "tmp"],
        sources: ["src/"],
        dest: "/app/",
        used: ["D", "M", "U"],
      },
    );
    assert.ok(a!.kind === "ADD");
    assert.deepEqual([a!.checksum, a!.keepGitDir, a!.unpack, a!.chmod], ["sha256:abc", true, false, "u=rwX,go=rX"]);
    assert.ok(c2!.kind === "COPY" && c2!.link === false);
    rejects("FROM scratch\nCOPY --chmod=999 a b", {
      contains: "invalid chmod parameter: '999'. it should be octal string and between 0 and 07777",
    });
    rejects("FROM scratch\nCOPY --chmod=u+q a b", { contains: 'invalid --chmod "u+q": expected an octal mode' });
    rejects("FROM scratch\nADD --from=x a b", { contains: 'unknown flag "--from" for ADD' });
    rejects("FROM scratch\nADD --parents a b", { contains: 'unknown flag "--parents" for ADD' });
  });
  test("COPY heredocs: expanded unless the delimiter is quoted; <<- strips tabs", () => {
    const plan = planDockerfile(
      "FROM scratch\nARG N=world\nCOPY <<A <<'B' <<-C /dst/\nhello $N \"q\"\nA\nraw $N\nB\n\tchomped $N\nC\n",
    );
    const [, c] = ins(plan);
    assert.ok(c!.kind === "COPY");
    assert.deepEqual(c!.inline, [
      { path: "A", data: 'hello world "q"\n', expand: true },
      { path: "B", data: "raw $N\n", expand: false },
      { path: "C", data: "chomped world\n", expand: true },
    ]);
    assert.deepEqual(c!.sources, []);
    assert.deepEqual(c!.usedArgs, ["N"]);
  });
  test("RUN heredocs and exec form", () => {
    const plan = planDockerfile('FROM scratch\nRUN <<EOF\n#!/bin/sh\necho $HOME\nEOF\nRUN ["echo", "<<EOF"]');
    const [r1, r2] = ins(plan);
    assert.ok(
      r1!.kind === "RUN" && r1!.heredocs[0]!.content === "#!/bin/sh\necho $HOME\n" && r1!.command[0] === "<<EOF",
    );
    assert.ok(r2!.kind === "RUN" && !r2!.prependShell && r2!.heredocs.length === 0);
  });
  test("RUN --mount types, defaults and expansion", () => {
    const plan = planDockerfile(
      [
        "FROM scratch AS s",
        "FROM scratch",
        "ARG CACHE=/root/.cache",
        "RUN --mount=type=cache,target=$CACHE,sharing=locked,mode=0700,uid=1 \\",
        "    --mount=type=secret,id=tok,required --mount=type=secret,target=/etc/key,env=KEY \\",
        "    --mount=type=bind,from=s,source=/a,target=/b,rw --mount=type=tmpfs,target=/t,size=64m \\",
        "    --mount=target=/ctx --mount=type=ssh --network=none --security=sandbox true",
      ].join("\n"),
    );
    const run = ins(plan).find((i) => i.kind === "RUN")!;
    assert.ok(run.kind === "RUN");
    assert.deepEqual(run.mounts, [
      {
        type: "cache",
        target: "/root/.cache",
        readOnly: false,
        id: "/root/.cache",
        sharing: "locked",
        mode: 0o700,
        uid: 1,
      },
      { type: "secret", target: "/run/secrets/tok", readOnly: true, id: "tok", required: true },
      { type: "secret", target: "/etc/key", readOnly: true, id: "key", env: "KEY" },
      { type: "bind", target: "/b", readOnly: false, source: "/a", from: "s" },
      { type: "tmpfs", target: "/t", readOnly: false, sizeBytes: 64 * 1024 * 1024 },
      { type: "bind", target: "/ctx", readOnly: true },
      { type: "ssh", target: "/run/buildkit/ssh_agent.6", readOnly: true, id: "default" },
    ]);
    assert.deepEqual([run.network, run.security], ["none", "sandbox"]);
    assert.deepEqual(run.usedArgs, ["CACHE"]);
    assert.deepEqual(plan.stages[1]!.dependsOn, [0]);
    rejects("FROM scratch\nRUN --mount=type=nfs,target=/x true", { column: 5, contains: "unsupported mount type" });
    // a near miss names the type meant, as BuildKit's does (its testMountInvalid)
    rejects("FROM scratch\nRUN --mount=type=tmp /bin/true", {
      column: 5,
      contains: 'unsupported mount type "tmp": did you mean tmpfs? (the types are bind, cache, tmpfs, secret, ssh)',
    });
    rejects("FROM scratch\nRUN --mount=type=bind,target=/x,mode=0600 true", { contains: "mode not allowed" });
    rejects("FROM scratch\nRUN --mount=type=cache,target=/x,sharing=all true", {
      contains: "unsupported sharing value",
    });
    rejects("FROM scratch\nRUN --mount=type=cache true", { contains: "requires a target" });
    rejects("FROM scratch\nRUN --mount=type=cache,target=/x,colour=red true", { contains: "unexpected key 'colour'" });
    rejects("FROM scratch\nRUN --mount=type=secret true", { contains: "one of id, source or target" });
    rejects("FROM scratch\nRUN --mount=type=bind,target=/x,oops true", { contains: "must be a key=value pair" });
  });
  test("RUN --mount=type=$VAR is expanded before it is checked (BuildKit parseMount defers every value without an expander)", () => {
    // BuildKit parses --mount at parse time without an expander (each key=value is left for dispatch, where it is
    // expanded and then validated), so a variable mount type is valid.
    const plan = planDockerfile(
      "FROM scratch\nARG T=cache\nARG S=secret\nRUN --mount=type=$T,target=/c,sharing=locked --mount=type=${S},id=x,required true",
    );
    const run = ins(plan).find((i) => i.kind === "RUN")!;
    assert.ok(run.kind === "RUN");
    assert.deepEqual(run.mounts, [
      { type: "cache", target: "/c", readOnly: false, id: "/c", sharing: "locked" },
      { type: "secret", target: "/run/secrets/x", readOnly: true, id: "x", required: true },
    ]);
    assert.deepEqual(run.usedArgs, ["S", "T"]);
    // after expansion the type is checked as usual
    rejects("FROM scratch\nARG T=nfs\nRUN --mount=type=$T,target=/x true", {
      line: 3,
      contains: 'unsupported mount type "nfs"',
    });
    rejects("FROM scratch\nARG T=bind\nRUN --mount=type=$T,target=/x,sharing=locked true", {
      line: 3,
      contains: "invalid cache sharing set for bind mount",
    });
  });
  test("EXPOSE is split into words and normalised", () => {
    const plan = planDockerfile('FROM scratch\nARG P="80 443/UDP"\nEXPOSE $P 8000-8002/tcp 53/udp');
    const e = ins(plan).find((i) => i.kind === "EXPOSE")!;
    assert.deepEqual(e.kind === "EXPOSE" && e.ports, [
      "80/tcp",
      "443/udp",
      "8000/tcp",
      "8001/tcp",
      "8002/tcp",
      "53/udp",
    ]);
    rejects("FROM scratch\nEXPOSE http", { contains: "invalid port" });
  });
  test("WORKDIR joins relative paths; VOLUME, USER and STOPSIGNAL expand", () => {
    const plan = planDockerfile(
      'FROM scratch\nENV U=app\nWORKDIR a\nWORKDIR ../b/./c\nWORKDIR /abs/$U\nVOLUME ["/v/$U", "/w"]\nUSER $U:$U\nSTOPSIGNAL SIG${U:+TERM}',
    );
    const list = ins(plan);
    assert.deepEqual(
      list.filter((i) => i.kind === "WORKDIR").map((w) => w.kind === "WORKDIR" && w.resolved),
      ["/a", "/b/c", "/abs/app"],
    );
    const vol = list.find((i) => i.kind === "VOLUME");
    assert.deepEqual(vol?.kind === "VOLUME" && vol.volumes, ["/v/app", "/w"]);
    assert.equal((list.find((i) => i.kind === "USER") as { user: string }).user, "app:app");
    assert.equal((list.find((i) => i.kind === "STOPSIGNAL") as { signal: string }).signal, "SIGTERM");
  });
  test("ONBUILD is stored, and a base image's ONBUILD triggers run after FROM", () => {
    const plan = planDockerfile("FROM base\nONBUILD RUN <<EOF\necho\nEOF\nRUN true", {
      baseImage: (ref) =>
        ref === "base"
          ? { env: ["HOME=/root", "P=/bin"], workingDir: "/srv", onBuild: ["ENV X=$HOME", "WORKDIR sub"] }
          : undefined,
    });
    const [t1, t2, ob] = ins(plan);
    assert.ok(t1!.kind === "ENV" && t1!.env[0]!.value === "/root" && t1!.fromOnBuild === true);
    assert.ok(t2!.kind === "WORKDIR" && t2!.resolved === "/srv/sub");
    assert.ok(ob!.kind === "ONBUILD" && ob!.expression === "RUN <<EOF\necho\nEOF");
    assert.throws(
      () => planDockerfile("FROM base", { baseImage: () => ({ onBuild: ["FROM x"] }) }),
      /isn't allowed as an ONBUILD trigger/,
    );
  });
  test("parseInstructions separates global ARGs and stages", () => {
    const p = parseInstructions("ARG A\nARG B=1\nFROM a\nRUN x\nFROM b\n");
    assert.equal(p.metaArgs.length, 2);
    assert.deepEqual(
      p.stages.map((s) => [s.from.image, s.commands.length]),
      [
        ["a", 1],
        ["b", 0],
      ],
    );
  });
  test("Go durations", () => {
    assert.equal(parseGoDuration("1h2m3.5s"), 3723.5e9);
    assert.equal(parseGoDuration("0"), 0);
    assert.equal(parseGoDuration("5"), undefined);
  });
});
