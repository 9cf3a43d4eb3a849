/**
 * Deterministic tar of an overlay upper directory: entries in sorted depth-first order, numeric ids with empty
 * names, mtimes clamped to the builder's epoch, overlay whiteouts (char 0/0) and opaque directories converted to OCI
 * whiteout entries. The same changes always give the same bytes, hence the same diffID.
 */
import { createReadStream, promises as fsp, readFileSync, type Stats } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { Readable } from "node:stream";
import tar from "tar-stream";

export const OPAQUE_WHITEOUT = ".wh..wh..opq";
const SMALL_FILE = 256 * 1024;
export const WHITEOUT_PREFIX = ".wh.";

export interface PackOptions {
  /** Seconds since the epoch; later mtimes are clamped to it. */
  epoch: number;
  /** Treat the directory as an overlay upper dir (convert whiteouts). Default true. */
  overlay?: boolean;
  /** Relative paths (no leading /) to leave out, e.g. mount stubs. */
  exclude?: ReadonlySet<string>;
  /** Target prefix inside the layer ("" = root). Entries are written as `<prefix>/<rel>`. */
  prefix?: string;
}

const byBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** Lists directories carrying the overlay opaque xattr (one getfattr process for the whole tree). */
export async function findOpaqueDirs(root: string): Promise<Set<string>> {
  const r = await execa("getfattr", ["-R", "-P", "--absolute-names", "-d", "-m", "^trusted\\.overlay\\.opaque$", root], {
    reject: false,
  });
  const out = new Set<string>();
  let current: string | undefined;
  for (const line of r.stdout.split("\n")) {
    // getfattr escapes backslashes and control characters in names as \ooo octal.
    if (line.startsWith("# file: ")) current = line.slice(8).replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    else if (current && /^trusted\.overlay\.opaque="y"/.test(line)) out.add(path.relative(root, current));
  }
  if (r.exitCode !== 0 && r.exitCode !== 1 && !r.stdout) {
    throw new Error(`getfattr failed on ${root}: ${r.stderr}`);
  }
  return out;
}

function isWhiteoutDevice(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/** Streams a deterministic tar of `root`. The returned stream errors if reading the tree fails. */
export function packDir(root: string, opts: PackOptions): Readable {
  const pack = tar.pack();
  const overlay = opts.overlay ?? true;
  const clamp = (st: Stats) => new Date(Math.min(Math.floor(st.mtimeMs / 1000), opts.epoch) * 1000);
  const seenInodes = new Map<string, string>();
  const prefix = (opts.prefix ?? "").replace(/^\/+|\/+$/g, "");
  const name = (rel: string) => (prefix ? (rel ? `${prefix}/${rel}` : prefix) : rel);

  const add = (header: Partial<tar.Header> & { name: string }, body?: Buffer) =>
    new Promise<void>((resolve, reject) => {
      pack.entry(header as tar.Header, body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });

  const addFile = (header: Partial<tar.Header> & { name: string }, file: string) =>
    new Promise<void>((resolve, reject) => {
      const entry = pack.entry(header as tar.Header, (err) => (err ? reject(err) : resolve()));
      entry.on("error", reject);
      const rs = createReadStream(file);
      rs.on("error", reject);
      rs.pipe(entry);
    });

  async function walk(dirRel: string, opaque: Set<string>): Promise<void> {
    const abs = path.join(root, dirRel);
    const names = (await fsp.readdir(abs)).sort(byBytes);
    if (overlay && dirRel !== "" && opaque.has(dirRel)) {
      await add({ name: name(`${dirRel}/${OPAQUE_WHITEOUT}`), type: "file", mode: 0o644, uid: 0, gid: 0, mtime: new Date(opts.epoch * 1000), uname: "", gname: "" });
    }
    for (const n of names) {
      const rel = dirRel ? `${dirRel}/${n}` : n;
      if (opts.exclude?.has(rel)) continue;
      const p = path.join(abs, n);
      const st = await fsp.lstat(p);
      // Like `tar --one-file-system`: a mount point inside the tree (e.g. a /proc left mounted) is not content.
      if (st.dev !== rootDev) {
        if (st.isDirectory()) await add({ uid: st.uid, gid: st.gid, mtime: clamp(st), mode: st.mode & 0o7777, uname: "", gname: "", name: name(rel), type: "directory" });
        continue;
      }
      const base = { uid: st.uid, gid: st.gid, mtime: clamp(st), mode: st.mode & 0o7777, uname: "", gname: "" };
      if (overlay && isWhiteoutDevice(st)) {
        await add({ ...base, name: name(dirRel ? `${dirRel}/${WHITEOUT_PREFIX}${n}` : `${WHITEOUT_PREFIX}${n}`), type: "file", mode: 0o644, uid: 0, gid: 0 });
        continue;
      }
      if (st.isDirectory()) {
        await add({ ...base, name: name(rel), type: "directory" });
        await walk(rel, opaque);
        continue;
      }
      if (st.nlink > 1 && !st.isDirectory()) {
        const id = `${st.dev}:${st.ino}`;
        const first = seenInodes.get(id);
        if (first !== undefined) {
          await add({ ...base, name: name(rel), type: "link", linkname: name(first), size: 0 });
          continue;
        }
        seenInodes.set(id, rel);
      }
      if (st.isFile()) {
        // Small files are read in one synchronous call: far cheaper than a stream per file.
        if (st.size <= SMALL_FILE) {
          const body = readFileSync(p);
          if (body.length !== st.size) throw new Error(`${p} changed size while it was being packed`);
          await add({ ...base, name: name(rel), type: "file", size: st.size }, body);
        } else await addFile({ ...base, name: name(rel), type: "file", size: st.size }, p);
      }
      else if (st.isSymbolicLink()) await add({ ...base, name: name(rel), type: "symlink", linkname: await fsp.readlink(p) });
      else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const major = Math.floor(st.rdev / 256) & 0xfff;
        const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
        await add({ ...base, name: name(rel), type: st.isCharacterDevice() ? "character-device" : "block-device", devmajor: major, devminor: minor });
      } else if (st.isFIFO()) await add({ ...base, name: name(rel), type: "fifo" });
      // sockets are not representable in a layer and are skipped, as Docker does.
    }
  }

  let rootDev = 0;
  (async () => {
    rootDev = (await fsp.lstat(root)).dev;
    const opaque = overlay ? await findOpaqueDirs(root) : new Set<string>();
    if (prefix) {
      // Parent directories of the prefix, so the layer is self-contained.
      const parts = prefix.split("/");
      for (let i = 1; i <= parts.length; i++) {
        await add({ name: parts.slice(0, i).join("/"), type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: new Date(opts.epoch * 1000), uname: "", gname: "" });
      }
    }
    await walk("", opaque);
    pack.finalize();
  })().catch((err: unknown) => pack.destroy(err instanceof Error ? err : new Error(String(err))));
  return Readable.from(pack);
}
