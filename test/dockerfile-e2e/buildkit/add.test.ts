// Ported from BuildKit frontend/dockerfile/dockerfile_add_test.go (see ../README.md for the table). BuildKit's
// httpserver is a loopback server here (http.ts); its tar archives are written entry by entry (tar.ts).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { Digest } from "../../../src/util/digest.js";
import { buildkitHarness } from "./harness.js";
import { startHttpServer } from "./http.js";
import { gzip, tarOf } from "./tar.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

const sha256 = (b: string | Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const etag = () => createHash("sha256").update(String(Math.random())).digest("hex").slice(0, 24);

describe("dockerfile_add_test.go", { concurrency: 4 }, () => {
  test("testDockerfileADDFromURL", async (t) => {
    const modTime = new Date(Math.floor(Date.now() / 1000) * 1000 - 24 * 3600 * 1000);
    const server = await startHttpServer({
      "/foo": { etag: etag(), content: "content1" },
      "/": { etag: etag(), lastModified: modTime, content: "content2" },
    });
    t.after(() => server.close());
    const dockerfile = `FROM scratch\nADD ${server.url}/foo /dest/\n`;
    const r = await bk.build({ dockerfile });
    assert.equal(await r.readFile("/dest/foo"), "content1");
    // Again: the server is asked whether the file changed.
    await bk.build({ dockerfile });
    // The default name and properties.
    const r2 = await bk.build({ dockerfile: `FROM scratch\nADD ${server.url}/ /dest/\n` });
    assert.equal(await r2.readFile("/dest/__unnamed__"), "content2");
    // The file's mtime is the response's Last-Modified.
    assert.equal((await r2.tree()).get("/dest/__unnamed__")?.mtime, modTime.getTime() / 1000);
    const reqs = server.requests("/foo");
    assert.equal(reqs.length, 2);
    assert.equal(reqs[0]!.method, "GET");
    assert.match(reqs[0]!.headers["user-agent"] ?? "", /strata/);
    // BuildKit asks with HEAD; Strata with a conditional GET the server answers 304 (nothing downloaded again).
    assert.ok(reqs[1]!.method === "HEAD" || reqs[1]!.headers["if-none-match"] !== undefined, reqs[1]!.method);
    assert.match(reqs[1]!.headers["user-agent"] ?? "", /strata/);
  });

  test("testDockerfileAddArchive", async (t) => {
    const tar = await tarOf([{ name: "foo", content: "content0", mode: 0o644 }]);
    const tgz = gzip(tar);
    let r = await bk.build({
      dockerfile: "FROM scratch\nADD t.tar /\n",
      files: { "t.tar": { content: tar, mode: 0o600 } },
    });
    assert.equal(await r.readFile("/foo"), "content0");
    // A gzip tar.
    r = await bk.build({
      dockerfile: "FROM scratch\nADD t.tar.gz /\n",
      files: { "t.tar.gz": { content: tgz, mode: 0o600 } },
    });
    assert.equal(await r.readFile("/foo"), "content0");
    // --unpack=false.
    r = await bk.build({
      dockerfile: "\tFROM scratch\n\tADD --unpack=false t.tar.gz /\n\t",
      files: { "t.tar.gz": { content: tgz, mode: 0o600 } },
    });
    assert.equal((await r.tree()).get("/foo"), undefined);
    assert.equal((await r.tree()).get("/t.tar.gz")?.sha256, sha256(tgz).slice(7));
    // COPY doesn't extract.
    r = await bk.build({
      dockerfile: "FROM scratch\nCOPY t.tar.gz /\n",
      files: { "t.tar.gz": { content: tgz, mode: 0o600 } },
    });
    assert.equal((await r.tree()).get("/t.tar.gz")?.sha256, sha256(tgz).slice(7));
    // ADD from a URL doesn't extract.
    const server = await startHttpServer({ "/t.tar.gz": { etag: etag(), content: tgz } });
    t.after(() => server.close());
    r = await bk.build({ dockerfile: `FROM scratch\nADD ${server.url}/t.tar.gz /\n` });
    assert.equal((await r.tree()).get("/t.tar.gz")?.sha256, sha256(tgz).slice(7));
    // ADD from a URL with --unpack=true.
    r = await bk.build({ dockerfile: `FROM scratch\nADD --unpack=true ${server.url}/t.tar.gz /dest/\n` });
    assert.equal(await r.readFile("/dest/foo"), "content0");
    // moby/buildkit#386
    r = await bk.build({ dockerfile: `FROM scratch\nADD ${server.url}/t.tar.gz /newname.tar.gz\n` });
    assert.equal((await r.tree()).get("/newname.tar.gz")?.sha256, sha256(tgz).slice(7));
  });

  // moby/moby#53257
  test("testDockerfileAddArchiveWithImpliedParentDir", async () => {
    const tgz = gzip(
      await tarOf([
        { name: "etc/dnf/", type: "dir", mode: 0o755 },
        { name: "etc/dnf/dnf.conf", content: "content0", mode: 0o644 },
      ]),
    );
    const r = await bk.build({
      dockerfile: "FROM scratch\nADD t.tar.gz /\n",
      files: { "t.tar.gz": { content: tgz, mode: 0o600 } },
    });
    assert.equal(await r.readFile("/etc/dnf/dnf.conf"), "content0");
  });

  // moby/moby#53258
  test("testDockerfileAddArchiveThroughAbsoluteSymlink", async () => {
    const rootfs = await tarOf([
      { name: "run/", type: "dir" },
      { name: "var/", type: "dir" },
      { name: "var/run", type: "symlink", linkname: "/run", mode: 0o777 },
    ]);
    const head = "ref: refs/heads/main\n";
    const payload = await tarOf([
      // Explicit parent directories: this isolates extraction through the absolute symlink.
      { name: "var/run/act/", type: "dir" },
      { name: "var/run/act/actions/", type: "dir" },
      { name: "var/run/act/actions/broad/", type: "dir" },
      { name: "var/run/act/actions/broad/.git/", type: "dir" },
      { name: "var/run/act/actions/broad/.git/HEAD", content: head, mode: 0o644 },
      {
        name: "var/run/act/actions/broad/.git/HEAD.link",
        type: "link",
        linkname: "var/run/act/actions/broad/.git/HEAD",
        mode: 0o644,
      },
    ]);
    const r = await bk.build({
      dockerfile: "FROM scratch\nADD rootfs.tar /\nADD payload.tar /\n",
      files: { "rootfs.tar": { content: rootfs, mode: 0o600 }, "payload.tar": { content: payload, mode: 0o600 } },
    });
    assert.equal(await r.readFile("/run/act/actions/broad/.git/HEAD"), head);
    assert.equal(await r.readFile("/run/act/actions/broad/.git/HEAD.link"), head);
    // One file: a hard link in the layer.
    const layers = (await r.config()).rootfs.diff_ids;
    const top = layers[layers.length - 1]!;
    const layerDir = bk.store.layout.layerDir(top as Digest);
    const a = await fsp.stat(path.join(layerDir, "run/act/actions/broad/.git/HEAD"));
    const b = await fsp.stat(path.join(layerDir, "run/act/actions/broad/.git/HEAD.link"));
    assert.equal(a.ino, b.ino);
  });

  test("testDockerfileAddChownArchive", async () => {
    const tar = await tarOf([{ name: "foo", content: "content0", mode: 0o644 }]);
    const r = await bk.build({
      dockerfile: "FROM scratch\nADD --chown=100:200 t.tar /out/\n",
      files: { "t.tar": { content: tar, mode: 0o600 } },
    });
    const tree = await r.tree();
    assert.equal(tree.get("/out/foo")?.content, "content0");
    assert.deepEqual([tree.get("/out/foo")?.uid, tree.get("/out/foo")?.gid], [100, 200]);
    assert.deepEqual([tree.get("/out")?.uid, tree.get("/out")?.gid], [100, 200]);
  });

  test("testDockerfileAddArchiveWildcard", async () => {
    const t1 = await tarOf([{ name: "foo", content: "content0", mode: 0o644 }]);
    const t2 = await tarOf([{ name: "bar", content: "content1", mode: 0o644 }]);
    const r = await bk.build({
      dockerfile: "FROM scratch\nADD *.tar /dest\n",
      files: { "t.tar": { content: t1, mode: 0o600 }, "b.tar": { content: t2, mode: 0o600 } },
    });
    assert.equal(await r.readFile("/dest/foo"), "content0");
    assert.equal(await r.readFile("/dest/bar"), "content1");
  });

  test("testDockerfileAddChownExpand", async () => {
    await bk.build({
      dockerfile: `FROM busybox
ARG group
ENV owner 1000
ADD --chown=\${owner}:\${group} foo /
RUN [ "$(stat -c "%u %G" /foo)" == "1000 nobody" ]
`,
      files: { foo: { content: "foo-contents", mode: 0o600 } },
      buildArgs: { group: "nobody" },
    });
  });

  test("testAddURLChmod", async (t) => {
    const server = await startHttpServer({ "/foo": { etag: etag(), content: "content1" } });
    t.after(() => server.close());
    const url = `${server.url}/foo`;
    const r = await bk.build({
      dockerfile: `FROM busybox AS build
ADD --chmod=644 ${url} /tmp/foo1
ADD --chmod=755 ${url} /tmp/foo2
ADD --chmod=0413 ${url} /tmp/foo3

ARG mode
ADD --chmod=\${mode} ${url} /tmp/foo4

RUN stat -c "%04a" /tmp/foo1 >> /dest && \\
	stat -c "%04a" /tmp/foo2 >> /dest && \\
	stat -c "%04a" /tmp/foo3 >> /dest && \\
	stat -c "%04a" /tmp/foo4 >> /dest

FROM scratch
COPY --from=build /dest /dest
`,
      buildArgs: { mode: "400" },
    });
    assert.equal(await r.readFile("/dest"), "0644\n0755\n0413\n0400\n");
  });

  test("testAddInvalidChmod", async () => {
    const files = { foo: { content: "foo-contents", mode: 0o600 } };
    const e1 = await bk.buildFails({ dockerfile: "FROM scratch\nADD --chmod=64a foo /\n", files });
    assert.match(e1.message, /invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777/);
    const e2 = await bk.buildFails({ dockerfile: "FROM scratch\nADD --chmod=10000 foo /\n", files });
    assert.match(e2.message, /invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777/);
  });

  test("testAddChecksum", async (t) => {
    const content = "content1";
    const server = await startHttpServer({ "/foo": { etag: etag(), content } });
    t.after(() => server.close());
    const url = `${server.url}/foo`;
    const hex = sha256(content).slice(7);
    // Valid
    await bk.build({ dockerfile: `FROM scratch\nADD --checksum=${sha256(content)} ${url} /tmp/foo\n` });
    // DigestFromEnv
    await bk.build({
      dockerfile: `FROM scratch\nENV DIGEST=${sha256(content)}\nENV LINK=${url}\nADD --checksum=\${DIGEST} \${LINK} /tmp/foo\n`,
    });
    // DigestMismatch
    await bk.buildFails({ dockerfile: `FROM scratch\nADD --checksum=${sha256("")} ${url} /tmp/foo\n` });
    // DigestWithKnownButUnsupportedAlgoName
    await bk.buildFails({
      dockerfile: `FROM scratch\nADD --checksum=md5:7e55db001d319a94b0b713529a756623 ${url} /tmp/foo\n`,
    });
    // DigestWithUnknownAlgoName
    await bk.buildFails({ dockerfile: `FROM scratch\nADD --checksum=unknown:${hex} ${url} /tmp/foo\n` });
    // DigestWithoutAlgoName
    await bk.buildFails({ dockerfile: `FROM scratch\nADD --checksum=${hex} ${url} /tmp/foo\n` });
    // NonHTTPSource
    const foo = "local file";
    await bk.buildFails({
      dockerfile: `FROM scratch\nADD --checksum=${sha256(foo)} foo /tmp/foo\n`,
      files: { foo: { content: foo, mode: 0o600 } },
    });
  });
});
