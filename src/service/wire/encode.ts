/**
 * The client's side of the wire: a Plan and its secret values compiled into a request (`schema.ts`). Every part of
 * a step that travels unchanged is copied as it is (its type is the plan's: `plan-ties.ts`); local inputs are walked
 * and hashed here with the engine's own code (context selections selected with the engine's rules), so the server
 * gets exactly the entries the step's key covers, and the files behind them are returned for upload.
 */
import { promises as fsp } from "node:fs";
import { loadBuilderVersion } from "../../builder-version.js";
import type { ContextEntry, StatCache } from "../../context/walk.js";
import { resolveInput } from "../../engine/inputs.js";
import { InvalidDefinitionError } from "../../errors.js";
import { isDerivedExtra, stepExtra } from "../../keys/step-extra.js";
import { debianSlimStep } from "../../plan/debian-slim.js";
import { stepSecretValues } from "../../plan/secrets.js";
import type { BaseSpec, Plan, SecretValues, Step, StepInput } from "../../plan/step.js";
import { AWS_VARS } from "../../registry/ecr.js";
import { mtimeUs } from "../../layer/copy-times.js";
import { sortEntries } from "./entries.js";
import { WIRE_FORMAT } from "./limits.js";
import type { BuildRequest, WireEntry, WireInput, WireMatch, WirePlan, WireStep } from "./schema.js";

/** A local file to upload under its digest. */
export interface LocalBlob {
  absPath: string;
  size: number;
}

/** Compiling one request: its nested plans (deduplicated by content), secret values, and the files behind its digests. */
interface Compiler {
  statCache?: StatCache;
  /** The build's secret values, of which the request carries those its steps list. */
  values: SecretValues;
  secrets: Record<string, string>;
  files: Map<string, LocalBlob>;
  plans: WirePlan[];
  planIndex: Map<string, number>;
  /** Plans already compiled, by their JSON. */
  compiled: Map<string, Promise<number>>;
  /** Context selections already resolved in this request (a stage read by several steps repeats them). */
  selections: Map<string, Extract<WireInput, { kind: "select" }>>;
}

/**
 * The wire request for a plan, with the values (from `secrets`) of the secrets its steps list — a listed name without
 * a value is a MissingSecretError — and the local files behind every digest it names.
 */
export async function compileRequest(
  plan: Plan,
  statCache?: StatCache,
  secrets: SecretValues = {},
): Promise<{ request: BuildRequest; files: Map<string, LocalBlob> }> {
  const c: Compiler = {
    ...(statCache ? { statCache } : {}),
    values: secrets,
    secrets: {},
    files: new Map(),
    plans: [],
    planIndex: new Map(),
    compiled: new Map(),
    selections: new Map(),
  };
  const steps = await compileSteps(c, plan);
  const deferred: BuildRequest["deferred"] = [];
  for (const d of plan.deferred) {
    const input: StepInput =
      d.kind === "dir"
        ? { kind: "dir", name: "deferred", localPath: d.localPath, ignore: d.ignore }
        : { kind: "file", name: "deferred", localPath: d.localPath };
    const resolved = await resolveInput(input, statCache);
    note(c, resolved.entries);
    deferred.push({
      kind: d.kind,
      source: d.localPath,
      remotePath: d.remotePath,
      ignore: d.ignore,
      entries: resolved.entries.map(toWireEntry),
    });
  }
  const request: BuildRequest = { format: WIRE_FORMAT, builderVersion: plan.builderVersion, steps, deferred };
  if (c.plans.length) request.plans = c.plans;
  if (Object.keys(c.secrets).length) request.secrets = c.secrets;
  return { request, files: c.files };
}

function toWireEntry(e: ContextEntry): WireEntry {
  const w: WireEntry = { path: e.relPath, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid };
  // The mtime a copy keeps, as the engine writes it (whole µs, within what a layer holds); 0 is the default.
  const us = mtimeUs(e.mtimeMs);
  if (us !== 0) w.mtimeMs = us / 1000;
  if (e.type === "file") {
    w.size = e.size;
    w.digest = e.sha256;
  } else if (e.type === "symlink") {
    w.target = e.linkTarget ?? "";
  }
  return w;
}

function note(c: Compiler, entries: ContextEntry[]): ContextEntry[] {
  for (const e of entries)
    if (e.type === "file" && !c.files.has(e.sha256)) c.files.set(e.sha256, { absPath: e.absPath, size: e.size });
  return entries;
}

/** A nested plan's index in the request (added after the plans it reads, so references only point backwards). */
function planRef(c: Compiler, plan: Plan): Promise<number> {
  const memo = JSON.stringify(plan);
  let p = c.compiled.get(memo);
  if (!p) {
    p = compilePlan(c, plan);
    c.compiled.set(memo, p);
  }
  return p;
}

async function compilePlan(c: Compiler, plan: Plan): Promise<number> {
  if (plan.deferred.length)
    throw new InvalidDefinitionError(
      `a nested chain with copy: false files cannot be built remotely; build locally (unset STRATA_SERVER)`,
    );
  const wire: WirePlan = { builderVersion: plan.builderVersion, steps: await compileSteps(c, plan) };
  const id = JSON.stringify(wire);
  let i = c.planIndex.get(id);
  if (i === undefined) {
    i = c.plans.length;
    c.plans.push(wire);
    c.planIndex.set(id, i);
  }
  return i;
}

/** Adds the values of `names` to the request's secrets (one value per name: the build's). */
function addSecrets(c: Compiler, values: Record<string, string>): void {
  for (const [name, value] of Object.entries(values)) {
    if (Object.hasOwn(c.secrets, name) && c.secrets[name] !== value)
      throw new InvalidDefinitionError(`the secret ${name} has two values in one build; give it one`);
    c.secrets[name] = value;
  }
}

async function compileSteps(c: Compiler, plan: Plan): Promise<WireStep[]> {
  const steps: WireStep[] = [];
  for (const s of plan.steps) {
    if (s.base?.kind === "debian") {
      // The server builds the debian base from its builder file, knowing only the Python series.
      steps.push(debianWireStep(plan.builderVersion, { ...s, base: s.base }));
      continue;
    }
    const { base, inputs, extra, ...same } = s;
    const wireInputs: WireInput[] = [];
    for (const input of inputs) wireInputs.push(await compileInput(c, s, input));
    const step: WireStep = {
      ...same,
      inputs: wireInputs,
      secrets: [...s.secrets],
      // Derived extras are the engine's to compute (the server refuses them); they never change a local key either.
      extra: extra.filter(([name]) => !isDerivedExtra(name)),
    };
    if (base) step.base = base;
    const values = stepSecretValues(s, c.values);
    if (base?.kind === "registry" && base.login === "ecr") await ecrTokenFromFile(s, step, values);
    addSecrets(c, values);
    steps.push(step);
  }
  return steps;
}

/**
 * An ECR base whose web identity token is in a file: the file is read here (it is the client's; the service reads no
 * file a request names) and its content sent as `AWS_WEB_IDENTITY_TOKEN`. The base's secrets are login credentials,
 * never keyed, so the step's key is the same.
 */
async function ecrTokenFromFile(s: Step, step: WireStep, values: Record<string, string>): Promise<void> {
  const file = values[AWS_VARS.webIdentityTokenFile];
  if (file === undefined) return;
  if (values[AWS_VARS.webIdentityToken] === undefined) {
    try {
      values[AWS_VARS.webIdentityToken] = (await fsp.readFile(file, "utf8")).trim();
    } catch (e) {
      throw new InvalidDefinitionError(
        `step "${s.description}": cannot read the web identity token file named by ${AWS_VARS.webIdentityTokenFile}: ${(e as Error).message}`,
      );
    }
  }
  delete values[AWS_VARS.webIdentityTokenFile];
  step.secrets = Object.keys(values).sort();
}

async function compileInput(c: Compiler, s: Step, input: StepInput): Promise<WireInput> {
  switch (input.kind) {
    case "inline":
    case "url":
      return input;
    case "dir": {
      const resolved = await resolveInput(input, c.statCache);
      return {
        kind: "dir",
        name: input.name,
        source: input.localPath,
        entries: note(c, resolved.entries).map(toWireEntry),
      };
    }
    case "file": {
      const resolved = await resolveInput(input, c.statCache);
      return {
        kind: "file",
        name: input.name,
        source: input.localPath,
        entry: toWireEntry(note(c, resolved.entries)[0]!),
      };
    }
    case "stages": {
      const plans: number[] = [];
      for (const p of input.plans) plans.push(await planRef(c, p));
      return { kind: "stages", name: input.name, plans };
    }
    case "select": {
      // A server's own re-selection carries `excludedMatches`; a client's selection finds them itself (below).
      const { root, excludedMatches: _derived, ...common } = input;
      if (root.kind === "image" || root.kind === "git") return { ...common, root };
      if (root.kind === "stage")
        return { ...common, root: { kind: "stage", stage: root.stage, plan: await planRef(c, root.plan) } };
      // The build context: selected here with the engine's own rules; the server gets exactly the selected entries.
      const memo = JSON.stringify(input);
      const known = c.selections.get(memo);
      if (known) return known;
      const resolved = await resolveInput(input, c.statCache);
      note(c, resolved.entries);
      const wire: Extract<WireInput, { kind: "select" }> = {
        ...common,
        root: { kind: "context", source: root.localPath },
        matches: (resolved.matches ?? [])
          .filter((m) => !m.excluded)
          .map(
            (m): WireMatch =>
              m.keep !== undefined
                ? { path: m.rel, type: wireMatchType(s, m.type), parents: true }
                : { path: m.rel, type: wireMatchType(s, m.type) },
          ),
        entries: sortEntries(resolved.entries.map(toWireEntry)),
      };
      // Sources dropped by --exclude by name: no entries, but they make COPY's destination (and are keyed).
      const excluded = (resolved.matches ?? [])
        .filter((m) => m.excluded)
        .map((m): WireMatch => ({ path: m.rel, type: m.type === "dir" ? "dir" : "file" }));
      if (excluded.length) wire.excluded = excluded;
      c.selections.set(memo, wire);
      return wire;
    }
  }
}

/**
 * A debian base step as sent: its Python series only. The plan's step must be the one the builder version makes (the
 * server builds exactly that); a hand-made recipe cannot be built remotely.
 */
function debianWireStep(builderVersion: string, s: Step & { base: Extract<BaseSpec, { kind: "debian" }> }): WireStep {
  const official = debianSlimStep(loadBuilderVersion(builderVersion), {
    pythonVersion: s.base.python,
    forceBuild: s.forceBuild,
  });
  const recipe = (x: Step) =>
    JSON.stringify([x.base, x.instructions, stepExtra(x), x.secrets, x.buildArgs ?? [], x.inputs.length]);
  if (recipe(s) !== recipe(official)) {
    throw new InvalidDefinitionError(
      `step "${s.description}": this debian base differs from builder version ${builderVersion}'s debianSlim recipe; the build service builds only the recipes in builders/<version>.json; build locally (unset STRATA_SERVER)`,
    );
  }
  return {
    method: s.method,
    description: s.description,
    base: { kind: "debian", python: s.base.python },
    instructions: [],
    inputs: [],
    secrets: [],
    env: {},
    forceBuild: s.forceBuild,
    extra: [],
  };
}

function wireMatchType(s: Step, t: "file" | "dir" | "symlink"): "file" | "dir" {
  if (t === "symlink")
    throw new InvalidDefinitionError(
      `step "${s.description}": a source matched a symlink the build cannot follow; build locally (unset STRATA_SERVER)`,
    );
  return t;
}
