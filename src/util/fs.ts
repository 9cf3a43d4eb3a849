/** Small filesystem helpers: atomic writes, unique temp names, existence checks. */
import { randomBytes } from "node:crypto";
import { lstatSync, promises as fsp, type Stats } from "node:fs";
import path from "node:path";

export function uniqueSuffix(): string {
  return `${process.pid}-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
}

/** Writes `data` to `file` atomically: a temp file in the same directory, fsync'd, then renamed over. */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${uniqueSuffix()}`;
  const fh = await fsp.open(tmp, "w", 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

export async function readJson<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  return JSON.parse(text) as T;
}

/** True when a process with this pid is alive (signal 0 probe). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** lstat that answers undefined instead of throwing when the path does not exist (or cannot be read). */
export function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}
