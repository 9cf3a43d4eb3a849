/**
 * A store that hands every call to another (`inner`): the base of wrappers that change a few calls and keep the rest
 * (a tenant's scoped view, the Redis step locks of workers). Subclasses override what they change; maintenance
 * (`listStored`, `deleteStored`) is not forwarded, so a wrapper that supports it says so itself.
 */
import type { Readable } from "node:stream";
import type { Digest } from "../util/digest.js";
import type { StoreLayout } from "./layout.js";
import type { ChainRecord, ImageRecord, IndexEntry, LayerRecord, NamedStore, NameRecord } from "./store.js";

export class ForwardingStore<L extends StoreLayout = StoreLayout> implements NamedStore {
  readonly root: string;
  pin?: (layers: Iterable<LayerRecord>) => () => void;

  constructor(
    readonly inner: NamedStore,
    readonly layout: L,
  ) {
    this.root = inner.root;
    if (inner.pin) this.pin = (layers) => inner.pin!(layers);
  }

  hasBlob(d: Digest): Promise<boolean> {
    return this.inner.hasBlob(d);
  }
  openBlob(d: Digest): Promise<Readable> {
    return this.inner.openBlob(d);
  }
  readBlob(d: Digest): Promise<Buffer> {
    return this.inner.readBlob(d);
  }
  blobPath(d: Digest): Promise<string> {
    return this.inner.blobPath(d);
  }
  putBlobBytes(data: Uint8Array): Promise<Digest> {
    return this.inner.putBlobBytes(data);
  }
  putBlobFile(tempPath: string, d: Digest, opts?: { verified?: boolean }): Promise<void> {
    return this.inner.putBlobFile(tempPath, d, opts);
  }
  getIndex(key: string): Promise<IndexEntry | undefined> {
    return this.inner.getIndex(key);
  }
  putIndex(entry: IndexEntry): Promise<void> {
    return this.inner.putIndex(entry);
  }
  getImage(id: Digest): Promise<ImageRecord | undefined> {
    return this.inner.getImage(id);
  }
  putImage(record: ImageRecord): Promise<void> {
    return this.inner.putImage(record);
  }
  listImages(): Promise<ImageRecord[]> {
    return this.inner.listImages();
  }
  resolveImage(ref: string): Promise<ImageRecord> {
    return this.inner.resolveImage(ref);
  }
  getName(name: string): Promise<NameRecord | undefined> {
    return this.inner.getName(name);
  }
  putName(record: NameRecord): Promise<void> {
    return this.inner.putName(record);
  }
  deleteName(name: string): Promise<boolean> {
    return this.inner.deleteName(name);
  }
  listNames(): Promise<NameRecord[]> {
    return this.inner.listNames();
  }
  getChain(name: string): Promise<ChainRecord | undefined> {
    return this.inner.getChain(name);
  }
  putChain(chain: ChainRecord): Promise<void> {
    return this.inner.putChain(chain);
  }
  putLog(imageId: Digest, text: string): Promise<void> {
    return this.inner.putLog(imageId, text);
  }
  getLog(imageId: Digest): Promise<string | undefined> {
    return this.inner.getLog(imageId);
  }
  layerDir(layer: LayerRecord): Promise<string> {
    return this.inner.layerDir(layer);
  }
  adoptLayerDir(diffId: Digest, dir: string): Promise<string> {
    return this.inner.adoptLayerDir(diffId, dir);
  }
  tempDir(prefix: string): Promise<string> {
    return this.inner.tempDir(prefix);
  }
  recover(beforeReclaim?: () => Promise<void>): Promise<void> {
    return this.inner.recover(beforeReclaim);
  }
  lock(key: string): Promise<() => Promise<void>> {
    return this.inner.lock(key);
  }
}
