/**
 * A scoped view of a store: one namespace (a build service's tenant) with its own cache index, chain names, build
 * locks, RUN cache mounts, `COPY --link` layer records and URL downloads, over content that stays shared and
 * deduplicated underneath (blobs, unpacked layers, image records, the content pool). The engine takes the view as
 * it takes any store (it only names its in-process single flights with `scope`): what one scope writes to the index,
 * another never reads, so a step key (128-bit xxhash, not collision resistant) never meets another scope's entries.
 *
 * On disk (and in S3) the scope is a suffix or a folder: index entry `<key>-<scope>`, chain `scope:<scope>:<name>`,
 * lock `<key>-<scope>` (`cache-mount-<scope>-<hex>` for cache mounts, which stay machine-local), cache mount
 * `cache-mounts/scoped/<scope>/<hex>/`, link layer `link-layers/<key>-<scope>.json`, image name `scope:<scope>:<name>`
 * (resolved by `resolveImage` in the scope only; ids and id prefixes as the store resolves them), downloads
 * `downloads/scoped/<scope>/`. The unscoped store keeps the plain names, so a single-tenant service and local builds
 * keep their existing caches.
 */
import path from "node:path";
import { StoreError } from "../errors.js";
import { StoreLayout } from "./layout.js";
import { ForwardingStore } from "./forwarding.js";
import { resolveImageRef } from "./names.js";
import type { ChainRecord, ImageRecord, IndexEntry, NamedStore, NameRecord } from "./store.js";

/** A scope name: lowercase letters, digits and inner `-`, 1–63 characters (it becomes part of keys and paths). */
export const SCOPE_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** The layout of a scoped view: the store's own, with the scope's cache mounts, link layers and downloads. */
export class ScopedLayout extends StoreLayout {
  constructor(
    root: string,
    readonly scope: string,
  ) {
    super(root);
  }
  override cacheMountDir(idHash: string): string {
    return path.join(this.root, "cache-mounts", "scoped", this.scope, idHash);
  }
  override linkLayerFile(key: string): string {
    return path.join(this.linkLayersDir, `${key}-${this.scope}.json`);
  }
  override get downloadsDir(): string {
    return path.join(this.root, "downloads", "scoped", this.scope);
  }
}

export class ScopedStore extends ForwardingStore<ScopedLayout> {
  constructor(
    inner: NamedStore,
    readonly scope: string,
  ) {
    if (!SCOPE_RE.test(scope))
      throw new StoreError(`"${scope}" is not a store scope name (lowercase letters, digits and inner "-", ≤ 63)`);
    super(inner, new ScopedLayout(inner.layout.root, scope));
  }

  #key(key: string): string {
    return `${key}-${this.scope}`;
  }
  #chain(name: string): string {
    return `scope:${this.scope}:${name}`;
  }
  /** Chains and names share the `scope:<scope>:` prefix (they live in different namespaces). */
  #name(name: string): string {
    return `scope:${this.scope}:${name}`;
  }

  // ---- scoped --------------------------------------------------------------------------------------------------

  override async getIndex(key: string): Promise<IndexEntry | undefined> {
    const entry = await this.inner.getIndex(this.#key(key));
    return entry ? { ...entry, key } : undefined;
  }
  override putIndex(entry: IndexEntry): Promise<void> {
    return this.inner.putIndex({ ...entry, key: this.#key(entry.key) });
  }
  override async getChain(name: string): Promise<ChainRecord | undefined> {
    const chain = await this.inner.getChain(this.#chain(name));
    return chain ? { ...chain, name } : undefined;
  }
  override putChain(chain: ChainRecord): Promise<void> {
    return this.inner.putChain({ ...chain, name: this.#chain(chain.name) });
  }
  override async getName(name: string): Promise<NameRecord | undefined> {
    const rec = await this.inner.getName(this.#name(name));
    return rec ? { ...rec, name } : undefined;
  }
  override putName(record: NameRecord): Promise<void> {
    return this.inner.putName({ ...record, name: this.#name(record.name) });
  }
  override deleteName(name: string): Promise<boolean> {
    return this.inner.deleteName(this.#name(name));
  }
  override async listNames(): Promise<NameRecord[]> {
    const prefix = this.#name("");
    return (await this.inner.listNames())
      .filter((r) => r.name.startsWith(prefix))
      .map((r) => ({ ...r, name: r.name.slice(prefix.length) }));
  }
  /** Names in this scope only; ids go to the store as `sha256:<hex>`, so its own (unscoped) names are never read. */
  override resolveImage(ref: string): Promise<ImageRecord> {
    return resolveImageRef(ref, this, (id) => this.inner.resolveImage(id), `${this.root} (scope ${this.scope})`);
  }
  override lock(key: string): Promise<() => Promise<void>> {
    const mount = /^cache-mount-(.*)$/.exec(key);
    return this.inner.lock(mount ? `cache-mount-${this.scope}-${mount[1]}` : this.#key(key));
  }
}
