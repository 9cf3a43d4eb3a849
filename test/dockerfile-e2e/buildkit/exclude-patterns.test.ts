// Ported from BuildKit frontend/dockerfile/exclude_patterns_test.go (see ../README.md for the table). Its first half
// reads a plain context directory; its second half the same files from a git repository over HTTP (`ADD <git url>`
// into a stage, then `COPY --from` it), served by git's smart HTTP on loopback (`git-repo.ts`). Git keeps no
// directory modes (the dirs' 0777), so the files and links are what both halves compare.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gitServer } from "./git-repo.js";
import { type BkResult, buildkitHarness, type ContextFile } from "./harness.js";

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

const SRC: Record<string, ContextFile> = {
  dir1: { dir: true, mode: 0o777 },
  dir2: { dir: true, mode: 0o777 },
  dir3: { dir: true, mode: 0o777 },
  dir4: { dir: true, mode: 0o777 },
  "dir1/file-101.png": { content: "2", mode: 0o600 },
  "dir1/file-102.txt": { content: "3", mode: 0o600 },
  "dir1/file-103.jpeg": { content: "4", mode: 0o600 },
  "dir2/file-201.pdf": { content: "6", mode: 0o600 },
  "dir2/file-202.jpeg": { content: "7", mode: 0o600 },
  "dir2/file-203.png": { content: "8", mode: 0o600 },
  "dir3/file-301.mp3": { content: "9", mode: 0o600 },
  "dir3/file-302.mpeg": { content: "10", mode: 0o600 },
  "dir4/file-401.txt": { content: "11", mode: 0o600 },
  "dir4/file-402.txt": { symlink: "file-401.txt" },
  "dir4/file-403.txt": { symlink: "file-404.txt" },
};

/** [path, expected content (a symlink's target), or undefined when excluded] */
const CASES: [string, string | undefined][] = [
  // COPY
  ["/builder1/1/dir1/file-101.png", undefined],
  ["/builder1/1/dir1/file-102.txt", "3"],
  ["/builder1/1/dir1/file-103.jpeg", undefined],
  ["/builder1/1/dir2/file-201.pdf", "6"],
  ["/builder1/1/dir2/file-202.jpeg", undefined],
  ["/builder1/1/dir2/file-203.png", undefined],
  ["/builder1/1/dir3/file-301.mp3", "9"],
  ["/builder1/1/dir3/file-302.mpeg", "10"],
  ["/builder1/1/dir4/file-401.txt", "11"],
  ["/builder1/1/dir4/file-402.txt", "file-401.txt"],
  ["/builder1/1/dir4/file-403.txt", "file-404.txt"],
  // COPY
  ["/builder2/2/dir1/file-101.png", "2"],
  ["/builder2/2/dir1/file-102.txt", undefined],
  ["/builder2/2/dir1/file-103.jpeg", "4"],
  ["/builder2/2/dir2/file-201.pdf", undefined],
  ["/builder2/2/dir2/file-202.jpeg", "7"],
  ["/builder2/2/dir2/file-203.png", "8"],
  ["/builder2/2/dir3/file-301.mp3", "9"],
  ["/builder2/2/dir3/file-302.mpeg", "10"],
  ["/builder2/2/dir4/file-401.txt", undefined],
  ["/builder2/2/dir4/file-402.txt", undefined],
  ["/builder2/2/dir4/file-403.txt", undefined],
  // ADD
  ["/builder3/3/file-301.mp3", undefined],
  ["/builder3/3/file-302.mpeg", "10"],
  // COPY with a wildcard source
  ["/builder4/4/file-101.png", undefined],
  ["/builder4/4/file-102.txt", undefined],
  ["/builder4/4/file-103.jpeg", undefined],
  ["/builder4/4/file-201.pdf", undefined],
  ["/builder4/4/file-202.jpeg", undefined],
  ["/builder4/4/file-203.png", undefined],
  ["/builder4/4/file-301.mp3", undefined],
  ["/builder4/4/file-302.mpeg", "10"],
  ["/builder4/4/dir4/file-401.txt", undefined],
  ["/builder4/4/dir4/file-402.txt", undefined],
  ["/builder4/4/dir4/file-403.txt", undefined],
  // ADD with a wildcard source
  ["/builder5/5/file-101.png", undefined],
  ["/builder5/5/file-102.txt", "3"],
  ["/builder5/5/file-103.jpeg", undefined],
  ["/builder5/5/file-201.pdf", undefined],
  ["/builder5/5/file-202.jpeg", undefined],
  ["/builder5/5/file-203.png", undefined],
  ["/builder5/5/file-301.mp3", undefined],
  ["/builder5/5/file-302.mpeg", undefined],
  ["/builder5/5/file-401.txt", "11"],
  ["/builder5/5/file-402.txt", "file-401.txt"],
  ["/builder5/5/file-403.txt", "file-404.txt"],
];

/** BuildKit's runTest assertions: each case's file (or link) or its absence; builder6's dir empty. */
async function checkExcluded(r: BkResult): Promise<void> {
  const tree = await r.tree();
  for (const [p, want] of CASES) {
    const e = tree.get(p);
    if (want === undefined) {
      assert.equal(e, undefined, `${p} should not exist`);
      continue;
    }
    assert.equal(e?.type === "symlink" ? e.target : e?.content, want, p);
  }
  // Everything excluded: the directory is there, and empty.
  assert.equal(tree.get("/builder6/6")?.type, "dir");
  assert.deepEqual(
    [...tree.keys()].filter((p) => p.startsWith("/builder6/6/")),
    [],
  );
}

describe("exclude_patterns_test.go", () => {
  // See #4439
  test("testExcludedFilesOnCopy", async () => {
    const r = await bk.build({
      separateDockerfileDir: true,
      files: SRC,
      dockerfile: `
# ignore all the image files
FROM scratch as builder1
COPY --exclude=*/*.png --exclude=*/*.jpeg . /1

# ignore all document files
FROM scratch as builder2
COPY --exclude=*/*.pdf --exclude=*/*.txt . /2

# ignore all mp3 files
FROM scratch as builder3
ADD --exclude=*.mp3 dir3/ /3/

# Ignore everything, keeping only .mpeg files, using src as a wildcard.
# it's a fake example, just to be sure that src as wildcards work as expected.
FROM scratch as builder4
COPY --exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/

# Ignore everything, keeping only txt files.
# it's a fake example, just to be sure that src as wildcards work as expected.
FROM scratch as builder5
ADD --exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5

# Exclude all files. No idea how it could be useful, but it should not be forbidden.
FROM scratch as builder6
ADD --exclude=* dir* /6

FROM scratch
COPY --from=builder1 / /builder1
COPY --from=builder2 / /builder2
COPY --from=builder3 / /builder3
COPY --from=builder4 / /builder4
COPY --from=builder5 / /builder5
COPY --from=builder6 / /builder6
`,
    });
    await checkExcluded(r);

    // Load context from a git repository: BuildKit's srcDir committed and tagged 0.1.
    const repo = await server!.repo();
    for (const [rel, f] of Object.entries(SRC)) {
      const abs = path.join(repo.work, rel);
      if (typeof f === "string") throw new Error(`${rel}: SRC holds no plain strings`);
      if ("dir" in f) await fsp.mkdir(abs, { recursive: true });
      else if ("symlink" in f) await fsp.symlink(f.symlink, abs);
      else if ("content" in f) await fsp.writeFile(abs, f.content, f.mode !== undefined ? { mode: f.mode } : {});
    }
    await repo.git("add", ".");
    await repo.git("commit", "-q", "-m", "0.1");
    await repo.git("tag", "0.1");
    await repo.push();
    // In this example, all the ADD commands were replaced by COPY, as ADD does not support
    // the `--from=` flag, and we want to keep the assertions intact.
    const fromGit = await bk.build({
      separateDockerfileDir: true,
      dockerfile: `
FROM scratch AS base
ARG REPO="${repo.url}"
ARG TAG="0.1"
ADD --keep-git-dir=true \${REPO}#\${TAG} /

# ignore all the image files
FROM scratch as builder1
COPY --from=base --exclude=*/*.png --exclude=*/*.jpeg . /1

# ignore all document files
FROM scratch as builder2
COPY --from=base --exclude=*/*.pdf --exclude=*/*.txt . /2

# ignore all mp3 files
FROM scratch as builder3
COPY --from=base --exclude=*.mp3 dir3/ /3/

# Ignore everything, keeping only .mpeg files, using src as a wildcard.
# it's a fake example, just to be sure that src as wildcards work as expected.
FROM scratch as builder4
COPY --from=base --exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/

# Ignore everything, keeping only txt files.
# it's a fake example, just to be sure that src as wildcards work as expected.
FROM scratch as builder5
COPY --from=base --exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5

# Exclude all files. No idea how it could be useful, but it should not be forbidden.
FROM scratch as builder6
COPY --from=base --exclude=* dir* /6

FROM scratch
COPY --from=builder1 / /builder1
COPY --from=builder2 / /builder2
COPY --from=builder3 / /builder3
COPY --from=builder4 / /builder4
COPY --from=builder5 / /builder5
COPY --from=builder6 / /builder6
`,
    });
    await checkExcluded(fromGit);
  });
});
