/**
 * The mounts of a RUN step (`RUN --mount`, a definition's mounts): cache directories kept in the store, tmpfs, secret
 * files, builder tools and step inputs, each turned into a bind mount of the sandbox spec.
 */
import { createHash, randomUUID } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { InvalidDefinitionError, SandboxError } from "../errors.js";
import type { Instruction, RunMount } from "../plan/instructions.js";
import type { Step } from "../plan/step.js";
import type { BindMount } from "../sandbox/runtime-spec.js";
import { makeSecretDir } from "../sandbox/secret-dir.js";
import { DEFAULT_LIMITS } from "../sandbox/step-limits.js";
import { secureJoin } from "../layer/secure-join.js";
import { lstatOrUndefined } from "../util/fs.js";
import type { BuildStore } from "../store/store.js";
import type { ResolvedInput } from "./inputs.js";
import { placeNode, placeUv } from "./tools.js";

/** The largest `RUN --mount=type=tmpfs` (and its size when it names none): the default step memory limit. */
export const MAX_TMPFS_BYTES = DEFAULT_LIMITS.memoryBytes;

/** What a RUN's mounts are made from. */
export interface RunMountsRequest {
  store: BuildStore;
  index: number;
  step: Step;
  /** The step's secret values, by name. */
  secrets: Readonly<Record<string, string>>;
  ins: Extract<Instruction, { op: "RUN" }>;
  /** The step's root (the merged overlay). */
  rootfs: string;
  /** The step's work dir (a store temp dir): `type=tmpfs` mount points (never secrets: see secret-dir.ts). */
  work: string;
  /** Where inputs a RUN mounts are materialised, outside the rootfs. */
  inputFiles: string;
  inputsByName: Map<string, ResolvedInput>;
  /** A mount target as an absolute image path (relative to the working directory). */
  target: (t: string) => string;
  argv: string[];
  /** Where each mount's undo goes; the caller runs them in reverse after the RUN, also when this fails half-way. */
  cleanups: (() => Promise<void>)[];
}

export interface RunMounts {
  mounts: BindMount[];
  /** Secrets a mount puts in the environment (`env=`), by variable name. */
  secretEnv: Map<string, string>;
  /** The command, changed when a builder tool runs it (the builder's node). */
  argv: string[];
}

/** Makes the RUN's mounts (see {@link RunMountsRequest}). */
export async function runMounts(req: RunMountsRequest): Promise<RunMounts> {
  const { store, index, step, secrets, ins, rootfs, work, inputFiles, inputsByName, target, cleanups } = req;
  let argv = req.argv;
  const mounts: BindMount[] = [];
  const secretEnv = new Map<string, string>();
  let secretDir: string | undefined;
  for (const m of ins.mounts ?? []) {
    if (m.type === "cache") {
      const seed = m.seed === undefined ? undefined : inputsByName.get(m.seed);
      if (m.seed !== undefined && !seed)
        throw new InvalidDefinitionError(
          `step ${index}: RUN cache mount seed "${m.seed}" is not an input of this step`,
        );
      const dir = await cacheMount(store, m, cleanups, seed);
      mounts.push({
        source: m.source === undefined ? dir : cacheSubPath(dir, m, step.description),
        destination: target(m.target),
        readonly: m.readonly ?? false,
      });
      continue;
    }
    if (m.type === "tmpfs") {
      const dir = path.join(work, `tmpfs-${mounts.length}`);
      await fsp.mkdir(dir, { recursive: true });
      // Capped (a tmpfs without a size may grow to half the host's memory); its pages also count against the
      // step's memory limit, since the step writes them.
      const size = Math.min(m.size ?? MAX_TMPFS_BYTES, MAX_TMPFS_BYTES);
      const r = await execa("mount", ["-t", "tmpfs", "-o", `mode=1777,size=${size}`, "tmpfs", dir], {
        reject: false,
      });
      if (r.exitCode !== 0)
        throw new InvalidDefinitionError(`${step.description}: could not mount a tmpfs at ${m.target}: ${r.stderr}`);
      cleanups.push(async () => void (await execa("umount", ["-l", dir], { reject: false })));
      mounts.push({ source: dir, destination: target(m.target), readonly: false });
      continue;
    }
    if (m.type === "secret") {
      const value = Object.hasOwn(secrets, m.id) ? secrets[m.id] : undefined;
      if (value === undefined) {
        if (m.required)
          throw new InvalidDefinitionError(
            `${step.description}: secret ${JSON.stringify(m.id)} is required but the build has no such secret`,
          );
        continue;
      }
      if (m.env !== undefined) secretEnv.set(m.env, value);
      if (m.target !== undefined || m.env === undefined) {
        // Secret files live on a tmpfs of the step's own under /run: outside the rootfs and the store, never on disk.
        if (!secretDir) {
          const made = await makeSecretDir(step.description);
          cleanups.push(made.remove);
          secretDir = made.dir;
        }
        const file = path.join(secretDir, `secret-${mounts.length}`);
        await fsp.writeFile(file, value, { mode: 0o600 });
        await fsp.chown(file, m.uid ?? 0, m.gid ?? 0);
        await fsp.chmod(file, m.mode ?? 0o400);
        mounts.push({ source: file, destination: target(m.target ?? `/run/secrets/${m.id}`), readonly: true });
      }
      continue;
    }
    if (m.source === "builder:node") {
      const placed = await placeNode(rootfs);
      mounts.push(...placed.mounts);
      if (argv[0] === `${m.target}/node`) argv = [...placed.argvPrefix, ...argv.slice(1)];
    } else if (m.source === "builder:uv") {
      mounts.push(await placeUv(rootfs, target(m.target)));
    } else {
      const r = inputsByName.get(m.source);
      if (!r)
        throw new InvalidDefinitionError(`step ${index}: RUN mount source "${m.source}" is not an input of this step`);
      // Named by position, not by the input's name: a name never becomes part of a host path.
      const file = path.join(inputFiles, `mount-${mounts.length}`);
      if (r.input.kind === "inline") await fsp.writeFile(file, r.input.content, { mode: r.input.mode });
      else if (r.input.kind === "dir" || r.input.kind === "file") {
        // A writable mount gets a throw-away copy: the input (a service's shared input tree, a user's own
        // context) is never changed by a step, and a later build reading it sees the original files.
        if (m.readonly) await fsp.symlink(r.input.localPath, file);
        else await throwAwayCopy(r.input.localPath, file);
      } else await materialise(r, file, m.readonly);
      mounts.push({ source: file, destination: target(m.target), readonly: m.readonly });
    }
  }
  return { mounts, secretEnv, argv };
}

/** In-process users of each cache mount directory, by its path (for `sharing=private`). */
const cacheMountsInUse = new Map<string, number>();
/** Cache mount directories being created by this process, by path. */
const cacheMountsCreating = new Map<string, Promise<void>>();

/**
 * The host directory of a RUN cache mount: `<store>/cache-mounts/<sha256(id)>`, created on first use with the mount's
 * mode and owner, kept between builds. A seeded cache (`from=`) starts as a copy of the seed's files and is kept per id
 * and seed content (`sha256([id, seed digest])`), as BuildKit keeps one cache per id and source snapshot. `locked`
 * takes the store's lock for it for the RUN; `private` gets a fresh throwaway directory (seeded alike) while another
 * RUN of this process uses it.
 */
async function cacheMount(
  store: BuildStore,
  m: Extract<RunMount, { type: "cache" }>,
  cleanups: (() => Promise<void>)[],
  seed: ResolvedInput | undefined,
): Promise<string> {
  const hex = createHash("sha256")
    .update(seed ? JSON.stringify([m.id, seedDigest(seed)]) : m.id)
    .digest("hex");
  const dir = store.layout.cacheMountDir(hex);
  const fresh = async (d: string) => {
    await fsp.mkdir(d, { recursive: true });
    const top = seed ? await plantSeed(seed, d) : undefined;
    await fsp.chmod(d, m.mode ?? top?.mode ?? 0o755);
    await fsp.chown(d, m.uid ?? top?.uid ?? 0, m.gid ?? top?.gid ?? 0);
  };
  if (
    !(await fsp.stat(dir).then(
      (st) => st.isDirectory(),
      () => false,
    ))
  ) {
    // RUNs of one build (parallel stages) may meet here at once: one of them creates the directory, the others wait
    // for it; another process's creation races only by rename (its temporary name is its own).
    let creating = cacheMountsCreating.get(dir);
    if (!creating) {
      creating = (async () => {
        const tmp = `${dir}.tmp-${randomUUID()}`;
        await fresh(tmp);
        await fsp.rename(tmp, dir).catch(async () => fsp.rm(tmp, { recursive: true, force: true }));
      })().finally(() => cacheMountsCreating.delete(dir));
      cacheMountsCreating.set(dir, creating);
    }
    await creating;
  }
  const inUse = cacheMountsInUse;
  if (m.sharing === "private" && (inUse.get(dir) ?? 0) > 0) {
    const tmp = await store.tempDir("cache-private");
    await fresh(tmp);
    cleanups.push(() => fsp.rm(tmp, { recursive: true, force: true }));
    return tmp;
  }
  inUse.set(dir, (inUse.get(dir) ?? 0) + 1);
  cleanups.push(async () => void inUse.set(dir, (inUse.get(dir) ?? 1) - 1));
  if (m.sharing === "locked") {
    const release = await store.lock(`cache-mount-${hex}`);
    cleanups.push(release);
  }
  return dir;
}

/** The content a seed input stands for: its entries' paths, types, modes, owners and digests (sha256 hex). */
function seedDigest(seed: ResolvedInput): string {
  const h = createHash("sha256");
  for (const e of seed.entries)
    h.update(JSON.stringify([e.relPath, e.type, e.mode, e.uid, e.gid, e.sha256, e.linkTarget ?? ""]) + "\n");
  return h.digest("hex");
}

/**
 * Copies a seed's files into a new cache directory `dir` (never links: a cache is written to) and returns the
 * metadata of the directory the seed names (undefined for a root, whose directory has no entry), for the cache's own.
 */
async function plantSeed(
  seed: ResolvedInput,
  dir: string,
): Promise<{ mode: number; uid: number; gid: number } | undefined> {
  const matches = seed.matches ?? [];
  const only = matches.length === 1 ? matches[0]! : undefined;
  if (only && only.type !== "dir")
    throw new InvalidDefinitionError(
      `RUN --mount=type=cache,from=…: the seed ${JSON.stringify(only.rel)} is a file; a cache mount starts from a directory`,
    );
  await materialise(seed, dir, false);
  const top = only && only.rel !== "" ? seed.entries.find((e) => e.relPath === only.rel) : undefined;
  return top ? { mode: top.mode, uid: top.uid, gid: top.gid } : undefined;
}

/**
 * The host path of a cache mount's `source=` inside its cache directory: symlinks in the cache are followed but never
 * out of it (BuildKit refuses a source that resolves through a link outside the cache root), and it must exist.
 */
function cacheSubPath(dir: string, m: Extract<RunMount, { type: "cache" }>, where: string): string {
  const p = secureJoin(dir, m.source ?? "");
  const st = lstatOrUndefined(p);
  if (!st || !(st.isDirectory() || st.isFile()))
    throw new InvalidDefinitionError(
      `${where}: RUN --mount=type=cache,id=${m.id},source=${m.source}: there is no ${JSON.stringify(m.source)} inside the cache ` +
        "(a symlink there resolves inside the cache only); create it in an earlier RUN that mounts the same cache, or drop source=",
    );
  return p;
}

/**
 * A copy of `from` (a file or a directory tree) at `to` with modes, owners, timestamps and links kept, for a writable
 * bind mount; `--reflink=auto` makes it a cheap clone where the filesystem can share extents.
 */
async function throwAwayCopy(from: string, to: string): Promise<void> {
  const r = await execa("cp", ["-a", "--reflink=auto", "--no-target-directory", "--", from, to], { reject: false });
  if (r.exitCode !== 0)
    throw new SandboxError(`could not copy ${from} for a writable bind mount: ${r.stderr.trim() || r.message}`);
}

/**
 * Puts a `select` input's files at `to` for a bind mount: a single matched file as a file, else a directory holding
 * the matched directory's contents (or the matched paths). Read-only mounts hard-link the sources where possible.
 */
async function materialise(r: ResolvedInput, to: string, readonly: boolean): Promise<void> {
  const matches = r.matches ?? [];
  const place = async (src: string, dst: string, mode: number, uid: number, gid: number) => {
    if (readonly) {
      try {
        await fsp.link(src, dst);
        return;
      } catch {
        // another filesystem: copy
      }
    }
    await fsp.copyFile(src, dst);
    await fsp.chmod(dst, mode);
    await fsp.chown(dst, uid, gid);
  };
  if (matches.length === 1 && matches[0]!.type === "file") {
    const e = r.entries.find((x) => x.type === "file")!;
    await place(e.absPath, to, e.mode, e.uid, e.gid);
    return;
  }
  await fsp.mkdir(to, { recursive: true });
  for (const m of matches) {
    const prefix =
      m.type === "dir"
        ? m.rel === ""
          ? ""
          : m.rel + "/"
        : path.posix.dirname(m.rel) === "."
          ? ""
          : path.posix.dirname(m.rel) + "/";
    for (const e of r.entries) {
      if (m.type === "dir" ? !(m.rel === "" || e.relPath.startsWith(prefix)) : e.relPath !== m.rel) continue;
      const dst = path.join(to, e.relPath.slice(prefix.length));
      await fsp.mkdir(path.dirname(dst), { recursive: true });
      if (e.type === "dir") {
        await fsp.mkdir(dst, { recursive: true });
        await fsp.chmod(dst, e.mode);
        await fsp.chown(dst, e.uid, e.gid);
      } else if (e.type === "symlink") {
        await fsp.rm(dst, { force: true });
        await fsp.symlink(e.linkTarget ?? "", dst);
        await fsp.lchown(dst, e.uid, e.gid);
      } else {
        await fsp.rm(dst, { force: true });
        await place(e.absPath, dst, e.mode, e.uid, e.gid);
      }
    }
  }
}
