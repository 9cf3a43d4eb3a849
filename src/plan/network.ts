/**
 * A build's network for RUN steps that name none (`strata build --network none|host`), written into a plan's
 * instructions: so it travels with the plan (to a build service too) and keys exactly as the engine's default network
 * does (`engine/network.ts` writes a non-sandbox default into a step's instructions before keying).
 */
import type { Instruction } from "./instructions.js";
import type { Plan, SelectRoot, Step, StepInput } from "./step.js";

/** The instructions with `mode` written into every RUN that names no network (pure). */
export function withRunNetwork(instructions: readonly Instruction[], mode: "none" | "host"): Instruction[] {
  return instructions.map((i) => (i.op === "RUN" && i.network === undefined ? { ...i, network: mode } : i));
}

function rootWith(root: SelectRoot, mode: "none" | "host"): SelectRoot {
  return root.kind === "stage" ? { ...root, plan: planWithNetwork(root.plan, mode) } : root;
}

function inputWith(input: StepInput, mode: "none" | "host"): StepInput {
  if (input.kind === "select") return { ...input, root: rootWith(input.root, mode) };
  if (input.kind === "stages") return { ...input, plans: input.plans.map((p) => planWithNetwork(p, mode)) };
  return input;
}

/** `plan` with `mode` as the network of every RUN that names none, nested stage plans included (pure). */
export function planWithNetwork(plan: Plan, mode: "none" | "host"): Plan {
  const step = (s: Step): Step => ({
    ...s,
    instructions: withRunNetwork(s.instructions, mode),
    inputs: s.inputs.map((i) => inputWith(i, mode)),
  });
  return { ...plan, steps: plan.steps.map(step) };
}
