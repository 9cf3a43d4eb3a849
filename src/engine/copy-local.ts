/**
 * The SDK's COPY (`addLocalDir`/`addLocalFile` with `copy: true`, and the final `copy: false` step): a directory's
 * contents go into `dest`, a file becomes `dest`. Copied entries are owned by root and keep their mode; missing parents
 * are created 0755. Copied entries keep their source's mtime, as BuildKit's COPY does; the directories made for them
 * get the layer's epoch. Symlinks already in the image resolve inside the image; an entry replaces whatever is at its path
 * (a directory stays a directory and only takes the new mode). Dockerfile COPY/ADD have their own rules
 * (`src/engine/docker-copy.ts`); both write through a `CopyTarget`, mounted or not.
 */
import path from "node:path";
import type { ContextEntry } from "../context/walk.js";
import { LocalPathError } from "../errors.js";
import { resolveInImage, type CopyTarget } from "../layer/copy-target.js";
import type { ResolvedInput } from "./inputs.js";

export function copyLocal(t: CopyTarget, r: ResolvedInput, dest: string): void {
  if (r.input.kind !== "dir" && r.input.kind !== "file" && r.input.kind !== "inline") {
    throw new LocalPathError(
      r.input.name,
      `input ${r.input.name} (${r.input.kind}) can only be copied by a Dockerfile COPY/ADD`,
    );
  }
  const to = resolveInImage(t, dest, true);
  if (r.input.kind === "inline") {
    mkdirs(t, path.posix.dirname(to), dest);
    if (t.lstat(to)) t.remove(to);
    t.writeFile(to, r.input.content, r.input.mode, 0, 0);
    return;
  }
  if (r.input.kind === "file") {
    mkdirs(t, path.posix.dirname(to), dest);
    put(t, r.entries[0]!, to);
    return;
  }
  mkdirs(t, to, dest);
  // Entries come parents first, and each directory entry is made a real directory, so joined paths never cross a
  // symlink of the image.
  for (const e of r.entries) put(t, e, path.posix.join(to, e.relPath));
}

/** `mkdir -p` inside the image (0755, root-owned), following symlinks inside the image. */
function mkdirs(t: CopyTarget, dir: string, dest: string): void {
  let cur = "/";
  for (const part of dir.split("/").filter(Boolean)) {
    cur = resolveInImage(t, path.posix.join(cur, part), true);
    const st = t.lstat(cur);
    if (st?.isDirectory()) continue;
    if (st) throw new LocalPathError(dest, `cannot copy to ${dest}: ${cur} is a file in the image`);
    t.mkdir(cur, 0o755, 0, 0);
  }
}

function put(t: CopyTarget, e: ContextEntry, to: string): void {
  const existing = t.lstat(to);
  if (e.type === "dir") {
    if (existing?.isDirectory()) t.setMeta(to, e.mode, 0, 0);
    else {
      if (existing) t.remove(to);
      t.mkdir(to, e.mode, 0, 0);
    }
    t.setMtime(to, e.mtimeMs);
    return;
  }
  if (existing) t.remove(to);
  if (e.type === "symlink") {
    t.symlink(to, e.linkTarget ?? "", 0, 0);
    t.setMtime(to, e.mtimeMs);
  } else t.copyFile(to, e, e.mode, 0, 0);
}
