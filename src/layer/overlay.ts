/**
 * Overlay mounts for build steps. Lower layers are referenced through short numbered symlinks relative to the
 * mount's working directory, so the kernel's one-page limit on mount options does not cap image depth
 * (overlayfs itself stacks at most 500 lowers).
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { SandboxError } from "../errors.js";

export const MAX_OVERLAY_LOWERS = 500;

export interface OverlayDirs {
  upper: string;
  work: string;
  merged: string;
}

/** Mounts an overlay in `dir` (which gets upper/, work/, merged/, l/). `lowers` are ordered bottom first. */
export async function mountOverlay(dir: string, lowers: readonly string[]): Promise<OverlayDirs> {
  if (lowers.length > MAX_OVERLAY_LOWERS) {
    throw new SandboxError(
      `image has ${lowers.length} layers; overlayfs stacks at most ${MAX_OVERLAY_LOWERS}. Squash earlier steps (fewer chained calls) to build on it.`,
    );
  }
  const dirs = { upper: path.join(dir, "upper"), work: path.join(dir, "work"), merged: path.join(dir, "merged") };
  const links = path.join(dir, "l");
  for (const d of [dirs.upper, dirs.work, dirs.merged, links]) await fsp.mkdir(d, { recursive: true });
  const effective = lowers.length ? [...lowers].reverse() : [path.join(dir, "empty")];
  if (!lowers.length) await fsp.mkdir(effective[0]!, { recursive: true });
  const names: string[] = [];
  for (let i = 0; i < effective.length; i++) {
    const name = i.toString(36);
    await fsp.symlink(effective[i]!, path.join(links, name));
    names.push(`l/${name}`);
  }
  await mountWithOptions(dir, overlayOptions(names, "upper", "work"));
  return dirs;
}

/** The overlay mount options Strata uses: lowers top first, by (short, relative) name. */
export function overlayOptions(lowerNames: readonly string[], upper: string, work: string): string {
  return `lowerdir=${lowerNames.join(":")},upperdir=${upper},workdir=${work},redirect_dir=off,metacopy=off,index=off,xino=off`;
}

async function mountWithOptions(dir: string, options: string): Promise<void> {
  const r = await execa("mount", ["-t", "overlay", "overlay", "-o", options, "merged"], { cwd: dir, reject: false });
  if (r.exitCode !== 0) {
    throw new SandboxError(
      `could not mount overlay in ${dir}: ${r.stderr || r.stdout} (Strata needs root and a kernel with overlayfs)`,
    );
  }
}

/** The lower dirs (top first) of the overlay mountOverlay made in `dir`, as its `l/` links name them. */
export async function overlayLowersTopFirst(dir: string): Promise<string[]> {
  const links = path.join(dir, "l");
  const names = (await fsp.readdir(links)).sort((a, b) => parseInt(a, 36) - parseInt(b, 36));
  return Promise.all(names.map((n) => fsp.readlink(path.join(links, n))));
}

/** The options mountOverlay mounted `dir`'s overlay with (relative to `dir`), to mount it again the same way. */
export async function overlayOptionsOf(dir: string): Promise<string> {
  const n = (await fsp.readdir(path.join(dir, "l"))).length;
  return overlayOptions(
    Array.from({ length: n }, (_, i) => `l/${i.toString(36)}`),
    "upper",
    "work",
  );
}

export async function unmountOverlay(dirs: OverlayDirs): Promise<void> {
  const r = await execa("umount", [dirs.merged], { reject: false });
  if (r.exitCode !== 0) {
    const lazy = await execa("umount", ["-l", dirs.merged], { reject: false });
    if (lazy.exitCode !== 0) throw new SandboxError(`could not unmount ${dirs.merged}: ${r.stderr}`);
  }
}

/** Lazily unmounts every mount point below `dir`, deepest first (what a killed build or mmdebstrap left behind). */
export async function unmountUnder(dir: string): Promise<void> {
  const prefix = dir.replace(/\/+$/, "") + "/";
  const mounts = (await fsp.readFile("/proc/self/mounts", "utf8"))
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .filter((m) => m.startsWith(prefix));
  for (const m of mounts.sort().reverse()) await execa("umount", ["-l", m], { reject: false });
}
