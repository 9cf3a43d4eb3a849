#!/usr/bin/env node
// Runs the whole test suite (compiled by `npm run build` into dist/) with node's built-in test runner.
// Tests share one store for expensive fixtures (the Debian base is built once per run): STRATA_TEST_HOME.
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const testRoot = path.join(root, "dist", "test");
const only = process.argv.slice(2);

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

let files = collect(testRoot);
if (only.length) files = files.filter((f) => only.some((o) => f.includes(o)));
const home = process.env.STRATA_TEST_HOME || path.join(os.tmpdir(), "strata-test-home");
mkdirSync(home, { recursive: true });
const concurrency = process.env.STRATA_TEST_CONCURRENCY || "3";
const started = Date.now();
const r = spawnSync(process.execPath, ["--test", `--test-concurrency=${concurrency}`, ...files], {
  stdio: "inherit",
  env: { ...process.env, STRATA_TEST_HOME: home },
});
console.log(`tests finished in ${((Date.now() - started) / 1000).toFixed(1)}s with exit code ${r.status}`);
process.exit(r.status ?? 1);
