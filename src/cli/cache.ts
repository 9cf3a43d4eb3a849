/**
 * `strata cache prune --older-than <dur> [--dry-run] [--json]`: removes index entries, image records, blobs, logs
 * and unpacked layers that nothing written since `now - dur` references (see src/store/prune.ts), from the store
 * the environment names (S3 with STRATA_S3_BUCKET, else STRATA_HOME). Safe while builds run.
 */
import { parseArgs } from "node:util";

const USAGE =
  "usage: strata cache prune --older-than <duration> [--dry-run] [--json]   (duration: 30d, 12h, 90m, 1d12h, …)";

export async function cmdCache(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "prune") {
    process.stderr.write(`strata cache: ${sub ? `unknown subcommand "${sub}"` : "missing subcommand"}\n${USAGE}\n`);
    return 2;
  }
  let values: { "older-than"?: string; "dry-run"?: boolean; json?: boolean };
  try {
    const parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      options: { "older-than": { type: "string" }, "dry-run": { type: "boolean" }, json: { type: "boolean" } },
    });
    if (parsed.positionals.length) throw new TypeError(`unexpected argument "${parsed.positionals[0]}"`);
    values = parsed.values;
  } catch (e) {
    process.stderr.write(`strata cache prune: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { parseDuration, pruneStore } = await import("../store/prune.js");
  if (values["older-than"] === undefined) {
    process.stderr.write(
      `strata cache prune: --older-than is required (what was written within it is kept)\n${USAGE}\n`,
    );
    return 2;
  }
  let olderThanMs: number;
  try {
    olderThanMs = parseDuration(values["older-than"]);
    if (!(olderThanMs > 0)) throw new Error(`--older-than must be more than zero, got "${values["older-than"]}"`);
  } catch (e) {
    process.stderr.write(`strata cache prune: ${(e as Error).message}\n`);
    return 2;
  }
  const { openStoreFromEnv } = await import("../store/s3/open.js");
  const store = await openStoreFromEnv();
  try {
    const report = await pruneStore(store, {
      olderThanMs,
      dryRun: values["dry-run"] ?? false,
      log: (l) => process.stderr.write(`strata cache prune: ${l}\n`),
    });
    if (values.json) process.stdout.write(JSON.stringify(report) + "\n");
    return 0;
  } finally {
    (store as { close?: () => void }).close?.();
  }
}
