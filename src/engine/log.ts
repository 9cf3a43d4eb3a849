/** Build logging: `=> Step N: …` lines, streamed output with secrets redacted, and a tail kept for errors. */

import { secretForms } from "./secret-forms.js";

export type LogSink = (line: string) => void;

export const stderrSink: LogSink = (line) => process.stderr.write(line + "\n");

/**
 * Replaces every occurrence of any secret value with `***`: the value itself and its encoded forms (base64, URL
 * encodings, hex, JSON escaping, the lines of a multi-line value; see `secret-forms.ts` for which and why values
 * under 3 characters are left alone). One pass of one expression, longest form first.
 */
export function redactor(secrets: Iterable<string>): (text: string) => string {
  const forms = [...new Set([...new Set(secrets)].flatMap(secretForms))].sort((a, b) => b.length - a.length);
  if (!forms.length) return (t) => t;
  const re = new RegExp(forms.map(escapeRegExp).join("|"), "g");
  return (t) => t.replace(re, "***");
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
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
