/**
 * Who a request acts for: the tenant its bearer token authenticates to. Quotas and metrics are per tenant id.
 *
 * COORDINATOR: the tenants branch (`strata serve --tenants FILE`) owns identity. Until it merges, a service has the
 * one tenant {@link DEFAULT_TENANT}, or — for tests only — a stand-in token table ({@link StandInTenants}) that maps
 * tokens to tenant ids. At merge, feed the real tenant of each request to the quota and metrics code (the server
 * calls `#authenticate`, which returns a TenantId) and drop the stand-in.
 */
import { createHash, timingSafeEqual } from "node:crypto";

/** A tenant's stable id (from the tenants file; `default` for a service with one token or none). */
export type TenantId = string;

/** The tenant of a service with one shared token (STRATA_TOKEN) or none. */
export const DEFAULT_TENANT: TenantId = "default";

/** One entry of the stand-in token table. */
export interface StandInTenant {
  tenant: TenantId;
  token: string;
}

/**
 * A token → tenant table for tests (the stand-in for the tenants branch's `--tenants FILE`). Tokens are compared as
 * SHA-256 digests with timingSafeEqual, every entry every time, as the single-token check does.
 */
export class StandInTenants {
  readonly #entries: { tenant: TenantId; digest: Buffer }[];

  constructor(entries: readonly StandInTenant[]) {
    this.#entries = entries.map((e) => ({ tenant: e.tenant, digest: sha256(e.token) }));
  }

  /** How many tenants the table names. */
  get size(): number {
    return new Set(this.#entries.map((e) => e.tenant)).size;
  }

  /** The tenant a presented token belongs to, or undefined. */
  match(token: string): TenantId | undefined {
    const given = sha256(token);
    let found: TenantId | undefined;
    for (const e of this.#entries) if (timingSafeEqual(given, e.digest) && found === undefined) found = e.tenant;
    return found;
  }
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}
