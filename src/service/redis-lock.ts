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
import type { Redis } from "ioredis";
import { ForwardingStore } from "../store/forwarding.js";
import type { NamedStore, StoreNamespace, StoredObject } from "../store/store.js";
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

export class RedisLockingStore extends ForwardingStore {
  readonly keys: RedisKeys;
  readonly ttlMs: number;
  readonly #pollMs: number;
  readonly #onLost?: (key: string) => void;
  /** Locks taken through this store (tests). */
  locksTaken = 0;
  listStored?: (ns: StoreNamespace) => Promise<StoredObject[]>;
  deleteStored?: (ns: StoreNamespace, name: string, opts?: { ifModifiedBefore?: number }) => Promise<boolean>;

  constructor(
    inner: NamedStore,
    private readonly redis: Redis,
    opts: RedisLockOptions = {},
  ) {
    super(inner, inner.layout);
    this.keys = opts.keys ?? new RedisKeys();
    this.ttlMs = Math.max(1000, opts.ttlMs ?? 30_000);
    this.#pollMs = Math.max(10, opts.pollMs ?? 100);
    this.#onLost = opts.onLost;
    if (inner.listStored) this.listStored = (ns) => inner.listStored!(ns);
    if (inner.deleteStored) this.deleteStored = (ns, name, o) => inner.deleteStored!(ns, name, o);
  }

  override async lock(key: string): Promise<() => Promise<void>> {
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
}
