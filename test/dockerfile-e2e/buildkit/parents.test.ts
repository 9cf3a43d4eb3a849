// Ported from BuildKit frontend/dockerfile/dockerfile_parents_test.go (see ../README.md for the table). BuildKit's
// `FROM alpine` is busybox here (the stages need a shell and test). testCopyRelativeParents waits for COPY --parents
// with a wildcard before the ./ pivot (branch dfitems).
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
});
