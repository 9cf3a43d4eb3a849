/**
 * uv in a build: `uvPipInstall`, `uvSync` and the uv a debianSlim base carries. A builder version with a uv image
 * (`tools.uv.image` in `builders/<version>.json`) provisions uv itself, as Modal does: `/uv` is read from
 * `<image>:<uv version>` (pulled from STRATA_UV_IMAGE instead when set: a mirror repository) and keyed by its content,
 * so a mirror serving the same uv gives the same keys. A builder version without one (2026.11) mounts the image's own
 * uv or the file STRATA_UV_BINARY names, keying only the uv version (its recipe is kept so its keys do not change).
 */
import type { BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError } from "../errors.js";
import type { Step } from "../plan/step.js";
import { parseReference } from "../registry/reference.js";

/** Where uvSync's project lives in the image, and where uv is mounted for its RUNs (Modal's `/.uv`). */
export const UV_ROOT = "/.uv";

/** A repository (no tag or digest) that serves the uv images under their version tags, instead of the builder's. */
export const UV_IMAGE_ENV = "STRATA_UV_IMAGE";
/** 2026.11 only: a uv binary on this machine to mount when the image has none. */
export const UV_BINARY_ENV = "STRATA_UV_BINARY";

/** The uv image of a version: `canonical` (the builder's, rendered into steps and keys) and `pull` (where it comes from). */
export function uvImageRef(
  b: BuilderVersion,
  method: string,
  version: string,
  env: NodeJS.ProcessEnv = process.env,
): { canonical: string; pull: string } | undefined {
  const repo = b.tools.uv.image;
  if (!repo) return undefined;
  if (env[UV_BINARY_ENV]) {
    throw new InvalidDefinitionError(
      `${method}: ${UV_BINARY_ENV} is set, but builder version ${b.version} provisions uv itself: it copies /uv from ${repo}:${version} and keys it by content. ` +
        `Unset ${UV_BINARY_ENV}; to pull uv from elsewhere set ${UV_IMAGE_ENV} to a repository holding the uv images (e.g. a mirror: ${UV_IMAGE_ENV}=registry.example:5000/astral-sh/uv).`,
    );
  }
  const canonical = `${repo}:${version}`;
  const mirror = env[UV_IMAGE_ENV]?.trim();
  if (!mirror) return { canonical, pull: canonical };
  const slash = mirror.indexOf("/");
  const repoPath = slash >= 0 ? mirror.slice(slash + 1) : mirror;
  if (repoPath.includes(":") || repoPath.includes("@"))
    throw new InvalidDefinitionError(
      `${UV_IMAGE_ENV}=${mirror}: give a repository without a tag or digest (e.g. registry.example:5000/astral-sh/uv); Strata adds the uv version (:${version}) itself`,
    );
  return { canonical, pull: parseReference(`${mirror}:${version}`).toString() };
}

/** debianSlim's uv (builder versions with a uv image): `/uv` and `/uvx` copied to /usr/local/bin, keyed by content. */
export function uvIntoImageStep(b: BuilderVersion, forceBuild: boolean): Step | undefined {
  const image = uvImageRef(b, "debianSlim", b.tools.uv.defaultVersion);
  if (!image) return undefined;
  return {
    method: "debianSlim",
    description: `debianSlim: uv ${b.tools.uv.defaultVersion} → /usr/local/bin (from ${image.pull})`,
    instructions: [
      { op: "COPY", source: "uv", dest: "/usr/local/bin/", sources: ["/uv", "/uvx"], from: image.canonical },
    ],
    inputs: [{ kind: "select", name: "uv", root: { kind: "image", ref: image.pull }, patterns: ["/uv", "/uvx"] }],
    secrets: [],
    env: {},
    forceBuild,
    extra: [],
  };
}
