/**
 * Which blobs and images a tenant may name: content is stored once for everyone, but knowing a digest is not
 * possession (distribution's per-repository links). A scoped tenant sees a blob it uploaded (a PUT whose bytes the
 * server verified, even when they were stored already) or one that an image it holds contains, and an image a build
 * of its own produced. An unscoped tenant (single-tenant service) sees the whole store.
 *
 * A grant is a small record in the store's log namespace under `sha256("strata-grant/1\n<scope>\n<kind>\n<digest>")`
 * (as build records are), so grants survive restarts, live in S3 beside the content, and are shared by every server
 * and worker of the store. Positive answers are remembered in memory (a grant is never taken back, except by
 * `strata cache prune`, after which the tenant uploads the blob again or rebuilds the image). A pruned grant only
 * hides; a grant never shows what another tenant could not name.
 */
import { createHash } from "node:crypto";
import type { BlobStore, HistoryStore, ImageRecord, ImageStore } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import type { Tenant } from "./tenants.js";

type GrantKind = "blob" | "image";

/** Remembered grants, at most (each ~150 bytes). */
const MEMO_LIMIT = 200_000;

export class Visibility {
  readonly #memo = new Set<string>();

  constructor(private readonly store: BlobStore & ImageStore & HistoryStore) {}

  static grantId(scope: string, kind: GrantKind, digest: string): Digest {
    return `sha256:${createHash("sha256").update(`strata-grant/1\n${scope}\n${kind}\n${digest}`).digest("hex")}` as Digest;
  }

  async #granted(scope: string, kind: GrantKind, digest: string): Promise<boolean> {
    const id = Visibility.grantId(scope, kind, digest);
    if (this.#memo.has(id)) return true;
    const text = await this.store.getLog(id).catch(() => undefined);
    if (text === undefined) return false;
    this.#remember(id);
    return true;
  }

  async #grant(scope: string, kind: GrantKind, digest: string): Promise<void> {
    const id = Visibility.grantId(scope, kind, digest);
    if (this.#memo.has(id)) return;
    await this.store.putLog(id, `strata-grant/1 ${scope} ${kind} ${digest}\n`);
    this.#remember(id);
  }

  #remember(id: string): void {
    if (this.#memo.size >= MEMO_LIMIT) this.#memo.delete(this.#memo.values().next().value!);
    this.#memo.add(id);
  }

  /**
   * Whether the tenant may name this blob: (scoped) granted, and stored. The grant is looked up first, so the time an
   * answer takes does not tell a blob only another tenant has from one nobody has.
   */
  async blobVisible(tenant: Tenant, digest: Digest): Promise<boolean> {
    if (tenant.scope !== undefined && !(await this.#granted(tenant.scope, "blob", digest))) return false;
    return this.store.hasBlob(digest);
  }

  /** The image record, if the tenant may see it. */
  async image(tenant: Tenant, id: Digest): Promise<ImageRecord | undefined> {
    if (tenant.scope !== undefined && !(await this.#granted(tenant.scope, "image", id))) return undefined;
    return this.store.getImage(id);
  }

  /** Records that the tenant uploaded (and the server verified) this blob. */
  async grantBlob(tenant: Tenant, digest: Digest): Promise<void> {
    if (tenant.scope !== undefined) await this.#grant(tenant.scope, "blob", digest);
  }

  /** Records that the tenant holds these images, and with them every blob they name. */
  async grantImages(tenant: Tenant, ids: readonly Digest[]): Promise<void> {
    const scope = tenant.scope;
    if (scope === undefined) return;
    for (const id of new Set(ids)) {
      if (this.#memo.has(Visibility.grantId(scope, "image", id))) continue;
      const rec = await this.store.getImage(id);
      if (!rec) continue;
      const blobs = new Set<string>([rec.configDigest, rec.manifestDigest, ...rec.layers.map((l) => l.digest)]);
      // Blobs first: an image grant is only written once what it contains is visible too.
      await Promise.all([...blobs].map((d) => this.#grant(scope, "blob", d)));
      await this.#grant(scope, "image", id);
    }
  }

  /** Of `digests`, those the tenant may not name (missing, or another tenant's), with bounded concurrency. */
  async missing(tenant: Tenant, digests: readonly string[]): Promise<string[]> {
    const unique = [...new Set(digests)];
    const present = new Array<boolean>(unique.length);
    let next = 0;
    const worker = async () => {
      while (next < unique.length) {
        const i = next++;
        present[i] = await this.blobVisible(tenant, unique[i]! as Digest);
      }
    };
    await Promise.all(Array.from({ length: Math.min(32, unique.length) }, worker));
    return unique.filter((_, i) => !present[i]);
  }
}
