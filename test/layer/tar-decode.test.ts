// The one tar header decoder (src/layer/tar-decode.ts): each rule for malformed fields gives a TarFormatError naming
// the field and the header's offset; and every reader (layer extraction, the eStargz writer's reader) uses it.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { TarFormatError } from "../../src/errors.js";
import {
  BLOCK,
  decodeHeader,
  decodeNumber,
  MAX_EXTENDED_HEADER_BYTES,
  parsePaxRecords,
  TarExtensions,
  type TarHeader,
} from "../../src/layer/tar-decode.js";
import { encodeHeader, endOfArchive, padding, paxRecord, type TarEntry } from "../../src/layer/tar-header.js";
import { extractLayer } from "../../src/layer/tar-extract.js";
import { TarParser } from "../../src/layer/tar-parser.js";
import { ByteReader, RawTarReader } from "../../src/registry/estargz/tar-reader.js";

const AT = { offset: 0, where: "test.tar" };
const file = (over: Partial<TarEntry> = {}): TarEntry => ({
  name: "f",
  type: "file",
  mode: 0o644,
  uid: 0,
  gid: 0,
  size: 0,
  mtime: 1_700_000_000,
  ...over,
});

/** Rewrites the checksum of a header block after it was edited. */
function fixChecksum(h: Buffer): Buffer {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i]!;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
  return h;
}

/** A header of `e` with `bytes` written at `offset` (checksum fixed). */
function edited(offset: number, bytes: Buffer | string, e = file()): Buffer {
  const h = encodeHeader(e).subarray(-BLOCK);
  (typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes).copy(h, offset);
  return fixChecksum(Buffer.from(h));
}

/** Asserts `fn` throws a TarFormatError about `field` whose message matches `re`. */
function rejects(fn: () => unknown, field: string, re: RegExp, offset = 0): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TarFormatError, String(e));
    assert.equal(e.field, field);
    assert.equal(e.offset, offset);
    assert.match(e.message, re);
    assert.match(e.message, /malformed tar header at byte \d+/);
    return true;
  });
}

const num = (text: string | Buffer, field = "size") => {
  const b = typeof text === "string" ? Buffer.from(text, "latin1") : text;
  return decodeNumber(b, 0, b.length, field, AT);
};

describe("numeric fields", () => {
  test("octal: NUL or space terminated, leading spaces and NULs skipped, empty is 0, the full width without terminator", () => {
    const cases: [string, number][] = [
      ["0000644\0", 0o644],
      ["   755 \0", 0o755],
      ["\0\0\0\0\0\0\0\0", 0],
      ["        ", 0],
      ["00000001750\0", 1000],
      ["14524770400 ", 1_700_000_000],
      ["00000644", 0o644],
      ["\0\0 755\0\0", 0o755],
      ["755\0junk", 0o755],
      ["7 5", 7],
    ];
    for (const [text, value] of cases) assert.equal(num(text), value, JSON.stringify(text));
  });

  test("a byte that is not an octal digit before the terminator is an error naming the field", () => {
    for (const bad of ["0000648\0", "07x4\0\0\0\0", "+644\0\0\0\0", "-1\0\0\0\0\0\0", "12\t\0"]) {
      rejects(() => num(bad, "mode"), "mode", /mode ".*" is not an octal number/);
    }
  });

  test("base-256 (GNU): big-endian two's complement; negative only for mtime; beyond 2^53 refused", () => {
    assert.equal(num(Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])), 2 ** 32);
    assert.equal(num(Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 0x07])), 7);
    assert.equal(num(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), "mtime"), -1);
    assert.equal(num(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]), "mtime"), -2);
    rejects(
      () => num(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0])),
      "size",
      /size is negative/,
    );
    rejects(
      () => num(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]), "uid"),
      "uid",
      /uid is negative \(base-256 -2\)/,
    );
    rejects(() => num(Buffer.from([0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), "mtime"), "mtime", /too large/);
    rejects(() => num(Buffer.from([0x80, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0])), "size", /too large/);
  });
});

describe("header blocks", () => {
  test("a header decodes to its fields; a zero block is the end marker", () => {
    const h = decodeHeader(encodeHeader(file({ name: "a/b", mode: 0o4755, uid: 1000, gid: 1001, size: 5 })), AT)!;
    assert.deepEqual(
      [h.name, h.type, h.mode, h.uid, h.gid, h.size, h.mtime, h.format],
      ["a/b", "file", 0o4755, 1000, 1001, 5, 1_700_000_000, "ustar"],
    );
    assert.equal(decodeHeader(Buffer.alloc(BLOCK), AT), null);
  });

  test("a bad checksum is refused, saying what it is and what the header sums to", () => {
    const h = encodeHeader(file());
    h[0] = "g".charCodeAt(0);
    rejects(() => decodeHeader(h, AT), "checksum", /checksum is \d+ but the header sums to \d+/);
    const garbled = encodeHeader(file());
    garbled.write("zz\0\0\0\0\0\0", 148, "latin1");
    rejects(() => decodeHeader(garbled, AT), "checksum", /not an octal number/);
  });

  test("a checksum summed over signed bytes (old tars) is accepted", () => {
    const h = edited(0, Buffer.from([0x66, 0xe9])); // "f\xe9": one byte above 127
    let signed = 0;
    h.fill(0x20, 148, 156);
    for (let i = 0; i < BLOCK; i++) signed += h[i]! > 127 ? h[i]! - 256 : h[i]!;
    h.write(signed.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
    assert.equal(decodeHeader(h, AT)!.size, 0);
  });

  test("magic: ustar, GNU and v7 are read; anything else is refused", () => {
    assert.equal(decodeHeader(edited(257, "ustar  \0"), AT)!.format, "gnu");
    assert.equal(decodeHeader(edited(257, Buffer.alloc(8)), AT)!.format, "v7");
    rejects(() => decodeHeader(edited(257, "tarx\0\0\0\0"), AT), "magic", /is not ustar, GNU or v7/);
  });

  test("the ustar prefix applies to ustar headers only; strings end at a NUL or fill their field", () => {
    const h = edited(345, "pre\0", file({ name: "x".repeat(100) }));
    assert.equal(decodeHeader(h, AT)!.name, `pre/${"x".repeat(100)}`);
    const gnu = edited(257, "ustar  \0", file({ name: "n" }));
    gnu.write("pre\0", 345, "latin1");
    assert.equal(decodeHeader(fixChecksum(gnu), AT)!.name, "n");
  });

  test("types: 0/NUL with a trailing slash is a directory; unknown flags are 'unknown', not an error", () => {
    const ext = new TarExtensions();
    const dir = edited(156, "\0", file({ name: "d/" }));
    assert.equal(ext.apply(decodeHeader(dir, AT)!, AT).type, "directory");
    const sparse = decodeHeader(edited(156, "S"), AT)!;
    assert.deepEqual([sparse.type, sparse.typeflag], ["unknown", "S"]);
  });

  test("an entry other than a regular file with content is refused (readers disagree on skipping it)", () => {
    const sym = decodeHeader(edited(124, "00000000010\0", file({ type: "symlink", linkname: "t", name: "s" })), AT)!;
    rejects(() => new TarExtensions().apply(sym, AT), "size", /claims 8 bytes of content for symlink "s"/);
  });
});

describe("extended headers", () => {
  const pax = (records: string) => Buffer.from(records, "utf8");

  test("PAX records: path, linkpath, uid, gid, size, mtime (fraction dropped), xattrs; empty values unset", () => {
    const ext = new TarExtensions();
    const x = decodeHeader(edited(156, "x"), AT)!;
    const body = pax(
      paxRecord("path", "long/name") +
        paxRecord("uid", "3000000") +
        paxRecord("gid", "70000000") +
        paxRecord("mtime", "1700000000.75") +
        paxRecord("SCHILY.xattr.user.k", "v") +
        paxRecord("linkpath", ""),
    );
    ext.add(x, body, AT);
    assert.equal(ext.pending, true);
    const h = ext.apply(decodeHeader(encodeHeader(file({ name: "short", linkname: "keep" })), AT)!, AT);
    assert.deepEqual(
      [h.name, h.uid, h.gid, h.mtime, h.linkname, h.xattrs?.get("user.k")?.toString()],
      ["long/name", 3_000_000, 70_000_000, 1_700_000_000, "keep", "v"],
    );
    assert.equal(ext.pending, false, "per-entry records apply once");
  });

  test("global records apply to every later entry; per-entry ones override them; GNU long names yield to PAX", () => {
    const ext = new TarExtensions();
    ext.add(decodeHeader(edited(156, "g"), AT)!, pax(paxRecord("uid", "7") + paxRecord("gid", "8")), AT);
    ext.add(decodeHeader(edited(156, "x"), AT)!, pax(paxRecord("uid", "9")), AT);
    ext.add(decodeHeader(edited(156, "L"), AT)!, Buffer.from("gnu/long\0junk"), AT);
    const a = ext.apply(decodeHeader(encodeHeader(file()), AT)!, AT);
    const b = ext.apply(decodeHeader(encodeHeader(file()), AT)!, AT);
    assert.deepEqual([a.name, a.uid, a.gid], ["gnu/long", 9, 8]);
    assert.deepEqual([b.name, b.uid, b.gid], ["f", 7, 8]);
  });

  test("malformed PAX records are refused, each with what is wrong", () => {
    const cases: [string, RegExp][] = [
      ["x path=a\n", /no decimal length/],
      ["99 path=a\n", /claims 99 bytes, which does not fit/],
      ["2 p\n", /claims 2 bytes, which does not fit/],
      ["11 path=abc ", /does not end with a newline/],
      ["9 pathab\n", /no key=value/],
      ["8 =abcd\n", /no key=value/],
    ];
    for (const [body, re] of cases) rejects(() => parsePaxRecords(pax(body), AT), "PAX record", re);
    assert.equal(
      parsePaxRecords(pax(paxRecord("path", "a") + "\0\0\0"), AT)
        .get("path")
        ?.toString(),
      "a",
      "NUL padding ends the records",
    );
  });

  test("PAX numbers must be decimal", () => {
    for (const [k, v] of [
      ["size", "12a"],
      ["uid", "-1"],
      ["gid", "0x10"],
      ["mtime", "1e9"],
      ["mtime", "soon"],
    ] as const) {
      const ext = new TarExtensions();
      ext.add(decodeHeader(edited(156, "x"), AT)!, pax(paxRecord(k, v)), AT);
      rejects(() => ext.apply(decodeHeader(encodeHeader(file()), AT)!, AT), `PAX ${k}`, /is not a decimal number/);
    }
  });

  test("an extended header over 1 MiB is refused", async () => {
    const big = decodeHeader(
      edited(124, (MAX_EXTENDED_HEADER_BYTES + 1).toString(8).padStart(11, "0") + "\0", file({ type: "file" })),
      AT,
    )!;
    const x = { ...big, type: "pax-header" } as TarHeader;
    const { extendedHeaderSize } = await import("../../src/layer/tar-decode.js");
    rejects(() => extendedHeaderSize(x, AT), "size", /more than the 1048576-byte limit/);
  });
});

// ---- every reader uses the decoder ----------------------------------------------------------------------------

function archive(...parts: Buffer[]): Buffer {
  return Buffer.concat([...parts, endOfArchive()]);
}
const data = Buffer.from("hello");
const good = () => [encodeHeader(file({ name: "a", size: data.length })), data, padding(data.length)];

describe("every reader reports the same TarFormatError, with the header's offset", () => {
  let work: string;
  before(async () => {
    work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-tar-decode-"));
  });
  after(async () => {
    await fsp.rm(work, { recursive: true, force: true });
  });

  const bad = () => edited(100, "0000z44\0", file({ name: "b" })); // second header: at byte 1024
  const check = (e: unknown) =>
    e instanceof TarFormatError && e.field === "mode" && e.offset === 1024 && /not an octal number/.test(e.message);

  test("the extraction parser", () => {
    const p = new TarParser("layer x");
    assert.throws(
      () => [...p.feed(archive(...good(), bad()))],
      (e: unknown) => check(e) && /^layer x: /.test((e as Error).message),
    );
  });

  test("extractLayer (and a truncated archive is a TarFormatError too)", async () => {
    const root = await fsp.mkdtemp(path.join(work, "x-"));
    await assert.rejects(extractLayer(Readable.from([archive(...good(), bad())]), root), check);
    const root2 = await fsp.mkdtemp(path.join(work, "y-"));
    await assert.rejects(
      extractLayer(Readable.from([Buffer.concat(good()).subarray(0, 600)]), root2),
      (e: unknown) => e instanceof TarFormatError && e.field === "end of archive",
    );
  });

  test("the eStargz writer's raw reader", async () => {
    const r = new RawTarReader(new ByteReader(Readable.from([archive(...good(), bad())])), "layer y");
    const first = await r.next();
    assert.equal(first?.name, "a");
    for await (const _ of r.content(first!.size)) void _;
    await assert.rejects(r.next(), check);
  });

  test("extraction applies PAX uid, gid and mtime (ids above the ustar field's 2097151 used to be clamped)", async () => {
    const root = await fsp.mkdtemp(path.join(work, "ids-"));
    await extractLayer(
      Readable.from([archive(encodeHeader(file({ name: "big", uid: 3_000_000, gid: 70_000_000 })))]),
      root,
    );
    const st = await fsp.lstat(path.join(root, "big"));
    assert.deepEqual([st.uid, st.gid], [3_000_000, 70_000_000]);
  });
});
