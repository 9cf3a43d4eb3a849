// Ported from BuildKit frontend/dockerfile/errors_test.go (see ../README.md for the table). BuildKit attaches a
// source map (file, ranges) to the error; Strata's errors start with `Dockerfile:line:column`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("errors_test.go", () => {
  test("testErrorsSourceMap", async () => {
    const cases: { name: string; dockerfile: string; line: number }[] = [
      { name: "invalidenv", dockerfile: "from busybox\nenv", line: 2 },
      // invalidsyntax (`#syntax=foobar`): Strata has one built-in frontend and ignores the directive with a warning.
      { name: "invalidrun", dockerfile: "from scratch\nenv foo=bar\nrun what", line: 3 },
      { name: "invalidcopy", dockerfile: "from scratch\nenv foo=bar\ncopy foo bar\nenv bar=baz", line: 3 },
      { name: "invalidflag", dockerfile: "from scratch\nenv foo=bar\ncopy --foo=bar / /\nenv bar=baz", line: 3 },
      // BuildKit's `--from=invalid` is an image on Docker Hub; here it is one the loopback registry lacks.
      {
        name: "invalidcopyfrom",
        dockerfile: "from scratch\nenv foo=bar\ncopy --from=INVALID_IMAGE foo bar\nenv bar=baz",
        line: 3,
      },
      // BuildKit's range covers lines 2 and 3; Strata's location is where the instruction starts.
      { name: "invalidmultiline", dockerfile: "from scratch\nrun wh\\\nat\nenv bar=baz", line: 2 },
    ];
    for (const c of cases) {
      const dockerfile = c.dockerfile.replace("INVALID_IMAGE", `${bk.registryHost}/invalid`);
      const err = await bk.buildFails({ dockerfile });
      assert.match(err.message, new RegExp(`Dockerfile:${c.line}:\\d+`), `${c.name}: ${err.message}`);
    }
  });
});
