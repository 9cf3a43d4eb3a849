/**
 * Image names (`NAME[:TAG]`, as `docker tag` takes them) parsed and normalised: the tag defaults to `latest`, the name
 * is kept as written (no `docker.io/library/` prefix: a name is local to a store, not a registry reference). Pure.
 */
import { InvalidImageNameError } from "../errors.js";

/** A parsed image name. `full` is `repository:tag`, the form stores key names by. */
export interface ImageName {
  readonly repository: string;
  readonly tag: string;
  readonly full: string;
}

export const DEFAULT_TAG = "latest";
const MAX_LENGTH = 255;
const COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const HOST_LABEL = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN_RE = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9a-fA-F:.]+\\])(?::[0-9]+)?$`);

/**
 * Parses `NAME[:TAG]`: `/`-separated lowercase components (letters, digits, and `.`, `_`, `__` or `-` between them),
 * the first of which may be a registry host (`host[:port]`, when it has a `.` or `:` or is `localhost`); a tag of 1–128
 * letters, digits, `_`, `.` and `-` not starting with `.` or `-`. A name may not be 64 hex digits (it would read as an
 * image id) or carry a digest. Throws {@link InvalidImageNameError} saying what is wrong.
 */
export function parseImageName(input: string): ImageName {
  if (typeof input !== "string" || input === "") throw new InvalidImageNameError(String(input), "the name is empty");
  const bad = (why: string): never => {
    throw new InvalidImageNameError(input, why);
  };
  if (/\s/.test(input)) bad("it contains whitespace");
  if (input.includes("@")) bad("a name cannot carry a digest (@sha256:…); name an image by id instead");
  if (input.startsWith("sha256:")) bad("that is an image id, not a name");
  let repository = input;
  let tag = DEFAULT_TAG;
  const colon = input.lastIndexOf(":");
  if (colon > input.lastIndexOf("/")) {
    repository = input.slice(0, colon);
    tag = input.slice(colon + 1);
    if (!TAG_RE.test(tag))
      bad(`tag "${tag}" is invalid (1–128 letters, digits, '_', '.' and '-', not starting with '.' or '-')`);
  }
  if (repository === "") bad("the name before the tag is empty");
  if (repository.length > MAX_LENGTH) bad(`the name is longer than ${MAX_LENGTH} characters`);
  const parts = repository.split("/");
  const first = parts[0]!;
  const isHost = parts.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost");
  if (isHost && !DOMAIN_RE.test(first)) bad(`"${first}" is not a valid registry host[:port]`);
  for (const p of isHost ? parts.slice(1) : parts) {
    if (p === "") bad("it has an empty path component (a leading, trailing or double '/')");
    if (!COMPONENT_RE.test(p))
      bad(
        `"${p}" is not a valid name component (lowercase letters and digits, with '.', '_', '__' or '-' between them)`,
      );
  }
  if (/^[0-9a-f]{64}$/.test(repository)) bad("a name cannot be 64 hex digits (it would read as an image id)");
  return { repository, tag, full: `${repository}:${tag}` };
}

/** Whether `ref` could be an image name (parses as one); ids and id prefixes with `sha256:` never are. */
export function isImageName(ref: string): boolean {
  try {
    parseImageName(ref);
    return true;
  } catch {
    return false;
  }
}

/** The normalised, deduplicated names of `names` (`NAME[:TAG]` each); the first bad one throws. */
export function checkImageNames(names: readonly string[]): string[] {
  return [...new Set(names.map((n) => parseImageName(n).full))];
}
