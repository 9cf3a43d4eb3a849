/**
 * What every store does the same way with image names: where a name's record lives (by the sha256 of the name, so any
 * name makes a safe file or object name), reading a record back, and resolving a ref that may be a name or an id.
 */
import { NotFoundError, StoreError } from "../errors.js";
import { digestHex, isDigest, sha256Bytes, type Digest } from "../util/digest.js";
import { isImageName, parseImageName } from "../util/image-name.js";
import type { ImageRecord, NameRecord } from "./store.js";

/** The hex a name's record is stored under. */
export function nameRecordHex(name: string): string {
  return digestHex(sha256Bytes(name));
}

/** A stored name record, checked (a damaged or foreign file is a StoreError naming `where`). */
export function parseNameRecord(text: string, where: string): NameRecord {
  let r: Partial<NameRecord>;
  try {
    r = JSON.parse(text) as Partial<NameRecord>;
  } catch (e) {
    throw new StoreError(`corrupt name record ${where}: ${(e as Error).message} (delete it and tag the image again)`);
  }
  if (typeof r.name !== "string" || typeof r.imageId !== "string" || !isDigest(r.imageId))
    throw new StoreError(`corrupt name record ${where}: it lacks a name or an image id (delete it and tag again)`);
  return { name: r.name, imageId: r.imageId as Digest, createdAt: typeof r.createdAt === "string" ? r.createdAt : "" };
}

/** A name record to store, checked: the name must be normalised (`repository:tag`). */
export function checkNameRecord(record: NameRecord, prefix = ""): void {
  const bare = record.name.startsWith(prefix) ? record.name.slice(prefix.length) : record.name;
  if (parseImageName(bare).full !== bare)
    throw new StoreError(`name "${record.name}" is not normalised (expected repository:tag)`);
  if (!isDigest(record.imageId)) throw new StoreError(`name ${record.name}: "${record.imageId}" is not an image id`);
}

/** Whether `ref` has the form of an image id or id prefix (`sha256:<hex>`, or ≥ 6 hex digits). */
export function looksLikeImageId(ref: string): boolean {
  return /^(?:sha256:)?[0-9a-fA-F]{6,64}$/.test(ref);
}

/**
 * Resolves `ref` as a name (looked up with `getName`), else as an id or id prefix (`resolveId`, given `sha256:<hex>`
 * so a backend never reads a bare hex ref as a name again). A name whose image is gone, and a ref that is neither, are
 * NotFoundErrors that say what to do.
 */
export async function resolveImageRef(
  ref: string,
  store: {
    getName(name: string): Promise<NameRecord | undefined>;
    getImage(id: Digest): Promise<ImageRecord | undefined>;
  },
  resolveId: (id: string) => Promise<ImageRecord>,
  where: string,
): Promise<ImageRecord> {
  const named = !ref.startsWith("sha256:") && isImageName(ref);
  if (named) {
    const name = parseImageName(ref).full;
    const rec = await store.getName(name);
    if (rec) {
      const image = await store.getImage(rec.imageId);
      if (!image)
        throw new NotFoundError(
          `name ${name} points at image ${rec.imageId}, which is no longer in the store at ${where}: build it again (or \`strata rmi ${name}\`)`,
        );
      return image;
    }
    if (!looksLikeImageId(ref))
      throw new NotFoundError(
        `no image is named ${name} in the store at ${where}, and "${ref}" is not an image id (sha256:<hex> or a prefix of at least 6 hex digits): list names with \`strata images\`, name one with \`strata tag\``,
      );
  }
  if (!looksLikeImageId(ref))
    throw new NotFoundError(
      `"${ref}" is not an image id (expected sha256:<hex> or a prefix of at least 6 hex digits) nor an image name (NAME[:TAG])`,
    );
  return resolveId(`sha256:${ref.replace(/^sha256:/, "").toLowerCase()}`);
}
