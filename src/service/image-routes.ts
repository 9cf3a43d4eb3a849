/**
 * The service's image endpoints (declared in `wire/images.ts`): a tenant's image names, resolving a name or id, and
 * what a client needs to run, export or inspect an image built here — its record, blobs and step logs — plus pushing
 * it to a registry from here. Every answer is scoped to the tenant: names live in its scoped view of the store, and
 * an image or blob is served only when `Visibility` says the tenant holds it (another tenant's is "not found", worded
 * exactly as a missing one).
 */
import { promises as fsp } from "node:fs";
import type http from "node:http";
import { pipeline } from "node:stream/promises";
import { NotFoundError, StrataError } from "../errors.js";
import type { FetchPolicy } from "../net/fetch-policy.js";
import { looksLikeImageId } from "../store/names.js";
import type { ImageRecord, NamedStore, NameRecord } from "../store/store.js";
import { digestHex, type Digest } from "../util/digest.js";
import { isImageName, parseImageName } from "../util/image-name.js";
import { decodePart, HttpError, readJson, sendJson } from "./http-io.js";
import type { Tenant } from "./tenants.js";
import type { Visibility } from "./visibility.js";
import {
  parsePushRequest,
  parseTagRequest,
  type NameInfo,
  type PushResponse,
  type ResolveResponse,
} from "./wire/images.js";
import { isDigestString } from "./wire/limits.js";

/** What the image endpoints read of their build service. */
export interface ImageRoutesContext {
  /** The whole store (blobs and image records are shared; visibility decides who sees them). */
  store: NamedStore;
  /** The store as a tenant sees it (its names). */
  storeFor(tenant: Tenant): NamedStore;
  visibility: Visibility;
  /** Where a push may connect (the service's fetch policy: the operator's logins are never used). */
  fetchPolicy: FetchPolicy;
}

/**
 * Answers `req` if it is one of the image endpoints (true), else leaves it to the caller (false). `parts` are the
 * path's raw segments (`["v1", "names", …]`).
 */
export async function handleImageRoute(
  ctx: ImageRoutesContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  parts: string[],
  tenant: Tenant,
): Promise<boolean> {
  const method = req.method ?? "GET";
  const [, area, first, sub] = parts;
  if (area === "names" && parts.length <= 3) {
    if (parts.length === 2) {
      allow(method, ["GET"], "/v1/names");
      sendJson(res, 200, { names: await listNames(ctx, tenant) });
      return true;
    }
    allow(method, ["GET", "PUT", "DELETE"], "/v1/names/<name>");
    const name = parseName(decodePart(first!));
    const store = ctx.storeFor(tenant);
    if (method === "PUT") {
      const { imageId } = parseTagRequest(await readJson(req));
      if (!(await ctx.visibility.image(tenant, imageId as Digest))) throw notFound(imageId);
      const rec: NameRecord = { name, imageId: imageId as Digest, createdAt: new Date().toISOString() };
      await store.putName(rec);
      sendJson(res, 200, await nameInfo(ctx, rec));
      return true;
    }
    const rec = await store.getName(name);
    if (!rec) throw new HttpError(404, "NOT_FOUND", `no image is named ${name} on this server`);
    if (method === "DELETE") await store.deleteName(name);
    sendJson(res, 200, await nameInfo(ctx, rec));
    return true;
  }
  if (area === "resolve" && parts.length === 3) {
    allow(method, ["GET"], "/v1/resolve/<ref>");
    sendJson(res, 200, await resolve(ctx, tenant, decodePart(first!)));
    return true;
  }
  if (area === "images" && parts.length === 4 && (sub === "record" || sub === "logs")) {
    const id = decodePart(first!);
    if (!id.startsWith("sha256:")) return false; // a build's log stream
    allow(method, ["GET"], `/v1/images/<image id>/${sub}`);
    const image = isDigestString(id) ? await ctx.visibility.image(tenant, id as Digest) : undefined;
    if (!image) throw notFound(id);
    if (sub === "record") {
      sendJson(res, 200, image);
      return true;
    }
    const text = await ctx.store.getLog(image.id);
    if (text === undefined) throw new HttpError(404, "NOT_FOUND", `image ${id} has no stored build log`);
    const body = Buffer.from(text);
    res.writeHead(200, { "content-type": "text/plain; charset=utf-8", "content-length": body.length });
    res.end(body);
    return true;
  }
  if (area === "blobs" && parts.length === 3 && method === "GET" && first !== "check") {
    const digest = decodePart(first!);
    if (!isDigestString(digest))
      throw new HttpError(
        400,
        "BAD_DIGEST",
        `"${digest}" is not a blob digest: expected sha256:<64 lowercase hex digits>`,
      );
    if (!(await ctx.visibility.blobVisible(tenant, digest as Digest)))
      throw new HttpError(404, "NOT_FOUND", `blob ${digest} is not on this server`);
    await sendBlob(ctx.store, res, digest as Digest);
    return true;
  }
  if (area === "push" && parts.length === 2) {
    allow(method, ["POST"], "/v1/push");
    sendJson(res, 200, await push(ctx, tenant, await readJson(req)));
    return true;
  }
  return false;
}

function allow(method: string, methods: string[], where: string): void {
  if (!methods.includes(method))
    throw new HttpError(
      405,
      "METHOD_NOT_ALLOWED",
      `${method} is not allowed on ${where} (allowed: ${methods.join(", ")})`,
      {
        allow: methods.join(", "),
      },
    );
}

function parseName(text: string): string {
  try {
    return parseImageName(text).full;
  } catch (e) {
    throw new HttpError(400, "INVALID_NAME", (e as Error).message);
  }
}

/** The answer for an image the tenant does not hold, or that does not exist: the same either way. */
function notFound(id: string): HttpError {
  return new HttpError(404, "NOT_FOUND", `image ${id} is not in the server's store`);
}

async function nameInfo(ctx: ImageRoutesContext, rec: NameRecord): Promise<NameInfo> {
  const image = await ctx.store.getImage(rec.imageId);
  return {
    name: rec.name,
    imageId: rec.imageId,
    taggedAt: rec.createdAt,
    ...(image?.step?.builtAt ? { createdAt: image.step.builtAt } : {}),
    size: image ? image.layers.reduce((n, l) => n + l.size, 0) : 0,
  };
}

async function listNames(ctx: ImageRoutesContext, tenant: Tenant): Promise<NameInfo[]> {
  const names = await ctx.storeFor(tenant).listNames();
  // The unscoped store lists every scope's names too (`scope:<scope>:…`); the default tenant sees only its own.
  const own = tenant.scope === undefined ? names.filter((n) => !n.name.startsWith("scope:")) : names;
  return Promise.all(own.map((n) => nameInfo(ctx, n)));
}

/**
 * The image `ref` names for the tenant: its own name first, else a full id or a unique id prefix among the images it
 * holds. A name is the tenant's own, so it holds the image the name points at: a grant pruned since (see
 * visibility.ts) is given again, with those of the image's chain.
 */
async function resolve(ctx: ImageRoutesContext, tenant: Tenant, ref: string): Promise<ResolveResponse> {
  if (!ref.startsWith("sha256:") && isImageName(ref)) {
    const name = parseImageName(ref).full;
    const rec = await ctx.storeFor(tenant).getName(name);
    if (rec) {
      if (!(await ctx.visibility.image(tenant, rec.imageId))) {
        const chain = await chainIds(ctx.store, rec.imageId);
        if (!chain.length)
          throw new HttpError(
            404,
            "NOT_FOUND",
            `name ${name} points at image ${rec.imageId}, which is no longer on this server`,
          );
        await ctx.visibility.grantImages(tenant, chain);
      }
      return { imageId: rec.imageId, name };
    }
    if (!looksLikeImageId(ref)) throw new HttpError(404, "NOT_FOUND", `no image is named ${name} on this server`);
  }
  if (!looksLikeImageId(ref))
    throw new HttpError(
      400,
      "BAD_REF",
      `"${ref}" is neither an image name (NAME[:TAG]) nor an image id (sha256:<hex> or a prefix of at least 6 hex digits)`,
    );
  const hex = ref.replace(/^sha256:/, "").toLowerCase();
  if (hex.length === 64) {
    if (!(await ctx.visibility.image(tenant, `sha256:${hex}` as Digest))) throw notFound(`sha256:${hex}`);
    return { imageId: `sha256:${hex}` };
  }
  if (tenant.scope === undefined) {
    const rec = await ctx.store.resolveImage(`sha256:${hex}`).catch((e: unknown) => {
      if (e instanceof NotFoundError) throw new HttpError(404, "NOT_FOUND", e.message);
      throw e;
    });
    return { imageId: rec.id };
  }
  const candidates = (await ctx.store.listImages()).filter((r) => digestHex(r.id).startsWith(hex));
  const held: ImageRecord[] = [];
  for (const r of candidates) if (await ctx.visibility.image(tenant, r.id)) held.push(r);
  if (held.length === 0) throw new HttpError(404, "NOT_FOUND", `no image id starts with ${hex} on this server`);
  if (held.length > 1)
    throw new HttpError(
      409,
      "AMBIGUOUS",
      `image id prefix ${hex} is ambiguous (${held.length} images); give more digits`,
    );
  return { imageId: held[0]!.id };
}

/** The ids of an image and its stored ancestors (empty when the image itself is gone). */
async function chainIds(store: NamedStore, id: Digest): Promise<Digest[]> {
  const out: Digest[] = [];
  const seen = new Set<string>();
  for (let cur = await store.getImage(id); cur && !seen.has(cur.id); ) {
    seen.add(cur.id);
    out.push(cur.id);
    cur = cur.parent ? await store.getImage(cur.parent) : undefined;
  }
  return out;
}

async function sendBlob(store: NamedStore, res: http.ServerResponse, digest: Digest): Promise<void> {
  const file = await store.blobPath(digest).catch((e: unknown) => {
    if (e instanceof NotFoundError) throw new HttpError(404, "NOT_FOUND", `blob ${digest} is not on this server`);
    throw e;
  });
  const st = await fsp.stat(file);
  const stream = await store.openBlob(digest);
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": st.size });
  await pipeline(stream, res);
}

/** `POST /v1/push`: pushes an image the tenant holds, with the request's registry login (never stored or logged). */
async function push(ctx: ImageRoutesContext, tenant: Tenant, body: unknown): Promise<PushResponse> {
  const req = parsePushRequest(body);
  const image = await ctx.visibility.image(tenant, req.imageId as Digest);
  if (!image) throw notFound(req.imageId);
  const { pushImage } = await import("../registry/push.js");
  const secret: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.secrets ?? {})) if (v) secret[k] = v;
  try {
    const r = await pushImage(ctx.store, image, req.reference, {
      format: req.format ?? "oci",
      estargz: req.estargz === true,
      fetchPolicy: ctx.fetchPolicy,
      dockerConfig: false,
      ...(Object.keys(secret).length ? { secret } : {}),
    });
    const blobs = { uploaded: 0, mounted: 0, existing: 0 };
    for (const b of r.blobs) blobs[b.how]++;
    return {
      repository: `${r.reference.registry}/${r.reference.repository}`,
      tag: r.reference.tag ?? "latest",
      manifestDigest: r.manifestDigest,
      mediaType: r.mediaType,
      blobs,
    };
  } catch (e) {
    if (!(e instanceof StrataError)) throw e;
    // The registry's answer (or the policy's refusal) is the client's to read; a 502 says it came from beyond us.
    throw new HttpError(e.fault === "user" ? 400 : 502, e.code, `push to ${req.reference} failed: ${e.message}`);
  }
}
