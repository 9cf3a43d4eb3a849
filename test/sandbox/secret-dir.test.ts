// A step's secret files live on a tmpfs of its own under SECRETS_ROOT (/run), never in the store: made 0700, gone
// after the step, and reaped when its builder died. Needs root (it mounts tmpfs).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, promises as fsp, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { makeSecretDir, mountsAt, reapStaleSecretDirs, SECRETS_ROOT } from "../../src/sandbox/secret-dir.js";

const skip = process.getuid?.() !== 0 ? "needs root" : false;

/** Is there a tmpfs mounted exactly at `dir`? */
function tmpfsAt(dir: string): boolean {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .some((l) => {
      const [, at, type] = l.split(" ");
      return at === dir && type === "tmpfs";
    });
}

test("mountsAt lists the mount points at or below a dir, not its siblings, shallowest first", () => {
  const mounts = [
    "tmpfs /run/strata-secrets/strata-1-a tmpfs rw 0 0",
    "tmpfs /run/strata-secrets/strata-1-ab tmpfs rw 0 0",
    "tmpfs /run/strata-secrets/strata-1-a/x tmpfs rw 0 0",
    "proc /proc proc rw 0 0",
    "",
  ].join("\n");
  assert.deepEqual(mountsAt("/run/strata-secrets/strata-1-a/", mounts), [
    "/run/strata-secrets/strata-1-a",
    "/run/strata-secrets/strata-1-a/x",
  ]);
  assert.deepEqual(mountsAt("/run/strata-secrets/none", mounts), []);
});

test("makeSecretDir mounts a 0700 root tmpfs under SECRETS_ROOT; remove() unmounts and deletes it", {
  skip,
}, async () => {
  const s = await makeSecretDir("test step");
  try {
    assert.equal(path.dirname(s.dir), SECRETS_ROOT);
    assert.match(path.basename(s.dir), new RegExp(`^strata-${process.pid}-`));
    assert.ok(tmpfsAt(s.dir), "a tmpfs is mounted at the step's secrets dir");
    for (const d of [SECRETS_ROOT, s.dir]) {
      const st = await fsp.stat(d);
      assert.equal(st.mode & 0o777, 0o700, `${d} is 0700`);
      assert.equal(st.uid, 0);
    }
    await fsp.writeFile(path.join(s.dir, "secret-0"), "value", { mode: 0o400 });
  } finally {
    await s.remove();
  }
  assert.ok(!tmpfsAt(s.dir), "unmounted");
  assert.ok(!existsSync(s.dir), "the mount point is gone");
});

test("reapStaleSecretDirs removes a dead builder's secrets tmpfs and keeps a live builder's", { skip }, async () => {
  const dead = spawnSync("true").pid;
  const live = await makeSecretDir("live step");
  const stale = path.join(SECRETS_ROOT, `strata-${dead}-0-dead`);
  try {
    await fsp.mkdir(stale, { mode: 0o700 });
    assert.equal(spawnSync("mount", ["-t", "tmpfs", "-o", "mode=0700,size=1m", "tmpfs", stale]).status, 0);
    await fsp.writeFile(path.join(stale, "secret-0"), "left by a killed builder");
    await reapStaleSecretDirs();
    assert.ok(!tmpfsAt(stale), "the dead builder's tmpfs is unmounted");
    assert.ok(!existsSync(stale), "and its mount point removed");
    assert.ok(tmpfsAt(live.dir), "a live builder's secrets tmpfs stays");
  } finally {
    await live.remove();
    spawnSync("umount", ["-l", stale]);
    await fsp.rm(stale, { recursive: true, force: true });
  }
});
