// Ported from BuildKit frontend/dockerfile/dockerfile_mount_test.go (see ../README.md for the table).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
// Cache mounts live in the store, by id: the tests whose cache ids would meet (BuildKit's run each in its own
// sandbox) get a store of their own.
const iso = buildkitHarness();
before(async () => {
  await bk.start();
  await iso.start();
});
after(async () => {
  await bk.stop();
  await iso.stop();
});

describe("dockerfile_mount_test.go", { concurrency: 4 }, () => {
  test("testMountContext", async () => {
    await bk.build({
      dockerfile: 'FROM busybox\nRUN --mount=target=/context [ "$(cat /context/testfile)" == "contents0" ]\n',
      files: { testfile: { content: "contents0", mode: 0o600 } },
    });
  });

  test("testMountTmpfs", async () => {
    await bk.build({
      dockerfile: "FROM busybox\nRUN --mount=target=/mytmp,type=tmpfs touch /mytmp/foo\nRUN [ ! -f /mytmp/foo ]\n",
    });
  });

  test("testMountInvalid", async () => {
    let err = await bk.buildFails({ dockerfile: "FROM scratch\nRUN --mont=target=/mytmp,type=tmpfs /bin/true\n" });
    // BuildKit: `unknown flag: --mont` … `did you mean mount?`; Strata: `unknown flag "--mont" for RUN: did you mean
    // --mount?` — the same two facts.
    assert.match(err.message, /unknown flag:? "?--mont\b/);
    assert.match(err.message, /did you mean (--)?mount\?/);

    err = await bk.buildFails({ dockerfile: "\tFROM scratch\n\tRUN --mount=typ=tmpfs /bin/true\n\t" });
    assert.match(err.message, /unexpected key 'typ'/);
    assert.match(err.message, /did you mean type\?/);

    err = await bk.buildFails({ dockerfile: "\tFROM scratch\n\tRUN --mount=type=tmp /bin/true\n\t" });
    assert.match(err.message, /unsupported mount type "tmp"/);
    assert.match(err.message, /did you mean tmpfs\?/);
  });

  test("testMountRWCache", async () => {
    const dockerfile =
      "from busybox AS build\ncopy cachebust /\nrun mkdir out && echo foo > out/foo\n\n" +
      "from busybox as second\n" +
      "RUN --mount=from=build,src=out,target=/out,rw touch /out/bar && cat /dev/urandom | head -c 100 | sha256sum > /unique\n\n" +
      "from scratch\nCOPY --from=second /unique /unique\n";
    const first = await bk.build({ dockerfile, files: { cachebust: { content: "0", mode: 0o600 } } });
    const dt1 = await first.readFile("/unique");
    assert.ok(dt1);
    // repeat with a changed file: the mounted `out` is the same by content, so the RUN is cached
    const second = await bk.build({ dockerfile, files: { cachebust: { content: "1", mode: 0o600 } } });
    assert.equal(await second.readFile("/unique"), dt1);
  });

  test("testCacheMountUser", async () => {
    await iso.build({
      dockerfile:
        'FROM busybox\nRUN --mount=type=cache,target=/mycache,uid=1001,gid=1002,mode=0751 [ "$(stat -c "%u %g %f" /mycache)" == "1001 1002 41e9" ]\n',
    });
  });

  test("testCacheMountDefaultID", async () => {
    await bk.build({
      dockerfile:
        "FROM busybox\nRUN --mount=type=cache,target=/mycache touch /mycache/foo\n" +
        "RUN --mount=type=cache,target=/mycache2 [ ! -f /mycache2/foo ]\n" +
        "RUN --mount=type=cache,target=/mycache [ -f /mycache/foo ]\n",
    });
  });

  test("testMountEnvVar", async () => {
    await bk.build({
      dockerfile:
        "FROM busybox\nENV SOME_PATH=/mycache\nRUN --mount=type=cache,target=/mycache touch /mycache/foo\n" +
        "RUN --mount=type=cache,target=$SOME_PATH [ -f $SOME_PATH/foo ]\n",
    });
  });

  test("testMountArg", async () => {
    await iso.build({
      dockerfile:
        "FROM busybox\nARG MNT_TYPE=cache\nRUN --mount=type=$MNT_TYPE,target=/mycache2 touch /mycache2/foo\n" +
        "RUN --mount=type=cache,target=/mycache2 [ -f /mycache2/foo ]\n",
    });
  });

  test("testMountEnvAcrossStages", async () => {
    await bk.build({
      dockerfile:
        "FROM busybox as stage1\n\nENV MNT_ID=mycache\nENV MNT_TYPE2=cache\n" +
        "RUN --mount=type=cache,id=mycache,target=/abcabc touch /abcabc/foo\n" +
        "RUN --mount=type=$MNT_TYPE2,id=$MNT_ID,target=/cbacba [ -f /cbacba/foo ]\n\n" +
        "FROM stage1\nRUN --mount=type=$MNT_TYPE2,id=$MNT_ID,target=/whatever [ -f /whatever/foo ]\n",
    });
  });

  test("testMountMetaArg", async () => {
    await bk.build({
      dockerfile:
        "ARG META_PATH=/tmp/meta\n\nFROM busybox\nARG META_PATH\n" +
        "RUN --mount=type=cache,id=mycache,target=/tmp/meta touch /tmp/meta/foo\n" +
        "RUN --mount=type=cache,id=mycache,target=$META_PATH [ -f /tmp/meta/foo ]\n",
    });
  });

  test("testMountTmpfsSize", async () => {
    const r = await bk.build({
      dockerfile:
        "FROM busybox AS base\nRUN --mount=type=tmpfs,target=/dev/shm,size=128m mount | grep /dev/shm > /tmpfssize\n" +
        "FROM scratch\nCOPY --from=base /tmpfssize /\n",
    });
    assert.match((await r.readFile("/tmpfssize")) ?? "", /size=131072k/);
  });

  // moby/buildkit#4123: a context mount and a mount of one of its files, rebuilt with a changed file.
  test("testMountDuplicate", async () => {
    const dockerfile =
      "FROM busybox AS base\nRUN --mount=source=.,target=/tmp/test \\\n  --mount=source=b.txt,target=/tmp/b.txt \\\n" +
      "  cat /tmp/test/a.txt /tmp/b.txt > /combined.txt\nFROM scratch\nCOPY --from=base /combined.txt /\n";
    for (const text of ["foo\n", "updated\n"]) {
      const r = await bk.build({
        dockerfile,
        files: { "a.txt": { content: text, mode: 0o600 }, "b.txt": { content: "bar\n", mode: 0o600 } },
      });
      assert.equal(await r.readFile("/combined.txt"), `${text}bar\n`);
    }
  });

  // moby/buildkit#5566: nested cache mounts in two stages side by side, rebuilt without the cache. BuildKit repeats
  // the build 20 times to catch a runc race; five rebuilds keep this suite fast. `alpine` → busybox (only
  // /etc/passwd is read from it).
  test("testCacheMountParallel", async () => {
    const dockerfile =
      "FROM busybox AS b1\nRUN --mount=type=cache,target=/foo/bar --mount=type=cache,target=/foo/bar/baz echo 1\n\n" +
      "FROM busybox AS b2\nRUN --mount=type=cache,target=/foo/bar --mount=type=cache,target=/foo/bar/baz echo 2\n\n" +
      "FROM scratch\nCOPY --from=b1 /etc/passwd p1\nCOPY --from=b2 /etc/passwd p2\n";
    for (let i = 0; i < 5; i++) await iso.build({ dockerfile, forceBuild: true });
  });

  test("testMountFromError", async () => {
    const err = await bk.buildFails({
      dockerfile:
        "\nFROM busybox as test\nRUN touch /tmp/test\nFROM busybox\nENV ttt=test\nRUN --mount=from=$ttt,type=cache,target=/tmp ls\n",
    });
    assert.match(err.message, /'from' doesn't support variable expansion, define alias stage instead/);
  });

  // A cache's `source=` that resolves through a link the cache holds (to /etc) must not mount what lies outside the
  // cache. BuildKit's `no-cache` is `forceBuild`.
  test("testCacheMountSourceEscape", async () => {
    const err = await iso.buildFails({
      dockerfile: `
FROM busybox AS init
RUN --mount=type=cache,id=sourceescape,target=/cache mkdir -p /cache/sel && echo benign > /cache/sel/benign.txt
FROM init AS link
RUN --mount=type=cache,id=sourceescape,target=/cache rm -rf /cache/sel && ln -s /etc /cache/sel
FROM link AS victim
RUN --mount=type=cache,id=sourceescape,source=sel,target=/victim cat /victim/hostname
FROM scratch
COPY --from=victim /etc/hostname /hostname
`,
      forceBuild: true,
    });
    // Strata resolves the link inside the cache (where /etc is not): the source is missing, not /etc.
    assert.match(err.message, /source=sel: there is no "sel" inside the cache/);
  });
});
