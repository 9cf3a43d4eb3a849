// The RUN hostname of a Dockerfile build (BuildKit's `hostname` option and BUILDKIT_SANDBOX_HOSTNAME): which wins,
// what is refused, and that it is keyed only when set.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { sandboxHostname } from "../../src/dockerfile/run-step.js";
import { InvalidDefinitionError } from "../../src/errors.js";
import { derivedExtra, isDerivedExtra } from "../../src/keys/step-extra.js";
import { isValidHostname } from "../../src/plan/hostname.js";

describe("sandboxHostname", () => {
  test("the build arg wins over the option; neither: none (the sandbox's default)", () => {
    assert.equal(sandboxHostname({}), undefined);
    assert.equal(sandboxHostname({ hostname: "bar" }), "bar");
    assert.equal(sandboxHostname({ hostname: "bar", buildArgs: { BUILDKIT_SANDBOX_HOSTNAME: "foo" } }), "foo");
    assert.equal(sandboxHostname({ buildArgs: { OTHER: "x" } }), undefined);
  });

  test("a value that is no hostname is refused, naming where it came from", () => {
    assert.throws(
      () => sandboxHostname({ buildArgs: { BUILDKIT_SANDBOX_HOSTNAME: "" } }),
      (e: unknown) =>
        e instanceof InvalidDefinitionError && /^build arg BUILDKIT_SANDBOX_HOSTNAME: "" /.test(e.message),
    );
    assert.throws(() => sandboxHostname({ hostname: "a\0b" }), /hostname: "a\\u0000b" is not a valid hostname/);
  });

  test("RFC 1123 names", () => {
    for (const ok of ["foo", "a-b.example", "x1", "a".repeat(63)]) assert.ok(isValidHostname(ok), ok);
    for (const bad of ["", "-a", "a-", "a..b", "a b", "a_b", "a".repeat(64), `${"a.".repeat(127)}ab`])
      assert.ok(!isValidHostname(bad), bad);
  });
});

describe("the run.hostname key input", () => {
  test("is derived from a RUN that sets a hostname, and only then; a plan cannot set it", () => {
    const step = (hostname?: string) => ({
      instructions: [{ op: "RUN" as const, command: "true", ...(hostname ? { hostname } : {}) }],
      env: {},
    });
    assert.deepEqual(derivedExtra(step()), []);
    assert.deepEqual(derivedExtra(step("foo")), [["run.hostname", "foo"]]);
    assert.ok(isDerivedExtra("run.hostname"));
  });
});
