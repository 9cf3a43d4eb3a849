/**
 * `SOURCE_DATE_EPOCH` (reproducible-builds.org): the value's parsing, and how a step carries it. A step built with an
 * epoch has the extra key input `sourceDateEpoch` (seconds): the engine then gives its image config and history the
 * epoch as `created`, and clamps every file time later than the epoch in the layer it packs (BuildKit's
 * `rewrite-timestamp`). A step without it keeps today's behaviour (and key): the build time as `created`, file times
 * clamped to the builder version's epoch. Pure.
 */
import { InvalidDefinitionError } from "../errors.js";
import type { Step } from "./step.js";

/** The extra key input naming a step's epoch. */
export const SOURCE_DATE_EPOCH_EXTRA = "sourceDateEpoch";

/** The largest epoch a tar header's 11 octal digits hold (year 2514): later values cannot be written to a layer. */
const MAX_EPOCH = 0o77777777777;

/**
 * Parses a `SOURCE_DATE_EPOCH` value: decimal seconds since 1970-01-01 UTC. "" means unset (undefined), as in
 * BuildKit. Throws {@link InvalidDefinitionError} ("invalid SOURCE_DATE_EPOCH: …") for anything else, `where` naming
 * the source of the value.
 */
export function parseSourceDateEpoch(value: string, where = "SOURCE_DATE_EPOCH"): number | undefined {
  if (value === "") return undefined;
  const n = /^\d{1,12}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n > MAX_EPOCH) {
    const hint =
      value === "context" || /^[a-z]/i.test(value)
        ? " (Strata takes a number of seconds only, not a context or stage name; e.g. $(git log -1 --pretty=%ct))"
        : ` (expected whole seconds since 1970-01-01 UTC, 0 to ${MAX_EPOCH}; e.g. $(git log -1 --pretty=%ct))`;
    throw new InvalidDefinitionError(
      `invalid SOURCE_DATE_EPOCH: ${value}${hint}${where === "SOURCE_DATE_EPOCH" ? "" : ` (${where})`}`,
    );
  }
  return n;
}

/** The step's epoch (its `sourceDateEpoch` extra), or undefined. A malformed value (from a client) is an error. */
export function stepSourceDateEpoch(step: Pick<Step, "extra" | "description">): number | undefined {
  const e = step.extra.find(([name]) => name === SOURCE_DATE_EPOCH_EXTRA);
  if (!e) return undefined;
  const n = parseSourceDateEpoch(e[1], `step ${step.description}`);
  if (n === undefined) throw new InvalidDefinitionError(`step ${step.description}: empty ${SOURCE_DATE_EPOCH_EXTRA}`);
  return n;
}
