/**
 * A sliding-window byte counter (pure): bytes are added to time buckets, a bucket counts until its end has left the
 * window, and {@link UsageWindow.retryAfterMs} says how long until enough has left the window for `need` more bytes.
 * Used for a tenant's upload bytes per hour (in memory) and its store bytes per 30 days (kept in the store).
 */

/** The serialisable state: buckets of `bucketMs`, `start` = the bucket's start (ms since the epoch). */
export interface UsageBuckets {
  bucketMs: number;
  buckets: { start: number; bytes: number }[];
}

export class UsageWindow {
  readonly #windowMs: number;
  readonly #bucketMs: number;
  #buckets: { start: number; bytes: number }[];

  constructor(windowMs: number, bucketMs: number, state?: UsageBuckets) {
    this.#windowMs = windowMs;
    this.#bucketMs = bucketMs;
    // A saved state with another bucket size is still correct to read: its buckets are kept as they are.
    this.#buckets = state
      ? state.buckets.filter((b) => Number.isFinite(b.start) && b.bytes > 0).map((b) => ({ ...b }))
      : [];
  }

  /** Adds `bytes` at time `now`. */
  add(now: number, bytes: number): void {
    if (!(bytes > 0)) return;
    this.#expire(now);
    const start = now - (now % this.#bucketMs);
    const last = this.#buckets[this.#buckets.length - 1];
    if (last && last.start === start) last.bytes += bytes;
    else this.#buckets.push({ start, bytes });
  }

  /** Bytes counted at time `now`. */
  used(now: number): number {
    this.#expire(now);
    let sum = 0;
    for (const b of this.#buckets) sum += b.bytes;
    return sum;
  }

  /**
   * How long from `now` until `used + need ≤ limit` (0 if it is already): the time at which enough of the oldest
   * buckets have left the window. Infinity when `need` alone is more than `limit`.
   */
  retryAfterMs(now: number, need: number, limit: number): number {
    if (need > limit) return Number.POSITIVE_INFINITY;
    let used = this.used(now);
    if (used + need <= limit) return 0;
    for (const b of this.#buckets) {
      used -= b.bytes;
      if (used + need <= limit) return Math.max(0, this.#expiry(b) - now);
    }
    return this.#windowMs;
  }

  /** The state to save. */
  toJSON(): UsageBuckets {
    return { bucketMs: this.#bucketMs, buckets: this.#buckets.map((b) => ({ ...b })) };
  }

  #expiry(b: { start: number }): number {
    return b.start + this.#bucketMs + this.#windowMs;
  }

  #expire(now: number): void {
    while (this.#buckets.length && this.#expiry(this.#buckets[0]!) <= now) this.#buckets.shift();
  }
}
