/** A planned build step: what the engine executes for one chained SDK call (or one Dockerfile instruction). */
import type { Secret } from "../sdk/secret.js";
import type { Instruction } from "./instructions.js";

/** Where a chain starts. */
export type BaseSpec =
  | { kind: "scratch" }
  | { kind: "debian"; python: string; suite: string; mirror: string; variant: string; packages: string[]; cmd: string[] }
  /** `login` picks how credentials are obtained (plain registry login, AWS ECR, Google Artifact Registry); never keyed. */
  | { kind: "registry"; ref: string; insecure?: boolean; login?: "registry" | "ecr" | "gcp"; gcpMode?: "access_token" | "json_key" }
  | { kind: "image"; imageId: string };

/** A local input a step reads; its content (never its mtime) goes into the key. */
export type StepInput =
  | { kind: "dir"; name: string; localPath: string; ignore: string[] }
  | { kind: "file"; name: string; localPath: string }
  | { kind: "inline"; name: string; content: string; mode: number };

export interface Step {
  /** The SDK method (or Dockerfile instruction) this step came from. */
  method: string;
  /** One-line human description for logs: `aptInstall jq`. */
  description: string;
  /** Set only on the first step of a chain. */
  base?: BaseSpec;
  instructions: Instruction[];
  inputs: StepInput[];
  /** Secret values, exposed as env during RUN only; their names (not values) are keyed. Serialises to names only. */
  secrets: Secret;
  /** Extra env for this step's RUNs only (not in the image config); keyed by name and value. */
  env: Record<string, string>;
  forceBuild: boolean;
  timeoutMs?: number;
  /** Extra key inputs (function source, arguments, base recipe, tool versions). */
  extra: [string, string][];
}

/** A fully planned chain: steps in order (step 0 carries the base) plus deferred (run-time) mounts. */
export interface Plan {
  builderVersion: string;
  steps: Step[];
  deferred: import("../store/store.js").DeferredMount[];
}
