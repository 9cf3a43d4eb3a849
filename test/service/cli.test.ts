// The CLI side: a definition file built on a server with remoteBuildDefinition (what `strata build` does when
// STRATA_SERVER is set), and the environment switch.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import { after, before, test } from "node:test";
import { remoteBuildDefinition, remoteServerFromEnv } from "../../src/cli/remote-build.js";
import { startService, type TestService } from "../support/service.js";
import { busyboxProject, tempDir } from "../support/strata.js";

let svc: TestService;
const dirs: string[] = [];
before(async () => {
  svc = await startService({ token: "cli-token" });
});
after(async () => {
  await svc.close();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

test("remoteBuildDefinition builds a definition file on the server, records its chain, and is all cached the second time", async () => {
  const clientHome = await tempDir("strata-client-");
  dirs.push(clientHome);
  const saved = process.env.STRATA_HOME;
  process.env.STRATA_HOME = clientHome;
  try {
    const { dir, def } = await busyboxProject(
      `export default base.runCommands("echo cli > /cli").cmd(["cat", "/cli"]);\n`,
    );
    dirs.push(dir);
    const lines: string[] = [];
    const first = await remoteBuildDefinition(def, { server: svc.url, token: "cli-token", log: (l) => lines.push(l) });
    assert.ok(lines.some((l) => l.startsWith("=> Step 3: runCommands echo cli > /cli")));
    const chain = await svc.view.getChain(`${def}#default`);
    assert.deepEqual(
      chain?.imageIds,
      first.steps.map((s) => s.imageId),
      "the server remembers the chain for `strata explain`",
    );
    const second = await remoteBuildDefinition(def, { server: svc.url, token: "cli-token", log: () => undefined });
    assert.equal(second.imageId, first.imageId);
    assert.ok(second.steps.every((s) => s.cached));
    assert.equal(second.uploadedBytes, 0);
  } finally {
    if (saved === undefined) delete process.env.STRATA_HOME;
    else process.env.STRATA_HOME = saved;
  }
});

test("remoteServerFromEnv: STRATA_SERVER switches builds to a server, STRATA_TOKEN is its token", () => {
  assert.equal(remoteServerFromEnv({}), undefined);
  assert.equal(remoteServerFromEnv({ STRATA_SERVER: "  " }), undefined);
  assert.deepEqual(remoteServerFromEnv({ STRATA_SERVER: "http://b:8080" }), { server: "http://b:8080" });
  assert.deepEqual(remoteServerFromEnv({ STRATA_SERVER: "http://b:8080", STRATA_TOKEN: "t" }), {
    server: "http://b:8080",
    token: "t",
  });
});
