import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { joinNoFollow, lexicalImagePath, secureJoin } from "../../src/layer/secure-join.js";

const root = mkdtempSync(path.join(os.tmpdir(), "strata-sj-"));
after(() => rmSync(root, { recursive: true, force: true }));
mkdirSync(path.join(root, "srv/app"), { recursive: true });
symlinkSync("/srv/app", path.join(root, "abs"));
symlinkSync("srv/app", path.join(root, "rel"));
symlinkSync("../../../../etc", path.join(root, "srv/up"));
symlinkSync("/", path.join(root, "rootlink"));
symlinkSync("loop2", path.join(root, "loop1"));
symlinkSync("loop1", path.join(root, "loop2"));

describe("secureJoin", () => {
  test("absolute symlinks resolve inside the root, never on the host", () => {
    assert.equal(secureJoin(root, "/abs/x"), path.join(root, "srv/app/x"));
    assert.equal(secureJoin(root, "/rootlink/etc/passwd"), path.join(root, "etc/passwd"));
  });
  test("relative symlinks and .. cannot climb above the root", () => {
    assert.equal(secureJoin(root, "/rel/x"), path.join(root, "srv/app/x"));
    assert.equal(secureJoin(root, "/srv/up/passwd"), path.join(root, "etc/passwd"));
    assert.equal(secureJoin(root, "/../../x"), path.join(root, "x"));
  });
  test("missing components are kept as they are; loops are an error", () => {
    assert.equal(secureJoin(root, "/new/dir/f"), path.join(root, "new/dir/f"));
    assert.throws(() => secureJoin(root, "/loop1/x"), /too many levels of symbolic links/);
  });
});

describe("lexicalImagePath", () => {
  test(".. stops at / and . disappears, with no look at any filesystem", () => {
    const cases: [string, string][] = [
      ["/../../x", "/x"],
      ["/a/../../../tmp/y", "/tmp/y"],
      ["a/./b/", "/a/b"],
      ["", "/"],
      ["/..", "/"],
      ["/abs/x", "/abs/x"],
    ];
    for (const [p, want] of cases) assert.equal(lexicalImagePath(p), want, p);
  });
});

describe("joinNoFollow", () => {
  test("a path whose parents are real directories maps under the root; the last component is not followed", () => {
    assert.equal(joinNoFollow(root, "/srv/app/x"), path.join(root, "srv/app/x"));
    assert.equal(joinNoFollow(root, "/abs"), path.join(root, "abs"), "the symlink itself, not its target");
    assert.equal(joinNoFollow(root, "/../../srv/app"), path.join(root, "srv/app"));
    assert.equal(joinNoFollow(root, "/"), root);
  });
  test("a symlink (or a missing entry) among the parents gives undefined instead of following it", () => {
    assert.equal(joinNoFollow(root, "/rootlink/etc/passwd"), undefined);
    assert.equal(joinNoFollow(root, "/abs/x"), undefined);
    assert.equal(joinNoFollow(root, "/srv/up/passwd"), undefined);
    assert.equal(joinNoFollow(root, "/missing/x"), undefined);
  });
});
