/**
 * Where a RUN step's secret files live while it runs: a tmpfs of its own under /run, never in the store, so a scan of
 * the store (a backup, another tenant's step with a cache mount, a prune) never meets a secret value, and nothing of it
 * ever reaches a disk. Named like the runc containers (`strata-<builder pid>-…`), so `reapStaleSecretDirs` recognises
 * the ones a dead builder left.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { SandboxError } from "../errors.js";
import { pidAlive, uniqueSuffix } from "../util/fs.js";

/** The parent of every step's secrets tmpfs: 0700 root, only the builder (root) passes. */
export const SECRETS_ROOT = "/run/strata-secrets";

/** The largest a step's secret files may be together (they are small: tokens, keys, config files). */
const SECRETS_TMPFS_SIZE = "16m";

/** A step's secrets tmpfs: `dir`, 0700 root; `remove()` unmounts it (its pages are freed) and deletes the mount point. */
export interface SecretDir {
  dir: string;
  remove(): Promise<void>;
}

/**
 * Mounts a fresh tmpfs (0700 root, 16 MiB) at `SECRETS_ROOT/strata-<pid>-…` for one step's secret files. Never falls
 * back to a directory on disk: if the tmpfs cannot be mounted, the step does not run (a `SandboxError` naming `where`).
 */
export async function makeSecretDir(where: string): Promise<SecretDir> {
  await fsp.mkdir(SECRETS_ROOT, { recursive: true, mode: 0o700 });
  await fsp.chown(SECRETS_ROOT, 0, 0);
  await fsp.chmod(SECRETS_ROOT, 0o700);
  const dir = path.join(SECRETS_ROOT, `strata-${uniqueSuffix()}`);
  await fsp.mkdir(dir, { mode: 0o700 });
  const r = await execa("mount", ["-t", "tmpfs", "-o", `mode=0700,size=${SECRETS_TMPFS_SIZE}`, "tmpfs", dir], {
    reject: false,
  });
  if (r.exitCode !== 0) {
    await fsp.rmdir(dir).catch(() => undefined);
    throw new SandboxError(
      `${where}: could not mount the tmpfs that holds secret files (${r.stderr.trim() || r.message}); the step did not run`,
    );
  }
  return { dir, remove: () => removeSecretDir(dir) };
}

/** Unmounts a secrets tmpfs (lazily: a clone the sandbox still holds goes when it lets go) and removes its mount point. */
async function removeSecretDir(dir: string): Promise<void> {
  for (const m of mountsAt(dir, await fsp.readFile("/proc/self/mounts", "utf8")).reverse())
    await execa("umount", ["-l", m], { reject: false });
  // Unmounted, the mount point is an empty directory; rmdir (not rm -r) never deletes anything a failed unmount left.
  await fsp.rmdir(dir).catch(() => undefined);
}

/** The mount points at or below `dir` in a /proc/self/mounts text, shallowest first (pure). */
export function mountsAt(dir: string, procMounts: string): string[] {
  const root = dir.replace(/\/+$/, "");
  return procMounts
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .filter((m) => m === root || m.startsWith(`${root}/`))
    .sort();
}

/** Unmounts and removes the secrets tmpfs of every builder that died (kill -9, a crash) while its step ran. */
export async function reapStaleSecretDirs(): Promise<void> {
  for (const name of await fsp.readdir(SECRETS_ROOT).catch(() => [] as string[])) {
    const m = /^strata-(\d+)-/.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    await removeSecretDir(path.join(SECRETS_ROOT, name)).catch(() => undefined);
  }
}
