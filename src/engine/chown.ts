/**
 * `--chown=user[:group]` (and the owner of a WORKDIR a USER creates), resolved the way BuildKit's file operations do,
 * against the destination image's /etc/passwd and /etc/group: a numeric user is that uid, with the same number as gid
 * unless a group is given; a name is looked up (its primary group is the gid); a group name is looked up in
 * /etc/group. A name that is not there is an error.
 */
import { readFileSync } from "node:fs";
import { InvalidDefinitionError } from "../errors.js";
import { secureJoin } from "../layer/secure-join.js";

export interface Owner {
  uid: number;
  gid: number;
}

/** A root filesystem directory, or a reader of the image's files by image path. */
export type ImageFiles = string | ((imagePath: string) => string | undefined);

function rows(rootfs: ImageFiles, file: string): string[][] {
  try {
    const text = typeof rootfs === "string" ? readFileSync(secureJoin(rootfs, file), "utf8") : rootfs(file);
    return (text ?? "")
      .split("\n")
      .filter((l) => l && !l.startsWith("#"))
      .map((l) => l.split(":"));
  } catch {
    return [];
  }
}

const ID = /^\d+$/;

export function resolveChown(rootfs: ImageFiles, spec: string, what = "--chown"): Owner {
  const [user, group] = spec.split(":", 2) as [string, string | undefined];
  let uid: number;
  let gid: number;
  if (user === "") throw new InvalidDefinitionError(`${what}=${spec}: the user is empty`);
  if (ID.test(user)) {
    uid = Number(user);
    gid = uid;
  } else {
    const row = rows(rootfs, "/etc/passwd").find((r) => r[0] === user);
    if (!row)
      throw new InvalidDefinitionError(
        `${what}=${spec}: user ${JSON.stringify(user)} is not in the image's /etc/passwd (use a numeric uid, or create the user first)`,
      );
    uid = Number(row[2]);
    gid = Number(row[3]);
  }
  if (group !== undefined && group !== "") {
    if (ID.test(group)) gid = Number(group);
    else {
      const row = rows(rootfs, "/etc/group").find((r) => r[0] === group);
      if (!row)
        throw new InvalidDefinitionError(
          `${what}=${spec}: group ${JSON.stringify(group)} is not in the image's /etc/group (use a numeric gid, or create the group first)`,
        );
      gid = Number(row[2]);
    }
  }
  if (!Number.isSafeInteger(uid) || !Number.isSafeInteger(gid))
    throw new InvalidDefinitionError(`${what}=${spec}: the image's passwd/group entry is malformed`);
  return { uid, gid };
}

/**
 * A `--chmod` value as a function of an entry's current mode: octal (`755`, `0644`) sets the permission bits; symbolic
 * (`u=rwX,go=rX`, `+x`, `a-w`, …) applies each clause to the current bits (`X`: execute if a directory or already
 * executable by someone).
 */
export function chmodFunction(spec: string): (mode: number, isDir: boolean) => number {
  if (/^[0-7]{1,4}$/.test(spec)) {
    const m = parseInt(spec, 8);
    return () => m;
  }
  const clauses = spec.split(",").map((c) => {
    const m = /^([ugoa]*)([-+=])([rwxXst]*|[ugo])$/.exec(c);
    if (!m) throw new InvalidDefinitionError(`--chmod=${spec}: cannot parse ${JSON.stringify(c)}`);
    return { who: m[1] === "" ? "a" : m[1]!, op: m[2]!, perms: m[3]! };
  });
  return (mode: number, isDir: boolean) => {
    let cur = mode & 0o7777;
    for (const { who, op, perms } of clauses) {
      const u = who.includes("u") || who.includes("a");
      const g = who.includes("g") || who.includes("a");
      const o = who.includes("o") || who.includes("a");
      let bits = 0;
      const triple = (r: boolean, w: boolean, x: boolean) => (r ? 4 : 0) | (w ? 2 : 0) | (x ? 1 : 0);
      if (perms === "u" || perms === "g" || perms === "o") {
        const shift = perms === "u" ? 6 : perms === "g" ? 3 : 0;
        const t = (cur >> shift) & 7;
        bits = (u ? t << 6 : 0) | (g ? t << 3 : 0) | (o ? t : 0);
      } else {
        const x = perms.includes("x") || (perms.includes("X") && (isDir || (cur & 0o111) !== 0));
        const t = triple(perms.includes("r"), perms.includes("w"), x);
        bits = (u ? t << 6 : 0) | (g ? t << 3 : 0) | (o ? t : 0);
        if (perms.includes("s")) bits |= (u ? 0o4000 : 0) | (g ? 0o2000 : 0);
        if (perms.includes("t")) bits |= 0o1000;
      }
      const mask = (u ? 0o4700 : 0) | (g ? 0o2070 : 0) | (o ? 0o1007 : 0);
      if (op === "+") cur |= bits;
      else if (op === "-") cur &= ~bits;
      else cur = (cur & ~mask) | bits;
    }
    return cur;
  };
}
