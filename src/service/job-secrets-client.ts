/**
 * A worker's side of job-secrets.ts: fetches a starting job's secret values from the build services it was told
 * about (STRATA_SERVICE_URL), with the worker token. The values are returned, never written anywhere.
 *
 * The worker asks its services in turn: the one that queued the job answers with the values, the others 404. Only the
 * configured services are asked (a job never names where to send the worker token). A service that cannot be reached
 * is asked again for `retryMs` (it may be restarting); when every service answered and none has the values, they are
 * gone (SECRETS_GONE: the service that queued the build restarted) and the client must resubmit.
 *
 * An `https://` service is verified as `strata build` verifies one (tls.ts): against the system's CAs, or only those of
 * STRATA_CA_FILE when it is set (a private CA).
 */
import http from "node:http";
import https from "node:https";
import { JobSecretsError, type SecretParts } from "./job-secrets.js";
import { serviceAgent, tlsHint } from "./tls.js";

export interface JobSecretsSource {
  /** Base URLs of the build services (`http(s)://host:port`). */
  services: readonly string[];
  /** The worker token (STRATA_WORKER_TOKEN). */
  token: string;
  /** How long unreachable services are retried. Default 15 s. */
  retryMs?: number;
  /** One request's time limit. Default 10 s. */
  timeoutMs?: number;
  /** The connection agent for a service. Default: `serviceAgent(base)` (TLS trust from STRATA_CA_FILE). */
  agent?: (base: URL) => http.Agent;
}

/** One keep-alive agent per source and service, made on first use. */
const agents = new WeakMap<JobSecretsSource, Map<string, http.Agent>>();

function agentFor(source: JobSecretsSource, base: URL): http.Agent {
  let bySource = agents.get(source);
  if (!bySource) agents.set(source, (bySource = new Map()));
  let agent = bySource.get(base.origin);
  if (!agent) bySource.set(base.origin, (agent = (source.agent ?? serviceAgent)(base)));
  return agent;
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
  let agent: http.Agent;
  try {
    agent = agentFor(source, url);
  } catch (e) {
    throw new JobSecretsError("SECRETS_UNAVAILABLE", `build ${job.buildId}: ${(e as Error).message}`);
  }
  const timeout = AbortSignal.timeout(source.timeoutMs ?? 10_000);
  let res: { status: number; text: string };
  try {
    res = await post(
      url,
      agent,
      { authorization: `Bearer ${source.token}` },
      JSON.stringify({ token: job.token, request: job.requestDigest }),
      signal ? AbortSignal.any([signal, timeout]) : timeout,
    );
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { kind: "unreachable", message: (code ?? (e as Error).message) + tlsHint(code) };
  }
  const text = res.text;
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

/** POSTs a JSON body and reads the whole answer (redirects are not followed: a 3xx is an answer like any other). */
function post(
  url: URL,
  agent: http.Agent,
  headers: Record<string, string>,
  body: string,
  signal: AbortSignal,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(body);
    const req = (url.protocol === "https:" ? https : http).request(url, {
      method: "POST",
      agent,
      headers: { ...headers, "content-type": "application/json", "content-length": payload.length },
      signal,
    });
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
    });
    req.end(payload);
  });
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
