// Images that hold the same layer more than once (issue 12): two steps that add nothing (one empty diffID), or a layer
// applied again after a step deleted what it added. The manifest keeps every layer; the overlay a later step, `strata
// run` or a COPY reads must name each layer dir once, or the mount fails with "Too many levels of symbolic links".
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { buildJson, makeBusyboxTree, nonce, scratchSpace, strata } from "../support/strata.js";

const space = scratchSpace();
after(() => space.cleanup());

/** The diffIDs of an image's layers, base first, as `strata inspect` shows them. */
async function diffIds(imageId: string): Promise<string[]> {
  const r = await strata(["inspect", imageId]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { layers: { diffId: string }[] }).layers.map((l) => l.diffId);
}

/** A context dir with `bb/` (busybox and its applet links) and `files`, and a Dockerfile `body` after FROM scratch. */
async function dockerfileProject(body: string, files: Record<string, string> = {}): Promise<string> {
  const dir = await space.scratch();
  const tree = path.join(dir, "tree");
  await makeBusyboxTree(tree);
  await fsp.rename(path.join(tree, "bin"), path.join(dir, "bb"));
  await fsp.rm(tree, { recursive: true, force: true });
  for (const [name, content] of Object.entries(files)) await fsp.writeFile(path.join(dir, name), content);
  // The ENV (no layer) makes this test's keys its own, so its steps run rather than come from another run's cache.
  await fsp.writeFile(path.join(dir, "Dockerfile"), `FROM scratch\nENV TEST_NONCE=${nonce()}\nCOPY bb/ /bin/\n${body}`);
  return dir;
}

async function buildDockerfile(
  dir: string,
): Promise<{ imageId: string; steps: { description: string; layer: string | null }[] }> {
  const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), dir, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as {
    imageId: string;
    steps: { description: string; layer: string | null }[];
  };
}

describe("repeated layers", () => {
  test("Dockerfile: two RUNs that add nothing, then a RUN that writes a file", async () => {
    const dir = await dockerfileProject("RUN true\nRUN true\nRUN echo hi > /x\n");
    const built = await buildDockerfile(dir);
    const ids = await diffIds(built.imageId);
    assert.equal(ids.length, 4, "the manifest keeps every layer, the empty one twice");
    assert.equal(ids[1], ids[2], "two empty layers share a diffID");
    const run = await strata(["run", built.imageId, "--", "cat", "/x"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "hi\n");
  });

  test('SDK: runCommands("true") twice, then a RUN that writes a file', async () => {
    const { def } = await space.project(
      `export default base.runCommands("true").runCommands("true").runCommands("echo hi > /x");\n`,
    );
    const built = await buildJson(def);
    const ids = await diffIds(built.imageId);
    assert.equal(ids.length, 4);
    assert.equal(ids[1], ids[2]);
    const run = await strata(["run", built.imageId, "--", "cat", "/x"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "hi\n");
  });

  test("Dockerfile: layer X, a layer deleting X's file, X again; a COPY and a RUN on top read X's file", async () => {
    const dir = await dockerfileProject(
      "COPY f.txt /f.txt\nRUN rm /f.txt\nCOPY f.txt /f.txt\nCOPY g.txt /g.txt\nRUN cat /f.txt /g.txt > /both\n",
      { "f.txt": "eff\n", "g.txt": "gee\n" },
    );
    const built = await buildDockerfile(dir);
    const ids = await diffIds(built.imageId);
    assert.equal(ids.length, 6);
    assert.equal(ids[1], ids[3], "both COPYs of f.txt made the same layer");
    assert.notEqual(ids[1], ids[2]);
    const run = await strata(["run", built.imageId, "--", "cat", "/both", "/f.txt"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "eff\ngee\neff\n");
  });

  test("Dockerfile: COPY --from a stage whose last two layers are the same empty layer", async () => {
    const dir = await dockerfileProject(
      "RUN echo made > /made\nRUN true\nRUN true\n\nFROM scratch\nCOPY --from=0 /made /bin/ /\n",
    );
    const built = await buildDockerfile(dir);
    const run = await strata(["run", built.imageId, "--", "/busybox", "cat", "/made"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, "made\n");
  });
});
