/**
 * Host paths inside a root filesystem, for image paths that come from a definition (and so, through the build
 * service, from a client). Both results are always inside `root`, so acting on them can never touch the host:
 *  - `secureJoin` resolves the path the way the container would see it: symlinks are followed relative to the root
 *    (an absolute link target restarts at the root, `..` never climbs above it). For creating and reading. (The
 *    image-path form is `resolveInImage`.)
 *  - `joinNoFollow` follows no symlink at all: for removing what a path names, where following a link the build
 *    itself created (a RUN can replace any directory by a symlink) would act on the link's target.
 */
import { lstatSync } from "node:fs";
import path from "node:path";
import { StrataError } from "../errors.js";
import { resolveInRoot } from "../util/resolve-path.js";
import { MountedTarget, resolveInImage } from "./copy-target.js";

export function secureJoin(root: string, unsafePath: string): string {
  const inImage = resolveInImage(new MountedTarget(root), unsafePath, true);
  return inImage === "/" ? path.join(root) : path.join(root, inImage);
}

/** `unsafePath` as an absolute image path with `.` and `..` resolved lexically (`..` stops at `/`), following nothing. */
export function lexicalImagePath(unsafePath: string): string {
  const never = () => new StrataError("internal: a lexical resolution followed a symlink");
  return "/" + resolveInRoot(unsafePath, false, () => undefined, never).join("/");
}

/**
 * The host path of `unsafePath` under `root` when every parent component below `root` is a real directory (not a
 * symlink); undefined when one is missing, a symlink or anything else. The last component is not looked at, so an
 * `lstat`, `rmdir` or `unlink` of the result acts on the entry itself, inside `root`.
 */
export function joinNoFollow(root: string, unsafePath: string): string | undefined {
  const parts = lexicalImagePath(unsafePath).split("/").filter(Boolean);
  let cur = path.join(root);
  for (const part of parts.slice(0, -1)) {
    cur = path.join(cur, part);
    if (!lstatSync(cur, { throwIfNoEntry: false })?.isDirectory()) return undefined;
  }
  return parts.length ? path.join(cur, parts[parts.length - 1]!) : cur;
}
