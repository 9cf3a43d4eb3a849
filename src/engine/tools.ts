/**
 * Builder-provided tools mounted read-only into a sandbox and never captured in a layer: `node` for runFunction
 * (the image's own if it has one, else this machine's node with its libraries and loader) and `uv`.
 */
import { promises as fsp, realpathSync } from "node:fs";
import path from "node:path";
import { MissingToolError } from "../errors.js";
import { secureJoin } from "../layer/secure-join.js";
import type { BindMount } from "../sandbox/runtime-spec.js";

const IMAGE_NODE = ["/usr/local/bin/node", "/usr/bin/node"];
const IMAGE_UV = ["/usr/local/bin/uv", "/usr/bin/uv", "/root/.local/bin/uv", "/root/.cargo/bin/uv"];

/**
 * The first candidate that is an executable file in the image. Symlinks are followed inside the image (`secureJoin`),
 * never on the host: an image's `/usr/local/bin/uv -> /etc/shadow` names the image's /etc/shadow.
 */
async function findInRootfs(rootfs: string, candidates: readonly string[]): Promise<string | undefined> {
  for (const c of candidates) {
    try {
      const st = await fsp.stat(secureJoin(rootfs, c));
      if (st.isFile() && st.mode & 0o111) return c;
    } catch {
      // not there
    }
  }
  return undefined;
}

export interface ToolPlacement {
  mounts: BindMount[];
  /** Rewrites a command line that starts with the tool's placeholder path. */
  argvPrefix: string[];
}

/** Where the host's dynamic loader and libraries are. */
function hostLibDirs(): { loader: string; libDirs: string[] } {
  return { loader: "/lib64/ld-linux-x86-64.so.2", libDirs: ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"] };
}

/** `node` for runFunction. The placeholder `/.strata/node/node` in argv is replaced by what this returns. */
export async function placeNode(rootfs: string): Promise<ToolPlacement> {
  const own = await findInRootfs(rootfs, IMAGE_NODE);
  if (own) return { mounts: [], argvPrefix: [own] };
  const nodeBin = realpathSync(process.execPath);
  const { loader, libDirs } = hostLibDirs();
  const mounts: BindMount[] = [
    { source: nodeBin, destination: "/.strata/node/bin/node", readonly: true },
    { source: realpathSync(loader), destination: "/.strata/node/ld.so", readonly: true },
  ];
  const libPath: string[] = [];
  for (const [i, d] of libDirs.entries()) {
    if (
      await fsp.stat(d).then(
        () => true,
        () => false,
      )
    ) {
      mounts.push({ source: realpathSync(d), destination: `/.strata/node/lib${i}`, readonly: true });
      libPath.push(`/.strata/node/lib${i}`);
    }
  }
  return { mounts, argvPrefix: ["/.strata/node/ld.so", "--library-path", libPath.join(":"), "/.strata/node/bin/node"] };
}

/** `uv` for uvPipInstall, mounted at `/.strata/uv`. */
export async function placeUv(rootfs: string, target: string): Promise<BindMount> {
  const configured = process.env.STRATA_UV_BINARY;
  if (configured) {
    const abs = path.resolve(configured);
    if (
      !(await fsp.access(abs).then(
        () => true,
        () => false,
      ))
    ) {
      throw new MissingToolError("uv", `STRATA_UV_BINARY points at ${abs}, which does not exist`);
    }
    return { source: realpathSync(abs), destination: target, readonly: true };
  }
  const own = await findInRootfs(rootfs, IMAGE_UV);
  // The file the image's path resolves to inside the image: a host path under rootfs with no symlink left in it.
  if (own) return { source: secureJoin(rootfs, own), destination: target, readonly: true };
  throw new MissingToolError(
    "uv",
    `uvPipInstall needs a uv binary: none in the image (${IMAGE_UV.join(", ")}) and STRATA_UV_BINARY is not set. ` +
      `Install uv in an earlier step (e.g. .pipInstall("uv")), set STRATA_UV_BINARY to a uv binary on this machine, ` +
      `or use builder version 2026.12 or later (STRATA_BUILDER_VERSION=2026.12), which provisions uv from its uv image.`,
  );
}
