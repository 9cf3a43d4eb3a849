/**
 * How the engine reaches a registry base: plain HTTP or not, which credentials (registry login, ECR, GCP), and the
 * fetch policy its connections (and a GCP key's token endpoint) obey.
 */
import type { BaseSpec } from "../plan/step.js";
import { credentialsFor } from "../registry/credentials.js";
import type { RegistryOptions } from "../registry/client.js";
import type { FetchPolicy } from "../net/fetch-policy.js";

/** `secrets`: the values of the names the base step lists (its login variables). */
export function registryOptions(
  base: Extract<BaseSpec, { kind: "registry" }>,
  secrets: Readonly<Record<string, string>>,
  fetchPolicy?: FetchPolicy,
): RegistryOptions {
  const values = { ...secrets };
  const credentials = credentialsFor(base.login ?? "registry", values, {
    // On the service a file the secret names would be the operator's (its own web identity token): refused.
    ecr: { tokenFiles: fetchPolicy?.operatorLogins ?? true },
    gcp: { ...(base.gcpMode ? { mode: base.gcpMode } : {}), ...(fetchPolicy ? { fetchPolicy } : {}) },
  });
  return {
    insecure: base.insecure,
    secret: values,
    ...(credentials ? { credentials } : {}),
    ...(fetchPolicy ? { fetchPolicy } : {}),
  };
}
