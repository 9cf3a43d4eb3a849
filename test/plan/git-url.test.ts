// BuildKit's git source URLs (dfgitutil/git_ref_test.go's forms): which strings are git sources, and their remote,
// ref, subdir and query options.
import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidDefinitionError } from "../../src/errors.js";
import { isGitUrl, parseGitRef } from "../../src/plan/git-url.js";

test("git sources: https/http ending in .git, git://, ssh:// and git@ SCP forms; others are not", () => {
  assert.deepEqual(parseGitRef("https://example.com/foo/bar.git#baz/qux:quux/quuz"), {
    remote: "https://example.com/foo/bar.git",
    scheme: "https",
    ref: "baz/qux",
    subdir: "quux/quuz",
  });
  assert.deepEqual(parseGitRef("git://127.0.0.1:9418/r.git"), {
    remote: "git://127.0.0.1:9418/r.git",
    scheme: "git",
    ref: "",
    subdir: "",
  });
  assert.equal(parseGitRef("git@github.com:moby/buildkit.git#main")?.scheme, "ssh");
  assert.equal(parseGitRef("https://example.com/file.tar.gz"), undefined);
  assert.equal(parseGitRef("./local/dir"), undefined);
  assert.equal(parseGitRef("ftp://example.com/r.git"), undefined);
  assert.equal(isGitUrl("https://example.com/r.git?bogus=1"), true, "a git URL with a bad option is still one");
});

test("query options: ref/tag/branch/subdir/checksum/keep-git-dir; conflicts and unknown keys are errors", () => {
  const q = parseGitRef("https://h/r.git?tag=v1&subdir=a/../b&checksum=abcd1234&keep-git-dir=true")!;
  assert.equal(q.ref, "refs/tags/v1");
  assert.equal(q.subdir, "b");
  assert.equal(q.checksum, "abcd1234");
  assert.equal(q.keepGitDir, true);
  assert.equal(parseGitRef("https://h/r.git?branch=dev")!.ref, "refs/heads/dev");
  assert.equal(parseGitRef("https://h/r.git#main:../../x")!.subdir, "x", "'..' cannot climb out");
  const bad = (u: string, re: RegExp) =>
    assert.throws(
      () => parseGitRef(u),
      (e: unknown) => e instanceof InvalidDefinitionError && re.test(e.message),
    );
  bad("https://h/r.git?bogus=1", /unexpected query "bogus"/);
  bad("https://h/r.git?ref=main&branch=dev", /ref conflicts/);
  bad("https://h/r.git?ref=a&ref=b", /multiple values/);
  bad("https://h/r.git?tag=a&branch=b", /branch conflicts with tag/);
  bad("https://h/r.git?checksum=xyz", /invalid checksum "xyz": expected hex commit hash/);
  bad("https://h/r.git#--upload-pack=x", /may not start with '-'/);
  bad("https://h/r.git?keep-git-dir=maybe", /invalid keep-git-dir/);
});
