/**
 * RUN `--mount` values (BuildKit's `parseMount`): the CSV fields, their keys and values, and the defaults each mount
 * type gets. Used twice: when the RUN is parsed (values with `$` not checked yet) and when it is planned (values
 * expanded).
 */
import type { RunMount } from "./commands.js";
import { DOCKERFILE_SUGGEST_DISTANCE, suggest } from "./suggest.js";

/** The mount types RUN --mount knows. */
const MOUNT_TYPES = ["bind", "cache", "tmpfs", "secret", "ssh"] as const;

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
export function parseMount(spec: string, index: number, expand: ((v: string) => string) | undefined): RunMount {
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
          if (type !== "secret" && type !== "ssh" && !typeDeferred)
            throw new MountError(`unexpected key 'required' for mount type '${type}'`);
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
          // As BuildKit: a near miss names the type meant (`type=tmp` → tmpfs).
          const hint = suggest(t, MOUNT_TYPES, DOCKERFILE_SUGGEST_DISTANCE)
            .replace(" (did you mean ", ": did you mean ")
            .replace("?)", "?");
          throw new MountError(
            `unsupported mount type ${JSON.stringify(value)}${hint} (the types are ${MOUNT_TYPES.join(", ")})`,
          );
        }
        type = t;
        break;
      }
      case "from":
        // BuildKit (parseMount without an expander): a stage name cannot come from a variable; a trailing `$` is literal.
        if (expand === undefined && value.includes("$") && value.indexOf("$") !== value.length - 1)
          throw new MountError("'from' doesn't support variable expansion, define alias stage instead");
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
        if (type !== "secret" && type !== "ssh" && !typeDeferred)
          throw new MountError(`unexpected key 'required' for mount type '${type}'`);
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
        const n =
          key === "mode"
            ? /^[0-7]+$/.test(value)
              ? parseInt(value, 8)
              : NaN
            : /^\d+$/.test(value)
              ? Number(value)
              : NaN;
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
        throw new MountError(
          `unexpected key '${key}' in '${field}'${suggest(key, ["type", "from", "source", "target", "readonly", "id", "sharing", "mode", "uid", "gid", "required", "env", "size"], DOCKERFILE_SUGGEST_DISTANCE)}`,
        );
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
  if (sizeBytes !== undefined && type !== "tmpfs")
    throw new MountError(`unexpected key 'size' for mount type '${type}'`);
  if (type === "secret") {
    if (from !== undefined) throw new MountError("secret mount should not have a from");
    if (!source && !target && !id)
      throw new MountError("invalid secret mount: one of id, source or target is required");
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

/** A `--mount` value that is not valid; the caller adds where it is. */
export class MountError extends Error {}
