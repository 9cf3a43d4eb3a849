/** Builds a Debian root filesystem with mmdebstrap from Debian's archive (the `debianSlim` base). */
import { promises as fsp } from "node:fs";
import { execa } from "execa";
import { unmountUnder } from "../layer/overlay.js";
import { MissingToolError, StepFailedError } from "../errors.js";
import type { BaseSpec } from "../plan/step.js";

type DebianSpec = Extract<BaseSpec, { kind: "debian" }>;

export function mmdebstrapArgs(spec: DebianSpec, target: string): string[] {
  return [
    `--variant=${spec.variant}`,
    `--include=${spec.packages.join(",")}`,
    "--aptopt=Acquire::Retries \"3\"",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    // pip may install system-wide, as in the official python images; apt stays non-interactive.
    "--customize-hook=rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED",
    "--customize-hook=echo 'debconf debconf/frontend select Noninteractive' | chroot \"$1\" debconf-set-selections",
    "--customize-hook=rm -f \"$1\"/etc/resolv.conf \"$1\"/etc/hostname",
    spec.suite,
    target,
    spec.mirror,
  ];
}

export async function buildDebianRootfs(spec: DebianSpec, target: string, onOutput: (line: string) => void, stepIndex: number): Promise<void> {
  await fsp.mkdir(target, { recursive: true });
  const started = Date.now();
  const proc = execa("mmdebstrap", mmdebstrapArgs(spec, target), { reject: false, all: true, buffer: false });
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
