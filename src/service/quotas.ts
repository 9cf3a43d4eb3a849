/**
 * Per-tenant quotas of the build service: builds queued or running, upload bytes in flight and per window, and store
 * bytes. A request over a quota throws {@link QuotaExceededError} (the server answers 429 with `Retry-After`);
 * other tenants are not affected. Running builds per tenant are capped by the scheduler ({@link FairSlots}), with
 * {@link defaultTenantRunning} as the default cap.
 *
 * Store bytes are approximate by design: the bytes a tenant added within the store window (default 30 days) —
 * every accepted upload, plus the compressed layers its builds produced (cache hits add nothing) — counted when
 * they are added, never recomputed from the store (content is shared between tenants underneath, so "whose bytes"
 * has no exact answer). The counts are kept per tenant and day in the store (`persistKey`, the log namespace, so
 * they survive restarts and live beside the content on S3) and written after each change, coalesced. Bytes age out
 * of the window as `strata cache prune --older-than 30d` would remove what nothing recent uses.
 */
import { QuotaExceededError } from "../errors.js";
import type { HistoryStore, ImageStore } from "../store/store.js";
import { sha256Bytes, type Digest } from "../util/digest.js";
import type { TenantId } from "./tenants.js";
import { UsageWindow, type UsageBuckets } from "./usage-window.js";

export interface TenantQuotaLimits {
  /** Builds one tenant may have queued or running; one more is a 429. Default 32. */
  maxActiveBuilds?: number;
  /** Bytes one tenant may be uploading at once (declared sizes of unfinished uploads). Default 8 GiB. */
  maxUploadBytesInFlight?: number;
  /** Bytes one tenant may upload per `uploadWindowMs`. Default 32 GiB. */
  maxUploadBytesPerWindow?: number;
  /** Default 1 hour. */
  uploadWindowMs?: number;
  /** Store bytes one tenant may add per `storeWindowMs` (uploads + built layers); beyond, uploads and new builds are 429. Default 200 GiB. */
  maxStoreBytes?: number;
  /** Default 30 days. */
  storeWindowMs?: number;
}

export const QUOTA_DEFAULTS: Required<TenantQuotaLimits> = {
  maxActiveBuilds: 32,
  maxUploadBytesInFlight: 8 * 1024 ** 3,
  maxUploadBytesPerWindow: 32 * 1024 ** 3,
  uploadWindowMs: 3_600_000,
  maxStoreBytes: 200 * 1024 ** 3,
  storeWindowMs: 30 * 86_400_000,
};

/** When a quota on builds is reached, how long a client is told to wait (builds end at no predictable time). */
const BUILD_RETRY_AFTER_S = 10;
/** Ditto for uploads in flight (other uploads of the tenant finish). */
const UPLOAD_RETRY_AFTER_S = 5;

/**
 * The default cap on one tenant's running builds: all slots when the service has one tenant, else half of them
 * (rounded up), so one tenant's burst always leaves slots for the others' builds to start at once.
 */
export function defaultTenantRunning(totalSlots: number, tenants: number): number {
  return tenants > 1 ? Math.max(1, Math.ceil(totalSlots / 2)) : totalSlots;
}

/** Where per-tenant store usage is kept (the store's log namespace, in the service). */
export interface UsageRecords {
  load(tenant: TenantId): Promise<string | undefined>;
  save(tenant: TenantId, text: string): Promise<void>;
}

/** Usage records in a store's history (log) namespace, under a digest derived from the tenant id. */
export function storeUsageRecords(store: Pick<HistoryStore, "getLog" | "putLog">): UsageRecords {
  return {
    load: (tenant) => store.getLog(persistKey(tenant)),
    save: (tenant, text) => store.putLog(persistKey(tenant), text),
  };
}

function persistKey(tenant: TenantId): Digest {
  return sha256Bytes(`strata-tenant-usage/1\n${tenant}`);
}

interface SavedUsage {
  format: "strata-tenant-usage/1";
  tenant: TenantId;
  store: UsageBuckets;
}

/** One upload's claim on its tenant's in-flight bytes; `release` once it ended (stored or not). */
export interface UploadClaim {
  /** Counts bytes of an upload whose size was not declared (chunked): throws once it goes over the quota. */
  grow(bytes: number): void;
  /** The upload ended: frees its in-flight bytes and counts `receivedBytes` in the upload window. */
  release(receivedBytes: number): void;
}

export class TenantQuotas {
  readonly limits: Required<TenantQuotaLimits>;
  readonly #records?: UsageRecords;
  readonly #now: () => number;
  readonly #log: (line: string) => void;
  readonly #active = new Map<TenantId, number>();
  readonly #inFlight = new Map<TenantId, number>();
  readonly #uploads = new Map<TenantId, UsageWindow>();
  readonly #store = new Map<TenantId, Promise<UsageWindow>>();
  readonly #saving = new Map<TenantId, { running: Promise<void>; again: boolean }>();

  constructor(
    limits: TenantQuotaLimits = {},
    opts: { records?: UsageRecords; now?: () => number; log?: (line: string) => void } = {},
  ) {
    this.limits = { ...QUOTA_DEFAULTS, ...stripUndefined(limits) };
    this.#records = opts.records;
    this.#now = opts.now ?? Date.now;
    this.#log = opts.log ?? (() => undefined);
  }

  /** Builds of `tenant` queued or running (counted by {@link admitBuild}). */
  activeBuilds(tenant: TenantId): number {
    return this.#active.get(tenant) ?? 0;
  }

  /** Tenants seen since the start (for metrics). */
  get tenants(): TenantId[] {
    return [...new Set([...this.#active.keys(), ...this.#store.keys(), ...this.#uploads.keys()])];
  }

  /**
   * Admits a new build of `tenant` (a join of a running build is not one; a forced build is): throws
   * QuotaExceededError at the builds or the store quota; returns the release to call when the build ended.
   */
  async admitBuild(tenant: TenantId): Promise<() => void> {
    await this.#checkStore(tenant, 0);
    const n = this.activeBuilds(tenant);
    if (n >= this.limits.maxActiveBuilds)
      throw new QuotaExceededError(
        tenant,
        "builds",
        BUILD_RETRY_AFTER_S,
        `tenant "${tenant}" has ${n} builds queued or running, its quota (${this.limits.maxActiveBuilds}); wait for one to finish and retry`,
      );
    this.#active.set(tenant, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = this.activeBuilds(tenant) - 1;
      if (left > 0) this.#active.set(tenant, left);
      else this.#active.delete(tenant);
    };
  }

  /**
   * Claims `declaredBytes` (undefined: unknown, counted as it arrives through `grow`) of upload for `tenant`: throws
   * QuotaExceededError at the in-flight, window or store quota.
   */
  async beginUpload(tenant: TenantId, declaredBytes: number | undefined): Promise<UploadClaim> {
    const need = declaredBytes ?? 0;
    await this.#checkStore(tenant, need);
    const now = this.#now();
    const window = this.#uploadWindow(tenant);
    const wait = window.retryAfterMs(now, need, this.limits.maxUploadBytesPerWindow);
    if (wait > 0)
      throw new QuotaExceededError(
        tenant,
        "upload-window",
        retrySeconds(wait, this.limits.uploadWindowMs),
        `tenant "${tenant}" uploaded ${window.used(now)} bytes in the last ${describeMs(this.limits.uploadWindowMs)}; ` +
          `${need} more would pass its quota (${this.limits.maxUploadBytesPerWindow} bytes per ${describeMs(this.limits.uploadWindowMs)})`,
      );
    let claimed = 0;
    const claim = (bytes: number) => {
      const inFlight = this.#inFlight.get(tenant) ?? 0;
      if (inFlight + bytes > this.limits.maxUploadBytesInFlight)
        throw new QuotaExceededError(
          tenant,
          "upload-in-flight",
          UPLOAD_RETRY_AFTER_S,
          `tenant "${tenant}" is uploading ${inFlight} bytes at once; ${bytes} more would pass its quota ` +
            `(${this.limits.maxUploadBytesInFlight} bytes in flight): upload fewer files at once`,
        );
      this.#inFlight.set(tenant, inFlight + bytes);
      claimed += bytes;
    };
    claim(need);
    let released = false;
    return {
      grow: (bytes) => {
        if (declaredBytes === undefined) claim(bytes);
      },
      release: (receivedBytes) => {
        if (released) return;
        released = true;
        const left = (this.#inFlight.get(tenant) ?? 0) - claimed;
        if (left > 0) this.#inFlight.set(tenant, left);
        else this.#inFlight.delete(tenant);
        window.add(this.#now(), receivedBytes);
      },
    };
  }

  /** Bytes `tenant` is uploading now. */
  uploadsInFlight(tenant: TenantId): number {
    return this.#inFlight.get(tenant) ?? 0;
  }

  /** Counts `bytes` the tenant added to the store (an upload kept, layers a build produced). */
  async addStored(tenant: TenantId, bytes: number): Promise<void> {
    if (!(bytes > 0)) return;
    const w = await this.#storeWindow(tenant);
    w.add(this.#now(), bytes);
    this.#save(tenant, w);
  }

  /** The store bytes counted for `tenant` now. */
  async storeBytes(tenant: TenantId): Promise<number> {
    return (await this.#storeWindow(tenant)).used(this.#now());
  }

  /** Waits for usage writes in progress. */
  async flush(): Promise<void> {
    while (this.#saving.size) await Promise.all([...this.#saving.values()].map((s) => s.running));
  }

  async #checkStore(tenant: TenantId, need: number): Promise<void> {
    const w = await this.#storeWindow(tenant);
    const now = this.#now();
    const limit = this.limits.maxStoreBytes;
    // A build's size is unknown up front: it needs the tenant to be under the quota, not room for a given size.
    const wait = need > 0 ? w.retryAfterMs(now, need, limit) : w.used(now) < limit ? 0 : w.retryAfterMs(now, 1, limit);
    if (wait > 0)
      throw new QuotaExceededError(
        tenant,
        "store",
        retrySeconds(wait, this.limits.storeWindowMs),
        `tenant "${tenant}" added ${w.used(now)} bytes to the build server's store in the last ${describeMs(this.limits.storeWindowMs)}, ` +
          `its quota is ${limit} bytes${need > 0 ? ` (this upload is ${need} bytes)` : ""}; ask the operator to raise it, or retry once older content has aged out`,
      );
  }

  #uploadWindow(tenant: TenantId): UsageWindow {
    let w = this.#uploads.get(tenant);
    if (!w) {
      w = new UsageWindow(this.limits.uploadWindowMs, Math.max(1000, Math.floor(this.limits.uploadWindowMs / 60)));
      this.#uploads.set(tenant, w);
    }
    return w;
  }

  #storeWindow(tenant: TenantId): Promise<UsageWindow> {
    let p = this.#store.get(tenant);
    if (!p) {
      const bucketMs = Math.max(1000, Math.floor(this.limits.storeWindowMs / 30));
      p = this.#loadStore(tenant).then((saved) => new UsageWindow(this.limits.storeWindowMs, bucketMs, saved));
      this.#store.set(tenant, p);
    }
    return p;
  }

  async #loadStore(tenant: TenantId): Promise<UsageBuckets | undefined> {
    const text = await this.#records?.load(tenant).catch((e: unknown) => {
      this.#log(`could not read the store usage of tenant ${tenant} (counting from 0): ${String(e)}`);
      return undefined;
    });
    if (!text) return undefined;
    try {
      const saved = JSON.parse(text) as SavedUsage;
      if (saved.format === "strata-tenant-usage/1" && saved.tenant === tenant && Array.isArray(saved.store?.buckets))
        return saved.store;
    } catch {
      // unreadable: counted from 0, as if absent
    }
    this.#log(`the saved store usage of tenant ${tenant} is unreadable; counting from 0`);
    return undefined;
  }

  /** Writes the tenant's usage; a change while a write runs is written once more after it (coalesced). */
  #save(tenant: TenantId, w: UsageWindow): void {
    const records = this.#records;
    if (!records) return;
    const cur = this.#saving.get(tenant);
    if (cur) {
      cur.again = true;
      return;
    }
    const state = { running: Promise.resolve(), again: false };
    const write = async () => {
      do {
        state.again = false;
        const saved: SavedUsage = { format: "strata-tenant-usage/1", tenant, store: w.toJSON() };
        await records
          .save(tenant, JSON.stringify(saved))
          .catch((e: unknown) => this.#log(`could not save the store usage of tenant ${tenant}: ${String(e)}`));
      } while (state.again);
      this.#saving.delete(tenant);
    };
    this.#saving.set(tenant, state);
    state.running = write();
  }
}

function retrySeconds(ms: number, windowMs: number): number {
  return Math.max(1, Math.ceil((Number.isFinite(ms) ? ms : windowMs) / 1000));
}

function describeMs(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000} day(s)`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} hour(s)`;
  if (ms % 60_000 === 0) return `${ms / 60_000} minute(s)`;
  return `${ms / 1000} s`;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Compressed bytes of the layers a build produced (steps that were not cache hits), read from their image records. */
export async function builtLayerBytes(
  store: Pick<ImageStore, "getImage">,
  result: { steps: readonly { cached: boolean; imageId: string; layer?: string }[] },
): Promise<number> {
  let bytes = 0;
  for (const s of result.steps) {
    if (s.cached || !s.layer) continue;
    const rec = await store.getImage(s.imageId as Digest);
    bytes += rec?.layers.find((l) => l.digest === s.layer)?.size ?? 0;
  }
  return bytes;
}
