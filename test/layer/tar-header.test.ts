import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { encodeHeader, endOfArchive, padding, paxRecord, BLOCK } from "../../src/layer/tar-header.js";

/** Runs GNU tar on an archive we encoded and returns its verbose listing. */
function gnuList(archive: Buffer): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "strata-tarhdr-"));
  try {
    const f = path.join(dir, "a.tar");
    writeFileSync(f, archive);
    return execFileSync("tar", ["--numeric-owner", "--full-time", "-tvf", f], {
      encoding: "utf8",
      env: { ...process.env, TZ: "UTC" },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("tar header encoder", () => {
  test("PAX record lengths count themselves, including across a digit boundary", () => {
    for (const v of ["x", "a".repeat(90), "a".repeat(93), "a".repeat(94), "a".repeat(995), "日本語"]) {
      const r = paxRecord("path", v);
      const len = Number(r.slice(0, r.indexOf(" ")));
      assert.equal(len, Buffer.byteLength(r), v.length.toString());
      assert.ok(r.endsWith(`path=${v}\n`));
    }
  });

  test("headers are 512-byte blocks with a valid checksum, and GNU tar reads names, modes, ids, sizes and times", () => {
    const longName = `${"d".repeat(120)}/${"f".repeat(90)}.txt`; // fits ustar prefix + name
    const veryLong = `${"x".repeat(300)}/file.txt`; // needs PAX
    const body = Buffer.from("hello\n");
    const parts = [
      encodeHeader({ name: "dir", type: "directory", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1767225600 }),
      encodeHeader({
        name: "dir/a.txt",
        type: "file",
        mode: 0o4755,
        uid: 1000,
        gid: 1001,
        size: body.length,
        mtime: 1767225600,
      }),
      body,
      padding(body.length),
      encodeHeader({ name: longName, type: "file", mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0 }),
      encodeHeader({
        name: veryLong,
        type: "symlink",
        mode: 0o777,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        linkname: "t".repeat(150),
      }),
      encodeHeader({ name: "big-ids", type: "file", mode: 0o600, uid: 3_000_000, gid: 70_000_000, size: 0, mtime: 0 }),
      encodeHeader({
        name: "dev",
        type: "character-device",
        mode: 0o666,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        devmajor: 1,
        devminor: 3,
      }),
      encodeHeader({ name: "日本.txt", type: "file", mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0 }),
      endOfArchive(),
    ];
    for (const p of parts.slice(0, 2)) assert.equal(p.length % BLOCK, 0);
    const out = gnuList(Buffer.concat(parts));
    const lines = out.trim().split("\n");
    assert.match(lines[0]!, /^drwxr-xr-x 0\/0 +0 2026-01-01 00:00:00 dir\/?$/);
    assert.match(lines[1]!, /^-rwsr-xr-x 1000\/1001 +6 2026-01-01 00:00:00 dir\/a\.txt$/);
    assert.ok(lines[2]!.endsWith(longName));
    assert.ok(lines[3]!.endsWith(`${veryLong} -> ${"t".repeat(150)}`), lines[3]);
    assert.match(lines[4]!, /^-rw------- 3000000\/70000000 /);
    assert.match(lines[5]!, /^crw-rw-rw- 0\/0 +1,3 /);
    assert.ok(lines[6]!.endsWith("日本.txt"));
  });

  test("the same entry always encodes to the same bytes", () => {
    const e = { name: `${"n".repeat(200)}/x`, type: "file" as const, mode: 0o644, uid: 5, gid: 6, size: 10, mtime: 42 };
    assert.deepEqual(encodeHeader(e), encodeHeader({ ...e }));
  });
});
