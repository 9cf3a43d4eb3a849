// Builds an image directly in a store, without runc: layers committed from temp dirs with commitLayer, then a
// config, an OCI manifest and an image record — what the engine would have produced.
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { commitLayer } from "../../src/layer/commit.js";
import { MediaType, type ImageConfig, type Manifest } from "../../src/oci/types.js";
import type { ImageRecord, LayerRecord, Store } from "../../src/store/store.js";

/** One entry per layer: relative path → file content. */
export async function makeStoreImage(
  store: Store,
  layers: Record<string, string>[],
  opts: { cmd?: string[]; label?: string; populate?: (layerIndex: number, dir: string) => Promise<void> } = {},
): Promise<ImageRecord> {
  const records: LayerRecord[] = [];
  for (const files of layers) {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-push-layer-"));
    try {
      await opts.populate?.(records.length, dir);
      for (const [rel, content] of Object.entries(files)) {
        const f = path.join(dir, rel);
        await fsp.mkdir(path.dirname(f), { recursive: true });
        await fsp.writeFile(f, content);
      }
      records.push(await commitLayer(store, dir, { epoch: 1_700_000_000, overlay: false }));
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  }
  const created = "2024-01-01T00:00:00Z";
  const config: ImageConfig = {
    created,
    architecture: "amd64",
    os: "linux",
    config: {
      Cmd: opts.cmd ?? ["/bin/sh"],
      Env: ["PATH=/usr/bin:/bin"],
      ...(opts.label ? { Labels: { "strata.test": opts.label } } : {}),
    },
    rootfs: { type: "layers", diff_ids: records.map((l) => l.diffId) },
    history: records.map((_, i) => ({ created, created_by: `test layer ${i}` })),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = await store.putBlobBytes(configBytes);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: configBytes.length },
    layers: records.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = await store.putBlobBytes(manifestBytes);
  const record: ImageRecord = {
    id: configDigest,
    configDigest,
    configSize: configBytes.length,
    manifestDigest,
    manifestSize: manifestBytes.length,
    layers: records,
  };
  await store.putImage(record);
  return record;
}
