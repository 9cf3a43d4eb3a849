#!/usr/bin/env node
// Compiles Strata's one native helper, src/sandbox/native/sandbox-helper.c, to dist/native/strata-sandbox-helper (run by
// `npm run build`). It needs a C compiler (`npm run setup` installs gcc); without one the build says so and goes on,
// and a sandboxed step fails with an error naming the missing helper.
import { spawnSync } from "node:child_process";
import { mkdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const src = path.join(root, "src/sandbox/native/sandbox-helper.c");
const out = path.join(root, "dist/native/strata-sandbox-helper");
mkdirSync(path.dirname(out), { recursive: true });
const fresh = (() => {
  try {
    return statSync(out).mtimeMs >= statSync(src).mtimeMs;
  } catch {
    return false;
  }
})();
if (!fresh) {
  const cc = process.env.CC || "cc";
  const r = spawnSync(cc, ["-O2", "-Wall", "-Wextra", "-Werror", "-o", out, src], { stdio: "inherit" });
  if (r.error || r.status !== 0) {
    console.error(
      `build-native: could not compile ${path.relative(root, src)} with ${cc} (${r.error?.message ?? `exit ${r.status}`}); install gcc (npm run setup)`,
    );
    process.exit(process.env.CI ? 1 : 0);
  }
}
