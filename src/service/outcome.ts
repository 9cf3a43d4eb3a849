/** How a build ended (the outcome a worker reports and the server records), and a build error as the wire's failure. */
import { StepFailedError, StrataError } from "../errors.js";
import type { BuildStatus, WireFailure, WireResult } from "./wire/responses.js";

/** How a build ended: what a worker reports back, and what the server records. */
export interface BuildOutcome {
  status: BuildStatus;
  result?: WireResult;
  failure?: WireFailure;
}

/** A build error as the wire's failure (messages redacted). */
export function toFailure(e: unknown, redact: (t: string) => string): WireFailure {
  if (e instanceof StepFailedError) {
    return {
      code: e.code,
      message: redact(e.message),
      step: e.stepIndex,
      description: redact(e.description),
      command: redact(e.command),
      exitCode: e.exitCode,
      logTail: e.logTail.map(redact),
      durationMs: e.durationMs,
      timedOut: e.timedOut,
      ...(e.detail.timeoutMs !== undefined ? { timeoutMs: e.detail.timeoutMs } : {}),
      ...(e.detail.limit !== undefined ? { limit: e.detail.limit } : {}),
    };
  }
  if (e instanceof StrataError) return { code: e.code, message: redact(e.message) };
  return {
    code: "INTERNAL",
    message: redact(`internal error on the build server: ${e instanceof Error ? e.message : String(e)}`),
  };
}
