/**
 * Resolves a path inside a root filesystem the way the container would see it: symlinks are followed relative to
 * the root (an absolute link target restarts at the root, `..` never climbs above it). The result is always
 * inside `root`, so writing to it can never touch the host.
 */
import { lstatSync, readlinkSync } from "node:fs";
import path from "node:path";
import { StrataError } from "../errors.js";

const MAX_LINKS = 40;

export function secureJoin(root: string, unsafePath: string): string {
  const pending = unsafePath.split("/").filter((p) => p !== "" && p !== ".");
  const resolved: string[] = [];
  let links = 0;
  while (pending.length) {
    const part = pending.shift()!;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const candidate = path.join(root, ...resolved, part);
    let st;
    try {
      st = lstatSync(candidate);
    } catch {
      // Missing components are created later by the caller, inside the root.
      resolved.push(part);
      continue;
    }
    if (!st.isSymbolicLink()) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_LINKS) throw new StrataError(`too many levels of symbolic links resolving ${unsafePath} in the image`);
    const target = readlinkSync(candidate);
    if (target.startsWith("/")) resolved.length = 0;
    pending.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
  }
  return path.join(root, ...resolved);
}
