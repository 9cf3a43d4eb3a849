// Ported from BuildKit frontend/dockerfile/dockerfile_parents_test.go (see ../README.md for the table). BuildKit's
// `FROM alpine` is busybox here (the stages need a shell and test).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_parents_test.go", { concurrency: 4 }, () => {
  test("testCopyParents", async () => {
    const r = await bk.build({
      dockerfile: "FROM scratch\nCOPY --parents foo1/foo2/bar /\n\nWORKDIR /test\nCOPY --parents foo1/foo2/ba* .\n",
      files: {
        foo1: { dir: true, mode: 0o700 },
        "foo1/foo2": { dir: true, mode: 0o700 },
        "foo1/foo2/bar": { content: "testing", mode: 0o600 },
        "foo1/foo2/baz": { content: "testing2", mode: 0o600 },
      },
    });
    assert.equal(await r.readFile("/foo1/foo2/bar"), "testing");
    assert.equal(await r.readFile("/test/foo1/foo2/bar"), "testing");
    assert.equal(await r.readFile("/test/foo1/foo2/baz"), "testing2");
  });

  test("testCopyParentsMissingDirectory", async () => {
    const dockerfile = `
FROM busybox AS base
WORKDIR /test
RUN <<eot
	set -ex
	mkdir -p a/b/c/d/e
	touch a/b/c/d/foo
	touch a/b/c/d/e/bay
eot

FROM busybox AS normal
COPY --from=base --parents /test/a/b/c/d /out/
RUN <<eot
	set -ex
	[ -d /out/test/a/b/c/d/e ]
	[ -f /out/test/a/b/c/d/e/bay ]
	[ ! -d /out/e ]
	[ ! -d /out/a ]
eot

FROM busybox AS withpivot
COPY --from=base --parents /test/a/b/./c/d /out/
RUN <<eot
	set -ex
	[ -d /out/c/d/e ]
	[ -f /out/c/d/foo ]
	[ ! -d /out/a ]
	[ ! -d /out/e ]
eot

FROM busybox AS nonexistentfile
COPY --from=base --parents /test/nonexistent-file /out/

FROM busybox AS wildcard-nonexistent
COPY --from=base --parents /test/a/b2*/c /out/
RUN <<eot
	set -ex
	[ -d /out ]
	[ ! -d /out/a ]
eot

FROM busybox AS wildcard-afterpivot
COPY --from=base --parents /test/a/b/./c2* /out/
RUN <<eot
	set -ex
	[ -d /out ]
	[ ! -d /out/a ]
	[ ! -d /out/c* ]
eot
`;
    for (const target of ["normal", "withpivot", "wildcard-nonexistent", "wildcard-afterpivot"])
      await bk.build({ dockerfile, target });
    const err = await bk.buildFails({ dockerfile, target: "nonexistentfile" });
    // BuildKit: `failed to calculate checksum of ref …: "/test/nonexistent-file": not found`.
    assert.match(err.message, /"?\/test\/nonexistent-file"?.*not found|not found.*\/test\/nonexistent-file/);
  });

  test("testCopyRelativeParents", async () => {
    const dockerfile = `
FROM busybox AS base
WORKDIR /test
RUN <<eot
\tset -ex
\tmkdir -p a/b/c/d/e
\tmkdir -p a/b2/c/d/e
\tmkdir -p a/b/c2/d/e
\tmkdir -p a/b/c2/d/e2
\ttouch a/b/c/d/foo
\ttouch a/b/c/d/e/bay
\ttouch a/b2/c/d/e/bar
\ttouch a/b/c2/d/e/baz
\ttouch a/b/c2/d/e2/baz
eot
FROM busybox AS middle
COPY --from=base --parents /test/a/b/./c/d /out/
RUN <<eot
\tset -ex
\t[ -d /out/c/d/e ]
\t[ -f /out/c/d/foo ]
\t[ ! -d /out/a ]
\t[ ! -d /out/e ]
eot
FROM busybox AS end
COPY --from=base --parents /test/a/b/c/d/. /out/
RUN <<eot
\tset -ex
\t[ -d /out/test/a/b/c/d/e ]
\t[ -f /out/test/a/b/c/d/foo ]
eot
FROM busybox AS start
COPY --from=base --parents ./test/a/b/c/d /out/
RUN <<eot
\tset -ex
\t[ -d /out/test/a/b/c/d/e ]
\t[ -f /out/test/a/b/c/d/foo ]
eot
FROM busybox AS double
COPY --from=base --parents /test/a/./b/./c /out/
RUN <<eot
\tset -ex
\t[ -d /out/b/c/d/e ]
\t[ -f /out/b/c/d/foo ]
eot
FROM busybox AS wildcard
COPY --from=base --parents /test/a/./*/c /out/
RUN <<eot
\tset -ex
\t[ -d /out/b/c/d/e ]
\t[ -f /out/b2/c/d/e/bar ]
eot
FROM busybox AS doublewildcard
COPY --from=base --parents /test/a/b*/./c/**/e /out/
RUN <<eot
\tset -ex
\t[ -d /out/c/d/e ]
\t[ -f /out/c/d/e/bay ] # via b
\t[ -f /out/c/d/e/bar ] # via b2
eot
FROM busybox AS doubleinputs
COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /out/
RUN <<eot
\tset -ex
\t[ -f /out/d/e/baz ]
\t[ ! -f /out/d/e/bay ]
\t[ -f /out/d/e2/baz ]
\t[ -f /out/c/d/e/bar ] # via b2
eot
`;
    for (const target of ["middle", "end", "start", "double", "wildcard", "doublewildcard", "doubleinputs"]) {
      await bk.build({ dockerfile, target }).catch((e: Error) => {
        throw new Error(`target ${target}: ${e.message}`);
      });
    }
  });
});
