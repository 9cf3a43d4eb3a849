#!/usr/bin/env node
// Records the Debian package versions a builder version's debianSlim bases get, into its `debian.pins`:
//   npm run build && node scripts/record-debian-pins.mjs [VERSION]      (default PREVIEW; needs root and mmdebstrap)
// For every distinct package set the version's Python series use (Debian's Python, or a standalone one, plus the
// toolchain), per suite, it runs mmdebstrap exactly as the engine does and reads the result's dpkg status; the union
// per suite (one version per package: a suite serves one) is written as `pins.<suite>`. A released version is never
// re-recorded: record PREVIEW, then copy it into a new version.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const version = process.argv[2] ?? "PREVIEW";
const file = path.join(root, "builders", `${version}.json`);
const { mmdebstrapArgs } = await import(path.join(root, "dist/src/engine/debian-base.js"));
const { installedPackages } = await import(path.join(root, "dist/src/engine/debian-pins.js"));

const b = JSON.parse(readFileSync(file, "utf8"));
const sets = new Map(); // `${suite} ${packages}` -> { suite, packages }
for (const [series, entry] of Object.entries(b.debian.python)) {
  const own = entry.python === "standalone" ? (b.debian.standalonePackages ?? b.debian.packages) : b.debian.packages;
  const packages = [...new Set([...own, ...(b.debian.toolchain ?? [])])].sort();
  sets.set(`${entry.suite} ${packages.join(",")}`, { suite: entry.suite, packages, series });
}

const pins = {};
for (const { suite, packages, series } of sets.values()) {
  const work = mkdtempSync(path.join(os.tmpdir(), "strata-pins-"));
  try {
    const tar = path.join(work, "rootfs.tar");
    console.error(`record-debian-pins: ${suite} (Python ${series}'s set: ${packages.join(" ")})`);
    const spec = {
      kind: "debian",
      python: series,
      suite,
      mirror: b.debian.mirror,
      variant: b.debian.variant,
      packages,
      cmd: b.debian.cmd,
    };
    execFileSync("mmdebstrap", mmdebstrapArgs(spec, tar), { stdio: ["ignore", "ignore", "inherit"] });
    const status = execFileSync("tar", ["-xOf", tar, "./var/lib/dpkg/status"], { maxBuffer: 64 << 20 }).toString();
    const into = (pins[suite] ??= {});
    for (const [name, v] of installedPackages(status)) {
      if (into[name] !== undefined && into[name] !== v)
        throw new Error(
          `${suite}: ${name} came out as ${into[name]} and ${v} (the archive changed while recording); run again`,
        );
      into[name] = v;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
b.debian.pins = Object.fromEntries(
  Object.entries(pins)
    .sort(([x], [y]) => (x < y ? -1 : 1))
    .map(([suite, p]) => [suite, Object.fromEntries(Object.entries(p).sort(([x], [y]) => (x < y ? -1 : 1)))]),
);
writeFileSync(file, `${JSON.stringify(b, null, 2)}\n`);
console.error(
  `record-debian-pins: wrote ${Object.entries(pins)
    .map(([s, p]) => `${Object.keys(p).length} ${s}`)
    .join(", ")} versions to ${file}`,
);
