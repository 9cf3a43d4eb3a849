// Tar archives written entry by entry, as BuildKit's tests write them with archive/tar (exact names, types, modes).
import { gzipSync } from "node:zlib";
import { pack } from "tar-stream";

/** One tar entry: a file (content), a directory (name ends in "/" or type "dir"), a symlink or a hard link. */
export interface TarEntry {
  name: string;
  type?: "file" | "dir" | "symlink" | "link";
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

/** The archive of `entries`, in order. */
export async function tarOf(entries: readonly TarEntry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on("data", (c: unknown) => {
    chunks.push(c as Buffer);
  });
  const done = new Promise<void>((resolve, reject) => {
    p.on("end", resolve);
    p.on("error", reject);
  });
  for (const e of entries) {
    const type = e.type ?? (e.name.endsWith("/") ? "dir" : "file");
    const header = {
      name: e.name,
      mode: e.mode ?? (type === "dir" ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: new Date(0),
    };
    if (type === "file") p.entry({ ...header, type: "file" }, Buffer.from(e.content ?? ""));
    else if (type === "dir") p.entry({ ...header, type: "directory" });
    else p.entry({ ...header, type, linkname: e.linkname ?? "" });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** `data` gzip-compressed. */
export function gzip(data: Buffer): Buffer {
  return gzipSync(data);
}
