#!/usr/bin/env node
// Runs the test suite (compiled by `npm run build` into dist/) with node's built-in test runner.
//   node scripts/test.js [filter…]
// A filter is a substring of a test file's path under test/ (`keys/`, `e2e/cache`, `layer/tar.test.ts`); a file runs
// when it matches any filter, and a filter that matches no file is an error (a typo must not pass as a green run).
// Tests share one store for expensive fixtures (the Debian base is built once per run): STRATA_TEST_HOME.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const testRoot = path.join(root, "dist", "test");

function fail(message) {
  console.error(`test.js: ${message}`);
  process.exit(2);
}

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const only = process.argv.slice(2);
const unknown = only.filter((a) => a.startsWith("--"));
if (unknown.length) fail(`unknown option(s): ${unknown.join(" ")} (usage: node scripts/test.js [filter…])`);
if (!existsSync(testRoot)) fail("dist/test/ does not exist: run `npm run build` first");

let files = collect(testRoot);
if (only.length) {
  // Matched against "test/<folder>/<name>.test.js"; a filter naming the .ts source matches its compiled file.
  const shown = (f) => path.relative(path.dirname(testRoot), f).split(path.sep).join("/");
  const matches = (f, o) => shown(f).includes(o.replace(/\.ts$/, ".js"));
  const unmatched = only.filter((o) => !files.some((f) => matches(f, o)));
  if (unmatched.length) {
    fail(`no test files under dist/test/ match the filter(s) ${unmatched.map((o) => JSON.stringify(o)).join(", ")}`);
  }
  files = files.filter((f) => only.some((o) => matches(f, o)));
}
if (files.length === 0) fail("no test files under dist/test/");

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
