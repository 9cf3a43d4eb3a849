// Image names (`NAME[:TAG]`, src/util/image-name.ts): what parses, how it is normalised, and what each refusal says.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidImageNameError } from "../../src/errors.js";
import { checkImageNames, isImageName, parseImageName } from "../../src/util/image-name.js";

describe("parseImageName", () => {
  test("normalises to repository:tag, tag latest by default, the name kept as written", () => {
    const table: [string, string, string][] = [
      ["app", "app", "latest"],
      ["app:v1", "app", "v1"],
      ["team/app:1.2.3-rc_1", "team/app", "1.2.3-rc_1"],
      ["localhost:5000/app", "localhost:5000/app", "latest"],
      ["registry.example.com/a/b:x", "registry.example.com/a/b", "x"],
      ["localhost/app:Tag", "localhost/app", "Tag"],
      ["team/a__b.c-d", "team/a__b.c-d", "latest"],
      ["deadbeef", "deadbeef", "latest"],
    ];
    for (const [input, repository, tag] of table) {
      const n = parseImageName(input);
      assert.deepEqual({ ...n }, { repository, tag, full: `${repository}:${tag}` }, input);
      assert.equal(parseImageName(n.full).full, n.full, `${input}: normalising twice changes nothing`);
      assert.ok(isImageName(input));
    }
  });

  test("refuses what Docker refuses, saying why", () => {
    const table: [string, RegExp][] = [
      ["", /empty/],
      ["App", /not a valid name component/],
      ["app:", /tag "" is invalid/],
      ["app:-x", /tag "-x" is invalid/],
      ["a//b", /empty path component/],
      ["/app", /empty path component/],
      ["app/", /empty path component/],
      ["app b", /whitespace/],
      ["app@sha256:" + "a".repeat(64), /digest/],
      ["sha256:" + "a".repeat(64), /image id, not a name/],
      ["a".repeat(64), /64 hex digits/],
      ["bad_host:x:y/app", /registry host|not a valid name component|tag/],
      [":v1", /empty/],
      ["a__b.c-d/e", /registry host/],
      ["x".repeat(256), /longer than 255/],
    ];
    for (const [input, why] of table) {
      assert.throws(
        () => parseImageName(input),
        (e: Error) => e instanceof InvalidImageNameError && why.test(e.message) && e.message.includes(`"${input}"`),
        input,
      );
      assert.equal(isImageName(input), false, input);
    }
  });

  test("checkImageNames normalises and deduplicates, and names the first bad one", () => {
    assert.deepEqual(checkImageNames(["app", "app:latest", "app:v2"]), ["app:latest", "app:v2"]);
    assert.throws(() => checkImageNames(["ok", "Bad"]), /invalid image name "Bad"/);
  });
});
