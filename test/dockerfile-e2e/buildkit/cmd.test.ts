// Ported from BuildKit frontend/dockerfile/dockerfile_cmd_test.go (see ../README.md for the table). Images BuildKit
// exports to containerd or pushes are pushed to the harness's loopback registry here; `FROM alpine` is busybox.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DEFAULT_PATH } from "../../../src/oci/defaults.js";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_cmd_test.go", { concurrency: 4 }, () => {
  test("testCmdShell", async () => {
    const first = await bk.build({ dockerfile: 'FROM scratch\nCMD ["test"]\n' });
    const ref = await bk.push(first, "moby/cmdoverridetest:latest");
    const r = await bk.build({ dockerfile: `FROM ${ref}\nSHELL ["ls"]\nENTRYPOINT my entrypoint\n` });
    const c = (await r.config()).config;
    // ENTRYPOINT clears the base's CMD; SHELL makes its shell form.
    assert.equal(c.Cmd ?? null, null);
    assert.deepEqual(c.Entrypoint, ["ls", "my entrypoint"]);
  });

  // BuildKit builds this for windows/amd64 and linux/amd64 at once; the linux/amd64 image is the one Strata builds.
  test("testDefaultShellAndPath", async () => {
    const r = await bk.build({ dockerfile: "FROM scratch\nENTRYPOINT foo bar\nCOPY Dockerfile .\n" });
    const img = await r.config();
    assert.equal(img.rootfs.diff_ids.length, 1);
    assert.deepEqual(img.config.Entrypoint, ["/bin/sh", "-c", "foo bar"]);
    assert.deepEqual(img.config.Env, [`PATH=${DEFAULT_PATH}`]);
  });

  test("testIgnoreEntrypoint", async () => {
    await bk.build({ dockerfile: 'FROM busybox\nENTRYPOINT ["/nosuchcmd"]\nRUN ["ls"]\n' });
  });

  test("testInvalidJSONCommands", async () => {
    const err = await bk.buildFails({ dockerfile: 'FROM busybox\nRUN ["echo", "hello"]this is invalid\n' });
    assert.match(err.message, /this is invalid/);
    const r = await bk.build({ dockerfile: "FROM busybox\nENTRYPOINT []random string\n" });
    await bk.push(r, "buildkit/testexportdf:multi");
    assert.deepEqual((await r.config()).config.Entrypoint, ["/bin/sh", "-c", "[]random string"]);
  });

  test("testDockerfileInvalidCommand", async () => {
    const err = await bk.buildFails({ dockerfile: "\tFROM busybox\n\tRUN invalidcmd\n" });
    // BuildKit: `process "/bin/sh -c invalidcmd" did not complete successfully: exit code: 127`; Strata names the
    // command and its exit code in its own words.
    assert.match(err.message, /`invalidcmd` exited with code 127/);
  });

  test("testDockerfileInvalidInstruction", async () => {
    const err = await bk.buildFails({
      dockerfile: 'FROM scratch\nFNTRYPOINT ["/bin/sh", "-c", "echo invalidinstruction"]\n',
    });
    // BuildKit: `unknown instruction: FNTRYPOINT`; Strata quotes the word (its negative fixtures say so).
    assert.match(err.message, /unknown instruction "FNTRYPOINT"/);
    assert.match(err.message, /did you mean ENTRYPOINT\?/);
  });
});
