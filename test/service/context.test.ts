// Context upload through the service: only files the server lacks are sent (a one-file edit uploads that file),
// the server's copy of the context keys exactly like the client's files (so remote and local builds share layers),
// and copy: false files are built as the final step.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { sandboxRunCount } from "../../src/sandbox/runc.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, startService, type TestService } from "../support/service.js";

let svc: TestService;
const dirs: string[] = [];
before(async () => {
  svc = await startService();
});
after(async () => {
  await svc.close();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

const FILES = 40;
const SIZE = 32 * 1024;

async function makeApp(dir: string): Promise<string> {
  const app = path.join(dir, "app");
  await fsp.mkdir(path.join(app, "sub"), { recursive: true });
  for (let i = 0; i < FILES; i++)
    await fsp.writeFile(path.join(app, i % 2 ? "sub" : "", `f${i}.bin`), randomBytes(SIZE));
  await fsp.writeFile(path.join(app, "run.sh"), "#!/bin/sh\necho hi\n");
  await fsp.chmod(path.join(app, "run.sh"), 0o750);
  await fsp.symlink("run.sh", path.join(app, "link"));
  // Not root's files, and unusual modes: the server must reproduce owner and mode, which are keyed.
  for (const p of ["run.sh", "sub", "sub/f1.bin"]) await fsp.lchown(path.join(app, p), 1000, 1000);
  await fsp.chmod(path.join(app, "sub"), 0o2750);
  await fsp.writeFile(path.join(app, "skip.log"), "ignored\n");
  return app;
}

test("a one-file edit re-uploads about that file's bytes, and rebuilds from that layer on", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const app = await makeApp(dir);
  const image = base
    .runCommands("echo before > /before")
    .addLocalDir(app, "/app", { copy: true, ignore: ["*.log"] })
    .runCommands("wc -c /app/f0.bin > /after");
  const statCache = path.join(dir, "statcache.json");
  const first = await remoteBuildImage(image, { server: svc.url, statCache, log: () => undefined });
  assert.ok(first.uploadedBytes >= FILES * SIZE, `the first build uploads the context (${first.uploadedBytes} bytes)`);

  const unchanged = await remoteBuildImage(image, { server: svc.url, statCache, log: () => undefined });
  assert.equal(unchanged.uploadedBytes, 0, "nothing new to upload");
  assert.equal(unchanged.imageId, first.imageId);

  await fsp.writeFile(path.join(app, "f0.bin"), randomBytes(SIZE));
  const before = sandboxRunCount();
  const edited = await remoteBuildImage(image, { server: svc.url, statCache, log: () => undefined });
  assert.equal(edited.uploadedBytes, SIZE, "exactly the edited file's bytes");
  assert.equal(edited.uploadedFiles, 1);
  const k = edited.steps.findIndex((s) => s.description.endsWith("→ /app"));
  assert.ok(
    edited.steps.slice(0, k).every((s) => s.cached),
    "steps before the copy stay cached",
  );
  assert.ok(
    edited.steps.slice(k).every((s) => !s.cached),
    "the copy and later steps rebuild",
  );
  assert.equal(sandboxRunCount() - before, 1);
});

test("the server keys the context as the client's own files (owner, mode, symlinks): a local build hits every step", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const app = await makeApp(dir);
  const image = base
    .addLocalDir(app, "/app", { copy: true, ignore: ["*.log"] })
    .addLocalFile(path.join(app, "run.sh"), "/usr/bin/", { copy: true })
    .runCommands("ls -ln /app > /listing");
  const remote = await remoteBuildImage(image, { server: svc.url, statCache: false, log: () => undefined });
  const before = sandboxRunCount();
  const local = await image.build({ store: svc.view, log: () => undefined });
  assert.equal(sandboxRunCount() - before, 0);
  assert.ok(
    local.steps.every((s) => s.cached),
    "every step a cache hit",
  );
  assert.deepEqual(
    local.steps.map((s) => s.key),
    remote.steps.map((s) => s.key),
    "same keys",
  );
  assert.equal(local.imageId, remote.imageId);
});

test("copy: false files are built as the final step, and editing them rebuilds only that step", async () => {
  const { dir, base } = await busyboxBase();
  dirs.push(dir);
  const app = path.join(dir, "live");
  await fsp.mkdir(app);
  await fsp.writeFile(path.join(app, "main.txt"), "v1\n");
  const image = base
    .runCommands("echo x > /x")
    .addLocalDir(app, "/srv")
    .addLocalFile(path.join(app, "main.txt"), "/etc/main.txt");
  const lines: string[] = [];
  const first = await remoteBuildImage(image, { server: svc.url, statCache: false, log: (l) => lines.push(l) });
  const last = first.steps[first.steps.length - 1]!;
  assert.equal(
    last.description,
    `add local files (${app} → /srv, ${path.join(app, "main.txt")} → /etc/main.txt)`,
    "described with the client's paths",
  );
  assert.ok(
    lines.some((l) => l.includes(`${app} → /srv`)),
    "log lines name the client's paths, not the server's copies",
  );
  await fsp.writeFile(path.join(app, "main.txt"), "v2\n");
  const second = await remoteBuildImage(image, { server: svc.url, statCache: false, log: () => undefined });
  assert.ok(second.steps.slice(0, -1).every((s) => s.cached));
  assert.equal(second.steps[second.steps.length - 1]!.cached, false);
  assert.notEqual(second.imageId, first.imageId);
  assert.equal(second.uploadedBytes, 3);
});
