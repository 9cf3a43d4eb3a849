// UpperTarget (COPY into an upper dir without a mount) must leave exactly the upper dir that the same COPY through a
// real overlay mount (MountedTarget) leaves, over lowers with whiteouts, opaque directories and symlinks.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { promises as fsp, lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { walkContext } from "../../src/context/walk.js";
import { copyLocal } from "../../src/engine/copy-local.js";
import type { ResolvedInput } from "../../src/engine/inputs.js";
import { dockerCopy } from "../../src/engine/docker-copy.js";
import {
  MountedTarget,
  NeedsMountError,
  opaqueDirsOf,
  resolveInImage,
  UpperTarget,
  type CopyTarget,
} from "../../src/layer/copy-target.js";
import { mountOverlay, unmountOverlay } from "../../src/layer/overlay.js";

/** The layer epoch the targets give what they make without a source. */
const EPOCH_MS = 1_767_225_600_000;
/** Context mtimes (seconds), distinct per entry so a swapped or lost time shows. */
const CTX_TIMES: Record<string, number> = {
  sub: 1_600_000_001,
  "sub/deep": 1_600_000_002,
  "sub/one.txt": 1_600_000_003,
  "sub/deep/two.sh": 1_600_000_004,
  x: 1_800_000_005,
  "sub/alias": 1_600_000_006,
};

const roots: string[] = [];
after(async () => {
  for (const r of roots) await fsp.rm(r, { recursive: true, force: true });
});

async function tmp(): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-copytarget-"));
  roots.push(d);
  return d;
}

/** Bottom layer, and a top layer with a whiteout, an opaque directory and a symlink over a lower directory. */
async function makeLowers(root: string): Promise<string[]> {
  const l0 = path.join(root, "l0");
  const l1 = path.join(root, "l1");
  const w = async (base: string, rel: string, data: string, mode = 0o644) => {
    await fsp.mkdir(path.dirname(path.join(base, rel)), { recursive: true });
    await fsp.writeFile(path.join(base, rel), data, { mode });
  };
  await w(l0, "a/old.txt", "old");
  await fsp.chmod(path.join(l0, "a"), 0o750);
  await fsp.chown(path.join(l0, "a"), 5, 6);
  await w(l0, "gone/file", "gone");
  await w(l0, "opq/hidden", "hidden");
  await w(l0, "d/x", "lower x");
  await w(l0, "etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n");
  await w(l0, "etc/group", "root:x:0:\nstaff:x:50:\n");
  await fsp.mkdir(path.join(l0, "was-dir/inner"), { recursive: true });
  await fsp.mkdir(path.join(l0, "usr/local/bin"), { recursive: true });
  await fsp.symlink("/a", path.join(l0, "link"));
  await fsp.mkdir(path.join(l1, "opq"), { recursive: true });
  await w(l1, "opq/new", "new");
  execFileSync("setfattr", ["-n", "trusted.overlay.opaque", "-v", "y", path.join(l1, "opq")]);
  execFileSync("mknod", [path.join(l1, "gone"), "c", "0", "0"]);
  await fsp.symlink("a", path.join(l1, "was-dir"));
  return [l0, l1];
}

async function makeContext(root: string): Promise<string> {
  const ctx = path.join(root, "ctx");
  await fsp.mkdir(path.join(ctx, "sub/deep"), { recursive: true });
  await fsp.writeFile(path.join(ctx, "sub/one.txt"), "one");
  await fsp.writeFile(path.join(ctx, "sub/deep/two.sh"), "#!/bin/sh\n", { mode: 0o755 });
  await fsp.writeFile(path.join(ctx, "x"), "context x");
  await fsp.symlink("one.txt", path.join(ctx, "sub/alias"));
  // Deepest first: setting a child's time does not change its directory's, but creating it did.
  for (const [rel, t] of Object.entries(CTX_TIMES).reverse()) await fsp.lutimes(path.join(ctx, rel), t, t);
  return ctx;
}

type Tree = Record<string, string>;

/** Every entry under `dir`: type, mode, owner, mtime (whole seconds), and content or link target. */
function tree(dir: string, rel = ""): Tree {
  const out: Tree = {};
  for (const name of readdirSync(path.join(dir, rel)).sort()) {
    const r = path.join(rel, name);
    const p = path.join(dir, r);
    const st = lstatSync(p);
    const t = `@${Math.floor(st.mtimeMs / 1000)}`;
    const meta = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
    if (st.isDirectory()) {
      out[r + "/"] = `${meta} ${t}`;
      Object.assign(out, tree(dir, r));
    } else if (st.isSymbolicLink()) out[r] = `link ${readlinkSync(p)} ${st.uid}:${st.gid} ${t}`;
    else if (st.isCharacterDevice()) out[r] = `char ${st.rdev}`;
    else out[r] = `${meta} ${t} ${readFileSync(p, "utf8")}`;
  }
  return out;
}

/** Runs `fn` against a mounted overlay and against an UpperTarget over the same lowers; returns both upper trees. */
async function both(fn: (t: CopyTarget, ctx: string) => Promise<void> | void): Promise<{ mounted: Tree; upper: Tree }> {
  const root = await tmp();
  const lowers = await makeLowers(root);
  const ctx = await makeContext(root);
  const dirs = await mountOverlay(path.join(root, "m"), lowers);
  try {
    const mounted = new MountedTarget(dirs.merged, { upper: dirs.upper, epochMs: EPOCH_MS });
    await fn(mounted, ctx);
    mounted.finishTimes();
  } finally {
    await unmountOverlay(dirs);
  }
  const topFirst = [...lowers].reverse();
  const opaque = await Promise.all(topFirst.map((l) => opaqueDirsOf(l, path.join(root, "meta"))));
  const upper = path.join(root, "u");
  const pool = { poolDir: path.join(root, "pool"), hashedAfterMs: Date.now() + 60_000, epochMs: EPOCH_MS };
  const target = new UpperTarget(upper, topFirst, { ...pool, opaque });
  await fn(target, ctx);
  target.finishTimes();
  return { mounted: tree(dirs.upper), upper: tree(upper) };
}

const dirInput = async (ctx: string, rel: string): Promise<ResolvedInput> => ({
  input: { kind: "dir", name: "ctx", localPath: path.join(ctx, rel), ignore: [] },
  entries: await walkContext(path.join(ctx, rel)),
});

describe("UpperTarget leaves what a mounted COPY leaves", () => {
  test("SDK COPY through a symlinked parent, into a whiteout'd path, an opaque directory, over a lower file", async () => {
    const r = await both(async (t, ctx) => {
      copyLocal(t, await dirInput(ctx, "sub"), "/link/sub");
      copyLocal(t, await dirInput(ctx, "sub"), "/gone/again");
      copyLocal(t, await dirInput(ctx, "sub"), "/opq");
      const x = (await walkContext(ctx)).find((e) => e.relPath === "x")!;
      copyLocal(t, { input: { kind: "file", name: "x", localPath: path.join(ctx, "x") }, entries: [x] }, "/d/x");
      copyLocal(
        t,
        { input: { kind: "inline", name: "i", content: "inline", mode: 0o600 }, entries: [] },
        "/new/dir/inline",
      );
    });
    assert.deepEqual(r.upper, r.mounted);
    assert.ok(r.upper["a/sub/one.txt"]?.endsWith(" one"), "the symlinked parent resolved inside the image");
    assert.ok(!("opq/hidden" in r.upper));
    // mtimes: copied entries keep their sources' (issue 12 item 15); what the copy made or changed has the epoch.
    const epoch = `@${EPOCH_MS / 1000}`;
    assert.match(r.upper["a/sub/one.txt"]!, / @1600000003 one$/);
    assert.match(r.upper["a/sub/deep/two.sh"]!, / @1600000004 /);
    assert.match(r.upper["a/sub/deep/"]!, / @1600000002$/);
    assert.match(r.upper["a/sub/alias"]!, / @1600000006$/);
    assert.match(r.upper["d/x"]!, / @1800000005 context x$/);
    assert.ok(r.upper["a/sub/"]!.endsWith(epoch), "the destination made for the copy");
    assert.ok(r.upper["a/"]!.endsWith(epoch), "an existing directory the copy added to");
    assert.ok(r.upper["new/dir/inline"]!.includes(epoch), "inline content has no source time");
  });

  test("Dockerfile COPY: dir and file matches, --chown by name, --chmod, onto a symlink that replaces a lower dir", async () => {
    const r = await both(async (t, ctx) => {
      const entries = await walkContext(ctx);
      const input: ResolvedInput = {
        input: {
          kind: "select",
          name: "src",
          root: { kind: "context", localPath: ctx, ignore: [] },
          patterns: ["sub", "x"],
        },
        entries,
        matches: [
          { rel: "sub", real: "sub", type: "dir" },
          { rel: "x", real: "x", type: "file" },
        ],
      };
      await dockerCopy({
        target: t,
        ins: {
          op: "COPY",
          source: "src",
          sources: ["sub", "x"],
          dest: "/was-dir/",
          chown: "app:staff",
          chmod: "u=rwX,go=rX",
        },
        inputs: [input],
        workdir: "/",
        where: "test",
      });
      await dockerCopy({
        target: t,
        ins: { op: "COPY", source: "src", sources: ["sub"], dest: "opq/sub" },
        inputs: [{ ...input, matches: [input.matches![0]!] }],
        workdir: "/",
        where: "test",
      });
    });
    assert.deepEqual(r.upper, r.mounted);
    assert.match(
      r.upper["a/x"] ?? "",
      /^644 1000:50 @1800000005 context x$/,
      "written through the symlink /was-dir -> a, owned app:staff, with its source's mtime",
    );
    assert.match(r.upper["opq/sub/"]!, / @1600000001$/, "a directory copied to a new path keeps its mtime");
    assert.match(r.upper["a/deep/"]!, / @1600000002$/);
  });

  test("Dockerfile COPY of a tree whose first entry is a lower directory below a lower destination", async () => {
    // `COPY --from=python-build-standalone /python/. /usr/local` onto a base with /usr/local/bin: `bin` is the first
    // entry, and its metadata is set on the lower directory before anything has copied up /usr or /usr/local.
    const src = await tmp();
    await fsp.mkdir(path.join(src, "python/bin"), { recursive: true });
    await fsp.writeFile(path.join(src, "python/bin/python3"), "#!/bin/sh\n", { mode: 0o755 });
    const input: ResolvedInput = {
      input: {
        kind: "select",
        name: "src",
        root: { kind: "context", localPath: src, ignore: [] },
        patterns: ["/python/."],
      },
      entries: await walkContext(src),
      matches: [{ rel: "python", real: "python", type: "dir" }],
    };
    const r = await both(async (t) => {
      await dockerCopy({
        target: t,
        ins: { op: "COPY", source: "src", sources: ["/python/."], dest: "/usr/local", from: "python-build-standalone" },
        inputs: [input],
        workdir: "/",
        where: "test",
      });
    });
    assert.deepEqual(r.upper, r.mounted);
    assert.ok(r.upper["usr/local/bin/python3"], JSON.stringify(r.upper));
  });

  test("resolveInImage stays inside the image; recreating a lower directory needs a mount", async () => {
    const root = await tmp();
    const lowers = await makeLowers(root);
    const t = new UpperTarget(path.join(root, "u"), [...lowers].reverse(), {
      poolDir: path.join(root, "pool"),
      hashedAfterMs: 0,
      epochMs: EPOCH_MS,
      opaque: [new Set(), new Set()],
    });
    assert.equal(resolveInImage(t, "/link/../../etc"), "/etc");
    assert.equal(resolveInImage(t, "/link/x"), "/a/x");
    assert.equal(resolveInImage(t, "/link", true), "/a");
    assert.equal(t.lstat("/gone"), undefined, "a whiteout hides the lower directory");
    assert.equal(t.lstat("/gone/file"), undefined);
    assert.equal(t.readFile("/link/old.txt")?.toString(), "old");
    t.remove("/d");
    assert.throws(() => t.mkdir("/d", 0o755, 0, 0), NeedsMountError);
  });
});
