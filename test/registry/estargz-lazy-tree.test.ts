// LazyImage's merged tree, offline (two eStargz layers written in memory): lookup and listTree apply whiteouts, opaque
// directories and shadowing the way overlayfs does, list directories that only deeper entries imply, and fetchExact
// fetches exactly the paths asked for (symlinks as symlinks, hardlinks with their target's content).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { encodeHeader, endOfArchive, padding, type TarEntry } from "../../src/layer/tar-header.js";
import { MediaType, type ImageConfig } from "../../src/oci/types.js";
import { LazyImage, type LazyLayer } from "../../src/registry/estargz/lazy.js";
import { bufferSource } from "../../src/registry/estargz/range-source.js";
import { EstargzReader } from "../../src/registry/estargz/read.js";
import { writeEstargz } from "../../src/registry/estargz/write.js";
import { parseReference } from "../../src/registry/reference.js";
import type { Digest } from "../../src/util/digest.js";

type E = Partial<TarEntry> & { name: string; type: TarEntry["type"] };
function makeTar(entries: [E, string?][]): Buffer {
  const parts: Buffer[] = [];
  for (const [e, text] of entries) {
    const body = text === undefined ? undefined : Buffer.from(text);
    parts.push(encodeHeader({ mode: 0o644, uid: 0, gid: 0, mtime: 0, ...e, size: body?.length ?? 0 }));
    if (body) parts.push(body, padding(body.length));
  }
  parts.push(endOfArchive());
  return Buffer.concat(parts);
}

async function layer(entries: [E, string?][]): Promise<LazyLayer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  const r = await writeEstargz([makeTar(entries)], sink);
  const blob = Buffer.concat(chunks);
  const reader = await EstargzReader.open(bufferSource(blob), { tocDigest: r.tocDigest });
  return {
    descriptor: { mediaType: MediaType.ociLayerGzip, digest: r.digest, size: r.size, annotations: r.annotations },
    diffId: r.diffId,
    reader,
  };
}

test("listTree and lookup show the merged tree: whiteouts, opaque dirs, shadowing, implied directories", async () => {
  const lower = await layer([
    // No entries for usr/ or usr/lib/: both are implied by the files below them.
    [{ name: "usr/lib/a.so", type: "file", mode: 0o755 }, "a"],
    [{ name: "usr/lib/b.so", type: "file" }, "b"],
    [{ name: "usr/share/doc/readme", type: "file", uid: 1000, gid: 1000, mode: 0o640 }, "doc"],
    [{ name: "usr/share/keep/x", type: "file" }, "x"],
    [{ name: "cfg/", type: "directory", mode: 0o700 }],
    [{ name: "cfg/old", type: "file" }, "old"],
    [{ name: "swap/", type: "directory" }],
    [{ name: "swap/inner", type: "file" }, "inner"],
  ]);
  const upper = await layer([
    [{ name: "usr/lib/.wh.b.so", type: "file" }, ""],
    [{ name: "usr/lib/c.so", type: "file" }, "c"],
    [{ name: "usr/lib/hard", type: "link", linkname: "usr/lib/c.so" }],
    [{ name: "usr/share/doc/", type: "directory", mode: 0o750 }],
    [{ name: "usr/share/doc/.wh..wh..opq", type: "file" }, ""],
    [{ name: "usr/share/doc/new", type: "file" }, "new"],
    [{ name: "swap", type: "symlink", linkname: "usr/share/keep", mode: 0o777 }],
  ]);
  const config = {
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [lower.diffId, upper.diffId] },
  } as ImageConfig;
  const digest = lower.descriptor.digest as Digest;
  const image = new LazyImage(parseReference("127.0.0.1:1/t/lazy:1"), digest, digest, config, [lower, upper]);

  assert.deepEqual(
    [...image.listTree("usr").keys()],
    [
      "usr/lib",
      "usr/lib/a.so",
      "usr/lib/c.so",
      "usr/lib/hard",
      "usr/share",
      "usr/share/doc",
      "usr/share/doc/new",
      "usr/share/keep",
      "usr/share/keep/x",
    ],
  );
  assert.equal(image.lookup("usr/lib")?.entry.type, "dir", "an implied directory");
  assert.equal(image.lookup("usr/lib/b.so"), undefined, "whited out");
  assert.equal(image.lookup("usr/share/doc/readme"), undefined, "hidden by the opaque directory above");
  assert.equal(image.lookup("usr/share/doc")?.entry.mode, 0o750, "the upper directory's metadata wins");
  assert.equal(image.lookup("swap")?.entry.type, "symlink");
  assert.equal(image.lookup("swap/inner"), undefined, "shadowed by the symlink above");
  assert.deepEqual([...image.listTree("swap").keys()], []);
  assert.deepEqual([...image.listTree("cfg").keys()], ["cfg/old"]);

  const visited: string[] = [];
  assert.equal(
    image.resolve("swap/x", true, (p) => visited.push(p)),
    "usr/share/keep/x",
  );
  assert.deepEqual(visited, ["swap", "usr", "usr/share", "usr/share/keep", "usr/share/keep/x"]);

  const files = new Map(
    (await image.fetchExact(["usr/lib/hard", "swap", "usr/lib", "usr/lib/b.so", "usr/lib/a.so"])).map((f) => [
      f.path,
      f,
    ]),
  );
  assert.deepEqual([...files.keys()].sort(), ["swap", "usr/lib", "usr/lib/a.so", "usr/lib/hard"]);
  assert.equal(files.get("usr/lib/hard")?.content?.toString(), "c");
  assert.equal(files.get("usr/lib/a.so")?.content?.toString(), "a");
  assert.equal(files.get("swap")?.entry.linkName, "usr/share/keep");
  assert.equal(files.get("swap")?.content, undefined);
});
