/**
 * One build as the service keeps it: its status and outcome, its log lines numbered from 1 (the cursor), the newest
 * kept in memory within bounds, the subscribers that follow it, and the record saved in the store when it finishes.
 */
import {
  FINISHED,
  reusable,
  type BuildInfo,
  type BuildRequest,
  type BuildStatus,
  type WireFailure,
  type WireResult,
} from "./wire.js";
import { DEFAULT_TENANT, type TenantId } from "./tenant.js";

/** What a log subscriber receives. */
export type BuildEvent = { type: "line"; cursor: number; line: string } | { type: "done" };

/** A stored build record (`logs/<build id>` in the store): the public info without the live cursor, plus its log. */
export type PersistedBuild = Omit<BuildInfo, "lastCursor"> & {
  format: "strata-service-build/1";
  firstCursor: number;
  lines: string[];
};

/** What staying valid needs of a finished build's request (the request itself is dropped when it finishes). */
interface Revalidation {
  /** Per result step: skip the index check (a fromId base has no entry of its own). */
  skip: boolean[];
  /** A registry base's tag may move: such builds are never reused. */
  reusable: boolean;
}

export class Build {
  status: BuildStatus = "queued";
  createdAt = new Date().toISOString();
  startedAt?: string;
  finishedAt?: string;
  result?: WireResult;
  failure?: WireFailure;
  readonly chainNames = new Set<string>();
  /** The tenant that created the build (quotas, metrics). */
  tenant: TenantId = DEFAULT_TENANT;
  /** Cursor of lines[0]. */
  firstCursor = 1;
  lines: string[] = [];
  #bytes = 0;
  readonly #listeners = new Set<(e: BuildEvent) => void>();
  request?: BuildRequest;
  revalidation?: Revalidation;
  readonly #done: Promise<void>;
  #resolveDone!: () => void;

  constructor(
    readonly id: string,
    readonly defHash: string,
    readonly forceBuild: boolean,
    readonly ignoreCache: boolean,
    readonly steps: { index: number; description: string }[],
    private readonly limits: { lines: number; bytes: number },
  ) {
    this.#done = new Promise((r) => (this.#resolveDone = r));
  }

  get finished(): boolean {
    return FINISHED.has(this.status);
  }

  /** Resolves when the build has finished (never rejects). */
  get done(): Promise<void> {
    return this.#done;
  }

  /** Bytes of the log lines held in memory. */
  get logBytes(): number {
    return this.#bytes;
  }

  /** Cursor of the newest line (0 before the first). */
  get lastCursor(): number {
    return this.firstCursor + this.lines.length - 1;
  }

  append(line: string): void {
    this.lines.push(line);
    this.#bytes += line.length + 1;
    while (this.lines.length > this.limits.lines || (this.#bytes > this.limits.bytes && this.lines.length > 1)) {
      this.#bytes -= this.lines.shift()!.length + 1;
      this.firstCursor++;
    }
    const cursor = this.lastCursor;
    for (const l of this.#listeners) l({ type: "line", cursor, line });
  }

  /** Lines after `cursor`, and whether some of them were already dropped from memory. */
  linesAfter(cursor: number): { lines: { cursor: number; line: string }[]; dropped: number } {
    const from = Math.max(cursor + 1, this.firstCursor);
    const out: { cursor: number; line: string }[] = [];
    for (let c = from; c <= this.lastCursor; c++) out.push({ cursor: c, line: this.lines[c - this.firstCursor]! });
    return { lines: out, dropped: Math.max(0, this.firstCursor - (cursor + 1)) };
  }

  /** Subscribes to new lines and the end; returns the unsubscribe function. */
  subscribe(fn: (e: BuildEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Records the outcome; subscribers hear of it with {@link announce} (after the record is saved). */
  finish(status: BuildStatus, outcome: { result?: WireResult; failure?: WireFailure }): void {
    if (this.finished) return;
    this.status = status;
    this.finishedAt = new Date().toISOString();
    if (outcome.result) this.result = outcome.result;
    if (outcome.failure) this.failure = outcome.failure;
    const req = this.request;
    if (req) {
      this.revalidation = {
        skip: this.steps.map((_, i) => req.steps[i]?.base?.kind === "image"),
        reusable: reusable(req),
      };
    }
    this.request = undefined; // entries can be large, and secrets must not outlive the build
  }

  /** Tells subscribers the build has finished. */
  announce(): void {
    for (const l of this.#listeners) l({ type: "done" });
    this.#listeners.clear();
    this.#resolveDone();
  }

  info(): BuildInfo {
    const info: BuildInfo = {
      buildId: this.id,
      status: this.status,
      createdAt: this.createdAt,
      forceBuild: this.forceBuild,
      ignoreCache: this.ignoreCache,
      steps: this.steps,
      lastCursor: this.lastCursor,
    };
    if (this.startedAt) info.startedAt = this.startedAt;
    if (this.finishedAt) info.finishedAt = this.finishedAt;
    if (this.result) info.result = this.result;
    if (this.failure) info.failure = this.failure;
    return info;
  }

  persisted(): PersistedBuild {
    // The record is the public info without the live cursor, plus the log it can be replayed from.
    const { lastCursor: _live, ...info } = this.info();
    return { format: "strata-service-build/1", ...info, firstCursor: this.firstCursor, lines: this.lines };
  }

  static fromPersisted(p: PersistedBuild, limits: { lines: number; bytes: number }): Build {
    const b = new Build(p.buildId, "", p.forceBuild, p.ignoreCache, p.steps, limits);
    b.createdAt = p.createdAt;
    b.startedAt = p.startedAt;
    b.firstCursor = p.firstCursor;
    for (const l of p.lines) b.append(l);
    b.finish(p.status, { result: p.result, failure: p.failure });
    b.announce();
    b.finishedAt = p.finishedAt;
    return b;
  }
}
