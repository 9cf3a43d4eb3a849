import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { gunzipSync, gzipSync } from "node:zlib";
import tar from "tar-stream";
import {
  packDir,
  findOpaqueDirs,
  OPAQUE_WHITEOUT,
  WHITEOUT_PREFIX,
  type PackOptions,
} from "../../src/layer/tar-pack.js";
import { extractLayer, safeEntryPath, UnsafeLayerError } from "../../src/layer/tar-extract.js";
import { commitLayer, gzipLevel } from "../../src/layer/commit.js";
import { LocalStore } from "../../src/store/local.js";
import { MediaType } from "../../src/oci/types.js";
import { StrataError } from "../../src/errors.js";

/** The 2026.11 builder's epoch: 2026-01-01T00:00:00Z. */
const EPOCH = 1767225600;
const AFTER_A = EPOCH + 86400 * 365 * 4; // 2030
const AFTER_B = EPOCH + 86400 * 365 * 5 + 12345; // 2031
const BEFORE = EPOCH - 86400 * 365 * 6; // 2020

let work: string;
before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-tar-test-"));
});
after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

let n = 0;
async function freshDir(name: string): Promise<string> {
  const d = path.join(work, `${name}-${++n}`);
  await fsp.mkdir(d);
  return d;
}

async function toBuffer(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function pack(root: string, opts: Partial<PackOptions> = {}): Promise<Buffer> {
  return toBuffer(packDir(root, { epoch: EPOCH, ...opts }));
}

interface Entry {
  header: tar.Header;
  body: Buffer;
}

async function list(buf: Buffer): Promise<Entry[]> {
  const ex = tar.extract();
  const out: Entry[] = [];
  const done = (async () => {
    for await (const e of ex) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      out.push({ header: e.header, body: Buffer.concat(chunks) });
    }
  })();
  ex.end(buf);
  await done;
  return out;
}

function byName(entries: Entry[], name: string): Entry {
  const e = entries.find((x) => x.header.name === name);
  assert.ok(e, `no entry ${name} in ${entries.map((x) => x.header.name).join(", ")}`);
  return e;
}

/** Builds a tar with tar-stream directly (for malicious layers). */
type HeaderArg = Partial<tar.Header> & { name: string };

async function makeTar(entries: [HeaderArg, (string | Buffer)?][]): Promise<Buffer> {
  const p = tar.pack();
  const out = toBuffer(p as unknown as Readable);
  for (const [h, body] of entries) {
    await new Promise<void>((resolve, reject) => p.entry(h, body ?? "", (err) => (err ? reject(err) : resolve())));
  }
  p.finalize();
  return out;
}

const mknod = (p: string, major = 0, minor = 0) => execFileSync("mknod", [p, "c", String(major), String(minor)]);
const setOpaque = (p: string) => execFileSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", p]);
const getOpaque = (p: string) => {
  try {
    return execFileSync("getfattr", ["--only-values", "-n", "trusted.overlay.opaque", p], {
      stdio: ["ignore", "pipe", "ignore"],
    }).toString();
  } catch {
    return undefined;
  }
};

/** Sets the mtime of every entry below root (files first, then directories deepest first). */
async function setAllTimes(root: string, seconds: number): Promise<void> {
  const dirs: string[] = [];
  let i = 0;
  async function walk(dir: string): Promise<void> {
    for (const name of await fsp.readdir(dir)) {
      const p = path.join(dir, name);
      const st = await fsp.lstat(p);
      if (st.isDirectory()) {
        dirs.push(p);
        await walk(p);
      } else {
        const t = seconds + i++ * 7;
        await fsp.lutimes(p, t, t);
      }
    }
  }
  await walk(root);
  for (const d of dirs.sort().reverse()) await fsp.utimes(d, seconds + i++, seconds + i);
}

const LONG = "l".repeat(60) + "/" + "m".repeat(60) + "/long-file-name-" + "n".repeat(40) + ".txt";

/** Operations that build the test tree; each creates its own parents. Applying them in any order gives the same tree. */
const TREE_OPS: [string, (root: string) => Promise<void>][] = [
  [
    "etc/config + hardlink",
    async (r) => {
      await fsp.mkdir(path.join(r, "etc"), { recursive: true });
      await fsp.writeFile(path.join(r, "etc/config"), "hello\n");
      await fsp.chmod(path.join(r, "etc/config"), 0o644);
      await fsp.link(path.join(r, "etc/config"), path.join(r, "etc/config-hard"));
    },
  ],
  [
    "bin/tool",
    async (r) => {
      await fsp.mkdir(path.join(r, "bin"), { recursive: true });
      await fsp.writeFile(path.join(r, "bin/tool"), "#!/bin/sh\necho tool\n");
      await fsp.chmod(path.join(r, "bin/tool"), 0o755);
    },
  ],
  [
    "bin/link",
    async (r) => {
      await fsp.mkdir(path.join(r, "bin"), { recursive: true });
      await fsp.symlink("tool", path.join(r, "bin/link"));
    },
  ],
  [
    "bin/suid",
    async (r) => {
      await fsp.mkdir(path.join(r, "bin"), { recursive: true });
      await fsp.writeFile(path.join(r, "bin/suid"), "x");
      await fsp.chmod(path.join(r, "bin/suid"), 0o4755);
    },
  ],
  [
    "data/owned",
    async (r) => {
      await fsp.mkdir(path.join(r, "data"), { recursive: true });
      await fsp.writeFile(path.join(r, "data/owned"), randomBytes(0).toString() + "owned by 1234:5678");
      await fsp.chown(path.join(r, "data/owned"), 1234, 5678);
    },
  ],
  [
    "data/gone (whiteout)",
    async (r) => {
      await fsp.mkdir(path.join(r, "data"), { recursive: true });
      mknod(path.join(r, "data/gone"));
    },
  ],
  [
    "data/日本.txt",
    async (r) => {
      await fsp.mkdir(path.join(r, "data"), { recursive: true });
      await fsp.writeFile(path.join(r, "data/日本.txt"), "unicode");
    },
  ],
  [
    "opaque/keep",
    async (r) => {
      await fsp.mkdir(path.join(r, "opaque"), { recursive: true });
      setOpaque(path.join(r, "opaque"));
      await fsp.writeFile(path.join(r, "opaque/keep"), "kept");
    },
  ],
  [
    "pipe",
    async (r) => {
      execFileSync("mkfifo", [path.join(r, "pipe")]);
    },
  ],
  [
    "empty dir",
    async (r) => {
      await fsp.mkdir(path.join(r, "empty"), { recursive: true });
    },
  ],
  [
    "root whiteout",
    async (r) => {
      mknod(path.join(r, "rootgone"));
    },
  ],
  [
    "long name",
    async (r) => {
      await fsp.mkdir(path.join(r, path.dirname(LONG)), { recursive: true });
      await fsp.writeFile(path.join(r, LONG), "long");
    },
  ],
  [
    "big file",
    async (r) => {
      // Deterministic 300 KiB content (several tar blocks and stream chunks).
      const b = Buffer.alloc(300 * 1024);
      for (let i = 0; i < b.length; i++) b[i] = (i * 31) & 0xff;
      await fsp.mkdir(path.join(r, "data"), { recursive: true });
      await fsp.writeFile(path.join(r, "data/big.bin"), b);
    },
  ],
];

async function buildTree(root: string, reverse: boolean, seconds: number): Promise<void> {
  const ops = reverse ? [...TREE_OPS].reverse() : TREE_OPS;
  for (const [, op] of ops) await op(root);
  for (const d of ["etc", "bin", "data", "opaque", "empty"]) await fsp.chmod(path.join(root, d), 0o755);
  await setAllTimes(root, seconds);
}

// ---- packDir -------------------------------------------------------------------------------------------------

describe("packDir", () => {
  let treeA: string;
  let tarA: Buffer;
  let entriesA: Entry[];

  before(async () => {
    treeA = await freshDir("treeA");
    await buildTree(treeA, false, AFTER_A);
    tarA = await pack(treeA);
    entriesA = await list(tarA);
  });

  test("identical trees created in different orders with different (post-epoch) mtimes give byte-identical tars", async () => {
    const treeB = await freshDir("treeB");
    await buildTree(treeB, true, AFTER_B);
    const tarB = await pack(treeB);
    assert.equal(sha256(tarB), sha256(tarA));
    assert.ok(tarA.equals(tarB));
  });

  test("packing the same tree twice gives the same bytes", async () => {
    assert.equal(sha256(await pack(treeA)), sha256(tarA));
  });

  test("entries are in sorted depth-first order (byte order), without the root itself", () => {
    assert.deepEqual(
      entriesA.map((e) => e.header.name),
      [
        "bin",
        "bin/link",
        "bin/suid",
        "bin/tool",
        "data",
        "data/big.bin",
        "data/.wh.gone", // sorted by the whited-out name ("gone"), written with the .wh. prefix
        "data/owned",
        "data/日本.txt",
        "empty",
        "etc",
        "etc/config",
        "etc/config-hard",
        LONG.split("/")[0]!,
        LONG.split("/").slice(0, 2).join("/"),
        LONG,
        "opaque",
        "opaque/.wh..wh..opq",
        "opaque/keep",
        "pipe",
        ".wh.rootgone",
      ],
    );
  });

  test("ownership is numeric: uid/gid kept, uname/gname empty", () => {
    const owned = byName(entriesA, "data/owned");
    assert.equal(owned.header.uid, 1234);
    assert.equal(owned.header.gid, 5678);
    for (const e of entriesA) {
      assert.equal(e.header.uname, "", e.header.name);
      assert.equal(e.header.gname, "", e.header.name);
    }
    assert.equal(byName(entriesA, "etc/config").header.uid, 0);
  });

  test("the raw ustar uname/gname fields are empty (all NUL bytes)", () => {
    // First header block: uname at offset 265, gname at 297, 32 bytes each.
    let off = 0;
    while (off < tarA.length && tarA[off] !== 0) {
      const hdr = tarA.subarray(off, off + 512);
      assert.ok(
        hdr.subarray(265, 297).every((b) => b === 0),
        "uname not empty",
      );
      assert.ok(
        hdr.subarray(297, 329).every((b) => b === 0),
        "gname not empty",
      );
      const size = parseInt(hdr.subarray(124, 136).toString().replace(/\0.*$/, "").trim() || "0", 8);
      off += 512 + Math.ceil(size / 512) * 512;
    }
  });

  test("mtimes newer than the epoch are clamped to the epoch", () => {
    for (const e of entriesA) assert.equal(e.header.mtime!.getTime(), EPOCH * 1000, e.header.name);
  });

  test("mtimes older than the epoch are kept", async () => {
    const d = await freshDir("old");
    await fsp.writeFile(path.join(d, "old"), "x");
    await fsp.writeFile(path.join(d, "new"), "y");
    await fsp.utimes(path.join(d, "old"), BEFORE, BEFORE);
    await fsp.utimes(path.join(d, "new"), AFTER_A, AFTER_A);
    const es = await list(await pack(d));
    assert.equal(byName(es, "old").header.mtime!.getTime(), BEFORE * 1000);
    assert.equal(byName(es, "new").header.mtime!.getTime(), EPOCH * 1000);
  });

  test("sub-second mtimes are truncated to whole seconds", async () => {
    const d = await freshDir("frac");
    await fsp.writeFile(path.join(d, "f"), "x");
    await fsp.utimes(path.join(d, "f"), BEFORE + 0.75, BEFORE + 0.75);
    const es = await list(await pack(d));
    assert.equal(byName(es, "f").header.mtime!.getTime(), BEFORE * 1000);
  });

  test("file modes, including setuid, are kept; content is stored", () => {
    assert.equal(byName(entriesA, "bin/tool").header.mode, 0o755);
    assert.equal(byName(entriesA, "bin/suid").header.mode, 0o4755);
    assert.equal(byName(entriesA, "etc/config").header.mode, 0o644);
    assert.equal(byName(entriesA, "etc/config").body.toString(), "hello\n");
    assert.equal(byName(entriesA, "data/big.bin").body.length, 300 * 1024);
    assert.equal(byName(entriesA, "data/日本.txt").body.toString(), "unicode");
    assert.equal(byName(entriesA, LONG).body.toString(), "long");
    assert.equal(byName(entriesA, "bin").header.type, "directory");
    assert.equal(byName(entriesA, "bin").header.mode, 0o755);
  });

  test("hardlinks become link entries pointing at the first name in sort order", () => {
    const first = byName(entriesA, "etc/config");
    const second = byName(entriesA, "etc/config-hard");
    assert.equal(first.header.type, "file");
    assert.equal(second.header.type, "link");
    assert.equal(second.header.linkname, "etc/config");
    assert.equal(second.header.size, 0);
    assert.equal(second.body.length, 0);
  });

  test("symlinks are kept with their target", () => {
    const l = byName(entriesA, "bin/link");
    assert.equal(l.header.type, "symlink");
    assert.equal(l.header.linkname, "tool");
  });

  test("a char device 0/0 (overlay whiteout) becomes an empty .wh.<name> file owned by root, mode 0644", () => {
    for (const name of ["data/.wh.gone", ".wh.rootgone"]) {
      const w = byName(entriesA, name);
      assert.equal(w.header.type, "file");
      assert.equal(w.header.size, 0);
      assert.equal(w.header.mode, 0o644);
      assert.equal(w.header.uid, 0);
      assert.equal(w.header.gid, 0);
    }
    assert.ok(!entriesA.some((e) => e.header.name === "data/gone" || e.header.name === "rootgone"));
    assert.equal(WHITEOUT_PREFIX, ".wh.");
  });

  test("a directory with trusted.overlay.opaque=y yields <dir>/.wh..wh..opq right after the directory", () => {
    const names = entriesA.map((e) => e.header.name);
    const i = names.indexOf("opaque");
    assert.equal(names[i + 1], `opaque/${OPAQUE_WHITEOUT}`);
    assert.equal(names[i + 2], "opaque/keep");
    const o = byName(entriesA, "opaque/.wh..wh..opq");
    assert.equal(o.header.type, "file");
    assert.equal(o.header.size, 0);
    assert.equal(o.header.uid, 0);
    assert.equal(o.header.mtime!.getTime(), EPOCH * 1000);
    // Only the opaque directory gets a marker.
    assert.equal(entriesA.filter((e) => e.header.name.endsWith(OPAQUE_WHITEOUT)).length, 1);
  });

  test("fifos are kept", () => {
    assert.equal(byName(entriesA, "pipe").header.type, "fifo");
  });

  test("findOpaqueDirs lists opaque directories relative to the root", async () => {
    const d = await freshDir("opq");
    await fsp.mkdir(path.join(d, "a/b"), { recursive: true });
    await fsp.mkdir(path.join(d, "c d"));
    await fsp.mkdir(path.join(d, "données"));
    await fsp.mkdir(path.join(d, "plain"));
    for (const p of ["a/b", "c d", "données"]) setOpaque(path.join(d, p));
    assert.deepEqual([...(await findOpaqueDirs(d))].sort(), ["a/b", "c d", "données"]);
  });

  test("findOpaqueDirs finds an opaque directory whose name contains a backslash", async () => {
    const d = await freshDir("opq-bs");
    await fsp.mkdir(path.join(d, "back\\slash"));
    await fsp.mkdir(path.join(d, "tab\there"));
    setOpaque(path.join(d, "back\\slash"));
    setOpaque(path.join(d, "tab\there"));
    assert.deepEqual([...(await findOpaqueDirs(d))].sort(), ["back\\slash", "tab\there"]);
  });

  test("overlay: false keeps char devices 0/0 as devices and ignores the opaque xattr", async () => {
    const es = await list(await pack(treeA, { overlay: false }));
    const g = byName(es, "data/gone");
    assert.equal(g.header.type, "character-device");
    assert.equal(g.header.devmajor, 0);
    assert.equal(g.header.devminor, 0);
    assert.ok(!es.some((e) => e.header.name.includes(".wh.")));
  });

  test("other character devices keep their major/minor numbers, including large minors", async () => {
    const d = await freshDir("dev");
    mknod(path.join(d, "null"), 1, 3);
    mknod(path.join(d, "big"), 259, 70000);
    const es = await list(await pack(d));
    assert.deepEqual([byName(es, "null").header.devmajor, byName(es, "null").header.devminor], [1, 3]);
    assert.deepEqual([byName(es, "big").header.devmajor, byName(es, "big").header.devminor], [259, 70000]);
    assert.equal(byName(es, "null").header.type, "character-device");
  });

  test("exclude leaves out the named paths (and a directory's whole subtree)", async () => {
    const es = await list(await pack(treeA, { exclude: new Set(["etc", "bin/tool"]) }));
    const names = es.map((e) => e.header.name);
    assert.ok(!names.some((x) => x === "etc" || x.startsWith("etc/")));
    assert.ok(!names.includes("bin/tool"));
    assert.ok(names.includes("bin/link"));
  });

  test("excluding the first name of a hardlink pair stores the other as a regular file", async () => {
    const es = await list(await pack(treeA, { exclude: new Set(["etc/config"]) }));
    const h = byName(es, "etc/config-hard");
    assert.equal(h.header.type, "file");
    assert.equal(h.body.toString(), "hello\n");
  });

  test("prefix writes entries below it, preceded by its parent directories", async () => {
    const d = await freshDir("pfx");
    await fsp.writeFile(path.join(d, "f"), "x");
    await fsp.mkdir(path.join(d, "sub"));
    await fsp.symlink("../f", path.join(d, "sub/l"));
    await fsp.link(path.join(d, "f"), path.join(d, "sub/h"));
    const es = await list(await pack(d, { prefix: "/srv/app/" }));
    assert.deepEqual(
      es.map((e) => [e.header.name, e.header.type]),
      [
        ["srv", "directory"],
        ["srv/app", "directory"],
        ["srv/app/f", "file"],
        ["srv/app/sub", "directory"],
        ["srv/app/sub/h", "link"],
        ["srv/app/sub/l", "symlink"],
      ],
    );
    assert.equal(byName(es, "srv/app/sub/h").header.linkname, "srv/app/f");
    assert.equal(byName(es, "srv/app").header.mode, 0o755);
  });

  test("sockets are skipped", async () => {
    const d = await freshDir("sock");
    const net = await import("node:net");
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(path.join(d, "s.sock"), r));
    try {
      await fsp.writeFile(path.join(d, "f"), "x");
      const es = await list(await pack(d));
      assert.deepEqual(
        es.map((e) => e.header.name),
        ["f"],
      );
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test("an empty directory gives an empty archive (just the end blocks)", async () => {
    const d = await freshDir("empty");
    const buf = await pack(d);
    assert.deepEqual(await list(buf), []);
    assert.ok(buf.every((b) => b === 0));
  });

  test("a missing root makes the stream error", async () => {
    await assert.rejects(pack(path.join(work, "does-not-exist")));
  });
});

// ---- extractLayer --------------------------------------------------------------------------------------------

describe("extractLayer", () => {
  test("pack → extract → pack gives identical bytes", async () => {
    const src = await freshDir("rt-src");
    await buildTree(src, false, AFTER_A);
    const first = await pack(src);
    const dst = await freshDir("rt-dst");
    await extractLayer(Readable.from([first]), dst);
    const second = await pack(dst);
    assert.equal(sha256(second), sha256(first));
  });

  test("extraction restores whiteouts as char 0/0, the opaque xattr, owners, modes, links and mtimes", async () => {
    const src = await freshDir("rt2-src");
    await buildTree(src, true, AFTER_B);
    const dst = await freshDir("rt2-dst");
    await extractLayer(Readable.from([await pack(src)]), dst);

    for (const w of ["data/gone", "rootgone"]) {
      const st = await fsp.lstat(path.join(dst, w));
      assert.ok(st.isCharacterDevice(), w);
      assert.equal(st.rdev, 0);
    }
    assert.ok(!existsSync(path.join(dst, "data/.wh.gone")));
    assert.equal(getOpaque(path.join(dst, "opaque")), "y");
    assert.equal(getOpaque(path.join(dst, "data")), undefined);
    assert.ok(!existsSync(path.join(dst, "opaque", OPAQUE_WHITEOUT)));
    assert.equal(await fsp.readFile(path.join(dst, "opaque/keep"), "utf8"), "kept");

    const owned = await fsp.lstat(path.join(dst, "data/owned"));
    assert.equal(owned.uid, 1234);
    assert.equal(owned.gid, 5678);
    assert.equal((await fsp.lstat(path.join(dst, "bin/suid"))).mode & 0o7777, 0o4755);
    assert.equal((await fsp.lstat(path.join(dst, "bin/tool"))).mode & 0o7777, 0o755);

    const a = await fsp.lstat(path.join(dst, "etc/config"));
    const b = await fsp.lstat(path.join(dst, "etc/config-hard"));
    assert.equal(a.ino, b.ino);
    assert.equal(a.nlink, 2);
    assert.equal(await fsp.readlink(path.join(dst, "bin/link")), "tool");
    assert.ok((await fsp.lstat(path.join(dst, "pipe"))).isFIFO());
    assert.equal(await fsp.readFile(path.join(dst, LONG), "utf8"), "long");
    assert.equal(await fsp.readFile(path.join(dst, "data/日本.txt"), "utf8"), "unicode");

    // Files, symlinks and directories get the (clamped) mtime from the layer.
    for (const p of ["etc/config", "bin/link", "bin", "data", "opaque"]) {
      assert.equal((await fsp.lstat(path.join(dst, p))).mtimeMs, EPOCH * 1000, p);
    }
  });

  test("gzip: true extracts a gzipped layer and returns the diffID of the uncompressed tar", async () => {
    const src = await freshDir("gz-src");
    await fsp.writeFile(path.join(src, "f"), "gz");
    const t = await pack(src);
    const dst = await freshDir("gz-dst");
    const diffId = await extractLayer(Readable.from([gzipSync(t)]), dst, { gzip: true });
    assert.equal(await fsp.readFile(path.join(dst, "f"), "utf8"), "gz");
    assert.equal(diffId, "sha256:" + sha256(t));
  });

  test("extractLayer returns the sha256 of the tar it read (the diffID)", async () => {
    const src = await freshDir("diffid-src");
    await buildTree(src, false, AFTER_A);
    const t = await pack(src);
    const dst = await freshDir("diffid-dst");
    assert.equal(await extractLayer(Readable.from([t]), dst), "sha256:" + sha256(t));
  });

  test("devices with large major/minor numbers round-trip", async () => {
    const src = await freshDir("dev-src");
    mknod(path.join(src, "big"), 259, 70000);
    const t = await pack(src);
    const dst = await freshDir("dev-dst");
    await extractLayer(Readable.from([t]), dst, { allowDevices: true });
    assert.equal((await fsp.lstat(path.join(dst, "big"))).rdev, (await fsp.lstat(path.join(src, "big"))).rdev);
  });

  test("absolute and ./ names are extracted relative to the root", async () => {
    const dst = await freshDir("abs");
    const name = `strata-abs-${randomBytes(4).toString("hex")}`;
    const t = await makeTar([
      [{ name: `/${name}/x`, type: "file", mode: 0o644 }, "abs"],
      [{ name: "./rel/y", type: "file", mode: 0o644 }, "rel"],
      [{ name: "./", type: "directory", mode: 0o755 }],
    ]);
    await extractLayer(Readable.from([t]), dst);
    assert.equal(await fsp.readFile(path.join(dst, name, "x"), "utf8"), "abs");
    assert.equal(await fsp.readFile(path.join(dst, "rel/y"), "utf8"), "rel");
    assert.ok(!existsSync(`/${name}`));
  });

  test("a later entry replaces an earlier one of the same name; a directory entry keeps an existing directory's contents", async () => {
    const dst = await freshDir("replace");
    const t = await makeTar([
      [{ name: "f", type: "file", mode: 0o644 }, "one"],
      [{ name: "f", type: "file", mode: 0o600 }, "two"],
      [{ name: "d", type: "directory", mode: 0o755 }],
      [{ name: "d/child", type: "file", mode: 0o644 }, "c"],
      [{ name: "d", type: "directory", mode: 0o700 }],
      [{ name: "s", type: "symlink", linkname: "f" }],
      [{ name: "s", type: "file", mode: 0o644 }, "not a link"],
    ]);
    await extractLayer(Readable.from([t]), dst);
    assert.equal(await fsp.readFile(path.join(dst, "f"), "utf8"), "two");
    assert.equal((await fsp.lstat(path.join(dst, "f"))).mode & 0o777, 0o600);
    assert.equal(await fsp.readFile(path.join(dst, "d/child"), "utf8"), "c");
    assert.equal((await fsp.lstat(path.join(dst, "d"))).mode & 0o777, 0o700);
    assert.ok((await fsp.lstat(path.join(dst, "s"))).isFile());
    assert.equal(await fsp.readFile(path.join(dst, "f"), "utf8"), "two");
  });

  test("parent directories missing from the layer are created", async () => {
    const dst = await freshDir("parents");
    await extractLayer(Readable.from([await makeTar([[{ name: "a/b/c/f", type: "file", mode: 0o644 }, "x"]])]), dst);
    assert.equal(await fsp.readFile(path.join(dst, "a/b/c/f"), "utf8"), "x");
  });

  test("a hardlink to a file not (yet) in the layer is refused", async () => {
    const dst = await freshDir("hl-missing");
    const t = await makeTar([[{ name: "h", type: "link", linkname: "nope" }]]);
    await assert.rejects(
      extractLayer(Readable.from([t]), dst),
      (e: unknown) => e instanceof UnsafeLayerError && /not in this layer/.test(e.message),
    );
  });
});

// ---- unsafe layers -------------------------------------------------------------------------------------------

describe("extractLayer refuses unsafe layers", () => {
  /** A sandbox: <box>/root is the extraction root, <box>/outside holds a victim file. */
  async function sandbox(): Promise<{ box: string; root: string; outside: string; victim: string }> {
    const box = await freshDir("unsafe");
    const root = path.join(box, "root");
    const outside = path.join(box, "outside");
    await fsp.mkdir(root);
    await fsp.mkdir(outside);
    const victim = path.join(outside, "victim");
    await fsp.writeFile(victim, "precious");
    return { box, root, outside, victim };
  }

  async function assertOutsideUntouched(
    s: { box: string; outside: string; victim: string },
    extra: string[] = [],
  ): Promise<void> {
    assert.deepEqual((await fsp.readdir(s.box)).sort(), ["outside", "root"]);
    assert.deepEqual(await fsp.readdir(s.outside), ["victim"]);
    const st = await fsp.lstat(s.victim);
    assert.ok(st.isFile());
    assert.equal(st.nlink, 1, "victim was hardlinked into the layer");
    assert.equal(await fsp.readFile(s.victim, "utf8"), "precious");
    assert.equal(getOpaque(s.outside), undefined);
    for (const p of extra) assert.ok(!existsSync(p), `${p} was created`);
  }

  const isUnsafe = (e: unknown) =>
    e instanceof UnsafeLayerError && e instanceof StrataError && e.code === "UNSAFE_LAYER";

  test("../evil is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([[{ name: "../evil", type: "file", mode: 0o644 }, "x"]]);
    await assert.rejects(extractLayer(Readable.from([t]), s.root), isUnsafe);
    await assertOutsideUntouched(s);
  });

  test("a/../../evil is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "a", type: "directory", mode: 0o755 }],
      [{ name: "a/../../evil", type: "file", mode: 0o644 }, "x"],
    ]);
    await assert.rejects(
      extractLayer(Readable.from([t]), s.root),
      (e: unknown) => isUnsafe(e) && /escapes the layer root/.test((e as Error).message),
    );
    await assertOutsideUntouched(s);
  });

  test("a symlink to / followed by an entry link/evil is refused", async () => {
    const s = await sandbox();
    const evil = `strata-evil-${randomBytes(4).toString("hex")}`;
    const t = await makeTar([
      [{ name: "link", type: "symlink", linkname: "/" }],
      [{ name: `link/${evil}`, type: "file", mode: 0o644 }, "x"],
    ]);
    await assert.rejects(
      extractLayer(Readable.from([t]), s.root),
      (e: unknown) => isUnsafe(e) && /symlink/.test((e as Error).message),
    );
    await assertOutsideUntouched(s, [`/${evil}`]);
  });

  test("a symlink to .. followed by an entry link/evil is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "link", type: "symlink", linkname: ".." }],
      [{ name: "link/evil", type: "file", mode: 0o644 }, "x"],
    ]);
    await assert.rejects(extractLayer(Readable.from([t]), s.root), isUnsafe);
    await assertOutsideUntouched(s);
  });

  test("a symlink to an outside directory followed by a nested entry through it is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "d/link", type: "symlink", linkname: s.outside }],
      [{ name: "d/link/sub/evil", type: "file", mode: 0o644 }, "x"],
    ]);
    await assert.rejects(extractLayer(Readable.from([t]), s.root), isUnsafe);
    await assertOutsideUntouched(s);
  });

  test("a whiteout through a symlinked parent is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "link", type: "symlink", linkname: s.outside }],
      [{ name: "link/.wh.victim", type: "file", mode: 0o644 }],
    ]);
    await assert.rejects(extractLayer(Readable.from([t]), s.root), isUnsafe);
    await assertOutsideUntouched(s);
  });

  test("a hardlink to ../../etc/passwd is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([[{ name: "h", type: "link", linkname: "../../etc/passwd" }]]);
    await assert.rejects(extractLayer(Readable.from([t]), s.root), isUnsafe);
    await assertOutsideUntouched(s);
    assert.deepEqual(await fsp.readdir(s.root), []);
  });

  test("a hardlink to a relative path escaping the root is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([[{ name: "h", type: "link", linkname: "../outside/victim" }]]);
    await assert.rejects(extractLayer(Readable.from([t]), s.root), isUnsafe);
    await assertOutsideUntouched(s);
  });

  test("a hardlink whose target path goes through a symlink is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "s", type: "symlink", linkname: s.outside }],
      [{ name: "h", type: "link", linkname: "s/victim" }],
    ]);
    await assert.rejects(extractLayer(Readable.from([t]), s.root), isUnsafe);
    await assertOutsideUntouched(s);
  });

  test("a whiteout whose directory is later replaced by a symlink does not delete outside files", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "d", type: "directory", mode: 0o755 }],
      [{ name: "d/.wh.victim", type: "file", mode: 0o644 }],
      [{ name: "d", type: "symlink", linkname: s.outside }],
    ]);
    await extractLayer(Readable.from([t]), s.root).catch((e: unknown) => assert.ok(isUnsafe(e), String(e)));
    await assertOutsideUntouched(s);
  });

  test("an opaque marker whose directory is later replaced by a symlink does not set xattrs outside", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "d", type: "directory", mode: 0o755 }],
      [{ name: `d/${OPAQUE_WHITEOUT}`, type: "file", mode: 0o644 }],
      [{ name: "d", type: "symlink", linkname: s.outside }],
    ]);
    await extractLayer(Readable.from([t]), s.root).catch((e: unknown) => assert.ok(isUnsafe(e), String(e)));
    await assertOutsideUntouched(s);
  });

  test("a directory entry later replaced by a symlink does not get its mtime applied through the symlink", async () => {
    const s = await sandbox();
    const before = (await fsp.stat(s.outside)).mtimeMs;
    const t = await makeTar([
      [{ name: "d", type: "directory", mode: 0o755, mtime: new Date(946684800 * 1000) }],
      [{ name: "d", type: "symlink", linkname: s.outside }],
    ]);
    await extractLayer(Readable.from([t]), s.root).catch((e: unknown) => assert.ok(isUnsafe(e), String(e)));
    assert.equal((await fsp.stat(s.outside)).mtimeMs, before, "mtime of a directory outside the root was changed");
    await assertOutsideUntouched(s);
  });

  test("a hardlink to a directory is refused", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "d", type: "directory", mode: 0o755 }],
      [{ name: "h", type: "link", linkname: "d" }],
    ]);
    await assert.rejects(extractLayer(Readable.from([t]), s.root), isUnsafe);
    await assertOutsideUntouched(s);
  });

  test("a hardlink to a symlink links the symlink itself, not its outside target", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "s", type: "symlink", linkname: s.victim }],
      [{ name: "h", type: "link", linkname: "s" }],
    ]);
    await extractLayer(Readable.from([t]), s.root);
    assert.ok((await fsp.lstat(path.join(s.root, "h"))).isSymbolicLink());
    await assertOutsideUntouched(s);
  });

  test("a whiteout whose directory is later replaced by a symlink into the root still touches nothing outside", async () => {
    const s = await sandbox();
    const t = await makeTar([
      [{ name: "d", type: "directory", mode: 0o755 }],
      [{ name: "d/.wh.x", type: "file", mode: 0o644 }],
      [{ name: "d", type: "symlink", linkname: ".." }],
    ]);
    await extractLayer(Readable.from([t]), s.root).catch((e: unknown) => assert.ok(isUnsafe(e), String(e)));
    await assertOutsideUntouched(s);
    assert.ok(!existsSync(path.join(s.box, "x")));
  });

  test("unsupported entry types are refused", async () => {
    const s = await sandbox();
    // A GNU sparse file ('S') is not supported; tar-stream reports its type as null/unknown.
    const t = await makeTar([[{ name: "x", type: "file", mode: 0o644 }, "x"]]);
    t[156] = "S".charCodeAt(0);
    // Fix the checksum (offset 148, 8 bytes: 6 octal digits, NUL, space).
    const hdr = t.subarray(0, 512);
    hdr.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of hdr) sum += b;
    hdr.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
    await assert.rejects(
      extractLayer(Readable.from([t]), s.root),
      (e: unknown) => isUnsafe(e) && /unsupported entry type/.test((e as Error).message),
    );
  });
});

describe("safeEntryPath", () => {
  test("normalises harmless names", () => {
    assert.equal(safeEntryPath("a/b"), "a/b");
    assert.equal(safeEntryPath("./a/b/"), "a/b");
    assert.equal(safeEntryPath("/a//b/./c"), "a/b/c");
    assert.equal(safeEntryPath("a/../b"), "b");
    assert.equal(safeEntryPath("."), "");
    assert.equal(safeEntryPath("./"), "");
    assert.equal(safeEntryPath("/"), "");
    assert.equal(safeEntryPath("..foo/bar.."), "..foo/bar..");
  });

  test("refuses names that leave the root", () => {
    for (const bad of ["..", "../", "../x", "a/../../x", "./../x", "a/b/../../../x", "a/b/../../.."]) {
      assert.throws(() => safeEntryPath(bad), UnsafeLayerError, bad);
    }
  });

  test("absolute names are made relative after normalisation (/../x is /x, as Docker reads it)", () => {
    assert.equal(safeEntryPath("/../x"), "x");
    assert.equal(safeEntryPath("/etc/passwd"), "etc/passwd");
  });
});

// ---- commitLayer ---------------------------------------------------------------------------------------------

describe("commitLayer", () => {
  test("digest is the sha256 of the stored blob and diffId the sha256 of the gunzipped blob", async () => {
    const store = await LocalStore.open(await freshDir("store"));
    const dir = await freshDir("commit-src");
    await buildTree(dir, false, AFTER_A);
    const rec = await commitLayer(store, dir, { epoch: EPOCH });
    const blob = await store.readBlob(rec.digest);
    assert.equal(rec.digest, "sha256:" + sha256(blob));
    assert.equal(rec.diffId, "sha256:" + sha256(gunzipSync(blob)));
    assert.equal(rec.diffId, "sha256:" + sha256(await pack(dir)));
    assert.equal(rec.size, blob.length);
    assert.equal(rec.mediaType, MediaType.ociLayerGzip);
    assert.equal((await fsp.stat(await store.blobPath(rec.digest))).mode & 0o777, 0o644);
    // The temp dir is cleaned up.
    assert.deepEqual(await fsp.readdir(path.join(store.root, "tmp")), []);
  });

  test("committing the same tree twice gives the same record (deterministic gzip) and one blob", async () => {
    const store = await LocalStore.open(await freshDir("store2"));
    const dir = await freshDir("commit-src2");
    await fsp.writeFile(path.join(dir, "f"), "same");
    const a = await commitLayer(store, dir, { epoch: EPOCH });
    const b = await commitLayer(store, dir, { epoch: EPOCH });
    assert.deepEqual(a, b);
    assert.deepEqual(await fsp.readdir(path.join(store.root, "blobs/sha256")), [a.digest.slice(7)]);
    assert.deepEqual(await fsp.readdir(path.join(store.root, "tmp")), []);
  });

  test("trees differing only in post-epoch mtimes commit to the same digest", async () => {
    const store = await LocalStore.open(await freshDir("store3"));
    const a = await freshDir("ca");
    const b = await freshDir("cb");
    await buildTree(a, false, AFTER_A);
    await buildTree(b, true, AFTER_B);
    assert.deepEqual(await commitLayer(store, a, { epoch: EPOCH }), await commitLayer(store, b, { epoch: EPOCH }));
  });

  test("gzipLevel reads STRATA_GZIP_LEVEL and falls back to 1 on bad values", () => {
    const saved = process.env.STRATA_GZIP_LEVEL;
    try {
      delete process.env.STRATA_GZIP_LEVEL;
      assert.equal(gzipLevel(), 1);
      process.env.STRATA_GZIP_LEVEL = "9";
      assert.equal(gzipLevel(), 9);
      process.env.STRATA_GZIP_LEVEL = "0";
      assert.equal(gzipLevel(), 0);
      for (const bad of ["10", "-1", "1.5", "x"]) {
        process.env.STRATA_GZIP_LEVEL = bad;
        assert.equal(gzipLevel(), 1, bad);
      }
    } finally {
      if (saved === undefined) delete process.env.STRATA_GZIP_LEVEL;
      else process.env.STRATA_GZIP_LEVEL = saved;
    }
  });

  test("a failing pack rejects and stores no blob", async () => {
    const store = await LocalStore.open(await freshDir("store4"));
    await assert.rejects(commitLayer(store, path.join(work, "missing-dir"), { epoch: EPOCH }));
    assert.deepEqual(await fsp.readdir(path.join(store.root, "blobs/sha256")), []);
  });

  test("a failing pack leaves no temp dir behind", async () => {
    const store = await LocalStore.open(await freshDir("store5"));
    await assert.rejects(commitLayer(store, path.join(work, "missing-dir"), { epoch: EPOCH }));
    assert.deepEqual(await fsp.readdir(path.join(store.root, "tmp")), []);
  });
});
