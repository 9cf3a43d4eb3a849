/**
 * A store that keeps blobs, image records, the index, chains, logs and locks in memory: the engine's view of a store
 * (`BuildStore`) with nothing behind it but Maps. Layer dirs and temp dirs are real directories under `root` (the
 * sandbox and overlay need files), adopted by rename. For engine tests that must see exactly what the engine reads
 * and writes (every call is counted in `calls`), and as the smallest reference of the store contract.
 */
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { NotFoundError, StoreError } from "../../src/errors.js";
import type { StoreLayout } from "../../src/store/layout.js";
import { StoreLayout as Layout } from "../../src/store/layout.js";
import type { BuildStore, ChainRecord, ImageRecord, IndexEntry, LayerRecord } from "../../src/store/store.js";
import type { Digest } from "../../src/util/digest.js";

const digestOf = (data: Uint8Array): Digest => `sha256:${createHash("sha256").update(data).digest("hex")}` as Digest;

export class MemoryStore implements BuildStore {
  readonly layout: StoreLayout;
  readonly blobs = new Map<Digest, Buffer>();
  readonly index = new Map<string, IndexEntry>();
  readonly images = new Map<Digest, ImageRecord>();
  readonly chains = new Map<string, ChainRecord>();
  readonly logs = new Map<Digest, string>();
  readonly layers = new Map<Digest, string>();
  /** How often each method was called. */
  readonly calls = new Map<string, number>();
  readonly #locks = new Map<string, Promise<void>>();
  #temp = 0;

  constructor(readonly root: string) {
    this.layout = new Layout(root);
  }

  #count(name: string): void {
    this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
  }

  async hasBlob(digest: Digest): Promise<boolean> {
    this.#count("hasBlob");
    return this.blobs.has(digest);
  }
  async readBlob(digest: Digest): Promise<Buffer> {
    this.#count("readBlob");
    const b = this.blobs.get(digest);
    if (!b) throw new NotFoundError(`blob ${digest} is not in the memory store`);
    return b;
  }
  async openBlob(digest: Digest): Promise<Readable> {
    return Readable.from([await this.readBlob(digest)]);
  }
  async blobPath(digest: Digest): Promise<string> {
    const file = path.join(await this.tempDir("blob"), "blob");
    await fsp.writeFile(file, await this.readBlob(digest));
    return file;
  }
  async putBlobBytes(data: Uint8Array): Promise<Digest> {
    this.#count("putBlobBytes");
    const d = digestOf(data);
    this.blobs.set(d, Buffer.from(data));
    return d;
  }
  async putBlobFile(tempPath: string, digest: Digest, opts: { verified?: boolean } = {}): Promise<void> {
    this.#count("putBlobFile");
    const data = await fsp.readFile(tempPath);
    if (!opts.verified && digestOf(data) !== digest)
      throw new StoreError(`blob ${tempPath} does not have digest ${digest}`);
    this.blobs.set(digest, data);
    await fsp.rm(tempPath, { force: true });
  }

  async getIndex(key: string): Promise<IndexEntry | undefined> {
    this.#count("getIndex");
    const e = this.index.get(key);
    return e && this.images.has(e.imageId) ? e : undefined;
  }
  async putIndex(entry: IndexEntry): Promise<void> {
    this.#count("putIndex");
    this.index.set(entry.key, structuredClone(entry));
  }
  async getImage(id: Digest): Promise<ImageRecord | undefined> {
    this.#count("getImage");
    const r = this.images.get(id);
    return r && structuredClone(r);
  }
  async putImage(record: ImageRecord): Promise<void> {
    this.#count("putImage");
    for (const l of record.layers)
      if (!this.blobs.has(l.digest)) throw new StoreError(`image ${record.id} names ${l.digest}, not stored`);
    this.images.set(record.id, structuredClone(record));
  }
  async listImages(): Promise<ImageRecord[]> {
    return [...this.images.values()].map((r) => structuredClone(r));
  }
  async resolveImage(ref: string): Promise<ImageRecord> {
    const hex = ref.replace(/^sha256:/, "");
    const matches = [...this.images.keys()].filter((id) => id.slice(7).startsWith(hex));
    if (matches.length !== 1) throw new NotFoundError(`image ${ref}: ${matches.length} matches in the memory store`);
    return structuredClone(this.images.get(matches[0]!)!);
  }

  async getChain(name: string): Promise<ChainRecord | undefined> {
    return this.chains.get(name);
  }
  async putChain(chain: ChainRecord): Promise<void> {
    this.chains.set(chain.name, structuredClone(chain));
  }
  async putLog(imageId: Digest, text: string): Promise<void> {
    this.logs.set(imageId, text);
  }
  async getLog(imageId: Digest): Promise<string | undefined> {
    return this.logs.get(imageId);
  }

  async layerDir(layer: LayerRecord): Promise<string> {
    this.#count("layerDir");
    const dir = this.layers.get(layer.diffId);
    if (!dir) throw new NotFoundError(`layer ${layer.diffId} was never adopted by this memory store`);
    return dir;
  }
  async adoptLayerDir(diffId: Digest, dir: string): Promise<string> {
    this.#count("adoptLayerDir");
    const have = this.layers.get(diffId);
    if (have) {
      await fsp.rm(dir, { recursive: true, force: true });
      return have;
    }
    const target = path.join(this.root, "layers", diffId.slice(7));
    await fsp.mkdir(path.dirname(target), { recursive: true });
    await fsp.rename(dir, target);
    this.layers.set(diffId, target);
    return target;
  }

  async tempDir(prefix: string): Promise<string> {
    const dir = path.join(this.root, "tmp", `${prefix}-${process.pid}-${this.#temp++}`);
    await fsp.mkdir(dir, { recursive: true });
    return dir;
  }
  async recover(): Promise<void> {}

  async lock(key: string): Promise<() => Promise<void>> {
    this.#count("lock");
    for (;;) {
      const held = this.#locks.get(key);
      if (!held) break;
      await held;
    }
    let release!: () => void;
    this.#locks.set(key, new Promise<void>((r) => (release = r)));
    return async () => {
      this.#locks.delete(key);
      release();
    };
  }
}
