// mmdebstrap's argv: recipe values can never become options (`--` before the positionals, and a value that starts with
// "-" or holds whitespace is refused), and the Python series lookup only finds the builder file's own series.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { debianSuiteFor, loadBuilderVersion } from "../../src/builder-version.js";
import { mmdebstrapArgs } from "../../src/engine/debian-base.js";
import { InvalidDefinitionError } from "../../src/errors.js";
import type { BaseSpec } from "../../src/plan/step.js";

type DebianSpec = Extract<BaseSpec, { kind: "debian" }>;
const spec = (over: Partial<DebianSpec> = {}): DebianSpec => ({
  kind: "debian",
  python: "3.11",
  suite: "bookworm",
  mirror: "http://deb.debian.org/debian",
  variant: "minbase",
  packages: ["ca-certificates", "python3"],
  cmd: ["python3"],
  ...over,
});

describe("mmdebstrapArgs", () => {
  test("options first, then -- and the positional suite, target and mirror", () => {
    const argv = mmdebstrapArgs(spec(), "/store/tmp/base-1/rootfs");
    assert.deepEqual(argv.slice(-4), ["--", "bookworm", "/store/tmp/base-1/rootfs", "http://deb.debian.org/debian"]);
    assert.equal(argv.indexOf("--"), argv.length - 4, "one -- only");
    assert.ok(
      argv.slice(0, -4).every((a) => a.startsWith("--")),
      "everything before -- is Strata's own option",
    );
    assert.ok(argv.includes("--variant=minbase"));
    assert.ok(argv.includes("--mode=unshare"), "mmdebstrap runs unprivileged, in a user namespace");
    assert.ok(argv.includes("--skip=output/dev"));
    assert.ok(argv.includes("--include=ca-certificates,python3"));
  });

  const refused: [string, Partial<DebianSpec>, RegExp][] = [
    [
      "a suite that is an option",
      { suite: "--setup-hook=touch /tmp/x" },
      /suite "--setup-hook=touch \/tmp\/x" starts with "-"/,
    ],
    ["a mirror that is an option", { mirror: "--customize-hook=id" }, /mirror .* starts with "-"/],
    ["a mirror that is stdin", { mirror: "-" }, /mirror "-" starts with "-"/],
    [
      "a mirror with sources.list options",
      { mirror: "[trusted=yes] http://127.0.0.1:1/evil" },
      /mirror .* contains whitespace/,
    ],
    [
      "a mirror with a second line",
      { mirror: "http://deb.debian.org/debian\ndeb http://127.0.0.1:1/evil x main" },
      /mirror .* contains whitespace/,
    ],
    ["a suite with a tab", { suite: "bookworm\tmain" }, /suite .* contains whitespace/],
    ["a suite with a NUL", { suite: "bookworm\0" }, /suite .* contains whitespace or a NUL/],
    ["a variant that is an option", { variant: "-v" }, /variant "-v" starts with "-"/],
    ["an empty suite", { suite: "" }, /suite must be a non-empty string/],
    [
      "a package that is an option",
      { packages: ["ca-certificates", "--allow-unauthenticated"] },
      /packages\[1\] "--allow-unauthenticated" starts with "-"/,
    ],
    ["a package list in one name", { packages: ["a,b"] }, /packages\[0\] "a,b" contains ","/],
    ["a package with a space", { packages: ["a b"] }, /packages\[0\] "a b" contains whitespace/],
    ["no packages", { packages: [] }, /packages must be a non-empty list/],
    ["a suite that is not a string", { suite: 1 as unknown as string }, /suite must be a non-empty string, got 1/],
  ];
  for (const [name, over, message] of refused) {
    test(`refuses ${name} with an InvalidDefinitionError naming the field`, () => {
      assert.throws(
        () => mmdebstrapArgs(spec(over), "/t"),
        (e: unknown) =>
          e instanceof InvalidDefinitionError && message.test(e.message) && /builders\/<version>\.json/.test(e.message),
      );
    });
  }

  test("every released builder version's recipe passes", () => {
    for (const v of ["2026.11", "2026.12", "PREVIEW"]) {
      const b = loadBuilderVersion(v);
      for (const python of Object.keys(b.debian.python)) {
        const { suite } = debianSuiteFor(b, python);
        mmdebstrapArgs(
          spec({ suite, mirror: b.debian.mirror, variant: b.debian.variant, packages: b.debian.packages }),
          "/t",
        );
      }
    }
  });
});

describe("debianSuiteFor", () => {
  test("only the builder file's own Python series are found", () => {
    const b = loadBuilderVersion("2026.11");
    assert.deepEqual(debianSuiteFor(b, "3.11"), { python: "3.11", suite: "bookworm", source: "debian" });
    assert.deepEqual(debianSuiteFor(loadBuilderVersion("2026.12"), "3.10"), {
      python: "3.10",
      suite: "bookworm",
      source: "standalone",
    });
    for (const bad of ["__proto__", "constructor", "toString", "3.12", "--setup-hook=id"]) {
      assert.throws(
        () => debianSuiteFor(b, bad),
        (e: unknown) => e instanceof InvalidDefinitionError && /supported: 3\.11, 3\.13/.test(e.message),
        bad,
      );
    }
  });
});
