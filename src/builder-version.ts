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
    /**
     * The Python series debianSlim offers: the suite, and where Python comes from — Debian's own (`"debian"`, the
     * default: `packages`) or python-build-standalone (`"standalone"`: `standalonePackages`, then the
     * `pythonStandalone` release copied to /usr/local as addPython does).
     */
    python: Record<string, { suite: string; python?: "debian" | "standalone" }>;
    defaultPython: string;
    /** The packages of a base with Debian's Python. */
    packages: string[];
    /** The packages of a base for a standalone Python (no Debian Python). Default: `packages`. */
    standalonePackages?: string[];
    /** Packages every base also gets (a compiler toolchain). Default: none. */
    toolchain?: string[];
    /**
     * The recorded version of every package a base of each suite may hold (suite → name → version): checked after
     * mmdebstrap, so a key always names the same packages (`scripts/record-debian-pins.mjs` writes it). Default: not
     * pinned (whatever the archive serves).
     */
    pins?: Record<string, Record<string, string>>;
    cmd: string[];
  };
  tools: {
    uv: {
      defaultVersion: string;
      candidates: string[];
      /**
       * The repository of the uv image (`ghcr.io/astral-sh/uv`; tag: the uv version) that uvPipInstall, uvSync and
       * debianSlim copy `/uv` from, keyed by content. Without it uv is the image's own or STRATA_UV_BINARY.
       */
      image?: string;
    };
  };
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

/** The builder versions (other than `b`'s own) that offer a Python series for debianSlim. */
function versionsOffering(b: BuilderVersion, python: string): string[] {
  const out: string[] = [];
  for (const v of knownBuilderVersions()) {
    if (v === b.version) continue;
    try {
      if (Object.hasOwn(loadBuilderVersion(v).debian.python, python)) out.push(v);
    } catch {
      // an unreadable file is reported when it is used
    }
  }
  return out;
}

/**
 * The Debian suite for a Python series and where its Python comes from, or a clear error naming the supported series
 * (and the builder versions that offer the asked one).
 */
export function debianSuiteFor(
  b: BuilderVersion,
  pythonVersion: string | undefined,
): { python: string; suite: string; source: "debian" | "standalone" } {
  const python = pythonVersion ?? b.debian.defaultPython;
  // Own keys only: a series such as "__proto__" or "constructor" must not find an object's built-ins.
  const entry =
    typeof python === "string" && Object.hasOwn(b.debian.python, python) ? b.debian.python[python] : undefined;
  if (!entry) {
    const elsewhere = typeof python === "string" ? versionsOffering(b, python) : [];
    throw new InvalidDefinitionError(
      `debianSlim: Python ${python} is not supported by builder version ${b.version}; supported: ${Object.keys(b.debian.python).join(", ")}` +
        (elsewhere.length
          ? `. Builder version ${elsewhere.join(", ")} offers it: set STRATA_BUILDER_VERSION=${elsewhere[0]} (or build({ builderVersion: "${elsewhere[0]}" }))`
          : ""),
    );
  }
  return { python, suite: entry.suite, source: entry.python ?? "debian" };
}
