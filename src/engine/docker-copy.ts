/**
 * Executes a Dockerfile COPY/ADD into a mounted root filesystem, with BuildKit's rules (`fsutil/copy`):
 * - dest is relative to WORKDIR; it is a directory when it ends with `/` (or `/.`, or is `.`), when there are several
 *   sources, or when it already is one; missing parents are created (0755 or the `--chmod` mode, owned by `--chown`
 *   or root).
 * - a matched directory's contents are copied into dest (dest itself is created with the directory's mode); a file goes
 *   to dest, or into it under its own name; symlinks inside copied directories stay symlinks.
 * - owners: `--chown` for everything copied, else root for context files, URLs and heredocs and the source's owner for
 *   files from a stage or image. Modes: `--chmod` for every copied file and directory, else the source's.
 * - mtimes: a copied file, symlink or directory keeps its source's (a directory copied onto an existing one gives it
 *   the source's too), an archive's entries keep the archive's, a URL's file gets its Last-Modified; what the copy
 *   makes without a source (missing parents, heredocs) gets the layer's epoch (`src/layer/copy-times.ts`).
 * - ADD: a local file whose content is an archive is extracted into dest (unless `--unpack=false`); a downloaded one
 *   only with `--unpack=true` (Dockerfile 1.17).
 * Destination paths resolve symlinks already in the image inside the image; a final symlink is replaced, never
 * written through.
 */
import path from "node:path";
import type { ContextEntry } from "../context/walk.js";
import type { ResolvedInput } from "./inputs.js";
import { InvalidDefinitionError } from "../errors.js";
import { resolveInImage, type CopyTarget, type ImageReader } from "../layer/copy-target.js";
import type { Instruction } from "../plan/instructions.js";
import { archiveKind, extractArchive } from "./archive.js";
import { chmodFunction, resolveChown, type Owner } from "./chown.js";

type CopyIns = Extract<Instruction, { op: "COPY" | "ADD" }>;

export interface DockerCopyArgs {
  /** The image filesystem written to: a mounted root, or an upper dir over the parent's layers. */
  target: CopyTarget;
  /** Where `--chown` names are looked up (/etc/passwd, /etc/group): the target unless given (`--link` copies onto an empty filesystem). */
  names?: ImageReader;
  ins: CopyIns;
  /** the step inputs named by `ins.source` then `ins.inputs`, in order */
  inputs: ResolvedInput[];
  /** the image's WORKDIR before this instruction */
  workdir: string;
  /** prefix for error messages (the step's description, which names the Dockerfile line) */
  where: string;
}

/** Absolute destination in the image, and whether it is named as a directory. */
export function copyDestination(dest: string, workdir: string, sourceCount: number): { abs: string; dir: boolean } {
  const joined = dest.startsWith("/") ? dest : path.posix.join(workdir || "/", dest);
  const abs = path.posix.normalize(joined);
  const dir = dest.endsWith("/") || dest === "." || dest.endsWith("/.") || sourceCount > 1;
  return { abs: abs === "/" ? "/" : abs.replace(/\/+$/, ""), dir };
}

/**
 * Whether `dockerCopy` of `ins` can write into an upper dir without a mount: everything except extracting an ADDed
 * archive, which needs a host directory.
 */
export function copyNeedsMount(ins: CopyIns, inputs: readonly ResolvedInput[]): boolean {
  return ins.op === "ADD" && inputs.some((r) => unpacks(ins, r));
}

/** Whether ADD extracts this input when it is an archive: local ones unless --unpack=false, URLs only with --unpack=true. */
function unpacks(ins: CopyIns, r: ResolvedInput): boolean {
  if (ins.op !== "ADD") return false;
  return r.input.kind === "select" ? ins.unpack !== false : r.input.kind === "url" && ins.unpack === true;
}

class Copier {
  readonly owner: Owner | undefined;
  readonly chmod: ((mode: number, isDir: boolean) => number) | undefined;
  constructor(
    readonly t: CopyTarget,
    readonly where: string,
    chown: string | undefined,
    chmod: string | undefined,
    names: ImageReader = t,
  ) {
    const read = (p: string) => names.readFile(p)?.toString("utf8");
    this.owner = chown !== undefined ? wrap(where, () => resolveChown(read, chown)) : undefined;
    this.chmod = chmod !== undefined ? wrap(where, () => chmodFunction(chmod)) : undefined;
  }

  /** An image path with its parents resolved inside the image; the last component not followed. */
  at(imagePath: string): string {
    return resolveInImage(this.t, imagePath);
  }

  /** `imagePath` with every component resolved (the directory it names, following a final symlink). */
  dir(imagePath: string): string {
    return resolveInImage(this.t, imagePath, true);
  }

  /**
   * Creates `imageDir` and its missing parents (0755, or the --chmod mode as BuildKit gives them; owned by --chown or
   * root). Returns its resolved path. Directories that already exist keep their mode.
   */
  mkdirp(imageDir: string): string {
    const parts = imageDir.split("/").filter(Boolean);
    let cur = "/";
    for (const p of parts) {
      cur = this.dir(path.posix.join(cur, p));
      const st = this.t.lstat(cur);
      if (st?.isDirectory()) continue;
      if (st) throw new InvalidDefinitionError(`${this.where}: cannot create directory ${cur}: a file is in the way`);
      // A symlink on the way can name directories that do not exist yet (/link → ../opt/target without /opt):
      // create those too, as BuildKit's MkdirAll through the resolved destination does. `cur` is resolved, so its
      // existing components are directories and this recursion only walks the missing ones.
      const parent = path.posix.dirname(cur);
      if (parent !== cur && !this.t.lstat(parent)) this.mkdirp(parent);
      this.t.mkdir(cur, this.modeOf(0o755, true), this.owner?.uid ?? 0, this.owner?.gid ?? 0);
    }
    return cur;
  }

  ownerOf(e: { uid: number; gid: number }, keepOwner: boolean): Owner {
    return this.owner ?? (keepOwner ? { uid: e.uid, gid: e.gid } : { uid: 0, gid: 0 });
  }

  modeOf(mode: number, isDir: boolean): number {
    return this.chmod ? this.chmod(mode, isDir) : mode;
  }

  /** Writes one entry at the resolved image path `to` (whose parent exists). `top`: dest of a directory copy (kept metadata if it exists). */
  put(e: ContextEntry, to: string, keepOwner: boolean, top = false): void {
    const existing = this.t.lstat(to);
    const own = this.ownerOf(e, keepOwner);
    if (e.type === "dir") {
      if (existing && !existing.isDirectory()) {
        throw new InvalidDefinitionError(
          `${this.where}: cannot copy directory ${e.relPath} onto ${to}, which is not a directory in the image`,
        );
      }
      if (!existing) this.t.mkdir(to, this.modeOf(e.mode, true), own.uid, own.gid);
      else if (!top) this.t.setMeta(to, this.modeOf(e.mode, true), own.uid, own.gid);
      this.t.setMtime(to, e.mtimeMs);
      return;
    }
    if (existing?.isDirectory()) {
      throw new InvalidDefinitionError(
        `${this.where}: cannot copy ${e.relPath} onto ${to}, which is a directory in the image`,
      );
    }
    if (existing) this.t.remove(to);
    if (e.type === "symlink") {
      this.t.symlink(to, e.linkTarget ?? "", own.uid, own.gid);
      this.t.setMtime(to, e.mtimeMs);
      return;
    }
    this.t.copyFile(to, e, this.modeOf(e.mode, false), own.uid, own.gid);
  }
}

function wrap<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof InvalidDefinitionError) throw new InvalidDefinitionError(`${where}: ${e.message}`);
    throw e;
  }
}

/** Entries of `r` belonging to the match at `rel` (the match itself first, then its subtree in path order). */
function entriesUnder(entries: readonly ContextEntry[], rel: string): ContextEntry[] {
  if (rel === "") return [...entries];
  const prefix = rel + "/";
  return entries.filter((e) => e.relPath === rel || e.relPath.startsWith(prefix));
}

export async function dockerCopy(a: DockerCopyArgs): Promise<void> {
  const { ins } = a;
  const sourceCount = (ins.sources ?? [ins.source]).length;
  const { abs: dest, dir: destNamedDir } = copyDestination(ins.dest, a.workdir, sourceCount);
  const c = new Copier(a.target, a.where, ins.chown, ins.chmod, a.names);
  let heredoc = 0;
  const heredocNames = (ins.sources ?? []).filter((s) => s.startsWith("<<")).map((s) => s.slice(2));

  for (const r of a.inputs) {
    const keepOwner = r.input.kind === "select" && r.input.root.kind !== "context";
    if (r.input.kind === "inline") {
      const name = heredocNames[heredoc++] ?? r.input.name.replace(/^<</, "");
      const e = r.entries[0]!;
      const to = fileTarget(c, dest, destNamedDir, name);
      const existing = a.target.lstat(to);
      if (existing?.isDirectory())
        throw new InvalidDefinitionError(`${a.where}: cannot write ${name} onto ${dest}, which is a directory`);
      if (existing) a.target.remove(to);
      const own = c.ownerOf(e, false);
      a.target.writeFile(to, r.input.content, c.modeOf(e.mode, false), own.uid, own.gid);
      continue;
    }
    for (const m of r.matches ?? []) {
      if (m.excluded) {
        // Nothing is copied, but the destination is prepared as for a copied source (BuildKit's fsutil copy makes the
        // target directory before the exclude patterns filter what goes in): dest for a directory or a destination
        // named as one, else dest's parent.
        if (m.type === "dir" || destNamedDir) ensureDir(c, dest);
        else c.mkdirp(path.posix.dirname(dest));
        continue;
      }
      const list = entriesUnder(r.entries, m.rel);
      if (m.type === "file") {
        const e = list.find((x) => x.relPath === m.rel) ?? list[0]!;
        const name = path.posix.basename(m.rel || e.relPath);
        if (unpacks(ins, r)) {
          const kind = await archiveKind(e.absPath);
          if (kind) {
            if (!a.target.hostDir)
              throw new InvalidDefinitionError(`${a.where}: internal: extracting an archive needs a mounted root`);
            const d = c.mkdirp(dest);
            const dirs = await extractArchive(e.absPath, kind, a.target.hostDir(d), c.owner);
            for (const x of dirs) a.target.setMtime(path.posix.join(d, x.rel), x.mtimeMs);
            continue;
          }
        }
        c.put(e, fileTarget(c, dest, destNamedDir, name), keepOwner);
        continue;
      }
      // A directory: its contents go into dest (kept parents for --parents). A destination named as a directory is made
      // (0755) before anything is copied into it, so the copied directory's own metadata does not replace its, as in
      // BuildKit; otherwise a new dest takes the source directory's mode, but is root's (or --chown's): BuildKit
      // creates the target directory as root and copies the source's contents into it (moby's
      // testBuildPreserveOwnership: `COPY --from=source /dir /dir` gives /dir 0:0 and keeps the owners below it).
      if (destNamedDir) c.mkdirp(dest);
      // dest resolves in full, a final symlink included (BuildKit's RootPath): the contents go where it points.
      const destExisting = a.target.lstat(c.dir(dest));
      if (destExisting && !destExisting.isDirectory()) {
        throw new InvalidDefinitionError(
          `${a.where}: cannot copy directory ${m.rel || "."} onto ${dest}, which is a file in the image`,
        );
      }
      c.mkdirp(path.posix.dirname(dest));
      const top = list.find((e) => e.relPath === m.rel);
      if (top) c.put(top, c.dir(dest), false, true);
      else if (!destExisting) c.mkdirp(dest);
      const prefix = m.rel === "" ? "" : m.rel + "/";
      const below = list
        .filter((e) => e.relPath !== m.rel)
        .sort((x, y) => Buffer.compare(Buffer.from(x.relPath), Buffer.from(y.relPath)));
      // Entries come parents first, so each parent is already resolved; remember them instead of resolving every path.
      const resolvedDirs = new Map<string, string>([["", c.dir(dest)]]);
      for (const e of below) {
        const sub = e.relPath.slice(prefix.length);
        const subParent = path.posix.dirname(sub) === "." ? "" : path.posix.dirname(sub);
        let parent = resolvedDirs.get(subParent);
        if (parent === undefined) {
          const imageParent = path.posix.join(dest, subParent);
          parent = ensureDir(c, imageParent);
          resolvedDirs.set(subParent, parent);
        }
        const to = path.posix.join(parent, path.posix.basename(sub));
        c.put(e, to, keepOwner);
        if (e.type === "dir") resolvedDirs.set(sub, to);
      }
    }
  }
}

/** The resolved directory `imageDir`, created (with missing parents) if absent. */
function ensureDir(c: Copier, imageDir: string): string {
  const d = c.dir(imageDir);
  if (!c.t.lstat(d)) return c.mkdirp(imageDir);
  return d;
}

/** Where a single file named `name` goes: into dest when dest is (named as, or already is) a directory, else dest. */
function fileTarget(c: Copier, dest: string, destNamedDir: boolean, name: string): string {
  if (destNamedDir) return path.posix.join(c.mkdirp(dest), name);
  const d = c.dir(dest);
  if (c.t.lstat(d)?.isDirectory()) return path.posix.join(d, name);
  c.mkdirp(path.posix.dirname(dest));
  return c.at(dest);
}
