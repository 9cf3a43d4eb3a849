// Ported from BuildKit frontend/dockerfile/dockerfile_runsecurity_test.go (see ../README.md for the table).
// A step's capability bounding set is Docker's default without CAP_NET_RAW (Strata's sandbox drops it on purpose:
// src/sandbox/runtime-spec.ts), so where BuildKit expects CapBnd 00000000a80425fb these expect 00000000a80405fb —
// the same set less bit 13. testInsecureDevicesWhitelist needs alpine's apk, fuse and a Docker Hub image: not here.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

const CAP_BND = "CapBnd:\t00000000a80405fb";

describe("dockerfile_runsecurity_test.go", { concurrency: 4 }, () => {
  // BuildKit runs this with the security.insecure entitlement granted or denied, by sandbox; Strata never grants it
  // (every command runs in its sandbox), so this is the denied case: the build fails and says why.
  test("testRunSecurityInsecure", async () => {
    const err = await bk.buildFails({
      dockerfile:
        "\nFROM busybox\n" +
        'RUN --security=insecure [ "$(printf \'%x\' $(( $(cat /proc/self/status | grep CapBnd | cut -f 2 | sed s#^#0x#) & 0x3fffffffff)))" == "3fffffffff" ]\n' +
        'RUN [ "$(cat /proc/self/status | grep CapBnd)" == "CapBnd:\t00000000a80425fb" ]\n',
    });
    assert.match(err.message, /Dockerfile:3:1: RUN --security=insecure is not supported/);
  });

  test("testRunSecuritySandbox", async () => {
    await bk.build({
      dockerfile: `\nFROM busybox\nRUN --security=sandbox [ "$(cat /proc/self/status | grep CapBnd)" == "${CAP_BND}" ]\n`,
    });
  });

  test("testRunSecurityDefault", async () => {
    await bk.build({
      dockerfile: `\nFROM busybox\nRUN [ "$(cat /proc/self/status | grep CapBnd)" == "${CAP_BND}" ]\n`,
    });
  });
});
