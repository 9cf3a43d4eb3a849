// Ported from BuildKit frontend/dockerfile/dockerfile_addgit_test.go (see ../README.md for the table). BuildKit serves a
// repository's `.git` dir as static files (git's dumb HTTP protocol); here git's smart HTTP serves a bare repository on
// loopback (`git-repo.ts`), so `<server>/.git` is the repository's URL (`http://127.0.0.1:<port>/rN.git`). `FROM
// alpine` is busybox (only a shell is used), and BuildKit's local exports are read from the image's merged filesystem.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type BkGitRepo, gitServer } from "./git-repo.js";
import { buildkitHarness } from "./harness.js";

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

/** BuildKit's makeCommit: `echo foo of <tag> >foo`, commit, tag. */
async function commitTag(repo: BkGitRepo, tag: string): Promise<void> {
  await repo.write({ foo: `foo of ${tag}\n` });
  await repo.git("add", "foo");
  await repo.git("commit", "-q", "-m", tag);
  await repo.git("tag", tag);
}

/** BuildKit's testAddGit, by object format. */
async function addGit(format: "sha1" | "sha256"): Promise<void> {
  const repo = await server!.repo(format);
  for (const tag of ["v0.0.1", "v0.0.2", "v0.0.3"]) await commitTag(repo, tag);
  await repo.push();
  const v2 = await repo.git("rev-parse", "v0.0.2");
  const v3 = await repo.git("rev-parse", "v0.0.3");
  assert.equal(v2.length, format === "sha1" ? 40 : 64);
  const url = repo.url;

  // BuildKit's test runs `apk add git` and `git status -s` as user 4242 in the image; busybox has no git, so the
  // checkout's state is read from the image instead: the files chowned, `.git` kept with HEAD at the tag's commit.
  const r1 = await bk.build({
    dockerfile: `
FROM busybox

# Basic case
ADD ${url}#v0.0.1 /x
RUN cd /x && \\
  [ "$(cat foo)" = "foo of v0.0.1" ]

# Complicated case
ARG REPO="${url}"
ARG TAG="v0.0.2"
ADD --keep-git-dir=true --chown=4242:8484 --checksum=${v2} \${REPO}#\${TAG} /buildkit-chowned
USER 4242
RUN cd /buildkit-chowned && \\
  [ "$(cat foo)" = "foo of v0.0.2" ] && \\
  [ "$(stat -c %u foo)" = "4242" ] && \\
  [ "$(stat -c %g foo)" = "8484" ]
`,
  });
  const t1 = await r1.tree();
  assert.equal(t1.get("/x/.git"), undefined);
  assert.equal((await r1.readFile("/buildkit-chowned/.git/HEAD"))?.trim(), v2);
  for (const p of ["/buildkit-chowned/foo", "/buildkit-chowned/.git", "/buildkit-chowned/.git/HEAD"]) {
    assert.equal(t1.get(p)?.uid, 4242, p);
    assert.equal(t1.get(p)?.gid, 8484, p);
  }

  // With a checksum but without --keep-git-dir.
  await bk.build({
    dockerfile: `
FROM busybox
ARG REPO="${url}"
ARG TAG="v0.0.3"
ADD --checksum=${v3} \${REPO}#\${TAG} /nogitdir
RUN [ -f /nogitdir/foo ]
RUN [ "$(cat /nogitdir/foo)" = "foo of v0.0.3" ]
RUN [ ! -d /nogitdir/.git ]
`,
  });

  // The ref fetched first, again.
  await bk.build({
    dockerfile: `
		FROM busybox
		ARG REPO="${url}"
		ARG TAG="v0.0.2"
		ADD --keep-git-dir --checksum=${v2} \${REPO}#\${TAG} /nogitdir
		RUN [ -f /nogitdir/foo ]
		RUN [ "$(cat /nogitdir/foo)" = "foo of v0.0.2" ]
		RUN [ -d /nogitdir/.git ]
		`,
  });

  // The commit as both the checksum and the ref.
  await bk.build({
    dockerfile: `
	FROM busybox
	ARG REPO="${url}"
	ARG COMMIT="${v3}"
	ADD --keep-git-dir=true --checksum=${v3} \${REPO}#\${COMMIT} /commitdir
	RUN [ -f /commitdir/foo ]
	RUN [ "$(cat /commitdir/foo)" = "foo of v0.0.3" ]
	RUN [ -d /commitdir/.git ]
	`,
  });

  // The checksum names another commit (v0.0.2's, the ref is v0.0.3).
  const mismatch = await bk.buildFails({
    dockerfile: `
	FROM busybox
	ARG REPO="${url}"
	ARG TAG="v0.0.3"
	ADD --checksum=${v2} \${REPO}#\${TAG} /faildir
	`,
  });
  assert.match(mismatch.message, /expected checksum to match/);

  // The checksum is no commit id.
  const garbage = await bk.buildFails({
    dockerfile: `
	FROM busybox
	ARG REPO="${url}"
	ARG TAG="v0.0.3"
	ADD --checksum=foobar \${REPO}#\${TAG} /faildir
	`,
  });
  assert.match(garbage.message, /invalid checksum/);
  assert.match(garbage.message, /expected hex commit hash/);
}

/** The repository of testGitQueryString and its commits. */
interface QueryRepo {
  url: string;
  v2: string;
  latest: string;
}

async function queryRepo(): Promise<QueryRepo> {
  const sub = await server!.repo();
  await sub.write({ file: "123\n" });
  await sub.git("add", "file");
  await sub.git("commit", "-q", "-m", "initial");
  await sub.push();

  const repo = await server!.repo();
  const dockerfile = `
FROM scratch AS withgit
COPY .git/HEAD out

FROM scratch as withsubmod
COPY submod/file out

FROM scratch
COPY foo out
`;
  await repo.write({ foo: "base\n", Dockerfile: dockerfile });
  await repo.git("-c", "protocol.allow=always", "submodule", "-q", "add", sub.url, "submod");
  await repo.git("add", "Dockerfile", "foo", "submod");
  await repo.git("commit", "-q", "-m", "initial");
  await repo.git("tag", "v0.0.1");
  await repo.git("branch", "base");
  await repo.write({ foo: "feature\n", "sub/foo": "subfeature\n", "sub/Dockerfile": dockerfile });
  await repo.git("add", "foo", "sub");
  await repo.git("commit", "-q", "-m", "feature");
  await repo.git("branch", "feature");
  await repo.git("checkout", "-q", "-B", "master", "base");
  for (const tag of ["v0.0.2", "latest"]) {
    await repo.write({ foo: `${tag}\n` });
    await repo.git("add", "foo");
    await repo.git("commit", "-q", "-m", tag);
    await repo.git("tag", tag);
  }
  await repo.push();
  const v2 = await repo.git("rev-parse", "v0.0.2");
  const latest = await repo.git("rev-parse", "latest");
  assert.equal(v2.length, 40);
  assert.notEqual(v2, latest);
  return { url: repo.url, v2, latest };
}

interface QueryCase {
  name: string;
  url: string;
  target?: string;
  expectOut?: string;
  expectErr?: string | RegExp;
}

/** BuildKit's cases, by the repository's URL and commits. */
function queryCases({ url, v2, latest }: QueryRepo): QueryCase[] {
  return [
    {
      name: "tag with invalid commit",
      url: `${url}?tag=v0.0.2&commit=${latest}`,
      expectErr: "expected checksum to match",
    },
    { name: "old style ref", url: `${url}#v0.0.2`, expectOut: "v0.0.2\n" },
    { name: "querystring ref", url: `${url}?ref=base`, expectOut: "base\n" },
    { name: "querystring branch", url: `${url}?branch=base`, expectOut: "base\n" },
    { name: "querystring invalid branch", url: `${url}?branch=invalid`, expectErr: "repository does not contain ref" },
    { name: "tag as branch", url: `${url}?branch=v0.0.2`, expectErr: "repository does not contain ref" },
    { name: "allowed mixed refs", url: `${url}?tag=v0.0.2#refs/tags/v0.0.2`, expectOut: "v0.0.2\n" },
    { name: "v2 by commit", url: `${url}?commit=${latest}`, expectOut: "latest\n" },
    {
      name: "v2 by commit (wrong short)",
      url: `${url}?commit=${v2.slice(0, 8)}`,
      expectErr: "expected checksum to match",
    },
    { name: "v2 by commit (short)", url: `${url}?commit=${latest.slice(0, 8)}`, expectOut: "latest\n" },
    { name: "v2 ref by commit", url: `${url}?ref=${v2}`, expectOut: "v0.0.2\n" },
    {
      name: "v2 ref by commit (short)",
      url: `${url}?ref=${v2.slice(0, 8)}`,
      expectErr: "repository does not contain ref",
    },
    { name: "tag with commit", url: `${url}?tag=v0.0.2&commit=${v2}`, expectOut: "v0.0.2\n" },
    { name: "commit with commit", url: `${url}?ref=${v2}&commit=${v2}`, expectOut: "v0.0.2\n" },
    { name: "latest with commit", url: `${url}?commit=${latest}`, expectOut: "latest\n" },
    { name: "mismatch refs", url: `${url}?tag=v0.0.2#refs/heads/master`, expectErr: "ref conflicts" },
    { name: "sub old-style", url: `${url}#feature:sub`, expectOut: "subfeature\n" },
    { name: "sub query", url: `${url}?subdir=sub&ref=feature`, expectOut: "subfeature\n" },
    { name: "withgit", url: `${url}?keep-git-dir=true`, expectOut: `${latest}\n`, target: "withgit" },
    { name: "withgitandtag", url: `${url}?tag=v0.0.2&keep-git-dir=true`, expectOut: `${v2}\n`, target: "withgit" },
    { name: "withgit-default", url, expectErr: /\.git\/HEAD"?:? not found/, target: "withgit" },
    // BuildKit's withgit-valueless (`?keep-git-dir&submodules`) and withsubmod, withsubmodset, withsubmodempty (the
    // submodule's file, fetched by default or with `submodules`) are left out: Strata fetches no submodules (their
    // URLs would reach hosts the fetch policy never checked) and refuses `submodules=true`; testGitQuerySubmodules
    // below checks that refusal.
    {
      name: "withgit-forbidden",
      url: `${url}?keep-git-dir=false`,
      expectErr: /\.git\/HEAD"?:? not found/,
      target: "withgit",
    },
    {
      name: "withoutsubmod",
      url: `${url}?submodules=false`,
      expectErr: /submod\/file"?:? not found/,
      target: "withsubmod",
    },
  ];
}

function checkOutcome(c: QueryCase, out: Promise<string | undefined>): Promise<void> {
  return out.then(
    (got) => {
      assert.equal(c.expectErr, undefined, `${c.name}: the build was expected to fail`);
      assert.equal(got, c.expectOut, c.name);
    },
    (e: Error) => {
      if (c.expectErr === undefined) throw e;
      if (typeof c.expectErr === "string") assert.ok(e.message.includes(c.expectErr), `${c.name}: ${e.message}`);
      else assert.match(e.message, c.expectErr, c.name);
    },
  );
}

describe("dockerfile_addgit_test.go", { concurrency: 4 }, () => {
  test("testAddGitSHA1", () => addGit("sha1"));
  test("testAddGitSHA256", () => addGit("sha256"));

  test("testAddGitChecksumCache", async () => {
    const repo = await server!.repo();
    for (const tag of ["v0.0.1", "v0.0.2"]) await commitTag(repo, tag);
    await repo.push();
    const commit = await repo.git("rev-parse", "v0.0.2");
    const unique = async (flags: string) => {
      const r = await bk.build({
        dockerfile: `
FROM busybox AS src
ADD ${flags}${repo.url}#v0.0.2 /repo
RUN head -c 16 /dev/urandom | base64 > /repo/unique.txt

FROM scratch
COPY --from=src /repo/unique.txt /
`,
      });
      return r.readFile("/unique.txt");
    };
    const first = await unique("--keep-git-dir ");
    assert.ok(first);
    // With the checksum the ADD is the same step: the RUN after it is a cache hit.
    assert.equal(await unique(`--keep-git-dir --checksum=${commit} `), first);
  });

  test("testGitQueryString", async () => {
    const q = await queryRepo();
    const cases = queryCases(q);
    // As the build context (BuildKit's `context` attribute).
    for (const c of cases) {
      const opts = { dockerfile: "", gitContext: c.url, ...(c.target ? { target: c.target } : {}) };
      await checkOutcome(
        { ...c, name: `context_${c.name}` },
        bk.build(opts).then((r) => r.readFile("/out")),
      );
    }
    // As an ADD source.
    for (const c of cases) {
      const dockerfile = `
FROM scratch AS main
ADD ${c.url} /repo/

FROM scratch as withsubmod
COPY --from=main /repo/submod/file /repo/foo

FROM scratch AS withgit
COPY --from=main /repo/.git/HEAD /repo/foo

FROM main
		`;
      await checkOutcome(
        { ...c, name: `add_${c.name}` },
        bk.build({ dockerfile, ...(c.target ? { target: c.target } : {}) }).then((r) => r.readFile("/repo/foo")),
      );
    }
    // Strata's part of the submodule cases: `submodules` (true) is refused with what to do, as a context and in ADD.
    for (const url of [`${q.url}?submodules`, `${q.url}?keep-git-dir&submodules`]) {
      await assert.rejects(bk.build({ dockerfile: "", gitContext: url }), /submodules are not fetched/);
      await assert.rejects(bk.build({ dockerfile: `FROM scratch\nADD ${url} /repo/\n` }), /submodules are not fetched/);
    }
  });
});
