/**
 * .dockerignore pattern matching, with the semantics Docker/BuildKit apply (moby/patternmatcher,
 * `MatchesOrParentMatches`), re-implemented here from its documented behaviour and test vectors.
 *
 * Summary of the rules:
 * - Each pattern is trimmed; a leading `!` (optionally followed by spaces) makes it an exclusion,
 *   i.e. a re-include. The rest is cleaned like Go's `path.Clean` (`//`, `.`, `..` collapsed,
 *   trailing `/` dropped) and a leading `/` is stripped (patterns are relative to the context root).
 * - A path is ignored when the LAST pattern that matches it, or matches one of its parent
 *   directories, is not an exclusion.
 * - `*` matches any run of non-`/` characters, `?` one non-`/` character, `[...]` a character
 *   class (`[^...]` negates; ranges `a-z`; `\` escapes inside), `\x` the literal `x`, and `**`
 *   any number of path segments including none (a `/` right after `**` is absorbed by it).
 * - Malformed patterns (unterminated `[`, empty or reversed ranges, a trailing `\`, a bare `!`)
 *   are rejected by {@link PatternMatcher.parse} with an {@link InvalidDefinitionError}.
 *
 * Deliberate differences from moby/patternmatcher, all in corners where upstream misbehaves:
 * - upstream hands escapes like `\d`, `\b`, `\n` to Go's regexp engine (a digit class, a word
 *   boundary, a newline); here `\x` is always the literal `x`, as Go's `filepath.Match` defines it.
 * - upstream passes `^` outside a class to the regexp engine unescaped (an anchor that can never
 *   match mid-pattern); here it is a literal `^`.
 * - inside a class, upstream lets Go's regexp engine interpret POSIX classes such as `[[:alpha:]]`;
 *   here the class syntax is exactly `filepath.Match`'s.
 * - a reversed range such as `[z-a]` (or `[Local-Only]`) is accepted by upstream's `New` and then
 *   fails every match; here it is rejected at parse time.
 * - `**` also matches across newlines in file names (upstream's `.*` does not).
 * - `./!foo` is the literal name `!foo` (upstream cleans first and then sees a `!`).
 * - a pattern that names the context root itself (`/`, `.`, `./`) matches nothing upstream and is
 *   dropped here.
 */
import { InvalidDefinitionError } from "../errors.js";

/** Cleans a "/"-separated path like Go's `path.Clean`; "" becomes ".". */
function cleanPath(p: string): string {
  if (p === "") return ".";
  const rooted = p.charCodeAt(0) === 0x2f;
  const out: string[] = [];
  for (const seg of p.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
      continue;
    }
    out.push(seg);
  }
  const joined = out.join("/");
  if (rooted) return "/" + joined;
  return joined === "" ? "." : joined;
}

/** Cheap check: does `p` need {@link cleanPath} at all? */
const NEEDS_CLEAN = /\/\/|(^|\/)\.\.?(\/|$)|\/$/;

interface Normalised {
  exclusion: boolean;
  /** the cleaned pattern without `!`; "" when it names the context root (or nothing) */
  body: string;
}

function normalise(raw: string): Normalised | null {
  let p = raw.trim();
  if (p === "") return null;
  let exclusion = false;
  if (p.charCodeAt(0) === 0x21 /* ! */) {
    exclusion = true;
    p = p.slice(1).trim();
  }
  if (p !== "") {
    p = cleanPath(p);
    while (p.charCodeAt(0) === 0x2f) p = p.slice(1);
    if (p === ".") p = "";
  }
  return { exclusion, body: p };
}

type Token =
  /** a literal code point; `plain` is false for escaped characters and a stray `]` */
  | { kind: "lit"; ch: string; plain: boolean }
  | { kind: "star" }
  | { kind: "any" }
  | { kind: "globstar"; atEnd: boolean }
  | { kind: "class"; negated: boolean; ranges: Array<[number, number]> };

class PatternSyntaxError extends Error {}

function tokenize(pattern: string): Token[] {
  const cps = Array.from(pattern);
  const n = cps.length;
  const tokens: Token[] = [];
  let i = 0;

  const classChar = (): number => {
    if (i >= n) throw new PatternSyntaxError('unterminated character class (a "[" without its "]")');
    let c = cps[i]!;
    if (c === "-" || c === "]") {
      throw new PatternSyntaxError(`unescaped "${c}" inside a character class (write \\${c} to mean it literally)`);
    }
    if (c === "\\") {
      i++;
      if (i >= n) throw new PatternSyntaxError('unterminated character class (a "[" without its "]")');
      c = cps[i]!;
    }
    i++;
    return c.codePointAt(0)!;
  };

  while (i < n) {
    const c = cps[i]!;
    if (c === "*") {
      if (cps[i + 1] === "*") {
        i += 2;
        if (cps[i] === "/") i++;
        tokens.push({ kind: "globstar", atEnd: i >= n });
      } else {
        tokens.push({ kind: "star" });
        i++;
      }
    } else if (c === "?") {
      tokens.push({ kind: "any" });
      i++;
    } else if (c === "\\") {
      if (i + 1 >= n) throw new PatternSyntaxError('it ends with a lone "\\" (write \\\\ for a literal backslash)');
      tokens.push({ kind: "lit", ch: cps[i + 1]!, plain: false });
      i += 2;
    } else if (c === "[") {
      i++;
      let negated = false;
      if (cps[i] === "^") {
        negated = true;
        i++;
      }
      const ranges: Array<[number, number]> = [];
      for (;;) {
        if (i >= n) throw new PatternSyntaxError('unterminated character class (a "[" without its "]")');
        if (cps[i] === "]" && ranges.length > 0) {
          i++;
          break;
        }
        const lo = classChar();
        let hi = lo;
        if (cps[i] === "-") {
          i++;
          hi = classChar();
        }
        if (hi < lo) {
          throw new PatternSyntaxError(
            `character range "${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)}" is reversed`,
          );
        }
        ranges.push([lo, hi]);
      }
      tokens.push({ kind: "class", negated, ranges });
    } else {
      tokens.push({ kind: "lit", ch: c, plain: c !== "]" });
      i++;
    }
  }
  return tokens;
}

function reChar(cp: number): string {
  if ((cp >= 0x30 && cp <= 0x39) || (cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a) || cp === 0x5f) {
    return String.fromCharCode(cp);
  }
  return `\\u{${cp.toString(16)}}`;
}

interface CompiledPattern {
  readonly exclusion: boolean;
  readonly test: (path: string) => boolean;
}

function compile(body: string, exclusion: boolean): CompiledPattern {
  const tokens = tokenize(body);

  // A pattern that starts with `**` and is otherwise plain text is a suffix test, exactly as
  // upstream does it. (That makes `**foo` match `xfoo`, where the general rule would not.)
  if (tokens[0]?.kind === "globstar" && tokens.slice(1).every((t) => t.kind === "lit" && t.plain)) {
    const suffix = body.slice(2);
    const bare = suffix.startsWith("/") ? suffix.slice(1) : null;
    return { exclusion, test: (path) => path.endsWith(suffix) || path === bare };
  }

  if (tokens.every((t) => t.kind === "lit")) {
    const literal = tokens.map((t) => (t.kind === "lit" ? t.ch : "")).join("");
    return { exclusion, test: (path) => path === literal };
  }

  // Runs of `**` mean the same as one; merging them keeps the backtracking regexp engine away
  // from polynomial blow-ups on patterns like `**/**/**/x`.
  const merged: Token[] = [];
  for (const t of tokens) {
    const prev = merged[merged.length - 1];
    if (t.kind === "globstar" && prev?.kind === "globstar") merged[merged.length - 1] = t;
    else merged.push(t);
  }

  let src = "^";
  for (const t of merged) {
    switch (t.kind) {
      case "lit":
        src += reChar(t.ch.codePointAt(0)!);
        break;
      case "star":
        src += "[^/]*";
        break;
      case "any":
        src += "[^/]";
        break;
      case "globstar":
        src += t.atEnd ? ".*" : "(?:.*/)?";
        break;
      case "class":
        src += "[" + (t.negated ? "^" : "");
        for (const [lo, hi] of t.ranges) src += lo === hi ? reChar(lo) : `${reChar(lo)}-${reChar(hi)}`;
        src += "]";
        break;
    }
  }
  src += "$";
  const re = new RegExp(src, "su");
  return { exclusion, test: (path) => re.test(path) };
}

function invalid(pattern: string, why: string): InvalidDefinitionError {
  return new InvalidDefinitionError(`invalid ignore pattern ${JSON.stringify(pattern)}: ${why}`);
}

/** A parsed list of .dockerignore-style patterns. */
export class PatternMatcher {
  /** true when there are `!` patterns (then a walker must not prune ignored directories) */
  readonly hasExclusions: boolean;
  /** the normalised patterns (`!` prefix kept), for cache keys and logging */
  readonly patterns: readonly string[];
  readonly #compiled: readonly CompiledPattern[];

  private constructor(patterns: string[], compiled: CompiledPattern[]) {
    this.patterns = Object.freeze(patterns);
    this.#compiled = compiled;
    this.hasExclusions = compiled.some((c) => c.exclusion);
  }

  /** Parses and validates patterns; throws InvalidDefinitionError naming the first bad one. */
  static parse(patterns: readonly string[]): PatternMatcher {
    const kept: string[] = [];
    const compiled: CompiledPattern[] = [];
    for (const raw of patterns) {
      const norm = normalise(raw);
      if (norm === null) continue;
      if (norm.body === "") {
        if (norm.exclusion) {
          throw invalid(
            raw,
            'an exclusion needs a pattern after the "!" (write \\! to match a name starting with "!")',
          );
        }
        continue; // names the context root itself: matches nothing, as upstream
      }
      try {
        compiled.push(compile(norm.body, norm.exclusion));
      } catch (e) {
        if (e instanceof PatternSyntaxError) throw invalid(raw, e.message);
        throw e;
      }
      kept.push((norm.exclusion ? "!" : "") + norm.body);
    }
    return new PatternMatcher(kept, compiled);
  }

  /**
   * True when `relPath` is ignored: the last pattern matching it or one of its parent directories
   * is not an exclusion. relPath uses "/" separators, relative to the context root, no leading "./".
   */
  matches(relPath: string): boolean {
    if (this.#compiled.length === 0) return false;
    const file = NEEDS_CLEAN.test(relPath) || relPath === "" ? cleanPath(relPath) : relPath;
    if (file === ".") return false;

    let parents: string[] | undefined;
    let matched = false;
    for (const pattern of this.#compiled) {
      // An inclusion cannot change an already-ignored path, nor an exclusion a kept one.
      if (pattern.exclusion !== matched) continue;
      let hit = pattern.test(file);
      if (!hit) {
        parents ??= parentDirs(file);
        for (const parent of parents) {
          if (pattern.test(parent)) {
            hit = true;
            break;
          }
        }
      }
      if (hit) matched = !pattern.exclusion;
    }
    return matched;
  }
}

/** "a/b/c" -> ["a", "a/b"] */
function parentDirs(file: string): string[] {
  const out: string[] = [];
  for (let i = file.indexOf("/", 1); i !== -1; i = file.indexOf("/", i + 1)) out.push(file.slice(0, i));
  return out;
}

/**
 * Parses a .dockerignore file's text like Docker does: one pattern per line; a line whose first
 * character is `#` is a comment; lines are trimmed, empty ones dropped; each pattern is normalised
 * (cleaned, leading "/" removed, "! pat" -> "!pat"). Patterns are not validated here:
 * pass the result to {@link PatternMatcher.parse}.
 */
export function parseIgnoreFile(text: string): string[] {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const out: string[] = [];
  for (const line of text.split(/\r?\n|\r/)) {
    if (line.startsWith("#")) continue;
    const norm = normalise(line);
    if (norm === null) continue;
    if (norm.body === "" && !norm.exclusion) continue;
    out.push((norm.exclusion ? "!" : "") + norm.body);
  }
  return out;
}
