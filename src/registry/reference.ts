/**
 * Image references (`[registry/]repository[:tag][@digest]`) parsed and normalised the way Docker does
 * (distribution `reference/normalize.go`): `ubuntu` → `docker.io/library/ubuntu:latest`.
 */
import { InvalidDefinitionError } from "../errors.js";
import type { Digest } from "../util/digest.js";

/** A parsed, normalised image reference. `tag` is `latest` when neither a tag nor a digest was given. */
export interface ImageReference {
  /** Registry host as named (`docker.io`, `localhost:5000`, `[::1]:5000`); see `registryApiHost` for the API host. */
  readonly registry: string;
  /** Repository path inside the registry (`library/ubuntu`, `test/img`). */
  readonly repository: string;
  readonly tag?: string;
  /** When present it wins over the tag (the tag is then informational only). */
  readonly digest?: Digest;
  /** The fully-qualified form: `docker.io/library/ubuntu:latest`, `host:5000/a/b:t@sha256:…`. */
  toString(): string;
}

export const DOCKER_HUB = "docker.io";
const DOCKER_HUB_API = "registry-1.docker.io";
const DEFAULT_TAG = "latest";
const MAX_NAME_LENGTH = 255;

const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
const HOST_LABEL = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN_RE = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9a-fA-F:.]+\\])(?::[0-9]+)?$`);

function invalid(ref: string, why: string): never {
  throw new InvalidDefinitionError(`invalid image reference "${ref}": ${why}`);
}

class Reference implements ImageReference {
  constructor(
    readonly registry: string,
    readonly repository: string,
    readonly tag: string | undefined,
    readonly digest: Digest | undefined,
  ) {}

  toString(): string {
    return `${this.registry}/${this.repository}${this.tag !== undefined ? `:${this.tag}` : ""}${this.digest !== undefined ? `@${this.digest}` : ""}`;
  }
}

/** Parses and normalises an image reference; throws `InvalidDefinitionError` saying what is wrong. */
export function parseReference(ref: string): ImageReference {
  if (typeof ref !== "string" || ref.length === 0) invalid(String(ref), "the reference is empty");
  if (/\s/.test(ref)) invalid(ref, "it contains whitespace");
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(ref))
    invalid(ref, "give a reference like host/name:tag, not a URL (drop the scheme)");

  let rest = ref;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (d.includes("@")) invalid(ref, "it contains more than one '@'");
    if (!d.includes(":")) invalid(ref, `digest "${d}" must be algorithm:hex, e.g. sha256:<64 hex digits>`);
    if (!d.startsWith("sha256:"))
      invalid(ref, `digest "${d}" uses an unsupported algorithm (only sha256 is supported)`);
    if (!DIGEST_RE.test(d)) invalid(ref, `digest "${d}" must be sha256: followed by 64 lowercase hex digits`);
    digest = d as Digest;
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) {
      invalid(
        ref,
        `tag "${tag}" is invalid (tags are 1–128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-')`,
      );
    }
  }

  const name = rest;
  if (name.length === 0) invalid(ref, "the repository name is empty");

  // The first component is a registry host only if it looks like one (Docker's splitDockerDomain rule).
  let registry: string;
  let repository: string;
  const slash = name.indexOf("/");
  const first = slash >= 0 ? name.slice(0, slash) : "";
  if (
    slash >= 0 &&
    (first.includes(".") || first.includes(":") || first === "localhost" || first !== first.toLowerCase())
  ) {
    registry = first;
    repository = name.slice(slash + 1);
    if (!DOMAIN_RE.test(registry)) invalid(ref, `registry host "${registry}" is not a valid host[:port]`);
  } else {
    registry = DOCKER_HUB;
    repository = name;
  }
  if (registry === "index.docker.io") registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes("/")) repository = `library/${repository}`;

  if (repository.length === 0) invalid(ref, "the repository name is empty");
  for (const component of repository.split("/")) {
    if (component.length === 0)
      invalid(ref, "the repository name has an empty path component (check for '//' or a trailing '/')");
    if (!PATH_COMPONENT_RE.test(component)) {
      const hint =
        component !== component.toLowerCase()
          ? "repository names must be lowercase"
          : "components are lowercase letters and digits separated by '.', '_', '__' or '-'";
      invalid(ref, `repository path component "${component}" is invalid (${hint})`);
    }
  }
  if (registry.length + 1 + repository.length > MAX_NAME_LENGTH)
    invalid(ref, `the name is longer than ${MAX_NAME_LENGTH} characters`);

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return new Reference(registry, repository, tag, digest);
}

/** The host (with port) to send API requests to: `registry-1.docker.io` for Docker Hub, else the registry itself. */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** Splits `host[:port]` (also `[v6]:port`) into the host part, lowercased. */
function hostPart(registry: string): string {
  const r = registry.toLowerCase();
  if (r.startsWith("[")) {
    const end = r.indexOf("]");
    return end >= 0 ? r.slice(0, end + 1) : r;
  }
  const c = r.indexOf(":");
  return c >= 0 ? r.slice(0, c) : r;
}

/**
 * True when `registry` should be spoken to over plain HTTP: loopback (`localhost`, `127.0.0.0/8`, `[::1]`) and
 * any host listed in `STRATA_INSECURE_REGISTRIES` (comma-separated; an entry matches `host:port` exactly or `host`
 * on any port).
 */
export function isInsecureHost(registry: string): boolean {
  const full = registry.toLowerCase();
  const host = hostPart(registry);
  if (host === "localhost" || host === "[::1]" || full === "::1") return true;
  const v4 = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (v4?.slice(1).every((o) => Number(o) <= 255)) return true;
  const listed = (process.env.STRATA_INSECURE_REGISTRIES ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0);
  return listed.some((entry) => entry === full || entry === host);
}
