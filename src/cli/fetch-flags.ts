/**
 * The fetch policy flags `strata serve` and `strata worker` share: what builds may fetch on a client's behalf
 * (`--allow-fetch`, `--insecure-registry`, repeatable) and the limits of URL downloads.
 */
import { FetchPolicy } from "../net/fetch-policy.js";
import { serviceConfigFrom } from "../net/fetch-rules.js";
import { loadRegistryConfig } from "../net/registry-config-file.js";

export const FETCH_FLAGS = {
  /** Allow fetches from a host or range the policy refuses (host[:port], address[:port], CIDR). Also STRATA_ALLOW_FETCH. */
  "allow-fetch": { type: "string", multiple: true },
  /** A registry (host:port) that may be spoken to over plain HTTP. Also STRATA_INSECURE_REGISTRIES. */
  "insecure-registry": { type: "string", multiple: true },
  /** Largest URL download (default 2GiB, or STRATA_FETCH_MAX_BYTES). */
  "fetch-max-bytes": { type: "string" },
  /** Longest URL download (default 1h, or STRATA_FETCH_TIMEOUT). */
  "fetch-timeout": { type: "string" },
  /** Longest wait for a response's headers or its next bytes (default 60s, or STRATA_FETCH_IDLE_TIMEOUT). */
  "fetch-idle-timeout": { type: "string" },
  /**
   * The operator's registry config (TOML, buildkitd.toml's `[registry."<host>"]`: mirrors, http, insecure, ca). Also
   * STRATA_REGISTRY_CONFIG. Clients cannot set mirrors for the service.
   */
  "registry-config": { type: "string" },
} as const;

/** The operator's fetch policy from the flags and the environment; throws a FetchPolicyConfigError on a bad value. */
export function fetchPolicyOf(
  values: {
    "allow-fetch"?: string[];
    "insecure-registry"?: string[];
    "fetch-max-bytes"?: string;
    "fetch-timeout"?: string;
    "fetch-idle-timeout"?: string;
    "registry-config"?: string;
  },
  env: NodeJS.ProcessEnv = process.env,
): FetchPolicy {
  const registryFile = values["registry-config"] ?? env["STRATA_REGISTRY_CONFIG"]?.trim();
  return new FetchPolicy(
    serviceConfigFrom(
      {
        allow: values["allow-fetch"] ?? [],
        insecureRegistries: values["insecure-registry"] ?? [],
        ...(values["fetch-max-bytes"] !== undefined ? { maxBytes: values["fetch-max-bytes"] } : {}),
        ...(values["fetch-timeout"] !== undefined ? { timeout: values["fetch-timeout"] } : {}),
        ...(values["fetch-idle-timeout"] !== undefined ? { idleTimeout: values["fetch-idle-timeout"] } : {}),
      },
      env,
    ),
    registryFile ? { registryConfig: loadRegistryConfig(registryFile) } : {},
  );
}

/** One line for the startup log: what the policy allows beyond public addresses. */
export function describeFetchPolicy(policy: FetchPolicy): string {
  const c = policy.config;
  const allow = c.allow.length ? c.allow.map((r) => r.text).join(", ") : "none";
  const insecure = c.insecureRegistries.length ? c.insecureRegistries.join(", ") : "none";
  const mirrors = [...policy.registryConfig.registries]
    .filter(([, s]) => s.mirrors.length > 0)
    .map(([host, s]) => `${host} → ${s.mirrors.map((m) => m.text).join(", ")}`);
  const registries = policy.registryConfig.file
    ? `; registry config ${policy.registryConfig.file} (mirrors: ${mirrors.length ? mirrors.join("; ") : "none"})`
    : "";
  return `fetch policy: public addresses only; allowed besides: ${allow}; plain-HTTP registries: ${insecure}${registries}`;
}
