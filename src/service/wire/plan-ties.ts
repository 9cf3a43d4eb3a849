/**
 * Compile-time ties between the wire schema (`schema.ts`) and the plan types (`src/plan/`): every part of a plan that
 * travels unchanged has exactly the plan's type (same fields, same optionality, same value types), so a field added
 * to a plan but not to the wire, or the other way round, fails `tsc` here instead of being dropped or refused at run
 * time. The parts that legitimately differ are listed by name, each with where it is converted: local inputs become
 * walked entries (`encode.ts` walks them, `decode.ts` materialises them as trees), a debian base becomes its Python
 * series, nested plans become indexes, and a context selection becomes the client's matches and entries.
 */
import type { Instruction, RunMount } from "../../plan/instructions.js";
import type { BaseSpec, DeferredMount, Plan, SelectRoot, Step, StepInput, StepLocation } from "../../plan/step.js";
import type {
  InstructionWire,
  RunMountWire,
  WireBase,
  WireDeferred,
  WireInput,
  WireLocation,
  WireMatch,
  WirePlan,
  WireSelectRoot,
  WireStep,
} from "./schema.js";

/** `T` with intersections flattened and optional fields read as `T | undefined`, recursively: what equality compares. */
type Norm<T> = T extends object ? { [K in keyof T]: Norm<T[K]> } : T;
/** Exactly the same type (not merely assignable either way: an optional field more on one side is a difference). */
type Equals<A, B> = (<T>() => T extends Norm<A> ? 1 : 2) extends <T>() => T extends Norm<B> ? 1 : 2 ? true : false;
type Assert<T extends true> = T;
/** No key of `T` is left out of `Known` (a new field must be placed: unchanged, converted, or refused). */
type NoOtherKeys<T, Known extends PropertyKey> = [Exclude<keyof T, Known>] extends [never] ? true : false;

type Of<U, K extends string> = Extract<U, { kind: K }>;
type PlanSelect = Of<StepInput, "select">;
type WireSelect = Of<WireInput, "select">;
/** Select fields that travel as they are; `root` and `excludedMatches` are converted (encode.ts / decode.ts). */
type SelectCommon = "kind" | "name" | "patterns" | "exclude" | "parents" | "location";

export type PlanTies = [
  // Travel unchanged (the server clamps image paths and sorts env, which keeps their types).
  Assert<Equals<InstructionWire, Instruction>>,
  Assert<Equals<RunMountWire, RunMount>>,
  Assert<Equals<Omit<WireStep, "base" | "inputs">, Omit<Step, "base" | "inputs">>>,
  Assert<Equals<Exclude<WireBase, { kind: "debian" }>, Exclude<BaseSpec, { kind: "debian" }>>>,
  Assert<Equals<Of<WireInput, "inline" | "url">, Of<StepInput, "inline" | "url">>>,
  Assert<Equals<Pick<WireSelect, SelectCommon>, Pick<PlanSelect, SelectCommon>>>,
  Assert<Equals<Of<WireSelectRoot, "image">, Of<SelectRoot, "image">>>,
  Assert<Equals<Of<WireSelectRoot, "git">, Of<SelectRoot, "git">>>,
  Assert<Equals<WireLocation, StepLocation>>,
  Assert<Equals<WireInput["kind"], StepInput["kind"]>>,
  Assert<Equals<WireSelectRoot["kind"], SelectRoot["kind"]>>,
  Assert<
    Equals<Pick<WireDeferred, "kind" | "remotePath" | "ignore">, Pick<DeferredMount, "kind" | "remotePath" | "ignore">>
  >,
  Assert<Equals<Pick<WirePlan, "builderVersion">, Pick<Plan, "builderVersion">>>,
  // Converted, field by field.
  // A debian base: its Python series only (encode.ts `debianWireStep`; decode.ts rebuilds the step from the builder file).
  Assert<Equals<Of<WireBase, "debian">, Pick<Of<BaseSpec, "debian">, "kind" | "python">>>,
  // dir/file inputs and deferred mounts: `localPath` (and a dir's `ignore`, applied by the walk) → walked entries.
  Assert<NoOtherKeys<Of<StepInput, "dir">, "kind" | "name" | "localPath" | "ignore">>,
  Assert<NoOtherKeys<Of<StepInput, "file">, "kind" | "name" | "localPath">>,
  Assert<NoOtherKeys<DeferredMount, "kind" | "remotePath" | "ignore" | "localPath">>,
  // A select: its root (context → the client's selection; stage → a plan index) and the excluded matches.
  Assert<NoOtherKeys<PlanSelect, SelectCommon | "root" | "excludedMatches">>,
  Assert<NoOtherKeys<Of<SelectRoot, "context">, "kind" | "localPath" | "ignore">>,
  Assert<NoOtherKeys<Of<SelectRoot, "stage">, "kind" | "stage" | "plan">>,
  Assert<Equals<NonNullable<PlanSelect["excludedMatches"]>[number]["type"], WireMatch["type"]>>,
  // Nested plans → indexes into the request's `plans`.
  Assert<NoOtherKeys<Of<StepInput, "stages">, "kind" | "name" | "plans">>,
  // A nested plan has no deferred mounts (encode.ts refuses them); the request's own are `deferred`.
  Assert<NoOtherKeys<Plan, "builderVersion" | "steps" | "deferred">>,
];
