/** sha256 digests in OCI form (`sha256:<64 hex>`), parsing and hashing helpers. */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { StrataError } from "../errors.js";

/** A validated OCI digest string, `sha256:<64 lowercase hex>`. */
export type Digest = string & { readonly __digest: unique symbol };

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

/** Validates a digest string; throws on any other algorithm or a malformed hex part. */
export function parseDigest(s: string): Digest {
  if (!DIGEST_RE.test(s)) throw new StrataError(`invalid digest "${s}": expected sha256:<64 lowercase hex digits>`);
  return s as Digest;
}

export function isDigest(s: string): s is Digest {
  return DIGEST_RE.test(s);
}

/** Whether `name` is the hex part of a sha256 digest (a blob file's, a layer dir's, an image record's name). */
export function isDigestHex(name: string): boolean {
  return /^[0-9a-f]{64}$/.test(name);
}

/** The hex part of a digest. */
export function digestHex(d: Digest | string): string {
  return d.slice(d.indexOf(":") + 1);
}

export function sha256Bytes(data: string | Uint8Array): Digest {
  return ("sha256:" + createHash("sha256").update(data).digest("hex")) as Digest;
}

export async function sha256File(path: string): Promise<Digest> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return ("sha256:" + h.digest("hex")) as Digest;
}
