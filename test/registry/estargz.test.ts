// eStargz writer and reader, offline: the reference golden vector (fixtures/estargz/golden-vector.json, made with
// stargz-snapshotter v0.12.0) read by our reader, our writer's output compared with it structurally and — modulo
// the compressed offsets, which depend on the deflate implementation — byte for byte; round trips, determinism,
// corruption detection.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable, Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { gunzipSync, gzipSync, inflateRawSync } from "node:zlib";
import tar from "tar-stream";
import { DigestMismatchError } from "../../src/errors.js";
import { encodeHeader, endOfArchive, padding, paxRecord, type TarEntry } from "../../src/layer/tar-header.js";
import { UnsupportedImageError } from "../../src/registry/errors.js";
import {
  cleanEntryName,
  encodeToc,
  footerBytes,
  goJsonString,
  parseFooter,
  parseToc,
  TOC_DIGEST_ANNOTATION,
  UNCOMPRESSED_SIZE_ANNOTATION,
  type Toc,
} from "../../src/registry/estargz/format.js";
import { bufferSource, fileSource } from "../../src/registry/estargz/range-source.js";
import { EstargzReader, isEstargzLayer } from "../../src/registry/estargz/read.js";
import { writeEstargz, type EstargzResult } from "../../src/registry/estargz/write.js";
import type { Digest } from "../../src/util/digest.js";

interface GoldenVector {
  chunkSize: number;
  blob: { size: number; sha256: string; base64: string };
  tocOffset: number;
  tocDigest: Digest;
  tocJsonSize: number;
  diffId: Digest;
  uncompressedSize: number;
  footerHex: string;
  members: { offset: number; clen: number; ulen: number }[];
  toc: Toc;
}

function fixture(rel: string): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, "fixtures", rel);
    if (existsSync(candidate)) return candidate;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`fixtures/${rel} not found above ${import.meta.url}`);
    dir = up;
  }
}

const V = JSON.parse(readFileSync(fixture("estargz/golden-vector.json"), "utf8")) as GoldenVector;
const GOLDEN = Buffer.from(V.blob.base64, "base64");
const sha = (b: Uint8Array): string => "sha256:" + createHash("sha256").update(b).digest("hex");

/** The vector's input tar, written with our header encoder (Go's archive/tar writes identical USTAR headers). */
function vectorTar(): Buffer {
  const T = 1577836800;
  const b = Buffer.alloc(100);
  for (let i = 0; i < 100; i++) b[i] = (i * 7) % 251;
  return makeTar([
    [{ name: "dir/", type: "directory", mode: 0o755, mtime: T }],
    [{ name: "dir/a.txt", type: "file", mode: 0o644, mtime: T }, Buffer.from("hello\n")],
    [{ name: "dir/b.bin", type: "file", mode: 0o644, mtime: T }, b],
    [{ name: "dir/link", type: "symlink", mode: 0o777, linkname: "a.txt", mtime: T }],
    [{ name: "dir/empty", type: "file", mode: 0o644, mtime: T }, Buffer.alloc(0)],
  ]);
}

type E = Partial<TarEntry> & { name: string; type: TarEntry["type"] };
function makeTar(entries: [E, Buffer?][], end = true): Buffer {
  const parts: Buffer[] = [];
  for (const [e, body] of entries) {
    parts.push(encodeHeader({ mode: 0o644, uid: 0, gid: 0, mtime: 0, ...e, size: body?.length ?? 0 }));
    if (body) parts.push(body, padding(body.length));
  }
  if (end) parts.push(endOfArchive());
  return Buffer.concat(parts);
}

async function toBuffer(r: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Writes to memory. */
async function writeToBuffer(
  input: Buffer | Buffer[],
  opts: Parameters<typeof writeEstargz>[2] = {},
): Promise<{ blob: Buffer; r: EstargzResult }> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  const r = await writeEstargz(Array.isArray(input) ? input : [input], sink, opts);
  return { blob: Buffer.concat(chunks), r };
}

/** Start offsets and decompressed lengths of every gzip member of a blob (walks the members with raw inflate). */
function memberMap(blob: Buffer): { offset: number; clen: number; ulen: number }[] {
  const out: { offset: number; clen: number; ulen: number }[] = [];
  let off = 0;
  while (off < blob.length) {
    assert.equal(blob[off], 0x1f, `member at ${off}`);
    assert.equal(blob[off + 1], 0x8b);
    const flg = blob[off + 3]!;
    let p = off + 10;
    if (flg & 4) p += 2 + blob.readUInt16LE(p);
    assert.equal(flg & ~4, 0, "no name/comment/hcrc fields expected");
    // Find where this member's deflate stream ends: inflate, then recompute its compressed length.
    const info = { bytes: 0 };
    const data = inflateRawSync(blob.subarray(p), { info: true } as never) as unknown as {
      buffer: Buffer;
      engine: { bytesWritten: number };
    };
    info.bytes = data.engine.bytesWritten;
    const end = p + info.bytes + 8;
    out.push({ offset: off, clen: end - off, ulen: data.buffer.length });
    off = end;
  }
  return out;
}

describe("eStargz footer", () => {
  test("the footer for the golden vector is byte for byte the reference's", () => {
    assert.equal(footerBytes(V.tocOffset).toString("hex"), V.footerHex);
    assert.deepEqual(parseFooter(GOLDEN.subarray(-51), "golden"), { tocOffset: V.tocOffset, footerSize: 51 });
  });

  test("footers round-trip for offsets 0…200000 step 1023 (ported from estargz gzip_test.go) and gunzip to nothing", () => {
    for (let off = 0; off <= 200000; off += 1023) {
      const f = footerBytes(off);
      assert.equal(f.length, 51);
      assert.equal(parseFooter(f, "t").tocOffset, off);
      assert.equal(gunzipSync(f).length, 0);
    }
  });

  test("a legacy 47-byte stargz footer is read; garbage is refused", () => {
    const legacy = Buffer.concat([
      Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 22, 0]),
      Buffer.from("0000000000000abcSTARGZ"),
      Buffer.from([1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]),
    ]);
    assert.equal(legacy.length, 47);
    assert.deepEqual(parseFooter(legacy, "t"), { tocOffset: 0xabc, footerSize: 47 });
    assert.throws(() => parseFooter(randomBytes(51), "t"), UnsupportedImageError);
    const bad = footerBytes(12);
    bad.write("STARGX", 32, "latin1");
    assert.throws(() => parseFooter(bad, "t"), /STARGZ/);
  });
});

describe("eStargz golden vector (reference writer output) through our reader", () => {
  test("blob digest, footer → TOC at 579, TOC digest, member map, full gunzip → diffID", async () => {
    assert.equal(GOLDEN.length, V.blob.size);
    assert.equal(sha(GOLDEN), `sha256:${V.blob.sha256}`);
    const r = await EstargzReader.open(bufferSource(GOLDEN), { tocDigest: V.tocDigest });
    assert.equal(r.tocOffset, V.tocOffset);
    assert.equal(r.tocDigest, V.tocDigest);
    assert.deepEqual(r.toc, V.toc);
    assert.deepEqual(memberMap(GOLDEN), V.members);
    const plain = gunzipSync(GOLDEN);
    assert.equal(plain.length, V.uncompressedSize);
    assert.equal(sha(plain), V.diffId);
  });

  test("every file through ranged decompression, every chunk digest checked", async () => {
    const r = await EstargzReader.open(bufferSource(GOLDEN), { tocDigest: V.tocDigest });
    const { files, missing } = await r.fetchFiles(["dir"], { recursive: true });
    assert.deepEqual(missing, []);
    const byPath = new Map(files.map((f) => [f.path, f]));
    assert.equal(byPath.get("dir/a.txt")!.content!.toString(), "hello\n");
    const b = Buffer.alloc(100);
    for (let i = 0; i < 100; i++) b[i] = (i * 7) % 251;
    assert.deepEqual(byPath.get("dir/b.bin")!.content, b);
    assert.equal(byPath.get("dir/empty")!.content!.length, 0);
    assert.equal(byPath.get("dir/link")!.entry.linkName, "a.txt");
    assert.equal(byPath.get("dir")!.entry.mode, 0o755);
    assert.equal((await r.readFile("/" + ".no.prefetch.landmark"))[0], 0x0f);
  });

  test("fetchAll: parallel ranges, concurrent decompression → the tar stream, digest and diffID verified", async () => {
    const r = await EstargzReader.open(bufferSource(GOLDEN), { tocDigest: V.tocDigest });
    const { tar: stream, result } = r.fetchAll({
      rangeBytes: 100,
      concurrency: 3,
      digest: `sha256:${V.blob.sha256}` as Digest,
      diffId: V.diffId,
    });
    const plain = await toBuffer(stream);
    const res = await result;
    assert.equal(res.diffId, V.diffId);
    assert.equal(res.uncompressedSize, 8192);
    assert.deepEqual(plain, gunzipSync(GOLDEN));
  });

  test("a wrong TOC digest, a corrupt chunk and a wrong diffID are refused", async () => {
    await assert.rejects(
      EstargzReader.open(bufferSource(GOLDEN), { tocDigest: `sha256:${"0".repeat(64)}` as Digest }),
      DigestMismatchError,
    );
    // Re-compress chunk 1 of dir/b.bin (member @370) with different bytes: valid gzip, wrong content.
    const evil = Buffer.concat([GOLDEN.subarray(0, 370), gzipSync(Buffer.alloc(40, 0x41)), GOLDEN.subarray(436)]);
    const shift = evil.length - GOLDEN.length;
    // The TOC offsets no longer line up unless the replacement has the same length; keep the original offsets if so.
    if (shift === 0) {
      const r = await EstargzReader.open(bufferSource(evil), { tocDigest: V.tocDigest });
      await assert.rejects(r.readFile("dir/b.bin"), DigestMismatchError);
    }
    // Flip one byte inside the deflate data of member @202 (a.txt): gzip CRC or digest check fails.
    const flipped = Buffer.from(GOLDEN);
    flipped[215] = flipped[215]! ^ 0xff;
    const r2 = await EstargzReader.open(bufferSource(flipped), { tocDigest: V.tocDigest });
    await assert.rejects(
      r2.readFile("dir/a.txt"),
      (e: unknown) => e instanceof DigestMismatchError || e instanceof UnsupportedImageError,
    );
    const r3 = await EstargzReader.open(bufferSource(GOLDEN), { tocDigest: V.tocDigest });
    const { tar: stream, result } = r3.fetchAll({ diffId: `sha256:${"1".repeat(64)}` as Digest });
    await assert.rejects(toBuffer(stream), DigestMismatchError);
    await assert.rejects(result, DigestMismatchError);
  });
});

/** The golden blob with its TOC replaced by `toc` (re-encoded, so its digest is that of the new JSON). */
function withToc(toc: unknown): { blob: Buffer; tocDigest: Digest } {
  const json = Buffer.from(JSON.stringify(toc));
  const tarBytes = Buffer.concat([
    encodeHeader({ name: "stargz.index.json", type: "file", mode: 0o644, uid: 0, gid: 0, size: json.length, mtime: 0 }),
    json,
    padding(json.length),
    endOfArchive(),
  ]);
  return {
    blob: Buffer.concat([GOLDEN.subarray(0, V.tocOffset), gzipSync(tarBytes), footerBytes(V.tocOffset)]),
    tocDigest: sha(json) as Digest,
  };
}

describe("eStargz TOC parsing on first use (deferParse)", () => {
  const broken = () => {
    const t = structuredClone(V.toc);
    t.entries[2]!.offset = 9999; // past the TOC
    return withToc(t);
  };

  test("open checks the digest either way; an inconsistent TOC fails open, or with deferParse the use of what is wrong", async () => {
    const { blob, tocDigest } = broken();
    await assert.rejects(EstargzReader.open(bufferSource(blob), { tocDigest }), /offset 9999, at or after the TOC/);
    const r = await EstargzReader.open(bufferSource(blob), { tocDigest, deferParse: true });
    const name = cleanEntryName(V.toc.entries[2]!.name);
    assert.equal(r.lookup(name)?.type, "reg", "the entry's own fields are fine");
    await assert.rejects(
      r.readFile(name),
      (e: unknown) => e instanceof UnsupportedImageError && /offset 9999, at or after the TOC/.test(e.message),
      "its content is not",
    );
    assert.throws(() => r.toc, /offset 9999/, "the whole TOC is checked before it is handed out");
    const typo = structuredClone(V.toc);
    (typo.entries[2] as { mode: unknown }).mode = "0644";
    const t = withToc(typo);
    const r2 = await EstargzReader.open(bufferSource(t.blob), { tocDigest: t.tocDigest, deferParse: true });
    assert.throws(() => r2.lookup(name), /has invalid mode "0644"/, "a lookup checks the fields of what it returns");
    await assert.rejects(
      EstargzReader.open(bufferSource(blob), { tocDigest: V.tocDigest, deferParse: true }),
      DigestMismatchError,
      "the digest is never deferred",
    );
  });

  test("a deferred reader of a valid TOC answers like an eager one", async () => {
    const r = await EstargzReader.open(bufferSource(GOLDEN), { tocDigest: V.tocDigest, deferParse: true });
    assert.equal((await r.readFile("dir/a.txt")).toString(), "hello\n");
    assert.deepEqual(r.toc, V.toc);
    assert.deepEqual(r.paths(), (await EstargzReader.open(bufferSource(GOLDEN), { tocDigest: V.tocDigest })).paths());
  });

  test("a lazy image parses a layer's TOC only when a lookup reaches it", async () => {
    const { LazyImage } = await import("../../src/registry/estargz/lazy.js");
    const { parseReference } = await import("../../src/registry/reference.js");
    const base = broken();
    const top = await writeToBuffer(makeTar([[{ name: "etc/hostname", type: "file" }, Buffer.from("top\n")]]));
    const digest = `sha256:${"0".repeat(64)}` as Digest;
    const d = (blob: Buffer) => ({
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      digest: sha(blob) as Digest,
      size: blob.length,
    });
    const img = new LazyImage(
      parseReference("127.0.0.1:1/x/y:1"),
      digest,
      digest,
      {
        architecture: "amd64",
        os: "linux",
        config: {},
        rootfs: { type: "layers", diff_ids: [digest, digest] },
        history: [],
      },
      [
        {
          descriptor: d(base.blob),
          diffId: digest,
          reader: await EstargzReader.open(bufferSource(base.blob), { tocDigest: base.tocDigest, deferParse: true }),
        },
        {
          descriptor: d(top.blob),
          diffId: digest,
          reader: await EstargzReader.open(bufferSource(top.blob), { tocDigest: top.r.tocDigest, deferParse: true }),
        },
      ],
    );
    assert.equal(
      (await img.readFile("/etc/hostname")).toString(),
      "top\n",
      "the top layer answers; the broken base is never parsed",
    );
    await assert.rejects(
      img.readFile(`/${cleanEntryName(V.toc.entries[2]!.name)}`),
      (e: unknown) => e instanceof UnsupportedImageError && /invalid eStargz TOC/.test(e.message),
      "reaching the base reports its TOC",
    );
  });
});

describe("eStargz writer against the golden vector", () => {
  test("same decompressed stream as the reference writer except the TOC offsets; with the reference's offsets the TOC digest and diffID are the golden ones", async () => {
    const { blob, r } = await writeToBuffer(vectorTar(), { chunkSize: V.chunkSize, level: 9 });
    // Structure: the same entries with the same payload layout; only compressed offsets differ.
    const strip = (t: Toc) => t.entries.map(({ offset: _o, ...rest }) => rest);
    assert.deepEqual(strip(r.toc), strip(V.toc));
    assert.equal(r.uncompressedSize, V.uncompressedSize);
    // Our member map: the same decompressed member lengths as the reference's, members exactly at every TOC offset.
    const mine = memberMap(blob);
    assert.deepEqual(
      mine.map((m) => m.ulen),
      V.members.map((m) => m.ulen),
    );
    const payloadOffsets = r.toc.entries.filter((e) => e.offset !== undefined).map((e) => e.offset);
    assert.deepEqual(
      payloadOffsets,
      mine.slice(1, 6).map((m) => m.offset),
    );
    assert.equal(r.tocOffset, mine[6]!.offset);
    assert.deepEqual(blob.subarray(-51), footerBytes(r.tocOffset));
    assert.equal(parseFooter(blob, "mine").tocOffset, r.tocOffset);
    // Substituting the reference's offsets gives the reference's TOC bytes, hence its TOC digest…
    const withGoldenOffsets: Toc = {
      version: 1,
      entries: r.toc.entries.map((e, i) => ({
        ...e,
        ...(V.toc.entries[i]!.offset !== undefined ? { offset: V.toc.entries[i]!.offset } : {}),
      })),
    };
    const json = encodeToc(withGoldenOffsets);
    assert.equal(json.length, V.tocJsonSize);
    assert.equal(sha(json), V.tocDigest);
    // …and the reference's decompressed stream, hence its diffID.
    const plain = gunzipSync(blob);
    const goldenPlain = gunzipSync(GOLDEN);
    const tocStart = goldenPlain.length - 3584 + 512;
    assert.deepEqual(
      plain.subarray(0, tocStart),
      goldenPlain.subarray(0, tocStart),
      "every tar header and payload byte before the TOC JSON",
    );
    const patched = Buffer.concat([plain.subarray(0, tocStart), json, goldenPlain.subarray(tocStart + json.length)]);
    assert.equal(sha(patched), V.diffId);
    // Our own values are self-consistent.
    assert.equal(sha(plain), r.diffId);
    assert.equal(sha(blob), r.digest);
    assert.equal(blob.length, r.size);
    assert.deepEqual(r.annotations, { [TOC_DIGEST_ANNOTATION]: r.tocDigest, [UNCOMPRESSED_SIZE_ANNOTATION]: "8192" });
    assert.equal(r.inputDiffId, sha(vectorTar()));
  });

  test("our reader reads our writer's vector output", async () => {
    const { blob, r } = await writeToBuffer(vectorTar(), { chunkSize: V.chunkSize });
    const reader = await EstargzReader.open(bufferSource(blob), { tocDigest: r.tocDigest });
    assert.equal((await reader.readFile("dir/b.bin")).length, 100);
    assert.equal((await reader.readFile("dir/a.txt")).toString(), "hello\n");
  });
});

describe("eStargz writer", () => {
  /** A layer with long names, PAX xattrs, hardlinks, devices, unicode, empty and chunked files. */
  function richTar(): { tar: Buffer; big: Buffer } {
    const big = randomBytes(300_000);
    const long = `deep/${"d".repeat(120)}/${"f".repeat(120)}.txt`;
    const paxBody = Buffer.from(
      paxRecord("SCHILY.xattr.security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00") +
        paxRecord("SCHILY.xattr.user.note", "a<b>&c"),
      "latin1",
    );
    const paxHdr = encodeHeader({
      name: "PaxHeaders/ping",
      type: "file",
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: paxBody.length,
      mtime: 0,
    });
    paxHdr[156] = "x".charCodeAt(0);
    fixChecksum(paxHdr);
    const t = Buffer.concat([
      makeTar(
        [
          [{ name: "bin/", type: "directory", mode: 0o755, mtime: 1700000000 }],
          [{ name: "bin/big", type: "file", mode: 0o755, mtime: 1700000000, uid: 1000, gid: 1000 }, big],
          [{ name: "bin/hard", type: "link", linkname: "bin/big", mode: 0o755 }],
          [{ name: "bin/sh", type: "symlink", linkname: "/bin/busybox", mode: 0o777 }],
          [{ name: long, type: "file" }, Buffer.from("long name")],
          [{ name: "etc/日本.conf", type: "file" }, Buffer.from("unicode")],
          [{ name: "etc/empty", type: "file" }, Buffer.alloc(0)],
          [{ name: "dev/null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666 }],
          [{ name: "stargz.index.json", type: "file" }, Buffer.from("{}")],
          [{ name: ".no.prefetch.landmark", type: "file" }, Buffer.from([0x0f])],
        ],
        false,
      ),
      paxHdr,
      paxBody,
      padding(paxBody.length),
      makeTar([[{ name: "bin/ping", type: "file", mode: 0o4755 }, Buffer.from("ping")]]),
    ]);
    return { tar: t, big };
  }

  function fixChecksum(h: Buffer): void {
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
  }

  test("round trip: chunked files, xattrs (base64), hardlinks, devices, long and unicode names; input TOC and landmark dropped", async () => {
    const { tar: input, big } = richTar();
    const { blob, r } = await writeToBuffer(input, { chunkSize: 64 * 1024 });
    const names = r.toc.entries.filter((e) => e.type !== "chunk").map((e) => e.name);
    assert.equal(names.filter((n) => n === "stargz.index.json").length, 0);
    assert.equal(names.filter((n) => n === ".no.prefetch.landmark").length, 1);
    assert.equal(names[0], ".no.prefetch.landmark");
    const bigEntries = r.toc.entries.filter((e) => e.name === "bin/big");
    assert.equal(bigEntries.length, Math.ceil(300_000 / 65536));
    assert.equal(bigEntries[0]!.chunkSize, 65536);
    assert.equal(bigEntries.at(-1)!.chunkSize, undefined, "a shorter last chunk has no chunkSize");
    assert.equal(bigEntries[0]!.uid, 1000);
    assert.equal(bigEntries[0]!.digest, sha(big));
    const ping = r.toc.entries.find((e) => e.name === "bin/ping")!;
    assert.deepEqual(ping.xattrs, {
      "security.capability": Buffer.from("\x01\x00\x00\x02\x00\x20\x00\x00", "latin1").toString("base64"),
      "user.note": Buffer.from("a<b>&c").toString("base64"),
    });
    assert.equal(ping.mode, 0o4755);
    assert.equal(r.toc.entries.find((e) => e.name === "dev/null")!.devMajor, 1);

    const reader = await EstargzReader.open(bufferSource(blob), { tocDigest: r.tocDigest });
    assert.deepEqual(await reader.readFile("bin/big"), big);
    assert.deepEqual(await reader.readFile("bin/hard"), big, "a hardlink reads its target");
    assert.equal((await reader.readFile("/etc/日本.conf")).toString(), "unicode");
    assert.equal((await reader.readFile(`deep/${"d".repeat(120)}/${"f".repeat(120)}.txt`)).toString(), "long name");

    // The decompressed blob is one tar: the original entries (headers passed through byte for byte), the landmark
    // first and the TOC last.
    const plain = gunzipSync(blob);
    assert.equal(sha(plain), r.diffId);
    const listed: { name: string; type: string | null; pax?: Record<string, string> }[] = [];
    const ex = tar.extract();
    const done = (async () => {
      for await (const e of ex) {
        listed.push({
          name: e.header.name,
          type: e.header.type,
          ...(e.header.pax ? { pax: e.header.pax as Record<string, string> } : {}),
        });
        e.resume();
      }
    })();
    ex.end(plain);
    await done;
    assert.deepEqual(
      listed.map((e) => e.name),
      [
        ".no.prefetch.landmark",
        "bin/",
        "bin/big",
        "bin/hard",
        "bin/sh",
        `deep/${"d".repeat(120)}/${"f".repeat(120)}.txt`,
        "etc/日本.conf",
        "etc/empty",
        "dev/null",
        "bin/ping",
        "stargz.index.json",
      ],
    );
    assert.ok(listed.find((e) => e.name === "bin/ping")!.pax?.["SCHILY.xattr.user.note"] !== undefined);
    assert.ok(plain.includes(input.subarray(0, 512 * 3)), "original header bytes are kept");
  });

  test("deterministic: the same input gives the same bytes whatever the concurrency; gzip and tar input agree", async () => {
    const { tar: input } = richTar();
    const a = await writeToBuffer(input, { chunkSize: 50_000, concurrency: 1, level: 6 });
    const b = await writeToBuffer([input.subarray(0, 1000), input.subarray(1000, 7777), input.subarray(7777)], {
      chunkSize: 50_000,
      concurrency: 8,
      level: 6,
    });
    const c = await writeToBuffer(gzipSync(input), { chunkSize: 50_000, concurrency: 3, level: 6 });
    assert.equal(a.r.digest, b.r.digest);
    assert.equal(a.r.digest, c.r.digest);
    assert.deepEqual(a.blob, b.blob);
    assert.equal(c.r.inputDiffId, sha(input));
  });

  test("re-converting an eStargz layer keeps one landmark and one TOC", async () => {
    const first = await writeToBuffer(vectorTar(), { chunkSize: 40 });
    const second = await writeToBuffer(first.blob, { chunkSize: 40 });
    assert.deepEqual(second.r.toc, first.r.toc);
    assert.equal(second.r.diffId, first.r.diffId);
  });

  test("writes to a file; fileSource reads it", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-estargz-"));
    try {
      const file = path.join(dir, "layer.esgz");
      const r = await writeEstargz(Readable.from([vectorTar()]), file, { chunkSize: 40 });
      assert.equal((await fsp.stat(file)).size, r.size);
      const reader = await EstargzReader.open(await fileSource(file), { tocDigest: r.tocDigest, tailBytes: 100 });
      assert.equal((await reader.readFile("dir/a.txt")).toString(), "hello\n");
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  test("a TOC larger than the first tail read is fetched with a second range", async () => {
    const entries: [E, Buffer?][] = [];
    for (let i = 0; i < 400; i++) entries.push([{ name: `f/${i}`, type: "file" }, Buffer.from(`file ${i}`)]);
    const { blob, r } = await writeToBuffer(makeTar(entries));
    const src = bufferSource(blob);
    const reader = await EstargzReader.open(src, { tocDigest: r.tocDigest, tailBytes: 200 });
    assert.equal((await reader.readFile("f/399")).toString(), "file 399");
  });

  test("fetchFiles transfers only the members it needs", async () => {
    const big = randomBytes(2_000_000);
    const { blob, r } = await writeToBuffer(
      makeTar([
        [{ name: "big", type: "file" }, big],
        [{ name: "small", type: "file" }, Buffer.from("x")],
      ]),
      { chunkSize: 256 * 1024, level: 1 },
    );
    const src = bufferSource(blob);
    const reader = await EstargzReader.open(src, { tocDigest: r.tocDigest, tailBytes: 4096 });
    const before = src.bytesRead;
    assert.equal((await reader.readFile("small")).toString(), "x");
    assert.ok(src.bytesRead - before < 1000, `read ${src.bytesRead - before} bytes for one small file`);
    assert.ok(src.bytesRead < blob.length * 0.05);
  });

  test("malformed input: truncated tar, zstd, PAX global header, a non-file entry with content", async () => {
    const t = vectorTar();
    await assert.rejects(writeToBuffer(t.subarray(0, 700)), UnsupportedImageError);
    await assert.rejects(writeToBuffer(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0])), /zstd/);
    const g = encodeHeader({ name: "pax_global_header", type: "file", mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0 });
    g[156] = "g".charCodeAt(0);
    fixChecksum(g);
    await assert.rejects(writeToBuffer(Buffer.concat([g, t])), /global header/);
    const sym = encodeHeader({
      name: "s",
      type: "symlink",
      linkname: "x",
      mode: 0o777,
      uid: 0,
      gid: 0,
      size: 0,
      mtime: 0,
    });
    sym.write("00000000010\0", 124, "latin1");
    fixChecksum(sym);
    await assert.rejects(writeToBuffer(Buffer.concat([sym, Buffer.alloc(512), endOfArchive()])), /claims 8 bytes/);
  });
});

describe("eStargz TOC", () => {
  test("strings are escaped as Go's encoding/json does (HTML-safe)", () => {
    assert.equal(goJsonString('a<b>&"c\\\n\t\u0001\u2028'), '"a\\u003cb\\u003e\\u0026\\"c\\\\\\n\\t\\u0001\\u2028"');
    assert.equal(goJsonString("日本"), '"日本"');
  });

  test("parseToc refuses inconsistent TOCs", () => {
    const ok = V.toc;
    const json = (t: unknown) => Buffer.from(JSON.stringify(t));
    assert.doesNotThrow(() => parseToc(json(ok), V.tocOffset, "t"));
    const mutate = (f: (t: Toc) => void): Buffer => {
      const t = structuredClone(ok);
      f(t);
      return json(t);
    };
    const cases: [string, Buffer][] = [
      ["offset past the TOC", mutate((t) => (t.entries[2]!.offset = 9999))],
      ["missing chunkDigest", mutate((t) => delete t.entries[4]!.chunkDigest)],
      ["non-increasing offsets", mutate((t) => (t.entries[4]!.offset = 300))],
      ["chunk gap", mutate((t) => (t.entries[4]!.chunkOffset = 41))],
      ["bad digest", mutate((t) => (t.entries[2]!.digest = "md5:abc"))],
      ["unknown type", mutate((t) => ((t.entries[1] as { type: string }).type = "socket"))],
      ["version 2", mutate((t) => (t.version = 2))],
    ];
    for (const [what, bytes] of cases)
      assert.throws(() => parseToc(bytes, V.tocOffset, "t"), UnsupportedImageError, what);
  });

  test("isEstargzLayer looks at the annotation", () => {
    const d = {
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      digest: `sha256:${"a".repeat(64)}` as Digest,
      size: 1,
    };
    assert.equal(isEstargzLayer(d), false);
    assert.equal(isEstargzLayer({ ...d, annotations: { [TOC_DIGEST_ANNOTATION]: V.tocDigest } }), true);
    assert.equal(isEstargzLayer({ ...d, annotations: { [TOC_DIGEST_ANNOTATION]: "nope" } }), false);
  });
});

describe("LazyImage: the merged view of eStargz layers", () => {
  async function layer(entries: [E, Buffer?][]): Promise<{ reader: EstargzReader; blob: Buffer }> {
    const { blob, r } = await writeToBuffer(makeTar(entries));
    return { reader: await EstargzReader.open(bufferSource(blob), { tocDigest: r.tocDigest }), blob };
  }

  test("whiteouts, opaque directories and in-image symlinks are applied as overlayfs would", async () => {
    const { LazyImage } = await import("../../src/registry/estargz/lazy.js");
    const { parseReference } = await import("../../src/registry/reference.js");
    const l0 = await layer([
      [{ name: "etc/passwd", type: "file" }, Buffer.from("root:x:0:0::/root:/bin/sh\n")],
      [{ name: "etc/old", type: "file" }, Buffer.from("old")],
      [{ name: "opt/gone", type: "file" }, Buffer.from("gone")],
      [{ name: "usr/bin/tool", type: "file" }, Buffer.from("tool")],
      [{ name: "bin", type: "symlink", linkname: "usr/bin" }],
      [{ name: "esc", type: "symlink", linkname: "../../../../etc/passwd" }],
      [{ name: "abs", type: "symlink", linkname: "/etc/passwd" }],
    ]);
    const l1 = await layer([
      [{ name: "etc/.wh.old", type: "file" }, Buffer.alloc(0)],
      [{ name: "opt/.wh..wh..opq", type: "file" }, Buffer.alloc(0)],
      [{ name: "opt/new", type: "file" }, Buffer.from("new")],
      [{ name: "usr/bin/tool", type: "file" }, Buffer.from("tool v2")],
    ]);
    const digest = `sha256:${"0".repeat(64)}` as Digest;
    const d = (blob: Buffer) => ({
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      digest: sha(blob) as Digest,
      size: blob.length,
    });
    const img = new LazyImage(
      parseReference("127.0.0.1:1/x/y:1"),
      digest,
      digest,
      {
        architecture: "amd64",
        os: "linux",
        config: {},
        rootfs: { type: "layers", diff_ids: [digest, digest] },
        history: [],
      },
      [
        { descriptor: d(l0.blob), diffId: digest, reader: l0.reader },
        { descriptor: d(l1.blob), diffId: digest, reader: l1.reader },
      ],
    );
    assert.equal(img.stat("/etc/old"), undefined, "whited out in the upper layer");
    assert.equal(img.stat("/opt/gone"), undefined, "hidden by the opaque directory");
    assert.equal((await img.readFile("/opt/new")).toString(), "new");
    assert.equal(
      (await img.readFile("/bin/tool")).toString(),
      "tool v2",
      "a lower symlink resolves into the upper layer's file",
    );
    assert.equal(
      (await img.readFile("/esc")).toString(),
      "root:x:0:0::/root:/bin/sh\n",
      "`..` stops at the image root",
    );
    assert.equal(
      (await img.readFile("abs")).toString(),
      "root:x:0:0::/root:/bin/sh\n",
      "absolute targets restart at the image root",
    );
    assert.equal(img.stat("/bin", false)?.entry.type, "symlink");
    const { files } = await img.fetchFiles(["/opt", "/etc"], { recursive: true });
    assert.deepEqual(files.map((f) => f.path).sort(), ["etc", "etc/passwd", "opt", "opt/new"]);
    assert.equal(await img.readFileIfExists("/etc/old"), undefined);
  });
});
