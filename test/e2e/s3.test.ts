// The CLI against a real S3-compatible server (s3rver on loopback): build, drop the local cache, rebuild from a
// second cache root → every step hits from S3, and the image runs from layers fetched back out of S3.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { buildJson, busyboxProject, strata, tempDir } from "../support/strata.js";
import { startS3, type TestS3 } from "../support/s3.js";

let s3: TestS3;
const cleanup: string[] = [];
before(async () => {
  s3 = await startS3();
});
after(async () => {
  await s3.stop();
  for (const d of cleanup) await fsp.rm(d, { recursive: true, force: true });
});

test("a build stored in S3 is all cache hits from a fresh local cache, and runs", async () => {
  const { def, dir } = await busyboxProject(
    `export default base.runCommands("echo from-s3 > /x").addLocalDir("./app", "/app", { copy: true });\n`,
    { "app/a.txt": "a\n" },
  );
  cleanup.push(dir);
  const home = await tempDir();
  cleanup.push(home);
  const env = (cache: string) => ({
    STRATA_S3_BUCKET: s3.bucket,
    STRATA_S3_ENDPOINT: s3.endpoint,
    STRATA_S3_PREFIX: "e2e/",
    STRATA_S3_CACHE_DIR: path.join(home, cache),
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    AWS_REGION: "us-east-1",
  });
  const first = await buildJson(def, [], { home: path.join(home, "h1"), env: env("cache1") });
  assert.ok(first.sandboxes >= 1);
  await fsp.rm(path.join(home, "cache1"), { recursive: true, force: true });
  const second = await buildJson(def, [], { home: path.join(home, "h2"), env: env("cache2") });
  assert.equal(second.sandboxes, 0);
  assert.ok(second.steps.every((s) => s.cached));
  assert.equal(second.imageId, first.imageId);
  const run = await strata(["run", second.imageId, "--", "cat", "/x", "/app/a.txt"], {
    home: path.join(home, "h3"),
    env: env("cache3"),
  });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout, "from-s3\na\n");
});
