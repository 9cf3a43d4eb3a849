/** Builds a Debian root filesystem with mmdebstrap from Debian's archive (the `debianSlim` base). */
import { promises as fsp } from "node:fs";
import { execa } from "execa";
import { unmountUnder } from "../layer/overlay.js";
import { InvalidDefinitionError, MissingToolError, StepFailedError } from "../errors.js";
import type { BaseSpec } from "../plan/step.js";

type DebianSpec = Extract<BaseSpec, { kind: "debian" }>;

const RECIPE_HELP = "debianSlim recipes come from builders/<version>.json; use a released builder version";

/**
 * A recipe value that goes into mmdebstrap's argv: never an option (`-…`), never more than one word (whitespace would
 * let a mirror carry `[trusted=yes]` or a second sources line), never empty. `separator` is refused too where the
 * value is one item of a list mmdebstrap splits (`--include=a,b`).
 */
export function checkArgvValue(field: string, value: unknown, separator?: string): string {
  const fix = RECIPE_HELP;
  if (typeof value !== "string" || value === "") throw new InvalidDefinitionError(`debianSlim: ${field} must be a non-empty string, got ${JSON.stringify(value)}; ${fix}`);
  const shown = JSON.stringify(value.length > 80 ? value.slice(0, 80) + "…" : value);
  if (value.startsWith("-")) throw new InvalidDefinitionError(`debianSlim: ${field} ${shown} starts with "-", so mmdebstrap would read it as an option; ${fix}`);
  if (/[\s\0]/.test(value)) throw new InvalidDefinitionError(`debianSlim: ${field} ${shown} contains whitespace or a NUL character; ${fix}`);
  if (separator !== undefined && value.includes(separator)) throw new InvalidDefinitionError(`debianSlim: ${field} ${shown} contains "${separator}", which would name more than one item; ${fix}`);
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
  if (!Array.isArray(spec.packages) || spec.packages.length === 0) throw new InvalidDefinitionError(`debianSlim: packages must be a non-empty list of package names; ${RECIPE_HELP}`);
  const packages = spec.packages.map((p, i) => checkArgvValue(`packages[${i}]`, p, ","));
  return [
    `--variant=${variant}`,
    `--include=${packages.join(",")}`,
    "--aptopt=Acquire::Retries \"3\"",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    // pip may install system-wide, as in the official python images; apt stays non-interactive.
    "--customize-hook=rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED",
    "--customize-hook=echo 'debconf debconf/frontend select Noninteractive' | chroot \"$1\" debconf-set-selections",
    "--customize-hook=rm -f \"$1\"/etc/resolv.conf \"$1\"/etc/hostname",
    "--",
    suite,
    target,
    mirror,
  ];
}

export async function buildDebianRootfs(spec: DebianSpec, target: string, onOutput: (line: string) => void, stepIndex: number): Promise<void> {
  const args = mmdebstrapArgs(spec, target); // checked before anything is created or run
  await fsp.mkdir(target, { recursive: true });
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
    throw new MissingToolError("mmdebstrap", "debianSlim builds its base with mmdebstrap: `apt-get install mmdebstrap` (or `npm run setup`)");
  }
  // mmdebstrap warns and carries on when it cannot unmount /proc or /sys of the chroot (busy): release them here so
  // they never end up in the layer.
  await unmountUnder(target);
  if (r.exitCode !== 0) {
    throw new StepFailedError(stepIndex, `debianSlim ${spec.suite}`, `mmdebstrap ${spec.suite}`, r.exitCode ?? null, tail, Date.now() - started);
  }
}
