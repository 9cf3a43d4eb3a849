/** Errors raised while reading a Dockerfile: each names the file, line and column and says what is wrong. */
import { StrataError } from "../errors.js";

/** A place in a Dockerfile: 1-based line and column (columns count UTF-16 code units, as editors do). */
export interface SourceLocation {
  readonly file: string;
  readonly line: number;
  readonly column: number;
}

/**
 * The Dockerfile is malformed or asks for something BuildKit would reject (unknown instruction, bad flag, missing
 * arguments, undefined stage, a failed `${VAR:?message}` expansion, …). The message reads
 * `Dockerfile:12:5: unknown instruction "RUNN"`.
 */
export class DockerfileSyntaxError extends StrataError {
  override readonly code = "DOCKERFILE_SYNTAX";
  override readonly fault = "user";
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** the message without the `file:line:column: ` prefix */
  readonly detail: string;
  constructor(location: SourceLocation, detail: string, options?: { cause?: unknown }) {
    super(`${location.file}:${location.line}:${location.column}: ${detail}`, options);
    this.name = "DockerfileSyntaxError";
    this.file = location.file;
    this.line = location.line;
    this.column = location.column;
    this.detail = detail;
  }
}

/**
 * Variable expansion failed (unterminated quote or `${`, unsupported modifier, `${VAR:?message}` on an unset
 * variable). `offset` is the UTF-16 index in the word where the lexer stopped. The Dockerfile layer turns this into a
 * {@link DockerfileSyntaxError} carrying the instruction's location.
 */
export class ShellExpansionError extends StrataError {
  override readonly code = "SHELL_EXPANSION";
  override readonly fault = "user";
  constructor(message: string, readonly word: string, readonly offset: number) {
    super(message);
    this.name = "ShellExpansionError";
  }
}
