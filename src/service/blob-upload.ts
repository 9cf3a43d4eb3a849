/**
 * `PUT /v1/blobs/sha256:<hex>`: a context file's bytes streamed to a temp file in the store, counted against the
 * tenant's upload quota and the size limit, verified against the digest the URL names, then stored and granted to the
 * tenant that sent them.
 */
import { createHash } from "node:crypto";
import { createWriteStream, promises as fsp } from "node:fs";
import type http from "node:http";
import path from "node:path";
import type { Store } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { HttpError, sendJson } from "./http-io.js";
import type { ServiceMetrics } from "./metrics.js";
import type { TenantQuotas } from "./quotas.js";
import type { Tenant } from "./tenants.js";
import type { Visibility } from "./visibility.js";

/** What an upload reads of its build service. */
export interface BlobUploadContext {
  store: Store;
  /** Largest single uploaded file (bytes). */
  maxBlob: number;
  quotas: TenantQuotas;
  visibility: Visibility;
  metrics: ServiceMetrics;
}

/** Receives one upload and answers it: 201 `{digest, size}`, or an `HttpError` (413, 400) / quota error. */
export async function receiveBlob(
  ctx: BlobUploadContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  digest: Digest,
  tenant: Tenant,
): Promise<void> {
  const store = ctx.store;
  const declared = req.headers["content-length"] !== undefined ? Number(req.headers["content-length"]) : undefined;
  if (declared !== undefined && declared > ctx.maxBlob) {
    throw new HttpError(
      413,
      "TOO_LARGE",
      `the upload is ${declared} bytes; this server accepts files up to ${ctx.maxBlob} bytes`,
    );
  }
  const claim = await ctx.quotas.beginUpload(tenant.id, declared);
  let size = 0;
  let tmp: string | undefined;
  try {
    tmp = await store.tempDir("upload");
    const file = path.join(tmp, "blob");
    const hash = createHash("sha256");
    let tooLarge = false;
    const out = createWriteStream(file, { mode: 0o600 });
    await new Promise<void>((resolve, reject) => {
      req.on("data", (chunk: Buffer) => {
        if (tooLarge) return;
        size += chunk.length;
        if (size > ctx.maxBlob) {
          tooLarge = true;
          return;
        }
        try {
          claim.grow(chunk.length);
        } catch (e) {
          out.destroy();
          reject(e);
          return;
        }
        hash.update(chunk);
        if (!out.write(chunk)) {
          req.pause();
          out.once("drain", () => req.resume());
        }
      });
      req.on("end", () => out.end());
      req.on("aborted", () => reject(new HttpError(400, "ABORTED", "the upload was interrupted")));
      req.on("error", reject);
      out.on("error", reject);
      out.on("finish", resolve);
    });
    if (tooLarge)
      throw new HttpError(
        413,
        "TOO_LARGE",
        `the upload is larger than ${ctx.maxBlob} bytes, the largest file this server accepts`,
      );
    const actual = "sha256:" + hash.digest("hex");
    if (actual !== digest) {
      throw new HttpError(
        400,
        "DIGEST_MISMATCH",
        `the uploaded content (${size} bytes) has digest ${actual}, not ${digest} as the URL says; was the file changed while it was uploaded?`,
      );
    }
    await store.putBlobFile(file, digest, { verified: true });
    // Sent and verified in full (even bytes already stored): now the tenant may name it.
    await ctx.visibility.grantBlob(tenant, digest);
    ctx.metrics.uploaded(tenant.id, size);
    await ctx.quotas.addStored(tenant.id, size);
    sendJson(res, 201, { digest, size });
  } finally {
    claim.release(size);
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}
