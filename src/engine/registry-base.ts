/** How the engine reaches a registry base: plain HTTP or not, and which credentials (registry login, ECR, GCP). */
import type { BaseSpec } from "../plan/step.js";
import { credentialsFor } from "../registry/credentials.js";
import type { RegistryOptions } from "../registry/client.js";
import type { Secret } from "../sdk/secret.js";

export function registryOptions(base: Extract<BaseSpec, { kind: "registry" }>, secrets: Secret): RegistryOptions {
  const values = secrets.values();
  const credentials = credentialsFor(base.login ?? "registry", values, base.gcpMode ? { gcp: { mode: base.gcpMode } } : {});
  return { insecure: base.insecure, secret: values, ...(credentials ? { credentials } : {}) };
}
