// COPY --parents source selection (src/engine/select.ts) against BuildKit's testCopyRelativeParents
// (frontend/dockerfile/dockerfile_parents_test.go): the tree its base stage makes, each target's sources, and the paths
// its RUN checks assert below the destination. Pure: a temporary tree, no root.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { selectSources } from "../../src/engine/select.js";
import { DockerfileSyntaxError } from "../../src/errors.js";

let root = "";
before(async () => {
  root = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-select-parents-"));
  // BuildKit's base stage (WORKDIR /test, then mkdir -p / touch).
  for (const d of ["a/b/c/d/e", "a/b2/c/d/e", "a/b/c2/d/e", "a/b/c2/d/e2"])
    await fsp.mkdir(path.join(root, "test", d), { recursive: true });
  for (const f of ["a/b/c/d/foo", "a/b/c/d/e/bay", "a/b2/c/d/e/bar", "a/b/c2/d/e/baz", "a/b/c2/d/e2/baz"])
    await fsp.writeFile(path.join(root, "test", f), "");
  // A file a pivot glob also matches: it has nothing below it, so it is no pivot.
  await fsp.writeFile(path.join(root, "test/a/bfile"), "");
});
after(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

/** The paths a --parents copy of `patterns` writes below its destination (as `dockerCopy` places them), sorted. */
async function copied(...patterns: string[]): Promise<string[]> {
  const sel = await selectSources({ dir: root }, patterns, { parents: true, rootName: "stage base" });
  const out = new Set<string>();
  for (const m of sel.matches) {
    assert.equal(m.type, "dir");
    assert.equal(m.keep, "");
    const prefix = m.rel === "" ? "" : m.rel + "/";
    for (const e of sel.entries) if (e.relPath.startsWith(prefix)) out.add(e.relPath.slice(prefix.length));
  }
  return [...out].sort();
}

describe("COPY --parents selection (BuildKit testCopyRelativeParents)", () => {
  test("middle: a pivot keeps the path below it", async () => {
    const got = await copied("/test/a/b/./c/d");
    assert.ok(got.includes("c/d/e") && got.includes("c/d/foo"), got.join(" "));
    assert.ok(!got.some((p) => p.startsWith("a") || p === "e"));
  });

  test("end and start: no pivot keeps the whole path", async () => {
    for (const src of ["/test/a/b/c/d/.", "./test/a/b/c/d"]) {
      const got = await copied(src);
      assert.ok(got.includes("test/a/b/c/d/e") && got.includes("test/a/b/c/d/foo"), `${src}: ${got.join(" ")}`);
    }
  });

  test("double: the first ./ is the pivot", async () => {
    const got = await copied("/test/a/./b/./c");
    assert.ok(got.includes("b/c/d/e") && got.includes("b/c/d/foo"), got.join(" "));
  });

  test("wildcard after the pivot", async () => {
    const got = await copied("/test/a/./*/c");
    assert.ok(got.includes("b/c/d/e") && got.includes("b2/c/d/e/bar"), got.join(" "));
  });

  test("doublewildcard: a wildcard before the pivot makes every directory it matches a pivot", async () => {
    const got = await copied("/test/a/b*/./c/**/e");
    assert.ok(got.includes("c/d/e"), got.join(" "));
    assert.ok(got.includes("c/d/e/bay"), "via b");
    assert.ok(got.includes("c/d/e/bar"), "via b2");
    assert.ok(!got.includes("c/d/foo"), "foo is not below an e");
  });

  test("doubleinputs: two sources with glob pivots merge", async () => {
    const got = await copied("/test/a/b/c*/./d/**/baz", "/test/a/b*/./c/**/bar");
    assert.ok(got.includes("d/e/baz"));
    assert.ok(!got.includes("d/e/bay"));
    assert.ok(got.includes("d/e2/baz"));
    assert.ok(got.includes("c/d/e/bar"), "via b2");
  });

  test("a glob pivot matching nothing copies nothing; a missing literal pivot is an error naming the source", async () => {
    assert.deepEqual(await copied("/test/a/zz*/./c"), []);
    await assert.rejects(
      selectSources({ dir: root }, ["/test/a/zz/./c"], {
        parents: true,
        rootName: "stage base",
        location: { file: "Dockerfile", line: 3, column: 1 },
      }),
      (e: unknown) =>
        e instanceof DockerfileSyntaxError &&
        /"\/test\/a\/zz\/\.\/c": "\/test\/a\/zz" is not a directory/.test(e.message),
    );
  });
});
