// A NUL byte can name no path, argv word or environment entry. In any Dockerfile instruction it is a located
// DockerfileSyntaxError at plan time, never an internal error at build time (issue 12: `COPY bb/ /<NUL>` reached
// `TypeError [ERR_INVALID_ARG_VALUE] … without null bytes`).
import assert from "node:assert/strict";
import { test } from "node:test";
import { DockerfileSyntaxError } from "../../src/dockerfile/errors.js";
import { planDockerfile } from "../../src/dockerfile/plan-stages.js";

const NUL = "\0";
const cases: { name: string; line: string }[] = [
  { name: "COPY source", line: `COPY a${NUL}b /dst` },
  { name: "COPY destination", line: `COPY bb/ /${NUL}` },
  { name: "ADD source", line: `ADD x${NUL} /dst/` },
  { name: "ADD destination", line: `ADD x /d${NUL}st` },
  { name: "WORKDIR", line: `WORKDIR /w${NUL}` },
  { name: "RUN mount target", line: `RUN --mount=type=cache,target=/c${NUL} true` },
  { name: "RUN mount id", line: `RUN --mount=type=cache,id=i${NUL}d,target=/c true` },
  { name: "RUN command", line: `RUN echo ${NUL}` },
  { name: "ENV name", line: `ENV A${NUL}B=1` },
  { name: "ENV value", line: `ENV A=${NUL}` },
  { name: "ARG name", line: `ARG A${NUL}B` },
  { name: "USER", line: `USER u${NUL}` },
];

for (const c of cases) {
  test(`a NUL byte in ${c.name} is a located DockerfileSyntaxError`, () => {
    const text = `FROM scratch\n${c.line}\n`;
    const column = c.line.indexOf(NUL) + 1;
    assert.throws(
      () => planDockerfile(text, {}),
      (e: unknown) => {
        assert.ok(e instanceof DockerfileSyntaxError, `not a DockerfileSyntaxError: ${String(e)}`);
        assert.equal(e.line, 2);
        assert.equal(e.column, column);
        assert.match(e.message, /NUL/);
        return true;
      },
    );
  });
}

test("a NUL byte on a continuation line is located on that line", () => {
  assert.throws(
    () => planDockerfile(`FROM scratch\nCOPY a \\\n  b${NUL} /d\n`, {}),
    (e: unknown) => e instanceof DockerfileSyntaxError && e.line === 3 && e.column === 4,
  );
});

test("a NUL byte in a comment or a COPY heredoc body is not an error", () => {
  planDockerfile(`FROM scratch\n# x${NUL}y\nCOPY <<EOF /f\nbody${NUL}\nEOF\n`, {});
});
