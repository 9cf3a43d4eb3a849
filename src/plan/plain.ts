/** Plan data as JSON sees it: optional fields absent rather than `undefined`, so a plan equals its JSON round trip. */

/** A copy of `value` (arrays and plain objects, deeply) without its `undefined`-valued properties. */
export function withoutUndefined<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v: unknown) => withoutUndefined(v)) as T;
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = withoutUndefined(v);
    return out as T;
  }
  return value;
}
