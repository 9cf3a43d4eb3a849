/**
 * A Store decorator whose build locks live in Redis, so workers on different machines sharing one S3 store build
 * each step key once: the engine takes `store.lock(key)` around a miss, re-checks the index once it holds the lock
 * (a waiter finds the entry the holder wrote and uses it), and releases it when the step is recorded.
 *
 * A lock is `SET <prefix>:lock:<key> <token> NX PX <ttl>`, renewed every ttl/3 while held and deleted on release
 * only if the token is still ours. A holder that dies (`kill -9`, a lost machine) stops renewing: the lock expires
 * after at most `ttl` and the next waiter takes it. Waiters poll. Everything else is delegated unchanged; locks of
 * machine-local resources (`cache-mount-*`, the engine's RUN cache mounts) stay with the wrapped store.
 */
import { randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import type { Redis } from "ioredis";
import type { Digest } from "../util/digest.js";
import type {
  ChainRecord,
  ImageRecord,
  IndexEntry,
  LayerRecord,
  Store,
  StoreNamespace,
  StoredObject,
} from "../store/store.js";
import type { StoreLayout } from "../store/layout.js";
import { processName, RedisKeys } from "./queue.js";

/** Deletes the key only while it holds our token. */
const RELEASE = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`;
/** Extends the key's expiry only while it holds our token. */
const RENEW = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`;

export interface RedisLockOptions {
  keys?: RedisKeys;
  /** Expiry of a lock whose holder stopped renewing it. Default 30 s. */
  ttlMs?: number;
  /** How often a waiter tries again. Default 100 ms (plus jitter). */
  pollMs?: number;
  /** Told when a held lock was lost (expired or taken over) before its release. */
  onLost?: (key: string) => void;
}

export class RedisLockingStore implements Store {
  readonly root: string;
  readonly layout: StoreLayout;
  readonly keys: RedisKeys;
  readonly ttlMs: number;
  readonly #pollMs: number;
  readonly #onLost?: (key: string) => void;
  /** Locks taken through this store (tests). */
  locksTaken = 0;
  pin?: (layers: Iterable<LayerRecord>) => () => void;
  listStored?: (ns: StoreNamespace) => Promise<StoredObject[]>;
  deleteStored?: (ns: StoreNamespace, name: string, opts?: { ifModifiedBefore?: number }) => Promise<boolean>;

  constructor(
    readonly inner: Store,
    private readonly redis: Redis,
    opts: RedisLockOptions = {},
  ) {
    this.root = inner.root;
    this.layout = inner.layout;
    this.keys = opts.keys ?? new RedisKeys();
    this.ttlMs = Math.max(1000, opts.ttlMs ?? 30_000);
    this.#pollMs = Math.max(10, opts.pollMs ?? 100);
    this.#onLost = opts.onLost;
    if (inner.pin) this.pin = (layers) => inner.pin!(layers);
    if (inner.listStored) this.listStored = (ns) => inner.listStored!(ns);
    if (inner.deleteStored) this.deleteStored = (ns, name, o) => inner.deleteStored!(ns, name, o);
  }

  async lock(key: string): Promise<() => Promise<void>> {
    if (key.startsWith("cache-mount-")) return this.inner.lock(key);
    const rkey = this.keys.stepLock(key);
    const token = `${processName()}:${randomBytes(8).toString("hex")}`;
    for (;;) {
      if ((await this.redis.set(rkey, token, "PX", this.ttlMs, "NX")) === "OK") break;
      await new Promise((r) => setTimeout(r, this.#pollMs + Math.random() * this.#pollMs));
    }
    this.locksTaken++;
    let lost = false;
    const renew = setInterval(
      () => {
        this.redis.eval(RENEW, 1, rkey, token, String(this.ttlMs)).then(
          (r) => {
            if (Number(r) === 0 && !lost) {
              lost = true;
              this.#onLost?.(key);
            }
          },
          () => undefined, // Redis briefly away: the next renewal tries again
        );
      },
      Math.max(200, Math.floor(this.ttlMs / 3)),
    );
    renew.unref();
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      clearInterval(renew);
      await this.redis.eval(RELEASE, 1, rkey, token).catch(() => undefined);
    };
  }

  /** Who holds the lock of `key` (tests, diagnostics). */
  async holder(key: string): Promise<string | null> {
    return this.redis.get(this.keys.stepLock(key));
  }

  // ---- delegated -----------------------------------------------------------------------------------------------

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
  getChain(name: string): Promise<ChainRecord | undefined> {
    return this.inner.getChain(name);
  }
  putChain(chain: ChainRecord): Promise<void> {
    return this.inner.putChain(chain);
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
  putLog(imageId: Digest, text: string): Promise<void> {
    return this.inner.putLog(imageId, text);
  }
  getLog(imageId: Digest): Promise<string | undefined> {
    return this.inner.getLog(imageId);
  }
  recover(beforeReclaim?: () => Promise<void>): Promise<void> {
    return this.inner.recover(beforeReclaim);
  }
}
