/**
 * Manifests and configs of a repository: resolve a reference (following an index to its linux/amd64 image manifest,
 * skipping attestations), fetch a manifest verified against the digest asked for, and parse and check manifests and
 * image configs (schema 2 / OCI only; schema1, other platforms and inconsistent images are refused with a reason).
 */
import { DigestMismatchError } from "../errors.js";
import { MediaType, type Descriptor, type ImageConfig } from "../oci/types.js";
import { isDigest, sha256Bytes, type Digest } from "../util/digest.js";
import type { RegistryClient } from "./client.js";
import { UnsupportedImageError } from "./errors.js";
import { errorFromResponse, formatSize, readBody } from "./http.js";
import type { ImageReference } from "./reference.js";

/** The linux/amd64 image manifest of a reference, verified and parsed. */
export interface FetchedImageManifest {
  digest: Digest;
  size: number;
  config: Descriptor;
  layers: Descriptor[];
}

/**
 * Fetches the image manifest `client`'s reference names — following an index to its linux/amd64 entry — or, given
 * `digest`, that image manifest itself (one request instead of a tag lookup then a fetch by digest).
 */
export async function fetchImageManifest(client: RegistryClient, digest?: Digest): Promise<FetchedImageManifest> {
  const fetched = digest ? await fetchManifest(client, digest, { digest }) : await resolveManifest(client);
  if (fetched.kind !== "manifest")
    throw new UnsupportedImageError(`${fetched.where} is an index, not an image manifest`);
  return { digest: fetched.digest, size: fetched.bytes.length, ...parseImageManifest(fetched) };
}

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_CONFIG_BYTES = 32 * 1024 * 1024;
const MANIFEST_TYPES = new Set<string>([MediaType.ociManifest, MediaType.dockerManifest]);
const INDEX_TYPES = new Set<string>([MediaType.ociIndex, MediaType.dockerManifestList]);
const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.dockerManifestList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
].join(", ");
const SCHEMA1_PREFIX = "application/vnd.docker.distribution.manifest.v1";
const ATTESTATION_ANNOTATION = "vnd.docker.reference.type";

export interface FetchedManifest {
  digest: Digest;
  bytes: Buffer;
  kind: "index" | "manifest";
  mediaType: string;
  json: Record<string, unknown>;
  /** What it was fetched as, for messages. */
  where: string;
}

export interface ImageManifest {
  config: Descriptor;
  layers: Descriptor[];
}

/** Fetches the reference's manifest and, for an index, the linux/amd64 image manifest it lists. */
export async function resolveManifest(client: RegistryClient): Promise<FetchedManifest> {
  const ref = client.reference;
  const top = await fetchManifest(
    client,
    ref.digest ?? ref.tag ?? "latest",
    ref.digest ? { digest: ref.digest } : undefined,
  );
  if (top.kind === "manifest") return top;
  const entries = parseDescriptors(top.json["manifests"], `${top.where}: "manifests"`);
  const chosen = selectPlatform(entries);
  if (!chosen) {
    const offered = entries
      .filter((e) => !isAttestation(e))
      .map((e) => (e.platform ? platformString(e.platform) : "unspecified platform"));
    throw new UnsupportedImageError(
      `${ref} has no linux/amd64 image (it offers: ${offered.length ? [...new Set(offered)].join(", ") : "nothing"}); Strata runs linux/amd64 images only`,
    );
  }
  const child = await fetchManifest(client, chosen.digest, { digest: chosen.digest, size: chosen.size });
  if (child.kind !== "manifest")
    throw new UnsupportedImageError(
      `${ref}: the linux/amd64 entry ${chosen.digest} of the index is itself an index; nested indexes are not supported`,
    );
  return child;
}

async function fetchManifest(
  client: RegistryClient,
  ref: string,
  expected?: { digest: Digest; size?: number },
): Promise<FetchedManifest> {
  const url = client.url("manifests", ref);
  const where = `manifest ${client.reference.registry}/${client.reference.repository}${expected ? "@" : ":"}${ref}`;
  const { res, bytes } = await client.withRetries(async () => {
    const { res, url: finalUrl } = await client.fetch(url, { accept: MANIFEST_ACCEPT });
    if (!res.ok) {
      throw await errorFromResponse(
        res,
        finalUrl,
        where,
        `check that the repository "${client.reference.repository}" and ${expected ? "digest" : "tag"} "${ref}" exist on ${client.reference.registry}`,
      );
    }
    return {
      res,
      bytes: await readBody(
        res,
        MAX_MANIFEST_BYTES,
        where,
        () =>
          new UnsupportedImageError(`${where} is larger than ${formatSize(MAX_MANIFEST_BYTES)}; refusing to read it`),
      ),
    };
  });

  const contentType = (res.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (contentType.startsWith(SCHEMA1_PREFIX)) throw schema1Error(client.reference);
  const digest = sha256Bytes(bytes);
  if (expected && digest !== expected.digest) throw new DigestMismatchError(expected.digest, digest, where);
  if (expected?.size !== undefined && bytes.length !== expected.size) {
    throw new DigestMismatchError(`${expected.digest} (${expected.size} bytes)`, `${bytes.length} bytes`, where);
  }
  const headerDigest = res.headers.get("docker-content-digest");
  if (!expected && headerDigest && isDigest(headerDigest) && headerDigest !== digest)
    throw new DigestMismatchError(headerDigest, digest, `${where} (Docker-Content-Digest header)`);

  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new UnsupportedImageError(`${where} is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isRecord(parsed)) throw new UnsupportedImageError(`${where} is not a JSON object`);
  if (parsed["schemaVersion"] === 1) throw schema1Error(client.reference);
  const bodyType = typeof parsed["mediaType"] === "string" ? (parsed["mediaType"] as string) : undefined;
  const mediaType = bodyType ?? contentType;
  if (mediaType.startsWith(SCHEMA1_PREFIX)) throw schema1Error(client.reference);
  let kind: "index" | "manifest";
  if (INDEX_TYPES.has(mediaType) || (!bodyType && Array.isArray(parsed["manifests"]))) kind = "index";
  else if (
    MANIFEST_TYPES.has(mediaType) ||
    (!bodyType && isRecord(parsed["config"]) && Array.isArray(parsed["layers"]))
  )
    kind = "manifest";
  else
    throw new UnsupportedImageError(
      `${where} has unsupported media type "${mediaType || "(none)"}" (expected an OCI or Docker v2 image manifest or index)`,
    );
  return { digest, bytes, kind, mediaType, json: parsed, where };
}

function schema1Error(ref: ImageReference): UnsupportedImageError {
  return new UnsupportedImageError(
    `${ref} uses the deprecated Docker schema1 manifest format, which Strata does not support; re-push the image with a current Docker, buildx, skopeo or crane (schema 2 / OCI)`,
  );
}

export function parseImageManifest(m: FetchedManifest): ImageManifest {
  if (m.json["schemaVersion"] !== 2)
    throw new UnsupportedImageError(
      `${m.where} has schemaVersion ${JSON.stringify(m.json["schemaVersion"])}; expected 2`,
    );
  const [config] = parseDescriptors([m.json["config"]], `${m.where}: "config"`);
  return { config: config!, layers: parseDescriptors(m.json["layers"], `${m.where}: "layers"`) };
}

function parseDescriptors(value: unknown, where: string): Descriptor[] {
  if (!Array.isArray(value)) throw new UnsupportedImageError(`${where} is missing or not an array`);
  return value.map((d: unknown, i): Descriptor => {
    if (!isRecord(d)) throw new UnsupportedImageError(`${where}[${i}] is not an object`);
    const { mediaType, digest, size, annotations, platform } = d;
    if (typeof digest !== "string" || !isDigest(digest)) {
      throw new UnsupportedImageError(
        `${where}[${i}] has digest ${JSON.stringify(digest)}; only sha256:<64 lowercase hex> digests are supported`,
      );
    }
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0)
      throw new UnsupportedImageError(`${where}[${i}] has an invalid size ${JSON.stringify(size)}`);
    const out: Descriptor = { mediaType: typeof mediaType === "string" ? mediaType : "", digest, size };
    if (isRecord(annotations))
      out.annotations = Object.fromEntries(
        Object.entries(annotations).filter((e): e is [string, string] => typeof e[1] === "string"),
      );
    if (isRecord(platform) && typeof platform["os"] === "string" && typeof platform["architecture"] === "string") {
      out.platform = { os: platform["os"], architecture: platform["architecture"] };
      if (typeof platform["variant"] === "string") out.platform.variant = platform["variant"];
    }
    return out;
  });
}

function normalizeArch(arch: string): string {
  const a = arch.toLowerCase();
  return a === "x86_64" || a === "x86-64" ? "amd64" : a === "aarch64" ? "arm64" : a;
}

function isAttestation(d: Descriptor): boolean {
  return d.annotations?.[ATTESTATION_ANNOTATION] === "attestation-manifest";
}

function platformString(p: { os: string; architecture: string; variant?: string }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/** Picks the linux/amd64 (variant absent or v1) image manifest of an index, skipping attestation manifests. */
export function selectPlatform(entries: readonly Descriptor[]): Descriptor | undefined {
  return entries.find(
    (e) =>
      !isAttestation(e) &&
      (e.mediaType === "" || MANIFEST_TYPES.has(e.mediaType)) &&
      e.platform !== undefined &&
      e.platform.os === "linux" &&
      normalizeArch(e.platform.architecture) === "amd64" &&
      (e.platform.variant === undefined || e.platform.variant === "" || e.platform.variant === "v1"),
  );
}

export function parseConfig(bytes: Buffer, ref: ImageReference, layerCount: number): ImageConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new UnsupportedImageError(`the image config of ${ref} is not valid JSON (${(e as Error).message})`, {
      cause: e,
    });
  }
  if (!isRecord(raw)) throw new UnsupportedImageError(`the image config of ${ref} is not a JSON object`);
  const os = raw["os"];
  const arch = raw["architecture"];
  if (os !== "linux" || typeof arch !== "string" || normalizeArch(arch) !== "amd64") {
    throw new UnsupportedImageError(
      `${ref} is a ${String(os)}/${String(arch)} image according to its config; Strata runs linux/amd64 images only`,
    );
  }
  const rootfs = raw["rootfs"];
  const diffIds = isRecord(rootfs) ? rootfs["diff_ids"] : undefined;
  if (!Array.isArray(diffIds) || !diffIds.every((d): d is Digest => typeof d === "string" && isDigest(d))) {
    throw new UnsupportedImageError(
      `the image config of ${ref} has no valid rootfs.diff_ids (expected an array of sha256 digests)`,
    );
  }
  if (diffIds.length !== layerCount) {
    throw new UnsupportedImageError(
      `${ref} is inconsistent: its manifest lists ${layerCount} layers but its config has ${diffIds.length} rootfs.diff_ids`,
    );
  }
  const runtime = isRecord(raw["config"]) ? raw["config"] : {};
  const history = Array.isArray(raw["history"]) ? raw["history"] : [];
  return {
    ...(raw as object),
    os,
    architecture: arch,
    config: runtime,
    rootfs: { type: "layers", diff_ids: diffIds },
    history,
  } as ImageConfig;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
