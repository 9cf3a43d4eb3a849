/**
 * `strata explain --builder-version [--json]`: the builder version a build would use now (STRATA_BUILDER_VERSION, else
 * the default) and what it pins — the Debian archive and suites per Python series, the packages of a `debianSlim`
 * base, the tool versions, the python-build-standalone releases — plus the versions this Strata knows. A builder
 * version is part of every cache key, so this is what decides whether two machines share cache entries.
 */
import { knownBuilderVersions, loadBuilderVersion } from "../builder-version.js";

type Json = Record<string, unknown>;

const obj = (v: unknown): Json => (v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});
const list = (v: unknown): string => (Array.isArray(v) ? v.map(String).join(", ") : "");

/** The report as text (pure): fields a builder file lacks are left out, so older and newer files both read well. */
export function formatBuilderVersion(b: Json, source: string, known: readonly string[]): string {
  const lines = [`builder version ${String(b.version)} (${source})`];
  if (typeof b.description === "string") lines.push(`  ${b.description}`);
  const debian = obj(b.debian);
  if (Object.keys(debian).length) {
    lines.push("debian (debianSlim bases):");
    for (const k of ["mirror", "snapshot", "variant", "defaultPython"])
      if (debian[k] !== undefined) lines.push(`  ${k}: ${String(debian[k])}`);
    const series = Object.entries(obj(debian.python)).map(([py, v]) => {
      const e = obj(v);
      return `${py} → ${[e.suite, e.source].filter((x) => typeof x === "string").join(" ") || JSON.stringify(v)}`;
    });
    if (series.length) lines.push(`  python series: ${series.join("; ")}`);
    if (Array.isArray(debian.packages)) lines.push(`  packages: ${list(debian.packages)}`);
    if (Array.isArray(debian.cmd)) lines.push(`  CMD: ${JSON.stringify(debian.cmd)}`);
  }
  const tools = Object.entries(obj(b.tools));
  if (tools.length) {
    lines.push("tools:");
    for (const [name, v] of tools) {
      const t = obj(v);
      const version = t.defaultVersion ?? t.version;
      lines.push(`  ${name}: ${version !== undefined ? String(version) : JSON.stringify(v)}`);
    }
  }
  const releases = Object.entries(obj(obj(b.pythonStandalone).releases));
  if (releases.length) {
    lines.push("python-build-standalone (addPython):");
    for (const [py, v] of releases) {
      const r = obj(v);
      lines.push(`  ${py}: ${String(r.version ?? "?")} (release ${String(r.release ?? "?")})`);
    }
  }
  if (typeof b.sourceDateEpoch === "number")
    lines.push(`layer timestamps clamped to ${new Date(b.sourceDateEpoch * 1000).toISOString()}`);
  lines.push(`known versions: ${known.join(", ")} (choose one with STRATA_BUILDER_VERSION or --builder-version)`);
  return lines.join("\n") + "\n";
}

/** Prints the builder version in force (see the module comment). */
export function printBuilderVersion(json: boolean): number {
  const env = process.env.STRATA_BUILDER_VERSION;
  const b = loadBuilderVersion() as unknown as Json;
  if (json) {
    process.stdout.write(JSON.stringify(b) + "\n");
    return 0;
  }
  const source = env ? "from STRATA_BUILDER_VERSION" : "the default";
  process.stdout.write(formatBuilderVersion(b, source, knownBuilderVersions()));
  return 0;
}
