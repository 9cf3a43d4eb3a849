/**
 * The sandbox's user namespace: a step's root is host uid/gid HOST_ID_BASE (…+65535 for the image's other ids), not
 * host root. Layers keep the image's own ids on disk — a file a step's root makes is uid 0 in its layer tar, one it
 * chowns to 1000 is 1000 — because the step sees its filesystem through idmapped mounts (Linux ≥ 5.19 for overlayfs on
 * idmapped layers, 6.3 for tmpfs): the step's overlay is mounted again, for the run only, over idmapped clones of its
 * lower dirs and of its upper/work dirs, and each bind mount's source is an idmapped clone too. Nothing is chowned and
 * nothing on disk changes ownership, so cached layers and their diffIDs are the same with or without the namespace.
 *
 * The mounts are made (and undone) by `strata-sandbox-helper mounts` (src/sandbox/native/sandbox-helper.c), one exec
 * each way per step, with the user namespace of the step's prepared network namespace (netns.ts), which maps
 * 0 → HOST_ID_BASE for 65536 ids.
 */
import { constants as fsConstants, promises as fsp } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { ConfigError, MissingToolError, SandboxError } from "../errors.js";
import { overlayLowersTopFirst, overlayOptions, overlayOptionsOf } from "../layer/overlay.js";
import { HOST_ID_BASE } from "./ids.js";
import type { BindMount } from "./runtime-spec.js";

/** STRATA_USERNS=0 runs steps as host root (no user namespace), as before issue 9; anything else keeps it on. */
export function usernsEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.STRATA_USERNS;
  if (v === undefined || v === "" || v === "1") return true;
  if (v === "0") return false;
  throw new ConfigError(`STRATA_USERNS=${JSON.stringify(v)}: expected 1 (default: steps run in a user namespace) or 0`);
}

/** The compiled helper (`npm run build` puts it in dist/native/). */
export function sandboxHelper(): string {
  return (
    process.env.STRATA_SANDBOX_HELPER || fileURLToPath(new URL("../../native/strata-sandbox-helper", import.meta.url))
  );
}

/** The helper, or a MissingToolError saying how to get it. */
export async function requireSandboxHelper(): Promise<string> {
  const helper = sandboxHelper();
  if (
    !(await fsp.access(helper, fsConstants.X_OK).then(
      () => true,
      () => false,
    ))
  ) {
    throw new MissingToolError(
      "strata-sandbox-helper",
      `${helper} is missing: \`npm run build\` compiles it from src/sandbox/native/sandbox-helper.c (it needs gcc: \`npm run setup\`)`,
    );
  }
  return helper;
}

export interface IdmappedView {
  /** What runc gets as root.path. */
  rootfs: string;
  /** The step's bind mounts with their sources replaced by clones in the bundle (idmapped where the filesystem allows). */
  mounts: BindMount[];
  /** Unmounts the clones and, for an overlay, mounts it back as it was. */
  restore(): Promise<void>;
}

/** The helper's arguments (pure): binds of lower parents and the upper's parent, then the overlay, or a plain rootfs. */
export function idmapPlan(o: {
  stage: string;
  rootfs: string;
  overlayDir?: string;
  lowersTopFirst: readonly string[];
  mounts: readonly BindMount[];
}): { args: string[]; links: [string, string][]; rootfs: string; targets: string[]; mountTargets: string[] } {
  const args: string[] = [];
  const links: [string, string][] = [];
  const targets: string[] = [];
  let rootfs = o.rootfs;
  if (o.overlayDir !== undefined) {
    const parents = [...new Set(o.lowersTopFirst.map((l) => path.dirname(l)))];
    parents.forEach((p, i) => {
      args.push("bind", p, `idl/${i}`);
      targets.push(path.join(o.stage, `idl/${i}`));
    });
    for (const [i, l] of o.lowersTopFirst.entries()) {
      links.push([
        `li/${i.toString(36)}`,
        path.join(o.stage, `idl/${parents.indexOf(path.dirname(l))}`, path.basename(l)),
      ]);
    }
    args.push("bind", o.overlayDir, "idw");
    targets.push(path.join(o.stage, "idw"));
    // Mounted in the bundle, not at the engine's merged dir: runc reaches the rootfs from inside the user namespace,
    // and the store may sit below directories only host root can pass (~root, a 0700 mkdtemp).
    args.push(
      "overlay",
      "rootfs",
      overlayOptions(
        links.map(([n]) => n),
        "idw/upper",
        "idw/work",
      ),
    );
    rootfs = path.join(o.stage, "rootfs");
    targets.push(rootfs);
  } else {
    args.push("bind", o.rootfs, "rootfs");
    rootfs = path.join(o.stage, "rootfs");
    targets.push(rootfs);
  }
  const mountTargets = o.mounts.map((_, i) => path.join(o.stage, `b/${i}`));
  for (const [i, m] of o.mounts.entries()) args.push("bind?", m.source, `b/${i}`);
  return { args, links, rootfs, targets, mountTargets };
}

/**
 * Makes the step's filesystem and bind sources visible through the user namespace `userns` (a path such as
 * /proc/<pid>/ns/user). `stage` is a fresh directory (the step's bundle) for the clones. With `overlayDir`, `rootfs` is
 * that overlay's merged dir: it is unmounted, mounted over idmapped layers for the run, and restored by `restore()`.
 */
export async function idmapView(o: {
  userns: string;
  stage: string;
  rootfs: string;
  overlayDir?: string;
  mounts: readonly BindMount[];
}): Promise<IdmappedView> {
  const helper = await requireSandboxHelper();
  const lowersTopFirst = o.overlayDir !== undefined ? await overlayLowersTopFirst(o.overlayDir) : [];
  const plan = idmapPlan({ ...o, lowersTopFirst });
  for (const t of plan.targets) await fsp.mkdir(t, { recursive: true });
  for (const [name, target] of plan.links) {
    await fsp.mkdir(path.join(o.stage, path.dirname(name)), { recursive: true });
    await fsp.symlink(target, path.join(o.stage, name));
  }
  // A bind target must be the same kind as its source.
  for (const [i, m] of o.mounts.entries()) {
    const st = await fsp.stat(m.source);
    await fsp.mkdir(path.dirname(plan.mountTargets[i]!), { recursive: true });
    if (st.isDirectory()) await fsp.mkdir(plan.mountTargets[i]!);
    else await fsp.writeFile(plan.mountTargets[i]!, "");
  }
  const made = [...plan.targets, ...plan.mountTargets];
  const plainOptions = o.overlayDir !== undefined ? await overlayOptionsOf(o.overlayDir) : undefined;
  // Undoing is one exec too: detach the step's overlay and the clones, mount the overlay back as the engine had it.
  const restore = async () => {
    const ops = [...made].reverse().flatMap((t) => ["umount", t, "-"]);
    if (plainOptions) ops.push("host-overlay", "merged", plainOptions);
    const u = await execa(helper, ["mounts", "-", String(HOST_ID_BASE), ...ops], {
      cwd: o.overlayDir ?? o.stage,
      reject: false,
    });
    if (u.exitCode !== 0)
      throw new SandboxError(
        `could not give the step's files back to the builder after the run: ${u.stderr.trim() || u.message}`,
      );
  };
  // The engine's overlay (host ids) is detached first: the same upper dir cannot be in two overlays at once.
  const ops = plainOptions ? ["umount", o.rootfs, "-", ...plan.args] : plan.args;
  const r = await execa(helper, ["mounts", o.userns, String(HOST_ID_BASE), ...ops], { cwd: o.stage, reject: false });
  if (r.exitCode !== 0) {
    await restore().catch(() => undefined);
    throw new SandboxError(
      `could not give the step its user namespace's view of its files: ${r.stderr.trim() || r.message}`,
    );
  }
  // A source on a filesystem that cannot be idmapped is still cloned into the bundle (`plain <source>`), so runc
  // reaches it from inside the namespace; the step sees its owners as nobody.
  const mounts = o.mounts.map((m, i) => ({ ...m, source: plan.mountTargets[i]! }));
  return { rootfs: plan.rootfs, mounts, restore };
}
