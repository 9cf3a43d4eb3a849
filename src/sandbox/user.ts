/** Resolves a Docker USER string (`name`, `uid`, `name:group`, `uid:gid`) against a root filesystem's passwd/group. */
import { promises as fsp } from "node:fs";
import { InvalidDefinitionError } from "../errors.js";
import { secureJoin } from "../layer/secure-join.js";

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

/** Lines of an image file split at `:`; the image path is resolved inside `rootfs` (a symlink cannot point at the host's). */
async function readLines(rootfs: string, imagePath: string): Promise<string[][]> {
  try {
    return (await fsp.readFile(secureJoin(rootfs, imagePath), "utf8"))
      .split("\n")
      .filter((l) => l && !l.startsWith("#"))
      .map((l) => l.split(":"));
  } catch {
    return [];
  }
}

export async function resolveUser(rootfs: string, spec: string | undefined): Promise<ResolvedUser> {
  // No USER means uid 0 (Docker semantics), whether or not the image has an /etc/passwd.
  const user = spec && spec !== "" ? spec : "0";
  const [u, g] = user.split(":", 2) as [string, string | undefined];
  const passwd = await readLines(rootfs, "/etc/passwd");
  const groups = await readLines(rootfs, "/etc/group");
  let uid: number;
  let gid: number | undefined;
  let home = user === "0" ? "/root" : "/";
  let name: string | undefined;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    const row = passwd.find((r) => Number(r[2]) === uid);
    if (row) {
      gid = Number(row[3]);
      home = row[5] ?? "/";
      name = row[0];
    }
  } else {
    const row = passwd.find((r) => r[0] === u);
    if (!row)
      throw new InvalidDefinitionError(
        `user "${u}" is not in the image's /etc/passwd; create it in an earlier step or use a numeric uid`,
      );
    uid = Number(row[2]);
    gid = Number(row[3]);
    home = row[5] ?? "/";
    name = u;
  }
  if (g !== undefined) {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const row = groups.find((r) => r[0] === g);
      if (!row) throw new InvalidDefinitionError(`group "${g}" is not in the image's /etc/group`);
      gid = Number(row[2]);
    }
  }
  const primary = gid ?? 0;
  const supplementary =
    name && g === undefined
      ? groups.filter((r) => (r[3] ?? "").split(",").includes(name!)).map((r) => Number(r[2]))
      : [];
  // The primary group is always in the list, first (CVE-2023-25173, as containerd and BuildKit do): `id` then shows
  // `groups=0(root),10(wheel)` for root, and a process cannot drop its primary group with setgroups.
  return { uid, gid: primary, additionalGids: [...new Set([primary, ...supplementary])], home };
}
