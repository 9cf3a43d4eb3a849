/**
 * Dockerfile syntax: text → a list of instruction nodes with source positions, with the exact line-joining, flag
 * and argument rules of BuildKit's parser (`frontend/dockerfile/parser`), re-implemented from its documented
 * behaviour and its golden files (`fixtures/dockerfile/parser-cases.json`).
 *
 * This layer is BuildKit's `parser.Parse`: it knows which words are flags and how each instruction's arguments are
 * split, but not which instructions or flags exist; `parse-instructions.ts` validates and types the nodes.
 *
 * Why not `dockerfile-ast` alone: it takes an escaped escape at the end of a line (`\\`) as a continuation, drops
 * whitespace-only continuation lines (changing RUN text, which is in cache keys), reports `--` as a flag, does not
 * unquote heredoc names, misses `3<<EOF` and `<<'a b'` and has no heredoc content. Positions here are computed by
 * the same pass that joins lines, so every argument maps back to its line and column; the test suite cross-checks
 * the instruction structure against dockerfile-ast on the golden files.
 *
 * Rules, in order:
 * - A UTF-8 BOM is dropped; lines end at `\n`, trailing `\r`s are dropped.
 * - Leading lines of the form `# key = value` with key `escape`, `syntax` or `check` (case-insensitive) are
 *   directives; the first other line ends them. `escape` must be `\` or `` ` ``; a repeated directive is an error.
 * - A line whose first non-blank character is `#` is a comment, also inside a continuation (it does not end it).
 * - The escape token as the last non-blank (space/tab) character continues the instruction on the next line,
 *   unless it is itself escaped (`\\` at the end ends the line). Blank lines inside a continuation are skipped
 *   (with a warning); continuation lines keep their leading whitespace; a continuation at end of file is fine.
 * - The first word is the instruction (case-insensitive); then words starting with `--` are flags (quotes removed,
 *   `\x` → `x`) up to the first other word or a `--`, which is dropped.
 * - RUN, COPY and ADD (also as an ONBUILD trigger) in shell form may use heredocs: every `[n]<<[-]WORD` in the line
 *   names one (quotes in WORD are removed and disable expansion; `-` strips leading tabs at use), and their bodies
 *   follow the instruction, in order, each up to a line equal to its name (after tabs, for `<<-`).
 */
import { DockerfileSyntaxError, ShellExpansionError } from "./errors.js";
import { isGoSpace, ShellLex } from "./shell-lex.js";

/** A 1-based line and column. */
export interface Position {
  readonly line: number;
  readonly column: number;
}

/** A heredoc attached to an instruction. */
export interface Heredoc {
  /** the delimiter with quotes removed */
  readonly name: string;
  /** the `n` of `n<<EOF`, 0 when absent */
  readonly fileDescriptor: number;
  /** false when any part of the delimiter was quoted: the body is then never expanded */
  readonly expand: boolean;
  /** `<<-`: leading tabs of each body line are removed when used (the content keeps them) */
  readonly chomp: boolean;
  /** the body, each line with its line ending */
  readonly content: string;
  /** line of the first body line */
  readonly startLine: number;
}

/** A flag as written before the arguments, e.g. `--mount=type=cache,target=/x` (quotes removed). */
export interface AstFlag {
  readonly text: string;
  readonly position: Position;
}

/** One instruction, as BuildKit's parser sees it. */
export interface AstNode {
  /** the instruction keyword, lowercased (`run`, `copy`, …; unknown words too) */
  readonly keyword: string;
  /** the keyword as written */
  readonly spelled: string;
  readonly flags: readonly AstFlag[];
  /**
   * Arguments: for exec (JSON) form the array elements; shell form RUN/CMD/ENTRYPOINT/SHELL one string; ENV and
   * LABEL (key, value, separator) triples with separator "=" (`k=v`) or "" (legacy `k v`); ARG the raw words;
   * FROM/EXPOSE/COPY/ADD/VOLUME the whitespace-separated words (quotes kept); HEALTHCHECK the type then the command;
   * MAINTAINER/USER/WORKDIR/STOPSIGNAL the rest of the line. Quotes are not removed here.
   */
  readonly args: readonly string[];
  /** where each argument starts (same length as args; exec-form elements all map to the `[`) */
  readonly argPositions: readonly Position[];
  /** exec form (a valid JSON string array) */
  readonly json: boolean;
  /** for ONBUILD: the trigger instruction */
  readonly trigger?: AstNode;
  readonly heredocs: readonly Heredoc[];
  /** the instruction text with continuations joined */
  readonly original: string;
  /** position of the keyword */
  readonly start: Position;
  /** last line of the instruction (including heredoc bodies) */
  readonly endLine: number;
  /** comment lines just before the instruction */
  readonly comments: readonly string[];
}

export interface Directive {
  readonly name: string;
  readonly value: string;
  readonly line: number;
}

export interface DockerfileAst {
  readonly file: string;
  readonly escapeToken: "\\" | "`";
  readonly directives: readonly Directive[];
  /** the `# syntax=` value; accepted and ignored (Strata has one built-in frontend) */
  readonly syntax?: string;
  readonly nodes: readonly AstNode[];
  readonly warnings: readonly string[];
}

export interface ParseOptions {
  /** name used in error messages (default "Dockerfile") */
  file?: string;
}

interface PhysLine {
  text: string;
  /** the text with its line ending, as read */
  raw: string;
}

/** A logical line: text plus the position of each UTF-16 unit. */
interface Logical {
  text: string;
  pos: Position[];
  /** position just after the end */
  end: Position;
}

const DIRECTIVE = /^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;
const VALID_DIRECTIVES = new Set(["escape", "syntax", "check"]);
/** BuildKit's reWhitespace (note: not all of unicode.IsSpace) */
const WS_RUN = /[\t\v\f\r ]+/;
const HEREDOC_WORD = /^(\d*)<<(-?)([^<]*)$/;
const HEREDOC_KEYWORDS = new Set(["run", "copy", "add"]);

class ParseFailure extends Error {
  constructor(
    message: string,
    readonly position: Position,
  ) {
    super(message);
  }
}

function trimLeftSpace(s: string): string {
  let i = 0;
  while (i < s.length && isGoSpace(s[i]!)) i++;
  return s.slice(i);
}

function stripCR(s: string): string {
  let end = s.length;
  while (end > 0 && (s[end - 1] === "\r" || s[end - 1] === "\n")) end--;
  return s.slice(0, end);
}

function splitLines(text: string): PhysLine[] {
  const out: PhysLine[] = [];
  let start = 0;
  while (start < text.length) {
    const nl = text.indexOf("\n", start);
    const end = nl < 0 ? text.length : nl + 1;
    const raw = text.slice(start, end);
    out.push({ raw, text: stripCR(raw) });
    start = end;
  }
  return out;
}

/**
 * BuildKit's continuation rule: the escape token followed only by spaces/tabs at the end of the line, not itself
 * preceded by the escape token (a line that is only the token also continues). Returns the kept length, or -1.
 */
function continuationCut(line: string, escapeToken: string): number {
  let end = line.length;
  while (end > 0 && (line[end - 1] === " " || line[end - 1] === "\t")) end--;
  if (end === 0 || line[end - 1] !== escapeToken) return -1;
  if (end === 1) return 0;
  if (line[end - 2] === escapeToken) return -1;
  return end - 1;
}

function goQuoteRune(cp: number, ch: string): string {
  switch (cp) {
    case 0x07:
      return "\\a";
    case 0x08:
      return "\\b";
    case 0x0c:
      return "\\f";
    case 0x0a:
      return "\\n";
    case 0x0d:
      return "\\r";
    case 0x09:
      return "\\t";
    case 0x0b:
      return "\\v";
    case 0x5c:
      return "\\\\";
    case 0x22:
      return '\\"';
  }
  if (cp < 0x20 || cp === 0x7f) return "\\x" + cp.toString(16).padStart(2, "0");
  if (cp < 0x7f) return ch;
  if (/^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u.test(ch)) return ch;
  if (cp >= 0xd800 && cp <= 0xdfff) return "\\ufffd";
  return cp < 0x10000 ? "\\u" + cp.toString(16).padStart(4, "0") : "\\U" + cp.toString(16).padStart(8, "0");
}

/** Go's strconv.Quote (for valid UTF-16 input). */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) out += goQuoteRune(ch.codePointAt(0)!, ch);
  return out + '"';
}

/** BuildKit's Node.Dump of one instruction, e.g. `copy ["--from=a"] "x" "/y"` (without the parentheses). */
export function dumpNode(node: AstNode): string {
  let s = node.keyword;
  if (node.flags.length > 0) s += " [" + node.flags.map((f) => goQuote(f.text)).join(" ") + "]";
  if (node.trigger) s += " (" + dumpNode(node.trigger) + ")";
  for (const a of node.args) s += " " + goQuote(a);
  return s.trim();
}

/** The whole AST in BuildKit's dump format: one `(…)` line per instruction, newline-terminated. */
export function dumpAst(ast: DockerfileAst): string {
  return ast.nodes.map((n) => "(" + dumpNode(n) + ")\n").join("");
}

class Parser {
  escape: "\\" | "`" = "\\";
  readonly directives: Directive[] = [];
  directivesDone = false;
  readonly warnings: string[] = [];
  syntax: string | undefined;

  constructor(readonly file: string) {}

  /** The directive check BuildKit applies to each line before the first instruction. */
  checkDirective(line: string, lineNo: number): void {
    if (this.directivesDone) return;
    if (!line.startsWith("#")) {
      this.directivesDone = true;
      return;
    }
    const m = DIRECTIVE.exec(trimLeftSpace(line.slice(1)));
    if (!m) {
      this.directivesDone = true;
      return;
    }
    const key = m[1]!.toLowerCase();
    if (!VALID_DIRECTIVES.has(key)) {
      this.directivesDone = true;
      return;
    }
    if (this.directives.some((d) => d.name === key)) {
      throw new ParseFailure(`only one ${key} parser directive can be used`, { line: lineNo, column: 1 });
    }
    const value = m[2]!;
    this.directives.push({ name: key, value, line: lineNo });
    if (key === "escape") {
      if (value !== "\\" && value !== "`") {
        throw new ParseFailure(`invalid escape token '${value}' does not match \` or \\`, { line: lineNo, column: 1 });
      }
      this.escape = value;
    } else if (key === "syntax") {
      this.syntax = value;
      this.warnings.push(
        `${this.file}:${lineNo}: the syntax directive (${value}) is ignored: Strata uses its built-in Dockerfile frontend`,
      );
    }
  }

  parse(text: string): DockerfileAst {
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const lines = splitLines(text);
    const nodes: AstNode[] = [];
    let comments: string[] = [];
    let i = 0;
    while (i < lines.length) {
      const lineNo = i + 1;
      const phys = lines[i++]!;
      const lead = trimLeftSpace(phys.text);
      this.checkDirective(lead, lineNo);
      if (lead.startsWith("#")) {
        const c = lead.slice(1).trim();
        if (c !== "") comments.push(c);
        continue;
      }
      const leadCol = phys.text.length - lead.length + 1;
      const logical: Logical = { text: "", pos: [], end: { line: lineNo, column: leadCol } };
      let cut = continuationCut(lead, this.escape);
      const first = cut < 0 ? lead : lead.slice(0, cut);
      for (let k = 0; k < first.length; k++) logical.pos.push({ line: lineNo, column: leadCol + k });
      logical.text = first;
      logical.end = { line: lineNo, column: leadCol + first.length };
      if (cut < 0 && first === "") continue;
      let endLine = lineNo;
      let sawEmpty = false;
      while (cut >= 0 && i < lines.length) {
        const contNo = i + 1;
        const cont = lines[i++]!;
        endLine = contNo;
        const contLead = trimLeftSpace(cont.text);
        if (contLead.startsWith("#")) continue;
        if (contLead === "") {
          sawEmpty = true;
          continue;
        }
        cut = continuationCut(cont.text, this.escape);
        const piece = cut < 0 ? cont.text : cont.text.slice(0, cut);
        for (let k = 0; k < piece.length; k++) logical.pos.push({ line: contNo, column: k + 1 });
        logical.text += piece;
        logical.end = { line: contNo, column: piece.length + 1 };
      }
      rejectNul(logical);
      if (sawEmpty) this.warnings.push(`${this.file}:${lineNo}: empty continuation line found in: ${logical.text}`);
      const node = this.nodeFromLine(logical, 0, comments);
      comments = [];
      const heredocTarget = node.keyword === "onbuild" ? node.trigger : node;
      let heredocs: Heredoc[] = [];
      if (
        heredocTarget &&
        HEREDOC_KEYWORDS.has(heredocTarget.keyword) &&
        !heredocTarget.json &&
        logical.text.includes("<<")
      ) {
        const specs = heredocsFromLine(logical.text, logical.pos[0] ?? logical.end);
        for (const spec of specs) {
          let content = "";
          let terminated = false;
          const bodyStart = i + 1;
          while (i < lines.length) {
            const l = lines[i++]!;
            endLine = i;
            let candidate = l.text;
            if (spec.chomp) candidate = candidate.replace(/^\t+/, "");
            if (candidate === spec.name) {
              terminated = true;
              break;
            }
            content += l.raw;
          }
          if (!terminated) {
            throw new ParseFailure(
              `unterminated heredoc ${spec.name} (no line "${spec.name}" after line ${lineNo})`,
              node.start,
            );
          }
          heredocs.push({ ...spec, content, startLine: bodyStart });
        }
      }
      if (heredocs.length > 0) {
        if (node.trigger) {
          const trigger: AstNode = { ...node.trigger, heredocs, endLine };
          nodes.push({ ...node, trigger, heredocs, endLine });
        } else {
          nodes.push({ ...node, heredocs, endLine });
        }
      } else {
        heredocs = [];
        nodes.push({ ...node, endLine });
      }
    }
    if (nodes.length === 0) {
      throw new ParseFailure("file with no instructions", { line: Math.max(lines.length, 1), column: 1 });
    }
    return {
      file: this.file,
      escapeToken: this.escape,
      directives: this.directives,
      ...(this.syntax !== undefined ? { syntax: this.syntax } : {}),
      nodes,
      warnings: this.warnings,
    };
  }

  /** BuildKit's newNodeFromLine on logical.text[from…]. */
  nodeFromLine(logical: Logical, from: number, comments: string[], depth = 0): AstNode {
    const text = logical.text;
    const at = (k: number): Position => logical.pos[k] ?? logical.end;
    // TrimSpace, then split off the keyword at the first [\t\v\f\r ]+ run.
    let s = from;
    let e = text.length;
    while (s < e && isGoSpace(text[s]!)) s++;
    while (e > s && isGoSpace(text[e - 1]!)) e--;
    const body = text.slice(s, e);
    const ws = WS_RUN.exec(body);
    const spelled = ws ? body.slice(0, ws.index) : body;
    const keyword = spelled.toLowerCase();
    let flags: AstFlag[] = [];
    let restStart = e;
    if (ws) {
      const afterKw = s + ws.index + ws[0].length;
      const fx = extractFlags(text, afterKw, e);
      flags = fx.flags.map((f) => ({ text: f.text, position: at(f.offset) }));
      restStart = fx.restOffset;
    }
    // TrimSpace the remaining arguments.
    while (restStart < e && isGoSpace(text[restStart]!)) restStart++;
    const rest = text.slice(restStart, e);
    const base = {
      keyword,
      spelled,
      flags,
      original: text.slice(from),
      start: at(s),
      endLine: logical.end.line,
      comments,
      heredocs: [] as Heredoc[],
    };
    if (keyword === "onbuild") {
      if (rest === "") return { ...base, args: [], argPositions: [], json: false };
      if (depth >= 8) throw new ParseFailure("ONBUILD nested too deeply", at(restStart));
      const trigger = this.nodeFromLine(logical, restStart, [], depth + 1);
      return { ...base, args: [], argPositions: [], json: false, trigger };
    }
    const parsed = this.dispatch(keyword, rest, restStart, at);
    return { ...base, ...parsed };
  }

  dispatch(
    keyword: string,
    rest: string,
    restStart: number,
    at: (k: number) => Position,
  ): { args: string[]; argPositions: Position[]; json: boolean } {
    const restPos = at(restStart);
    switch (keyword) {
      case "add":
      case "copy":
      case "volume": {
        const j = maybeJSON(rest, restPos);
        if (j) return { args: j, argPositions: j.map(() => restPos), json: true };
        return whitespaceList(rest, restStart, at);
      }
      case "arg": {
        const w = parseWords(rest, this.escape, restStart);
        return { args: w.map((x) => x.word), argPositions: w.map((x) => at(x.offset)), json: false };
      }
      case "cmd":
      case "entrypoint":
      case "run":
      case "shell": {
        if (rest === "") return { args: [], argPositions: [], json: false };
        const j = maybeJSON(rest, restPos);
        if (j) return { args: j, argPositions: j.map(() => restPos), json: true };
        return { args: [rest], argPositions: [restPos], json: false };
      }
      case "env":
      case "label":
        return this.nameVal(keyword.toUpperCase(), rest, restStart, at);
      case "expose":
      case "from":
        return whitespaceList(rest, restStart, at);
      case "healthcheck": {
        let sep = 0;
        while (sep < rest.length && !isGoSpace(rest[sep]!)) sep++;
        if (sep === 0) return { args: [], argPositions: [], json: false };
        let next = sep;
        while (next < rest.length && isGoSpace(rest[next]!)) next++;
        const typ = rest.slice(0, sep);
        const cmdText = rest.slice(next);
        const cmdPos = at(restStart + next);
        if (cmdText === "") return { args: [typ], argPositions: [restPos], json: false };
        const j = maybeJSON(cmdText, cmdPos);
        if (j) return { args: [typ, ...j], argPositions: [restPos, ...j.map(() => cmdPos)], json: true };
        return { args: [typ, cmdText], argPositions: [restPos, cmdPos], json: false };
      }
      case "maintainer":
      case "stopsignal":
      case "user":
      case "workdir":
        if (rest === "") return { args: [], argPositions: [], json: false };
        return { args: [rest], argPositions: [restPos], json: false };
      default:
        // Unknown instructions parse (BuildKit's parseIgnore); the instruction layer rejects them.
        return { args: [""], argPositions: [restPos], json: false };
    }
  }

  /** ENV / LABEL: `k=v …` pairs, or the legacy `k value…` form. */
  nameVal(
    what: string,
    rest: string,
    restStart: number,
    at: (k: number) => Position,
  ): { args: string[]; argPositions: Position[]; json: boolean } {
    const words = parseWords(rest, this.escape, restStart);
    if (words.length === 0) return { args: [], argPositions: [], json: false };
    if (!words[0]!.word.includes("=")) {
      const m = WS_RUN.exec(rest);
      if (!m)
        throw new ParseFailure(
          `${what} must have two arguments (${what} name value, or ${what} name=value …)`,
          at(restStart),
        );
      const key = rest.slice(0, m.index);
      const valueStart = m.index + m[0].length;
      return {
        args: [key, rest.slice(valueStart), ""],
        argPositions: [at(restStart), at(restStart + valueStart), at(restStart + valueStart)],
        json: false,
      };
    }
    const args: string[] = [];
    const argPositions: Position[] = [];
    for (const w of words) {
      const eq = w.word.indexOf("=");
      if (eq < 0) {
        throw new ParseFailure(
          `syntax error - can't find = in ${JSON.stringify(w.word)}. Must be of the form: name=value`,
          at(w.offset),
        );
      }
      args.push(w.word.slice(0, eq), w.word.slice(eq + 1), "=");
      argPositions.push(at(w.offset), at(w.offset), at(w.offset));
    }
    return { args, argPositions, json: false };
  }
}

/** BuildKit's extractBuilderFlags over text[start, end): the flags and where the arguments start. */
function extractFlags(
  text: string,
  start: number,
  end: number,
): { flags: { text: string; offset: number }[]; restOffset: number } {
  const flags: { text: string; offset: number }[] = [];
  const IN_SPACES = 0;
  const IN_WORD = 1;
  const IN_QUOTE = 2;
  let phase = IN_SPACES;
  let word = "";
  let wordStart = start;
  let quote = "";
  let blankOK = false;
  for (let pos = start; pos <= end; pos++) {
    const ch = pos < end ? text[pos]! : "";
    if (phase === IN_SPACES) {
      if (pos === end) break;
      if (isGoSpace(ch)) continue;
      if (ch !== "-" || pos + 1 === end || text[pos + 1] !== "-") return { flags, restOffset: pos };
      phase = IN_WORD;
      wordStart = pos;
    }
    if (pos === end) {
      if (word !== "--" && (blankOK || word.length > 0)) flags.push({ text: word, offset: wordStart });
      break;
    }
    if (phase === IN_WORD) {
      if (isGoSpace(ch)) {
        phase = IN_SPACES;
        if (word === "--") return { flags, restOffset: pos };
        if (blankOK || word.length > 0) flags.push({ text: word, offset: wordStart });
        word = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = IN_QUOTE;
        continue;
      }
      let c = ch;
      if (c === "\\") {
        if (pos + 1 === end) continue;
        pos++;
        c = text[pos]!;
      }
      word += c;
      continue;
    }
    // IN_QUOTE
    if (ch === quote) {
      phase = IN_WORD;
      continue;
    }
    let c = ch;
    if (c === "\\") {
      if (pos + 1 === end) {
        phase = IN_WORD;
        continue;
      }
      pos++;
      c = text[pos]!;
    }
    word += c;
  }
  return { flags, restOffset: end };
}

/** BuildKit's parseWords: whitespace-separated words, quotes kept, escape token kept with its character. */
function parseWords(rest: string, escapeToken: string, base: number): { word: string; offset: number }[] {
  const words: { word: string; offset: number }[] = [];
  const IN_SPACES = 0;
  const IN_WORD = 1;
  const IN_QUOTE = 2;
  let phase = IN_SPACES;
  let quote = "";
  let blankOK = false;
  let word = "";
  let wordStart = 0;
  const chars = Array.from(rest);
  let off = 0;
  const offs: number[] = [];
  for (const c of chars) {
    offs.push(off);
    off += c.length;
  }
  offs.push(off);
  for (let p = 0; p <= chars.length; p++) {
    let ch = chars[p] ?? "";
    if (phase === IN_SPACES) {
      if (p === chars.length) break;
      if (isGoSpace(ch)) continue;
      phase = IN_WORD;
      wordStart = offs[p]!;
    }
    if (p === chars.length) {
      if (blankOK || word.length > 0) words.push({ word, offset: base + wordStart });
      break;
    }
    if (phase === IN_WORD) {
      if (isGoSpace(ch)) {
        phase = IN_SPACES;
        if (blankOK || word.length > 0) words.push({ word, offset: base + wordStart });
        word = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = IN_QUOTE;
      }
      if (ch === escapeToken) {
        if (p + 1 === chars.length) continue; // a trailing escape token is dropped
        word += ch;
        p++;
        ch = chars[p]!;
      }
      word += ch;
      continue;
    }
    // IN_QUOTE
    if (ch === quote) phase = IN_WORD;
    if (ch === escapeToken && quote !== "'") {
      if (p + 1 === chars.length) {
        phase = IN_WORD;
        continue;
      }
      p++;
      word += ch;
      ch = chars[p]!;
    }
    word += ch;
  }
  return words;
}

function whitespaceList(
  rest: string,
  restStart: number,
  at: (k: number) => Position,
): { args: string[]; argPositions: Position[]; json: boolean } {
  if (rest === "") return { args: [], argPositions: [], json: false };
  const args: string[] = [];
  const argPositions: Position[] = [];
  const re = /[\t\v\f\r ]+/g;
  let last = 0;
  for (let m = re.exec(rest); m; m = re.exec(rest)) {
    args.push(rest.slice(last, m.index));
    argPositions.push(at(restStart + last));
    last = m.index + m[0].length;
  }
  args.push(rest.slice(last));
  argPositions.push(at(restStart + last));
  return { args, argPositions, json: false };
}

/** Exec form: a JSON array of strings. Invalid JSON is not an error (shell form); non-string elements are. */
function maybeJSON(rest: string, position: Position): string[] | undefined {
  const t = trimLeftSpace(rest);
  if (!t.startsWith("[")) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(t);
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed)) return undefined;
  if (!parsed.every((x): x is string => typeof x === "string")) {
    throw new ParseFailure("when using JSON array syntax, arrays must be comprised of strings only", position);
  }
  return parsed;
}

const HEREDOC_LINE_LEX = new ShellLex({ rawQuotes: true, rawEscapes: true, skipUnsetEnv: true });
const HEREDOC_NAME_LEX = new ShellLex({ skipUnsetEnv: true });
const HEREDOC_NAME_RAW_LEX = new ShellLex({ rawQuotes: true, skipUnsetEnv: true });

function quoteCount(s: string): number {
  let n = 0;
  for (const c of s) if (c === "'" || c === '"') n++;
  return n;
}

/**
 * No path, argv word, environment entry or name can hold a NUL byte, and every instruction argument becomes one of
 * those; so a NUL anywhere in an instruction (not in comments or heredoc bodies, which are file content) is refused
 * here, at its line and column, before it can reach a filesystem or exec call as an internal error.
 */
function rejectNul(logical: Logical): void {
  const at = logical.text.indexOf("\0");
  if (at >= 0) throw new ParseFailure("invalid NUL byte in instruction", logical.pos[at] ?? logical.end);
}

/** Parses one word as a heredoc marker (`<<EOF`, `3<<-'EOF'`, …); undefined when it is none. */
export function parseHeredocMarker(word: string): Omit<Heredoc, "content" | "startLine"> | undefined {
  const m = HEREDOC_WORD.exec(word);
  if (!m) return undefined;
  const rest = m[3]!;
  if (rest === "") return undefined;
  const names = HEREDOC_NAME_LEX.processWords(rest, []);
  if (names.length !== 1) return undefined;
  const raw = HEREDOC_NAME_RAW_LEX.processWords(rest, []);
  if (raw.length !== 1) throw new ShellExpansionError(`inconsistent heredoc delimiter ${rest}`, rest, 0);
  return {
    name: names[0]!,
    fileDescriptor: m[1] === "" ? 0 : Number(m[1]),
    expand: quoteCount(names[0]!) === quoteCount(raw[0]!),
    chomp: m[2] === "-",
  };
}

/** The heredoc markers of an instruction line, in order. */
function heredocsFromLine(line: string, position: Position): Omit<Heredoc, "content" | "startLine">[] {
  let words: string[];
  try {
    words = HEREDOC_LINE_LEX.processWords(line, []);
  } catch {
    words = []; // as BuildKit: a line that does not lex has no heredocs
  }
  const out: Omit<Heredoc, "content" | "startLine">[] = [];
  for (const w of words) {
    try {
      const h = parseHeredocMarker(w);
      if (h) out.push(h);
    } catch (e) {
      if (e instanceof ShellExpansionError)
        throw new ParseFailure(`invalid heredoc ${JSON.stringify(w)}: ${e.message}`, position);
      throw e;
    }
  }
  return out;
}

/**
 * Parses Dockerfile text into instruction nodes (BuildKit's `parser.Parse`). Throws {@link DockerfileSyntaxError}
 * for a bad directive, a non-string JSON array, a malformed ENV/LABEL, an unterminated heredoc, or a file with no
 * instructions. Unknown instructions are kept here; {@link parseInstructions} in `parse-instructions.ts` rejects them.
 */
export function parseDockerfileAst(text: string, options: ParseOptions = {}): DockerfileAst {
  const file = options.file ?? "Dockerfile";
  try {
    return new Parser(file).parse(text);
  } catch (e) {
    if (e instanceof ParseFailure) throw new DockerfileSyntaxError({ file, ...e.position }, e.message);
    throw e;
  }
}
