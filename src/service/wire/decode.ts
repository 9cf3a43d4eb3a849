/**
 * The server's side of the wire: a request body checked against the schema (`schema.ts`) and the rules that need
 * the whole request (the format it names, which nested plans a step may name, the request's budgets, one value for
 * each secret a step lists), then turned back into the engine's Plan — its walked inputs materialised as local
 * trees, nested plans rebuilt once each, a debian base made from this server's builder file.
 */
import path from "node:path";
import type { DeferredMount, Plan, SelectRoot, Step, StepInput } from "../../plan/step.js";
import { AWS_VARS } from "../../registry/ecr.js";
import { debianBaseStep } from "../bases.js";
import type { TreeLease, TreeSource } from "../trees.js";
import { sortEntries, unlistedParents } from "./entries.js";
import { parseWith } from "./fields.js";
import { describe, fail, LIMITS, WIRE_FORMAT } from "./limits.js";
import {
  BlobCheckSchema,
  BuildRequestSchema,
  type BuildRequest,
  type WireEntry,
  type WireInput,
  type WireMatch,
  type WireStep,
} from "./schema.js";

/** Validates a parsed `POST /v1/images` body. Throws a WireError naming the first offending field. */
export function parseBuildRequest(v: unknown): BuildRequest {
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    const format = (v as { format?: unknown }).format;
    if (format === undefined) {
      fail(
        "format",
        `missing: this server speaks ${WIRE_FORMAT}, and a request without "format" comes from an older Strata client (strata-build/2 or earlier); upgrade the client to this server's release`,
      );
    }
    if (format !== WIRE_FORMAT) {
      fail(
        "format",
        `${describe(format)} is not a request format this server speaks (${WIRE_FORMAT}); use a Strata client of the same release as the server (upgrade the client, or the server)`,
      );
    }
  }
  const req = parseWith(BuildRequestSchema, v) as BuildRequest;
  checkWholeRequest(req);
  return req;
}

/** Validates a `POST /v1/blobs/check` body. */
export function parseBlobCheck(v: unknown): string[] {
  return parseWith(BlobCheckSchema, v).digests;
}

/** The request's chains: its nested plans, then its own steps, with where each is named in a message. */
function chains(req: BuildRequest): { where: string; steps: WireStep[]; plansBefore: number }[] {
  return [
    ...(req.plans ?? []).map((p, i) => ({ where: `plans[${i}].steps`, steps: p.steps, plansBefore: i })),
    { where: "steps", steps: req.steps, plansBefore: req.plans?.length ?? 0 },
  ];
}

/** The rules no single field can check. */
function checkWholeRequest(req: BuildRequest): void {
  for (const [i, p] of (req.plans ?? []).entries()) {
    if (p.builderVersion !== req.builderVersion)
      fail(`plans[${i}].builderVersion`, `"${p.builderVersion}" differs from the request's "${req.builderVersion}"`);
  }
  let steps = 0;
  let entries = 0;
  const listed = new Set<string>();
  for (const chain of chains(req)) {
    steps += chain.steps.length;
    if (steps > LIMITS.steps)
      fail(chain.where, `more than ${LIMITS.steps} steps in the request (nested plans included)`);
    for (const [si, s] of chain.steps.entries()) {
      const at = `${chain.where}[${si}]`;
      for (const n of s.secrets) {
        listed.add(n);
        if (!Object.hasOwn(req.secrets ?? {}, n))
          fail(
            `${at}.secrets`,
            `no value for the secret ${n} in the request's "secrets" (a build sends one value for every secret name its steps list)`,
          );
      }
      if (s.base?.kind === "registry" && s.base.login === "ecr" && s.secrets.includes(AWS_VARS.webIdentityTokenFile)) {
        fail(
          `${at}.secrets`,
          `${AWS_VARS.webIdentityTokenFile} names a file, and the build service reads no file a request names; send the token itself as ${AWS_VARS.webIdentityToken}`,
        );
      }
      for (const [ii, input] of s.inputs.entries()) {
        entries += inputEntries(input);
        for (const [ref, where] of planRefs(input)) {
          if (ref >= chain.plansBefore) {
            fail(
              `${at}.inputs[${ii}].${where}`,
              `no nested plan can be named here by index ${ref} (a plan may only name plans listed before it in "plans"${chain.plansBefore ? `: 0 to ${chain.plansBefore - 1}` : ""})`,
            );
          }
        }
      }
      if (entries > LIMITS.entries) fail(`${at}.inputs`, `more than ${LIMITS.entries} entries in the request`);
    }
  }
  for (const d of req.deferred) entries += d.entries.length;
  if (entries > LIMITS.entries) fail("deferred", `more than ${LIMITS.entries} entries in the request`);
  for (const name of Object.keys(req.secrets ?? {})) {
    if (!listed.has(name))
      fail(`secrets.${name}`, `no step lists the secret ${name}; send only the values of the secrets the steps list`);
  }
}

function inputEntries(i: WireInput): number {
  return i.kind === "dir"
    ? i.entries.length
    : i.kind === "file"
      ? 1
      : i.kind === "select"
        ? (i.entries?.length ?? 0)
        : 0;
}

/** The nested-plan indexes an input names, with the field naming each. */
function planRefs(i: WireInput): [number, string][] {
  if (i.kind === "stages") return i.plans.map((p, k) => [p, `plans[${k}]`]);
  if (i.kind === "select" && i.root.kind === "stage") return [[i.root.plan, "root.plan"]];
  return [];
}

// ---------------------------------------------------------------------------------------------------------------
// Back to a Plan

/** Makes a local tree of walked entries (its directory, or the file `file` in it); `source` is the client's path. */
export type Materialise = (entries: readonly WireEntry[], source: string | undefined, file?: string) => Promise<string>;

/**
 * The engine's plan for a request: inputs materialised as local trees (in `trees`, leased until the build is done;
 * each tree's path and the client's path it stands for are added to `rewrites`, longest first, for log lines), nested
 * plans rebuilt (each once, shared by every step that reads it). Steps name their secrets; the values are the request's.
 */
export async function planForRequest(
  req: BuildRequest,
  trees: TreeSource,
  leases: TreeLease[],
  rewrites: [string, string][],
): Promise<Plan> {
  const plan = await decodePlan(req, async (entries, source, file) => {
    const lease = await trees.acquire(entries);
    leases.push(lease);
    const local = file === undefined ? lease.dir : path.join(lease.dir, file);
    if (source) rewrites.push([local, source]);
    return local;
  });
  // Longest first, so a file inside a tree is rewritten before the tree's directory.
  rewrites.sort((a, b) => b[0].length - a[0].length);
  return plan;
}

/** The plan a validated request stands for, with `materialise` making its trees (see {@link planForRequest}). */
export async function decodePlan(req: BuildRequest, materialise: Materialise): Promise<Plan> {
  const plans: Plan[] = [];
  for (const p of req.plans ?? [])
    plans.push({
      builderVersion: p.builderVersion,
      steps: await decodeSteps(p.builderVersion, p.steps, plans, materialise),
      deferred: [],
    });
  const deferred: DeferredMount[] = [];
  for (const d of req.deferred) {
    const localPath = await materialise(d.entries, d.source, d.kind === "dir" ? undefined : d.entries[0]!.path);
    deferred.push({ kind: d.kind, localPath, remotePath: d.remotePath, ignore: d.ignore });
  }
  return {
    builderVersion: req.builderVersion,
    steps: await decodeSteps(req.builderVersion, req.steps, plans, materialise),
    deferred,
  };
}

async function decodeSteps(
  builderVersion: string,
  wireSteps: readonly WireStep[],
  plans: readonly Plan[],
  materialise: Materialise,
): Promise<Step[]> {
  const steps: Step[] = [];
  for (const s of wireSteps) {
    const { base, inputs: wireInputs, ...same } = s;
    if (base?.kind === "debian") {
      // Made from this server's builder file, never from the request (which names only the Python series).
      steps.push(debianBaseStep(builderVersion, { ...s, base }));
      continue;
    }
    const inputs: StepInput[] = [];
    for (const inp of wireInputs) inputs.push(await decodeInput(inp, plans, materialise));
    steps.push({ ...same, ...(base ? { base } : {}), inputs, secrets: [...s.secrets].sort() });
  }
  return steps;
}

async function decodeInput(inp: WireInput, plans: readonly Plan[], materialise: Materialise): Promise<StepInput> {
  switch (inp.kind) {
    case "inline":
    case "url":
      return inp;
    case "dir":
      // The client applied the ignore patterns when it walked the directory: the tree holds only what they kept.
      return { kind: "dir", name: inp.name, localPath: await materialise(inp.entries, inp.source), ignore: [] };
    case "file":
      return { kind: "file", name: inp.name, localPath: await materialise([inp.entry], inp.source, inp.entry.path) };
    case "stages":
      return { kind: "stages", name: inp.name, plans: inp.plans.map((k) => plans[k]!) };
    case "select": {
      const { root, matches, entries, excluded, ...common } = inp;
      if (root.kind !== "context") {
        const decoded: SelectRoot =
          root.kind === "stage" ? { kind: "stage", stage: root.stage, plan: plans[root.plan]! } : root;
        return { ...common, root: decoded };
      }
      // The client's selection, materialised and selected again by literal paths: the same matches and entries
      // (validated: every entry belongs to a match; the directories added to hold the tree lie outside them).
      const { exclude: _applied, parents: _pivots, patterns: _patterns, ...rest } = common;
      const list = matches ?? [];
      const dir = await materialise(selectionTree(entries ?? []), root.source);
      const excludedMatches = (excluded ?? []).map((m) => ({ rel: m.path, type: m.type }));
      return {
        ...rest,
        root: { kind: "context", localPath: dir, ignore: [] },
        patterns: list.map(literalPattern),
        ...(list.some((m) => m.parents) ? { parents: true } : {}),
        ...(excludedMatches.length ? { excludedMatches } : {}),
      };
    }
  }
}

/** A context selection's entries plus the directories that hold them (a glob's matches come without their parents). */
function selectionTree(entries: readonly WireEntry[]): WireEntry[] {
  const parents = unlistedParents(entries).map(
    (p): WireEntry => ({ path: p, type: "dir", mode: 0o755, uid: 0, gid: 0 }),
  );
  return parents.length ? sortEntries([...entries, ...parents]) : [...entries];
}

/**
 * The source pattern that selects exactly one of the client's matches again: its path with wildcard characters
 * escaped (`.` for the context itself), or for a `--parents` pivot everything below it.
 */
export function literalPattern(m: WireMatch): string {
  if (m.parents) return m.path === "" ? "**" : `${m.path}/./**`;
  if (m.path === "") return ".";
  return m.path
    .split("/")
    .map((seg) => seg.replace(/[*?[\\]/g, (c) => "\\" + c))
    .join("/");
}
