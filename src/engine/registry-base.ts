/** How the engine reaches a registry base: plain HTTP or not, and which credentials (registry login, ECR, GCP). */
import type { BaseSpec } from "../plan/step.js";
import { credentialsFor } from "../registry/credentials.js";
import type { RegistryOptions } from "../registry/client.js";

/** `secrets`: the values of the names the base step lists (its login variables). */
export function registryOptions(
  base: Extract<BaseSpec, { kind: "registry" }>,
  secrets: Readonly<Record<string, string>>,
): RegistryOptions {
  const values = { ...secrets };
  const credentials = credentialsFor(
    base.login ?? "registry",
    values,
    base.gcpMode ? { gcp: { mode: base.gcpMode } } : {},
  );
  return { insecure: base.insecure, secret: values, ...(credentials ? { credentials } : {}) };
}
