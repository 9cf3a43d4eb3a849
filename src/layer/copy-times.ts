/**
 * The modification times a copy gives what it writes, by BuildKit's rules (fsutil's copy without a fixed timestamp):
 * a copied file, symlink or directory keeps its source's mtime (a directory copied onto an existing one gives it the
 * source's mtime too); what the copy makes without a source — missing parent directories, heredoc files — and the
 * existing directories it adds entries to get the layer's epoch, where BuildKit leaves the copy's wall-clock time,
 * which would make no two builds' layers alike. Directories get theirs when the copy finishes, since adding an entry
 * to a directory changes its mtime.
 *
 * Times are kept to the microsecond on disk (what a later RUN sees, as in BuildKit) and as whole seconds in a layer's
 * tar (as containerd's and BuildKit's differs write them), clamped to what a ustar header can hold.
 */
import { lstatSync, lutimesSync, readdirSync } from "node:fs";
import path from "node:path";

/** The largest mtime (seconds) a ustar header holds: 11 octal digits. */
export const MAX_TAR_MTIME_S = 0o77777777777;

/** An mtime (ms since the epoch) as a copy writes it: whole microseconds, within [0, the largest ustar mtime]. */
export function mtimeUs(ms: number): number {
  if (!Number.isFinite(ms) || ms <= 0) return 0;
  return Math.min(Math.round(ms * 1000), MAX_TAR_MTIME_S * 1_000_000);
}

/** Sets the atime and mtime of `hostPath` itself (a final symlink is not followed) to `us` microseconds. */
export function setTimeUs(hostPath: string, us: number): void {
  const s = us / 1_000_000;
  lutimesSync(hostPath, s, s);
}

/** The mtimes a copy gave directories (image paths → µs), applied when it finishes. */
export class DirTimes {
  readonly #times = new Map<string, number>();

  set(imagePath: string, mtimeMs: number): void {
    this.#times.set(imagePath, mtimeUs(mtimeMs));
  }

  get(imagePath: string): number | undefined {
    return this.#times.get(imagePath);
  }

  paths(): IterableIterator<string> {
    return this.#times.keys();
  }

  /** Forgets `imagePath` and everything below it (the directory there was removed). */
  forget(imagePath: string): void {
    if (this.#times.size === 0) return;
    const below = imagePath === "/" ? "/" : imagePath + "/";
    for (const k of [...this.#times.keys()]) if (k === imagePath || k.startsWith(below)) this.#times.delete(k);
  }
}

/**
 * Gives every directory in the overlay upper dir `upper` (image path = its path below `upper`) its recorded time,
 * else `defaultUs`, and every recorded directory of the merged view that is not in `upper` yet its recorded time. Writes
 * go through `root` (the mounted merged dir, so a lower directory is copied up first) or, without one, into `upper`.
 * The root directory itself is no entry of a layer and is left alone.
 */
export function applyDirTimes(upper: string, times: DirTimes, defaultUs: number, root?: string): void {
  const host = (p: string) => path.join(root ?? upper, p);
  const seen = new Set<string>();
  const walk = (rel: string): void => {
    for (const d of readdirSync(path.join(upper, rel), { withFileTypes: true })) {
      if (!d.isDirectory()) continue;
      const child = `${rel}/${d.name}`;
      seen.add(child);
      walk(child);
      setTimeUs(host(child), times.get(child) ?? defaultUs);
    }
  };
  walk("");
  for (const p of times.paths()) {
    if (p === "/" || seen.has(p)) continue;
    let isDir = false;
    try {
      isDir = lstatSync(host(p)).isDirectory();
    } catch {
      // removed since
    }
    if (isDir) setTimeUs(host(p), times.get(p)!);
  }
}
