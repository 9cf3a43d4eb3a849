/**
 * The embedded default store: a directory (STRATA_HOME) laid out like an OCI image layout plus an index.
 *   blobs/sha256/<hex>        layer tar.gz, config and manifest JSON
 *   index/<kk>/<key>.json     cache index: key → image id
 *   images/<hex>.json         image records
 *   chains/<hash>.json        most recent build of each named chain (for `strata explain`)
 *   layers/<diffid hex>/      unpacked layers (overlay lowerdir form)
 *   locks/<key>.lock          build locks (owner pid inside); logs/<hex>.log  step logs, secrets redacted
 *   names/<hex>.json          image names (hex = sha256 of `repository:tag`) → image id
 *   tmp/                      work dirs; `<prefix>-<pid>-…` so stale ones can be reclaimed
 * Every write is temp + rename, so a build killed at any point leaves nothing a later build trusts.
 */
import { createReadStream, promises as fsp } from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import { DigestMismatchError, NotFoundError, StoreError } from "../errors.js";
import { digestHex, sha256Bytes, sha256File, type Digest } from "../util/digest.js";
import { exists, pidAlive, readJson, uniqueSuffix, writeFileAtomic } from "../util/fs.js";
import { defaultStoreRoot, StoreLayout } from "./layout.js";
import { checkNameRecord, nameRecordHex, parseNameRecord, resolveImageRef } from "./names.js";
import type {
  ChainRecord,
  ImageRecord,
  IndexEntry,
  LayerRecord,
  NameRecord,
  NamedStore,
  StoreMaintenance,
  StoreNamespace,
  StoredObject,
} from "./store.js";

export { defaultStoreRoot } from "./layout.js";

/** Directory and file extension of the namespaces named by hex. */
const STORED_DIRS: Record<Exclude<StoreNamespace, "index" | "blobs">, [(l: StoreLayout) => string, string]> = {
  images: [(l) => l.imagesDir, ".json"],
  logs: [(l) => l.logsDir, ".log"],
  chains: [(l) => l.chainsDir, ".json"],
};

/**
 * Lock files this process holds (any store instance), with the token written in each. Waiters in this process queue
 * in memory (`lockQueues`), so a lock file with our pid that is not held here was left by an earlier process that
 * had our pid, and is stale.
 */
const heldLocks = new Map<string, string>();
/** Per lock file, the tail of this process's in-memory queue of holders and waiters. */
const lockQueues = new Map<string, Promise<void>>();

export class LocalStore implements NamedStore, StoreMaintenance {
  readonly root: string;
  readonly layout: StoreLayout;
  private constructor(root: string) {
    this.root = root;
    this.layout = new StoreLayout(root);
  }

  /**
   * Opens (creating if needed) a store rooted at `root`. The root is made 0700: layer dirs hold files exactly as
   * images have them — setuid-root binaries included — so no other local user may walk into them. (Sandboxed steps
   * reach their files through clones mounted in their runc bundle, not through this path.)
   */
  static async open(root = defaultStoreRoot()): Promise<LocalStore> {
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    await fsp.chmod(root, 0o700);
    for (const d of new StoreLayout(root).storeDirs) await fsp.mkdir(d, { recursive: true });
    return new LocalStore(root);
  }

  private blobFile(d: Digest): string {
    return this.layout.blobFile(d);
  }

  async hasBlob(d: Digest): Promise<boolean> {
    return exists(this.blobFile(d));
  }

  async openBlob(d: Digest): Promise<Readable> {
    const f = this.blobFile(d);
    if (!(await exists(f))) throw new NotFoundError(`blob ${d} is not in the store at ${this.root}`);
    return createReadStream(f);
  }

  async readBlob(d: Digest): Promise<Buffer> {
    try {
      return await fsp.readFile(this.blobFile(d));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT")
        throw new NotFoundError(`blob ${d} is not in the store at ${this.root}`);
      throw e;
    }
  }

  async blobPath(d: Digest): Promise<string> {
    const f = this.blobFile(d);
    if (!(await exists(f))) throw new NotFoundError(`blob ${d} is not in the store at ${this.root}`);
    return f;
  }

  async putBlobBytes(data: Uint8Array): Promise<Digest> {
    const d = sha256Bytes(data);
    const f = this.blobFile(d);
    if (!(await exists(f))) await writeFileAtomic(f, data);
    return d;
  }

  async putBlobFile(tempPath: string, d: Digest, opts: { verified?: boolean } = {}): Promise<void> {
    if (!opts.verified) {
      const actual = await sha256File(tempPath);
      if (actual !== d) {
        await fsp.rm(tempPath, { force: true });
        throw new DigestMismatchError(d, actual, tempPath);
      }
    }
    const f = this.blobFile(d);
    if (await exists(f)) {
      await fsp.rm(tempPath, { force: true });
      return;
    }
    await fsp.chmod(tempPath, 0o644);
    await fsp.rename(tempPath, f);
  }

  private indexFile(key: string): string {
    if (!/^[0-9a-z-]+$/.test(key)) throw new StoreError(`invalid cache key "${key}"`);
    return this.layout.indexFile(key);
  }

  async getIndex(key: string): Promise<IndexEntry | undefined> {
    const entry = await this.readRecord<IndexEntry>(this.indexFile(key));
    // An entry is only trusted if its image record (and so every blob it names) exists.
    if (entry && !(await this.getImage(entry.imageId))) return undefined;
    return entry;
  }

  async putIndex(entry: IndexEntry): Promise<void> {
    await writeFileAtomic(this.indexFile(entry.key), JSON.stringify(entry));
  }

  private imageFile(id: Digest): string {
    return this.layout.imageFile(id);
  }

  async getImage(id: Digest): Promise<ImageRecord | undefined> {
    return this.readRecord<ImageRecord>(this.imageFile(id));
  }

  async putImage(record: ImageRecord): Promise<void> {
    for (const d of [record.configDigest, record.manifestDigest, ...record.layers.map((l) => l.digest)]) {
      if (!(await this.hasBlob(d))) throw new StoreError(`refusing to record image ${record.id}: blob ${d} is missing`);
    }
    await writeFileAtomic(this.imageFile(record.id), JSON.stringify(record));
  }

  async listImages(): Promise<ImageRecord[]> {
    const dir = this.layout.imagesDir;
    const out: ImageRecord[] = [];
    for (const f of await fsp.readdir(dir)) {
      if (!f.endsWith(".json")) continue;
      const r = await this.readRecord<ImageRecord>(path.join(dir, f));
      if (r) out.push(r);
    }
    return out;
  }

  async resolveImage(ref: string): Promise<ImageRecord> {
    return resolveImageRef(ref, this, (id) => this.#resolveId(id), this.root);
  }

  async #resolveId(ref: string): Promise<ImageRecord> {
    const hex = ref.replace(/^sha256:/, "").toLowerCase();
    if (!/^[0-9a-f]{6,64}$/.test(hex))
      throw new NotFoundError(
        `"${ref}" is not an image id (expected sha256:<hex> or a prefix of at least 6 hex digits)`,
      );
    if (hex.length === 64) {
      const r = await this.getImage(("sha256:" + hex) as Digest);
      if (!r)
        throw new NotFoundError(
          `image ${ref} is not in the store at ${this.root} (list images with \`strata images\`)`,
        );
      return r;
    }
    const matches = (await fsp.readdir(this.layout.imagesDir)).filter((f) => f.startsWith(hex) && f.endsWith(".json"));
    if (matches.length === 0)
      throw new NotFoundError(
        `no image id starts with ${hex} in the store at ${this.root} (list images with \`strata images\`)`,
      );
    if (matches.length > 1)
      throw new NotFoundError(`image id prefix ${hex} is ambiguous (${matches.length} images); give more digits`);
    return (await this.getImage(("sha256:" + matches[0]!.slice(0, 64)) as Digest))!;
  }

  private nameFile(name: string): string {
    return path.join(this.layout.namesDir, `${nameRecordHex(name)}.json`);
  }

  async getName(name: string): Promise<NameRecord | undefined> {
    const file = this.nameFile(name);
    const text = await fsp.readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return undefined;
      throw e;
    });
    if (text === undefined) return undefined;
    const rec = parseNameRecord(text, file);
    return rec.name === name ? rec : undefined;
  }

  async putName(record: NameRecord): Promise<void> {
    checkNameRecord(record, /^scope:[a-z0-9-]+:/.exec(record.name)?.[0]);
    if (!(await this.getImage(record.imageId)))
      throw new StoreError(
        `refusing to name image ${record.imageId} ${record.name}: it is not in the store at ${this.root}`,
      );
    await fsp.mkdir(this.layout.namesDir, { recursive: true });
    await writeFileAtomic(this.nameFile(record.name), JSON.stringify(record));
  }

  async deleteName(name: string): Promise<boolean> {
    if (!(await this.getName(name))) return false;
    await fsp.rm(this.nameFile(name), { force: true });
    return true;
  }

  async listNames(): Promise<NameRecord[]> {
    const dir = this.layout.namesDir;
    const out: NameRecord[] = [];
    for (const f of await fsp.readdir(dir).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{64}\.json$/.test(f)) continue;
      const text = await fsp.readFile(path.join(dir, f), "utf8").catch(() => undefined);
      if (text !== undefined) out.push(parseNameRecord(text, path.join(dir, f)));
    }
    return out;
  }

  private chainFile(name: string): string {
    return path.join(this.layout.chainsDir, `${digestHex(sha256Bytes(name))}.json`);
  }

  async getChain(name: string): Promise<ChainRecord | undefined> {
    return this.readRecord<ChainRecord>(this.chainFile(name));
  }

  async putChain(chain: ChainRecord): Promise<void> {
    await writeFileAtomic(this.chainFile(chain.name), JSON.stringify(chain));
  }

  async layerDir(layer: LayerRecord): Promise<string> {
    const dir = this.layout.layerDir(layer.diffId);
    if (await exists(dir)) return dir;
    const tmp = await this.tempDir("unpack");
    const root = path.join(tmp, "root");
    await fsp.mkdir(root);
    try {
      // Compression is decided by content (gzip magic), not by the media type a manifest claims.
      const blob = await this.blobPath(layer.digest);
      const fh = await fsp.open(blob, "r");
      const magic = Buffer.alloc(2);
      await fh.read(magic, 0, 2, 0).finally(() => fh.close());
      const gzip = magic[0] === 0x1f && magic[1] === 0x8b;
      const { extractLayerFileOffThread } = await import("../layer/extract-pool.js");
      const diffId = await extractLayerFileOffThread(blob, root, { gzip });
      // Unpacked layers are shared by diffID: never file content under a diffID it does not have.
      if (diffId !== layer.diffId)
        throw new DigestMismatchError(layer.diffId, diffId, `uncompressed content of layer ${layer.digest}`);
      return await this.adoptLayerDir(layer.diffId, root);
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }

  async adoptLayerDir(diffId: Digest, dir: string): Promise<string> {
    const target = this.layout.layerDir(diffId);
    try {
      await fsp.rename(dir, target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // Someone else adopted the same layer first: theirs is identical, ours goes.
      if (code !== "ENOTEMPTY" && code !== "EEXIST")
        throw new StoreError(`could not move layer ${diffId} into ${target}`, { cause: e });
      await fsp.rm(dir, { recursive: true, force: true });
    }
    return target;
  }

  async tempDir(prefix: string): Promise<string> {
    const dir = path.join(this.layout.tmpDir, `${prefix}-${uniqueSuffix()}`);
    await fsp.mkdir(dir, { recursive: true });
    return dir;
  }

  async lock(key: string): Promise<() => Promise<void>> {
    const dir = this.layout.locksDir;
    await fsp.mkdir(dir, { recursive: true });
    const file = path.join(dir, `${key}.lock`);
    // In-process waiters queue in memory: only the head of the queue contends for the file, with other processes.
    const before = lockQueues.get(file) ?? Promise.resolve();
    let leave!: () => void;
    const turn = new Promise<void>((resolve) => {
      leave = resolve;
    });
    const tail = before.then(() => turn);
    lockQueues.set(file, tail);
    const done = () => {
      leave();
      if (lockQueues.get(file) === tail) lockQueues.delete(file);
    };
    await before;
    let token: string;
    try {
      token = await acquireLockFile(file);
    } catch (e) {
      done();
      throw e;
    }
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      try {
        // Nobody breaks a lock whose owner is alive and holds it, so the file read here is still ours.
        if ((await fsp.readFile(file, "utf8").catch(() => "")) === token) await fsp.rm(file, { force: true });
      } finally {
        if (heldLocks.get(file) === token) heldLocks.delete(file);
        done();
      }
    };
  }

  private logFile(id: Digest): string {
    return path.join(this.layout.logsDir, `${digestHex(id)}.log`);
  }

  async putLog(id: Digest, text: string): Promise<void> {
    await writeFileAtomic(this.logFile(id), text);
  }

  async getLog(id: Digest): Promise<string | undefined> {
    return fsp.readFile(this.logFile(id), "utf8").catch(() => undefined);
  }

  async recover(beforeReclaim?: () => Promise<void>): Promise<void> {
    // Drafts and broken locks a dead process left beside the lock files (see acquireLockFile).
    for (const name of await fsp.readdir(this.layout.locksDir).catch(() => [] as string[])) {
      const m = /\.lock\.(?:stale-)?(\d+)-[0-9a-z]+-[0-9a-f]+(?:\.new)?$/.exec(name);
      if (m && !pidAlive(Number(m[1]))) await fsp.rm(path.join(this.layout.locksDir, name), { force: true });
    }
    const tmp = this.layout.tmpDir;
    const stale = (await fsp.readdir(tmp)).filter((name) => {
      const m = /^[a-z]+-(\d+)-/.exec(name);
      return m !== null && !pidAlive(Number(m[1]));
    });
    if (stale.length === 0) return;
    await beforeReclaim?.();
    const { unmountUnder } = await import("../layer/overlay.js");
    for (const name of stale) {
      const dir = path.join(tmp, name);
      // Unmount anything an interrupted step left mounted under this dir before deleting it.
      await unmountUnder(dir);
      await fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /** The file of a stored object (see StoredObject for the names). */
  private storedFile(ns: StoreNamespace, name: string): string {
    switch (ns) {
      case "index":
        return this.indexFile(name);
      case "blobs":
        if (!/^sha256:[0-9a-f]{64}$/.test(name)) throw new StoreError(`invalid blob digest "${name}"`);
        return this.blobFile(name as Digest);
      default: {
        if (!/^[0-9a-f]{64}$/.test(name)) throw new StoreError(`invalid ${ns} name "${name}"`);
        const [dir, ext] = STORED_DIRS[ns];
        return path.join(dir(this.layout), `${name}${ext}`);
      }
    }
  }

  async listStored(ns: StoreNamespace): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    const add = async (file: string, name: string) => {
      const st = await fsp.lstat(file).catch(() => undefined);
      if (st?.isFile()) out.push({ name, modifiedMs: st.mtimeMs, size: st.size });
    };
    if (ns === "index") {
      const top = this.layout.indexDir;
      for (const sub of await fsp.readdir(top).catch(() => [] as string[])) {
        for (const f of await fsp.readdir(path.join(top, sub)).catch(() => [] as string[])) {
          const m = /^([0-9a-z-]+)\.json$/.exec(f);
          if (m) await add(path.join(top, sub, f), m[1]!);
        }
      }
      return out;
    }
    const [dir, ext] = ns === "blobs" ? [(l: StoreLayout) => l.blobsDir, ""] : STORED_DIRS[ns];
    const abs = dir(this.layout);
    for (const f of await fsp.readdir(abs).catch(() => [] as string[])) {
      if (!f.endsWith(ext)) continue;
      const hex = f.slice(0, f.length - ext.length);
      if (!/^[0-9a-f]{64}$/.test(hex)) continue;
      await add(path.join(abs, f), ns === "blobs" ? `sha256:${hex}` : hex);
    }
    return out;
  }

  async deleteStored(ns: StoreNamespace, name: string, opts: { ifModifiedBefore?: number } = {}): Promise<boolean> {
    const file = this.storedFile(ns, name);
    const st = await fsp.lstat(file).catch(() => undefined);
    if (!st) return false;
    if (opts.ifModifiedBefore !== undefined && st.mtimeMs >= opts.ifModifiedBefore) return false;
    // Readers holding the file open keep reading the unlinked inode.
    await fsp.rm(file, { force: true });
    return true;
  }

  private async readRecord<T>(file: string): Promise<T | undefined> {
    try {
      return await readJson<T>(file);
    } catch (e) {
      if (e instanceof SyntaxError)
        throw new StoreError(`corrupt record ${file}: ${e.message} (delete it to let Strata rebuild it)`, { cause: e });
      throw e;
    }
  }
}

/**
 * Takes the lock file `file` for this process, waiting while a live process holds it. The file is created complete
 * (written under another name, then hard-linked into place, which fails if the name exists), so a reader never sees
 * it half-written. Returns the token written in it: `<pid> <unique>`.
 */
async function acquireLockFile(file: string): Promise<string> {
  for (;;) {
    const token = `${process.pid} ${uniqueSuffix()}`;
    const draft = `${file}.${uniqueSuffix()}.new`;
    await fsp.writeFile(draft, token);
    try {
      await fsp.link(draft, file);
      heldLocks.set(file, token);
      return token;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    } finally {
      await fsp.rm(draft, { force: true });
    }
    const held = await fsp.readFile(file, "utf8").catch(() => undefined);
    if (held === undefined) continue; // released between our attempt and the read
    const owner = Number(held.split(" ")[0]);
    // A lock file without a valid pid comes from an older Strata that wrote the file after creating it, or from a
    // damaged disk: give a live writer a few seconds, then treat it as dead.
    const ownerless = !Number.isInteger(owner) || owner <= 0;
    const age = ownerless ? Date.now() - ((await fsp.stat(file).catch(() => undefined))?.mtimeMs ?? Date.now()) : 0;
    const dead = ownerless ? age > 5000 : owner === process.pid ? heldLocks.get(file) !== held : !pidAlive(owner);
    if (dead) {
      // Break a dead process's lock. If two waiters in different processes race here both may build; that is safe
      // (every write is an atomic rename of identical content), only wasteful.
      const stale = `${file}.stale-${uniqueSuffix()}`;
      if (
        await fsp.rename(file, stale).then(
          () => true,
          () => false,
        )
      )
        await fsp.rm(stale, { force: true });
      continue;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
