/** Errors raised while reading a Dockerfile: each names the file, line and column and says what is wrong. */
import { StrataError } from "../errors.js";

// DockerfileSyntaxError lives with every other error class; the runtime's source selection raises it too.
export { DockerfileSyntaxError, type SourceLocation } from "../errors.js";

/**
 * Variable expansion failed (unterminated quote or `${`, unsupported modifier, `${VAR:?message}` on an unset
 * variable). `offset` is the UTF-16 index in the word where the lexer stopped. The Dockerfile layer turns this into a
 * {@link DockerfileSyntaxError} carrying the instruction's location.
 */
export class ShellExpansionError extends StrataError {
  override readonly code = "SHELL_EXPANSION";
  override readonly fault = "user";
  constructor(
    message: string,
    readonly word: string,
    readonly offset: number,
  ) {
    super(message);
    this.name = "ShellExpansionError";
  }
}
