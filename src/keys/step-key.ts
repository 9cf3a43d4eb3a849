/**
 * Cache keys: a pure function from a step's inputs to a 128-bit key. The encoding is documented in
 * ARCHITECTURE.md ("Cache key encoding") and pinned by golden tests; any change to it must bump KEY_FORMAT.
 */
import xxhash, { type XXHashAPI } from "xxhash-wasm";

export const KEY_FORMAT = "strata-cache-key/1";

/** One context file a step reads. `path` is `<input name>/<relative path>`; never includes mtime. */
export interface FileInput {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number;
  uid: number;
  gid: number;
  /** sha256 of the content (files), of the link target (symlinks), "" for directories. */
  digest: string;
}

/** Everything a step's key covers. Stored with each image so `strata explain` can diff it. */
export interface KeyInputs {
  builderVersion: string;
  /** Image id of the parent, or null for a base step. */
  parent: string | null;
  /** Canonical Dockerfile text of each instruction, in order. */
  instructions: string[];
  files: FileInput[];
  buildArgs: [string, string][];
  secretNames: string[];
  /** Other named inputs: step env values, runFunction source and arguments, base-image recipe. */
  extra: [string, string][];
}

const SEED_A = 0n;
const SEED_B = 0x9e3779b97f4a7c15n;

let api: XXHashAPI | undefined;
let loading: Promise<XXHashAPI> | undefined;

/** Loads the xxhash wasm module once. */
export async function initKeys(): Promise<void> {
  if (api) return;
  loading ??= xxhash();
  api = await loading;
}

const byCodeUnits = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The canonical byte encoding of key inputs (see ARCHITECTURE.md). Sorting makes order of sets irrelevant. */
export function encodeKeyInputs(k: KeyInputs): string {
  const lines: string[] = [
    KEY_FORMAT,
    `builder ${JSON.stringify(k.builderVersion)}`,
    `parent ${JSON.stringify(k.parent)}`,
  ];
  for (const ins of k.instructions) lines.push(`ins ${JSON.stringify(ins)}`);
  const files = [...k.files].sort((a, b) => byCodeUnits(a.path, b.path));
  for (const f of files) {
    lines.push(`file ${JSON.stringify([f.path, f.type, f.mode.toString(8), f.uid, f.gid, f.digest])}`);
  }
  for (const [n, v] of [...k.buildArgs].sort((a, b) => byCodeUnits(a[0], b[0])))
    lines.push(`arg ${JSON.stringify([n, v])}`);
  for (const n of [...new Set(k.secretNames)].sort(byCodeUnits)) lines.push(`secret ${JSON.stringify(n)}`);
  for (const [n, v] of [...k.extra].sort((a, b) => byCodeUnits(a[0], b[0])))
    lines.push(`extra ${JSON.stringify([n, v])}`);
  return lines.join("\n") + "\n";
}

/** The 128-bit key: XXH64 of the encoding under two seeds, as 32 lowercase hex digits. Call `initKeys()` first. */
export function stepKey(k: KeyInputs): string {
  if (!api) throw new Error("stepKey called before initKeys()");
  const bytes = Buffer.from(encodeKeyInputs(k), "utf8");
  const a = api.h64Raw(bytes, SEED_A).toString(16).padStart(16, "0");
  const b = api.h64Raw(bytes, SEED_B).toString(16).padStart(16, "0");
  return a + b;
}
