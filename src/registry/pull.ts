/**
 * A minimal OCI distribution pull client: resolve a reference to the linux/amd64 image manifest, then fetch the
 * config and every layer into a Store, verifying each blob (sha256, size, and for layers the uncompressed diffID)
 * before it becomes visible.
 *
 * Layout, so later work slots in:
 *  - `RegistryClient.fetch` is the single HTTP entry point: manual redirects (Authorization dropped across origins),
 *    challenge-driven auth (anonymous Bearer tokens now; a `CredentialProvider` hook for Basic/Bearer credentials),
 *    `Accept-Encoding: identity`.
 *  - `withRetries` wraps whole operations (request + body) and retries `RegistryError.temporary` failures.
 *  - `downloadBlob` streams one blob to a temp file while hashing; resume/ranged fetch and eStargz can replace it.
 */
import { createHash, type Hash } from "node:crypto";
import { createWriteStream, promises as fsp } from "node:fs";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createGunzip, type Gunzip } from "node:zlib";
import pLimit from "p-limit";
import { DigestMismatchError, StrataError } from "../errors.js";
import { MediaType, type Descriptor, type ImageConfig } from "../oci/types.js";
import type { LayerRecord, Store } from "../store/store.js";
import { isDigest, sha256Bytes, type Digest } from "../util/digest.js";
import { RegistryError, UnsupportedImageError } from "./errors.js";
import { isInsecureHost, parseReference, registryApiHost, type ImageReference } from "./reference.js";

// ---------------------------------------------------------------------------------------------------------------
// Public API

export interface RegistryOptions {
  /** Speak plain HTTP to the registry (loopback and STRATA_INSECURE_REGISTRIES hosts always do). */
  insecure?: boolean;
  signal?: AbortSignal;
}

export interface PullOptions extends RegistryOptions {
  /** Called with one human-readable line per blob (`pulling sha256:abcd… 12.3 MB`). */
  onProgress?: (line: string) => void;
  /** Maximum concurrent layer downloads (default 3). */
  concurrency?: number;
}

export interface ResolvedImage {
  reference: ImageReference;
  manifestDigest: Digest;
}

export interface PulledImage {
  reference: ImageReference;
  manifestDigest: Digest;
  manifestSize: number;
  configDigest: Digest;
  configSize: number;
  config: ImageConfig;
  /** Index-aligned with the manifest's layers and the config's `rootfs.diff_ids`. */
  layers: LayerRecord[];
}

/** Resolves a reference to the digest of the linux/amd64 image manifest (following an index / manifest list). */
export async function resolveImage(ref: string, opts: RegistryOptions = {}): Promise<ResolvedImage> {
  const reference = parseReference(ref);
  const client = new RegistryClient(reference, opts);
  const m = await resolveManifest(client);
  return { reference, manifestDigest: m.digest };
}

/**
 * Fetches manifest, config and every layer blob into the store (verifying sha256 + size before a blob becomes
 * visible; skipping blobs the store already has), with bounded parallel layer downloads.
 */
export async function pullImage(ref: string, store: Store, opts: PullOptions = {}): Promise<PulledImage> {
  const reference = parseReference(ref);
  const client = new RegistryClient(reference, opts);
  const progress = opts.onProgress ?? (() => undefined);

  const fetched = await resolveManifest(client);
  const manifest = parseImageManifest(fetched);
  const layerKinds = manifest.layers.map((l, i) => layerKind(l, i, reference));

  // Config: small, fetched into memory, verified, then stored.
  let configBytes: Buffer;
  if (await store.hasBlob(manifest.config.digest)) {
    configBytes = await store.readBlob(manifest.config.digest);
  } else {
    configBytes = await fetchBlobBytes(client, manifest.config, MAX_CONFIG_BYTES);
    const stored = await store.putBlobBytes(configBytes);
    if (stored !== manifest.config.digest) throw new DigestMismatchError(manifest.config.digest, stored, `config of ${reference}`);
    progress(`pulling ${shortDigest(manifest.config.digest)} ${formatSize(configBytes.length)} (config)`);
  }
  const config = parseConfig(configBytes, reference, manifest.layers.length);

  const layers: LayerRecord[] = manifest.layers.map((l, i) => ({ digest: l.digest, diffId: config.rootfs.diff_ids[i]!, size: l.size, mediaType: l.mediaType }));
  await downloadLayers(client, store, layers, layerKinds, opts, progress);

  // The manifest goes in last, so it never names a blob the store does not have.
  const manifestStored = await store.putBlobBytes(fetched.bytes);
  if (manifestStored !== fetched.digest) throw new DigestMismatchError(fetched.digest, manifestStored, `manifest of ${reference}`);

  return {
    reference,
    manifestDigest: fetched.digest,
    manifestSize: fetched.bytes.length,
    configDigest: manifest.config.digest,
    configSize: manifest.config.size,
    config,
    layers,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Transport: auth, redirects, retries

export interface RegistryCredentials {
  username: string;
  password: string;
}

/** Supplies credentials for a registry host (docker config, ECR, GCP… in a later change); undefined = anonymous. */
export type CredentialProvider = (registry: string) => Promise<RegistryCredentials | undefined>;

export interface RegistryClientOptions extends RegistryOptions {
  credentials?: CredentialProvider;
  /** Total attempts for temporary failures (default 3). */
  attempts?: number;
  /** First backoff delay in ms, doubled per attempt (default 300). */
  retryDelayMs?: number;
}

/** One parsed `WWW-Authenticate` challenge; param names are lowercased. */
export interface AuthChallenge {
  scheme: string;
  params: Record<string, string>;
}

interface FetchResult {
  res: Response;
  /** The URL that produced `res` (after redirects). */
  url: URL;
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;

/** HTTP access to one repository of one registry. */
export class RegistryClient {
  readonly baseUrl: URL;
  readonly insecure: boolean;
  readonly signal: AbortSignal | undefined;
  readonly attempts: number;
  private readonly retryDelayMs: number;
  private readonly credentials: CredentialProvider | undefined;
  private authorization: string | undefined;
  private pendingAuth: Promise<string> | undefined;

  constructor(
    readonly reference: ImageReference,
    opts: RegistryClientOptions = {},
  ) {
    this.insecure = opts.insecure === true || isInsecureHost(reference.registry);
    this.baseUrl = new URL(`${this.insecure ? "http" : "https"}://${registryApiHost(reference.registry)}/`);
    this.signal = opts.signal;
    this.credentials = opts.credentials;
    this.attempts = Math.max(1, opts.attempts ?? 3);
    this.retryDelayMs = opts.retryDelayMs ?? 300;
  }

  /** `/v2/<repository>/<kind>/<ref>` as an absolute URL. */
  url(kind: "manifests" | "blobs", ref: string): URL {
    return new URL(`/v2/${this.reference.repository}/${kind}/${ref}`, this.baseUrl);
  }

  /**
   * One GET (no retries): follows redirects, answers auth challenges from the registry, and returns whatever
   * response results. Network failures become temporary `RegistryError`s.
   */
  async fetch(url: URL, headers: Record<string, string> = {}, signal: AbortSignal | undefined = this.signal): Promise<FetchResult> {
    for (let round = 0; ; round++) {
      const sent = this.authorization;
      const result = await this.followRedirects(url, headers, sent, signal);
      if (result.res.status !== 401 || result.url.origin !== this.baseUrl.origin || round >= 2) return result;
      const challenge = result.res.headers.get("www-authenticate") ?? "";
      await discard(result.res);
      if (this.authorization !== sent) continue; // another request refreshed the credentials meanwhile
      this.pendingAuth ??= this.authorize(challenge, result.url, signal).finally(() => {
        this.pendingAuth = undefined;
      });
      this.authorization = await this.pendingAuth;
    }
  }

  /** Runs `fn` up to `attempts` times while it fails with a temporary `RegistryError`, backing off in between. */
  async withRetries<T>(fn: (attempt: number) => Promise<T>, signal: AbortSignal | undefined = this.signal): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn(attempt);
      } catch (e) {
        if (signal?.aborted) throw abortReason(signal, e);
        if (!(e instanceof RegistryError) || !e.temporary) throw e;
        if (attempt >= this.attempts) {
          if (this.attempts === 1) throw e;
          throw new RegistryError(`${e.message} (gave up after ${attempt} attempts)`, { status: e.status, codes: [...e.codes], temporary: true, url: e.url, cause: e.cause });
        }
        const delay = this.retryDelayMs * 2 ** (attempt - 1) * (1 + Math.random() * 0.25);
        await sleep(delay, undefined, signal ? { signal } : undefined).catch((err: unknown) => {
          throw signal?.aborted ? abortReason(signal, err) : err;
        });
      }
    }
  }

  private async followRedirects(start: URL, headers: Record<string, string>, authorization: string | undefined, signal: AbortSignal | undefined): Promise<FetchResult> {
    let url = start;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const h: Record<string, string> = { "accept-encoding": "identity", "user-agent": "strata", ...headers };
      // Never send registry credentials to another origin (S3/CDN redirect targets reject or leak them).
      if (authorization !== undefined && url.origin === this.baseUrl.origin) h["authorization"] = authorization;
      let res: Response;
      try {
        res = await fetch(url, { method: "GET", headers: h, redirect: "manual", signal });
      } catch (e) {
        if (signal?.aborted) throw abortReason(signal, e);
        throw networkError(url, e, this.insecure);
      }
      const location = res.headers.get("location");
      if (!REDIRECT_STATUSES.has(res.status) || location === null) return { res, url };
      await discard(res);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new RegistryError(`${displayUrl(url)} redirected to an invalid location "${location}"`, { status: res.status, url: displayUrl(url) });
      }
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new RegistryError(`${displayUrl(url)} redirected to unsupported scheme ${next.protocol}`, { status: res.status, url: displayUrl(url) });
      }
      if (url.protocol === "https:" && next.protocol === "http:" && !this.insecure) {
        throw new RegistryError(`${displayUrl(url)} redirected from https to plain http (${displayUrl(next)}); refusing the downgrade (list the registry in STRATA_INSECURE_REGISTRIES if this is intended)`, { status: res.status, url: displayUrl(url) });
      }
      url = next;
    }
    throw new RegistryError(`${displayUrl(start)}: more than ${MAX_REDIRECTS} redirects; the registry or its storage backend is misconfigured`, { url: displayUrl(start) });
  }

  /** Answers a 401 challenge with an Authorization header value, or throws saying what is needed. */
  private async authorize(header: string, url: URL, signal: AbortSignal | undefined): Promise<string> {
    const challenges = parseWwwAuthenticate(header);
    const bearer = challenges.find((c) => c.scheme.toLowerCase() === "bearer");
    const basic = challenges.find((c) => c.scheme.toLowerCase() === "basic");
    const creds = this.credentials ? await this.credentials(this.reference.registry) : undefined;
    if (bearer) return `Bearer ${await this.fetchToken(bearer, creds, url, signal)}`;
    if (basic) {
      if (!creds) {
        const realm = basic.params["realm"] ? ` (realm "${basic.params["realm"]}")` : "";
        throw new RegistryError(
          `${displayUrl(url)} requires a username and password (HTTP Basic auth${realm}), and no credentials are configured for ${this.reference.registry}; ` +
            `Strata cannot log in to registries yet, so use an image from a registry that allows anonymous pulls`,
          { status: 401, codes: ["UNAUTHORIZED"], url: displayUrl(url) },
        );
      }
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
    }
    throw new RegistryError(`${displayUrl(url)} answered 401 Unauthorized with no usable WWW-Authenticate challenge (${header ? `"${header}"` : "none"}); the registry's auth scheme is not supported`, {
      status: 401,
      codes: ["UNAUTHORIZED"],
      url: displayUrl(url),
    });
  }

  /** Bearer token flow (distribution token spec, GET form): anonymous unless credentials are supplied. */
  private async fetchToken(challenge: AuthChallenge, creds: RegistryCredentials | undefined, url: URL, signal: AbortSignal | undefined): Promise<string> {
    const realm = challenge.params["realm"];
    let tokenUrl: URL;
    try {
      tokenUrl = new URL(realm ?? "");
    } catch {
      throw new RegistryError(`${displayUrl(url)} asked for a Bearer token but its challenge has no valid realm URL (${realm === undefined ? "missing" : `"${realm}"`})`, { status: 401, url: displayUrl(url) });
    }
    if (tokenUrl.protocol !== "https:" && tokenUrl.protocol !== "http:") {
      throw new RegistryError(`${displayUrl(url)} names a token realm with unsupported scheme ${tokenUrl.protocol}`, { status: 401, url: displayUrl(url) });
    }
    const service = challenge.params["service"];
    if (service) tokenUrl.searchParams.set("service", service);
    const scopes = (challenge.params["scope"] ?? `repository:${this.reference.repository}:pull`).split(" ").filter((s) => s.length > 0);
    for (const s of scopes) tokenUrl.searchParams.append("scope", s);

    const headers: Record<string, string> = { "user-agent": "strata", accept: "application/json" };
    if (creds) headers["authorization"] = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
    let res: Response;
    try {
      res = await fetch(tokenUrl, { headers, signal });
    } catch (e) {
      if (signal?.aborted) throw abortReason(signal, e);
      throw networkError(tokenUrl, e, false);
    }
    if (!res.ok) {
      const err = await errorFromResponse(res, tokenUrl, `token request for ${this.reference}`, "the token service refused an anonymous token; the repository may not exist or may need credentials (not supported yet)");
      throw err;
    }
    const body = await readBody(res, 1024 * 1024, `token response from ${displayUrl(tokenUrl)}`);
    let token: unknown;
    try {
      const json = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
      token = json["token"] || json["access_token"];
    } catch {
      token = undefined;
    }
    if (typeof token !== "string" || token.length === 0) {
      throw new RegistryError(`token response from ${displayUrl(tokenUrl)} has no "token" or "access_token" string; the token service is misbehaving`, { status: res.status, url: displayUrl(tokenUrl) });
    }
    return token;
  }
}

/**
 * Parses an RFC 7235 `WWW-Authenticate` header into challenges. Handles several challenges in one header and
 * quoted values containing commas, spaces and backslash escapes (`scope="repository:a:pull,push repository:b:pull"`).
 */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  const n = header.length;
  let i = 0;
  let current: AuthChallenge | undefined;
  const skipWs = (): void => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const readToken = (): string => {
    const m = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/.exec(header.slice(i));
    if (!m) return "";
    i += m[0].length;
    return m[0];
  };
  while (i < n) {
    skipWs();
    if (i >= n) break;
    if (header[i] === ",") {
      i++;
      continue;
    }
    const tok = readToken();
    if (!tok) {
      i++; // stray character: skip it
      continue;
    }
    skipWs();
    if (header[i] === "=" && current && header[i + 1] !== "=") {
      i++;
      skipWs();
      let value = "";
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < n && header[i] !== "," && header[i] !== " " && header[i] !== "\t") i++;
        value = header.slice(start, i);
      }
      current.params[tok.toLowerCase()] = value;
    } else if (header[i] === "=") {
      // token68 (e.g. `Negotiate abc==`): skip the padding, nothing to record.
      while (i < n && header[i] === "=") i++;
    } else {
      current = { scheme: tok, params: Object.create(null) as Record<string, string> };
      out.push(current);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Manifests

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_CONFIG_BYTES = 32 * 1024 * 1024;
const MANIFEST_TYPES = new Set<string>([MediaType.ociManifest, MediaType.dockerManifest]);
const INDEX_TYPES = new Set<string>([MediaType.ociIndex, MediaType.dockerManifestList]);
const MANIFEST_ACCEPT = [MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest, MediaType.dockerManifest].join(", ");
const SCHEMA1_PREFIX = "application/vnd.docker.distribution.manifest.v1";
const ATTESTATION_ANNOTATION = "vnd.docker.reference.type";

interface FetchedManifest {
  digest: Digest;
  bytes: Buffer;
  kind: "index" | "manifest";
  mediaType: string;
  json: Record<string, unknown>;
  /** What it was fetched as, for messages. */
  where: string;
}

interface ImageManifest {
  config: Descriptor;
  layers: Descriptor[];
}

/** Fetches the reference's manifest and, for an index, the linux/amd64 image manifest it lists. */
async function resolveManifest(client: RegistryClient): Promise<FetchedManifest> {
  const ref = client.reference;
  const top = await fetchManifest(client, ref.digest ?? ref.tag ?? "latest", ref.digest ? { digest: ref.digest } : undefined);
  if (top.kind === "manifest") return top;
  const entries = parseDescriptors(top.json["manifests"], `${top.where}: "manifests"`);
  const chosen = selectPlatform(entries);
  if (!chosen) {
    const offered = entries.filter((e) => !isAttestation(e)).map((e) => (e.platform ? platformString(e.platform) : "unspecified platform"));
    throw new UnsupportedImageError(`${ref} has no linux/amd64 image (it offers: ${offered.length ? [...new Set(offered)].join(", ") : "nothing"}); Strata runs linux/amd64 images only`);
  }
  const child = await fetchManifest(client, chosen.digest, { digest: chosen.digest, size: chosen.size });
  if (child.kind !== "manifest") throw new UnsupportedImageError(`${ref}: the linux/amd64 entry ${chosen.digest} of the index is itself an index; nested indexes are not supported`);
  return child;
}

async function fetchManifest(client: RegistryClient, ref: string, expected?: { digest: Digest; size?: number }): Promise<FetchedManifest> {
  const url = client.url("manifests", ref);
  const where = `manifest ${client.reference.registry}/${client.reference.repository}${expected ? "@" : ":"}${ref}`;
  const { res, bytes } = await client.withRetries(async () => {
    const { res, url: finalUrl } = await client.fetch(url, { accept: MANIFEST_ACCEPT });
    if (!res.ok) {
      throw await errorFromResponse(res, finalUrl, where, `check that the repository "${client.reference.repository}" and ${expected ? "digest" : "tag"} "${ref}" exist on ${client.reference.registry}`);
    }
    return { res, bytes: await readBody(res, MAX_MANIFEST_BYTES, where) };
  });

  const contentType = (res.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (contentType.startsWith(SCHEMA1_PREFIX)) throw schema1Error(client.reference);
  const digest = sha256Bytes(bytes);
  if (expected && digest !== expected.digest) throw new DigestMismatchError(expected.digest, digest, where);
  if (expected?.size !== undefined && bytes.length !== expected.size) {
    throw new DigestMismatchError(`${expected.digest} (${expected.size} bytes)`, `${bytes.length} bytes`, where);
  }
  const headerDigest = res.headers.get("docker-content-digest");
  if (!expected && headerDigest && isDigest(headerDigest) && headerDigest !== digest) throw new DigestMismatchError(headerDigest, digest, `${where} (Docker-Content-Digest header)`);

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
  else if (MANIFEST_TYPES.has(mediaType) || (!bodyType && isRecord(parsed["config"]) && Array.isArray(parsed["layers"]))) kind = "manifest";
  else throw new UnsupportedImageError(`${where} has unsupported media type "${mediaType || "(none)"}" (expected an OCI or Docker v2 image manifest or index)`);
  return { digest, bytes, kind, mediaType, json: parsed, where };
}

function schema1Error(ref: ImageReference): UnsupportedImageError {
  return new UnsupportedImageError(
    `${ref} uses the deprecated Docker schema1 manifest format, which Strata does not support; re-push the image with a current Docker, buildx, skopeo or crane (schema 2 / OCI)`,
  );
}

function parseImageManifest(m: FetchedManifest): ImageManifest {
  if (m.json["schemaVersion"] !== 2) throw new UnsupportedImageError(`${m.where} has schemaVersion ${JSON.stringify(m.json["schemaVersion"])}; expected 2`);
  const [config] = parseDescriptors([m.json["config"]], `${m.where}: "config"`);
  return { config: config!, layers: parseDescriptors(m.json["layers"], `${m.where}: "layers"`) };
}

function parseDescriptors(value: unknown, where: string): Descriptor[] {
  if (!Array.isArray(value)) throw new UnsupportedImageError(`${where} is missing or not an array`);
  return value.map((d: unknown, i): Descriptor => {
    if (!isRecord(d)) throw new UnsupportedImageError(`${where}[${i}] is not an object`);
    const { mediaType, digest, size, annotations, platform } = d;
    if (typeof digest !== "string" || !isDigest(digest)) {
      throw new UnsupportedImageError(`${where}[${i}] has digest ${JSON.stringify(digest)}; only sha256:<64 lowercase hex> digests are supported`);
    }
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw new UnsupportedImageError(`${where}[${i}] has an invalid size ${JSON.stringify(size)}`);
    const out: Descriptor = { mediaType: typeof mediaType === "string" ? mediaType : "", digest, size };
    if (isRecord(annotations)) out.annotations = Object.fromEntries(Object.entries(annotations).filter((e): e is [string, string] => typeof e[1] === "string"));
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

function parseConfig(bytes: Buffer, ref: ImageReference, layerCount: number): ImageConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw new UnsupportedImageError(`the image config of ${ref} is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (!isRecord(raw)) throw new UnsupportedImageError(`the image config of ${ref} is not a JSON object`);
  const os = raw["os"];
  const arch = raw["architecture"];
  if (os !== "linux" || typeof arch !== "string" || normalizeArch(arch) !== "amd64") {
    throw new UnsupportedImageError(`${ref} is a ${String(os)}/${String(arch)} image according to its config; Strata runs linux/amd64 images only`);
  }
  const rootfs = raw["rootfs"];
  const diffIds = isRecord(rootfs) ? rootfs["diff_ids"] : undefined;
  if (!Array.isArray(diffIds) || !diffIds.every((d): d is Digest => typeof d === "string" && isDigest(d))) {
    throw new UnsupportedImageError(`the image config of ${ref} has no valid rootfs.diff_ids (expected an array of sha256 digests)`);
  }
  if (diffIds.length !== layerCount) {
    throw new UnsupportedImageError(`${ref} is inconsistent: its manifest lists ${layerCount} layers but its config has ${diffIds.length} rootfs.diff_ids`);
  }
  const runtime = isRecord(raw["config"]) ? raw["config"] : {};
  const history = Array.isArray(raw["history"]) ? raw["history"] : [];
  return { ...(raw as object), os, architecture: arch, config: runtime, rootfs: { type: "layers", diff_ids: diffIds }, history } as ImageConfig;
}

// ---------------------------------------------------------------------------------------------------------------
// Blobs

const GZIP_LAYER_TYPES = new Set<string>([MediaType.ociLayerGzip, MediaType.dockerLayerGzip]);
const TAR_LAYER_TYPES = new Set<string>([MediaType.ociLayerTar, "application/vnd.docker.image.rootfs.diff.tar"]);

type LayerKind = "gzip" | "tar";

function layerKind(d: Descriptor, index: number, ref: ImageReference): LayerKind {
  if (GZIP_LAYER_TYPES.has(d.mediaType)) return "gzip";
  if (TAR_LAYER_TYPES.has(d.mediaType)) return "tar";
  if (/zstd/.test(d.mediaType)) {
    throw new UnsupportedImageError(`layer ${index} of ${ref} (${d.digest}) is zstd-compressed (${d.mediaType}); zstd layers are not supported yet — use a gzip-compressed variant of the image`);
  }
  throw new UnsupportedImageError(`layer ${index} of ${ref} (${d.digest}) has unsupported media type "${d.mediaType || "(none)"}" (expected a tar or tar+gzip layer)`);
}

async function fetchBlobBytes(client: RegistryClient, d: Descriptor, cap: number): Promise<Buffer> {
  const where = `blob ${d.digest} of ${client.reference}`;
  if (d.size > cap) throw new UnsupportedImageError(`${where} is ${formatSize(d.size)}, larger than the ${formatSize(cap)} limit for this kind of blob`);
  const bytes = await client.withRetries(async () => {
    const { res, url } = await client.fetch(client.url("blobs", d.digest));
    if (!res.ok) throw await errorFromResponse(res, url, where, blobNotFoundHint(client));
    checkBlobHeaders(res, d, where);
    return readBody(res, d.size, where, true);
  });
  if (bytes.length !== d.size) throw new DigestMismatchError(`${d.digest} (${d.size} bytes)`, `${bytes.length} bytes`, where);
  const actual = sha256Bytes(bytes);
  if (actual !== d.digest) throw new DigestMismatchError(d.digest, actual, where);
  return bytes;
}

function blobNotFoundHint(client: RegistryClient): string {
  return `the manifest of ${client.reference} lists a blob the registry does not have; the image in the registry is broken (re-push it)`;
}

function checkBlobHeaders(res: Response, d: Descriptor, where: string): void {
  const encoding = res.headers.get("content-encoding");
  if (encoding && encoding.toLowerCase() !== "identity") {
    throw new RegistryError(`${where} was served with Content-Encoding: ${encoding} despite Accept-Encoding: identity, so its bytes cannot be verified; a proxy or CDN in between is re-encoding blobs`, {
      status: res.status,
    });
  }
  const len = res.headers.get("content-length");
  if (len !== null && /^\d+$/.test(len) && Number(len) !== d.size) {
    throw new DigestMismatchError(`${d.digest} (${d.size} bytes)`, `${len} bytes (Content-Length)`, where);
  }
  const headerDigest = res.headers.get("docker-content-digest");
  if (headerDigest && isDigest(headerDigest) && headerDigest !== d.digest) throw new DigestMismatchError(d.digest, headerDigest, `${where} (Docker-Content-Digest header)`);
}

async function downloadLayers(
  client: RegistryClient,
  store: Store,
  layers: readonly LayerRecord[],
  kinds: readonly LayerKind[],
  opts: PullOptions,
  progress: (line: string) => void,
): Promise<void> {
  // Each distinct blob once; skip what the store already has.
  const todo = new Map<Digest, { layer: LayerRecord; kind: LayerKind }>();
  const seen = new Set<Digest>();
  for (const [i, layer] of layers.entries()) {
    if (seen.has(layer.digest)) continue;
    seen.add(layer.digest);
    if (await store.hasBlob(layer.digest)) {
      progress(`${shortDigest(layer.digest)} already present`);
      continue;
    }
    todo.set(layer.digest, { layer, kind: kinds[i]! });
  }
  if (todo.size === 0) return;

  const tmpDir = await store.tempDir("pull");
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  const limit = pLimit(Math.max(1, opts.concurrency ?? 3));
  let firstError: unknown;
  try {
    const results = await Promise.allSettled(
      [...todo.values()].map(({ layer, kind }) =>
        limit(async () => {
          if (signal.aborted) return;
          try {
            const file = await downloadBlob(client, layer, kind, tmpDir, signal);
            await store.putBlobFile(file, layer.digest, { verified: true });
            progress(`pulling ${shortDigest(layer.digest)} ${formatSize(layer.size)}`);
          } catch (e) {
            if (firstError === undefined && !stop.signal.aborted) {
              firstError = e;
              stop.abort(); // queued downloads see the abort and return without starting
            }
            throw e;
          }
        }),
      ),
    );
    if (firstError !== undefined) throw firstError;
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    if (opts.signal?.aborted) throw abortReason(opts.signal, undefined);
  } finally {
    await fsp.rm(tmpDir, { recursive: true, force: true });
  }
}

/**
 * Streams one layer blob into a file under `tmpDir`, checking size and sha256 as it goes and, for gzip layers,
 * that the uncompressed stream hashes to the config's diffID. Returns the verified file.
 */
async function downloadBlob(client: RegistryClient, layer: LayerRecord, kind: LayerKind, tmpDir: string, signal: AbortSignal): Promise<string> {
  const where = `layer ${layer.digest} of ${client.reference}`;
  return client.withRetries(async (attempt) => {
    const file = path.join(tmpDir, `${layer.digest.slice(7, 23)}-${attempt}`);
    const diff = kind === "gzip" ? new DiffIdHasher() : undefined;
    try {
      const { res, url } = await client.fetch(client.url("blobs", layer.digest), {}, signal);
      if (!res.ok) throw await errorFromResponse(res, url, where, blobNotFoundHint(client));
      checkBlobHeaders(res, layer, where);
      if (!res.body) throw new RegistryError(`${displayUrl(url)} returned no body for ${where}`, { status: res.status, url: displayUrl(url), temporary: true });

      const hash = createHash("sha256");
      let n = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb): void {
          n += chunk.length;
          if (n > layer.size) {
            cb(new DigestMismatchError(`${layer.digest} (${layer.size} bytes)`, `more than ${layer.size} bytes`, where));
            return;
          }
          hash.update(chunk);
          if (!diff) {
            cb(null, chunk);
            return;
          }
          diff.write(chunk).then(
            () => cb(null, chunk),
            (e: unknown) => cb(e as Error),
          );
        },
      });
      try {
        await pipeline(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), meter, createWriteStream(file, { flags: "wx", mode: 0o600 }), { signal });
      } catch (e) {
        if (signal.aborted) throw abortReason(signal, e);
        if (e instanceof StrataError || isFsError(e)) throw e;
        throw networkError(url, e, client.insecure, `the download of ${where} broke off after ${formatSize(n)}`);
      }
      if (n !== layer.size) throw new DigestMismatchError(`${layer.digest} (${layer.size} bytes)`, `${n} bytes`, where);
      const actual = ("sha256:" + hash.digest("hex")) as Digest;
      if (actual !== layer.digest) throw new DigestMismatchError(layer.digest, actual, where);
      const diffId = diff ? await diff.end(where) : actual;
      if (diffId !== layer.diffId) throw new DigestMismatchError(layer.diffId, diffId, `uncompressed content (diffID) of ${where}`);
      return file;
    } catch (e) {
      diff?.destroy();
      await fsp.rm(file, { force: true });
      throw e;
    }
  }, signal);
}

/** Feeds compressed bytes through gunzip and hashes the output (the layer's diffID). */
class DiffIdHasher {
  private readonly gunzip: Gunzip = createGunzip();
  private readonly hash: Hash = createHash("sha256");
  private error: Error | undefined;

  constructor() {
    this.gunzip.on("data", (c: Buffer) => this.hash.update(c));
    this.gunzip.on("error", (e: Error) => {
      this.error ??= e;
    });
  }

  write(chunk: Buffer): Promise<void> {
    if (this.error) return Promise.reject(this.gzipError(this.error));
    if (this.gunzip.write(chunk)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onDrain = (): void => {
        this.gunzip.off("error", onError);
        resolve();
      };
      const onError = (e: Error): void => {
        this.gunzip.off("drain", onDrain);
        reject(this.gzipError(e));
      };
      this.gunzip.once("drain", onDrain);
      this.gunzip.once("error", onError);
    });
  }

  async end(where: string): Promise<Digest> {
    this.gunzip.end();
    try {
      await finished(this.gunzip);
    } catch (e) {
      throw new UnsupportedImageError(`${where} is not valid gzip: ${(e as Error).message}`, { cause: e });
    }
    if (this.error) throw new UnsupportedImageError(`${where} is not valid gzip: ${this.error.message}`, { cause: this.error });
    return ("sha256:" + this.hash.digest("hex")) as Digest;
  }

  destroy(): void {
    this.gunzip.destroy();
  }

  private gzipError(e: Error): UnsupportedImageError {
    return new UnsupportedImageError(`layer is not valid gzip: ${e.message}`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** URL without query or fragment (presigned redirect targets carry credentials in the query). */
function displayUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

function shortDigest(d: Digest): string {
  return `${d.slice(0, 19)}…`;
}

/** Decimal units, one decimal place: `12.3 MB`. */
export function formatSize(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = bytes / 1000;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

function isFsError(e: unknown): boolean {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === "string" && /^(open|write|close|rename|mkdir|unlink|fsync)$/.test((e as NodeJS.ErrnoException).syscall!);
}

function abortReason(signal: AbortSignal, fallback: unknown): unknown {
  return signal.reason ?? fallback;
}

async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // ignore: we only want the connection back
  }
}

/** Reads a response body into memory, refusing more than `cap` bytes (or a Content-Length above it). */
async function readBody(res: Response, cap: number, where: string, isBlob = false): Promise<Buffer> {
  const len = res.headers.get("content-length");
  const tooLarge = (): StrataError =>
    isBlob ? new DigestMismatchError(`${cap} bytes`, `more than ${cap} bytes`, where) : new UnsupportedImageError(`${where} is larger than ${formatSize(cap)}; refusing to read it`);
  if (len !== null && /^\d+$/.test(len) && Number(len) > cap) {
    await discard(res);
    throw tooLarge();
  }
  if (!res.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body as WebReadableStream<Uint8Array>) {
      n += chunk.length;
      if (n > cap) throw tooLarge();
      chunks.push(Buffer.from(chunk));
    }
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw networkError(new URL(res.url || "about:blank"), e, false, `reading ${where} broke off after ${formatSize(n)}`);
  }
  return Buffer.concat(chunks);
}

function errnoCode(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur && depth < 4; cur = (cur as { cause?: unknown }).cause, depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/** A failed connection or broken-off transfer: temporary, so it is retried. */
function networkError(url: URL, e: unknown, insecure: boolean, what?: string): RegistryError {
  const code = errnoCode(e);
  const detail = code ?? (e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e));
  let hint = "check the registry host name and your network connection";
  if (code && /SSL|TLS|CERT|EPROTO/i.test(code) && !insecure) hint += "; if the registry speaks plain HTTP, list it in STRATA_INSECURE_REGISTRIES";
  const message = what ? `${what} (${displayUrl(url)}: ${detail}); retry later` : `could not reach ${displayUrl(url)} (${detail}); ${hint}`;
  return new RegistryError(message, { temporary: true, url: displayUrl(url), cause: e });
}

interface RegistryErrorBody {
  errors?: { code?: unknown; message?: unknown; detail?: unknown }[];
}

/** Turns a non-2xx response into a RegistryError naming the URL, the registry's error codes, and what to do. */
async function errorFromResponse(res: Response, url: URL, where: string, notFoundHint: string): Promise<RegistryError> {
  let text = "";
  try {
    text = (await readBody(res, 64 * 1024, where)).toString("utf8");
  } catch {
    // the status alone will have to do
  }
  const codes: string[] = [];
  const messages: string[] = [];
  try {
    const body = JSON.parse(text) as RegistryErrorBody;
    for (const err of body.errors ?? []) {
      if (typeof err.code === "string") codes.push(err.code);
      if (typeof err.message === "string" && err.message) messages.push(typeof err.code === "string" ? `${err.code}: ${err.message}` : err.message);
    }
  } catch {
    // not JSON (S3 answers XML, proxies HTML)
  }
  const status = res.status;
  const temporary = status === 408 || status === 429 || status >= 500;
  let hint: string;
  if (status === 404) hint = notFoundHint;
  else if (status === 401) hint = "the registry refused anonymous access: the repository may not exist, or it is private and needs credentials (registry login is not supported yet)";
  else if (status === 403) hint = "the registry denied access to this repository; check the name and that the image is public";
  else if (status === 429) hint = "the registry is rate-limiting requests; wait and try again later";
  else if (status >= 500) hint = "the registry had a server error; try again later";
  else hint = "the registry rejected the request";
  const detail = messages.length ? `: ${messages.join("; ")}` : codes.length ? `: ${codes.join(", ")}` : "";
  return new RegistryError(`${where}: GET ${displayUrl(url)} answered ${status}${res.statusText ? ` ${res.statusText}` : ""}${detail} — ${hint}`, {
    status,
    codes,
    temporary,
    url: displayUrl(url),
  });
}
