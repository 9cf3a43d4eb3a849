/**
 * What a validated request is, for the service's bookkeeping: the build id (a content hash of the definition, so
 * identical requests get the same id and join one build), the content it refers to, its secret values, and whether
 * a finished build of it may be reused.
 */
import { createHash } from "node:crypto";
import { WIRE_FORMAT } from "./limits.js";
import type { BuildRequest, WireEntry, WireStep } from "./schema.js";

/** Every step of a request: its own, then those of its nested plans. */
export function allSteps(req: BuildRequest): WireStep[] {
  return [...req.steps, ...(req.plans ?? []).flatMap((p) => p.steps)];
}

/** The build's secret values by name (each step gets the names it lists). */
export function requestSecretValues(req: BuildRequest): Record<string, string> {
  return { ...(req.secrets ?? {}) };
}

/** Every secret value a request carries, for redaction. */
export function allSecretValues(req: BuildRequest): string[] {
  return Object.values(req.secrets ?? {});
}

/** Every content digest a request refers to (files of inputs, context selections and deferred mounts), deduplicated. */
export function referencedDigests(req: BuildRequest): string[] {
  const out = new Set<string>();
  const add = (e: WireEntry) => {
    if (e.digest) out.add(e.digest);
  };
  for (const s of allSteps(req)) {
    for (const i of s.inputs) {
      if (i.kind === "dir") i.entries.forEach(add);
      else if (i.kind === "file") add(i.entry);
      else if (i.kind === "select") i.entries?.forEach(add);
    }
  }
  for (const d of req.deferred) d.entries.forEach(add);
  return [...out];
}

/** Whether every build of this request must run its steps again (so it never joins an earlier build). */
export function alwaysRebuilds(req: BuildRequest): boolean {
  return Boolean(req.forceBuild || req.ignoreCache || allSteps(req).some((s) => s.forceBuild));
}

/**
 * Whether a finished build of this request may be reused while its cache entries stand: not when it read something
 * that can change behind the same request (a registry tag, an image selection, a URL).
 */
export function reusable(req: BuildRequest): boolean {
  return !allSteps(req).some(
    (s) =>
      s.base?.kind === "registry" ||
      s.inputs.some((i) => i.kind === "url" || (i.kind === "select" && i.root.kind === "image")),
  );
}

/** A step as identified: client paths (log text only) left out. */
function identity(s: WireStep): unknown {
  const inputs = s.inputs.map((i) =>
    i.kind === "dir"
      ? { kind: i.kind, name: i.name, entries: i.entries }
      : i.kind === "file"
        ? { kind: i.kind, name: i.name, entry: i.entry }
        : i.kind === "select" && i.root.kind === "context"
          ? { ...i, root: { kind: "context" } }
          : i,
  );
  return { ...s, inputs };
}

/**
 * The definition hash: what the build is, without secret values, client paths or chain names. Identical requests
 * have the same hash; `nonce` separates builds that must not be joined (forced, ignoring the cache, or a retry).
 */
export function definitionHash(req: BuildRequest, nonce?: string): string {
  const h = createHash("sha256");
  h.update(WIRE_FORMAT + "\n");
  h.update(JSON.stringify(req.builderVersion) + "\n");
  for (const [i, p] of (req.plans ?? []).entries()) {
    h.update(`plan ${i}\n`);
    for (const s of p.steps) h.update(JSON.stringify(identity(s)) + "\n");
  }
  h.update("steps\n");
  for (const s of req.steps) h.update(JSON.stringify(identity(s)) + "\n");
  for (const d of req.deferred)
    h.update(JSON.stringify({ kind: d.kind, remotePath: d.remotePath, ignore: d.ignore, entries: d.entries }) + "\n");
  h.update(`force ${Boolean(req.forceBuild)} ignore ${Boolean(req.ignoreCache)}\n`);
  if (req.limits)
    h.update(
      `limits ${JSON.stringify([req.limits.memoryBytes ?? null, req.limits.pids ?? null, req.limits.cpus ?? null])}\n`,
    );
  if (nonce !== undefined) h.update(`nonce ${nonce}\n`);
  return h.digest("hex");
}
