// Ported from BuildKit frontend/dockerfile/dockerfile_copy_test.go (see ../README.md for the table).
// BuildKit's `FROM alpine` (testCopyUnicodePath, testChmodNonOctal) is busybox here: those tests need only a shell,
// stat, chmod and cp.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_copy_test.go", { concurrency: 4 }, () => {
  test("testDockerfileCopyFromArgs", async () => {
    const err = await bk.buildFails({ dockerfile: "FROM scratch\nCOPY --from=$FOO . .\n" });
    assert.match(
      err.message,
      /variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround/,
    );
  });

  test("testEmptyDestDir", async () => {
    await bk.build({
      dockerfile: 'FROM busybox\nENV empty=""\nCOPY testfile $empty\nRUN [ "$(cat testfile)" == "contents0" ]\n',
      files: { testfile: { content: "contents0", mode: 0o600 } },
    });
  });

  test("testPreserveDestDirSlash", async () => {
    await bk.build({
      dockerfile: 'FROM busybox\nCOPY testfile /sample/\nRUN [ "$(cat /sample/testfile)" == "contents0" ]\n',
      files: { testfile: { content: "contents0", mode: 0o600 } },
    });
  });

  test("testCopyLinkDotDestDir", async () => {
    await bk.build({
      dockerfile: 'FROM busybox\nWORKDIR /var/www\nCOPY --link testfile .\nRUN [ "$(cat testfile)" == "contents0" ]\n',
      files: { testfile: { content: "contents0", mode: 0o600 } },
    });
  });

  test("testCopyLinkEmptyDestDir", async () => {
    await bk.build({
      dockerfile:
        'FROM busybox\nWORKDIR /var/www\nENV empty=""\nCOPY --link testfile $empty\nRUN [ "$(cat testfile)" == "contents0" ]\n',
      files: { testfile: { content: "contents0", mode: 0o600 } },
    });
  });

  test("testCopyChownExistingDir", async () => {
    const dockerfile = `
# Set up files and directories with known ownership
FROM busybox AS source
RUN touch /file && chown 100:200 /file \\
 && mkdir -p /dir/subdir \\
 && touch /dir/subdir/nestedfile \\
 && chown 100:200 /dir \\
 && chown 101:201 /dir/subdir \\
 && chown 102:202 /dir/subdir/nestedfile

FROM busybox AS test_base
RUN mkdir -p /existingdir/existingsubdir \\
 && touch /existingdir/existingfile \\
 && chown 500:600 /existingdir \\
 && chown 501:601 /existingdir/existingsubdir \\
 && chown 501:601 /existingdir/existingfile


# Copy files from the source stage
FROM test_base AS copy_from
COPY --from=source /file .
# Copy to a non-existing target directory creates the target directory (as root), then copies the _contents_ of the source directory into it
COPY --from=source /dir /dir
# Copying to an existing target directory will copy the _contents_ of the source directory into it
COPY --from=source /dir/. /existingdir

RUN e="100:200"; p="/file"                         ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="0:0";     p="/dir"                          ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="101:201"; p="/dir/subdir"                   ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="102:202"; p="/dir/subdir/nestedfile"        ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
# Existing files and directories ownership should not be modified
 && e="500:600"; p="/existingdir"                  ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="501:601"; p="/existingdir/existingsubdir"   ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="501:601"; p="/existingdir/existingfile"     ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
# But new files and directories should maintain their ownership
 && e="101:201"; p="/existingdir/subdir"           ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="102:202"; p="/existingdir/subdir/nestedfile"; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi


# Copy files from the source stage and chown them.
FROM test_base AS copy_from_chowned
COPY --from=source --chown=300:400 /file .
# Copy to a non-existing target directory creates the target directory (as root), then copies the _contents_ of the source directory into it
COPY --from=source --chown=300:400 /dir /dir
# Copying to an existing target directory copies the _contents_ of the source directory into it
COPY --from=source --chown=300:400 /dir/. /existingdir

RUN e="300:400"; p="/file"                         ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="300:400"; p="/dir"                          ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="300:400"; p="/dir/subdir"                   ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="300:400"; p="/dir/subdir/nestedfile"        ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
# Existing files and directories ownership should not be modified
 && e="500:600"; p="/existingdir"                  ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="501:601"; p="/existingdir/existingsubdir"   ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="501:601"; p="/existingdir/existingfile"     ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
# But new files and directories should be chowned
 && e="300:400"; p="/existingdir/subdir"           ; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi \\
 && e="300:400"; p="/existingdir/subdir/nestedfile"; a=\`stat -c "%u:%g" "$p"\`; if [ "$a" != "$e" ]; then echo "incorrect ownership on $p. expected $e, got $a"; exit 1; fi
`;
    const opts = {
      dockerfile,
      dockerfileName: "Dockerfile.web",
      files: { Dockerfile: { symlink: "Dockerfile.web" } },
      buildFile: "Dockerfile",
    };
    await bk.build(opts);
    await bk.build({ ...opts, target: "copy_from" });
  });

  test("testCopyWildcardCache", async () => {
    const dockerfile =
      "FROM busybox AS base\nCOPY foo* files/\nRUN cat /dev/urandom | head -c 100 | sha256sum > unique\nCOPY bar files/\nFROM scratch\nCOPY --from=base unique /\n";
    const files = {
      foo1: { content: "foo1-data", mode: 0o600 },
      foo2: { content: "foo2-data", mode: 0o600 },
      bar: { content: "bar-data", mode: 0o600 },
    };
    const first = await (await bk.build({ dockerfile, files })).readFile("/unique");
    assert.ok(first);
    // bar is copied after the RUN: its change keeps the RUN's result.
    const files2 = { ...files, bar: { content: "bar-data-mod", mode: 0o600 } };
    assert.equal(await (await bk.build({ dockerfile, files: files2 })).readFile("/unique"), first);
    // foo2 matches the wildcard before the RUN: its change runs it again.
    const files3 = { ...files2, foo2: { content: "foo2-data-mod", mode: 0o600 } };
    assert.notEqual(await (await bk.build({ dockerfile, files: files3 })).readFile("/unique"), first);
  });

  test("testEmptyWildcard", async () => {
    const r = await bk.build({
      dockerfile: "FROM scratch\nCOPY foo nomatch* /\n",
      files: { foo: { content: "contents0", mode: 0o600 } },
    });
    assert.equal(await r.readFile("/foo"), "contents0");
  });

  test("testCopyChownCreateDest", async () => {
    await bk.build({
      dockerfile: `FROM busybox
ARG group
ENV owner user01
RUN adduser -D user
RUN adduser -D user01
COPY --chown=user:user . /dest
COPY --chown=\${owner}:\${group} . /dest01
RUN [ "$(stat -c "%U %G" /dest)" == "user user" ]
RUN [ "$(stat -c "%U %G" /dest01)" == "user01 user" ]
`,
      buildArgs: { group: "user" },
    });
  });

  test("testCopyThroughSymlinkContext", async () => {
    const r = await bk.build({
      dockerfile: "FROM scratch\nCOPY link/foo .\n",
      files: {
        link: { symlink: "sub" },
        sub: { dir: true, mode: 0o700 },
        "sub/foo": { content: "contents", mode: 0o600 },
      },
    });
    assert.equal(await r.readFile("/foo"), "contents");
  });

  test("testCopyThroughSymlinkMultiStage", async () => {
    const r = await bk.build({
      dockerfile: `FROM busybox AS build
RUN mkdir -p /out/sub && ln -s /out/sub /sub && ln -s out/sub /sub2 && echo -n "data" > /sub/foo
FROM scratch
COPY --from=build /sub/foo .
COPY --from=build /sub2/foo bar
	`,
    });
    assert.equal(await r.readFile("/foo"), "data");
  });

  // #1197
  test("testCopyFollowAllSymlinks", async () => {
    await bk.build({
      dockerfile: "FROM scratch\nCOPY foo /\nCOPY foo/sub bar\n",
      files: {
        bar: { content: "bar-contents", mode: 0o600 },
        foo: { dir: true, mode: 0o700 },
        "foo/sub": { symlink: "../bar" },
      },
    });
  });

  test("testCopySymlinks", async () => {
    const r = await bk.build({
      dockerfile: "FROM scratch\nCOPY foo /\nCOPY sub/l* alllinks/\n",
      files: {
        bar: { content: "bar-contents", mode: 0o600 },
        foo: { symlink: "bar" },
        sub: { dir: true, mode: 0o700 },
        "sub/lfile": { content: "lfile-contents", mode: 0o600 },
        "sub/l0": { symlink: "subfile" },
        "sub/subfile": { content: "subfile-contents", mode: 0o600 },
        "sub/l1": { symlink: "second" },
        "sub/second": { symlink: "baz" },
        "sub/baz": { content: "baz-contents", mode: 0o600 },
      },
    });
    assert.equal(await r.readFile("/foo"), "bar-contents");
    assert.equal(await r.readFile("/alllinks/l0"), "subfile-contents");
    assert.equal(await r.readFile("/alllinks/lfile"), "lfile-contents");
    assert.equal(await r.readFile("/alllinks/l1"), "baz-contents");
  });

  test("testCopyChown", async () => {
    const r = await bk.build({
      dockerfile: `FROM busybox AS base
ENV owner 1000
RUN mkdir -m 0777 /out
COPY --chown=daemon foo /
COPY --chown=1000:nobody bar /baz
ARG group
COPY --chown=\${owner}:\${group} foo /foobis
RUN stat -c "%U %G" /foo  > /out/fooowner
RUN stat -c "%u %G" /baz/sub  > /out/subowner
RUN stat -c "%u %G" /foobis  > /out/foobisowner
FROM scratch
COPY --from=base /out /
`,
      files: {
        foo: { content: "foo-contents", mode: 0o600 },
        bar: { dir: true, mode: 0o700 },
        "bar/sub": { content: "", mode: 0o600 },
      },
      buildArgs: { group: "nobody" },
    });
    assert.equal(await r.readFile("/fooowner"), "daemon daemon\n");
    assert.equal(await r.readFile("/subowner"), "1000 nobody\n");
    assert.equal(await r.readFile("/foobisowner"), "1000 nobody\n");
  });

  test("testCopyChmod", async () => {
    const r = await bk.build({
      dockerfile: `FROM busybox AS base

RUN mkdir -m 0777 /out
COPY --chmod=0644 foo /
COPY --chmod=777 bar /baz
COPY --chmod=0 foo /foobis
COPY --chmod=777 foo /parent/foo
COPY --chmod=770 foo /parent/sub/foo

ARG mode
COPY --chmod=\${mode} foo /footer

RUN stat -c "%04a" /foo  > /out/fooperm
RUN stat -c "%04a" /baz  > /out/barperm
RUN stat -c "%04a" /foobis  > /out/foobisperm
RUN stat -c "%04a" /parent  > /out/parentperm
RUN stat -c "%04a" /parent/sub  > /out/subparentperm
RUN stat -c "%04a" /footer  > /out/footerperm
FROM scratch
COPY --from=base /out /
`,
      files: { foo: { content: "foo-contents", mode: 0o600 }, bar: { content: "bar-contents", mode: 0o700 } },
      buildArgs: { mode: "755" },
    });
    assert.equal(await r.readFile("/fooperm"), "0644\n");
    assert.equal(await r.readFile("/barperm"), "0777\n");
    assert.equal(await r.readFile("/foobisperm"), "0000\n");
    assert.equal(await r.readFile("/parentperm"), "0777\n");
    assert.equal(await r.readFile("/subparentperm"), "0770\n");
    assert.equal(await r.readFile("/footerperm"), "0755\n");
  });

  test("testCopyInvalidChmod", async () => {
    const files = { foo: { content: "foo-contents", mode: 0o600 } };
    const e1 = await bk.buildFails({ dockerfile: "FROM scratch\nCOPY --chmod=64a foo /\n", files });
    assert.match(e1.message, /invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777/);
    const e2 = await bk.buildFails({ dockerfile: "FROM scratch\nCOPY --chmod=10000 foo /\n", files });
    assert.match(e2.message, /invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777/);
  });

  test("testCopyOverrideFiles", async () => {
    const r = await bk.build({
      dockerfile:
        "FROM scratch AS base\nCOPY sub sub\nCOPY sub sub\nCOPY files/foo.go dest/foo.go\nCOPY files/foo.go dest/foo.go\nCOPY files dest\n",
      files: {
        sub: { dir: true, mode: 0o700 },
        "sub/dir1": { dir: true, mode: 0o700 },
        "sub/dir1/dir2": { dir: true, mode: 0o700 },
        "sub/dir1/dir2/foo": { content: "foo-contents", mode: 0o600 },
        files: { dir: true, mode: 0o700 },
        "files/foo.go": { content: "foo.go-contents", mode: 0o600 },
      },
    });
    assert.equal(await r.readFile("/sub/dir1/dir2/foo"), "foo-contents");
    assert.equal(await r.readFile("/dest/foo.go"), "foo.go-contents");
  });

  test("testCopyVarSubstitution", async () => {
    const r = await bk.build({
      dockerfile: "FROM scratch AS base\nENV FOO bar\nCOPY $FOO baz\n",
      files: { bar: { content: "bar-contents", mode: 0o600 } },
    });
    assert.equal(await r.readFile("/baz"), "bar-contents");
  });

  test("testCopyWildcards", async () => {
    const r = await bk.build({
      dockerfile: `FROM scratch AS base
COPY *.go /gofiles/
COPY f*.go foo2.go
COPY sub/* /subdest/
COPY sub/*/dir2/foo /subdest2/
COPY sub/*/dir2/foo /subdest3/bar
COPY . all/
COPY sub/dir1/ subdest4
COPY sub/dir1/. subdest5
COPY sub/dir1 subdest6
`,
      files: {
        "foo.go": { content: "foo-contents", mode: 0o600 },
        "bar.go": { content: "bar-contents", mode: 0o600 },
        sub: { dir: true, mode: 0o700 },
        "sub/dir1": { dir: true, mode: 0o700 },
        "sub/dir1/dir2": { dir: true, mode: 0o700 },
        "sub/dir1/dir2/foo": { content: "foo-contents", mode: 0o600 },
      },
    });
    const want: Record<string, string> = {
      "/gofiles/foo.go": "foo-contents",
      "/gofiles/bar.go": "bar-contents",
      "/foo2.go": "foo-contents",
      "/subdest/dir2/foo": "foo-contents",
      "/subdest2/foo": "foo-contents",
      "/subdest3/bar": "foo-contents",
      "/all/foo.go": "foo-contents",
      "/subdest4/dir2/foo": "foo-contents",
      "/subdest5/dir2/foo": "foo-contents",
      "/subdest6/dir2/foo": "foo-contents",
    };
    for (const [p, content] of Object.entries(want)) assert.equal(await r.readFile(p), content, p);
  });

  test("testCopyRelative", async () => {
    await bk.build({
      dockerfile: `FROM busybox
WORKDIR /test1
WORKDIR test2
RUN sh -c "[ "$PWD" = '/test1/test2' ]"
COPY foo ./
RUN sh -c "[ $(cat /test1/test2/foo) = 'hello' ]"
ADD foo ./bar/baz
RUN sh -c "[ $(cat /test1/test2/bar/baz) = 'hello' ]"
COPY foo ./bar/baz2
RUN sh -c "[ $(cat /test1/test2/bar/baz2) = 'hello' ]"
WORKDIR ..
COPY foo ./
RUN sh -c "[ $(cat /test1/foo) = 'hello' ]"
COPY foo /test3/
RUN sh -c "[ $(cat /test3/foo) = 'hello' ]"
WORKDIR /test4
COPY . .
RUN sh -c "[ $(cat /test4/foo) = 'hello' ]"
WORKDIR /test5/test6
COPY foo ../
RUN sh -c "[ $(cat /test5/foo) = 'hello' ]"
`,
      files: { foo: { content: "hello", mode: 0o600 } },
    });
  });

  test("testCopyUnicodePath", async () => {
    const r = await bk.build({
      dockerfile: "FROM busybox\nCOPY test-äöü.txt /\nCOPY test-%C3%A4%C3%B6%C3%BC.txt /\nCOPY test+aou.txt /\n",
      files: {
        "test-äöü.txt": { content: "foo", mode: 0o644 },
        "test-%C3%A4%C3%B6%C3%BC.txt": { content: "bar", mode: 0o644 },
        "test+aou.txt": { content: "baz", mode: 0o644 },
      },
    });
    assert.equal(await r.readFile("/test-äöü.txt"), "foo");
    assert.equal(await r.readFile("/test-%C3%A4%C3%B6%C3%BC.txt"), "bar");
    assert.equal(await r.readFile("/test+aou.txt"), "baz");
  });

  test("testChmodNonOctal", async () => {
    const cases = [
      { src: "file", dst: "f1", mode: "go-w" },
      { src: "file", dst: "f2", mode: "u=rw,g=r,o=r" },
      { src: "file", dst: "f3", mode: "a+X" },
      { src: "dir", dst: "d1", mode: "go-w", isDir: true },
      { src: "dir", dst: "d2", mode: "u+rw,g+r,o-x,o+w", isDir: true },
      { src: "dir", dst: "d3", mode: "a+X", isDir: true },
    ];
    let expected = "";
    let copies = "";
    let verify = "";
    for (const c of cases) {
      if (c.isDir) {
        // A nested input dir, because COPY copies a directory's contents.
        expected += `RUN mkdir -p /input/dirs/${c.dst} && cp -a /input/${c.src} /input/dirs/${c.dst}/${c.dst}\n`;
        expected += `RUN cp -a /input/dirs/${c.dst}/. /expected/ && chmod ${c.mode} /expected/${c.dst}\n`;
        copies += `COPY --from=base --chmod=${c.mode} /input/dirs/${c.dst} /\n`;
      } else {
        expected += `RUN cp -a /input/${c.src} /expected/${c.dst} && chmod ${c.mode} /expected/${c.dst}\n`;
        copies += `COPY --from=base --chmod=${c.mode} /input/${c.src} /${c.dst}\n`;
      }
      verify += `RUN [ "$(stat -c %A /actual/${c.dst})" = "$(stat -c %A /expected/${c.dst})" ]\n`;
    }
    await bk.build({
      dockerfile: `
FROM busybox as base
RUN <<eot
	set -ex
	mkdir /input
	touch /input/file
	chmod 666 /input/file
	mkdir /input/dir
	chmod 124 /input/dir
	mkdir /expected
eot
${expected}

FROM scratch as result
${copies}

FROM base
COPY --from=result / /actual/
${verify}

`,
    });
  });

  // BuildKit sends the Dockerfile, the context and a named context (`context:base` = `local:basedir`) through one
  // client session of a custom id; the session is BuildKit's client API. What the build must do with them is the same
  // here: the Dockerfile in a directory of its own, the main context elsewhere, `base` a directory context.
  test("testLocalCustomSessionID", async () => {
    const basedir = await bk.dir({ another: { content: "contents2", mode: 0o600 } });
    const r = await bk.build({
      dockerfile: "\nFROM scratch AS base\nFROM scratch\nCOPY out /out1\nCOPY --from=base /another /out2\n",
      separateDockerfileDir: true,
      files: { out: { content: "contents1", mode: 0o600 } },
      buildContexts: { base: basedir },
    });
    assert.equal(await r.readFile("/out1"), "contents1");
    assert.equal(await r.readFile("/out2"), "contents2");
  });
});
