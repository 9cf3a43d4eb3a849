// Ported from BuildKit frontend/dockerfile/dockerfile_git_http_test.go (see ../README.md for the table). BuildKit's
// `context` attribute naming a git URL is `strata build <git URL>` (the harness's `gitContext`); the repository is
// served by git's smart HTTP on loopback (BuildKit serves the `.git` dir as static files, git's dumb protocol).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { gitServer } from "./git-repo.js";
import { buildkitHarness, withBusybox } from "./harness.js";

const bk = buildkitHarness();
let server: Awaited<ReturnType<typeof gitServer>> | undefined;
before(async () => {
  await bk.start();
  server = await gitServer();
});
after(async () => {
  await server?.stop();
  await bk.stop();
});

/** BuildKit's testDockerfileFromGit, by object format. */
async function dockerfileFromGit(format: "sha1" | "sha256"): Promise<void> {
  const repo = await server!.repo(format);
  let dockerfile = "\nFROM busybox AS build\nRUN echo -n fromgit > foo\nFROM scratch\nCOPY --from=build foo bar\n";
  await repo.write({ Dockerfile: withBusybox(dockerfile, bk.busyboxRef()) });
  await repo.git("add", "Dockerfile");
  await repo.git("commit", "-q", "-m", "initial");
  await repo.git("branch", "first");
  dockerfile += "\nCOPY --from=build foo bar2\n";
  await repo.write({ Dockerfile: withBusybox(dockerfile, bk.busyboxRef()) });
  await repo.git("add", "Dockerfile");
  await repo.git("commit", "-q", "-m", "second");
  await repo.push();

  const first = await bk.build({ dockerfile: "", gitContext: `${repo.url}#first` });
  assert.equal(await first.readFile("/bar"), "fromgit");
  assert.equal(await first.readFile("/bar2"), undefined);
  // The default branch holds both files.
  const second = await bk.build({ dockerfile: "", gitContext: repo.url });
  assert.equal(await second.readFile("/bar"), "fromgit");
  assert.equal(await second.readFile("/bar2"), "fromgit");
}

describe("dockerfile_git_http_test.go", { concurrency: 4 }, () => {
  test("testDockerfileFromGitSHA1", () => dockerfileFromGit("sha1"));
  // Regression test: git sources fetched every repository as sha1 ("mismatched algorithms").
  test("testDockerfileFromGitSHA256", () => dockerfileFromGit("sha256"));
});
