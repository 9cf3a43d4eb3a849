/**
 * Resolves a path inside a root filesystem the way the container would see it: symlinks are followed relative to
 * the root (an absolute link target restarts at the root, `..` never climbs above it). The result is always
 * inside `root`, so writing to it can never touch the host. (The image-path form is `resolveInImage`.)
 */
import path from "node:path";
import { MountedTarget, resolveInImage } from "./copy-target.js";

export function secureJoin(root: string, unsafePath: string): string {
  const inImage = resolveInImage(new MountedTarget(root), unsafePath, true);
  return inImage === "/" ? path.join(root) : path.join(root, inImage);
}
