/**
 * The registry configuration as data (pure): per registry host, the mirrors its pulls go through first and how the
 * host is spoken to (plain HTTP, TLS verification, extra CAs). The format is the `[registry."<host>"]` section of
 * BuildKit's buildkitd.toml, so a BuildKit user's section works unchanged:
 *
 * ```toml
 * [registry."docker.io"]
 * mirrors = ["mirror.example:5000", "http://127.0.0.5:5000/dockerhub"]
 * [registry."mirror.example:5000"]
 * http = true          # plain HTTP (loopback hosts speak it unless `http = false`)
 * insecure = true      # HTTPS without verifying the certificate
 * ca = ["/etc/ssl/mirror-ca.pem"]   # trusted besides the system's CAs (relative paths: to this file)
 * ```
 *
 * As in BuildKit, a mirror's `http`/`insecure`/`ca` come from its own section, and a mirror may carry a path, which
 * goes below `/v2` (`host/prefix` → `https://host/v2/prefix/<repository>/…`). Unlike BuildKit, a scheme written on a
 * mirror counts: `http://host` means plain HTTP. Every other key is an error naming the file and the key.
 */
import path from "node:path";
import { toml } from "../util/toml.js";
import { RegistryConfigError } from "../errors.js";

/** One mirror of a registry, as the config names it. */
export interface MirrorHost {
  /** As written in the file. */
  readonly text: string;
  /** `host[:port]`, lowercase, to connect to. */
  readonly host: string;
  /** Path below `/v2` (`""` or `/prefix/…`, no trailing slash). */
  readonly path: string;
  /** The scheme written on the mirror, if any. */
  readonly scheme?: "http" | "https";
}

/** The settings of one `[registry."<host>"]` section. */
export interface RegistryHostSettings {
  /** Mirrors tried in order before the registry itself (pulls only). */
  readonly mirrors: readonly MirrorHost[];
  /** Plain HTTP. Absent: loopback hosts speak plain HTTP, others HTTPS. */
  readonly http?: boolean;
  /** HTTPS without verifying the server's certificate. */
  readonly insecure?: boolean;
  /** PEM files of CAs trusted for this host besides the system's (absolute paths). */
  readonly ca: readonly string[];
}

/** A parsed registry configuration. */
export interface RegistryConfig {
  /** The file it came from (for messages); absent for the empty configuration. */
  readonly file?: string;
  /** Settings by registry host (`host[:port]`, lowercase; `index.docker.io` is `docker.io`). */
  readonly registries: ReadonlyMap<string, RegistryHostSettings>;
  /** The contents of each host's `ca` files (filled in by the loader, which reads them). */
  readonly caPems?: ReadonlyMap<string, readonly string[]>;
}

/** No mirrors, no per-host settings. */
export const NO_REGISTRY_CONFIG: RegistryConfig = { registries: new Map() };

const HOST_KEYS = ["mirrors", "http", "insecure", "ca"] as const;
/** buildkitd.toml keys Strata does not implement, with why. */
const UNSUPPORTED_KEYS: Record<string, string> = {
  keypair: "client certificates are not supported; use a mirror that needs none",
  tlsconfigdir: "list the CA files in `ca` instead",
};

const LABEL = "(?:[a-z0-9]|[a-z0-9][a-z0-9-]*[a-z0-9])";
const HOST_RE = new RegExp(`^(?:${LABEL}(?:\\.${LABEL})*|\\[[0-9a-f:.]+\\])(?::([0-9]{1,5}))?$`);
const PATH_SEGMENT_RE = /^[A-Za-z0-9._~-]+$/;

/** `host[:port]` lowercased and checked, or undefined when it is not one. */
export function normalizeRegistryHost(text: string): string | undefined {
  const host = text.trim().toLowerCase();
  const m = HOST_RE.exec(host);
  if (!m) return undefined;
  if (m[1] !== undefined && (Number(m[1]) < 1 || Number(m[1]) > 65535)) return undefined;
  return host === "index.docker.io" ? "docker.io" : host;
}

function keyPath(host: string, ...rest: string[]): string {
  return [`registry.${JSON.stringify(host)}`, ...rest].join(".");
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return "an array";
  if (isTable(v)) return "a table";
  if (v instanceof Date) return "a date";
  return `a ${typeof v} (${JSON.stringify(v)})`;
}

/** Parses one mirror string: `[http[s]://]host[:port][/path]`. */
function parseMirror(text: string, file: string, key: string): MirrorHost {
  const bad = (why: string): never => {
    throw new RegistryConfigError(`${file}: ${key} = ${JSON.stringify(text)}: ${why}`, file, key);
  };
  const m = /^(?:([A-Za-z][A-Za-z0-9+.-]*):\/\/)?([^/?#]*)([^?#]*)([?#].*)?$/.exec(text.trim());
  if (!m) return bad("expected host[:port][/path], e.g. mirror.example:5000");
  const [, scheme, hostText = "", pathText = "", rest] = m;
  if (scheme !== undefined && !/^https?$/i.test(scheme))
    bad(`the scheme must be http:// or https:// (or none), not ${scheme}://`);
  if (rest !== undefined) bad("a mirror has no query or fragment");
  if (hostText.includes("@")) bad("a mirror has no user name or password (log in with Docker's config.json instead)");
  const host = normalizeRegistryHost(hostText);
  if (host === undefined) bad(`"${hostText}" is not a host[:port]`);
  const segments = pathText.split("/").filter((s) => s !== "");
  for (const s of segments)
    if (!PATH_SEGMENT_RE.test(s) || s === "." || s === "..") bad(`the path segment "${s}" is not allowed`);
  return {
    text,
    host: host!,
    path: segments.length ? `/${segments.join("/")}` : "",
    ...(scheme !== undefined ? { scheme: scheme.toLowerCase() as "http" | "https" } : {}),
  };
}

function parseHostSection(host: string, raw: Record<string, unknown>, file: string): RegistryHostSettings {
  const out: { mirrors: MirrorHost[]; http?: boolean; insecure?: boolean; ca: string[] } = { mirrors: [], ca: [] };
  for (const [k, v] of Object.entries(raw)) {
    const key = keyPath(host, k);
    const fail = (why: string): never => {
      throw new RegistryConfigError(`${file}: ${key}: ${why}`, file, key);
    };
    if (k in UNSUPPORTED_KEYS) fail(`not supported by Strata (${UNSUPPORTED_KEYS[k]})`);
    if (!(HOST_KEYS as readonly string[]).includes(k))
      fail(`unknown key (a registry's section takes ${HOST_KEYS.join(", ")})`);
    if (k === "http" || k === "insecure") {
      if (typeof v !== "boolean") fail(`expected true or false, got ${typeName(v)}`);
      out[k] = v as boolean;
      continue;
    }
    if (!Array.isArray(v)) fail(`expected an array of strings, got ${typeName(v)}`);
    const list = v as unknown[];
    list.forEach((item, i) => {
      if (typeof item !== "string" || item.trim() === "")
        throw new RegistryConfigError(
          `${file}: ${key}[${i}]: expected a non-empty string, got ${typeName(item)}`,
          file,
          `${key}[${i}]`,
        );
    });
    const strings = list as string[];
    if (k === "ca") {
      out.ca = strings.map((s) => path.resolve(path.dirname(path.resolve(file)), s));
      continue;
    }
    const seen = new Map<string, number>();
    strings.forEach((s, i) => {
      const mirror = parseMirror(s, file, `${key}[${i}]`);
      const id = `${mirror.host}${mirror.path}`;
      if (mirror.host === host && mirror.path === "")
        throw new RegistryConfigError(
          `${file}: ${key}[${i}] = ${JSON.stringify(s)}: a registry is not its own mirror (its pulls fall back to it anyway)`,
          file,
          `${key}[${i}]`,
        );
      const before = seen.get(id);
      if (before !== undefined)
        throw new RegistryConfigError(
          `${file}: ${key}[${i}] = ${JSON.stringify(s)} repeats ${key}[${before}]`,
          file,
          `${key}[${i}]`,
        );
      seen.set(id, i);
      out.mirrors.push(mirror);
    });
  }
  return out;
}

/** A scheme written on a mirror must agree with the mirror's own section. */
function checkSchemes(registries: ReadonlyMap<string, RegistryHostSettings>, file: string): void {
  for (const [host, settings] of registries) {
    settings.mirrors.forEach((m, i) => {
      const own = registries.get(m.host)?.http;
      if (m.scheme === undefined || own === undefined || own === (m.scheme === "http")) return;
      const key = `${keyPath(host, "mirrors")}[${i}]`;
      throw new RegistryConfigError(
        `${file}: ${key} = ${JSON.stringify(m.text)} says ${m.scheme}://, but ${keyPath(m.host, "http")} = ${own}; drop the scheme or make them agree`,
        file,
        key,
      );
    });
  }
}

/**
 * Parses a registry configuration (`text` read from `file`, which messages name). Throws a RegistryConfigError naming
 * the file, the key and what to write instead.
 */
export function parseRegistryConfig(text: string, file: string): RegistryConfig {
  let doc: Record<string, unknown>;
  try {
    doc = toml().parse(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof toml().TomlError) {
      const what = e.message.replace(/^Invalid TOML document: /, "").split("\n")[0] ?? "syntax error";
      throw new RegistryConfigError(`${file}:${e.line}:${e.column}: not valid TOML: ${what}`, file, undefined, {
        cause: e,
      });
    }
    throw e;
  }
  for (const k of Object.keys(doc)) {
    if (k !== "registry")
      throw new RegistryConfigError(
        `${file}: unknown key "${k}" (a registry config holds only [registry."<host>"] sections, as buildkitd.toml's)`,
        file,
        k,
      );
  }
  const section = doc["registry"];
  const registries = new Map<string, RegistryHostSettings>();
  if (section === undefined) return { file, registries };
  if (!isTable(section))
    throw new RegistryConfigError(
      `${file}: registry: expected [registry."<host>"] sections, got ${typeName(section)}`,
      file,
      "registry",
    );
  for (const [name, raw] of Object.entries(section)) {
    const host = normalizeRegistryHost(name);
    const key = keyPath(name);
    if (host === undefined)
      throw new RegistryConfigError(
        `${file}: ${key}: "${name}" is not a registry host[:port] (no scheme or path: [registry."docker.io"])`,
        file,
        key,
      );
    if (!isTable(raw))
      throw new RegistryConfigError(`${file}: ${key}: expected a table, got ${typeName(raw)}`, file, key);
    if (registries.has(host))
      throw new RegistryConfigError(
        `${file}: ${key}: a second section for ${host} (index.docker.io is docker.io); merge them`,
        file,
        key,
      );
    registries.set(host, parseHostSection(host, raw, file));
  }
  checkSchemes(registries, file);
  return { file, registries };
}
