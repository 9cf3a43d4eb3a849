/**
 * Input trees: the service's local copies of a request's input directories and files, materialised from the blob
 * store so the engine can walk and copy them exactly as it would a client's files. A tree is named by the digest
 * of its entry list (paths, types, modes, owners, content digests, link targets, mtimes) and kept under
 * `<store root>/service/trees/<hex>/` for reuse: an unchanged context costs nothing on the next build, and its
 * files keep their stat, so the engine's stat cache answers without re-reading them.
 *
 * Files are copied from content-verified blobs and given the entry's mode and owner (so the step keys the server
 * computes equal the keys a local build of the same files computes) and mtime (which a copy keeps); trees are built in a temp dir, checked, and
 * renamed into place, so a tree that exists is complete. Unused trees are evicted least-recently-used first.
 */
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { StrataError } from "../errors.js";
import { mtimeUs, setTimeUs } from "../layer/copy-times.js";
import type { BlobStore, WorkSpace } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import type { WireEntry } from "./wire/schema.js";

/** A tree could not be materialised or does not match its entries. */
export class InputTreeError extends StrataError {
  override readonly code = "INPUT_TREE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InputTreeError";
  }
}

export interface TreeLease {
  /** The tree's directory (read-only by convention). */
  readonly dir: string;
  /** Allows eviction again; call once the build that uses the tree is done. */
  release(): void;
}

interface Tree {
  refs: number;
  lastUsed: number;
  ready?: Promise<string>;
}

const FILE_CONCURRENCY = 16;

/**
 * The name of a tree: sha256 over its sorted entries, and the store scope (a tenant's) it belongs to: each tenant
 * gets trees of its own (an unscoped one keeps the names trees always had).
 */
export function treeDigest(entries: readonly WireEntry[], scope?: string): string {
  const h = createHash("sha256").update("strata-tree/1\n");
  if (scope !== undefined) h.update(`scope ${scope}\n`);
  return h.update(JSON.stringify(entries)).digest("hex");
}

/** Where a build gets its input trees: the service's trees, seen from one scope. */
export interface TreeSource {
  acquire(entries: readonly WireEntry[]): Promise<TreeLease>;
}

export class InputTrees {
  readonly root: string;
  readonly #trees = new Map<string, Tree>();
  readonly #maxTrees: number;

  private constructor(
    private readonly store: BlobStore & WorkSpace,
    root: string,
    maxTrees: number,
  ) {
    this.root = root;
    this.#maxTrees = maxTrees;
  }

  /** Opens the tree cache of `store`, adopting trees a previous server left (they are complete by construction). */
  static async open(store: BlobStore & WorkSpace, opts: { maxTrees?: number } = {}): Promise<InputTrees> {
    const root = store.layout.serviceTreesDir;
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    await fsp.chmod(path.dirname(root), 0o700);
    await fsp.chmod(root, 0o700);
    const trees = new InputTrees(store, root, opts.maxTrees ?? 256);
    for (const name of await fsp.readdir(root)) {
      if (!/^[0-9a-f]{64}$/.test(name)) {
        // Left by an eviction that was interrupted.
        if (name.includes(".evicted-"))
          await fsp.rm(path.join(root, name), { recursive: true, force: true }).catch(() => undefined);
        continue;
      }
      const st = await fsp.stat(path.join(root, name)).catch(() => undefined);
      if (st?.isDirectory())
        trees.#trees.set(name, { refs: 0, lastUsed: st.mtimeMs, ready: Promise.resolve(path.join(root, name)) });
    }
    await trees.#evict();
    return trees;
  }

  /** Number of trees known (for tests). */
  get size(): number {
    return this.#trees.size;
  }

  /** The trees of one store scope (a tenant's; undefined: unscoped). */
  forScope(scope: string | undefined): TreeSource {
    return { acquire: (entries) => this.acquire(entries, scope) };
  }

  /** The directory holding `entries` (sorted, validated) for `scope`, materialising it if needed. */
  async acquire(entries: readonly WireEntry[], scope?: string): Promise<TreeLease> {
    const id = treeDigest(entries, scope);
    let t = this.#trees.get(id);
    if (!t) {
      t = { refs: 0, lastUsed: Date.now() };
      this.#trees.set(id, t);
    }
    const tree = t;
    tree.refs++;
    tree.lastUsed = Date.now();
    try {
      if (!tree.ready) {
        const ready = this.#materialise(id, entries);
        tree.ready = ready;
        ready.catch(() => {
          if (tree.ready === ready) tree.ready = undefined;
        });
      }
      const dir = await tree.ready;
      let released = false;
      return {
        dir,
        release: () => {
          if (released) return;
          released = true;
          tree.refs--;
          tree.lastUsed = Date.now();
          void this.#evict();
        },
      };
    } catch (e) {
      tree.refs--;
      if (tree.refs === 0 && !tree.ready) this.#trees.delete(id);
      throw e;
    }
  }

  async #materialise(id: string, entries: readonly WireEntry[]): Promise<string> {
    const final = path.join(this.root, id);
    if (
      await fsp.lstat(final).then(
        (s) => s.isDirectory(),
        () => false,
      )
    )
      return final;
    const tmp = await this.store.tempDir("ctx");
    await fsp.chmod(tmp, 0o700);
    try {
      const dirs = entries.filter((e) => e.type === "dir");
      for (const e of dirs) await fsp.mkdir(path.join(tmp, e.path), { mode: 0o700 });
      const others = entries.filter((e) => e.type !== "dir");
      let next = 0;
      const worker = async () => {
        while (next < others.length) {
          const e = others[next++]!;
          const to = path.join(tmp, e.path);
          if (e.type === "symlink") {
            await fsp.symlink(e.target!, to);
            await fsp.lchown(to, e.uid, e.gid);
          } else {
            await fsp.copyFile(await this.store.blobPath(e.digest! as Digest), to);
            // chown first: it clears setuid/setgid bits, which the chmod then sets.
            await fsp.chown(to, e.uid, e.gid);
            await fsp.chmod(to, e.mode);
          }
          setTimeUs(to, mtimeUs(e.mtimeMs ?? 0)); // the client's mtime, which a copy keeps
        }
      };
      await Promise.all(Array.from({ length: Math.min(FILE_CONCURRENCY, others.length) }, worker));
      for (const e of [...dirs].reverse()) {
        const to = path.join(tmp, e.path);
        await fsp.chown(to, e.uid, e.gid);
        await fsp.chmod(to, e.mode);
        setTimeUs(to, mtimeUs(e.mtimeMs ?? 0)); // after its entries were made, which changed it
      }
      await verifyTree(tmp, entries);
      try {
        await fsp.rename(tmp, final);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        // Another server sharing this store finished the same tree first: identical content, use theirs.
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
        await fsp.rm(tmp, { recursive: true, force: true });
      }
      return final;
    } catch (e) {
      await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      if (e instanceof StrataError) throw e;
      throw new InputTreeError(
        `could not materialise an input tree from the blob store: ${e instanceof Error ? e.message : String(e)}`,
        { cause: e },
      );
    }
  }

  /** Removes least-recently-used trees nobody is using while there are more than the limit. */
  async #evict(): Promise<void> {
    while (this.#trees.size > this.#maxTrees) {
      let victim: [string, Tree] | undefined;
      for (const entry of this.#trees) {
        if (entry[1].refs === 0 && (!victim || entry[1].lastUsed < victim[1].lastUsed)) victim = entry;
      }
      if (!victim) return;
      this.#trees.delete(victim[0]);
      const dir = path.join(this.root, victim[0]);
      const doomed = `${dir}.evicted-${process.pid}-${Date.now()}`;
      if (
        await fsp.rename(dir, doomed).then(
          () => true,
          () => false,
        )
      )
        await fsp.rm(doomed, { recursive: true, force: true }).catch(() => undefined);
    }
  }
}

/** Checks a materialised tree has each entry's type, mode, owner and size (what the engine's walk will see). */
async function verifyTree(dir: string, entries: readonly WireEntry[]): Promise<void> {
  for (const e of entries) {
    const st = await fsp.lstat(path.join(dir, e.path));
    const type = st.isDirectory() ? "dir" : st.isFile() ? "file" : st.isSymbolicLink() ? "symlink" : "other";
    const mode = st.mode & 0o7777;
    const bad =
      type !== e.type
        ? `is a ${type}, not a ${e.type}`
        : e.type !== "symlink" && mode !== e.mode
          ? `has mode ${mode.toString(8)}, not ${e.mode.toString(8)}`
          : st.uid !== e.uid || st.gid !== e.gid
            ? `is owned by ${st.uid}:${st.gid}, not ${e.uid}:${e.gid}`
            : e.type === "file" && st.size !== e.size
              ? `has ${st.size} bytes, but the request says ${e.size}`
              : undefined;
    if (bad)
      throw new InputTreeError(`input entry ${JSON.stringify(e.path)} ${bad} after materialising it on the server`);
  }
}
