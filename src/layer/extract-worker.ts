/**
 * The worker-thread side of `extract-pool.ts`: runs `extractLayer` for one job at a time on the bytes the main
 * thread posts, acknowledging each chunk once it is consumed (the main thread's backpressure), forwarding warnings,
 * and reporting the diffID or the error (as plain data: errors do not cross threads with their class).
 */
import { parentPort } from "node:worker_threads";
import { createReadStream } from "node:fs";
import { PassThrough, type Readable } from "node:stream";
import { TarFormatError } from "../errors.js";
import { extractLayer, UnsafeLayerError } from "./tar-extract.js";
import type { ToWorker, WorkerError, FromWorker } from "./extract-pool.js";

const port = parentPort;
if (!port) throw new Error("extract-worker.js runs as a worker thread only");

let job: { id: number; input: PassThrough } | undefined;

const post = (m: FromWorker): void => port.postMessage(m);

function describe(e: unknown): WorkerError {
  if (e instanceof UnsafeLayerError) return { kind: "unsafe", entry: e.entry, why: e.why, message: e.message };
  if (e instanceof TarFormatError)
    return { kind: "tar", field: e.field, offset: e.offset, problem: e.problem, where: e.where, message: e.message };
  const err = e instanceof Error ? e : new Error(String(e));
  const x = err as NodeJS.ErrnoException;
  const out: WorkerError = { kind: "other", name: err.name, message: err.message };
  if (typeof x.code === "string") out.code = x.code;
  if (typeof x.errno === "number") out.errno = x.errno;
  if (typeof x.syscall === "string") out.syscall = x.syscall;
  if (typeof x.path === "string") out.path = x.path;
  return out;
}

port.on("message", (m: ToWorker) => {
  switch (m.type) {
    case "start": {
      const id = m.id;
      const opts = {
        ...m.opts,
        ...(m.warnings ? { onWarning: (line: string) => post({ type: "warning", id, line }) } : {}),
      };
      let input: Readable;
      if (m.file !== undefined) {
        // The worker reads the blob itself: nothing crosses threads but the result.
        input = createReadStream(m.file, { highWaterMark: 1024 * 1024 });
      } else {
        const feed = new PassThrough({ highWaterMark: 1024 * 1024 });
        feed.on("error", () => undefined); // reported through extractLayer's rejection
        job = { id, input: feed };
        input = feed;
      }
      extractLayer(input, m.root, opts).then(
        (diffId) => {
          job = undefined;
          post({ type: "done", id, diffId });
        },
        (e: unknown) => {
          job = undefined;
          post({ type: "error", id, error: describe(e) });
        },
      );
      return;
    }
    case "chunk": {
      if (job?.id !== m.id) return;
      const buf = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
      const { id } = job;
      // Acknowledged once the extractor has taken it (the write callback), so the main thread keeps a bounded
      // number of bytes in flight.
      job.input.write(buf, () => post({ type: "ack", id, bytes: buf.length }));
      return;
    }
    case "end":
      if (job?.id === m.id) job.input.end();
      return;
    case "abort":
      if (job?.id === m.id) job.input.destroy(new Error(m.reason));
      return;
  }
});
