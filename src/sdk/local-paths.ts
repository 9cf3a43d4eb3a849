/**
 * Local paths as Image methods take them: `~` expands to the home directory (as Modal's `Path.expanduser` does), and
 * an `ignore` option (patterns, or a predicate as Modal's callable `ignore`) becomes the ignore patterns a plan holds.
 * A predicate is evaluated here, over the directory's paths, and the paths it leaves out become exact patterns: a
 * plan is plain data (sent to a build service, keyed), and a function's source text would not capture what its
 * closure reads, so what is keyed is the function's result, not its text.
 */
import { readdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { InvalidDefinitionError } from "../errors.js";
import type { IgnoreSpec } from "./params.js";

/** `p` with a leading `~` (alone or before `/`) replaced by the home directory; other paths unchanged. */
export function expandHome(p: string): string {
  if (p === "~") return os.homedir();
  if (p.startsWith("~/")) return path.join(os.homedir(), p.slice(2));
  return p;
}

/** A local path argument, `~` expanded, made absolute (against the current directory). */
export function localPath(method: string, p: unknown, what = "path"): string {
  if (typeof p !== "string" || p === "") throw new InvalidDefinitionError(`${method}: expected a local ${what}`);
  return path.resolve(expandHome(p));
}

/** A relative path as an ignore pattern matching exactly it (glob characters, `!` and spaces escaped). */
export function exactPattern(rel: string): string {
  return rel.replace(/[\\*?[\]!^\s]/g, (c) => `\\${c}`);
}

/**
 * The ignore patterns an `ignore` option stands for in `dir`: patterns as given (copied), or, for a predicate, one
 * exact pattern per path it leaves out (see the module comment), sorted so the key does not depend on the walk order.
 * Undefined stays undefined (the method's default applies).
 */
export function ignorePatterns(method: string, dir: string, ignore: IgnoreSpec | undefined): string[] | undefined {
  if (ignore === undefined) return undefined;
  if (Array.isArray(ignore)) {
    if (ignore.some((p) => typeof p !== "string"))
      throw new InvalidDefinitionError(`${method}: ignore must be a list of patterns (strings) or a function`);
    return [...ignore];
  }
  if (typeof ignore !== "function")
    throw new InvalidDefinitionError(`${method}: ignore must be a list of patterns (strings) or a function`);
  const out: string[] = [];
  const walk = (rel: string): void => {
    const abs = rel ? path.join(dir, rel) : dir;
    let entries: import("node:fs").Dirent[];
    try {
      entries = readdirSync(abs, { withFileTypes: true });
    } catch (e) {
      throw new InvalidDefinitionError(
        `${method}: cannot read ${abs} to apply the ignore function: ${(e as Error).message}`,
        { cause: e },
      );
    }
    for (const ent of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = rel ? `${rel}/${ent.name}` : ent.name;
      let leaveOut: unknown;
      try {
        leaveOut = ignore(p);
      } catch (e) {
        throw new InvalidDefinitionError(`${method}: the ignore function threw for "${p}": ${(e as Error).message}`, {
          cause: e,
        });
      }
      if (leaveOut) out.push(exactPattern(p));
      else if (ent.isDirectory()) walk(p);
    }
  };
  walk("");
  return out;
}
