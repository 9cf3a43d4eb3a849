/**
 * The mount-free path of a filesystem step: a step of COPY/ADD and metadata only is written straight into a fresh
 * upper dir (files linked from the content pool), and a `COPY --link` layer is reused across parents.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import type { BuilderVersion } from "../builder-version.js";
import { stepKey, type KeyInputs } from "../keys/step-key.js";
import { commitLayer } from "../layer/commit.js";
import { NeedsMountError, opaqueDirsOf, UpperTarget } from "../layer/copy-target.js";
import type { ImageConfig } from "../oci/types.js";
import type { Instruction } from "../plan/instructions.js";
import type { Step } from "../plan/step.js";
import type { BuildStore, LayerRecord } from "../store/store.js";
import type { StoreLayout } from "../store/layout.js";
import { readJson, writeFileAtomic } from "../util/fs.js";
import { resolveChown } from "./chown.js";
import { applyInstruction } from "./config.js";
import { copyLocal } from "./copy-local.js";
import { copyNeedsMount, dockerCopy } from "./docker-copy.js";
import { stepTimes } from "./step-epoch.js";
import type { ResolvedInput } from "./inputs.js";
import type { LineLog } from "./log.js";

/** What a copy-only step reads of its step executor. */
export interface CopyOnlyContext {
  store: BuildStore;
  builder: BuilderVersion;
  /** Nothing is written to link-layers/ either. */
  ignoreCache: boolean;
  /** Context files were hashed after this moment (see `StepExecutor.startedAt`). */
  startedAt: number;
}

/**
 * A step of COPY/ADD and metadata only (no RUN) is written straight into a fresh upper dir through an `UpperTarget`
 * — no mount, files linked from the store's content pool. Returns undefined to fall back to a mount: for a RUN, a
 * WORKDIR that creates a directory, an ADD that may extract an archive, or a change only a mount can express.
 */
export async function copyOnly(
  ctx: CopyOnlyContext,
  step: Step,
  parentConfig: ImageConfig,
  inputsByName: Map<string, ResolvedInput>,
  lowers: readonly string[],
  work: string,
  keyed: { inputs: KeyInputs; forced: boolean },
  log: LineLog,
): Promise<LayerRecord | undefined> {
  type CopyIns = Extract<Instruction, { op: "COPY" | "ADD" }>;
  const inputsOf = (ins: CopyIns) =>
    [ins.source, ...(ins.inputs ?? [])]
      .map((n) => inputsByName.get(n))
      .filter((r): r is ResolvedInput => r !== undefined);
  for (const ins of step.instructions) {
    if (ins.op === "RUN" || (ins.op === "WORKDIR" && ins.create)) return undefined;
    if ((ins.op === "COPY" || ins.op === "ADD") && ins.sources && copyNeedsMount(ins, inputsOf(ins))) return undefined;
    if ((ins.op === "COPY" || ins.op === "ADD") && !ins.sources && !inputsByName.has(ins.source)) return undefined;
  }
  const upper = path.join(work, "upper");
  const lowersTopFirst = [...lowers].reverse();
  // Nothing is mounted, so record the layer dirs this step reads (the parent's, and stages' a COPY --from reads) as
  // links in the work dir, where `strata cache prune` in another process sees them in use (as a mount's lowerdirs).
  const links = path.join(work, "l");
  await linkLayersInUse(links, [...lowers, ...layerDirsOf(ctx.store.layout, [...inputsByName.values()])]);
  const metaDir = ctx.store.layout.layerMetaDir;
  const opaque = await Promise.all(lowersTopFirst.map((l) => opaqueDirsOf(l, metaDir)));
  const pool = {
    poolDir: ctx.store.layout.contentPoolDir,
    hashedAfterMs: ctx.startedAt,
    epochMs: ctx.builder.sourceDateEpoch * 1000,
  };
  // The parent's filesystem, for reading (`--chown` names); a plain COPY also writes over it.
  const copies = step.instructions.filter((i): i is CopyIns => i.op === "COPY" || i.op === "ADD");
  const linked = copies.length > 0 && copies.every((c) => c.link === true && c.sources !== undefined);
  const parentFs = new UpperTarget(linked ? path.join(work, "parent-view") : upper, lowersTopFirst, {
    ...pool,
    opaque,
  });
  // `--link` (BuildKit: the copy is made onto scratch, then merged): the layer does not depend on the parent, so one
  // layer serves every parent — kept per key-without-parent in <store>/link-layers/, reused when only the parent changed.
  let linkFile: string | undefined;
  if (linked && !ctx.ignoreCache) {
    const owners = copies.map((c) =>
      c.chown === undefined ? null : resolveChown((p) => parentFs.readFile(p)?.toString("utf8"), c.chown),
    );
    const extra: [string, string][] = [
      ["link.workdir", parentConfig.config.WorkingDir || "/"],
      ["link.owners", JSON.stringify(owners)],
    ];
    const linkKey = stepKey({ ...keyed.inputs, parent: null, extra: [...keyed.inputs.extra, ...extra] });
    linkFile = ctx.store.layout.linkLayerFile(linkKey);
    if (!keyed.forced) {
      const reused = await readJson<LayerRecord>(linkFile).catch(() => undefined);
      if (reused && (await ctx.store.hasBlob(reused.digest))) {
        await ctx.store.layerDir(reused);
        const now = new Date();
        await fsp.utimes(linkFile, now, now).catch(() => undefined); // used: cache prune keeps it
        log.line(`--link: reusing layer ${reused.digest.slice(7, 19)} (built on another parent)`);
        return reused;
      }
    }
  }
  const target = linked ? new UpperTarget(upper, [], { ...pool, opaque: [] }) : parentFs;
  let rc = { ...parentConfig.config };
  try {
    for (const ins of step.instructions) {
      if ((ins.op === "COPY" || ins.op === "ADD") && ins.sources) {
        await dockerCopy({
          target,
          names: parentFs,
          ins,
          inputs: inputsOf(ins),
          workdir: rc.WorkingDir || "/",
          where: step.description,
        });
      } else if (ins.op === "COPY" || ins.op === "ADD") {
        copyLocal(target, inputsByName.get(ins.source)!, ins.dest);
      } else {
        rc = applyInstruction(rc, ins);
      }
    }
  } catch (e) {
    if (!(e instanceof NeedsMountError) || linked) throw e;
    await fsp.rm(upper, { recursive: true, force: true });
    await fsp.rm(links, { recursive: true, force: true });
    return undefined;
  }
  target.finishTimes();
  // Every entry's mtime was set by the copy (a source's, or the epoch): the tar keeps them (issue 12 item 15), unless
  // the step has a SOURCE_DATE_EPOCH, which clamps later times to it (BuildKit's rewrite-timestamp).
  const times = stepTimes(step, ctx.builder);
  const layer = await commitLayer(ctx.store, upper, {
    epoch: times.layerEpoch,
    keepMtimes: times.sourceDateEpoch === undefined,
  });
  await ctx.store.adoptLayerDir(layer.diffId, upper);
  if (linkFile) await writeFileAtomic(linkFile, JSON.stringify(layer));
  return layer;
}

/** The store's unpacked layer dirs that resolved inputs' files live in (COPY --from a stage). */
function layerDirsOf(layout: StoreLayout, resolved: readonly ResolvedInput[]): string[] {
  const out = new Set<string>();
  for (const r of resolved) {
    for (const e of r.entries) {
      const dir = layout.layerDirContaining(e.absPath);
      if (dir !== undefined) out.add(dir);
    }
  }
  return [...out];
}

/** Symlinks `<links>/<n>` to each dir (the names overlay mounts use; what prune's in-use check reads). */
async function linkLayersInUse(links: string, dirs: readonly string[]): Promise<void> {
  await fsp.mkdir(links, { recursive: true });
  for (const [i, d] of [...new Set(dirs)].entries()) await fsp.symlink(d, path.join(links, i.toString(36)));
}
