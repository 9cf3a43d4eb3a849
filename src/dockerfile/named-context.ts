/**
 * Named build contexts (`--build-context name=value`, BuildKit's `context:<name>` frontend option): the parsed form
 * of a value, and how a name a Dockerfile uses (FROM, COPY --from, RUN --mount from=) finds one. Pure: no I/O.
 *
 * As buildx and BuildKit's dockerui do, names are normalised like image references (`alpine:latest`,
 * `docker.io/library/alpine` and `alpine` are one name), so a context can stand in for an image a FROM names.
 * A value is `docker-image://<ref>` (a registry image, `scratch` for an empty one), `oci-layout://<dir>[:tag|@digest]`
 * (an image in a local OCI layout), a git URL (`https://…/x.git#ref:subdir`, `git://…`, `git@…`), or a local
 * directory (any other value; relative to the current directory).
 */
import { InvalidDefinitionError } from "../errors.js";
import { parseReference } from "../registry/reference.js";
import { isGitUrl } from "../plan/git-url.js";

/** What a named context is. */
export type NamedContextSpec =
  /** a local directory (its own `.dockerignore` applies, as in BuildKit) */
  | { readonly kind: "dir"; readonly path: string }
  /** a registry image (its config's Env, WorkingDir … apply to a stage FROM it) */
  | { readonly kind: "image"; readonly ref: string }
  /** `docker-image://scratch`: an empty filesystem */
  | { readonly kind: "scratch" }
  /** an image in a local OCI image layout, by tag (default `latest`) or manifest digest */
  | { readonly kind: "oci-layout"; readonly dir: string; readonly tag?: string; readonly digest?: string }
  /** a git repository at a ref, optionally a subdirectory of it */
  | { readonly kind: "git"; readonly url: string };

/** Names BuildKit never looks up as named contexts (its `namedContextFunc`): refused rather than silently unused. */
const RESERVED = new Set(["scratch", "context"]);

/**
 * A name as BuildKit looks it up: normalised as an image reference and shown in its short ("familiar") form without
 * a `:latest` tag (`docker.io/library/alpine:latest` → `alpine`). Undefined when it is no valid reference (such a
 * name can never match).
 */
export function contextName(name: string): string | undefined {
  let ref: ReturnType<typeof parseReference>;
  try {
    ref = parseReference(name);
  } catch {
    return undefined;
  }
  let repo = ref.registry === "docker.io" ? ref.repository.replace(/^library\/(?=[^/]+$)/, "") : ref.repository;
  if (ref.registry !== "docker.io") repo = `${ref.registry}/${repo}`;
  const tag = ref.tag !== undefined && !(ref.tag === "latest" && ref.digest === undefined) ? `:${ref.tag}` : "";
  return `${repo}${tag}${ref.digest !== undefined ? `@${ref.digest}` : ""}`;
}

/** Parses one `--build-context` value; `resolveDir` makes a directory absolute (the CLI: against the cwd). */
export function parseContextValue(
  name: string,
  value: string,
  resolveDir: (p: string) => string = (p) => p,
): NamedContextSpec {
  const where = `build context ${JSON.stringify(name)}`;
  if (value === "") throw new InvalidDefinitionError(`${where}: the value is empty (give a directory or a URL)`);
  if (value.includes("\0")) throw new InvalidDefinitionError(`${where}: the value contains a NUL byte`);
  if (value.startsWith("docker-image://")) {
    const ref = value.slice("docker-image://".length);
    if (ref === "scratch") return { kind: "scratch" };
    try {
      parseReference(ref);
    } catch (e) {
      throw new InvalidDefinitionError(`${where}: ${(e as Error).message}`);
    }
    return { kind: "image", ref };
  }
  if (value.startsWith("oci-layout://")) return ociLayout(where, value.slice("oci-layout://".length), resolveDir);
  if (isGitUrl(value)) return { kind: "git", url: value };
  if (/^https?:\/\//i.test(value))
    throw new InvalidDefinitionError(
      `${where}: ${value} is an HTTP URL but not a git repository; Strata's URL contexts are git URLs (https://host/repo.git#ref)`,
    );
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value);
  if (m)
    throw new InvalidDefinitionError(
      `${where}: unsupported context type ${m[1]}:// (use a directory, docker-image://, oci-layout:// or a git URL)`,
    );
  if (value.startsWith("target:"))
    throw new InvalidDefinitionError(`${where}: target: contexts are a buildx bake feature; Strata has no bake files`);
  return { kind: "dir", path: resolveDir(value) };
}

function ociLayout(where: string, spec: string, resolveDir: (p: string) => string): NamedContextSpec {
  // <dir>[:tag][@sha256:<hex>] — the tag is after the last ':' that follows the last '/'.
  let rest = spec;
  let digest: string | undefined;
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!/^sha256:[a-f0-9]{64}$/.test(digest))
      throw new InvalidDefinitionError(`${where}: oci-layout digest ${JSON.stringify(digest)} is not sha256:<64 hex>`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!/^[\w][\w.-]{0,127}$/.test(tag))
      throw new InvalidDefinitionError(`${where}: oci-layout tag ${JSON.stringify(tag)} is not a valid tag`);
  }
  if (rest === "") throw new InvalidDefinitionError(`${where}: oci-layout:// needs a directory`);
  return {
    kind: "oci-layout",
    dir: resolveDir(rest),
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
  };
}

/**
 * Parses the `--build-context` map (name → value) into specs by normalised name. Names must be valid references
 * (`invalid context name`), not `scratch` or `context`, and unique after normalisation.
 */
export function parseBuildContexts(
  given: Readonly<Record<string, string>>,
  resolveDir?: (p: string) => string,
): Map<string, NamedContextSpec> {
  const out = new Map<string, NamedContextSpec>();
  const original = new Map<string, string>();
  for (const [name, value] of Object.entries(given)) {
    if (typeof value !== "string")
      throw new InvalidDefinitionError(`build context ${JSON.stringify(name)}: the value must be a string`);
    const n = contextName(name);
    if (n === undefined)
      throw new InvalidDefinitionError(
        `invalid build context name ${JSON.stringify(name)}: a name is a stage name or an image reference (lowercase letters, digits, '.', '_', '-', '/', ':tag')`,
      );
    if (RESERVED.has(n))
      throw new InvalidDefinitionError(
        `build context name ${JSON.stringify(name)} is reserved (${n} always means ${n === "context" ? "the main build context" : "the empty image"})`,
      );
    const prev = original.get(n);
    if (prev !== undefined)
      throw new InvalidDefinitionError(
        `build contexts ${JSON.stringify(prev)} and ${JSON.stringify(name)} name the same context ${n}`,
      );
    original.set(n, name);
    out.set(n, parseContextValue(name, value, resolveDir));
  }
  return out;
}

/** Parses `--build-context name=value` flags into a name → value map (the value may contain '='). */
export function buildContextFlags(items: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf("=");
    if (i <= 0) throw new InvalidDefinitionError(`--build-context expects name=value, got ${JSON.stringify(item)}`);
    const name = item.slice(0, i);
    if (Object.hasOwn(out, name)) throw new InvalidDefinitionError(`--build-context ${name} is given twice`);
    out[name] = item.slice(i + 1);
  }
  return out;
}

/** The named context `name` refers to (normalised as BuildKit does), if any. `scratch`/`context` never match. */
export function lookupContext(
  contexts: ReadonlyMap<string, NamedContextSpec> | undefined,
  name: string,
): NamedContextSpec | undefined {
  if (!contexts?.size) return undefined;
  const n = contextName(name);
  return n === undefined || RESERVED.has(n) ? undefined : contexts.get(n);
}
