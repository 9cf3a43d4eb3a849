#!/usr/bin/env node
// Runs the test suite (compiled by `npm run build` into dist/) with node's built-in test runner.
//   node scripts/test.js [--unit] [filter…]
// A filter is a substring of a test file's path under test/ (`keys/`, `e2e/cache`, `layer/tar.test.ts`); a file runs
// when it matches any filter, and a filter that matches no file is an error (a typo must not pass as a green run). `--unit` runs only the unit
// tests (UNIT below); filters then narrow those.
// Tests share one store for expensive fixtures (the Debian base is built once per run): STRATA_TEST_HOME.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/**
 * The unit tests: they need no root, no runc, no apt, no network and start no servers, so they run in seconds as any
 * user (`npm run test:unit`; CI runs them as a user without root before the full suite). Paths are under test/. A
 * folder entry (ending in "/") takes every test file in it: a new test of pure code goes into one of those folders,
 * or, in a folder that also holds tests needing root or servers, gets its own line here.
 */
const UNIT = [
  "cli/",
  "context/",
  "dockerfile/",
  "ignore/",
  "keys/",
  "plan/",
  "sdk/",
  "engine/config.test.ts",
  "engine/debian-pins.test.ts",
  "engine/debian-base.test.ts",
  "engine/redact.test.ts",
  "engine/select-parents.test.ts",
  "layer/secure-join.test.ts",
  "layer/tar-header.test.ts",
  "net/fetch-rules.test.ts",
  "net/ip-address.test.ts",
  "net/registry-config.test.ts",
  "registry/estargz-lazy-tree.test.ts",
  "registry/estargz.test.ts",
  "registry/reference.test.ts",
  "sandbox/cgroup.test.ts",
  "sandbox/policy.test.ts",
  "sandbox/user.test.ts",
  "service/wire-schema.test.ts",
  "service/wire-images.test.ts",
  "service/fair-slots.test.ts",
  "service/client-retry.test.ts",
  "service/queue-signing.test.ts",
  "service/tenant-quotas.test.ts",
  "service/usage-window.test.ts",
  "store/conformance-local.test.ts",
  "store/local.test.ts",
  "util/",
];

/**
 * The service tests the whole suite runs a second time with tenants on (their services come from
 * test/support/service.ts, which honours STRATA_TEST_TENANTS): every behaviour of a single-token service must hold for
 * a tenant of a shared one. Tests that set up their own tenants (tenants, quotas, metrics)
 * are not repeated.
 */
const TENANT_PASS = [
  "service/cache-policy.test.ts",
  "service/cli.test.ts",
  "service/client-input.test.ts",
  "service/context.test.ts",
  "service/dockerfile-cases.test.ts",
  "service/dockerfile.test.ts",
  "service/errors.test.ts",
  "service/fetch-policy.test.ts",
  "service/front-door.test.ts",
  "service/get-or-create.test.ts",
  "service/git-source.test.ts",
  "service/logs.test.ts",
  "service/named-context.test.ts",
  "service/queue-events.test.ts",
  "service/queue-secrets.test.ts",
  "service/s3-faults.test.ts",
  "service/serve.test.ts",
  "service/tls.test.ts",
  "service/workers.test.ts",
];

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

/** The compiled files under dist/test/ that a UNIT entry names; an entry that names none is an error. */
function unitFiles(all) {
  const rel = (f) => path.relative(testRoot, f).split(path.sep).join("/");
  const picked = new Set();
  const stale = [];
  for (const entry of UNIT) {
    const matches = entry.endsWith("/")
      ? all.filter((f) => rel(f).startsWith(entry))
      : all.filter((f) => rel(f) === entry.replace(/\.ts$/, ".js"));
    if (matches.length === 0) stale.push(entry);
    for (const f of matches) picked.add(f);
  }
  if (stale.length) {
    const names = stale.map((e) => `test/${e}`).join(", ");
    fail(`UNIT in scripts/test.js names ${names}, which match no compiled test file (moved or deleted? update UNIT)`);
  }
  return all.filter((f) => picked.has(f));
}

const args = process.argv.slice(2);
const unit = args.includes("--unit");
const only = args.filter((a) => a !== "--unit");
const unknown = only.filter((a) => a.startsWith("--"));
if (unknown.length) fail(`unknown option(s): ${unknown.join(" ")} (usage: node scripts/test.js [--unit] [filter…])`);
if (!existsSync(testRoot)) fail("dist/test/ does not exist: run `npm run build` first");

let files = collect(testRoot);
if (unit) files = unitFiles(files);
if (only.length) {
  // Matched against "test/<folder>/<name>.test.js"; a filter naming the .ts source matches its compiled file.
  const shown = (f) => path.relative(path.dirname(testRoot), f).split(path.sep).join("/");
  const matches = (f, o) => shown(f).includes(o.replace(/\.ts$/, ".js"));
  const unmatched = only.filter((o) => !files.some((f) => matches(f, o)));
  if (unmatched.length) {
    const where = unit ? "unit test files (UNIT in scripts/test.js)" : "test files under dist/test/";
    fail(`no ${where} match the filter(s) ${unmatched.map((o) => JSON.stringify(o)).join(", ")}`);
  }
  files = files.filter((f) => only.some((o) => matches(f, o)));
}
if (files.length === 0) fail("no test files under dist/test/");

const home = process.env.STRATA_TEST_HOME || path.join(os.tmpdir(), "strata-test-home");
mkdirSync(home, { recursive: true });
const concurrency = process.env.STRATA_TEST_CONCURRENCY || "3";
const started = Date.now();
const run = (list, env = {}) =>
  spawnSync(process.execPath, ["--test", `--test-concurrency=${concurrency}`, ...list], {
    stdio: "inherit",
    env: { ...process.env, STRATA_TEST_HOME: home, ...env },
  }).status ?? 1;
let status = run(files);
// The whole suite also runs the service's tests again with tenants on (STRATA_TEST_TENANTS=1, test/support/service.ts):
// every existing service behaviour must hold for a service shared by tenants, as for one with a single token.
if (!unit && only.length === 0 && !process.env.STRATA_TEST_TENANTS) {
  const shown = (f) => path.relative(testRoot, f).split(path.sep).join("/");
  const service = files.filter((f) => TENANT_PASS.some((t) => shown(f) === t.replace(/\.ts$/, ".js")));
  console.log(`test.js: the ${service.length} service test files again, with tenants on (STRATA_TEST_TENANTS=1)`);
  const tenants = run(service, { STRATA_TEST_TENANTS: "1" });
  if (status === 0) status = tenants;
}
console.log(`tests finished in ${((Date.now() - started) / 1000).toFixed(1)}s with exit code ${status}`);
process.exit(status);
