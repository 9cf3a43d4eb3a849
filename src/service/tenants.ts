/**
 * Tenants: who a request to the build service is. A tenant is a name and the tokens that authenticate it; its
 * builds, logs, images, cache index, chains, cache mounts, input trees and uploaded blobs are its own (see
 * `../store/scoped.ts` and `visibility.ts`). Sharing is automatic inside a tenant and impossible across tenants.
 *
 * - `strata serve --tenants FILE`: a JSON array of `{"tenant": "alice", "token": "…"}` or `{"tenant": "alice",
 *   "tokenSha256": "<64 hex>"}` (so the file need not hold the secrets). Every tenant is scoped by its name.
 * - `STRATA_TOKEN` alone, or no token at all (local use): one tenant, `default`, unscoped — it uses the store's own
 *   names, so the caches of a single-tenant service and of local builds stay valid.
 *
 * A request's bearer token is hashed (SHA-256) and looked up by that hash, then compared with `timingSafeEqual`: the
 * time a lookup takes can only depend on the hash, which tells an attacker nothing about a valid token.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { promises as fsp } from "node:fs";
import { StrataError } from "../errors.js";
import { SCOPE_RE } from "../store/scoped.js";

/** Who a request is: what quotas, metrics and logs key on (`id`), and the store namespace its work lives in. */
export interface Tenant {
  /** The tenant's name from the tenants file; `default` for a single-tenant service. Stable across reloads. */
  readonly id: string;
  /** The store scope of its index, chains, cache mounts, trees and grants; undefined: the store's own names. */
  readonly scope?: string;
}

/** The one tenant of a service without a tenants file (STRATA_TOKEN or no authentication). */
/** A tenant's stable id (its name in the tenants file; `default` for a service with one token or none). */
export type TenantId = string;

export const DEFAULT_TENANT: Tenant = Object.freeze({ id: "default" });

/** A tenants file (or its reload) is not valid: says where and how to fix it. */
export class TenantsFileError extends StrataError {
  override readonly code = "TENANTS_FILE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TenantsFileError";
  }
}

/** Shortest plain `token` a tenants file accepts (a `tokenSha256` cannot be checked). */
export const MIN_TOKEN_LENGTH = 16;

const sha256 = (s: string) => createHash("sha256").update(s).digest();

/** The tenants a service knows and how each authenticates; immutable (a reload makes a new table). */
export class TenantTable {
  readonly #byHash: Map<string, { tenant: Tenant; hash: Buffer }>;
  /** True when no token is required (no tenants file, no STRATA_TOKEN): every request is the default tenant. */
  readonly open: boolean;
  readonly tenants: readonly Tenant[];

  private constructor(entries: { tenant: Tenant; hash: Buffer }[], open: boolean) {
    this.#byHash = new Map(entries.map((e) => [e.hash.toString("hex"), e]));
    this.open = open;
    this.tenants = [...new Map(entries.map((e) => [e.tenant.id, e.tenant])).values()];
  }

  /** A single-tenant table: `default`, unscoped, authenticated by `token` (none: no authentication). */
  static single(token?: string): TenantTable {
    return token
      ? new TenantTable([{ tenant: DEFAULT_TENANT, hash: sha256(token) }], false)
      : new TenantTable([], true);
  }

  /** A table of scoped tenants from parsed file entries (see {@link parseTenants}). */
  static of(entries: readonly TenantEntry[]): TenantTable {
    return new TenantTable(
      entries.map((e) => ({ tenant: Object.freeze({ id: e.tenant, scope: e.tenant }), hash: e.tokenSha256 })),
      false,
    );
  }

  /** Reads and validates a tenants file. */
  static async load(file: string): Promise<TenantTable> {
    let text: string;
    try {
      text = await fsp.readFile(file, "utf8");
    } catch (e) {
      throw new TenantsFileError(
        `cannot read the tenants file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        { cause: e },
      );
    }
    return TenantTable.of(parseTenants(text, file));
  }

  /** The tenant a bearer token authenticates, or undefined. */
  /** Whether some tenant's token has this SHA-256. */
  hasTokenHash(hash: Buffer): boolean {
    return this.#byHash.has(hash.toString("hex"));
  }

  authenticate(token: string): Tenant | undefined {
    const given = sha256(token);
    const hit = this.#byHash.get(given.toString("hex"));
    return hit && timingSafeEqual(given, hit.hash) ? hit.tenant : undefined;
  }
}

/** One line of a tenants file, validated: the tenant's name and the SHA-256 of its token. */
export interface TenantEntry {
  tenant: string;
  tokenSha256: Buffer;
}

/** Parses and validates a tenants file's text (`source` names it in errors). */
export function parseTenants(text: string, source: string): TenantEntry[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new TenantsFileError(`the tenants file ${source} is not valid JSON: ${(e as Error).message}`);
  }
  const where = (i: number) => `${source}: entry ${i}`;
  if (!Array.isArray(data))
    throw new TenantsFileError(
      `the tenants file ${source} must hold a JSON array of {"tenant": "<name>", "token": "<token>"} (or "tokenSha256": "<hex>") objects`,
    );
  if (data.length === 0) throw new TenantsFileError(`the tenants file ${source} lists no tenants: nobody could build`);
  const out: TenantEntry[] = [];
  const names = new Map<string, number>();
  const tokens = new Map<string, number>();
  for (const [i, e] of data.entries()) {
    if (typeof e !== "object" || e === null || Array.isArray(e))
      throw new TenantsFileError(`${where(i)} is not an object like {"tenant": "alice", "token": "…"}`);
    const o = e as Record<string, unknown>;
    const unknown = Object.keys(o).filter((k) => !["tenant", "token", "tokenSha256"].includes(k));
    if (unknown.length)
      throw new TenantsFileError(
        `${where(i)} has unknown field(s) ${unknown.join(", ")} (known: tenant, token, tokenSha256)`,
      );
    if (typeof o.tenant !== "string" || !SCOPE_RE.test(o.tenant))
      throw new TenantsFileError(
        `${where(i)}: tenant ${JSON.stringify(o.tenant)} is not a tenant name: use 1–63 lowercase letters, digits and inner "-" (e.g. "team-a")`,
      );
    const name = o.tenant;
    if (names.has(name))
      throw new TenantsFileError(`${where(i)}: tenant "${name}" is listed twice (also entry ${names.get(name)})`);
    names.set(name, i);
    const hasToken = o.token !== undefined;
    const hasHash = o.tokenSha256 !== undefined;
    if (hasToken === hasHash)
      throw new TenantsFileError(
        `${where(i)} (tenant "${name}") needs exactly one of "token" and "tokenSha256" (the hex SHA-256 of the token, e.g. from \`printf %s "$TOKEN" | sha256sum\`)`,
      );
    let hash: Buffer;
    if (hasToken) {
      const token = o.token;
      if (typeof token !== "string" || token.length < MIN_TOKEN_LENGTH)
        throw new TenantsFileError(
          `${where(i)} (tenant "${name}"): the token must be a string of at least ${MIN_TOKEN_LENGTH} characters (e.g. from \`openssl rand -hex 32\`)`,
        );
      if (token !== token.trim() || /[\s]/.test(token))
        throw new TenantsFileError(`${where(i)} (tenant "${name}"): the token must not contain whitespace`);
      hash = sha256(token);
    } else {
      const hex = o.tokenSha256;
      if (typeof hex !== "string" || !/^[0-9a-fA-F]{64}$/.test(hex))
        throw new TenantsFileError(
          `${where(i)} (tenant "${name}"): tokenSha256 must be 64 hex digits (the SHA-256 of the token)`,
        );
      hash = Buffer.from(hex.toLowerCase(), "hex");
    }
    const key = hash.toString("hex");
    if (tokens.has(key))
      throw new TenantsFileError(
        `${where(i)} (tenant "${name}") has the same token as entry ${tokens.get(key)} (tenant "${out[tokens.get(key)!]!.tenant}"): every tenant needs its own token`,
      );
    tokens.set(key, i);
    out.push({ tenant: name, tokenSha256: hash });
  }
  return out;
}

/** What changed between two tables, for the reload log line. */
export function tenantChanges(before: TenantTable, after: TenantTable): { added: string[]; removed: string[] } {
  const a = new Set(before.tenants.map((t) => t.id));
  const b = new Set(after.tenants.map((t) => t.id));
  return { added: [...b].filter((n) => !a.has(n)), removed: [...a].filter((n) => !b.has(n)) };
}
