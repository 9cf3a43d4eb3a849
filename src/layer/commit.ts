/** Turns a directory (an overlay upper dir or a plain tree) into a stored layer: tar → diffID, gzip → digest. */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import path from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { MediaType } from "../oci/types.js";
import type { BlobStore, LayerRecord, WorkSpace } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { packDir, type PackOptions } from "./tar-pack.js";

class HashingTransform extends Transform {
  readonly hash = createHash("sha256");
  size = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    cb(null, chunk);
  }
  digest(): Digest {
    return ("sha256:" + this.hash.digest("hex")) as Digest;
  }
}

/**
 * Layer compression level: STRATA_GZIP_LEVEL, default 1. Level 1 commits a 245 MB Debian base in half the time
 * of level 6 for 9% larger blobs; a builder's hot path is the commit, not the download.
 */
export function gzipLevel(): number {
  const v = Number(process.env.STRATA_GZIP_LEVEL ?? "1");
  return Number.isInteger(v) && v >= 0 && v <= 9 ? v : 1;
}

/** Packs `dir` deterministically, stores the compressed blob and returns its layer record. */
export async function commitLayer(
  store: BlobStore & Pick<WorkSpace, "tempDir">,
  dir: string,
  opts: PackOptions,
): Promise<LayerRecord> {
  const tmpDir = await store.tempDir("layer");
  const tmpFile = path.join(tmpDir, "layer.tar.gz");
  const diff = new HashingTransform();
  const comp = new HashingTransform();
  try {
    await pipeline(
      packDir(dir, opts),
      diff,
      createGzip({ level: gzipLevel(), chunkSize: 1 << 20 }),
      comp,
      createWriteStream(tmpFile),
    );
    const digest = comp.digest();
    await store.putBlobFile(tmpFile, digest, { verified: true });
    return { digest, diffId: diff.digest(), size: comp.size, mediaType: MediaType.ociLayerGzip };
  } finally {
    await rm(tmpDir, { recursive: true, force: true });
  }
}
