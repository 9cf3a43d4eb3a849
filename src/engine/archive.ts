/**
 * `ADD` of a local archive: tar, or tar compressed with gzip, bzip2 or xz, recognised by content (never by name), is
 * extracted into the destination directory as `tar -x` would, merging with what is there. Entry names are confined
 * to the destination (absolute names are relative to it, `..` may not climb out, symlinks met on the way resolve
 * inside it); owners and modes come from the archive unless `--chown` gives an owner, mtimes from the archive (as
 * BuildKit's unpack keeps them; directories' are returned for the copy to apply when it finishes).
 */
import { spawn } from "node:child_process";
import {
  chmodSync,
  closeSync,
  createReadStream,
  createWriteStream,
  lchownSync,
  linkSync,
  mkdirSync,
  openSync,
  readSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import path from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import tar from "tar-stream";
import { StrataError } from "../errors.js";
import { mtimeUs, setTimeUs } from "../layer/copy-times.js";
import { secureJoin } from "../layer/secure-join.js";
import { decodeHeader } from "../layer/tar-decode.js";
import type { Owner } from "./chown.js";
import { lstatOrUndefined } from "../util/fs.js";

export type ArchiveKind = "tar" | "gzip" | "bzip2" | "xz";

export class ArchiveError extends StrataError {
  override readonly code = "ARCHIVE";
  override readonly fault = "user";
  constructor(message: string) {
    super(message);
    this.name = "ArchiveError";
  }
}

function head(file: string, n: number): Buffer {
  const fd = openSync(file, "r");
  try {
    const buf = Buffer.alloc(n);
    const got = readSync(fd, buf, 0, n, 0);
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** Whether 512 bytes are a valid tar header (by the one decoder's rules: checksum, magic, numeric fields). */
function isTarHeader(b: Buffer): boolean {
  if (b.length < 512) return false;
  try {
    return decodeHeader(b.subarray(0, 512), { offset: 0 }) !== null;
  } catch {
    return false;
  }
}

function decompressed(file: string, kind: ArchiveKind): Readable {
  const raw = createReadStream(file);
  if (kind === "tar") return raw;
  if (kind === "gzip") return raw.pipe(createGunzip());
  const child = spawn(kind === "bzip2" ? "bzip2" : "xz", ["-dc"], { stdio: ["pipe", "pipe", "ignore"] });
  raw.pipe(child.stdin);
  child.stdin.on("error", () => undefined);
  const out = new PassThrough();
  child.stdout.pipe(out);
  child.on("error", (e) =>
    out.destroy(new ArchiveError(`cannot run ${kind === "bzip2" ? "bzip2" : "xz"} to read the archive: ${e.message}`)),
  );
  return out;
}

async function firstBytes(s: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  try {
    for await (const c of s) {
      chunks.push(c as Buffer);
      got += (c as Buffer).length;
      if (got >= n) break;
    }
  } catch {
    // not decompressible: not an archive
  }
  s.destroy();
  return Buffer.concat(chunks).subarray(0, n);
}

/** What archive `file` is, by content; undefined when it is not one (then ADD copies it as a file). */
export async function archiveKind(file: string): Promise<ArchiveKind | undefined> {
  const h = head(file, 512);
  let kind: ArchiveKind;
  if (h[0] === 0x1f && h[1] === 0x8b) kind = "gzip";
  else if (h.subarray(0, 3).toString("latin1") === "BZh") kind = "bzip2";
  else if (h.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) kind = "xz";
  else return isTarHeader(h) ? "tar" : undefined;
  return isTarHeader(await firstBytes(decompressed(file, kind), 512)) ? kind : undefined;
}

function cleanName(name: string): string | undefined {
  const out: string[] = [];
  for (const seg of name.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (!out.length) return undefined;
      out.pop();
    } else out.push(seg);
  }
  return out.join("/");
}

/** A directory an archive holds: its path below the destination (`/`-separated) and its mtime (ms). */
export interface ExtractedDir {
  rel: string;
  mtimeMs: number;
}

/**
 * Extracts `file` (of `kind`) into the directory `destDir` (a host path inside the image's root). Files and symlinks
 * get the archive's mtimes; the archive's directories are returned with theirs (entries added later would change them).
 */
export async function extractArchive(
  file: string,
  kind: ArchiveKind,
  destDir: string,
  owner: Owner | undefined,
): Promise<ExtractedDir[]> {
  mkdirSync(destDir, { recursive: true });
  const ex = tar.extract();
  const source = decompressed(file, kind);
  const dirModes: [string, number][] = [];
  const dirTimes = new Map<string, number>();
  const place = (rel: string): string => {
    const parent = path.posix.dirname(rel);
    const dir = parent === "." ? destDir : secureJoin(destDir, parent);
    mkdirSync(dir, { recursive: true });
    return path.join(dir, path.posix.basename(rel));
  };
  await new Promise<void>((resolve, reject) => {
    ex.on("entry", (h, stream, next) => {
      const fail = (e: unknown) => {
        stream.resume();
        reject(e instanceof Error ? e : new ArchiveError(String(e)));
      };
      try {
        const rel = cleanName(h.name);
        if (rel === undefined)
          throw new ArchiveError(
            `archive ${path.basename(file)}: entry ${JSON.stringify(h.name)} climbs out of the destination`,
          );
        if (rel === "") {
          stream.resume();
          next();
          return;
        }
        const target = place(rel);
        const uid = owner?.uid ?? h.uid ?? 0;
        const gid = owner?.gid ?? h.gid ?? 0;
        const mode = (h.mode ?? 0o644) & 0o7777;
        const us = mtimeUs(h.mtime?.getTime() ?? 0);
        const existing = lstatOrUndefined(target);
        if (existing && !(existing.isDirectory() && h.type === "directory"))
          rmSync(target, { recursive: true, force: true });
        switch (h.type) {
          case "directory":
            if (!existing?.isDirectory()) mkdirSync(target);
            lchownSync(target, uid, gid);
            dirModes.push([target, mode]);
            dirTimes.set(path.relative(destDir, target).split(path.sep).join("/"), us / 1000);
            stream.resume();
            stream.on("end", next);
            return;
          case "symlink":
            symlinkSync(h.linkname ?? "", target);
            lchownSync(target, uid, gid);
            setTimeUs(target, us);
            stream.resume();
            stream.on("end", next);
            return;
          case "link": {
            const linkRel = cleanName(h.linkname ?? "");
            if (!linkRel)
              throw new ArchiveError(
                `archive ${path.basename(file)}: hard link ${JSON.stringify(h.name)} points outside the destination`,
              );
            linkSync(secureJoin(destDir, linkRel), target);
            stream.resume();
            stream.on("end", next);
            return;
          }
          case "file":
          case "contiguous-file": {
            const out = createWriteStream(target, { mode });
            stream.pipe(out);
            out.on("error", reject);
            out.on("finish", () => {
              try {
                lchownSync(target, uid, gid);
                chmodSync(target, mode);
                setTimeUs(target, us);
                next();
              } catch (e) {
                reject(e);
              }
            });
            return;
          }
          default:
            // Devices, FIFOs and extended headers of unknown kinds are skipped.
            stream.resume();
            stream.on("end", next);
        }
      } catch (e) {
        fail(e);
      }
    });
    ex.on("finish", resolve);
    ex.on("error", (e) => reject(new ArchiveError(`archive ${path.basename(file)}: ${e.message}`)));
    source.on("error", (e) => reject(new ArchiveError(`archive ${path.basename(file)}: ${e.message}`)));
    source.pipe(ex);
  });
  // Directory modes last, so a read-only directory does not stop its own entries being written.
  for (const [d, m] of dirModes.reverse()) chmodSync(d, m);
  return [...dirTimes].map(([rel, mtimeMs]) => ({ rel, mtimeMs }));
}
