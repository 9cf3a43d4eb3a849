/**
 * The times a step's image carries: with a `SOURCE_DATE_EPOCH` (`plan/source-date-epoch.ts`), its config's and history
 * entry's `created` is the epoch and the file times in its layer are clamped to it (the one clamp is at pack time,
 * `layer/tar-pack.ts`, so files keep whatever times the copy or RUN gave them up to the epoch); without one, `created`
 * is the build time and file times are clamped to the builder version's epoch.
 */
import type { BuilderVersion } from "../builder-version.js";
import { stepSourceDateEpoch } from "../plan/source-date-epoch.js";
import type { Step } from "../plan/step.js";

export interface StepTimes {
  /** The seconds later file times in the step's layer are clamped to. */
  layerEpoch: number;
  /** The image config's and history entry's `created`. */
  created: string;
  /** The step's SOURCE_DATE_EPOCH, if it has one. */
  sourceDateEpoch?: number;
}

export function stepTimes(step: Pick<Step, "extra" | "description">, builder: BuilderVersion): StepTimes {
  const epoch = stepSourceDateEpoch(step);
  if (epoch === undefined) return { layerEpoch: builder.sourceDateEpoch, created: new Date().toISOString() };
  return { layerEpoch: epoch, created: new Date(epoch * 1000).toISOString(), sourceDateEpoch: epoch };
}
