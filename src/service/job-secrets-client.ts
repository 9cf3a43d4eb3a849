/**
 * A worker's side of job-secrets.ts: fetches a starting job's secret values from the build services it was told
 * about (STRATA_SERVICE_URL), with the worker token. The values are returned, never written anywhere.
 *
 * The worker asks its services in turn: the one that queued the job answers with the values, the others 404. Only the
 * configured services are asked (a job never names where to send the worker token). A service that cannot be reached
 * is asked again for `retryMs` (it may be restarting); when every service answered and none has the values, they are
 * gone (SECRETS_GONE: the service that queued the build restarted) and the client must resubmit.
 */
import { JobSecretsError, type SecretParts } from "./job-secrets.js";

export interface JobSecretsSource {
  /** Base URLs of the build services (`http(s)://host:port`). */
  services: readonly string[];
  /** The worker token (STRATA_WORKER_TOKEN). */
  token: string;
  /** How long unreachable services are retried. Default 15 s. */
  retryMs?: number;
  /** One request's time limit. Default 10 s. */
  timeoutMs?: number;
}

/** The build's secret values from whichever service holds them; a JobSecretsError when none does. */
export async function fetchJobSecrets(
  source: JobSecretsSource,
  job: { buildId: string; token: string; requestDigest: string },
  signal?: AbortSignal,
): Promise<SecretParts> {
  const deadline = Date.now() + (source.retryMs ?? 15_000);
  let pending = [...source.services];
  const problems = new Map<string, string>();
  for (;;) {
    const unreachable: string[] = [];
    for (const base of pending) {
      const r = await askOne(base, source, job, signal);
      if (r.kind === "found") return r.parts;
      if (r.kind === "refused")
        throw new JobSecretsError(
          "SECRETS_UNAVAILABLE",
          `build ${job.buildId}: the build service at ${base} refused this worker's token (${r.message}); give the worker the service's STRATA_WORKER_TOKEN`,
        );
      if (r.kind === "unreachable") {
        unreachable.push(base);
        problems.set(base, r.message);
      } else problems.delete(base);
    }
    if (!unreachable.length)
      throw new JobSecretsError(
        "SECRETS_GONE",
        `build ${job.buildId} uses secrets, and no build service holds their values any more (they are kept only in the memory of the service that queued the build, which has restarted or stopped following it); submit the build again`,
      );
    if (Date.now() >= deadline || signal?.aborted)
      throw new JobSecretsError(
        "SECRETS_UNAVAILABLE",
        `build ${job.buildId} uses secrets, and the build service(s) that may hold them could not be reached: ${unreachable.map((u) => `${u} (${problems.get(u)})`).join(", ")}; check STRATA_SERVICE_URL of the workers, then submit the build again`,
      );
    pending = unreachable;
    await new Promise((r) => setTimeout(r, 500));
  }
}

type Answer =
  | { kind: "found"; parts: SecretParts }
  | { kind: "absent" }
  | { kind: "refused"; message: string }
  | { kind: "unreachable"; message: string };

async function askOne(
  base: string,
  source: JobSecretsSource,
  job: { buildId: string; token: string; requestDigest: string },
  signal: AbortSignal | undefined,
): Promise<Answer> {
  const url = new URL(
    `v1/internal/jobs/${encodeURIComponent(job.buildId)}/secrets`,
    base.endsWith("/") ? base : base + "/",
  );
  const timeout = AbortSignal.timeout(source.timeoutMs ?? 10_000);
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { authorization: `Bearer ${source.token}`, "content-type": "application/json" },
      body: JSON.stringify({ token: job.token, request: job.requestDigest }),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      redirect: "error",
    });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    return { kind: "unreachable", message: cause?.code ?? cause?.message ?? (e as Error).message };
  }
  const text = await res.text().catch(() => "");
  if (res.status === 200) {
    try {
      return { kind: "found", parts: parseParts(JSON.parse(text) as unknown) };
    } catch (e) {
      return { kind: "unreachable", message: `an unreadable answer: ${(e as Error).message}` };
    }
  }
  if (res.status === 404) return { kind: "absent" };
  const message = errorMessage(text) ?? `HTTP ${res.status}`;
  if (res.status === 401 || res.status === 403) return { kind: "refused", message };
  return { kind: "unreachable", message };
}

function errorMessage(text: string): string | undefined {
  try {
    const m = (JSON.parse(text) as { error?: { message?: unknown } }).error?.message;
    return typeof m === "string" ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Checks the shape of the values a service sent (one map of names to strings). */
function parseParts(v: unknown): SecretParts {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
  const o = v as { secrets?: unknown };
  for (const k of Object.keys(o)) if (k !== "secrets") throw new Error(`unknown field ${JSON.stringify(k)}`);
  if (o.secrets === undefined) return {};
  if (!o.secrets || typeof o.secrets !== "object" || Array.isArray(o.secrets))
    throw new Error("secrets is not an object");
  for (const [k, val] of Object.entries(o.secrets))
    if (typeof val !== "string") throw new Error(`secrets.${k} is not a string`);
  return { secrets: o.secrets as Record<string, string> };
}
