/**
 * Mount stubs: the files and directories the runtime creates in a step's root only to mount over, noted before a RUN
 * and removed from the upper dir after it, so they never enter the layer.
 */
import { lstatSync, promises as fsp } from "node:fs";
import path from "node:path";
import { MountedTarget, resolveInImage } from "../layer/copy-target.js";
import { joinNoFollow } from "../layer/secure-join.js";

/**
 * Records whether a mount point, and each of its parents, exists before a RUN (in `preexisting`, by image path). The
 * destination is resolved in the image as the runtime resolves it (symlinks followed inside the root, the last one
 * too), so what is recorded is where the runtime will create its stub; nothing outside `root` is looked at.
 */
export function noteMountPoints(root: string, dest: string, preexisting: Map<string, boolean>): void {
  const resolved = resolveInImage(new MountedTarget(root), dest, true);
  for (let p = resolved; p !== "/"; p = path.posix.dirname(p)) {
    if (preexisting.has(p)) break;
    const host = joinNoFollow(root, p);
    preexisting.set(p, host !== undefined && lstatSync(host, { throwIfNoEntry: false }) !== undefined);
  }
}

/**
 * Removes files and directories the runtime created only to mount over (e.g. /proc in a scratch image, the
 * runFunction module's mount point), so they never enter the layer. A stub is removed only if it did not exist
 * before the step and is still empty. The upper dir is walked without following symlinks: the RUN may have replaced
 * a stub's parent by a link to anywhere, and the scrubber must only ever remove entries of the upper dir itself.
 */
export async function scrubMountStubs(upper: string, preexisting: Map<string, boolean>): Promise<void> {
  const candidates = [...preexisting].filter(([, existed]) => !existed).map(([p]) => p);
  // Deepest first, so parents become empty before they are checked.
  for (const p of candidates.sort((a, b) => b.split("/").length - a.split("/").length)) {
    const abs = joinNoFollow(upper, p);
    if (abs === undefined) continue;
    const st = await fsp.lstat(abs).catch(() => undefined);
    if (!st) continue;
    if (st.isDirectory()) {
      if ((await fsp.readdir(abs)).length === 0) await fsp.rmdir(abs);
    } else if (st.isFile() && st.size === 0) {
      await fsp.rm(abs);
    }
  }
}
