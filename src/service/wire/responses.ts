/**
 * The build service's responses (`POST /v1/images`, `GET /v1/images/…`, its log stream's result, every error body):
 * written by the server, read by the client. Not validated (the client trusts its server's answers); plain types.
 */

export type BuildStatus = "queued" | "building" | "succeeded" | "failed" | "timeout" | "terminated";

export const FINISHED: ReadonlySet<BuildStatus> = new Set(["succeeded", "failed", "timeout", "terminated"]);

export interface WireStepResult {
  index: number;
  description: string;
  cached: boolean;
  seconds: number;
  key: string;
  imageId: string;
  layer?: string;
}

export interface WireFailure {
  /** The error's stable code (`STEP_FAILED`, `INVALID_DEFINITION`, `INTERNAL`, …). */
  code: string;
  message: string;
  step?: number;
  description?: string;
  command?: string;
  exitCode?: number | null;
  logTail?: string[];
  durationMs?: number;
  timedOut?: boolean;
  /** The timeout that applied (ms), for a step that timed out. */
  timeoutMs?: number;
  /** The resource limit a step hit, in words. */
  limit?: string;
}

export interface WireResult {
  imageId: string;
  steps: WireStepResult[];
}

/** `POST /v1/images` response. `result` is set when the build had already finished successfully. */
export interface CreateResponse {
  buildId: string;
  status: BuildStatus;
  imageId?: string;
  /** True when this request joined a build that was already queued, running or finished. */
  joined: boolean;
  result?: WireResult;
}

/** `GET /v1/images/:id` response for a build id. */
export interface BuildInfo {
  buildId: string;
  status: BuildStatus;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  forceBuild: boolean;
  ignoreCache: boolean;
  steps: { index: number; description: string }[];
  /** Cursor of the newest log line. */
  lastCursor: number;
  result?: WireResult;
  failure?: WireFailure;
  /** For a succeeded build: the final image as stored. */
  image?: ImageInfo;
}

export interface ImageInfo {
  imageId: string;
  manifestDigest: string;
  config: unknown;
  layers: { digest: string; diffId: string; size: number; mediaType: string }[];
  parent?: string;
}

/** Error body of every 4xx/5xx response. */
export interface ErrorBody {
  error: { code: string; message: string; missing?: string[] };
}
