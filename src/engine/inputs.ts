/**
 * Resolves a step's inputs: walks and hashes them into key inputs, and materialises them for the sandbox. Besides
 * local files and directories, a step may read paths picked from the build context, from another chain's image (a
 * Dockerfile stage, built first) or from a registry image (`select`), a URL (`url`), or just need other chains built
 * (`stages`); those need the build's {@link InputContext}.
 */
import { promises as fsp } from "node:fs";
import { createHash } from "node:crypto";
import path from "node:path";
import { walkContext, statContextFile, type ContextEntry, type StatCache } from "../context/walk.js";
import { LocalPathError } from "../errors.js";
import { PatternMatcher } from "../ignore/pattern-matcher.js";
import type { FileInput } from "../keys/step-key.js";
import type { Plan, SelectRoot, StepInput } from "../plan/step.js";
import type { OverlayDirs } from "../layer/overlay.js";
import { layerDirs, type ImageRecord, type Store } from "../store/store.js";
import { parseGitRef } from "../plan/git-url.js";
import { sha256Bytes } from "../util/digest.js";
import { selectSources, type SelectRootView, type SourceMatch } from "./select.js";
import type { LazySelection } from "./lazy-root.js";
import { lstatOrUndefined, writeFileAtomic } from "../util/fs.js";
import type { FetchPolicy } from "../net/fetch-policy.js";
import { clampedLayers, tarTimes } from "./layer-clamp.js";

/** An input with its hashed entries. */
export interface ResolvedInput {
  input: StepInput;
  entries: ContextEntry[];
  /** `select` inputs: the matched sources in order (entries are grouped under them), for the copy rules */
  matches?: SourceMatch[];
}

/**
 * What resolving `select`, `url` and `stages` inputs needs from the running build: its store, and a way to build
 * another chain (a Dockerfile stage) once per build, with the build's options and secrets. The engine makes one per
 * build ({@link chainContext}) and passes it to every {@link resolveInput}.
 */
export interface InputContext {
  readonly store: Store;
  /** Where the build's URL downloads and registry reads may connect, and their limits. */
  readonly fetchPolicy: FetchPolicy;
  /** Builds a chain and returns its final image; each distinct chain is built once per context. */
  buildChain(plan: Plan): Promise<ImageRecord>;
}

/** Builds a nested chain and returns its final image's id (the engine's build, with the outer build's options). */
export type ChainBuilder = (plan: Plan, context: InputContext) => Promise<{ imageId: ImageRecord["id"] }>;

function planKey(plan: Plan): string {
  return createHash("sha256").update(JSON.stringify(plan)).digest("hex");
}

/**
 * An InputContext whose nested chains `build` builds, memoised per context (so a stage several steps read is built
 * once per build). Nested builds get this same context, so they share the memo.
 */
export function chainContext(store: Store, build: ChainBuilder, fetchPolicy: FetchPolicy): InputContext {
  const built = new Map<string, Promise<ImageRecord>>();
  const ctx: InputContext = {
    store,
    fetchPolicy,
    buildChain(plan: Plan): Promise<ImageRecord> {
      const k = planKey(plan);
      let p = built.get(k);
      if (!p) {
        p = (async () => {
          const r = await build(plan, ctx);
          const rec = await store.getImage(r.imageId);
          if (!rec)
            throw new LocalPathError(r.imageId, `image ${r.imageId} of a nested stage is missing from the store`);
          return rec;
        })();
        built.set(k, p);
        p.catch(() => built.delete(k));
      }
      return p;
    },
  };
  return ctx;
}

/** The context an input needs (a `select` from a stage or image, a `url`, `stages`): a caller that has none is wrong. */
function required(context: InputContext | undefined, input: StepInput): InputContext {
  if (!context)
    throw new Error(
      `resolving the ${input.kind} input "${input.name}" needs the build's InputContext (its store and nested builds)`,
    );
  return context;
}

export async function resolveInput(
  input: StepInput,
  statCache?: StatCache,
  context?: InputContext,
): Promise<ResolvedInput> {
  switch (input.kind) {
    case "dir": {
      const st = await fsp.stat(input.localPath).catch(() => undefined);
      if (!st) throw new LocalPathError(input.localPath, `local directory ${input.localPath} does not exist`);
      if (!st.isDirectory())
        throw new LocalPathError(input.localPath, `${input.localPath} is not a directory (use addLocalFile for files)`);
      const ignore = input.ignore.length ? PatternMatcher.parse(input.ignore) : undefined;
      return { input, entries: await walkContext(input.localPath, { ignore, statCache }) };
    }
    case "file": {
      const st = await fsp.stat(input.localPath).catch(() => undefined);
      if (!st) throw new LocalPathError(input.localPath, `local file ${input.localPath} does not exist`);
      if (!st.isFile())
        throw new LocalPathError(
          input.localPath,
          `${input.localPath} is not a regular file (use addLocalDir for directories)`,
        );
      return { input, entries: [await statContextFile(input.localPath, { statCache })] };
    }
    case "inline":
      return {
        input,
        entries: [
          {
            relPath: input.name,
            type: "file",
            mode: input.mode,
            uid: 0,
            gid: 0,
            size: Buffer.byteLength(input.content),
            sha256: sha256Bytes(input.content),
            absPath: "",
            mtimeMs: 0, // no source: written with the layer's epoch
          },
        ],
      };
    case "select": {
      const ctx = input.root.kind === "context" ? context : required(context, input);
      if (input.root.kind === "stage") return selectFromStage(input, ctx!, statCache);
      return withRootView(
        input.root,
        ctx,
        { patterns: input.patterns, parents: input.parents, location: input.location },
        async (view, rootName) => {
          const sel = await selectSources(view, input.patterns, {
            exclude: input.exclude,
            parents: input.parents,
            statCache,
            location: input.location,
            rootName,
          });
          const excluded = (input.excludedMatches ?? []).map(
            (m): SourceMatch => ({ rel: m.rel, real: m.rel, type: m.type, excluded: true }),
          );
          return {
            input,
            entries: sel.entries,
            matches: excluded.length ? [...sel.matches, ...excluded] : sel.matches,
          };
        },
      );
    }
    case "url": {
      const ctx = required(context, input);
      const { fetchUrl, UrlFetchError } = await import("./fetch-url.js");
      const f = await fetchUrl(input.url, {
        cacheDir: ctx.store.layout.downloadsDir,
        checksum: input.checksum,
        location: input.location,
        policy: ctx.fetchPolicy,
      }).catch((e: unknown) => {
        // addPython: a failed download also says how else to provide the file (STRATA_PYTHON_STANDALONE).
        throw input.help && e instanceof UrlFetchError
          ? new UrlFetchError(`${e.message}\n${input.help}`, { cause: e })
          : e;
      });
      return {
        input,
        entries: [
          {
            relPath: f.name,
            type: "file",
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: f.size,
            sha256: f.digest,
            absPath: f.file,
            mtimeMs: f.mtimeMs,
          },
        ],
        matches: [{ rel: f.name, real: f.name, type: "file" }],
      };
    }
    case "stages": {
      const ctx = required(context, input);
      await Promise.all(input.plans.map((p) => ctx.buildChain(p)));
      return { input, entries: [] };
    }
  }
}

/**
 * A selection from a stage's image. An image id names immutable content, so the result (entries with their digests,
 * whose files live in the image's layer dirs) is kept per image id and selection in `<store>/selects/`: a cached
 * `COPY --from=<stage>` neither mounts nor walks the stage again. The record names the layer dirs it points into and
 * is used only while they are the image's layer dirs.
 */
async function selectFromStage(
  input: Extract<StepInput, { kind: "select" }>,
  ctx: InputContext,
  statCache: StatCache | undefined,
): Promise<ResolvedInput> {
  const root = input.root as Extract<SelectRoot, { kind: "stage" }>;
  const rec = await ctx.buildChain(root.plan);
  const dirs: string[] = [];
  dirs.push(...(await layerDirs(ctx.store, rec.layers)));
  const id = createHash("sha256")
    .update(JSON.stringify([rec.id, input.patterns, input.exclude ?? [], input.parents ?? false]))
    .digest("hex");
  const file = ctx.store.layout.selectFile(id);
  // v2: entries carry the mtimes a copy keeps (older records have none and are selected again).
  type Saved = { v: 2; dirs: string[]; entries: ContextEntry[]; matches: SourceMatch[] };
  const saved = await fsp.readFile(file, "utf8").then(
    (t) => JSON.parse(t) as Saved,
    () => undefined,
  );
  if (saved?.v === 2 && Array.isArray(saved.entries) && JSON.stringify(saved.dirs) === JSON.stringify(dirs)) {
    return { input, entries: saved.entries, matches: saved.matches };
  }
  const r = await withRootView(
    root,
    ctx,
    { patterns: input.patterns, parents: input.parents, location: input.location },
    async (view, rootName) => {
      const sel = await selectSources(view, input.patterns, {
        exclude: input.exclude,
        parents: input.parents,
        statCache,
        location: input.location,
        rootName,
      });
      return { input, entries: sel.entries, matches: sel.matches };
    },
  );
  // An image without layers is viewed through a temp dir: nothing to keep.
  if (dirs.length)
    await writeFileAtomic(file, JSON.stringify({ v: 2, dirs, entries: r.entries, matches: r.matches } satisfies Saved));
  return r;
}

/**
 * Gives `fn` a view of a select root: the context directory, or an image's filesystem (its single layer directory, or
 * an overlay of its layers mounted for the duration, with each file's bytes read from the topmost layer that has it,
 * so the paths stay valid after the mount is gone and the stat cache recognises them across builds).
 */
async function withRootView<T>(
  root: SelectRoot,
  ctx: InputContext | undefined,
  selection: LazySelection,
  fn: (view: SelectRootView, rootName: string) => Promise<T>,
): Promise<T> {
  if (root.kind === "context") {
    const st = await fsp.stat(root.localPath).catch(() => undefined);
    if (!st?.isDirectory())
      throw new LocalPathError(root.localPath, `build context ${root.localPath} is not a directory`);
    const ignore = root.ignore.length ? PatternMatcher.parse(root.ignore) : undefined;
    return fn({ dir: root.localPath, ignore }, "the build context");
  }
  const c = ctx!;
  if (root.kind === "git") {
    const { fetchGit } = await import("./git-source.js");
    const ref = parseGitRef(root.url);
    if (!ref) throw new LocalPathError(root.url, `${root.url} is not a git URL`);
    const co = await fetchGit(ref, {
      cacheDir: path.join(c.store.layout.downloadsDir, "git"),
      policy: c.fetchPolicy,
      ...(root.keepGitDir !== undefined ? { keepGitDir: root.keepGitDir } : {}),
      ...(root.checksum !== undefined ? { checksum: root.checksum } : {}),
    });
    return fn({ dir: co.dir }, `git ${root.url} (${co.commit.slice(0, 12)})`);
  }
  let layers: ImageRecord["layers"];
  let rootName: string;
  if (root.kind === "stage") {
    layers = (await c.buildChain(root.plan)).layers;
    rootName = `stage ${root.stage}`;
  } else {
    // eStargz: fetch only what the selection can match into a partial tree of the image (src/engine/lazy-root.ts).
    const { lazyImageRoot } = await import("./lazy-root.js");
    const registry = { insecure: root.insecure, fetchPolicy: c.fetchPolicy };
    const lazy = await lazyImageRoot(root.ref, c.store, selection, registry);
    if (lazy) return fn({ dir: lazy.dir }, `image ${root.ref}`);
    const { pullImage } = await import("../registry/pull.js");
    layers = (await pullImage(root.ref, c.store, registry)).layers;
    rootName = `image ${root.ref}`;
  }
  const dirs: string[] = [];
  dirs.push(...(await layerDirs(c.store, layers)));
  const topFirst = [...dirs].reverse();
  // A RUN layer built here keeps the times its files were made; a copy reads the times its tar gives them.
  const clamped = await clampedLayers(c.store.layout, dirs);
  const entryTimes = (root: string) =>
    clamped.size ? { entryTimes: (es: ContextEntry[]) => tarTimes(c.store.layout, es, root, topFirst, clamped) } : {};
  if (dirs.length <= 1) {
    const work = dirs.length ? undefined : await c.store.tempDir("empty");
    try {
      return await fn({ dir: dirs[0] ?? work!, ...entryTimes(dirs[0] ?? work!) }, rootName);
    } finally {
      if (work) await fsp.rm(work, { recursive: true, force: true });
    }
  }
  const unpin = c.store.pin?.(layers);
  const work = await c.store.tempDir("select");
  // Loaded here, not at startup: mounting pulls in execa, which a fully cached build never needs.
  const { mountOverlay, unmountOverlay } = await import("../layer/overlay.js");
  let mounted: OverlayDirs | undefined;
  try {
    mounted = await mountOverlay(work, dirs);
    const merged = mounted.merged;
    const fileSource = (rel: string): string => {
      for (const d of topFirst) {
        const p = path.join(d, rel);
        if (lstatOrUndefined(p)) return p;
      }
      return path.join(merged, rel);
    };
    return await fn({ dir: merged, fileSource, ...entryTimes(merged) }, rootName);
  } finally {
    if (mounted) await unmountOverlay(mounted).catch(() => undefined);
    unpin?.();
    await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** The key inputs of resolved inputs: `<input name>/<relPath>` with type, mode, owner and content digest. */
/** Sources a selection matched but `--exclude` dropped by name (`<input>/<path>`, sorted): keyed as `copy.excluded`. */
export function excludedMatches(resolved: readonly ResolvedInput[]): string[] {
  const out: string[] = [];
  for (const r of resolved) for (const m of r.matches ?? []) if (m.excluded) out.push(`${r.input.name}/${m.rel}`);
  return out.sort();
}

export function fileInputs(resolved: readonly ResolvedInput[]): FileInput[] {
  const out: FileInput[] = [];
  for (const r of resolved) {
    for (const e of r.entries) {
      out.push({
        path: `${r.input.name}/${e.relPath}`,
        type: e.type,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        digest: e.sha256,
      });
    }
  }
  return out;
}
