// Ported from BuildKit frontend/dockerfile/dockerfile_heredoc_test.go (see ../README.md for the table).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type BkResult, buildkitHarness } from "./harness.js";
import { pushResult } from "./images.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

/** Asserts each file's content in the result (paths relative to /). */
async function expectFiles(r: BkResult, contents: Record<string, string>): Promise<void> {
  for (const [name, content] of Object.entries(contents)) assert.equal(await r.readFile(`/${name}`), content, name);
}

describe("dockerfile_heredoc_test.go", { concurrency: 4 }, () => {
  // Debian's busybox-static has no adduser applet: the user and group `adduser -D user` makes are written directly.
  test("testCopyHeredoc", async () => {
    const r = await bk.build({
      dockerfile: `
FROM busybox AS build

RUN echo "user:x:1000:1000:Linux User,,,:/home/user:/bin/sh" >> /etc/passwd && echo "user:x:1000:" >> /etc/group
WORKDIR /dest

COPY <<EOF single
single file
EOF

COPY <<EOF <<EOF2 double/
first file
EOF
second file
EOF2

RUN mkdir -p /permfiles
COPY --chmod=777 <<EOF /permfiles/all
dummy content
EOF
COPY --chmod=0644 <<EOF /permfiles/rw
dummy content
EOF
COPY --chown=user:user <<EOF /permfiles/owned
dummy content
EOF
RUN stat -c "%04a" /permfiles/all >> perms && \\
	stat -c "%04a" /permfiles/rw >> perms && \\
	stat -c "%U:%G" /permfiles/owned >> perms

FROM scratch
COPY --from=build /dest /
`,
    });
    await expectFiles(r, {
      single: "single file\n",
      "double/EOF": "first file\n",
      "double/EOF2": "second file\n",
      perms: "0777\n0644\nuser:user\n",
    });
  });

  test("testCopyHeredocSpecialSymbols", async () => {
    const r = await bk.build({
      dockerfile: `
FROM scratch

COPY <<EOF quotefile
"quotes in file"
EOF

COPY <<EOF slashfile1
\\
EOF
COPY <<EOF slashfile2
\\\\
EOF
COPY <<EOF slashfile3
\\$
EOF

COPY <<"EOF" rawslashfile1
\\
EOF
COPY <<"EOF" rawslashfile2
\\\\
EOF
COPY <<"EOF" rawslashfile3
\\$
EOF
`,
    });
    await expectFiles(r, {
      quotefile: '"quotes in file"\n',
      slashfile1: "\n",
      slashfile2: "\\\n",
      slashfile3: "$\n",
      rawslashfile1: "\\\n",
      rawslashfile2: "\\\\\n",
      rawslashfile3: "\\$\n",
    });
  });

  test("testRunBasicHeredoc", async () => {
    const r = await bk.build({
      dockerfile: `
FROM busybox AS build

RUN <<EOF
echo "i am" >> /dest
whoami >> /dest
EOF

FROM scratch
COPY --from=build /dest /dest
`,
    });
    assert.equal(await r.readFile("/dest"), "i am\nroot\n");
  });

  test("testRunFakeHeredoc", async () => {
    const r = await bk.build({
      dockerfile: `
FROM busybox AS build

SHELL ["/bin/awk"]
RUN <<EOF
BEGIN {
	print "foo" > "/dest"
}
EOF

FROM scratch
COPY --from=build /dest /dest
`,
    });
    assert.equal(await r.readFile("/dest"), "foo\n");
  });

  test("testRunShebangHeredoc", async () => {
    const r = await bk.build({
      dockerfile: `
FROM busybox AS build

WORKDIR /dest

RUN <<EOF
#!/bin/awk -f
BEGIN {
	print "hello" >> "./out1"
	print "world" >> "./out1"
}
EOF

RUN <<-EOF
	#!/bin/awk -f
	BEGIN {
		print "hello" >> "./out2"
		print "world" >> "./out2"
	}
EOF

FROM scratch
COPY --from=build /dest /
`,
    });
    await expectFiles(r, { out1: "hello\nworld\n", out2: "hello\nworld\n" });
  });

  test("testRunComplexHeredoc", async () => {
    const r = await bk.build({
      dockerfile: `
FROM busybox AS build

WORKDIR /dest

RUN cat <<EOF1 | tr '[:upper:]' '[:lower:]' > ./out1; \\
	cat <<EOF2 | tr '[:lower:]' '[:upper:]' > ./out2
hello WORLD
EOF1
HELLO world
EOF2

RUN <<EOF 3<<IN1 4<<IN2 awk -f -
BEGIN {
	while ((getline line < "/proc/self/fd/3") > 0)
		print tolower(line) > "./fd3"
	while ((getline line < "/proc/self/fd/4") > 0)
		print toupper(line) > "./fd4"
}
EOF
hello WORLD
IN1
HELLO world
IN2

FROM scratch
COPY --from=build /dest /
`,
    });
    await expectFiles(r, {
      out1: "hello world\n",
      out2: "HELLO WORLD\n",
      fd3: "hello world\n",
      fd4: "HELLO WORLD\n",
    });
  });

  test("testHeredocIndent", async () => {
    const r = await bk.build({
      dockerfile: `
FROM busybox AS build

COPY <<EOF /dest/foo-copy
	foo
EOF

COPY <<-EOF /dest/bar-copy
	bar
EOF

RUN <<EOF
echo "
	foo" > /dest/foo-run
EOF

RUN <<-EOF
echo "
	bar" > /dest/bar-run
EOF

RUN <<EOF
#!/bin/sh
echo "
	foo" > /dest/foo2-run
EOF

RUN <<-EOF
#!/bin/sh
echo "
	bar" > /dest/bar2-run
EOF

RUN <<EOF sh > /dest/foo3-run
echo "
	foo"
EOF

RUN <<-EOF sh > /dest/bar3-run
echo "
	bar"
EOF

FROM scratch
COPY --from=build /dest /
`,
    });
    await expectFiles(r, {
      "foo-copy": "\tfoo\n",
      "foo-run": "\n\tfoo\n",
      "foo2-run": "\n\tfoo\n",
      "foo3-run": "\n\tfoo\n",
      "bar-copy": "bar\n",
      "bar-run": "\nbar\n",
      "bar2-run": "\nbar\n",
      "bar3-run": "\nbar\n",
    });
  });

  test("testHeredocVarSubstitution", async () => {
    const r = await bk.build({
      dockerfile: `
FROM busybox as build

ARG name=world

COPY <<EOF /dest/c1
Hello \${name}!
EOF
COPY <<'EOF' /dest/c2
Hello \${name}!
EOF
COPY <<"EOF" /dest/c3
Hello \${name}!
EOF

COPY <<EOF /dest/q1
Hello '\${name}'!
EOF
COPY <<EOF /dest/q2
Hello "\${name}"!
EOF
COPY <<'EOF' /dest/qsingle1
Hello '\${name}'!
EOF
COPY <<'EOF' /dest/qsingle2
Hello "\${name}"!
EOF
COPY <<"EOF" /dest/qdouble1
Hello '\${name}'!
EOF
COPY <<"EOF" /dest/qdouble2
Hello "\${name}"!
EOF

RUN <<EOF
greeting="Hello"
echo "\${greeting} \${name}!" > /dest/r1
EOF
RUN <<EOF
name="new world"
echo "Hello \${name}!" > /dest/r2
EOF

FROM scratch
COPY --from=build /dest /
`,
    });
    await expectFiles(r, {
      c1: "Hello world!\n",
      c2: "Hello ${name}!\n",
      c3: "Hello ${name}!\n",
      q1: "Hello 'world'!\n",
      q2: 'Hello "world"!\n',
      qsingle1: "Hello '${name}'!\n",
      qsingle2: 'Hello "${name}"!\n',
      qdouble1: "Hello '${name}'!\n",
      qdouble2: 'Hello "${name}"!\n',
      r1: "Hello world!\n",
      r2: "Hello new world!\n",
    });
  });

  // The base is pushed to the loopback registry (BuildKit's image exporter with push=true), then built FROM.
  test("testOnBuildHeredoc", async () => {
    const base = await bk.build({
      dockerfile: '\nFROM busybox\nONBUILD RUN <<EOF\necho "hello world" >> /dest\nEOF\n',
    });
    const target = await pushResult(bk, base, "buildkit/testonbuildheredoc:base");
    const r = await bk.build({
      dockerfile: `\n\tFROM ${target} AS base\n\tFROM scratch\n\tCOPY --from=base /dest /dest\n\t`,
    });
    assert.equal(await r.readFile("/dest"), "hello world\n");
  });
});
