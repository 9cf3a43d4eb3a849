/**
 * Variable expansion with BuildKit's semantics (`frontend/dockerfile/shell`: `ProcessWord` / `ProcessWords`),
 * re-implemented here from its documented behaviour and its public test tables (see `fixtures/dockerfile/`).
 *
 * What a word may contain:
 * - `$NAME`, `${NAME}`; a name is letters, digits and `_`; `$1`… (all digits) and the special parameters
 *   `$@ $* $# $? $- $$ $! $0` are names too (they are never set, so they expand to "").
 * - `${NAME:-word}` / `${NAME-word}`: word when NAME is unset (or, with `:`, empty);
 *   `${NAME:+word}` / `${NAME+word}`: word when NAME is set (and, with `:`, non-empty), else "";
 *   `${NAME:?msg}` / `${NAME?msg}`: an error saying `NAME: msg` when NAME is unset (or, with `:`, empty);
 *   `${NAME#pat}` / `${NAME##pat}`: NAME without its shortest / longest prefix matching the glob `pat`;
 *   `${NAME%pat}` / `${NAME%%pat}`: the same for suffixes; `${NAME/pat/repl}` / `${NAME//pat/repl}`: the first /
 *   every match of `pat` replaced. Globs know `*`, `?` and `\` escapes of `*`, `?`, `\`, `}` and `/`.
 *   `word`, `pat` and `repl` may themselves contain expansions. `${NAME=…}`, `${NAME:=…}` and any other modifier
 *   are errors, as are `${}`, `${:…}`, `${{…}` and an unterminated `${`.
 * - `'…'` is literal; in `"…"` only `$` expands and the escape token escapes only `"`, `$` and itself; outside
 *   quotes the escape token (`\`, or `` ` `` with `# escape=`) makes the next character literal, and a lone one at
 *   the end is dropped.
 * - {@link ShellLex.processWords} splits the result on unquoted whitespace, including whitespace that came from a
 *   variable's value; quoted text (even empty) never splits and an empty quoted word alone yields no word.
 *
 * Each call also reports which names it looked up and found (`matched`) or did not find (`unmatched`): BuildKit
 * uses the same sets to tell which build args a step used.
 */
import { ShellExpansionError } from "./errors.js";

/** Variables visible to an expansion: a map, a plain object, or `KEY=VALUE` strings (a later duplicate wins). */
export type EnvSource = ReadonlyMap<string, string> | Readonly<Record<string, string>> | readonly string[];

export interface ShellLexOptions {
  /** the escape token: `\` (default) or `` ` `` */
  escapeToken?: string;
  /** keep quote characters in the output (quotes still group words and stop expansion) */
  rawQuotes?: boolean;
  /** keep escape tokens in the output (the escaped character is still taken literally) */
  rawEscapes?: boolean;
  /** treat quotes as ordinary characters */
  skipProcessQuotes?: boolean;
  /** leave references to unset variables as they were written instead of expanding them to "" */
  skipUnsetEnv?: boolean;
}

export interface ShellWordResult {
  /** the expanded word, quotes removed, whitespace kept */
  result: string;
  /** the expanded text split into words on unquoted whitespace */
  words: string[];
  /** names that were looked up and found */
  matched: Set<string>;
  /** names that were looked up and not found */
  unmatched: Set<string>;
}

/** Normalises an {@link EnvSource} to a Map. */
export function toEnvMap(env: EnvSource): Map<string, string> {
  if (env instanceof Map) return env as Map<string, string>;
  const out = new Map<string, string>();
  if (Array.isArray(env)) {
    for (const e of env as readonly string[]) {
      const i = e.indexOf("=");
      if (i < 0) out.set(e, "");
      else out.set(e.slice(0, i), e.slice(i + 1));
    }
    return out;
  }
  if (isReadonlyMap(env)) {
    for (const [k, v] of env) out.set(k, v);
    return out;
  }
  const rec = env as Readonly<Record<string, string>>;
  for (const k of Object.keys(rec)) out.set(k, rec[k]!);
  return out;
}

function isReadonlyMap(env: EnvSource): env is ReadonlyMap<string, string> {
  return typeof (env as ReadonlyMap<string, string>).get === "function" && !Array.isArray(env);
}

/** Go's unicode.IsSpace. */
export function isGoSpace(ch: string): boolean {
  switch (ch) {
    case " ":
    case "\t":
    case "\n":
    case "\v":
    case "\f":
    case "\r":
    case "\u0085":
    case "\u00a0":
    case "\u1680":
    case "\u2028":
    case "\u2029":
    case "\u202f":
    case "\u205f":
    case "\u3000":
      return true;
  }
  const c = ch.charCodeAt(0);
  return c >= 0x2000 && c <= 0x200a && ch.length === 1;
}

const LETTER = /^\p{L}$/u;
const DIGIT = /^\p{Nd}$/u;

function isSpecialParam(ch: string): boolean {
  return ch === "@" || ch === "*" || ch === "#" || ch === "?" || ch === "-" || ch === "$" || ch === "!" || ch === "0";
}

/** Accumulates the output of ProcessWords: whitespace from unquoted text splits, quoted text never does. */
class WordSplitter {
  word = "";
  words: string[] = [];
  inWord = false;

  addChar(ch: string): void {
    if (isGoSpace(ch)) {
      if (this.inWord && this.word.length !== 0) {
        this.words.push(this.word);
        this.word = "";
        this.inWord = false;
      }
    } else {
      this.addRawChar(ch);
    }
  }

  addRawChar(ch: string): void {
    this.word += ch;
    this.inWord = true;
  }

  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }

  addRawString(s: string): void {
    this.word += s;
    this.inWord = true;
  }

  finish(): string[] {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = "";
      this.inWord = false;
    }
    return this.words;
  }
}

/** Internal failure with the position where it happened; converted to ShellExpansionError at the top. */
class LexFailure extends Error {
  constructor(
    message: string,
    readonly at: number,
  ) {
    super(message);
  }
}

class WordProcessor {
  private readonly chars: string[];
  /** UTF-16 offset of each code point, plus the total length at the end */
  private readonly offsets: number[];
  private pos = 0;
  private depth = 0;
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();

  constructor(
    word: string,
    private readonly env: Map<string, string>,
    private readonly escapeToken: string,
    private readonly opts: ShellLexOptions,
  ) {
    this.chars = Array.from(word);
    this.offsets = new Array<number>(this.chars.length + 1);
    let off = 0;
    for (let i = 0; i < this.chars.length; i++) {
      this.offsets[i] = off;
      off += this.chars[i]!.length;
    }
    this.offsets[this.chars.length] = off;
  }

  private fail(message: string): never {
    throw new LexFailure(message, this.offsets[Math.min(this.pos, this.chars.length)]!);
  }

  private atEnd(): boolean {
    return this.pos >= this.chars.length;
  }

  private peek(): string | undefined {
    return this.chars[this.pos];
  }

  private getEnv(name: string): [string, boolean] {
    const v = this.env.get(name);
    if (v !== undefined) {
      this.matched.add(name);
      return [v, true];
    }
    this.unmatched.add(name);
    return ["", false];
  }

  /** Processes until one of `stops` (consumed) or, when `stops` is empty, the end of the word. */
  processStopOn(stops: readonly string[], rawEscapesHere: boolean): { result: string; words: string[] } {
    let result = "";
    const split = new WordSplitter();
    const processQuotes = !this.opts.skipProcessQuotes;
    while (!this.atEnd()) {
      let ch = this.peek()!;
      if (stops.length > 0 && stops.includes(ch)) {
        this.pos++;
        return { result, words: split.finish() };
      }
      if (ch === "$") {
        const tmp = this.processDollar();
        result += tmp;
        split.addString(tmp);
        continue;
      }
      if (processQuotes && (ch === "'" || ch === '"')) {
        const tmp = ch === "'" ? this.processSingleQuote() : this.processDoubleQuote();
        result += tmp;
        split.addRawString(tmp);
        continue;
      }
      this.pos++;
      if (ch === this.escapeToken) {
        if (this.opts.rawEscapes || rawEscapesHere) {
          split.addRawChar(ch);
          result += ch;
        }
        if (this.atEnd()) break; // a lone escape at the end is dropped
        ch = this.chars[this.pos++]!;
        split.addRawChar(ch);
      } else {
        split.addChar(ch);
      }
      result += ch;
    }
    if (stops.length > 0) this.fail(`unexpected end of statement while looking for matching ${stops.join(" or ")}`);
    return { result, words: split.finish() };
  }

  private processSingleQuote(): string {
    this.pos++;
    let out = this.opts.rawQuotes ? "'" : "";
    for (;;) {
      if (this.atEnd()) this.fail("unexpected end of statement while looking for matching single-quote");
      const ch = this.chars[this.pos++]!;
      if (ch === "'") return this.opts.rawQuotes ? out + ch : out;
      out += ch;
    }
  }

  private processDoubleQuote(): string {
    this.pos++;
    let out = this.opts.rawQuotes ? '"' : "";
    for (;;) {
      if (this.atEnd()) this.fail("unexpected end of statement while looking for matching double-quote");
      let ch = this.peek()!;
      if (ch === '"') {
        this.pos++;
        return this.opts.rawQuotes ? out + ch : out;
      }
      if (ch === "$") {
        out += this.processDollar();
        continue;
      }
      this.pos++;
      if (ch === this.escapeToken) {
        if (this.atEnd()) continue; // dropped; the loop then reports the missing quote
        const next = this.peek()!;
        if (next === '"' || next === "$" || next === this.escapeToken) {
          if (this.opts.rawEscapes) out += ch;
          ch = next;
          this.pos++;
        }
      }
      out += ch;
    }
  }

  private processName(): string {
    let name = "";
    while (!this.atEnd()) {
      const ch = this.peek()!;
      if (name === "" && DIGIT.test(ch)) {
        while (!this.atEnd() && DIGIT.test(this.peek()!)) name += this.chars[this.pos++]!;
        return name;
      }
      if (name === "" && isSpecialParam(ch)) {
        this.pos++;
        return ch;
      }
      if (!LETTER.test(ch) && !DIGIT.test(ch) && ch !== "_") break;
      name += ch;
      this.pos++;
    }
    return name;
  }

  /** Processes the word of a `${NAME<op>word}` up to its `}`; a missing `}` gets BuildKit's message. */
  private subWord(stops: readonly string[], rawEscapes: boolean): string {
    try {
      return this.processStopOn(stops, rawEscapes).result;
    } catch (e) {
      if (e instanceof LexFailure && this.atEnd()) throw new LexFailure("syntax error: missing '}'", e.at);
      throw e;
    }
  }

  private processDollar(): string {
    if (++this.depth > 100) this.fail("variable expansions nested too deeply (more than 100 levels)");
    try {
      return this.processDollarInner();
    } finally {
      this.depth--;
    }
  }

  private processDollarInner(): string {
    this.pos++; // $
    if (this.peek() !== "{") {
      const name = this.processName();
      if (name === "") return "$";
      const [value, found] = this.getEnv(name);
      if (!found && this.opts.skipUnsetEnv) return "$" + name;
      return value;
    }
    this.pos++; // {
    if (this.atEnd()) this.fail("syntax error: missing '}'");
    const first = this.peek()!;
    if (first === "{" || first === "}" || first === ":") this.fail("syntax error: bad substitution");
    const name = this.processName();
    if (this.atEnd()) this.fail("syntax error: missing '}'");
    let ch = this.chars[this.pos++]!;
    let spelled = ch;
    let nullIsUnset = false;
    switch (ch) {
      case "}": {
        const [value, found] = this.getEnv(name);
        if (!found && this.opts.skipUnsetEnv) return "${" + name + "}";
        return value;
      }
      case "/":
        return this.processReplace(name);
      case ":":
        if (this.atEnd()) this.fail("syntax error: missing '}'");
        nullIsUnset = true;
        ch = this.chars[this.pos++]!;
        spelled += ch;
        break;
    }
    const isTrim = ch === "#" || ch === "%";
    if (!(ch === "-" || ch === "+" || ch === "?" || (isTrim && !nullIsUnset))) {
      this.fail(`unsupported modifier (${spelled}) in substitution`);
    }
    let word = this.subWord(["}"], isTrim);
    const [value, set] = this.getEnv(name);
    if (!set && this.opts.skipUnsetEnv) return "${" + name + spelled + word + "}";
    const missing = !set || (nullIsUnset && value === "");
    switch (ch) {
      case "-":
        return missing ? word : value;
      case "+":
        return missing ? "" : word;
      case "?":
        if (!set) this.fail(`${name}: ${word !== "" ? word : "is not allowed to be unset"}`);
        if (missing) this.fail(`${name}: ${word !== "" ? word : "is not allowed to be empty"}`);
        return value;
      default: {
        let greedy = false;
        if (word.startsWith(ch)) {
          greedy = true;
          word = word.slice(1);
        }
        return ch === "%" ? this.trimSuffix(word, value, greedy) : this.trimPrefix(word, value, greedy);
      }
    }
  }

  private processReplace(name: string): string {
    const all = this.peek() === "/";
    if (all) this.pos++;
    const pattern = this.subWord(["/"], true);
    const replacement = this.subWord(["}"], true);
    const [value, set] = this.getEnv(name);
    if (!set && this.opts.skipUnsetEnv) return "${" + name + (all ? "//" : "/") + pattern + "/" + replacement + "}";
    const re = this.patternRegex(pattern, true, false, all);
    if (all) return value.replace(re, (m) => expandGoTemplate(replacement, m));
    const m = re.exec(value);
    if (!m) return value;
    return value.slice(0, m.index) + replacement + value.slice(m.index + m[0].length);
  }

  private patternRegex(pattern: string, greedy: boolean, anchored: boolean, global = false): RegExp {
    try {
      return shellPatternToRegex(pattern, greedy, anchored, global);
    } catch (e) {
      this.fail(`invalid pattern (${pattern}) in substitution: ${(e as Error).message}`);
    }
  }

  private trimPrefix(pattern: string, value: string, greedy: boolean): string {
    const m = this.patternRegex(pattern, greedy, true).exec(value);
    return m ? value.slice(m.index + m[0].length) : value;
  }

  private trimSuffix(pattern: string, value: string, greedy: boolean): string {
    // Regular expressions find leftmost matches, so search the reversed value with the reversed pattern.
    const rev = this.trimPrefix(reversePattern(pattern), reverseString(value), greedy);
    return reverseString(rev);
  }
}

/** Go's Regexp.Expand template semantics for a regexp without groups: `$0`/`${0}` is the match, `$$` a `$`. */
function expandGoTemplate(template: string, match: string): string {
  if (!template.includes("$")) return template;
  let out = "";
  for (let i = 0; i < template.length; i++) {
    const c = template[i]!;
    if (c !== "$") {
      out += c;
      continue;
    }
    const next = template[i + 1];
    if (next === "$") {
      out += "$";
      i++;
      continue;
    }
    let name: string | undefined;
    let end = i;
    if (next === "{") {
      const close = template.indexOf("}", i + 2);
      const inner = close < 0 ? "" : template.slice(i + 2, close);
      if (close > 0 && /^[A-Za-z0-9_]+$/.test(inner)) {
        name = inner;
        end = close;
      }
    } else {
      const m = /^[A-Za-z0-9_]+/.exec(template.slice(i + 1));
      if (m) {
        name = m[0];
        end = i + m[0].length;
      }
    }
    if (name === undefined) {
      out += "$";
      continue;
    }
    if (/^[0-9]+$/.test(name) && Number(name) === 0) out += match;
    i = end;
  }
  return out;
}

/**
 * Converts a shell glob (`*`, `?`, `\*`, `\?`, `\\`; `\}` and `\/` mean `}` and `/`) to a regular expression;
 * `*` is lazy unless `greedy`. Throws on any other escape.
 */
export function shellPatternToRegex(pattern: string, greedy: boolean, anchored: boolean, global = false): RegExp {
  const chars = Array.from(pattern);
  let src = anchored ? "^" : "";
  const star = greedy ? ".*" : ".*?";
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    switch (ch) {
      case "*":
        src += star;
        continue;
      case "?":
        src += ".";
        continue;
      case "\\": {
        const next = chars[i + 1];
        if (next === "}" || next === "/") continue;
        if (next !== "*" && next !== "?" && next !== "\\") {
          throw new Error(next === undefined ? "trailing '\\'" : `invalid escape '\\${next}'`);
        }
        src += "\\" + next;
        i++;
        continue;
      }
      case "[":
      case "]":
      case "{":
      case "}":
      case ".":
      case "+":
      case "(":
      case ")":
      case "|":
      case "^":
      case "$":
        src += "\\" + ch;
        continue;
      default:
        src += ch;
    }
  }
  return new RegExp(src, global ? "gu" : "u");
}

/** Reverses a string by code points. */
export function reverseString(s: string): string {
  return Array.from(s).reverse().join("");
}

/** Reverses a glob, keeping each `\x` escape in front of the character it escapes. */
export function reversePattern(pattern: string): string {
  const chars = Array.from(pattern);
  const tokens: string[] = [];
  for (let i = 0; i < chars.length; i++) {
    if (chars[i] === "\\" && i + 1 < chars.length) {
      tokens.push("\\" + chars[i + 1]!);
      i++;
    } else {
      tokens.push(chars[i]!);
    }
  }
  return tokens.reverse().join("");
}

/** A configured expander (escape token and quoting mode), like BuildKit's `shell.Lex`. */
export class ShellLex {
  readonly options: Readonly<ShellLexOptions>;
  constructor(options: ShellLexOptions = {}) {
    const escapeToken = options.escapeToken ?? "\\";
    if (escapeToken !== "\\" && escapeToken !== "`") {
      throw new RangeError(`escape token must be "\\" or "\`", not ${JSON.stringify(escapeToken)}`);
    }
    this.options = { ...options, escapeToken };
  }

  /** Expands `word`; throws {@link ShellExpansionError}. Default: BuildKit's `ProcessWordWithMatches`. */
  process(word: string, env: EnvSource): ShellWordResult {
    const p = new WordProcessor(word, toEnvMap(env), this.options.escapeToken!, this.options);
    try {
      const { result, words } = p.processStopOn([], false);
      return { result, words, matched: p.matched, unmatched: p.unmatched };
    } catch (e) {
      if (e instanceof LexFailure) {
        const shown = word.length > 80 ? word.slice(0, 77) + "..." : word;
        throw new ShellExpansionError(`failed to process ${JSON.stringify(shown)}: ${e.message}`, word, e.at);
      }
      throw e;
    }
  }

  /** The expanded word with quotes removed (BuildKit `ProcessWord`). */
  processWord(word: string, env: EnvSource): string {
    return this.process(word, env).result;
  }

  /** The expanded text split into words (BuildKit `ProcessWords`). */
  processWords(word: string, env: EnvSource): string[] {
    return this.process(word, env).words;
  }
}

const DEFAULT_LEX = new ShellLex();

/** Expands one word with `\` as escape token; see {@link ShellLex.process}. */
export function processWord(word: string, env: EnvSource, options?: ShellLexOptions): ShellWordResult {
  return (options ? new ShellLex(options) : DEFAULT_LEX).process(word, env);
}

/** Expands and splits into words with `\` as escape token; see {@link ShellLex.processWords}. */
export function processWords(word: string, env: EnvSource, options?: ShellLexOptions): string[] {
  return (options ? new ShellLex(options) : DEFAULT_LEX).process(word, env).words;
}
