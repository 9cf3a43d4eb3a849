/**
 * Image paths as a definition writes them, made safe to key and to send: an absolute path in which some `..` would
 * climb above `/` is cleaned lexically, as Docker resolves it (`/../../x` → `/x`; a trailing `/` is kept, since it
 * makes a COPY destination a directory). Every other path is kept exactly as written, so its cache key never changes.
 * Relative paths are kept too: they are resolved against the working directory when the step runs, where `..` stops
 * at `/` as well. Used when a plan is compiled (`Image.plan`) and when the build service decodes a request, so the same
 * definition has the same keys locally and remotely.
 */
import { resolveInRoot } from "../util/resolve-path.js";
import type { Instruction, RunMount } from "./instructions.js";

/** Whether some `..` segment of `p` would climb above the start of the path. */
function climbsAboveRoot(p: string): boolean {
  let depth = 0;
  for (const seg of p.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg !== "..") depth++;
    else if (depth-- === 0) return true;
  }
  return false;
}

/** `p` with its `..` kept below `/` (see the module comment); unchanged when no `..` climbs above `/`. */
export function clampImagePath(p: string): string {
  if (!p.startsWith("/") || !climbsAboveRoot(p)) return p;
  const clean =
    "/" +
    resolveInRoot(
      p,
      false,
      () => undefined,
      () => new Error("unreachable: nothing is a symlink here"),
    ).join("/");
  const namedDir = p.endsWith("/") || p.endsWith("/.") || p.endsWith("/..");
  return namedDir && clean !== "/" ? clean + "/" : clean;
}

function clampMount(m: RunMount): RunMount {
  if (m.target === undefined) return m;
  const target = clampImagePath(m.target);
  return target === m.target ? m : { ...m, target };
}

/** The instruction with its image paths clamped (WORKDIR, COPY/ADD destination, RUN mount targets); the same object when nothing changes. */
export function clampInstructionPaths(ins: Instruction): Instruction {
  switch (ins.op) {
    case "WORKDIR": {
      const p = clampImagePath(ins.path);
      return p === ins.path ? ins : { ...ins, path: p };
    }
    case "COPY":
    case "ADD": {
      const dest = clampImagePath(ins.dest);
      return dest === ins.dest ? ins : { ...ins, dest };
    }
    case "RUN": {
      if (!ins.mounts) return ins;
      const mounts = ins.mounts.map(clampMount);
      return mounts.every((m, i) => m === ins.mounts![i]) ? ins : { ...ins, mounts };
    }
    default:
      return ins;
  }
}
