/**
 * BuildKit's progress names for a stage's steps (dockerfile2llb's `prefixCommand`): `[base 3/3] RUN make`, where the
 * count covers the steps that make a vertex in BuildKit — the FROM of an image, RUN, COPY, ADD and WORKDIR — and the
 * stage is named only when the build has more than one (an unnamed stage is `stage-<index>`). Pure.
 */
import type { PlannedInstruction } from "./expand-instruction.js";
import type { DockerfilePlan, PlannedStage } from "./plan-stages.js";

const COUNTED = new Set(["RUN", "COPY", "ADD", "WORKDIR"]);

/** The prefix (`"[base 1/3] "`) of the stage's FROM and of each counted instruction, keyed by the planned object. */
export function progressPrefixes(
  plan: DockerfilePlan,
  stageIndex: number,
): Map<PlannedStage | PlannedInstruction, string> {
  const out = new Map<PlannedStage | PlannedInstruction, string>();
  const stage = plan.stages[stageIndex];
  if (!stage) return out;
  // BuildKit counts the images named by COPY --from / RUN --mount from= as stages of their own.
  const states = plan.stages.length + new Set(plan.stages.flatMap((s) => s.imageRefs)).size;
  const name = states > 1 ? (stage.name ?? `stage-${stageIndex}`) : "";
  const counted = stage.instructions.filter((pi) => COUNTED.has(pi.kind));
  const fromImage = stage.base.kind === "image";
  const total = counted.length + (fromImage ? 1 : 0);
  if (total === 0) return out;
  const width = String(total).length;
  let index = 0;
  const prefix = () => `[${name ? `${name} ` : ""}${String(++index).padStart(width, " ")}/${total}] `;
  if (fromImage) out.set(stage, prefix());
  for (const pi of counted) out.set(pi, prefix());
  return out;
}
