/** `fromDockerfile`'s `sourceDateEpoch` option: the `SOURCE_DATE_EPOCH` build arg it stands for, checked. */
import { InvalidDefinitionError } from "../errors.js";

/**
 * The build args with `SOURCE_DATE_EPOCH` set from `epoch` (whole seconds since 1970, at most year 2514's). Giving both
 * the option and the build arg is allowed only when they agree.
 */
export function withSourceDateEpoch(
  buildArgs: Record<string, string> | undefined,
  epoch: unknown,
): Record<string, string> | undefined {
  if (epoch === undefined) return buildArgs;
  if (typeof epoch !== "number" || !Number.isSafeInteger(epoch) || epoch < 0 || epoch > 0o77777777777)
    throw new InvalidDefinitionError(
      `fromDockerfile: sourceDateEpoch must be whole seconds since 1970-01-01 UTC (e.g. 1704067200), got ${String(epoch)}`,
    );
  const given = buildArgs?.SOURCE_DATE_EPOCH;
  if (given !== undefined && given !== String(epoch))
    throw new InvalidDefinitionError(
      `fromDockerfile: sourceDateEpoch ${epoch} and the build arg SOURCE_DATE_EPOCH=${given} disagree; give one of them`,
    );
  return { ...buildArgs, SOURCE_DATE_EPOCH: String(epoch) };
}
