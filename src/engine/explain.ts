/**
 * `strata explain`: for each step, its key, whether it would hit, and for a miss which input differs from the most
 * recent build of the same chain. The pure part (`diffInputs`) compares two KeyInputs.
 */
import { loadBuilderVersion } from "../builder-version.js";
import { StatCache } from "../context/walk.js";
import { initKeys, stepKey, type KeyInputs } from "../keys/step-key.js";
import { stepSecretValues } from "../plan/secrets.js";
import type { Plan, SecretValues, Step } from "../plan/step.js";
import type { ImageRecord, Store } from "../store/store.js";
import { keyInputsFor, nestedBuilds } from "./build.js";
import { resolveInput, type ResolvedInput } from "./inputs.js";

export interface ExplainStep {
  index: number;
  description: string;
  /** Null when the key cannot be known yet (a parent step will be rebuilt). */
  key: string | null;
  hit: boolean;
  reasons: string[];
}

export interface ExplainReport {
  chain: string;
  previousBuild: string | null;
  steps: ExplainStep[];
}

const PACKAGE_METHODS = new Set(["aptInstall", "pipInstall", "uvPipInstall"]);

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** Human-readable differences between the key inputs of a previous build and now. */
export function diffInputs(
  method: string,
  before: KeyInputs,
  now: KeyInputs,
  beforeDesc: string,
  nowDesc: string,
): string[] {
  const out: string[] = [];
  if (before.builderVersion !== now.builderVersion)
    out.push(`builder version changed: ${before.builderVersion} → ${now.builderVersion}`);
  if (JSON.stringify(before.instructions) !== JSON.stringify(now.instructions)) {
    if (PACKAGE_METHODS.has(method)) {
      const a = new Set(beforeDesc.split(/\s+/).slice(1));
      const b = new Set(nowDesc.split(/\s+/).slice(1));
      const added = [...b].filter((x) => !a.has(x)).map((x) => `+${x}`);
      const removed = [...a].filter((x) => !b.has(x)).map((x) => `-${x}`);
      out.push(
        added.length || removed.length
          ? `packages changed: ${[...added, ...removed].join(" ")}`
          : `options changed: ${now.instructions.join(" && ")}`,
      );
    } else {
      out.push(
        `instructions changed: was \`${before.instructions.join(" && ")}\`, now \`${now.instructions.join(" && ")}\``,
      );
    }
  }
  const bf = new Map(before.files.map((f) => [f.path, f]));
  const nf = new Map(now.files.map((f) => [f.path, f]));
  const changed: string[] = [];
  const modes: string[] = [];
  const added: string[] = [];
  const removed: string[] = [];
  for (const [p, f] of nf) {
    const o = bf.get(p);
    if (!o) added.push(p);
    else if (o.digest !== f.digest || o.type !== f.type) changed.push(p);
    else if (o.mode !== f.mode || o.uid !== f.uid || o.gid !== f.gid) modes.push(p);
  }
  for (const p of bf.keys()) if (!nf.has(p)) removed.push(p);
  const show = (ps: string[]) =>
    ps
      .slice(0, 5)
      .map((p) => p.slice(p.indexOf("/") + 1))
      .join(", ") + (ps.length > 5 ? `, … (${ps.length} in all)` : "");
  const fileParts: string[] = [];
  if (changed.length) fileParts.push(`${show(changed)} content changed`);
  if (modes.length) fileParts.push(`${show(modes)} mode/owner changed`);
  if (added.length) fileParts.push(`${plural(added.length, "file")} added (${show(added)})`);
  if (removed.length) fileParts.push(`${plural(removed.length, "file")} removed (${show(removed)})`);
  if (fileParts.length) out.push(fileParts.join(", "));
  const names = (xs: string[]) => [...new Set(xs)].sort().join(",");
  const bs = names(before.secretNames),
    ns = names(now.secretNames);
  if (bs !== ns) out.push(`secret names changed: [${bs}] → [${ns}]`);
  const ba = new Map(before.buildArgs),
    na = new Map(now.buildArgs);
  for (const k of [...new Set([...ba.keys(), ...na.keys()])].sort()) {
    if (ba.get(k) !== na.get(k))
      out.push(`build arg ${k} changed: ${ba.get(k) ?? "(unset)"} → ${na.get(k) ?? "(unset)"}`);
  }
  const be = new Map(before.extra),
    ne = new Map(now.extra);
  for (const k of new Set([...be.keys(), ...ne.keys()])) {
    if (be.get(k) === ne.get(k)) continue;
    if (k === "function.source") out.push("function source changed");
    else if (k === "function.args")
      out.push(`function arguments changed: ${be.get(k) ?? "none"} → ${ne.get(k) ?? "none"}`);
    else if (k.startsWith("env.")) out.push(`step env ${k.slice(4)} changed`);
    else if (k === "base.manifest") out.push(`base image moved: ${be.get(k) ?? "?"} → ${ne.get(k) ?? "?"}`);
    else out.push(`${k} changed`);
  }
  return out;
}

/** What `explain` needs besides the plan. */
export interface ExplainOptions {
  /** The build's secret values (a registry base's login; nested stages a step reads are built with them). */
  secrets?: SecretValues;
}

/**
 * For each step of `plan`, whether a build would hit the cache and, for a miss, why (compared with the last build of
 * `chainName`). Nested chains a step reads (Dockerfile stages) are built, as a build would.
 */
export async function explain(
  plan: Plan,
  store: Store,
  chainName: string,
  options: ExplainOptions = {},
): Promise<ExplainReport> {
  await initKeys();
  const builder = loadBuilderVersion(plan.builderVersion);
  const context = nestedBuilds(store, { store, ...(options.secrets ? { secrets: options.secrets } : {}) });
  const chain = await store.getChain(chainName);
  const statCache = await StatCache.load(store.layout.statCacheFile);
  const steps: ExplainStep[] = [];
  let parentId: ImageRecord["id"] | null = null;
  let rebuiltFrom: { index: number; why: string } | undefined;
  const forceAll = ["1", "true", "yes"].includes((process.env.STRATA_FORCE_BUILD ?? "").toLowerCase());
  for (const [index, step] of plan.steps.entries()) {
    if (rebuiltFrom) {
      steps.push({
        index,
        description: step.description,
        key: null,
        hit: false,
        reasons: [`parent rebuilt (${rebuiltFrom.why} at step ${rebuiltFrom.index})`],
      });
      continue;
    }
    if (step.base?.kind === "image") {
      const rec = await store.resolveImage(step.base.imageId);
      parentId = rec.id;
      steps.push({ index, description: step.description, key: null, hit: true, reasons: [] });
      continue;
    }
    const resolved: ResolvedInput[] = [];
    for (const i of step.inputs) resolved.push(await resolveInput(i, statCache, context));
    const extra: [string, string][] = [];
    if (step.base?.kind === "registry") {
      const { resolveImage } = await import("../registry/pull.js");
      extra.push([
        "base.manifest",
        (
          await resolveImage(
            step.base.ref,
            (
              await import("./registry-base.js")
            ).registryOptions(step.base, stepSecretValues(step, options.secrets), context.fetchPolicy),
          )
        ).manifestDigest,
      ]);
    }
    const inputs = keyInputsFor(builder, step, parentId, resolved, extra);
    const key = stepKey(inputs);
    const entry = await store.getIndex(key);
    const previous = chain?.imageIds[index]
      ? await store.getImage(chain.imageIds[index] as ImageRecord["id"])
      : undefined;
    if (step.forceBuild || forceAll) {
      const why = step.forceBuild ? "force_build" : "STRATA_FORCE_BUILD";
      steps.push({
        index,
        description: step.description,
        key,
        hit: false,
        reasons: [`${why} set on this step: it rebuilds every time until removed`],
      });
      rebuiltFrom = { index, why };
      continue;
    }
    if (entry) {
      steps.push({ index, description: step.description, key, hit: true, reasons: [] });
      parentId = entry.imageId;
      continue;
    }
    steps.push({ index, description: step.description, key, hit: false, reasons: missReasons(step, inputs, previous) });
    rebuiltFrom = { index, why: "changed" };
  }
  return { chain: chainName, previousBuild: chain?.builtAt ?? null, steps };
}

function missReasons(step: Step, inputs: KeyInputs, previous: ImageRecord | undefined): string[] {
  if (!previous?.step) return ["not built before (no previous build of this chain records this step)"];
  const reasons: string[] = [];
  if (previous.step.inputs.parent !== inputs.parent) {
    reasons.push(
      `parent image changed since the last build of this chain (${(previous.step.inputs.parent ?? "none").slice(7, 19)} → ${(inputs.parent ?? "none").slice(7, 19)}): an earlier step was rebuilt, e.g. by force_build in another build sharing it`,
    );
  }
  reasons.push(
    ...diffInputs(
      step.method,
      { ...previous.step.inputs, parent: inputs.parent },
      inputs,
      previous.step.description,
      step.description,
    ),
  );
  if (!reasons.length)
    reasons.push(
      "inputs are unchanged but the cache entry is gone (the last build used ignore_cache, or the entry was pruned)",
    );
  return reasons;
}

export function formatExplain(r: ExplainReport): string {
  const lines = [`chain ${r.chain}${r.previousBuild ? ` (last built ${r.previousBuild})` : " (never built)"}`];
  for (const s of r.steps) {
    const key = s.key ? s.key.slice(0, 16) : "?".repeat(16);
    lines.push(`step ${s.index} ${s.description}: ${s.hit ? "hit" : "MISS"} [${key}]`);
    for (const why of s.reasons) lines.push(`    ${why}`);
  }
  return lines.join("\n") + "\n";
}
