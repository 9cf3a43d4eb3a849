/**
 * The wire of the service's image endpoints (names, resolving, image records, blobs and step logs to download, and
 * pushes to a registry): the request bodies as zod schemas (validated by the server with the build request's messages,
 * `<field>: <what is wrong>`) and the response shapes (plain types: the client trusts its server's answers, except
 * for content, which it verifies by digest).
 *
 *   GET    /v1/names                             → {names: NameInfo[]}            the tenant's names
 *   PUT    /v1/names/<name>        TagRequest    → NameInfo                       name an image the tenant holds
 *   DELETE /v1/names/<name>                      → NameInfo                       remove a name (404 if none)
 *   GET    /v1/resolve/<ref>                     → ResolveResponse                a name, id or id prefix → id
 *   GET    /v1/images/sha256:<hex>/record        → the image's stored record (ImageRecord)
 *   GET    /v1/images/sha256:<hex>/logs          → text/plain: the step's stored (redacted) log; 404 if none
 *   GET    /v1/blobs/sha256:<hex>                → the blob's bytes
 *   POST   /v1/push                PushRequest   → PushResponse                   the service pushes an image
 */
import { z } from "zod";
import { bool, digest, obj, parseWith, str } from "./fields.js";

/** `PUT /v1/names/<name>`. */
export const TagRequestSchema = obj({ imageId: digest });
export type TagRequest = z.infer<typeof TagRequestSchema>;

/** The registry login a push may carry (a request secret: used for this push only, never stored or logged). */
const PushSecretsSchema = obj({
  REGISTRY_USERNAME: str(1024).optional(),
  REGISTRY_PASSWORD: str(16 * 1024).optional(),
});

/** `POST /v1/push`. */
export const PushRequestSchema = obj({
  imageId: digest,
  /** `host[:port]/repository[:tag]`. */
  reference: str(1024).refine((s) => s !== "", { error: "empty reference" }),
  format: z.enum(["oci", "docker"]).optional(),
  estargz: bool.optional(),
  secrets: PushSecretsSchema.optional(),
});
export type PushRequest = z.infer<typeof PushRequestSchema>;

export function parseTagRequest(v: unknown): TagRequest {
  return parseWith(TagRequestSchema, v);
}

export function parsePushRequest(v: unknown): PushRequest {
  return parseWith(PushRequestSchema, v);
}

/** A name and what it names (the image's creation time and the compressed size of its layers). */
export interface NameInfo {
  /** `repository:tag`. */
  name: string;
  imageId: string;
  /** When the name was last pointed at the image. */
  taggedAt: string;
  /** When the image was built (its last step), if known. */
  createdAt?: string;
  /** Bytes of the image's layer blobs (compressed). */
  size: number;
}

/** `GET /v1/resolve/<ref>`: the image a ref names for this tenant (`name` when it was a name). */
export interface ResolveResponse {
  imageId: string;
  name?: string;
}

/** `POST /v1/push`: what the service pushed. */
export interface PushResponse {
  /** `registry/repository`. */
  repository: string;
  tag: string;
  manifestDigest: string;
  mediaType: string;
  blobs: { uploaded: number; mounted: number; existing: number };
}
