/** Builds a Debian root filesystem with mmdebstrap from Debian's archive (the `debianSlim` base). */
import { createReadStream, promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { extractLayer } from "../layer/tar-extract.js";
import {
  ConfigError,
  DebianArchiveDriftError,
  InvalidDefinitionError,
  MissingToolError,
  SandboxError,
  StepFailedError,
} from "../errors.js";
import type { BaseSpec } from "../plan/step.js";
import { installedPackages, pinDrift } from "./debian-pins.js";

type DebianSpec = Extract<BaseSpec, { kind: "debian" }>;

const RECIPE_HELP = "debianSlim recipes come from builders/<version>.json; use a released builder version";

/**
 * A recipe value that goes into mmdebstrap's argv: never an option (`-…`), never more than one word (whitespace would
 * let a mirror carry `[trusted=yes]` or a second sources line), never empty. `separator` is refused too where the
 * value is one item of a list mmdebstrap splits (`--include=a,b`).
 */
export function checkArgvValue(field: string, value: unknown, separator?: string): string {
  const fix = RECIPE_HELP;
  if (typeof value !== "string" || value === "")
    throw new InvalidDefinitionError(
      `debianSlim: ${field} must be a non-empty string, got ${JSON.stringify(value)}; ${fix}`,
    );
  const shown = JSON.stringify(value.length > 80 ? value.slice(0, 80) + "…" : value);
  if (value.startsWith("-"))
    throw new InvalidDefinitionError(
      `debianSlim: ${field} ${shown} starts with "-", so mmdebstrap would read it as an option; ${fix}`,
    );
  if (/[\s\0]/.test(value))
    throw new InvalidDefinitionError(`debianSlim: ${field} ${shown} contains whitespace or a NUL character; ${fix}`);
  if (separator !== undefined && value.includes(separator))
    throw new InvalidDefinitionError(
      `debianSlim: ${field} ${shown} contains "${separator}", which would name more than one item; ${fix}`,
    );
  return value;
}

/**
 * mmdebstrap's argv for a recipe. Every recipe value is checked ({@link checkArgvValue}), and `--` ends the options
 * before the positional suite, target and mirror, so no value can become an option (e.g. a `--setup-hook`, which
 * mmdebstrap runs as root on the host).
 */
export function mmdebstrapArgs(spec: DebianSpec, target: string): string[] {
  const suite = checkArgvValue("suite", spec.suite);
  const mirror = checkArgvValue("mirror", spec.mirror);
  const variant = checkArgvValue("variant", spec.variant);
  if (!Array.isArray(spec.packages) || spec.packages.length === 0)
    throw new InvalidDefinitionError(`debianSlim: packages must be a non-empty list of package names; ${RECIPE_HELP}`);
  const packages = spec.packages.map((p, i) => checkArgvValue(`packages[${i}]`, p, ","));
  return [
    // Unprivileged: the chroot, its maintainer scripts and hooks run in a user namespace (root's subordinate ids), and
    // the result comes out as a tarball the builder extracts itself. No device nodes (a container's /dev is a tmpfs).
    "--mode=unshare",
    "--skip=output/dev",
    `--variant=${variant}`,
    `--include=${packages.join(",")}`,
    '--aptopt=Acquire::Retries "3"',
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    // pip may install system-wide, as in the official python images; apt stays non-interactive.
    '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    "--customize-hook=echo 'debconf debconf/frontend select Noninteractive' | chroot \"$1\" debconf-set-selections",
    '--customize-hook=rm -f "$1"/etc/resolv.conf "$1"/etc/hostname',
    "--",
    suite,
    target,
    mirror,
  ];
}

/** Root's subordinate id ranges (`/etc/subuid`, `/etc/subgid`), which mmdebstrap's unshare mode maps the chroot to. */
async function requireSubordinateIds(): Promise<void> {
  const user = os.userInfo().username;
  for (const file of ["/etc/subuid", "/etc/subgid"]) {
    const text = await fsp.readFile(file, "utf8").catch(() => "");
    const ok = text.split("\n").some((l) => {
      const [name, , count] = l.trim().split(":");
      return (name === user || name === String(process.getuid?.())) && Number(count) >= 65536;
    });
    if (!ok) {
      throw new SandboxError(
        `debianSlim builds its base unprivileged (mmdebstrap --mode=unshare), which needs ${file} to give ${user} at least 65536 subordinate ids: ` +
          "run `npm run setup` (it adds them), or add a line such as `" +
          `${user}:1500000000:65536` +
          "` to /etc/subuid and /etc/subgid",
      );
    }
  }
}

/**
 * What a base whose packages moved on does: `error` (the default) refuses it; `warn` (STRATA_DEBIAN_PINS=warn, an
 * operator's explicit choice, e.g. for CI after a Debian point release) builds it, says so in the step's log, and
 * caches it under the builder version's key — so two stores may then hold different packages under one key.
 */
export type PinMode = "error" | "warn";

/** STRATA_DEBIAN_PINS as a PinMode; anything else is an error naming the variable. */
export function pinModeFromEnv(env: NodeJS.ProcessEnv = process.env): PinMode {
  const v = env.STRATA_DEBIAN_PINS?.trim();
  if (v === undefined || v === "" || v === "error") return "error";
  if (v === "warn") return "warn";
  throw new ConfigError(`STRATA_DEBIAN_PINS is "error" (the default) or "warn", got "${v}"`);
}

/**
 * Checks a built root filesystem's packages against the recorded versions (`spec.pins`), if any: a
 * DebianArchiveDriftError names every package the archive moved on, or, with `mode` `warn`, `warn` is told.
 */
export async function checkPins(
  spec: DebianSpec,
  rootfs: string,
  builderVersion: string,
  mode: PinMode = "error",
  warn: (line: string) => void = () => undefined,
): Promise<void> {
  if (!spec.pins) return;
  const status = await fsp.readFile(path.join(rootfs, "var/lib/dpkg/status"), "utf8");
  const drift = pinDrift(spec.pins, installedPackages(status));
  if (!drift.length) return;
  const error = new DebianArchiveDriftError(builderVersion, spec.suite, drift);
  if (mode === "error") throw error;
  warn(`warning (STRATA_DEBIAN_PINS=warn): ${error.message}`);
}

/**
 * Builds the Debian root filesystem into `target` (a new directory): mmdebstrap in unshare mode writes a tarball next
 * to it, which is extracted with the builder's own extractor (owners, modes and xattrs as the chroot had them). A
 * recorded package set (`spec.pins`) is checked before the caller commits anything.
 */
export async function buildDebianRootfs(
  spec: DebianSpec,
  target: string,
  onOutput: (line: string) => void,
  stepIndex: number,
  builderVersion = "",
): Promise<void> {
  const tarball = `${target}.tar`;
  const args = mmdebstrapArgs(spec, tarball); // checked before anything is created or run
  await requireSubordinateIds();
  const started = Date.now();
  const proc = execa("mmdebstrap", args, { reject: false, all: true, buffer: false });
  const tail: string[] = [];
  proc.all?.on("data", (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n").filter(Boolean)) {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      onOutput(line);
    }
  });
  const r = await proc;
  if (r.failed && (r as { code?: string }).code === "ENOENT") {
    throw new MissingToolError(
      "mmdebstrap",
      "debianSlim builds its base with mmdebstrap: `apt-get install mmdebstrap` (or `npm run setup`)",
    );
  }
  try {
    if (r.exitCode !== 0) {
      throw new StepFailedError(
        stepIndex,
        `debianSlim ${spec.suite}`,
        `mmdebstrap ${spec.suite}`,
        r.exitCode ?? null,
        tail,
        Date.now() - started,
      );
    }
    await fsp.mkdir(target, { recursive: true });
    await extractLayer(createReadStream(tarball), target, { gzip: false, onWarning: onOutput });
    await checkPins(spec, target, builderVersion, pinModeFromEnv(), onOutput);
  } finally {
    await fsp.rm(tarball, { force: true });
  }
}
