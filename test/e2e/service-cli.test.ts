// `strata build` with STRATA_SERVER: the CLI uploads what the service lacks, streams the build, prints the image id.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { buildJson, scratchSpace, SHARED_HOME, strata } from "../support/strata.js";
import { spawnServe } from "../support/service.js";

const space = scratchSpace();
after(() => space.cleanup());

test("strata build with STRATA_SERVER builds on the service, with the same image id a local build gets", async () => {
  const token = "test-token-123";
  const serve = await spawnServe({ STRATA_HOME: SHARED_HOME, STRATA_TOKEN: token });
  try {
    const { def } = await space.project(
      `export default base.runCommands("echo remote > /r").addLocalDir("./app", "/app", { copy: true });\n`,
      { "app/x.txt": "x\n" },
    );
    const noToken = await strata(["build", def], { env: { STRATA_SERVER: serve.url } });
    assert.notEqual(noToken.code, 0);
    assert.match(noToken.stderr, /401|token/i);
    const remote = await buildJson(def, [], { env: { STRATA_SERVER: serve.url, STRATA_TOKEN: token } });
    assert.match(remote.stderr, /=> Step \d+: runCommands echo remote > \/r/);
    const local = await buildJson(def);
    assert.equal(local.imageId, remote.imageId);
    assert.equal(local.sandboxes, 0, "the local build on the same store hits every step the service built");
    assert.equal((await strata(["run", remote.imageId, "--", "cat", "/r", "/app/x.txt"])).stdout, "remote\nx\n");
  } finally {
    serve.child.kill("SIGTERM");
    await serve.exited;
  }
});
