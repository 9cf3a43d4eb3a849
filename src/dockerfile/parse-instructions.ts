/**
 * Stage 1 of the Dockerfile front end: AST (`parse.ts`) → typed, validated instructions (BuildKit's
 * `instructions.Parse`): global ARGs and stages, every flag and argument checked, nothing expanded yet. Pure.
 */
import { DockerfileSyntaxError, type SourceLocation } from "./errors.js";
import type {
  ArgCommand,
  ArgDefinition,
  Base,
  DockerfileCommand,
  FromCommand,
  HealthcheckCommand,
  InlineSource,
  InstructionLocation,
  KeyValue,
  ParsedDockerfile,
} from "./commands.js";
import { parseDockerfileAst, parseHeredocMarker, type AstFlag, type AstNode, type Position } from "./parse.js";
import { MountError, parseMount } from "./run-mount.js";
import { DOCKERFILE_SUGGEST_DISTANCE, suggest } from "./suggest.js";

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
  healthcheck: {
    interval: "string",
    timeout: "string",
    "start-period": "string",
    "start-interval": "string",
    retries: "string",
  },
};

/** Source positions of one file → locations and {@link DockerfileSyntaxError}s. */
export class Ctx {
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
      const guess = suggest(key, Object.keys(spec), DOCKERFILE_SUGGEST_DISTANCE)
        .replace("(did you mean ", ": did you mean --")
        .replace("?)", "?");
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
  for (const part of m[2]!.matchAll(/(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g))
    total += Number(part[1]) * unit[part[2]!]!;
  return m[1] === "-" ? -total : total;
}

function sourcesAndDest(
  ctx: Ctx,
  node: AstNode,
  name: string,
): { sources: string[]; inline: InlineSource[]; dest: string } {
  const args = node.args;
  if (args.length < 2) {
    ctx.fail(
      argAt(node, 0),
      `${name} requires at least two arguments, but only ${args.length === 0 ? "none was" : "one was"} provided: a source and a destination`,
    );
  }
  const dest = args[args.length - 1]!;
  if (!node.json && parseHeredocSafe(dest))
    ctx.fail(argAt(node, args.length - 1), `${name} cannot accept a heredoc as a destination`);
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
          ctx.fail(
            argAt(node, 2),
            `invalid name for build stage: ${JSON.stringify(args[2])}, name can't start with a number or contain symbols`,
          );
        }
      } else if (args.length !== 1) {
        ctx.fail(
          args.length === 0 ? node.start : argAt(node, 1),
          "FROM requires either one or three arguments (FROM image [AS name])",
        );
      }
      const platform = str(flags, "platform");
      return {
        kind: "FROM",
        ...base,
        image: args[0]!,
        ...(stageName ? { stageName } : {}),
        ...(platform !== undefined ? { platform } : {}),
      };
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
      if (node.args.length === 0 && node.heredocs.length === 0)
        ctx.fail(node.start, "RUN requires at least one argument");
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
        ctx.fail(
          flags.get("network")!.flag.position,
          `unsupported network mode ${JSON.stringify(network)} (default, none or host)`,
        );
      }
      const security = str(flags, "security");
      if (security !== undefined && security !== "sandbox" && security !== "insecure") {
        ctx.fail(
          flags.get("security")!.flag.position,
          `unsupported security mode ${JSON.stringify(security)} (sandbox or insecure)`,
        );
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
      if (!node.json)
        ctx.fail(argAt(node, 0), `SHELL requires the arguments to be in JSON form, e.g. SHELL ["/bin/sh", "-c"]`);
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
        if (from?.includes("$")) {
          ctx.fail(
            flags.get("from")!.flag.position,
            "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
          );
        }
        if (from === "") ctx.fail(flags.get("from")!.flag.position, "--from needs a stage name, stage index or image");
        return {
          kind: "COPY",
          ...common,
          ...(from !== undefined ? { from } : {}),
          parents: bool(flags, "parents") ?? false,
        };
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
      ctx.fail(
        node.start,
        `unknown instruction ${JSON.stringify(node.spelled)}${suggest(node.spelled, ALL_INSTRUCTIONS, DOCKERFILE_SUGGEST_DISTANCE)}`,
      );
  }
}

function parseHealthcheck(ctx: Ctx, node: AstNode, base: Base): HealthcheckCommand {
  if (node.args.length === 0)
    ctx.fail(node.start, "HEALTHCHECK requires at least one argument (NONE, or CMD followed by a command)");
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
    if (ns === undefined)
      ctx.fail(flags.get(key)!.flag.position, `invalid duration ${JSON.stringify(v)} for --${key} (e.g. 30s, 1m30s)`);
    if (ns !== 0 && ns < 1e6) ctx.fail(flags.get(key)!.flag.position, `--${key} cannot be less than 1ms`);
    durations[key] = ns;
  }
  let retries: number | undefined;
  const r = str(flags, "retries");
  if (r !== undefined && r !== "") {
    if (!/^[-+]?\d+$/.test(r) || Math.abs(Number(r)) > 2 ** 31 - 1)
      ctx.fail(flags.get("retries")!.flag.position, `invalid --retries value ${JSON.stringify(r)}`);
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
      return ctx.fail(
        node.start,
        `${cmd.kind} before the first FROM: no build stage in current context (only ARG may come before FROM)`,
      );
    }
    current.commands.push(cmd);
  }
  if (stages.length === 0)
    ctx.fail(
      ast.nodes[ast.nodes.length - 1]!.start,
      "the Dockerfile has no FROM instruction, so it has no stage to build",
    );
  return { ast, metaArgs, stages };
}
