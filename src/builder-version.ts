/** Builder versions: data files in `builders/` that freeze what bases and tools a build gets. */
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { InvalidDefinitionError, UnknownBuilderVersionError } from "./errors.js";

export interface BuilderVersion {
  version: string;
  description: string;
  sourceDateEpoch: number;
  debian: {
    mirror: string;
    variant: string;
    python: Record<string, { suite: string }>;
    defaultPython: string;
    packages: string[];
    cmd: string[];
  };
  tools: { uv: { defaultVersion: string; candidates: string[] } };
}

export const DEFAULT_BUILDER_VERSION = "2026.11";

/** The repository root (where `builders/` lives), from this module's location in `dist/src/` or `src/`. */
export function packageRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return here.includes(`${path.sep}dist${path.sep}`) ? path.resolve(here, "../..") : path.resolve(here, "..");
}

export function knownBuilderVersions(): string[] {
  return readdirSync(path.join(packageRoot(), "builders"))
    .filter((f) => f.endsWith(".json"))
    .map((f) => f.slice(0, -5))
    .sort();
}

/** Loads a builder version: the argument, else STRATA_BUILDER_VERSION, else the default. */
export function loadBuilderVersion(
  version = process.env.STRATA_BUILDER_VERSION || DEFAULT_BUILDER_VERSION,
): BuilderVersion {
  const known = knownBuilderVersions();
  if (!known.includes(version)) throw new UnknownBuilderVersionError(version, known);
  return JSON.parse(readFileSync(path.join(packageRoot(), "builders", `${version}.json`), "utf8")) as BuilderVersion;
}

/** The Debian suite for a Python series, or a clear error naming the supported ones. */
export function debianSuiteFor(
  b: BuilderVersion,
  pythonVersion: string | undefined,
): { python: string; suite: string } {
  const python = pythonVersion ?? b.debian.defaultPython;
  // Own keys only: a series such as "__proto__" or "constructor" must not find an object's built-ins.
  const entry =
    typeof python === "string" && Object.hasOwn(b.debian.python, python) ? b.debian.python[python] : undefined;
  if (!entry) {
    throw new InvalidDefinitionError(
      `debianSlim: Python ${python} is not supported by builder version ${b.version}; supported: ${Object.keys(b.debian.python).join(", ")}`,
    );
  }
  return { python, suite: entry.suite };
}
