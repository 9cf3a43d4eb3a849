// Ported from BuildKit frontend/dockerfile/dockerfile_runnetwork_test.go (see ../README.md for the table). BuildKit
// runs these with a bridge network (not rootless) and BUILDKIT_RUN_NETWORK_INTEGRATION_TESTS; Strata's default network
// is its own namespace with egress (slirp4netns), its interface named eth0 as a Docker or BuildKit container's is.
// The echo server listens on the host's loopback only.
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { RuncExecutor, servicePolicy } from "../../../src/sandbox/runc.js";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
let server: net.Server | undefined;
let port = 0;
before(async () => {
  await bk.start();
  // BuildKit's echoserver.NewTestServer("foo"): every connection is answered with "foo".
  server = net.createServer((sock) => sock.end("foo"));
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  port = (server.address() as net.AddressInfo).port;
});
after(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await bk.stop();
});

describe("dockerfile_runnetwork_test.go", { concurrency: 4 }, () => {
  test("testRunDefaultNetwork", async () => {
    await bk.build({ dockerfile: "\nFROM busybox\nRUN ip link show eth0\n" });
  });

  test("testRunNoNetwork", async () => {
    await bk.build({ dockerfile: "\nFROM busybox\nRUN --network=none ! ip link show eth0\nRUN ip link show eth0" });
  });

  // BuildKit runs this with the network.host entitlement granted or denied, by sandbox: a local Strata build grants
  // it (the user is the operator), a build service's policy denies it unless its operator allows it.
  test("testRunHostNetwork", async () => {
    const dockerfile = `\nFROM busybox\nRUN --network=host nc 127.0.0.1 ${port} | grep foo\nRUN ! nc 127.0.0.1 ${port} | grep foo`;
    await bk.build({ dockerfile });

    const err = await bk.buildFails({ dockerfile, engine: { executor: new RuncExecutor(servicePolicy()) } });
    assert.match(err.message, /network\.host entitlement/);
  });

  // BuildKit's `force-network-mode: host` is `network: "host"` for the whole build (`strata build --network host`);
  // a RUN's own `--network=none` still wins. Granted locally, denied by a build service's policy.
  test("testRunGlobalNetwork", async () => {
    const dockerfile = `\nFROM busybox\nRUN nc 127.0.0.1 ${port} | grep foo\nRUN --network=none ! nc -z 127.0.0.1 ${port}\n`;
    await bk.build({ dockerfile, network: "host" });

    const err = await bk.buildFails({
      dockerfile,
      network: "host",
      engine: { executor: new RuncExecutor(servicePolicy()) },
    });
    assert.match(err.message, /network\.host entitlement/);
  });
});
