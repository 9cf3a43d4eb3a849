/**
 * A closed stdout (`strata images | head`) ends a command quietly with exit 0, as the reader has all it wanted — not
 * with an EPIPE stack trace; a closed stderr only silences it. Node ignores SIGPIPE, so a write to a closed pipe is an `error` event on the stream, which
 * unhandled crashes the process. A command with something to stop first (`strata run`: its container) takes the
 * signal; every other command exits at once, as a coreutils tool ends at its first write to a closed pipe.
 */

/** Whether an error from a stdio stream means its reader has gone. */
function readerGone(e: NodeJS.ErrnoException): boolean {
  return e.code === "EPIPE" || e.code === "ERR_STREAM_DESTROYED" || e.code === "ECONNRESET";
}

/** Watches a process's stdout (and stderr) for a closed reader (see the module comment). */
export class ClosedStdout {
  readonly #controller = new AbortController();
  #handled = false;

  constructor(
    stdout: NodeJS.WriteStream = process.stdout,
    stderr: NodeJS.WriteStream = process.stderr,
    readonly exit: (code: number) => void = (code) => process.exit(code),
  ) {
    stdout.on("error", (e: NodeJS.ErrnoException) => {
      // Later writes go nowhere (they would raise again).
      stdout.write = (() => true) as typeof stdout.write;
      if (!readerGone(e)) {
        stderr.write(`strata: cannot write to stdout: ${e.message}\n`);
        this.exit(74); // EX_IOERR
        return;
      }
      this.#controller.abort();
      if (!this.#handled) this.exit(0);
    });
    // Progress and messages are advisory: with stderr gone the command carries on (a build finishes and records
    // its image) and its result still reaches stdout.
    stderr.on("error", () => {
      stderr.write = (() => true) as typeof stderr.write;
    });
  }

  /** Whether stdout's reader has gone. */
  get closed(): boolean {
    return this.#controller.signal.aborted;
  }

  /**
   * Fires when stdout's reader goes; a command that takes it stops its work itself and returns (then exits 0: see
   * {@link exitCode}) instead of the process exiting at once.
   */
  signal(): AbortSignal {
    this.#handled = true;
    return this.#controller.signal;
  }

  /** The exit code to use for a command that returned `code`: 0 once stdout's reader has gone. */
  exitCode(code: number): number {
    return this.closed ? 0 : code;
  }
}
