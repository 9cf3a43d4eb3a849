/**
 * Secret values for the steps of nested chains (Dockerfile stages that other steps read). A plan is data and is
 * cloned; a Secret's values deliberately do not survive that (they serialise to names only). A stage's steps carry
 * `secretsRef`, a process-local handle registered here when the Dockerfile is loaded, and get their values back just
 * before the stage is built. Values never enter plans, keys, logs or layers.
 */
import { randomBytes } from "node:crypto";
import { Secret } from "../sdk/secret.js";
import type { Plan, Step } from "../plan/step.js";

const registry = new Map<string, Secret>();

/** Registers a build's secrets; returns the handle to put in `Step.secretsRef`, or undefined if there are none. */
export function registerSecrets(secret: Secret): string | undefined {
  if (secret.names.length === 0) return undefined;
  const token = `secrets-${randomBytes(8).toString("hex")}`;
  registry.set(token, secret);
  return token;
}

/** The secrets a step's RUN mounts name, from the registered handle. */
function secretsOf(step: Step): Secret {
  const ids = new Set<string>();
  for (const ins of step.instructions) if (ins.op === "RUN") for (const m of ins.mounts ?? []) if (m.type === "secret") ids.add(m.id);
  const all = step.secretsRef ? registry.get(step.secretsRef)?.values() ?? {} : {};
  return Secret.fromObject(Object.fromEntries(Object.entries(all).filter(([k]) => ids.has(k))));
}

/** Gives every step of a (cloned) plan a real Secret again: its mounted secrets from the registry, else none. */
export function rehydratePlan(plan: Plan): Plan {
  return { ...plan, steps: plan.steps.map((s) => (s.secrets instanceof Secret ? s : { ...s, secrets: secretsOf(s) })) };
}
