/** Build logging: `=> Step N: …` lines, streamed output with secrets redacted, and a tail kept for errors. */

export type LogSink = (line: string) => void;

export const stderrSink: LogSink = (line) => process.stderr.write(line + "\n");

/** Replaces every occurrence of any secret value with `***`. */
export function redactor(secrets: Iterable<string>): (text: string) => string {
  const values = [...new Set(secrets)].filter((v) => v.length >= 3).sort((a, b) => b.length - a.length);
  if (!values.length) return (t) => t;
  return (t) => {
    let out = t;
    for (const v of values) out = out.split(v).join("***");
    return out;
  };
}

/** Splits streamed chunks into lines, redacts them, keeps the last `tailSize`, forwards each line. */
export class LineLog {
  readonly tail: string[] = [];
  readonly all: string[] = [];
  #partial = "";
  constructor(
    private readonly sink: LogSink,
    private readonly redact: (t: string) => string,
    private readonly prefix = "    ",
    private readonly tailSize = 25,
  ) {}
  write(chunk: string): void {
    const text = this.#partial + chunk;
    const lines = text.split(/\r?\n/);
    this.#partial = lines.pop() ?? "";
    for (const l of lines) this.line(l);
  }
  line(raw: string): void {
    const l = this.redact(raw);
    this.tail.push(l);
    if (this.tail.length > this.tailSize) this.tail.shift();
    this.all.push(l);
    this.sink(this.prefix + l);
  }
  flush(): void {
    if (this.#partial) this.line(this.#partial);
    this.#partial = "";
  }
}
