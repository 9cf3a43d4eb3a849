/**
 * Typed Dockerfile instructions and the stage planner: AST (`parse.ts`) → validated commands (BuildKit's
 * `instructions.Parse`) → stages with variables expanded exactly where BuildKit expands them (its `dockerfile2llb`
 * dispatch), the target stage and the stages it needs. Pure: text and options in, a plan out; no filesystem access.
 *
 * Expansion (see `shell-lex.ts`) applies to: ENV and LABEL keys and values, ARG names and defaults, WORKDIR, USER,
 * VOLUME, STOPSIGNAL, EXPOSE (split into words), COPY/ADD sources, destination, `--chown`, `--chmod`, ADD
 * `--checksum`, COPY/ADD heredoc bodies whose delimiter is unquoted, and RUN `--mount` option values — all with the
 * stage's ARGs in scope overlaid by its ENV (ENV wins). FROM's image and `--platform` see only the global ARGs
 * declared before the first FROM (plus the predefined platform ARGs). RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK,
 * MAINTAINER and ONBUILD are never expanded; `COPY --from` must not contain `$`.
 */
import { DockerfileSyntaxError, ShellExpansionError, type SourceLocation } from "./errors.js";
import { InvalidDefinitionError } from "../errors.js";
import { DEFAULT_PATH } from "../oci/defaults.js";
import { parseDockerfileAst, parseHeredocMarker, type AstFlag, type AstNode, type DockerfileAst, type Heredoc, type Position } from "./parse.js";
import { ShellLex } from "./shell-lex.js";

// ----------------------------------------------------------------------------------------------------------------
// Types

/** Where an instruction is: its keyword's line and column, and its last line. */
export interface InstructionLocation extends SourceLocation {
  readonly endLine: number;
}

interface Base {
  readonly location: InstructionLocation;
  /** the instruction text with continuations joined (no heredoc bodies) */
  readonly original: string;
}

export interface KeyValue {
  readonly key: string;
  readonly value: string;
}

export interface ArgDefinition {
  readonly key: string;
  /** the default; undefined when the ARG only declares the name */
  readonly value?: string;
}

export interface RunMount {
  readonly type: "bind" | "cache" | "tmpfs" | "secret" | "ssh";
  /** mount point; for secret/ssh without one, the default (`/run/secrets/<id>`, `/run/buildkit/ssh_agent.<n>`) */
  readonly target: string;
  readonly source?: string;
  /** stage name or index, or an image, to mount from (bind, cache) */
  readonly from?: string;
  readonly readOnly: boolean;
  /** cache id (default: the target), secret id (default: source, else the target's base name), ssh id */
  readonly id?: string;
  readonly sharing?: "shared" | "private" | "locked";
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly required?: boolean;
  /** secret: expose as this environment variable */
  readonly env?: string;
  /** tmpfs size */
  readonly sizeBytes?: number;
}

/** A COPY/ADD heredoc source: a file named `path` with `data` (chomped for `<<-`). */
export interface InlineSource {
  readonly path: string;
  readonly data: string;
  /** whether `data` undergoes variable expansion (unquoted delimiter) */
  readonly expand: boolean;
}

export interface FromCommand extends Base {
  readonly kind: "FROM";
  readonly image: string;
  /** lowercased `AS` name */
  readonly stageName?: string;
  readonly platform?: string;
}
export interface ArgCommand extends Base {
  readonly kind: "ARG";
  readonly args: readonly ArgDefinition[];
}
export interface EnvCommand extends Base {
  readonly kind: "ENV";
  readonly env: readonly KeyValue[];
}
export interface LabelCommand extends Base {
  readonly kind: "LABEL";
  readonly labels: readonly KeyValue[];
}
export interface RunCommand extends Base {
  readonly kind: "RUN";
  /** exec form: argv; shell form: one string run by SHELL */
  readonly command: readonly string[];
  readonly prependShell: boolean;
  /** heredoc files of the instruction (content unchomped; see Heredoc.chomp) */
  readonly heredocs: readonly Heredoc[];
  readonly mounts: readonly RunMount[];
  /** the `--mount` values as written (the planner re-parses them after expansion) */
  readonly mountSpecs: readonly string[];
  readonly network?: "default" | "none" | "host";
  readonly security?: "sandbox" | "insecure";
}
export interface CopyCommand extends Base {
  readonly kind: "COPY";
  readonly sources: readonly string[];
  readonly inline: readonly InlineSource[];
  readonly dest: string;
  readonly from?: string;
  readonly chown?: string;
  readonly chmod?: string;
  readonly link: boolean;
  readonly parents: boolean;
  readonly exclude: readonly string[];
}
export interface AddCommand extends Base {
  readonly kind: "ADD";
  readonly sources: readonly string[];
  readonly inline: readonly InlineSource[];
  readonly dest: string;
  readonly chown?: string;
  readonly chmod?: string;
  readonly link: boolean;
  readonly exclude: readonly string[];
  readonly checksum?: string;
  readonly keepGitDir?: boolean;
  readonly unpack?: boolean;
}
export interface WorkdirCommand extends Base {
  readonly kind: "WORKDIR";
  readonly path: string;
}
export interface UserCommand extends Base {
  readonly kind: "USER";
  readonly user: string;
}
export interface CmdCommand extends Base {
  readonly kind: "CMD";
  readonly command: readonly string[];
  readonly prependShell: boolean;
}
export interface EntrypointCommand extends Base {
  readonly kind: "ENTRYPOINT";
  readonly command: readonly string[];
  readonly prependShell: boolean;
}
export interface ShellCommand extends Base {
  readonly kind: "SHELL";
  readonly shell: readonly string[];
}
export interface ExposeCommand extends Base {
  readonly kind: "EXPOSE";
  /** as written; after planning, normalised to `port/proto` entries (ranges expanded) */
  readonly ports: readonly string[];
}
export interface HealthcheckCommand extends Base {
  readonly kind: "HEALTHCHECK";
  /** `["NONE"]`, `["CMD", argv…]` or `["CMD-SHELL", text]` (Docker's HealthConfig.Test) */
  readonly test: readonly string[];
  readonly intervalNs?: number;
  readonly timeoutNs?: number;
  readonly startPeriodNs?: number;
  readonly startIntervalNs?: number;
  readonly retries?: number;
}
export interface StopSignalCommand extends Base {
  readonly kind: "STOPSIGNAL";
  readonly signal: string;
}
export interface VolumeCommand extends Base {
  readonly kind: "VOLUME";
  readonly volumes: readonly string[];
}
export interface OnbuildCommand extends Base {
  readonly kind: "ONBUILD";
  /** the trigger as it will be stored in the image config (heredoc bodies appended) */
  readonly expression: string;
}
export interface MaintainerCommand extends Base {
  readonly kind: "MAINTAINER";
  readonly maintainer: string;
}

/** Every instruction except FROM (which starts a stage). */
export type DockerfileCommand =
  | ArgCommand
  | EnvCommand
  | LabelCommand
  | RunCommand
  | CopyCommand
  | AddCommand
  | WorkdirCommand
  | UserCommand
  | CmdCommand
  | EntrypointCommand
  | ShellCommand
  | ExposeCommand
  | HealthcheckCommand
  | StopSignalCommand
  | VolumeCommand
  | OnbuildCommand
  | MaintainerCommand;

export interface ParsedStage {
  readonly from: FromCommand;
  readonly commands: readonly DockerfileCommand[];
}

/** BuildKit's `instructions.Parse` result. */
export interface ParsedDockerfile {
  readonly ast: DockerfileAst;
  /** ARGs before the first FROM */
  readonly metaArgs: readonly ArgCommand[];
  readonly stages: readonly ParsedStage[];
}

// ----------------------------------------------------------------------------------------------------------------
// Instruction parsing and validation

const ALL_INSTRUCTIONS = [
  "ADD",
  "ARG",
  "CMD",
  "COPY",
  "ENTRYPOINT",
  "ENV",
  "EXPOSE",
  "FROM",
  "HEALTHCHECK",
  "LABEL",
  "MAINTAINER",
  "ONBUILD",
  "RUN",
  "SHELL",
  "STOPSIGNAL",
  "USER",
  "VOLUME",
  "WORKDIR",
];

type FlagKind = "bool" | "string" | "strings";

const FLAGS: Record<string, Record<string, FlagKind>> = {
  from: { platform: "string" },
  run: { mount: "strings", network: "string", security: "string" },
  copy: { from: "string", chown: "string", chmod: "string", link: "bool", exclude: "strings", parents: "bool" },
  add: {
    chown: "string",
    chmod: "string",
    link: "bool",
    exclude: "strings",
    checksum: "string",
    "keep-git-dir": "bool",
    unpack: "bool",
  },
  healthcheck: { interval: "string", timeout: "string", "start-period": "string", "start-interval": "string", retries: "string" },
};

class Ctx {
  constructor(readonly file: string) {}
  loc(p: Position): SourceLocation {
    return { file: this.file, line: p.line, column: p.column };
  }
  fail(p: Position, message: string): never {
    throw new DockerfileSyntaxError(this.loc(p), message);
  }
  location(node: AstNode): InstructionLocation {
    return { file: this.file, line: node.start.line, column: node.start.column, endLine: node.endLine };
  }
}

/** Levenshtein distance, for "did you mean" hints. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

function suggest(word: string, options: readonly string[]): string {
  let best = "";
  let bestD = Infinity;
  for (const o of options) {
    const dd = distance(word.toUpperCase(), o.toUpperCase());
    if (dd < bestD) {
      bestD = dd;
      best = o;
    }
  }
  const limit = word.length <= 3 ? 1 : Math.max(2, Math.floor(word.length / 3));
  return bestD <= limit ? ` (did you mean ${best}?)` : "";
}

type FlagValues = Map<string, { value: string | boolean | string[]; flag: AstFlag }>;

function parseFlags(ctx: Ctx, node: AstNode, name: string): FlagValues {
  const spec = FLAGS[node.keyword] ?? {};
  const out: FlagValues = new Map();
  for (const flag of node.flags) {
    const body = flag.text.slice(2);
    const eq = body.indexOf("=");
    const key = eq < 0 ? body : body.slice(0, eq);
    const value = eq < 0 ? undefined : body.slice(eq + 1);
    const kind = spec[key];
    if (!kind) {
      const valid = Object.keys(spec).map((k) => "--" + k);
      const hint = valid.length ? ` (valid flags: ${valid.join(", ")})` : ` (${name} takes no flags)`;
      const guess = suggest(key, Object.keys(spec)).replace("(did you mean ", ": did you mean --").replace("?)", "?");
      ctx.fail(flag.position, `unknown flag ${JSON.stringify("--" + key)} for ${name}${guess.trimStart()}${hint}`);
    }
    const prev = out.get(key);
    if (prev && kind !== "strings") ctx.fail(flag.position, `duplicate flag specified: --${key}`);
    switch (kind) {
      case "bool": {
        if (value === "") ctx.fail(flag.position, `missing a value on flag: --${key}`);
        const lower = value?.toLowerCase();
        if (lower !== undefined && lower !== "true" && lower !== "false") {
          ctx.fail(flag.position, `expecting boolean value for flag --${key}, not: ${value}`);
        }
        out.set(key, { value: lower === undefined || lower === "true", flag });
        break;
      }
      case "string":
        if (value === undefined) ctx.fail(flag.position, `missing a value on flag: --${key}`);
        out.set(key, { value, flag });
        break;
      case "strings": {
        if (value === undefined) ctx.fail(flag.position, `missing a value on flag: --${key}`);
        const list = prev ? [...(prev.value as string[]), value] : [value];
        out.set(key, { value: list, flag });
        break;
      }
    }
  }
  return out;
}

function str(flags: FlagValues, key: string): string | undefined {
  const v = flags.get(key)?.value;
  return typeof v === "string" ? v : undefined;
}
function strs(flags: FlagValues, key: string): string[] {
  const v = flags.get(key)?.value;
  return Array.isArray(v) ? v : [];
}
function bool(flags: FlagValues, key: string): boolean | undefined {
  const v = flags.get(key)?.value;
  return typeof v === "boolean" ? v : undefined;
}

function argAt(node: AstNode, i: number): Position {
  return node.argPositions[i] ?? node.start;
}

const STAGE_NAME = /^[a-z][a-z0-9\-_.]*$/;

/** Go's time.ParseDuration, in nanoseconds. */
export function parseGoDuration(s: string): number | undefined {
  const m = /^([-+]?)((?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|0)$/.exec(s);
  if (!m) return undefined;
  if (m[2] === "0") return 0;
  const unit: Record<string, number> = { ns: 1, us: 1e3, "µs": 1e3, "μs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let total = 0;
  for (const part of m[2]!.matchAll(/(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) total += Number(part[1]) * unit[part[2]!]!;
  return m[1] === "-" ? -total : total;
}

function sourcesAndDest(
  ctx: Ctx,
  node: AstNode,
  name: string,
): { sources: string[]; inline: InlineSource[]; dest: string } {
  const args = node.args;
  if (args.length < 2) {
    ctx.fail(argAt(node, 0), `${name} requires at least two arguments, but only ${args.length === 0 ? "none was" : "one was"} provided: a source and a destination`);
  }
  const dest = args[args.length - 1]!;
  if (!node.json && parseHeredocSafe(dest)) ctx.fail(argAt(node, args.length - 1), `${name} cannot accept a heredoc as a destination`);
  const byName = new Map(node.heredocs.map((h) => [h.name, h]));
  const sources: string[] = [];
  const inline: InlineSource[] = [];
  for (const src of args.slice(0, -1)) {
    const marker = node.json ? undefined : parseHeredocSafe(src);
    if (marker) {
      const h = byName.get(marker.name);
      const raw = h?.content ?? "";
      inline.push({ path: marker.name, data: marker.chomp ? raw.replace(/^\t+/gm, "") : raw, expand: marker.expand });
    } else {
      sources.push(src);
    }
  }
  return { sources, inline, dest };
}

function parseHeredocSafe(word: string): ReturnType<typeof parseHeredocMarker> {
  try {
    return parseHeredocMarker(word);
  } catch {
    return undefined;
  }
}

/** Splits a mount spec like Go's encoding/csv (one record, `"` quoting). */
function csvFields(s: string): string[] | string {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    if (s[i] === '"') {
      let field = "";
      i++;
      for (;;) {
        if (i >= s.length) return `extraneous or missing " in quoted-field`;
        if (s[i] === '"') {
          if (s[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += s[i++];
      }
      if (i < s.length && s[i] !== ",") return `extraneous or missing " in quoted-field`;
      out.push(field);
    } else {
      const comma = s.indexOf(",", i);
      const field = comma < 0 ? s.slice(i) : s.slice(i, comma);
      if (field.includes('"')) return `bare " in non-quoted-field`;
      out.push(field);
      i = comma < 0 ? s.length : comma;
    }
    if (i >= s.length) return out;
    i++; // comma
  }
}

function parseBoolValue(v: string): boolean | undefined {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(v)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(v)) return false;
  return undefined;
}

/** docker/go-units RAMInBytes: 1024-based, units b k m g t p (optionally followed by b or ib). */
export function parseRamBytes(v: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp])?(?:i?b)?$/i.exec(v.trim());
  if (!m) return undefined;
  const mult: Record<string, number> = { k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };
  return Math.floor(Number(m[1]) * (m[2] ? mult[m[2].toLowerCase()]! : 1));
}

/**
 * Parses one `--mount` value (BuildKit's parseMount). `expand` is applied to every value; at parse time values
 * containing `$` are not checked further (they are checked again after expansion). Throws a string message.
 */
function parseMount(spec: string, index: number, expand: ((v: string) => string) | undefined): RunMount {
  const fields = csvFields(spec);
  if (typeof fields === "string") throw new MountError(`invalid mount ${JSON.stringify(spec)}: ${fields}`);
  if (spec === "") throw new MountError("empty --mount value");
  let type: RunMount["type"] = "bind";
  let target = "";
  let source: string | undefined;
  let from: string | undefined;
  let readOnly: boolean | undefined;
  let id: string | undefined;
  let sharing: RunMount["sharing"];
  let mode: number | undefined;
  let uid: number | undefined;
  let gid: number | undefined;
  let required: boolean | undefined;
  let env: string | undefined;
  let sizeBytes: number | undefined;
  const deferred = (v: string): boolean => expand === undefined && v.includes("$");
  // A variable type (`type=$T`) is only known after expansion: until then, nothing that depends on the type is checked.
  let typeDeferred = false;
  for (const field of fields) {
    const eq = field.indexOf("=");
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    if (eq < 0) {
      switch (key) {
        case "readonly":
        case "ro":
          readOnly = true;
          continue;
        case "readwrite":
        case "rw":
          readOnly = false;
          continue;
        case "required":
          if (type !== "secret" && type !== "ssh" && !typeDeferred) throw new MountError(`unexpected key 'required' for mount type '${type}'`);
          required = true;
          continue;
        default:
          throw new MountError(`invalid field '${field}' must be a key=value pair`);
      }
    }
    let value = field.slice(eq + 1);
    if (expand) value = expand(value);
    switch (key) {
      case "type": {
        if (deferred(value)) {
          typeDeferred = true;
          break;
        }
        typeDeferred = false;
        const t = value.toLowerCase();
        if (t !== "bind" && t !== "cache" && t !== "tmpfs" && t !== "secret" && t !== "ssh") {
          throw new MountError(`unsupported mount type ${JSON.stringify(value)} (bind, cache, tmpfs, secret or ssh)`);
        }
        type = t;
        break;
      }
      case "from":
        from = value;
        break;
      case "source":
      case "src":
        source = value;
        break;
      case "target":
      case "dst":
      case "destination":
        target = value;
        break;
      case "readonly":
      case "ro":
      case "readwrite":
      case "rw": {
        if (deferred(value)) break;
        const b = parseBoolValue(value);
        if (b === undefined) throw new MountError(`invalid value for ${key}: ${value}`);
        readOnly = key === "readonly" || key === "ro" ? b : !b;
        break;
      }
      case "required": {
        if (type !== "secret" && type !== "ssh" && !typeDeferred) throw new MountError(`unexpected key 'required' for mount type '${type}'`);
        if (deferred(value)) break;
        const b = parseBoolValue(value);
        if (b === undefined) throw new MountError(`invalid value for required: ${value}`);
        required = b;
        break;
      }
      case "id":
        id = value;
        break;
      case "sharing": {
        if (type !== "cache" && !typeDeferred) throw new MountError(`invalid cache sharing set for ${type} mount`);
        const s = value.toLowerCase();
        if (s !== "shared" && s !== "private" && s !== "locked") {
          if (deferred(value)) break;
          throw new MountError(`unsupported sharing value ${JSON.stringify(value)} (shared, private or locked)`);
        }
        sharing = s;
        break;
      }
      case "mode":
      case "uid":
      case "gid": {
        if (deferred(value)) break;
        const n = key === "mode" ? (/^[0-7]+$/.test(value) ? parseInt(value, 8) : NaN) : /^\d+$/.test(value) ? Number(value) : NaN;
        if (!Number.isFinite(n) || n > 0xffffffff) throw new MountError(`invalid value ${value} for ${key}`);
        if (key === "mode") mode = n;
        else if (key === "uid") uid = n;
        else gid = n;
        break;
      }
      case "env":
        env = value;
        break;
      case "size": {
        if (deferred(value)) break;
        const n = parseRamBytes(value);
        if (n === undefined) throw new MountError(`invalid value ${value} for size`);
        sizeBytes = n;
        break;
      }
      default:
        throw new MountError(`unexpected key '${key}' in '${field}'${suggest(key, ["type", "from", "source", "target", "readonly", "id", "sharing", "mode", "uid", "gid", "required", "env", "size"])}`);
    }
  }
  // Parse time with a variable type: the rest is checked when the RUN is planned (values expanded).
  if (typeDeferred) return { type, target, readOnly: readOnly ?? true };
  const fileInfo = type === "cache" || type === "secret" || type === "ssh";
  if (!fileInfo) {
    if (mode !== undefined) throw new MountError(`mode not allowed for "${type}" type mounts`);
    if (uid !== undefined) throw new MountError(`uid not allowed for "${type}" type mounts`);
    if (gid !== undefined) throw new MountError(`gid not allowed for "${type}" type mounts`);
  }
  if (env !== undefined && type !== "secret") throw new MountError(`unexpected key 'env' for mount type '${type}'`);
  if (sizeBytes !== undefined && type !== "tmpfs") throw new MountError(`unexpected key 'size' for mount type '${type}'`);
  if (type === "secret") {
    if (from !== undefined) throw new MountError("secret mount should not have a from");
    if (!source && !target && !id) throw new MountError("invalid secret mount: one of id, source or target is required");
    if (source && id) throw new MountError("both source and id can't be set");
    id = id || source || target.split("/").filter(Boolean).pop() || "";
    if (target === "" && env === undefined) target = `/run/secrets/${id}`;
  } else if (type === "ssh") {
    if (from !== undefined) throw new MountError("ssh mount should not have a from");
    id ||= "default";
    if (target === "") target = `/run/buildkit/ssh_agent.${index}`;
  } else if (target === "") {
    throw new MountError(`mount type ${type} requires a target`);
  }
  if (type === "cache") id ||= target;
  return {
    type,
    target,
    readOnly: readOnly ?? !(type === "cache" || type === "tmpfs"),
    ...(source !== undefined ? { source } : {}),
    ...(from !== undefined ? { from } : {}),
    ...(id !== undefined ? { id } : {}),
    ...(sharing !== undefined ? { sharing } : type === "cache" ? { sharing: "shared" as const } : {}),
    ...(mode !== undefined ? { mode } : {}),
    ...(uid !== undefined ? { uid } : {}),
    ...(gid !== undefined ? { gid } : {}),
    ...(required !== undefined ? { required } : {}),
    ...(env !== undefined ? { env } : {}),
    ...(sizeBytes !== undefined ? { sizeBytes } : {}),
  };
}

class MountError extends Error {}

function kvs(ctx: Ctx, node: AstNode, name: string): KeyValue[] {
  if (node.args.length === 0) ctx.fail(node.start, `${name} requires at least one argument`);
  const out: KeyValue[] = [];
  for (let j = 0; j < node.args.length; j += 3) {
    const key = node.args[j]!;
    if (key === "") ctx.fail(argAt(node, j), `${name} names can not be blank`);
    out.push({ key, value: node.args[j + 1] ?? "" });
  }
  return out;
}

function exactlyOne(ctx: Ctx, node: AstNode, name: string): string {
  if (node.args.length !== 1) ctx.fail(node.start, `${name} requires exactly one argument`);
  return node.args[0]!;
}

function noFlags(ctx: Ctx, node: AstNode, name: string): void {
  parseFlags(ctx, node, name);
}

/** Converts one AST node to a typed instruction (BuildKit's ParseInstruction), validating flags and arguments. */
export function parseCommand(node: AstNode, file = "Dockerfile"): FromCommand | DockerfileCommand {
  const ctx = new Ctx(file);
  return parseNode(ctx, node);
}

function parseNode(ctx: Ctx, node: AstNode): FromCommand | DockerfileCommand {
  const name = node.keyword.toUpperCase();
  const base: Base = { location: ctx.location(node), original: node.original.trim() };
  switch (node.keyword) {
    case "from": {
      const flags = parseFlags(ctx, node, name);
      const args = node.args;
      let stageName: string | undefined;
      if (args.length === 3 && args[1]!.toLowerCase() === "as") {
        stageName = args[2]!.toLowerCase();
        if (!STAGE_NAME.test(stageName)) {
          ctx.fail(argAt(node, 2), `invalid name for build stage: ${JSON.stringify(args[2])}, name can't start with a number or contain symbols`);
        }
      } else if (args.length !== 1) {
        ctx.fail(args.length === 0 ? node.start : argAt(node, 1), "FROM requires either one or three arguments (FROM image [AS name])");
      }
      const platform = str(flags, "platform");
      return { kind: "FROM", ...base, image: args[0]!, ...(stageName ? { stageName } : {}), ...(platform !== undefined ? { platform } : {}) };
    }
    case "arg": {
      noFlags(ctx, node, name);
      if (node.args.length === 0) ctx.fail(node.start, "ARG requires at least one argument");
      const args: ArgDefinition[] = node.args.map((a, i) => {
        const eq = a.indexOf("=");
        if (eq < 0) return { key: a };
        if (eq === 0) ctx.fail(argAt(node, i), "ARG names can not be blank");
        return { key: a.slice(0, eq), value: a.slice(eq + 1) };
      });
      return { kind: "ARG", ...base, args };
    }
    case "env":
      noFlags(ctx, node, name);
      return { kind: "ENV", ...base, env: kvs(ctx, node, name) };
    case "label":
      noFlags(ctx, node, name);
      return { kind: "LABEL", ...base, labels: kvs(ctx, node, name) };
    case "maintainer":
      noFlags(ctx, node, name);
      return { kind: "MAINTAINER", ...base, maintainer: exactlyOne(ctx, node, name) };
    case "workdir":
      noFlags(ctx, node, name);
      return { kind: "WORKDIR", ...base, path: exactlyOne(ctx, node, name) };
    case "user":
      noFlags(ctx, node, name);
      return { kind: "USER", ...base, user: exactlyOne(ctx, node, name) };
    case "stopsignal":
      noFlags(ctx, node, name);
      return { kind: "STOPSIGNAL", ...base, signal: exactlyOne(ctx, node, name) };
    case "run": {
      const flags = parseFlags(ctx, node, name);
      if (node.args.length === 0 && node.heredocs.length === 0) ctx.fail(node.start, "RUN requires at least one argument");
      const mountFlag = flags.get("mount")?.flag;
      const mounts = strs(flags, "mount").map((m, i) => {
        try {
          return parseMount(m, i, undefined);
        } catch (e) {
          if (e instanceof MountError) ctx.fail(mountFlag?.position ?? node.start, `--mount: ${e.message}`);
          throw e;
        }
      });
      const network = str(flags, "network");
      if (network !== undefined && network !== "default" && network !== "none" && network !== "host") {
        ctx.fail(flags.get("network")!.flag.position, `unsupported network mode ${JSON.stringify(network)} (default, none or host)`);
      }
      const security = str(flags, "security");
      if (security !== undefined && security !== "sandbox" && security !== "insecure") {
        ctx.fail(flags.get("security")!.flag.position, `unsupported security mode ${JSON.stringify(security)} (sandbox or insecure)`);
      }
      return {
        kind: "RUN",
        ...base,
        command: node.args,
        prependShell: !node.json,
        heredocs: node.heredocs,
        mounts,
        mountSpecs: strs(flags, "mount"),
        ...(network !== undefined ? { network } : {}),
        ...(security !== undefined ? { security } : {}),
      };
    }
    case "cmd":
    case "entrypoint": {
      noFlags(ctx, node, name);
      return { kind: name as "CMD" | "ENTRYPOINT", ...base, command: node.args, prependShell: !node.json };
    }
    case "shell": {
      noFlags(ctx, node, name);
      if (node.args.length === 0) ctx.fail(node.start, "SHELL requires at least one argument");
      if (!node.json) ctx.fail(argAt(node, 0), `SHELL requires the arguments to be in JSON form, e.g. SHELL ["/bin/sh", "-c"]`);
      return { kind: "SHELL", ...base, shell: node.args };
    }
    case "expose":
      noFlags(ctx, node, name);
      if (node.args.length === 0) ctx.fail(node.start, "EXPOSE requires at least one argument");
      return { kind: "EXPOSE", ...base, ports: node.args };
    case "volume": {
      noFlags(ctx, node, name);
      if (node.args.length === 0) ctx.fail(node.start, "VOLUME requires at least one argument");
      const volumes = node.args.map((v, i) => {
        const t = v.trim();
        if (t === "") ctx.fail(argAt(node, i), "VOLUME specified can not be an empty string");
        return t;
      });
      return { kind: "VOLUME", ...base, volumes };
    }
    case "copy":
    case "add": {
      const flags = parseFlags(ctx, node, name);
      const sd = sourcesAndDest(ctx, node, name);
      const common = {
        ...base,
        ...sd,
        ...(str(flags, "chown") !== undefined ? { chown: str(flags, "chown")! } : {}),
        ...(str(flags, "chmod") !== undefined ? { chmod: str(flags, "chmod")! } : {}),
        link: bool(flags, "link") ?? false,
        exclude: strs(flags, "exclude"),
      };
      if (node.keyword === "copy") {
        const from = str(flags, "from");
        if (from !== undefined && from.includes("$")) {
          ctx.fail(flags.get("from")!.flag.position, "variable expansion is not supported for --from: define a new stage with FROM using an ARG from the global scope instead");
        }
        if (from === "") ctx.fail(flags.get("from")!.flag.position, "--from needs a stage name, stage index or image");
        return { kind: "COPY", ...common, ...(from !== undefined ? { from } : {}), parents: bool(flags, "parents") ?? false };
      }
      const checksum = str(flags, "checksum");
      const keepGitDir = bool(flags, "keep-git-dir");
      const unpack = bool(flags, "unpack");
      return {
        kind: "ADD",
        ...common,
        ...(checksum !== undefined ? { checksum } : {}),
        ...(keepGitDir !== undefined ? { keepGitDir } : {}),
        ...(unpack !== undefined ? { unpack } : {}),
      };
    }
    case "healthcheck":
      return parseHealthcheck(ctx, node, base);
    case "onbuild": {
      noFlags(ctx, node, name);
      const t = node.trigger;
      if (!t) ctx.fail(node.start, "ONBUILD requires at least one argument");
      const tk = t.keyword.toUpperCase();
      if (tk === "ONBUILD") ctx.fail(t.start, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
      if (tk === "FROM" || tk === "MAINTAINER") ctx.fail(t.start, `${tk} isn't allowed as an ONBUILD trigger`);
      parseNode(ctx, t); // validate the trigger now
      let expression = node.original.replace(/^\s*ONBUILD\s*/i, "");
      for (const h of t.heredocs) expression += "\n" + h.content + h.name;
      return { kind: "ONBUILD", ...base, expression };
    }
    default:
      ctx.fail(node.start, `unknown instruction ${JSON.stringify(node.spelled)}${suggest(node.spelled, ALL_INSTRUCTIONS)}`);
  }
}

function parseHealthcheck(ctx: Ctx, node: AstNode, base: Base): HealthcheckCommand {
  if (node.args.length === 0) ctx.fail(node.start, "HEALTHCHECK requires at least one argument (NONE, or CMD followed by a command)");
  const typ = node.args[0]!.toUpperCase();
  const rest = node.args.slice(1);
  if (typ === "NONE") {
    if (rest.length !== 0) ctx.fail(argAt(node, 1), "HEALTHCHECK NONE takes no arguments");
    return { kind: "HEALTHCHECK", ...base, test: ["NONE"] };
  }
  const flags = parseFlags(ctx, node, "HEALTHCHECK");
  if (typ !== "CMD") ctx.fail(argAt(node, 0), `unknown type ${JSON.stringify(typ)} in HEALTHCHECK (try CMD)`);
  if (rest.length === 0) ctx.fail(node.start, "missing command after HEALTHCHECK CMD");
  const test = node.json ? ["CMD", ...rest] : ["CMD-SHELL", ...rest];
  const durations: Record<string, number | undefined> = {};
  for (const key of ["interval", "timeout", "start-period", "start-interval"]) {
    const v = str(flags, key);
    if (v === undefined || v === "") continue;
    const ns = parseGoDuration(v);
    if (ns === undefined) ctx.fail(flags.get(key)!.flag.position, `invalid duration ${JSON.stringify(v)} for --${key} (e.g. 30s, 1m30s)`);
    if (ns !== 0 && ns < 1e6) ctx.fail(flags.get(key)!.flag.position, `--${key} cannot be less than 1ms`);
    durations[key] = ns;
  }
  let retries: number | undefined;
  const r = str(flags, "retries");
  if (r !== undefined && r !== "") {
    if (!/^[-+]?\d+$/.test(r) || Math.abs(Number(r)) > 2 ** 31 - 1) ctx.fail(flags.get("retries")!.flag.position, `invalid --retries value ${JSON.stringify(r)}`);
    retries = Number(r);
    if (retries < 0) ctx.fail(flags.get("retries")!.flag.position, `--retries cannot be negative (${retries})`);
  }
  return {
    kind: "HEALTHCHECK",
    ...base,
    test,
    ...(durations["interval"] !== undefined ? { intervalNs: durations["interval"] } : {}),
    ...(durations["timeout"] !== undefined ? { timeoutNs: durations["timeout"] } : {}),
    ...(durations["start-period"] !== undefined ? { startPeriodNs: durations["start-period"] } : {}),
    ...(durations["start-interval"] !== undefined ? { startIntervalNs: durations["start-interval"] } : {}),
    ...(retries !== undefined ? { retries } : {}),
  };
}

/**
 * Parses and validates a Dockerfile into global ARGs and stages (BuildKit's `parser.Parse` + `instructions.Parse`).
 * Throws {@link DockerfileSyntaxError} naming the file, line and column of the first problem.
 */
export function parseInstructions(text: string, options: { file?: string } = {}): ParsedDockerfile {
  const file = options.file ?? "Dockerfile";
  const ast = parseDockerfileAst(text, { file });
  const ctx = new Ctx(file);
  const metaArgs: ArgCommand[] = [];
  const stages: { from: FromCommand; commands: DockerfileCommand[] }[] = [];
  for (const node of ast.nodes) {
    const cmd = parseNode(ctx, node);
    if (cmd.kind === "FROM") {
      stages.push({ from: cmd, commands: [] });
      continue;
    }
    const current = stages[stages.length - 1];
    if (!current) {
      if (cmd.kind === "ARG") {
        metaArgs.push(cmd);
        continue;
      }
      return ctx.fail(node.start, `${cmd.kind} before the first FROM: no build stage in current context (only ARG may come before FROM)`);
    }
    current.commands.push(cmd);
  }
  if (stages.length === 0) ctx.fail(ast.nodes[ast.nodes.length - 1]!.start, "the Dockerfile has no FROM instruction, so it has no stage to build");
  return { ast, metaArgs, stages };
}

// ----------------------------------------------------------------------------------------------------------------
// Planning: expansion, stages, target

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** What the planner may know of a base image (from its config), to expand against its ENV and run its ONBUILDs. */
export interface BaseImageInfo {
  /** `KEY=VALUE` entries of the image config's Env */
  readonly env?: readonly string[];
  readonly workingDir?: string;
  /** the image config's OnBuild triggers, run right after FROM */
  readonly onBuild?: readonly string[];
}

export interface PlanOptions {
  /** name used in error messages (default "Dockerfile") */
  file?: string;
  /** `--build-arg` values */
  buildArgs?: Readonly<Record<string, string>>;
  /** stage name to build (default: the last stage) */
  target?: string;
  /** target platform (default "linux/amd64") */
  platform?: string;
  /** build platform (default "linux/amd64") */
  buildPlatform?: string;
  /** config of an image base, by its expanded reference; default: none known (empty env, no ONBUILD) */
  baseImage?: (ref: string, platform: Platform | undefined) => BaseImageInfo | undefined;
}

/** A step's view of the build args: which it used (expansion) and which a RUN sees in its environment. */
export interface PlanMeta {
  /** build args (ARGs in scope, not shadowed by ENV) this instruction's expansion read */
  readonly usedArgs: readonly string[];
  /** ARGs in scope with a value and not shadowed by ENV, sorted by name (a RUN gets them in its environment) */
  readonly argsInScope: readonly (readonly [string, string])[];
  /** true for instructions that came from the base image's ONBUILD triggers */
  readonly fromOnBuild?: boolean;
}

export type PlannedRun = RunCommand & PlanMeta;
export type PlannedCopy = CopyCommand & PlanMeta & {
  /** the resolved --from: a stage index or an image reference */
  readonly fromStage?: number;
  readonly fromImage?: string;
};
export type PlannedWorkdir = WorkdirCommand & PlanMeta & {
  /** the absolute working directory after this instruction */
  readonly resolved: string;
};
export type PlannedInstruction =
  | PlannedRun
  | PlannedCopy
  | PlannedWorkdir
  | (Exclude<DockerfileCommand, RunCommand | CopyCommand | WorkdirCommand> & PlanMeta);

export type StageBase =
  | { readonly kind: "scratch" }
  | { readonly kind: "stage"; readonly stage: number }
  | { readonly kind: "image"; readonly ref: string };

export interface PlannedStage {
  readonly index: number;
  readonly name?: string;
  readonly location: InstructionLocation;
  /** the FROM line as written */
  readonly original: string;
  readonly base: StageBase;
  readonly platform?: Platform;
  readonly instructions: readonly PlannedInstruction[];
  /** stages this one needs: its FROM stage, COPY --from and RUN --mount from= stages */
  readonly dependsOn: readonly number[];
  /** images used by COPY --from / RUN --mount from= (besides the base) */
  readonly imageRefs: readonly string[];
  /** ENV at the end of the stage (inherited by stages FROM it), excluding the unknown env of an image base */
  readonly env: readonly (readonly [string, string])[];
  readonly workdir: string;
  /** set when the stage could not be planned; only possible for stages the target does not need */
  readonly skipped?: string;
}

export interface DockerfilePlan {
  readonly file: string;
  readonly escapeToken: "\\" | "`";
  readonly syntax?: string;
  readonly warnings: readonly string[];
  /** global ARGs with their resolved values (undefined: declared without a value) */
  readonly metaArgs: readonly { readonly key: string; readonly value?: string }[];
  /** every stage of the file, in order; stages the target does not need are planned too */
  readonly stages: readonly PlannedStage[];
  readonly target: number;
  /** the stages the target needs, each after the stages it depends on, ending with the target */
  readonly buildOrder: readonly number[];
  /** build args that no needed stage (nor the global scope) declares; BuildKit warns about them */
  readonly unusedBuildArgs: readonly string[];
}

const KNOWN_OS = new Set(["linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "android", "aix", "dragonfly", "plan9", "js", "wasip1"]);
const ARCH_ALIASES: Record<string, string> = { x86_64: "amd64", "x86-64": "amd64", aarch64: "arm64", armhf: "arm", armel: "arm", i386: "386", i686: "386" };
const KNOWN_ARCH = new Set(["amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64", "mipsle", "mips", "loong64", "wasm"]);

/** Parses `os/arch[/variant]` (or a bare os or arch, as containerd's platforms.Parse does); undefined if invalid. */
export function parsePlatform(s: string): Platform | undefined {
  const parts = s.toLowerCase().split("/");
  if (parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/.test(p))) return undefined;
  const arch = (a: string): string | undefined => {
    const n = ARCH_ALIASES[a] ?? a;
    return KNOWN_ARCH.has(n) ? n : undefined;
  };
  if (parts.length === 1) {
    const p = parts[0]!;
    if (KNOWN_OS.has(p)) return { os: p, architecture: "amd64" };
    const a = arch(p);
    return a ? { os: "linux", architecture: a } : undefined;
  }
  const a = arch(parts[1]!);
  if (!KNOWN_OS.has(parts[0]!) || !a) return undefined;
  return { os: parts[0]!, architecture: a, ...(parts[2] ? { variant: parts[2] } : {}) };
}

function platformArgs(prefix: "BUILD" | "TARGET", p: Platform): [string, string][] {
  return [
    [`${prefix}PLATFORM`, `${p.os}/${p.architecture}${p.variant ? "/" + p.variant : ""}`],
    [`${prefix}OS`, p.os],
    [`${prefix}ARCH`, p.architecture],
    [`${prefix}VARIANT`, p.variant ?? ""],
  ];
}

const CHMOD_OCTAL = /^[0-7]{1,4}$/;
const CHMOD_SYMBOLIC = /^[ugoa]*[-+=](?:[rwxXst]*|[ugo])(?:,[ugoa]*[-+=](?:[rwxXst]*|[ugo]))*$/;

function posixJoin(...parts: string[]): string {
  const segs: string[] = [];
  for (const p of parts.join("/").split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") segs.pop();
    else segs.push(p);
  }
  return "/" + segs.join("/");
}

/** Normalises EXPOSE entries to `port/proto`, expanding ranges. */
function normalisePorts(words: string[]): string[] | string {
  const out: string[] = [];
  for (const w of words) {
    const m = /^(?:.*:)?(\d+)(?:-(\d+))?(?:\/([A-Za-z]+))?$/.exec(w);
    if (!m) return `invalid port ${JSON.stringify(w)} (expected port[/protocol] or a range like 8000-8002)`;
    const lo = Number(m[1]);
    const hi = m[2] !== undefined ? Number(m[2]) : lo;
    const proto = (m[3] ?? "tcp").toLowerCase();
    if (proto !== "tcp" && proto !== "udp" && proto !== "sctp") return `invalid protocol ${JSON.stringify(m[3])} in ${JSON.stringify(w)} (tcp, udp or sctp)`;
    if (lo < 1 || hi > 65535 || hi < lo) return `invalid port range ${JSON.stringify(w)}`;
    if (hi - lo > 65535) return `invalid port range ${JSON.stringify(w)}`;
    for (let p = lo; p <= hi; p++) out.push(`${p}/${proto}`);
  }
  return out;
}

interface StageState {
  env: Map<string, string>;
  /** ARGs in scope: value undefined = declared without a value */
  args: Map<string, string | undefined>;
  workdir: string;
  /** ONBUILD triggers this stage declares (its base's were consumed by it): they run in a stage built FROM this one */
  onBuild: string[];
}

/**
 * Plans a Dockerfile: validates it, resolves global and stage ARGs (with `--build-arg` values and the predefined
 * platform ARGs), expands variables where BuildKit does, resolves stage references and picks the stages the target
 * needs. Throws {@link DockerfileSyntaxError} for problems in the Dockerfile, and {@link InvalidDefinitionError} for
 * bad options (unknown target, malformed platform).
 */
export function planDockerfile(text: string, options: PlanOptions = {}): DockerfilePlan {
  const file = options.file ?? "Dockerfile";
  const parsed = parseInstructions(text, { file });
  return new Planner(parsed, file, options).plan();
}

class Planner {
  readonly ctx: Ctx;
  readonly lex: ShellLex;
  readonly target: Platform;
  readonly build: Platform;
  readonly buildArgs: Map<string, string>;
  readonly usedBuildArgs = new Set<string>();
  readonly meta = new Map<string, string | undefined>();
  readonly metaList: { key: string; value?: string }[] = [];
  readonly stageByName = new Map<string, number>();
  readonly planned: (PlannedStage | undefined)[];
  readonly errors: (unknown | undefined)[];
  readonly inProgress = new Set<number>();
  readonly finalState: (StageState | undefined)[];
  readonly warnings: string[];

  constructor(
    readonly parsed: ParsedDockerfile,
    readonly file: string,
    readonly options: PlanOptions,
  ) {
    this.ctx = new Ctx(file);
    this.lex = new ShellLex({ escapeToken: parsed.ast.escapeToken });
    const tp = parsePlatform(options.platform ?? "linux/amd64");
    const bp = parsePlatform(options.buildPlatform ?? "linux/amd64");
    if (!tp) throw new InvalidDefinitionError(`invalid target platform ${JSON.stringify(options.platform)} (expected os/arch[/variant], e.g. linux/amd64)`);
    if (!bp) throw new InvalidDefinitionError(`invalid build platform ${JSON.stringify(options.buildPlatform)} (expected os/arch[/variant])`);
    this.target = tp;
    this.build = bp;
    this.buildArgs = new Map(Object.entries(options.buildArgs ?? {}));
    this.planned = new Array(parsed.stages.length).fill(undefined);
    this.errors = new Array(parsed.stages.length).fill(undefined);
    this.finalState = new Array(parsed.stages.length).fill(undefined);
    this.warnings = [...parsed.ast.warnings];
  }

  expand(word: string, env: Map<string, string>, at: Position): { result: string; matched: Set<string> } {
    try {
      const r = this.lex.process(word, env);
      return { result: r.result, matched: r.matched };
    } catch (e) {
      if (e instanceof ShellExpansionError) this.ctx.fail(at, e.message);
      throw e;
    }
  }

  plan(): DockerfilePlan {
    this.parsed.stages.forEach((s, i) => {
      if (!s.from.stageName) return;
      const prev = this.stageByName.get(s.from.stageName);
      if (prev !== undefined) {
        this.ctx.fail(s.from.location, `duplicate stage name ${JSON.stringify(s.from.stageName)} (also used by the stage on line ${this.parsed.stages[prev]!.from.location.line})`);
      }
      this.stageByName.set(s.from.stageName, i);
    });

    let target = this.parsed.stages.length - 1;
    if (this.options.target !== undefined) {
      const t = this.stageByName.get(this.options.target.toLowerCase());
      if (t === undefined) {
        const names = [...this.stageByName.keys()];
        throw new InvalidDefinitionError(
          `target stage ${JSON.stringify(this.options.target)} could not be found in ${this.file}` +
            (names.length ? ` (stages: ${names.join(", ")})` : " (it names no stages; add AS <name> to a FROM)"),
        );
      }
      target = t;
    }

    // Global scope: predefined platform ARGs, then the meta ARGs in order (a build-arg overrides a default).
    // TARGETSTAGE names the stage being built (`default` for an unnamed one), as BuildKit's automatic ARG does.
    const globals = new Map<string, string>([
      ...platformArgs("BUILD", this.build),
      ...platformArgs("TARGET", this.target),
      ["TARGETSTAGE", this.parsed.stages[target]?.from.stageName ?? "default"],
    ]);
    for (const cmd of this.parsed.metaArgs) {
      const argPos = { line: cmd.location.line, column: cmd.location.column };
      for (const a of cmd.args) {
        // A --build-arg replaces the default, which is then never expanded (BuildKit: `${X:?msg}` in it cannot fail).
        let value: string | undefined;
        if (this.buildArgs.has(a.key)) {
          value = this.buildArgs.get(a.key)!;
          this.usedBuildArgs.add(a.key);
        } else if (a.value !== undefined) {
          value = this.expand(a.value, globals, argPos).result;
        }
        this.meta.set(a.key, value);
        this.metaList.push({ key: a.key, ...(value !== undefined ? { value } : {}) });
        if (value !== undefined) globals.set(a.key, value);
        else globals.delete(a.key);
      }
    }
    this.globals = globals;

    // Plan every stage (errors are kept per stage: a broken stage the target does not need is not fatal).
    for (let i = 0; i < this.parsed.stages.length; i++) this.tryPlan(i);
    const order: number[] = [];
    const seen = new Set<number>();
    const visit = (i: number): void => {
      if (seen.has(i)) return;
      seen.add(i);
      const err = this.errors[i];
      if (err !== undefined) throw err;
      for (const d of this.planned[i]!.dependsOn) visit(d);
      order.push(i);
    };
    visit(target);
    const stages = this.planned.map(
      (s, i) =>
        s ??
        // a stage that failed and is not needed: keep its place with no instructions
        ({
          index: i,
          ...(this.parsed.stages[i]!.from.stageName ? { name: this.parsed.stages[i]!.from.stageName } : {}),
          location: this.parsed.stages[i]!.from.location,
          original: this.parsed.stages[i]!.from.original,
          base: { kind: "image", ref: this.parsed.stages[i]!.from.image },
          instructions: [],
          dependsOn: [],
          imageRefs: [],
          env: [],
          workdir: "/",
          skipped: this.errors[i] instanceof Error ? this.errors[i].message : "not planned",
        } satisfies PlannedStage),
    );
    // Build args count as used when declared in a needed stage (or globally).
    for (const i of order) {
      for (const ins of stages[i]!.instructions) {
        if (ins.kind === "ARG") for (const a of ins.args) if (this.buildArgs.has(a.key)) this.usedBuildArgs.add(a.key);
      }
    }
    // Proxy args are predefined (BuildKit never warns about them): every RUN gets them without an ARG.
    const unusedBuildArgs = [...this.buildArgs.keys()].filter((k) => !this.usedBuildArgs.has(k) && !/^(http|https|ftp|no|all)_proxy$/i.test(k)).sort();
    return {
      file: this.file,
      escapeToken: this.parsed.ast.escapeToken,
      ...(this.parsed.ast.syntax !== undefined ? { syntax: this.parsed.ast.syntax } : {}),
      warnings: this.warnings,
      metaArgs: this.metaList,
      stages,
      target,
      buildOrder: order,
      unusedBuildArgs,
    };
  }

  globals = new Map<string, string>();

  tryPlan(i: number): void {
    if (this.planned[i] !== undefined || this.errors[i] !== undefined) return;
    try {
      this.planStage(i);
    } catch (e) {
      if (e instanceof DockerfileSyntaxError) this.errors[i] = e;
      else throw e;
    }
  }

  /** Resolves a stage reference (name or index) to a stage index, or undefined for an image. */
  stageRef(ref: string, self: number, allowIndex: boolean): number | undefined {
    if (allowIndex && /^\d+$/.test(ref)) {
      const idx = Number(ref);
      return idx < this.parsed.stages.length && idx !== self ? idx : -1;
    }
    const byName = this.stageByName.get(ref.toLowerCase());
    if (byName === undefined || byName === self) return undefined;
    return byName;
  }

  /** Makes sure stage `dep` is planned before `from` reads its final state; detects cycles. */
  need(dep: number, at: Position): void {
    if (this.inProgress.has(dep)) {
      const name = this.parsed.stages[dep]!.from.stageName ?? String(dep);
      this.ctx.fail(at, `circular dependency detected on stage: ${name}`);
    }
    this.tryPlan(dep);
    const err = this.errors[dep];
    if (err !== undefined) throw err;
  }

  planStage(i: number): void {
    this.inProgress.add(i);
    try {
      this.planned[i] = this.doPlanStage(i);
    } finally {
      this.inProgress.delete(i);
    }
  }

  doPlanStage(i: number): PlannedStage {
    const parsedStage = this.parsed.stages[i]!;
    const from = parsedStage.from;
    const fromPos = { line: from.location.line, column: from.location.column };
    const fromMatched = new Set<string>();
    const img = this.expand(from.image, this.globals, fromPos);
    img.matched.forEach((m) => fromMatched.add(m));
    const image = img.result;
    if (image === "") this.ctx.fail(fromPos, `base name (${from.image}) should not be blank`);
    let platform: Platform | undefined;
    if (from.platform !== undefined) {
      const p = this.expand(from.platform, this.globals, fromPos).result;
      platform = parsePlatform(p);
      if (!platform) this.ctx.fail(fromPos, `invalid platform ${JSON.stringify(p)} in FROM --platform (expected os/arch[/variant], e.g. linux/amd64)`);
    }
    const dependsOn = new Set<number>();
    const imageRefs = new Set<string>();
    const state: StageState = { env: new Map(), args: new Map(), workdir: "/", onBuild: [] };
    let base: StageBase;
    const onBuild: string[] = [];
    const baseStage = image === "scratch" ? undefined : this.stageRef(image, i, false);
    if (image === "scratch") {
      base = { kind: "scratch" };
      // BuildKit's empty image has the default PATH, so `ENV PATH=/x:$PATH` extends it.
      state.env.set("PATH", DEFAULT_PATH);
    } else if (baseStage !== undefined && baseStage >= 0) {
      this.need(baseStage, fromPos);
      base = { kind: "stage", stage: baseStage };
      dependsOn.add(baseStage);
      const st = this.finalState[baseStage]!;
      state.env = new Map(st.env);
      state.workdir = st.workdir;
      // A stage's ONBUILD triggers run in the stage built FROM it, as an image's do (BuildKit reads them from the config).
      onBuild.push(...st.onBuild);
    } else {
      base = { kind: "image", ref: image };
      const info = this.options.baseImage?.(image, platform);
      if (info?.env) for (const [k, v] of toPairs(info.env)) state.env.set(k, v);
      if (info?.workingDir) state.workdir = posixJoin("/", info.workingDir);
      if (info?.onBuild) onBuild.push(...info.onBuild);
    }

    const instructions: PlannedInstruction[] = [];
    const commands: { cmd: DockerfileCommand; fromOnBuild: boolean }[] = [];
    for (const trigger of onBuild) {
      let cmd: FromCommand | DockerfileCommand;
      try {
        const ast = parseDockerfileAst(trigger, { file: `${this.file} (ONBUILD of ${image})` });
        if (ast.nodes.length !== 1) throw new Error("one instruction expected");
        cmd = parseNode(new Ctx(`${this.file} (ONBUILD of ${image})`), ast.nodes[0]!);
      } catch (e) {
        const why = e instanceof Error ? (e instanceof DockerfileSyntaxError ? e.detail : e.message) : String(e);
        this.ctx.fail(fromPos, `ONBUILD trigger ${JSON.stringify(trigger)} of base image ${image} is invalid: ${why}`);
      }
      if (cmd.kind === "FROM" || cmd.kind === "ONBUILD" || cmd.kind === "MAINTAINER") {
        this.ctx.fail(fromPos, `${cmd.kind} isn't allowed as an ONBUILD trigger (base image ${image})`);
      }
      // Triggers run at the FROM line.
      commands.push({ cmd: { ...cmd, location: from.location } as DockerfileCommand, fromOnBuild: true });
    }
    for (const cmd of parsedStage.commands) commands.push({ cmd, fromOnBuild: false });

    for (const { cmd, fromOnBuild } of commands) {
      const planned = this.planInstruction(cmd, state, i, dependsOn, imageRefs);
      instructions.push(fromOnBuild ? { ...planned, fromOnBuild: true } : planned);
    }
    this.finalState[i] = state;
    return {
      index: i,
      ...(from.stageName ? { name: from.stageName } : {}),
      location: from.location,
      original: from.original,
      base,
      ...(platform ? { platform } : {}),
      instructions,
      dependsOn: [...dependsOn].sort((a, b) => a - b),
      imageRefs: [...imageRefs].sort(),
      env: [...state.env],
      workdir: state.workdir,
    };
  }

  planInstruction(
    cmd: DockerfileCommand,
    state: StageState,
    self: number,
    dependsOn: Set<number>,
    imageRefs: Set<string>,
  ): PlannedInstruction {
    const at: Position = { line: cmd.location.line, column: cmd.location.column };
    // One snapshot for the whole instruction: ARGs in scope, overlaid by ENV.
    const scope = new Map<string, string>();
    for (const [k, v] of state.args) if (v !== undefined) scope.set(k, v);
    for (const [k, v] of state.env) scope.set(k, v);
    const argsInScope = [...state.args]
      .filter((e): e is [string, string] => e[1] !== undefined && !state.env.has(e[0]))
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const used = new Set<string>();
    const ex = (word: string): string => {
      const r = this.expand(word, scope, at);
      for (const m of r.matched) if (state.args.get(m) !== undefined && !state.env.has(m)) used.add(m);
      return r.result;
    };
    const meta = (): PlanMeta => ({ usedArgs: [...used].sort(), argsInScope });

    switch (cmd.kind) {
      case "ARG": {
        const args: ArgDefinition[] = [];
        for (const a of cmd.args) {
          const key = ex(a.key);
          if (key === "") this.ctx.fail(at, "ARG names can not be blank");
          // A --build-arg replaces the default, which is then never expanded (as BuildKit: no error, no used args).
          let value: string | undefined;
          if (this.buildArgs.has(key)) {
            value = this.buildArgs.get(key)!;
            this.usedBuildArgs.add(key);
          } else if (a.value !== undefined) {
            value = ex(a.value);
          } else if (this.meta.has(key)) {
            value = this.meta.get(key);
          } else if (this.globals.has(key)) {
            value = this.globals.get(key); // predefined platform ARGs
          }
          state.args.set(key, value);
          args.push({ key, ...(value !== undefined ? { value } : {}) });
        }
        return { ...cmd, args, ...meta() };
      }
      case "ENV": {
        const env = cmd.env.map((kv) => ({ key: ex(kv.key), value: ex(kv.value) }));
        for (const kv of env) {
          if (kv.key === "") this.ctx.fail(at, "ENV names can not be blank");
          state.env.set(kv.key, kv.value);
        }
        return { ...cmd, env, ...meta() };
      }
      case "LABEL": {
        const labels = cmd.labels.map((kv) => ({ key: ex(kv.key), value: ex(kv.value) }));
        return { ...cmd, labels, ...meta() };
      }
      case "WORKDIR": {
        const path = ex(cmd.path);
        if (path === "") this.ctx.fail(at, "WORKDIR path can not be empty");
        state.workdir = path.startsWith("/") ? posixJoin(path) : posixJoin(state.workdir, path);
        return { ...cmd, path, resolved: state.workdir, ...meta() };
      }
      case "USER": {
        const user = ex(cmd.user);
        if (user === "") this.ctx.fail(at, "USER can not be empty");
        return { ...cmd, user, ...meta() };
      }
      case "VOLUME": {
        const volumes = cmd.volumes.map((v) => ex(v));
        if (volumes.some((v) => v.trim() === "")) this.ctx.fail(at, "VOLUME specified can not be an empty string");
        return { ...cmd, volumes, ...meta() };
      }
      case "STOPSIGNAL": {
        const signal = ex(cmd.signal);
        if (!/^(SIG[A-Z0-9+-]+|[A-Z0-9+-]+|\d+)$/i.test(signal)) this.ctx.fail(at, `invalid signal ${JSON.stringify(signal)} for STOPSIGNAL`);
        return { ...cmd, signal, ...meta() };
      }
      case "EXPOSE": {
        const words: string[] = [];
        for (const p of cmd.ports) {
          try {
            const r = this.lex.process(p, scope);
            for (const m of r.matched) if (state.args.get(m) !== undefined && !state.env.has(m)) used.add(m);
            words.push(...r.words);
          } catch (e) {
            if (e instanceof ShellExpansionError) this.ctx.fail(at, e.message);
            throw e;
          }
        }
        const ports = normalisePorts(words);
        if (typeof ports === "string") this.ctx.fail(at, ports);
        return { ...cmd, ports, ...meta() };
      }
      case "COPY":
      case "ADD": {
        const sources = cmd.sources.map((s) => ex(s));
        const dest = ex(cmd.dest);
        const inline = cmd.inline.map((h) => (h.expand ? { ...h, data: this.expandRaw(h.data, scope, at, state, used) } : h));
        const chown = cmd.chown !== undefined ? ex(cmd.chown) : undefined;
        const chmod = cmd.chmod !== undefined ? ex(cmd.chmod) : undefined;
        if (chmod !== undefined && !CHMOD_OCTAL.test(chmod) && !CHMOD_SYMBOLIC.test(chmod)) {
          this.ctx.fail(at, `invalid --chmod ${JSON.stringify(chmod)}: expected an octal mode like 755 or a symbolic one like u=rwX,go=rX`);
        }
        if (dest === "") this.ctx.fail(at, `${cmd.kind} destination can not be empty`);
        const extra = {
          sources,
          dest,
          inline,
          ...(chown !== undefined ? { chown } : {}),
          ...(chmod !== undefined ? { chmod } : {}),
        };
        if (cmd.kind === "ADD") {
          const checksum = cmd.checksum !== undefined ? ex(cmd.checksum) : undefined;
          return { ...cmd, ...extra, ...(checksum !== undefined ? { checksum } : {}), ...meta() };
        }
        let fromStage: number | undefined;
        let fromImage: string | undefined;
        if (cmd.from !== undefined) {
          const ref = this.stageRef(cmd.from, self, true);
          if (ref === -1 || (ref === undefined && this.stageByName.get(cmd.from.toLowerCase()) === self)) {
            this.ctx.fail(at, `COPY --from=${cmd.from} refers to ${/^\d+$/.test(cmd.from) ? "no earlier stage (invalid stage index)" : "the current stage"}`);
          }
          if (ref !== undefined) {
            this.need(ref, at);
            // BuildKit dispatches stages in order and refuses to copy from one not yet dispatched (after its cycle check).
            if (ref > self) {
              const stageName = (i: number) => this.parsed.stages[i]!.from.stageName ?? `stage-${i}`;
              this.ctx.fail(at, `cannot copy from stage ${JSON.stringify(cmd.from)}, it needs to be defined before current stage ${JSON.stringify(stageName(self))}`);
            }
            dependsOn.add(ref);
            fromStage = ref;
          } else {
            fromImage = cmd.from;
            imageRefs.add(cmd.from);
          }
        }
        return {
          ...cmd,
          ...extra,
          ...(fromStage !== undefined ? { fromStage } : {}),
          ...(fromImage !== undefined ? { fromImage } : {}),
          ...meta(),
        };
      }
      case "RUN": {
        const mounts: RunMount[] = [];
        // Re-parse the raw --mount values with expansion (the parse-time ones validated the syntax).
        for (const [k, spec] of cmd.mountSpecs.entries()) {
          let m: RunMount;
          try {
            m = parseMount(spec, k, ex);
          } catch (e) {
            if (e instanceof MountError) this.ctx.fail(at, `--mount: ${e.message}`);
            throw e;
          }
          if (m.from !== undefined && m.type !== "secret" && m.type !== "ssh") {
            const ref = this.stageRef(m.from, self, true);
            if (ref === -1) this.ctx.fail(at, `--mount from=${m.from} is not a valid stage index`);
            if (ref !== undefined) {
              this.need(ref, at);
              dependsOn.add(ref);
            } else if (this.stageByName.get(m.from.toLowerCase()) === self) {
              this.ctx.fail(at, `--mount from=${m.from} refers to the current stage`);
            } else if (m.from !== "context") {
              imageRefs.add(m.from);
            }
          }
          mounts.push(m);
        }
        return { ...cmd, mounts, ...meta() };
      }
      case "ONBUILD":
        // Not expanded here: the trigger is expanded where it runs.
        state.onBuild.push(cmd.expression);
        return { ...cmd, ...meta() };
      default:
        // CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER: no expansion.
        return { ...cmd, ...meta() };
    }
  }

  /** Heredoc bodies: expanded with quotes taken literally (BuildKit's ExpandRaw). */
  expandRaw(data: string, scope: Map<string, string>, at: Position, state: StageState, used: Set<string>): string {
    try {
      const r = new ShellLex({ skipProcessQuotes: true }).process(data, scope);
      for (const m of r.matched) if (state.args.get(m) !== undefined && !state.env.has(m)) used.add(m);
      return r.result;
    } catch (e) {
      if (e instanceof ShellExpansionError) this.ctx.fail(at, e.message);
      throw e;
    }
  }
}

function toPairs(env: readonly string[]): [string, string][] {
  return env.map((e) => {
    const i = e.indexOf("=");
    return i < 0 ? [e, ""] : [e.slice(0, i), e.slice(i + 1)];
  });
}

