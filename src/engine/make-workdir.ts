/** Dockerfile WORKDIR's side effect on the filesystem: the directory it names, made inside the image. */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { InvalidDefinitionError } from "../errors.js";
import { lexicalImagePath, secureJoin } from "../layer/secure-join.js";
import { resolveChown } from "./chown.js";

/** Dockerfile WORKDIR: creates the directory (and missing parents) if it does not exist, owned by USER if set. */
export async function makeWorkdir(rootfs: string, dir: string, user: string | undefined, where: string): Promise<void> {
  // `..` is resolved first (and stops at `/`), so `/a/../b` makes only /b; each component is then resolved in the image.
  const parts = lexicalImagePath(dir).split("/").filter(Boolean);
  let cur = "/";
  let owner: { uid: number; gid: number } | undefined;
  for (const p of parts) {
    cur = path.posix.join(cur, p);
    const h = secureJoin(rootfs, cur);
    const st = await fsp.lstat(h).catch(() => undefined);
    if (st?.isDirectory()) continue;
    if (st) throw new InvalidDefinitionError(`${where}: WORKDIR ${dir}: ${cur} exists and is not a directory`);
    owner ??= user ? resolveChown(rootfs, user, "USER") : { uid: 0, gid: 0 };
    await fsp.mkdir(h, { mode: 0o755 });
    await fsp.chmod(h, 0o755);
    await fsp.lchown(h, owner.uid, owner.gid);
  }
}
