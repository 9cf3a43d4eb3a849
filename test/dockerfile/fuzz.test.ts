/**
 * Seeded fuzzer: 10,000 Dockerfiles made by mutating the golden files, the Dockerfiles of the ported BuildKit
 * integration tests (test/dockerfile-e2e/buildkit/), and a few seeds of our own that exercise flags, mounts, heredocs,
 * ARG scoping and multi-stage references. Each must either plan or fail with a
 * DockerfileSyntaxError that has a line and column inside the file — never any other exception.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { planDockerfile } from "../../src/dockerfile/plan-stages.js";
import { DockerfileSyntaxError } from "../../src/dockerfile/errors.js";
import { readFixture } from "./fixtures.js";
import { dockerfilesIn, portedBuildkitDockerfiles } from "./ported-corpus.js";

const SEED = 0x5eed_2026;
const RUNS = 10_000;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const OWN_SEEDS = [
  '# syntax=docker/dockerfile:1\nARG BASE=alpine V=3\nFROM ${BASE}:${V} AS build\nARG V\nENV A=1 B="two words" C=${V:-x}\nWORKDIR /src\nCOPY --chown=1:1 --chmod=0644 --link --exclude=*.md . .\nRUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=secret,id=tok,required --network=none make\nFROM scratch\nCOPY --from=build /out /out\nCOPY --from=0 /a /b\nEXPOSE 80 443/udp\nHEALTHCHECK --interval=5s CMD ["/check"]\nENTRYPOINT ["/out"]\nCMD --help\n',
  'FROM busybox AS a\nRUN <<EOF\n#!/bin/sh\necho $HOME\nEOF\nCOPY <<-X <<\'Y\' /d/\n\tx $A\nX\ny\nY\nONBUILD ADD <<Z /z\nz\nZ\nFROM a\nUSER 1000:1000\nVOLUME ["/data"]\nSTOPSIGNAL SIGTERM\nSHELL ["/bin/bash", "-c"]\nLABEL a=b "c d"=e\nMAINTAINER me\n',
  "# escape=`\nFROM mcr/windows AS w\nRUN dir `\n  c:\\\nENV P=C:\\x Q=`$y\nADD --checksum=sha256:00 --keep-git-dir https://a/b.git#main /src\n",
  "ARG A=${B:-x}\nFROM --platform=$BUILDPLATFORM scratch AS one\nARG TARGETARCH\nENV T=$TARGETARCH\nFROM one AS two\nRUN --mount=type=bind,from=one,source=/,target=/one true\nFROM two\nCOPY --from=one --parents ./a/./b /c\n",
];

const INSERT_CHARS = [
  "\\",
  "`",
  "$",
  "{",
  "}",
  '"',
  "'",
  "\n",
  "\t",
  " ",
  "<",
  "-",
  "=",
  "[",
  "]",
  ",",
  "#",
  ":",
  "é",
  "\r",
  "\u0000",
  "*",
  "%",
  "/",
  "?",
  "+",
  "\u00a0",
];
const SNIPPETS = [
  " --mount=type=cache,target=/c",
  " --mount=type=secret,id=$X",
  " --mount=from=0,target=/m",
  " --from=1",
  " --from=${S}",
  " --chmod=u+x",
  " --link",
  " --bogus=1",
  " --network=none",
  " --platform=linux/arm64",
  " <<EOF",
  " <<-'E O'",
  " 3<<X",
  " \\\n  continued",
  " `\n",
  " ${A:-d}",
  " ${A:?boom}",
  " ${A//x/y}",
  " ${A#*/}",
  ' ["json", "form"]',
  " AS stage2",
  "=",
  " -- ",
];
const LINES = [
  "FROM scratch",
  "FROM stage2",
  "FROM busybox AS b",
  "ARG A=1",
  "ARG B",
  "ENV A=$A",
  "ENV X y z",
  "RUN <<EOF\necho hi\nEOF",
  "COPY <<F /f\n$A\nF",
  "COPY --from=b /x /y",
  "COPY --from=9 /x /y",
  "RUN --mount=type=cache,target=/x true",
  "HEALTHCHECK NONE",
  "HEALTHCHECK --retries=3 CMD true",
  "ONBUILD RUN true",
  "ONBUILD ONBUILD RUN x",
  "# escape=`",
  "# syntax=x",
  "WORKDIR ${W:-/w}",
  "EXPOSE 80-82/tcp",
  "USER",
  "\\",
  "   ",
  "# comment \\",
  "EOF",
];

function mutate(src: string, rnd: () => number, kinds: Map<string, number>): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const n = 1 + Math.floor(rnd() * 4);
  let s = src;
  for (let k = 0; k < n; k++) {
    const lines = s.split("\n");
    const li = Math.floor(rnd() * Math.max(lines.length, 1));
    const pos = Math.floor(rnd() * (s.length + 1));
    const kind = pick([
      "delChar",
      "dupChar",
      "swapChars",
      "insChar",
      "delLine",
      "dupLine",
      "swapLines",
      "insSnippet",
      "insLine",
      "insFlag",
    ]);
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    switch (kind) {
      case "delChar":
        s = s.slice(0, pos) + s.slice(pos + 1 + Math.floor(rnd() * 3));
        break;
      case "dupChar":
        s = s.slice(0, pos) + s.slice(pos, pos + 1) + s.slice(pos);
        break;
      case "swapChars":
        if (pos + 1 < s.length) s = s.slice(0, pos) + s[pos + 1] + s[pos] + s.slice(pos + 2);
        break;
      case "insChar":
        s = s.slice(0, pos) + pick(INSERT_CHARS) + s.slice(pos);
        break;
      case "delLine":
        lines.splice(li, 1);
        s = lines.join("\n");
        break;
      case "dupLine":
        lines.splice(li, 0, lines[li] ?? "");
        s = lines.join("\n");
        break;
      case "swapLines": {
        const lj = Math.floor(rnd() * lines.length);
        [lines[li], lines[lj]] = [lines[lj] ?? "", lines[li] ?? ""];
        s = lines.join("\n");
        break;
      }
      case "insSnippet":
        s = s.slice(0, pos) + pick(SNIPPETS) + s.slice(pos);
        break;
      case "insLine":
        lines.splice(li, 0, pick(LINES));
        s = lines.join("\n");
        break;
      case "insFlag": {
        // a flag right after an instruction keyword
        const line = lines[li] ?? "";
        const m = /^(\s*\S+)(.*)$/.exec(line);
        if (m) lines[li] = m[1] + pick(SNIPPETS.filter((x) => x.startsWith(" --"))) + m[2];
        s = lines.join("\n");
        break;
      }
    }
  }
  return s;
}

test(`fuzz: ${RUNS} mutated Dockerfiles either plan or fail with a located DockerfileSyntaxError (seed ${SEED})`, (t) => {
  const parser = readFixture<{ cases: { dockerfile: string }[]; negative: { dockerfile: string }[] }>(
    "parser-cases.json",
  );
  const heredoc = readFixture<{ dockerfile: string }>("heredoc-cases.json");
  const goldens = parser.cases.map((c) => c.dockerfile);
  // Golden files without a FROM (the JSON ones) also go in with one, so their instructions get planned.
  const withFrom = goldens.filter((d) => !/^\s*from\s/im.test(d)).map((d) => "FROM scratch\n" + d);
  const ported = portedBuildkitDockerfiles();
  assert.ok(ported.length >= 50, `only ${ported.length} Dockerfiles read from the ported BuildKit tests`);
  const corpus = [
    ...goldens,
    ...ported,
    ...withFrom,
    ...parser.negative.map((c) => c.dockerfile),
    heredoc.dockerfile,
    ...OWN_SEEDS,
  ];
  const rnd = mulberry32(SEED);
  const kinds = new Map<string, number>();
  const messages = new Map<string, number>();
  let planned = 0;
  let rejected = 0;
  let instructions = 0;
  const started = Date.now();
  for (let run = 0; run < RUNS; run++) {
    const seed = corpus[Math.floor(rnd() * corpus.length)]!;
    const text = mutate(seed, rnd, kinds);
    const lineCount = text.split("\n").length;
    const useBase = rnd() < 0.2;
    const options = {
      buildArgs: rnd() < 0.5 ? { A: "from-cli", S: "0", W: "/cli" } : ({} as Record<string, string>),
      ...(useBase
        ? { baseImage: () => ({ env: ["HOME=/root"], onBuild: rnd() < 0.5 ? ["RUN true"] : ["ENV Y=$HOME"] }) }
        : {}),
    };
    try {
      const plan = planDockerfile(text, options);
      planned++;
      assert.ok(plan.buildOrder.includes(plan.target));
      for (const st of plan.stages) {
        for (const ins of st.instructions) {
          instructions++;
          assert.ok(
            ins.location.line >= 1 && ins.location.line <= lineCount + 1,
            `line ${ins.location.line} outside 1..${lineCount}`,
          );
        }
      }
    } catch (e) {
      if (!(e instanceof DockerfileSyntaxError)) {
        assert.fail(`run ${run}: unexpected ${e instanceof Error ? e.stack : String(e)}\n--- Dockerfile ---\n${text}`);
      }
      assert.ok(
        e.line >= 1 && e.line <= lineCount + 1,
        `run ${run}: line ${e.line} outside 1..${lineCount}: ${e.message}`,
      );
      assert.ok(e.column >= 1, `run ${run}: column ${e.column}: ${e.message}`);
      rejected++;
      const key = e.detail.replace(/"[^"]*"|'[^']*'|\d+/g, "_").slice(0, 60);
      messages.set(key, (messages.get(key) ?? 0) + 1);
    }
  }
  const seconds = (Date.now() - started) / 1000;
  t.diagnostic(
    `${RUNS} Dockerfiles in ${seconds.toFixed(1)}s: ${planned} planned (${instructions} instructions), ${rejected} DockerfileSyntaxError, 0 other`,
  );
  t.diagnostic(`mutations: ${[...kinds].map(([k, v]) => `${k}=${v}`).join(" ")}`);
  t.diagnostic(
    `distinct error kinds: ${messages.size}; top: ${[...messages]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([k, v]) => `${v}× ${k}`)
      .join(" | ")}`,
  );
  assert.equal(planned + rejected, RUNS);
  assert.ok(planned > RUNS / 10, `only ${planned} planned: the fuzzer mostly exercises error paths`);
  assert.ok(rejected > RUNS / 10, `only ${rejected} rejected`);
});

test("the ported tests' Dockerfiles are read out of their source: literals, + joins, template parts", () => {
  const src =
    'await bk.build({ dockerfile: "FROM a\\nRUN \\"x\\"\\n" });\n' +
    "const dockerfile =\n  'FROM b\\n' +\n  `RUN echo ${port} \\${HOME}\\n`;\n" +
    "bk.build({ dockerfile, files: {} }); const notOne = { dockerfile: makeIt() };";
  assert.deepEqual(dockerfilesIn(src), ['FROM a\nRUN "x"\n', "FROM b\nRUN echo x ${HOME}\n"]);
});
