/**
 * Deterministic tar of an overlay upper directory: entries in sorted depth-first order, numeric ids with empty
 * names, mtimes in whole seconds — clamped to an epoch (the step's SOURCE_DATE_EPOCH, else the builder's), or
 * (`keepMtimes`, a copy's layer without a SOURCE_DATE_EPOCH, whose copier set every time) as the files have them —
 * overlay whiteouts (char 0/0) and opaque directories converted to OCI whiteout entries. The same changes (with the
 * same mtimes) always give the same bytes, hence the same diffID.
 */
import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { encodeHeader, endOfArchive, OPAQUE_WHITEOUT, padding, WHITEOUT_PREFIX } from "./tar-header.js";

export { OPAQUE_WHITEOUT, WHITEOUT_PREFIX };
const SMALL_FILE = 256 * 1024;

export interface PackOptions {
  /** Seconds since the epoch; later mtimes are clamped to it (unless `keepMtimes`), and whiteouts get it. */
  epoch: number;
  /**
   * Write every entry's own mtime (whole seconds), unclamped: for a layer a copy wrote, whose copier gave each entry a
   * deterministic time (its source's, or the epoch; `src/layer/copy-times.ts`). Default false: a RUN's or base's files
   * carry the time they were made, so they are clamped.
   */
  keepMtimes?: boolean;
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
  const { execa } = await import("execa"); // not at load: the extractor imports this module's neighbours on hot paths
  const r = await execa(
    "getfattr",
    ["-R", "-P", "--absolute-names", "-d", "-m", "^trusted\\.overlay\\.opaque$", root],
    {
      reject: false,
    },
  );
  const out = new Set<string>();
  let current: string | undefined;
  for (const line of r.stdout.split("\n")) {
    // getfattr escapes backslashes and control characters in names as \ooo octal.
    if (line.startsWith("# file: "))
      current = line.slice(8).replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
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
  return Readable.from(packChunks(root, opts), { objectMode: false, highWaterMark: BATCH });
}

const BATCH = 1 << 20;

/**
 * The archive as a sequence of ~1 MiB buffers. The tree is read with synchronous calls (cheap per call, and a
 * layer commit has nothing else to do meanwhile); files larger than SMALL_FILE are streamed.
 */
async function* packChunks(root: string, opts: PackOptions): AsyncGenerator<Buffer> {
  const overlay = opts.overlay ?? true;
  const clamp = opts.keepMtimes
    ? (st: Stats) => Math.floor(st.mtimeMs / 1000)
    : (st: Stats) => Math.min(Math.floor(st.mtimeMs / 1000), opts.epoch);
  const seenInodes = new Map<string, string>();
  const prefix = (opts.prefix ?? "").replace(/^\/+|\/+$/g, "");
  const name = (rel: string) => (prefix ? (rel ? `${prefix}/${rel}` : prefix) : rel);
  const rootDev = lstatSync(root).dev;
  const opaque = overlay ? await findOpaqueDirs(root) : new Set<string>();
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const push = (b: Buffer) => {
    pending.push(b);
    pendingBytes += b.length;
  };
  const take = (): Buffer => {
    const out = Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    return out;
  };
  const meta = (st: Stats) => ({ uid: st.uid, gid: st.gid, mtime: clamp(st), mode: st.mode & 0o7777 });
  const marker = (n: string) =>
    encodeHeader({ name: n, type: "file", mode: 0o644, uid: 0, gid: 0, size: 0, mtime: opts.epoch });

  if (prefix) {
    // Parent directories of the prefix, so the layer is self-contained.
    const parts = prefix.split("/");
    for (let i = 1; i <= parts.length; i++) {
      push(
        encodeHeader({
          name: parts.slice(0, i).join("/"),
          type: "directory",
          mode: 0o755,
          uid: 0,
          gid: 0,
          size: 0,
          mtime: opts.epoch,
        }),
      );
    }
  }

  // Depth-first, children sorted bytewise: a directory's subtree directly follows its header.
  async function* walk(dirRel: string): AsyncGenerator<Buffer> {
    const abs = dirRel ? path.join(root, dirRel) : root;
    if (overlay && dirRel !== "" && opaque.has(dirRel)) push(marker(name(`${dirRel}/${OPAQUE_WHITEOUT}`)));
    for (const n of readdirSync(abs).sort(byBytes)) {
      const rel = dirRel ? `${dirRel}/${n}` : n;
      if (opts.exclude?.has(rel)) continue;
      const p = path.join(abs, n);
      const st = lstatSync(p);
      if (overlay && isWhiteoutDevice(st)) {
        push(marker(name(dirRel ? `${dirRel}/${WHITEOUT_PREFIX}${n}` : `${WHITEOUT_PREFIX}${n}`)));
        continue;
      }
      if (st.isDirectory()) {
        push(encodeHeader({ ...meta(st), name: name(rel), type: "directory", size: 0 }));
        // Like `tar --one-file-system`: a mount point inside the tree (e.g. a /proc left mounted) is not content.
        if (st.dev === rootDev) yield* walk(rel);
        continue;
      }
      if (st.dev !== rootDev) continue;
      if (st.nlink > 1) {
        const id = `${st.dev}:${st.ino}`;
        const first = seenInodes.get(id);
        if (first !== undefined) {
          push(encodeHeader({ ...meta(st), name: name(rel), type: "link", linkname: name(first), size: 0 }));
          continue;
        }
        seenInodes.set(id, rel);
      }
      if (st.isFile()) {
        push(encodeHeader({ ...meta(st), name: name(rel), type: "file", size: st.size }));
        if (st.size <= SMALL_FILE) {
          const body = readFileSync(p);
          if (body.length !== st.size) throw new Error(`${p} changed size while it was being packed`);
          push(body);
        } else {
          let read = 0;
          for await (const chunk of createReadStream(p, { highWaterMark: BATCH })) {
            const b = chunk as Buffer;
            read += b.length;
            if (read > st.size) throw new Error(`${p} grew while it was being packed`);
            push(b);
            if (pendingBytes >= BATCH) yield take();
          }
          if (read !== st.size) throw new Error(`${p} changed size while it was being packed`);
        }
        push(padding(st.size));
      } else if (st.isSymbolicLink()) {
        push(encodeHeader({ ...meta(st), name: name(rel), type: "symlink", linkname: readlinkSync(p), size: 0 }));
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const devmajor = Math.floor(st.rdev / 256) & 0xfff;
        const devminor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
        push(
          encodeHeader({
            ...meta(st),
            name: name(rel),
            type: st.isCharacterDevice() ? "character-device" : "block-device",
            size: 0,
            devmajor,
            devminor,
          }),
        );
      } else if (st.isFIFO()) {
        push(encodeHeader({ ...meta(st), name: name(rel), type: "fifo", size: 0 }));
      }
      // Sockets are not representable in a layer and are skipped, as Docker does.
      if (pendingBytes >= BATCH) yield take();
    }
  }
  yield* walk("");
  push(endOfArchive());
  yield take();
}
