// Our eStargz writer and reader checked against an independent implementation: the reference Go library
// (stargz-snapshotter estargz v0.12.0, Debian's golang-github-containerd-stargz-snapshotter-dev), built here from
// Debian's source packages with fixtures/estargz/verifier.go. The reference reader opens our blobs, verifies the TOC
// digest and every chunk digest; our reader reads the reference writer's blobs; both writers give the same TOC
// (offsets aside: they depend on the deflate implementation). Skipped when Go (golang-go) is not installed or the
// Debian packages cannot be downloaded.
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { encodeHeader, endOfArchive, padding, paxRecord, type TarEntry } from "../../src/layer/tar-header.js";
import type { Toc } from "../../src/registry/estargz/format.js";
import { fileSource } from "../../src/registry/estargz/range-source.js";
import { EstargzReader } from "../../src/registry/estargz/read.js";
import { writeEstargz } from "../../src/registry/estargz/write.js";
import type { Digest } from "../../src/util/digest.js";

const exec = promisify(execFile);
const PACKAGES = [
  "golang-github-containerd-stargz-snapshotter-dev",
  "golang-github-klauspost-compress-dev",
  "golang-github-opencontainers-go-digest-dev",
  "golang-github-vbatts-tar-split-dev",
  "golang-golang-x-sync-dev",
  "golang-github-cespare-xxhash-dev",
];

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

/** Builds the verifier once per source version (cached under STRATA_TEST_HOME); returns its path or why not. */
async function buildVerifier(): Promise<{ bin?: string; why?: string }> {
  const go = await exec("go", ["version"]).catch(() => undefined);
  if (!go) return { why: "Go is not installed (apt-get install golang-go)" };
  const source = await fsp.readFile(fixture("estargz/verifier.go"));
  const hash = createHash("sha256").update(source).update(go.stdout).digest("hex").slice(0, 16);
  const dir = path.join(process.env["STRATA_TEST_HOME"] ?? os.tmpdir(), `estargz-verifier-${hash}`);
  const bin = path.join(dir, "verifier");
  if (existsSync(bin)) return { bin };
  const tmp = `${dir}.${process.pid}.tmp`;
  await fsp.rm(tmp, { recursive: true, force: true });
  await fsp.mkdir(path.join(tmp, "debs"), { recursive: true });
  try {
    await exec("apt-get", ["download", ...PACKAGES], { cwd: path.join(tmp, "debs") });
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true });
    return { why: `could not download the reference library from Debian: ${(e as Error).message.split("\n")[0]}` };
  }
  for (const deb of await fsp.readdir(path.join(tmp, "debs")))
    await exec("dpkg", ["-x", path.join(tmp, "debs", deb), path.join(tmp, "root")]);
  const src = path.join(tmp, "gopath", "src", "strata", "verifier");
  await fsp.mkdir(src, { recursive: true });
  await fsp.writeFile(path.join(src, "main.go"), source);
  await exec("go", ["build", "-o", path.join(tmp, "verifier"), "."], {
    cwd: src,
    env: {
      ...process.env,
      GO111MODULE: "off",
      GOPATH: `${path.join(tmp, "gopath")}:${path.join(tmp, "root", "usr", "share", "gocode")}`,
      GOCACHE: path.join(tmp, "gocache"),
      GOFLAGS: "",
    },
  });
  // Keep only the binary.
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  await fsp.rename(path.join(tmp, "verifier"), bin);
  await fsp.rm(tmp, { recursive: true, force: true });
  return { bin };
}

const built = await buildVerifier().catch(
  (e: unknown) => ({ why: `building the verifier failed: ${(e as Error).message}` }) as { bin?: string; why?: string },
);
const skip = built.bin ? false : built.why!;

type E = Partial<TarEntry> & { name: string; type: TarEntry["type"] };
function tarOf(entries: [E, Buffer?][], paxFor: Record<string, Buffer> = {}): Buffer {
  const parts: Buffer[] = [];
  for (const [e, body] of entries) {
    const pax = paxFor[e.name];
    if (pax) {
      const h = encodeHeader({
        name: `PaxHeaders/${path.posix.basename(e.name)}`,
        type: "file",
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: pax.length,
        mtime: 0,
      });
      h[156] = "x".charCodeAt(0);
      h.fill(0x20, 148, 156);
      let sum = 0;
      for (const b of h) sum += b;
      h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "latin1");
      parts.push(h, pax, padding(pax.length));
    }
    parts.push(encodeHeader({ mode: 0o644, uid: 0, gid: 0, mtime: 1700000000, ...e, size: body?.length ?? 0 }));
    if (body) parts.push(body, padding(body.length));
  }
  parts.push(endOfArchive());
  return Buffer.concat(parts);
}

function layerTar(): Buffer {
  const big = randomBytes(700_000);
  return tarOf(
    [
      [{ name: "usr/", type: "directory", mode: 0o755 }],
      [{ name: "usr/bin/", type: "directory", mode: 0o755 }],
      [{ name: "usr/bin/big", type: "file", mode: 0o755, uid: 1000, gid: 1000 }, big],
      [{ name: "usr/bin/hard", type: "link", linkname: "usr/bin/big" }],
      [{ name: "usr/bin/sh", type: "symlink", linkname: "busybox", mode: 0o777 }],
      [{ name: "usr/bin/ping", type: "file", mode: 0o4755 }, Buffer.from("ping")],
      [{ name: "etc/日本.conf", type: "file" }, Buffer.from("unicode")],
      [{ name: "etc/exact", type: "file" }, Buffer.alloc(65536, 7)],
      [{ name: "etc/empty", type: "file" }, Buffer.alloc(0)],
      [{ name: "dev/null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666 }],
      [{ name: "run/fifo", type: "fifo" }],
    ],
    {
      "usr/bin/ping": Buffer.from(
        paxRecord("SCHILY.xattr.security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00"),
        "latin1",
      ),
    },
  );
}

async function verifier(...args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await exec(built.bin!, args, { maxBuffer: 64 * 1024 * 1024 });
  return JSON.parse(stdout) as Record<string, unknown>;
}

const withoutOffsets = (t: Toc): unknown[] => t.entries.map(({ offset: _o, ...rest }) => rest);

let work: string;
before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-estargz-indep-"));
});

describe("eStargz against the reference Go implementation", { skip }, () => {
  for (const chunkSize of [40, 65536, 4 * 1024 * 1024]) {
    test(`the reference reader verifies our writer's output (chunk size ${chunkSize})`, async () => {
      const input = layerTar();
      const out = path.join(work, `ours-${chunkSize}.esgz`);
      const r = await writeEstargz([input], out, { chunkSize });
      const res = (await verifier("verify", out, r.tocDigest)) as {
        tocOffset: number;
        files: Record<string, string>;
        chunks: number;
      };
      assert.equal(res.tocOffset, r.tocOffset);
      const regs = r.toc.entries.filter((e) => e.type === "reg");
      assert.deepEqual(Object.keys(res.files).sort(), regs.map((e) => e.name).sort());
      for (const e of regs) assert.equal(res.files[e.name], e.digest, e.name);
      assert.equal(
        res.chunks,
        r.toc.entries.filter((e) => (e.type === "reg" && (e.size ?? 0) > 0) || e.type === "chunk").length,
      );
    });
  }

  test("the reference writer and ours give the same TOC (but for compressed offsets); our reader reads its blob", async () => {
    const input = layerTar();
    const tarFile = path.join(work, "in.tar");
    await fsp.writeFile(tarFile, input);
    const goBlob = path.join(work, "go.esgz");
    const go = (await verifier("build", tarFile, "65536", goBlob)) as { tocDigest: Digest; diffId: Digest; toc: Toc };
    const ours = await writeEstargz([input], path.join(work, "ours.esgz"), { chunkSize: 65536 });
    assert.deepEqual(withoutOffsets(ours.toc), withoutOffsets(go.toc));
    const reader = await EstargzReader.open(await fileSource(goBlob), { tocDigest: go.tocDigest });
    assert.deepEqual(await reader.readFile("usr/bin/hard"), await reader.readFile("usr/bin/big"));
    assert.equal((await reader.readFile("etc/日本.conf")).toString(), "unicode");
    const { tar, result } = reader.fetchAll({ diffId: go.diffId, rangeBytes: 100_000 });
    for await (const _ of tar) void _;
    assert.equal((await result).diffId, go.diffId);
  });
});
