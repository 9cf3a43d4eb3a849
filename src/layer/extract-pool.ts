/**
 * Layer extraction on worker threads. Creating tens of thousands of files is mostly kernel time on the calling
 * thread, and the kernel creates files in parallel when asked from several threads; so layers that unpack at the
 * same time (a pull downloads three at once) should not queue on the main thread. `extractLayerOffThread` has
 * `extractLayer`'s contract — same options, same diffID, the same errors (an `UnsafeLayerError` or a
 * `TarFormatError` stays one) — and runs it on a pooled worker: the input's bytes are posted to it with a bounded
 * amount in flight, and the promise settles only once the worker has stopped touching `root`, so a caller may remove
 * the directory right after.
 *
 * `extractLayerFileOffThread` does the same for a layer file, which the worker reads itself.
 *
 * Pool size: `STRATA_EXTRACT_WORKERS` (default: the machine's available parallelism, at most 4); 0 extracts on the
 * calling thread. Idle workers do not keep the process alive.
 */
import { createReadStream } from "node:fs";
import os from "node:os";
import { PassThrough, type Readable } from "node:stream";
import { Worker } from "node:worker_threads";
import { StrataError, TarFormatError } from "../errors.js";
import type { Digest } from "../util/digest.js";
import { extractLayer, UnsafeLayerError, type ExtractOptions } from "./tar-extract.js";

/** The options that cross to the worker (everything but the warning callback, which comes back as messages). */
type PlainExtractOptions = Omit<ExtractOptions, "onWarning">;

/** Messages to a worker. */
export type ToWorker =
  | {
      type: "start";
      id: number;
      root: string;
      opts: PlainExtractOptions;
      warnings: boolean /** read by the worker itself */;
      file?: string;
    }
  | { type: "chunk"; id: number; data: Uint8Array }
  | { type: "end"; id: number }
  | { type: "abort"; id: number; reason: string };

/** An error as data: an `UnsafeLayerError`'s or `TarFormatError`'s fields, or any other error's name, message and errno fields. */
export type WorkerError =
  | { kind: "unsafe"; entry: string; why: string; message: string }
  | { kind: "tar"; field: string; offset: number; problem: string; where: string; message: string }
  | { kind: "other"; name: string; message: string; code?: string; errno?: number; syscall?: string; path?: string };

/** Messages from a worker. */
export type FromWorker =
  | { type: "ack"; id: number; bytes: number }
  | { type: "warning"; id: number; line: string }
  | { type: "done"; id: number; diffId: Digest }
  | { type: "error"; id: number; error: WorkerError };

/** A worker thread stopped (crashed or was terminated) in the middle of an extraction. */
export class ExtractWorkerError extends StrataError {
  override readonly code = "EXTRACT_WORKER";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ExtractWorkerError";
  }
}

/** Bytes posted to a worker and not yet taken by its extractor. */
const MAX_IN_FLIGHT = 8 * 1024 * 1024;

function poolSize(): number {
  const v = process.env["STRATA_EXTRACT_WORKERS"];
  if (v !== undefined && v !== "") {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0)
      throw new StrataError(
        `STRATA_EXTRACT_WORKERS=${JSON.stringify(v)} is not a whole number (0 extracts layers on the calling thread)`,
      );
    return Math.min(n, 64);
  }
  return Math.max(1, Math.min(os.availableParallelism(), 4));
}

function rebuild(e: WorkerError): Error {
  if (e.kind === "unsafe") return new UnsafeLayerError(e.entry, e.why);
  if (e.kind === "tar") return new TarFormatError(e.field, e.offset, e.problem, e.where);
  const err = new Error(e.message) as NodeJS.ErrnoException;
  err.name = e.name;
  if (e.code !== undefined) err.code = e.code;
  if (e.errno !== undefined) err.errno = e.errno;
  if (e.syscall !== undefined) err.syscall = e.syscall;
  if (e.path !== undefined) err.path = e.path;
  return err;
}

/** The main thread's view of one job on a worker. */
interface Job {
  id: number;
  inFlight: number;
  /** Wakes the feeder when acknowledgements bring the bytes in flight under the limit. */
  drained?: () => void;
  onWarning?: (line: string) => void;
  settle: (r: { diffId: Digest } | { error: Error }) => void;
}

class PooledWorker {
  readonly worker: Worker;
  job: Job | undefined;
  /** Given to a caller (from `acquire` until `release`), with or without a job started yet. */
  busy = false;
  dead = false;

  constructor(private readonly onExit: (w: PooledWorker) => void) {
    // Not the process's `-e` / `--input-type` (a worker is a file); other node options (profilers, limits) carry over.
    const execArgv: string[] = [];
    for (let i = 0; i < process.execArgv.length; i++) {
      const a = process.execArgv[i]!;
      if (a === "-e" || a === "--eval" || a === "-p" || a === "--print") i++;
      else if (!a.startsWith("--input-type") && !a.startsWith("--eval=") && !a.startsWith("--print=")) execArgv.push(a);
    }
    this.worker = new Worker(new URL("./extract-worker.js", import.meta.url), { execArgv });
    this.worker.unref();
    this.worker.on("message", (m: FromWorker) => this.message(m));
    this.worker.on("error", (e) =>
      this.fail(new ExtractWorkerError(`a layer extraction thread failed: ${e.message}`, { cause: e })),
    );
    this.worker.on("exit", (code) =>
      this.fail(new ExtractWorkerError(`a layer extraction thread exited (code ${code}) during an extraction`)),
    );
  }

  private message(m: FromWorker): void {
    const job = this.job;
    if (!job || m.id !== job.id) return;
    switch (m.type) {
      case "ack":
        job.inFlight -= m.bytes;
        if (job.inFlight < MAX_IN_FLIGHT) job.drained?.();
        return;
      case "warning":
        job.onWarning?.(m.line);
        return;
      case "done":
        this.finish({ diffId: m.diffId });
        return;
      case "error":
        this.finish({ error: rebuild(m.error) });
        return;
    }
  }

  private finish(r: { diffId: Digest } | { error: Error }): void {
    const job = this.job!;
    this.job = undefined;
    this.worker.unref();
    job.drained?.();
    job.settle(r);
  }

  private fail(e: Error): void {
    if (this.dead) return;
    this.dead = true;
    this.onExit(this);
    if (this.job) this.finish({ error: e });
  }

  post(m: ToWorker, transfer: ArrayBuffer[] = []): void {
    this.worker.postMessage(m, transfer);
  }
}

/**
 * An extraction fed by its caller: `write` the layer's bytes in order, then `end` for the diffID, or `abort` when
 * the input is bad. Every method settles only once the extractor has stopped touching the directory (for `write`:
 * once the bytes in flight are under the limit), so a caller may remove it right after. Once the extractor has
 * failed, `failed` is true and further writes are dropped; `end` reports the failure.
 */
export interface ExtractionSink {
  /**
   * Queues the next bytes. With `owned`, the chunk's memory is handed to the extractor (it must span its whole
   * ArrayBuffer and not be used again by the caller): no copy is made.
   */
  write(chunk: Uint8Array, owned?: boolean): Promise<void>;
  /** No more bytes: the diffID, or the extraction's error. */
  end(): Promise<Digest>;
  /** Stops the extraction; resolves once it has stopped. */
  abort(reason: Error): Promise<void>;
  readonly failed: boolean;
}

class ExtractPool {
  private readonly workers: PooledWorker[] = [];
  private readonly waiting: ((w: PooledWorker) => void)[] = [];
  private nextId = 1;

  constructor(private readonly size: number) {}

  get workerCount(): number {
    return this.workers.length;
  }

  private async acquire(): Promise<PooledWorker> {
    const idle = this.workers.find((w) => !w.busy && !w.dead);
    if (idle) {
      idle.busy = true;
      return idle;
    }
    if (this.workers.length < this.size) {
      const w = new PooledWorker((dead) => {
        this.workers.splice(this.workers.indexOf(dead), 1);
        // A queued job gets a fresh worker instead of waiting for one that will never come back.
        const next = this.waiting.shift();
        if (next) void this.acquire().then(next);
      });
      w.busy = true;
      this.workers.push(w);
      return w;
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(w: PooledWorker): void {
    if (w.dead) return;
    const next = this.waiting.shift();
    if (next)
      next(w); // stays busy, for the next caller
    else w.busy = false;
  }

  /** Extracts the layer file `file` (the worker reads it). */
  async extractFile(file: string, root: string, opts: ExtractOptions): Promise<Digest> {
    const { w, settled } = await this.start(root, opts, file);
    const r = await settled;
    this.release(w);
    if ("error" in r) throw r.error;
    return r.diffId;
  }

  /** A worker with a job started on it. */
  private async start(
    root: string,
    opts: ExtractOptions,
    file?: string,
  ): Promise<{ w: PooledWorker; job: Job; id: number; settled: Promise<{ diffId: Digest } | { error: Error }> }> {
    const w = await this.acquire();
    const id = this.nextId++;
    const { onWarning, ...plain } = opts;
    let settle!: Job["settle"];
    const settled = new Promise<{ diffId: Digest } | { error: Error }>((r) => (settle = r));
    const job: Job = { id, inFlight: 0, settle, ...(onWarning ? { onWarning } : {}) };
    w.job = job;
    w.worker.ref();
    w.post({
      type: "start",
      id,
      root,
      opts: plain,
      warnings: onWarning !== undefined,
      ...(file !== undefined ? { file } : {}),
    });
    return { w, job, id, settled };
  }

  async open(root: string, opts: ExtractOptions): Promise<ExtractionSink> {
    const { w, job, id, settled } = await this.start(root, opts);
    let done = false;
    const result = settled.then((r) => {
      done = true;
      this.release(w);
      return r;
    });
    return {
      get failed() {
        return done;
      },
      async write(chunk, owned = false) {
        if (done) return;
        let data = chunk;
        if (!owned || chunk.byteOffset !== 0 || chunk.byteLength !== chunk.buffer.byteLength) {
          // A copy the worker takes over: cloning a view would copy its whole backing buffer (often a pool's).
          data = new Uint8Array(chunk.byteLength);
          data.set(chunk);
        }
        job.inFlight += data.byteLength;
        w.post({ type: "chunk", id, data }, [data.buffer as ArrayBuffer]);
        if (job.inFlight >= MAX_IN_FLIGHT && !done) await new Promise<void>((r) => (job.drained = r));
        job.drained = undefined;
      },
      async end() {
        if (!done) w.post({ type: "end", id });
        const r = await result;
        if ("error" in r) throw r.error;
        return r.diffId;
      },
      async abort(reason) {
        if (!done) w.post({ type: "abort", id, reason: reason.message });
        await result;
      },
    };
  }
}

/** The in-thread sink (`STRATA_EXTRACT_WORKERS=0`): `extractLayer` over a stream the writes go into. */
function inThreadSink(root: string, opts: ExtractOptions): ExtractionSink {
  const input = new PassThrough({ highWaterMark: MAX_IN_FLIGHT });
  input.on("error", () => undefined); // reported through extractLayer's rejection
  let done = false;
  let wake: (() => void) | undefined;
  const result = extractLayer(input, root, opts).then(
    (diffId) => ({ diffId }),
    (e: unknown) => ({ error: e instanceof Error ? e : new Error(String(e)) }),
  );
  void result.then(() => {
    done = true;
    wake?.();
  });
  return {
    get failed() {
      return done;
    },
    async write(chunk) {
      if (done || input.write(chunk)) return;
      await new Promise<void>((resolve) => {
        const onDrain = (): void => {
          wake = undefined;
          input.off("drain", onDrain);
          resolve();
        };
        wake = onDrain;
        input.once("drain", onDrain);
      });
    },
    async end() {
      input.end();
      const r = await result;
      if ("error" in r) throw r.error;
      return r.diffId;
    },
    async abort(reason) {
      input.destroy(reason);
      await result;
    },
  };
}

let pool: ExtractPool | undefined;

/** Worker threads the pool has running (0 before the first extraction and with `STRATA_EXTRACT_WORKERS=0`). */
export function extractWorkerCount(): number {
  return pool?.workerCount ?? 0;
}

/** The pool, or undefined when `STRATA_EXTRACT_WORKERS` is 0 (extract on the calling thread). */
function thePool(): ExtractPool | undefined {
  const size = poolSize();
  if (size === 0) return undefined;
  return (pool ??= new ExtractPool(size));
}

/** Starts an extraction into `root` on a pooled worker (on this thread when `STRATA_EXTRACT_WORKERS` is 0). */
export async function openExtraction(root: string, opts: ExtractOptions = {}): Promise<ExtractionSink> {
  return thePool()?.open(root, opts) ?? inThreadSink(root, opts);
}

/**
 * `extractLayer` of a layer file (e.g. a blob in the store) on a worker thread, which reads the file itself; on the
 * calling thread when `STRATA_EXTRACT_WORKERS` is 0.
 */
export async function extractLayerFileOffThread(
  file: string,
  root: string,
  opts: ExtractOptions = {},
): Promise<Digest> {
  return (
    thePool()?.extractFile(file, root, opts) ??
    extractLayer(createReadStream(file, { highWaterMark: 1024 * 1024 }), root, opts)
  );
}

/**
 * `extractLayer` on a worker thread (see the module comment); on the calling thread when `STRATA_EXTRACT_WORKERS`
 * is 0. The input is consumed here, its bytes copied to the worker.
 */
export async function extractLayerOffThread(input: Readable, root: string, opts: ExtractOptions = {}): Promise<Digest> {
  const sink = await openExtraction(root, opts);
  try {
    for await (const chunk of input) {
      if (sink.failed) break; // the extractor failed: its error is the one `end` reports
      await sink.write(chunk as Buffer);
    }
  } catch (e) {
    await sink.abort(e instanceof Error ? e : new Error(String(e)));
    throw e;
  }
  return sink.end();
}
