/** The sandbox flags `strata serve` and `strata worker` share: the operator's grants and step timeouts. */
import { parseDuration, type ServiceSandboxOptions } from "../sandbox/runc.js";

export const SANDBOX_FLAGS = {
  /** Grant the network.host entitlement: steps that ask for the host network get it. Off by default. */
  "allow-network-host": { type: "boolean" },
  /** Timeout of a step that sets none (default 1h, or STRATA_STEP_TIMEOUT). */
  "step-timeout": { type: "string" },
  /** The most any step may run (default 4h, or STRATA_MAX_STEP_TIMEOUT); a step asking for more gets this. */
  "max-step-timeout": { type: "string" },
} as const;

export function sandboxOptions(values: {
  "allow-network-host"?: boolean;
  "step-timeout"?: string;
  "max-step-timeout"?: string;
}): ServiceSandboxOptions {
  return {
    allowNetworkHost: values["allow-network-host"] ?? false,
    ...(values["step-timeout"] !== undefined
      ? { stepTimeoutMs: parseDuration(values["step-timeout"], "--step-timeout") }
      : {}),
    ...(values["max-step-timeout"] !== undefined
      ? { maxStepTimeoutMs: parseDuration(values["max-step-timeout"], "--max-step-timeout") }
      : {}),
  };
}
