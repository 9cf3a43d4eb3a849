// resolveUser reads the image's /etc/passwd and /etc/group inside the image: a symlink there never reaches the host's.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { resolveUser } from "../../src/sandbox/user.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

async function rootfs(files: Record<string, string>, links: Record<string, string> = {}): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-user-"));
  dirs.push(dir);
  for (const [p, c] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await fsp.writeFile(path.join(dir, p), c);
  }
  for (const [p, t] of Object.entries(links)) {
    await fsp.mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await fsp.symlink(t, path.join(dir, p));
  }
  return dir;
}

test("resolves names, groups and supplementary groups (the primary group first) from the image's files", async () => {
  const r = await rootfs({
    "etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    "etc/group": "app:x:1001:\nextra:x:2000:app\n",
  });
  assert.deepEqual(await resolveUser(r, "app"), {
    uid: 1000,
    gid: 1001,
    additionalGids: [1001, 2000],
    home: "/home/app",
  });
  // An explicit group: that group alone (no supplementary groups), as BuildKit's testUser expects.
  assert.deepEqual(await resolveUser(r, "app:extra"), {
    uid: 1000,
    gid: 2000,
    additionalGids: [2000],
    home: "/home/app",
  });
  assert.deepEqual(await resolveUser(r, "7:8"), { uid: 7, gid: 8, additionalGids: [8], home: "/" });
  // An unknown uid: group 0 (CVE-2023-25173: the primary group is in the list too).
  assert.deepEqual(await resolveUser(r, "1234"), { uid: 1234, gid: 0, additionalGids: [0], home: "/" });
});

test("an /etc/passwd that is a symlink to a host file is read inside the image, never the host's", async () => {
  const host = await rootfs({ "passwd": "intruder:x:4242:4242::/:/bin/sh\n" });
  const abs = await rootfs({}, { "etc/passwd": path.join(host, "passwd") });
  await assert.rejects(resolveUser(abs, "intruder"), /user "intruder" is not in the image's \/etc\/passwd/);
  const rel = await rootfs({}, { "etc/passwd": `../../../../../../../../${path.join(host, "passwd")}` });
  await assert.rejects(resolveUser(rel, "intruder"), /not in the image's \/etc\/passwd/);
  // A link that stays inside the image is followed, as the container would.
  const inside = await rootfs(
    { "usr/share/passwd": "app:x:1000:1000::/:/bin/sh\n" },
    { "etc/passwd": "/usr/share/passwd" },
  );
  assert.equal((await resolveUser(inside, "app")).uid, 1000);
});
