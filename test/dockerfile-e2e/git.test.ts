// Git sources built for real against a loopback `git daemon` and git's smart HTTP (`git http-backend`), mirroring
// BuildKit's dockerfile_addgit_test.go and dockerfile_git_http_test.go: ADD <git url> at a branch, tag, commit and
// subdirectory, --keep-git-dir, --checksum, a git named context, `strata build <git url>`, the cache across a pushed
// commit, and the fetch policy refusing a git fetch to an address it does not allow.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { FetchPolicyError } from "../../src/errors.js";
import { Image, type LocalStore } from "../../src/index.js";
import { FetchPolicy } from "../../src/net/fetch-policy.js";
import { parseAllowRule, serviceConfig } from "../../src/net/fetch-rules.js";
import { makeRepo, startGitDaemon, startGitHttp, type TestRepo, git } from "../support/git-server.js";
import { makeBusyboxTree, nonce, strata } from "../support/strata.js";
import { privateStore, strataTree } from "./support.js";

let store: LocalStore;
let home: string;
let cleanupStore: () => Promise<void>;
let root: string;
let repo: TestRepo;
let daemon: Awaited<ReturnType<typeof startGitDaemon>>;
let web: Awaited<ReturnType<typeof startGitHttp>>;
let mainCommit: string;
let tagCommit: string;
let featureCommit: string;
const dirs: string[] = [];

before(async () => {
  const s = await privateStore();
  store = s.store;
  home = s.home;
  cleanupStore = s.cleanup;
  root = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-git-"));
  repo = await makeRepo(root, "r");
  tagCommit = await repo.commit({ "a.txt": "a v1\n", "bin/tool.sh": "#!/bin/sh\necho tool\n", "sub/b.txt": "b\n" });
  await git(repo.work, "tag", "-a", "v1", "-m", "v1");
  await git(repo.work, "push", "-q", "--tags", "origin");
  mainCommit = await repo.commit({
    "a.txt": "a v2\n",
    Dockerfile: "FROM scratch\nCOPY a.txt /from-git-context.txt\n",
    "sub/Dockerfile.sub": "FROM scratch\nCOPY b.txt /b-from-subdir.txt\n",
  });
  await git(repo.work, "checkout", "-q", "-b", "feature");
  featureCommit = await repo.commit({ "feature.txt": "feature 1\n" });
  await git(repo.work, "checkout", "-q", "main");
  daemon = await startGitDaemon(root);
  web = await startGitHttp(root);
});
after(async () => {
  await daemon?.stop();
  await web?.stop();
  for (const d of [...dirs, root]) if (d) await fsp.rm(d, { recursive: true, force: true });
  await cleanupStore?.();
});

async function project(text: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-git-"));
  dirs.push(dir);
  await fsp.writeFile(path.join(dir, "Dockerfile"), text);
  return path.join(dir, "Dockerfile");
}
const quiet = { log: () => undefined };

test("testAddGit / testGitHTTP: ADD a branch, an annotated tag, a commit and a subdir over git:// and smart HTTP", async () => {
  const df = await project(
    `FROM scratch\nADD ${web.url("r")}#main /main\nADD ${daemon.url("r")}#v1 /tag\n` +
      `ADD ${daemon.url("r")}#${featureCommit}:sub /commit-sub\nADD --chmod=600 ${web.url("r")}?ref=feature&subdir=sub /q\n`,
  );
  const built = await Image.fromDockerfile(df).build({ store, ...quiet });
  const tree = await strataTree(store, built.imageId);
  assert.equal(tree.get("/main/a.txt")?.content, "a v2\n");
  assert.equal(tree.get("/main/a.txt")?.mode, "0644");
  assert.equal(tree.get("/main/bin/tool.sh")?.mode, "0755", "executable in git: 0755");
  assert.equal(tree.get("/main/a.txt")?.uid, 0);
  assert.equal(tree.has("/main/.git"), false, ".git is dropped");
  assert.equal(tree.has("/main/feature.txt"), false);
  assert.equal(tree.get("/tag/a.txt")?.content, "a v1\n", `the annotated tag's commit ${tagCommit}`);
  assert.equal(tree.has("/tag/Dockerfile"), false);
  assert.deepEqual(
    [...tree.keys()].filter((p) => p.startsWith("/commit-sub/")),
    ["/commit-sub/Dockerfile.sub", "/commit-sub/b.txt"],
  );
  assert.equal(tree.get("/q/b.txt")?.mode, "0600");
  assert.ok(
    web.requests.some((r) => r.includes("git-upload-pack")),
    "fetched over smart HTTP",
  );
});

test("ADD --keep-git-dir keeps .git at the commit; --checksum must prefix the commit", async () => {
  const df = await project(`FROM scratch\nADD --keep-git-dir=true ${daemon.url("r")}#feature /k\n`);
  const tree = await strataTree(store, (await Image.fromDockerfile(df).build({ store, ...quiet })).imageId);
  assert.equal(tree.get("/k/.git/HEAD")?.content?.trim(), featureCommit);
  assert.equal(tree.get("/k/feature.txt")?.content, "feature 1\n");

  const ok = await project(`FROM scratch\nADD --checksum=${mainCommit.slice(0, 10)} ${web.url("r")}#main /c\n`);
  await Image.fromDockerfile(ok).build({ store, ...quiet });
  const bad = await project(`FROM scratch\nADD --checksum=${"0".repeat(12)} ${web.url("r")}#main /c\n`);
  await assert.rejects(Image.fromDockerfile(bad).build({ store, ...quiet }), (e: Error) => {
    assert.match(e.message, new RegExp(`expected checksum to match 0{12}, got ${mainCommit}`));
    return true;
  });
  const noRef = await project(`FROM scratch\nADD ${web.url("r")}#no-such-branch /c\n`);
  await assert.rejects(Image.fromDockerfile(noRef).build({ store, ...quiet }), /has no branch or tag "no-such-branch"/);
  await assert.rejects(
    async () => Image.fromDockerfile(await project(`FROM scratch\nADD --keep-git-dir=true a.txt /x\n`)),
    /--keep-git-dir applies to git sources only/,
  );
  await assert.rejects(
    async () => Image.fromDockerfile(await project(`FROM scratch\nADD ${web.url("r")}?bogus=1 /x\n`)),
    /Dockerfile:2:1.*unexpected query "bogus"/,
  );
});

test("keyed by what the commit holds: unchanged refs hit the cache, a pushed commit rebuilds only its ADD", async () => {
  const df = await project(
    `FROM scratch\nADD ${daemon.url("r")}#v1 /tag\nADD ${daemon.url("r")}#feature /f\nLABEL n=${nonce()}\n`,
  );
  const first = await Image.fromDockerfile(df).build({ store, ...quiet });
  const again = await Image.fromDockerfile(df).build({ store, ...quiet });
  assert.ok(again.steps.every((s) => s.cached));
  await git(repo.work, "checkout", "-q", "feature");
  await repo.commit({ "feature.txt": "feature 2\n" });
  await git(repo.work, "checkout", "-q", "main");
  const moved = await Image.fromDockerfile(df).build({ store, ...quiet });
  assert.deepEqual(
    moved.steps.map((s) => s.cached),
    [true, true, false, false],
  );
  assert.notEqual(moved.imageId, first.imageId);
  assert.equal((await strataTree(store, moved.imageId)).get("/f/feature.txt")?.content, "feature 2\n");
});

test("the fetch policy decides git fetches: a loopback-refusing policy refuses, one allowing the port fetches", async () => {
  const df = await project(`FROM scratch\nADD ${web.url("r")}#main /m\nLABEL n=${nonce()}\n`);
  const port = Number(new URL(web.url("r")).port);
  const refusing = new FetchPolicy(serviceConfig({}));
  await assert.rejects(
    Image.fromDockerfile(df).build({ store, fetchPolicy: refusing, ...quiet }),
    (e: unknown) => e instanceof FetchPolicyError && /127\.0\.0\.1/.test(e.message),
  );
  const daemonDf = await project(`FROM scratch\nADD ${daemon.url("r")}#main /m\nLABEL n=${nonce()}\n`);
  await assert.rejects(
    Image.fromDockerfile(daemonDf).build({ store, fetchPolicy: refusing, ...quiet }),
    (e: unknown) => e instanceof FetchPolicyError,
  );
  const allowing = new FetchPolicy(serviceConfig({ allow: [parseAllowRule(`127.0.0.1:${port}`)] }));
  const ok = await Image.fromDockerfile(df).build({ store, fetchPolicy: allowing, ...quiet });
  assert.equal((await strataTree(store, ok.imageId)).get("/m/a.txt")?.content, "a v2\n");
  await refusing.close();
  await allowing.close();
});

test("a git named context and `strata build <git url>`: the repository's Dockerfile, -f inside a subdir", async () => {
  const bb = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-git-bb-"));
  dirs.push(bb);
  await makeBusyboxTree(bb);
  const df = await project("FROM tools\nCOPY --from=src a.txt /a.txt\nRUN cat /a.txt > /copied\n");
  const built = await Image.fromDockerfile(df, {
    buildContexts: { tools: bb, src: `${daemon.url("r")}#v1` },
  }).build({ store, ...quiet });
  assert.equal((await strataTree(store, built.imageId)).get("/copied")?.content, "a v1\n");

  const r = await strata(["build", `${web.url("r")}#main`], { home });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await strataTree(store, r.stdout.trim())).get("/from-git-context.txt")?.content, "a v2\n");
  const sub = await strata(["build", "-f", "Dockerfile.sub", `${daemon.url("r")}#main:sub`], { home });
  assert.equal(sub.code, 0, sub.stderr);
  assert.equal((await strataTree(store, sub.stdout.trim())).get("/b-from-subdir.txt")?.content, "b\n");
  const outside = await strata(["build", "-f", "../Dockerfile", `${daemon.url("r")}#main:sub`], { home });
  assert.equal(outside.code, 2);
  assert.match(outside.stderr, /names a file inside the repository/);
});
