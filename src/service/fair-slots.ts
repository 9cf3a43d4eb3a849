/**
 * The build slots of one server, shared fairly between tenants: at most `total` builds run at once, and at most
 * `perTenant(t)` of them for one tenant. A freed slot goes to the next tenant in round-robin order that has a build
 * waiting and is under its cap, so one tenant's backlog never delays another tenant's first build by more than the
 * time it takes some slot to free — and, while tenants stay under their caps, not at all.
 */
import type { TenantId } from "./tenants.js";

export class FairSlots {
  #free: number;
  readonly #perTenant: (tenant: TenantId) => number;
  readonly #running = new Map<TenantId, number>();
  readonly #waiting = new Map<TenantId, (() => void)[]>();
  /** Tenants with waiters, in the order they get the next slot. */
  readonly #turns: TenantId[] = [];

  constructor(total: number, perTenant: (tenant: TenantId) => number) {
    this.#free = total;
    this.#perTenant = perTenant;
  }

  /** Waits for a slot for `tenant`; resolves to its release (idempotent). */
  async acquire(tenant: TenantId): Promise<() => void> {
    await new Promise<void>((resolve) => {
      const q = this.#waiting.get(tenant);
      if (q) q.push(resolve);
      else {
        this.#waiting.set(tenant, [resolve]);
        this.#turns.push(tenant);
      }
      this.#dispatch();
    });
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#free++;
      const n = (this.#running.get(tenant) ?? 1) - 1;
      if (n > 0) this.#running.set(tenant, n);
      else this.#running.delete(tenant);
      this.#dispatch();
    };
  }

  /** Builds of `tenant` holding a slot. */
  running(tenant: TenantId): number {
    return this.#running.get(tenant) ?? 0;
  }

  /** Builds of `tenant` waiting for a slot. */
  waiting(tenant: TenantId): number {
    return this.#waiting.get(tenant)?.length ?? 0;
  }

  #dispatch(): void {
    let tried = 0;
    while (this.#free > 0 && tried < this.#turns.length) {
      const tenant = this.#turns.shift()!;
      const q = this.#waiting.get(tenant)!;
      if (this.running(tenant) >= this.#perTenant(tenant)) {
        this.#turns.push(tenant);
        tried++;
        continue;
      }
      const next = q.shift()!;
      this.#free--;
      this.#running.set(tenant, this.running(tenant) + 1);
      if (q.length) this.#turns.push(tenant);
      else this.#waiting.delete(tenant);
      tried = 0;
      next();
    }
  }
}
