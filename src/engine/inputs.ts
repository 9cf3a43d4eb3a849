/** Resolves a step's local inputs: walks and hashes them into key inputs, and materialises them for the sandbox. */
import { chmodSync, chownSync, copyFileSync, lchownSync, lstatSync, mkdirSync, promises as fsp, rmSync, symlinkSync, type Stats } from "node:fs";
import path from "node:path";
import { walkContext, statContextFile, type ContextEntry, type StatCache } from "../context/walk.js";
import { LocalPathError } from "../errors.js";
import { PatternMatcher } from "../ignore/pattern-matcher.js";
import type { FileInput } from "../keys/step-key.js";
import type { StepInput } from "../plan/step.js";
import { secureJoin } from "../layer/secure-join.js";
import { sha256Bytes } from "../util/digest.js";

/** An input with its hashed entries. */
export interface ResolvedInput {
  input: StepInput;
  entries: ContextEntry[];
}

export async function resolveInput(input: StepInput, statCache?: StatCache): Promise<ResolvedInput> {
  switch (input.kind) {
    case "dir": {
      const st = await fsp.stat(input.localPath).catch(() => undefined);
      if (!st) throw new LocalPathError(input.localPath, `local directory ${input.localPath} does not exist`);
      if (!st.isDirectory()) throw new LocalPathError(input.localPath, `${input.localPath} is not a directory (use addLocalFile for files)`);
      const ignore = input.ignore.length ? PatternMatcher.parse(input.ignore) : undefined;
      return { input, entries: await walkContext(input.localPath, { ignore, statCache }) };
    }
    case "file": {
      const st = await fsp.stat(input.localPath).catch(() => undefined);
      if (!st) throw new LocalPathError(input.localPath, `local file ${input.localPath} does not exist`);
      if (!st.isFile()) throw new LocalPathError(input.localPath, `${input.localPath} is not a regular file (use addLocalDir for directories)`);
      return { input, entries: [await statContextFile(input.localPath, { statCache })] };
    }
    case "inline":
      return {
        input,
        entries: [
          { relPath: input.name, type: "file", mode: input.mode, uid: 0, gid: 0, size: Buffer.byteLength(input.content), sha256: sha256Bytes(input.content), absPath: "" },
        ],
      };
  }
}

/** The key inputs of resolved inputs: `<input name>/<relPath>` with type, mode, owner and content digest. */
export function fileInputs(resolved: readonly ResolvedInput[]): FileInput[] {
  const out: FileInput[] = [];
  for (const r of resolved) {
    for (const e of r.entries) {
      out.push({ path: `${r.input.name}/${e.relPath}`, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, digest: e.sha256 });
    }
  }
  return out;
}

/**
 * Copies a resolved input to `dest` inside a mounted root filesystem (`rootfs`), as Docker's COPY does: a
 * directory's contents go into `dest`; a file becomes `dest`. Copied files are owned by root (uid/gid 0), keep
 * their mode, and intermediate directories are created 0755.
 */
export async function copyInput(r: ResolvedInput, rootfs: string, dest: string): Promise<void> {
  // Symlinks in the image resolve inside the image (an absolute link must never lead to the host's files).
  const target = secureJoin(rootfs, dest);
  if (r.input.kind === "inline") {
    await fsp.mkdir(path.dirname(target), { recursive: true });
    await fsp.writeFile(target, r.input.content, { mode: r.input.mode });
    await fsp.chmod(target, r.input.mode);
    return;
  }
  if (r.input.kind === "file") {
    const e = r.entries[0]!;
    await fsp.mkdir(path.dirname(target), { recursive: true });
    copyEntry(e, target);
    return;
  }
  await fsp.mkdir(target, { recursive: true });
  for (const e of r.entries) copyEntry(e, path.join(target, e.relPath));
}

/**
 * Copies one entry. Synchronous on purpose: per-file async fs calls cost several times the syscall itself, and a
 * COPY of a few thousand small files is dominated by that overhead.
 */
function copyEntry(e: ContextEntry, to: string): void {
  const existing = lstatOrUndefined(to);
  if (e.type === "dir") {
    if (existing && !existing.isDirectory()) rmSync(to, { recursive: true, force: true });
    if (!existing || !existing.isDirectory()) mkdirSync(to, { mode: e.mode });
    chmodSync(to, e.mode);
    lchownSync(to, 0, 0);
    return;
  }
  if (existing) rmSync(to, { recursive: true, force: true });
  if (e.type === "symlink") {
    symlinkSync(e.linkTarget ?? "", to);
    lchownSync(to, 0, 0);
    return;
  }
  copyFileSync(e.absPath, to);
  // The content must be what was hashed into the key; a file edited mid-build is an error, not a silent mismatch.
  const st = lstatSync(to);
  if (e.size !== st.size) throw new LocalPathError(e.absPath, `${e.absPath} changed while the build was reading it; run the build again`);
  if (st.uid !== 0 || st.gid !== 0) chownSync(to, 0, 0);
  if ((st.mode & 0o7777) !== e.mode) chmodSync(to, e.mode);
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}
