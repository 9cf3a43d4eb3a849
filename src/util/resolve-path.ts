/**
 * Symlink resolution inside a root, shared by every view of an image filesystem (a mounted root, layer dirs read by
 * overlay rules, an eStargz image's merged TOCs): `..` stops at the root, a symlink's target is followed relative to
 * the root (an absolute one restarts at it), the last component only with `followLast`.
 *
 * `linkAt(parts)` looks at the root-relative path `parts` and returns its symlink target, or undefined when it is not
 * a symlink (or does not exist: missing components are kept, for callers that create them). It sees every path the
 * walk looks at, in order. `tooMany` makes the error for a symlink loop.
 */
const MAX_LINKS = 40;

export function resolveInRoot(
  unsafePath: string,
  followLast: boolean,
  linkAt: (parts: readonly string[]) => string | undefined,
  tooMany: () => Error,
): string[] {
  const pending = unsafePath.split("/").filter((p) => p !== "" && p !== ".");
  const resolved: string[] = [];
  let links = 0;
  while (pending.length) {
    const part = pending.shift()!;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const target = linkAt([...resolved, part]);
    if (target === undefined || (!followLast && pending.length === 0)) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_LINKS) throw tooMany();
    if (target.startsWith("/")) resolved.length = 0;
    pending.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
  }
  return resolved;
}
