/**
 * Build-time volumes: `runCommands(…, { volumes })` and `runFunction(…, { volumes })` mount named directories that
 * persist between builds, as Modal's Volumes do in `run_commands(volumes=…)` (used to keep model weights and package
 * caches across builds). In Strata a volume is a cache mount (`RUN --mount=type=cache,id=volume-<name>`): kept in
 * the store (per tenant on a build service), shared by every step that names it, and never part of a layer. Its
 * contents are not keyed; its name and mount path are.
 */
import { InvalidDefinitionError } from "../errors.js";
import type { RunMount } from "../plan/instructions.js";

type CacheMount = Extract<RunMount, { type: "cache" }>;

const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A named build-time volume (Modal's `Volume.from_name`). */
export class Volume {
  private constructor(readonly name: string) {}

  /** The volume called `name` (letters, digits, `.`, `_`, `-`; up to 64). It is created when a build first uses it. */
  static fromName(name: string, options: { createIfMissing?: boolean } = {}): Volume {
    if (typeof name !== "string" || !VOLUME_NAME.test(name))
      throw new InvalidDefinitionError(
        `Volume.fromName: "${String(name)}" is not a volume name (1-64 of letters, digits, . _ -, not starting with . _ -)`,
      );
    if (options.createIfMissing === false)
      throw new InvalidDefinitionError(
        "Volume.fromName: createIfMissing: false is not supported: a build-time volume is created when a build first uses it",
      );
    return new Volume(name);
  }
}

/** `volumes` as the cache mounts every RUN of the step gets, sorted by mount path; errors name the method and path. */
export function volumeMounts(method: string, volumes: unknown): CacheMount[] {
  if (volumes === undefined) return [];
  if (typeof volumes !== "object" || volumes === null || Array.isArray(volumes))
    throw new InvalidDefinitionError(`${method}: volumes must be an object of mount path → Volume (or volume name)`);
  const out: CacheMount[] = [];
  for (const [target, v] of Object.entries(volumes)) {
    const vol = typeof v === "string" ? Volume.fromName(v) : v;
    if (!(vol instanceof Volume))
      throw new InvalidDefinitionError(`${method}: volumes["${target}"] must be a Volume (Volume.fromName) or a name`);
    const clean = target.replace(/\/+$/, "");
    if (!target.startsWith("/") || clean === "" || /(^|\/)\.\.?(\/|$)/.test(target) || target.includes("\0"))
      throw new InvalidDefinitionError(
        `${method}: volumes: "${target}" must be an absolute path other than / (no . or .. parts)`,
      );
    out.push({ type: "cache", id: `volume-${vol.name}`, target: clean, sharing: "shared" });
  }
  out.sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  for (let i = 1; i < out.length; i++) {
    const prev = out[i - 1]!.target;
    const cur = out[i]!.target;
    if (cur === prev || cur.startsWith(`${prev}/`))
      throw new InvalidDefinitionError(`${method}: volumes: "${cur}" is inside (or is) the volume at "${prev}"`);
  }
  return out;
}
