/** Sinks for built images: an OCI image layout directory and a docker-archive tarball (for `docker/podman load`). */
import { createReadStream, createWriteStream, promises as fsp } from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import type { BlobStore, ImageRecord } from "../store/store.js";
import { digestHex, type Digest } from "../util/digest.js";
import { writeFileAtomic } from "../util/fs.js";
import { MediaType } from "./types.js";

function blobsOf(image: ImageRecord): Digest[] {
  return [image.configDigest, image.manifestDigest, ...image.layers.map((l) => l.digest)];
}

/**
 * Writes (or adds to) an OCI image layout at `dir`. The manifest is tagged `ref` (annotation
 * `org.opencontainers.image.ref.name`) in index.json; an existing entry with the same ref is replaced.
 */
export async function writeLayout(store: BlobStore, image: ImageRecord, dir: string, ref = "latest"): Promise<void> {
  await fsp.mkdir(path.join(dir, "blobs", "sha256"), { recursive: true });
  for (const d of blobsOf(image)) {
    const target = path.join(dir, "blobs", "sha256", digestHex(d));
    if (
      await fsp.access(target).then(
        () => true,
        () => false,
      )
    )
      continue;
    const src = await store.blobPath(d);
    const tmp = `${target}.tmp-${process.pid}`;
    await fsp.link(src, tmp).catch(() => fsp.copyFile(src, tmp));
    await fsp.rename(tmp, target);
  }
  await writeFileAtomic(path.join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const indexFile = path.join(dir, "index.json");
  const existing = await fsp
    .readFile(indexFile, "utf8")
    .then((t) => JSON.parse(t) as { manifests?: { annotations?: Record<string, string> }[] })
    .catch(() => ({ manifests: [] }));
  const manifests = (existing.manifests ?? []).filter(
    (m) => m.annotations?.["org.opencontainers.image.ref.name"] !== ref,
  );
  manifests.push({
    mediaType: MediaType.ociManifest,
    digest: image.manifestDigest,
    size: image.manifestSize,
    annotations: { "org.opencontainers.image.ref.name": ref },
    platform: { architecture: "amd64", os: "linux" },
  } as { annotations: Record<string, string> });
  await writeFileAtomic(indexFile, JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }));
}

/** Writes a docker-archive tarball (`manifest.json` + blobs) that `docker load` and `podman load` accept. */
export async function writeDockerArchive(
  store: BlobStore,
  image: ImageRecord,
  file: string,
  tag?: string,
): Promise<void> {
  const pack = tar.pack();
  const tmp = `${file}.tmp-${process.pid}`;
  const done = pipeline(pack, createWriteStream(tmp));
  const mtime = new Date(0);
  const addBytes = (name: string, data: Buffer) =>
    new Promise<void>((res, rej) =>
      pack.entry({ name, size: data.length, mode: 0o644, mtime }, data, (e) => (e ? rej(e) : res())),
    );
  const addFile = async (name: string, d: Digest, size: number) => {
    const p = await store.blobPath(d);
    await new Promise<void>((res, rej) => {
      const entry = pack.entry({ name, size, mode: 0o644, mtime }, (e) => (e ? rej(e) : res()));
      createReadStream(p).on("error", rej).pipe(entry);
    });
  };
  try {
    const configName = `blobs/sha256/${digestHex(image.configDigest)}`;
    await addBytes(configName, await store.readBlob(image.configDigest));
    const layers: string[] = [];
    for (const l of image.layers) {
      const name = `blobs/sha256/${digestHex(l.digest)}`;
      if (!layers.includes(name)) await addFile(name, l.digest, l.size);
      layers.push(name);
    }
    const manifest = [{ Config: configName, RepoTags: tag ? [tag] : [], Layers: layers }];
    await addBytes("manifest.json", Buffer.from(JSON.stringify(manifest)));
    pack.finalize();
    await done;
    await fsp.rename(tmp, file);
  } catch (e) {
    pack.destroy();
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}
