// The operator's registry mirrors on `strata serve --registry-config` (loopback only): a client's registry base whose
// registry the service may not reach is pulled through the operator's mirror, which the restricted fetch policy lets
// mirror requests reach; a client naming the mirror's host itself is still refused, and a bad config stops the service
// at start with the file and key named. Clients have no way to send mirrors: the wire has no field for them.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { pushImage } from "../../src/registry/push.js";
import { Image } from "../../src/sdk/image.js";
import { RemoteBuildError } from "../../src/service/client.js";
import { LocalStore } from "../../src/store/local.js";
import { makeStoreImage } from "../support/registry-image.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { spawnServe } from "../support/service.js";
import { nonce, tempDir } from "../support/strata.js";

let mirror: TestRegistry;
/** A registry host nothing listens on: the origin the service could not reach anyway. */
let origin: string;
let service: Awaited<ReturnType<typeof spawnServe>>;
const dirs: string[] = [];

before(async () => {
  mirror = await startRegistry();
  const home = await tempDir("strata-mirrors-src-");
  dirs.push(home);
  const store = await LocalStore.open(home);
  const image = await makeStoreImage(store, [{ "hello.txt": "through the mirror\n" }], { label: nonce() });
  await pushImage(store, image, `${mirror.host}/team/mirrored:1`, { dockerConfig: false });
  const srv = http.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  origin = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
  await new Promise<void>((r) => srv.close(() => r()));
  const configDir = await tempDir("strata-mirrors-config-");
  dirs.push(configDir);
  const config = path.join(configDir, "registries.toml");
  await fsp.writeFile(config, `[registry."${origin}"]\nmirrors = ["${mirror.host}"]\n`);
  const serviceHome = await tempDir("strata-mirrors-home-");
  dirs.push(serviceHome);
  service = await spawnServe({ STRATA_HOME: serviceHome }, ["--registry-config", config]);
});

after(async () => {
  service?.child.kill("SIGTERM");
  await service?.exited;
  await mirror?.stop();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

const build = (image: Image) =>
  remoteBuildImage(image, { server: service.url, statCache: false, log: () => undefined });

describe("strata serve --registry-config", () => {
  test("a registry base is pulled through the operator's mirror (a loopback host the policy refuses otherwise)", async () => {
    const built = await build(Image.fromRegistry(`${origin}/team/mirrored:1`));
    assert.match(built.imageId, /^sha256:[0-9a-f]{64}$/);
    assert.match(
      service.stderr(),
      /registry config .*registries\.toml \(mirrors: 127\.0\.0\.1:\d+ → 127\.0\.0\.1:\d+\)/,
    );
  });

  test("a client naming the mirror's host itself is refused: the allowance is for mirror requests only", async () => {
    const e = await build(Image.fromRegistry(`${mirror.host}/team/mirrored:1`)).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(e instanceof RemoteBuildError, String(e));
    assert.equal(e.code, "FETCH_POLICY");
  });

  test("a bad registry config stops the service at start, naming the file and the key", async () => {
    const dir = await tempDir("strata-mirrors-bad-");
    dirs.push(dir);
    const bad = path.join(dir, "bad.toml");
    await fsp.writeFile(bad, `[registry."docker.io"]\nmirrors = "not-a-list"\n`);
    const r = await spawnServe({ STRATA_HOME: dir }, ["--registry-config", bad]).then(
      (s) => ({ started: s }),
      (err: unknown) => ({ error: err as Error }),
    );
    if ("started" in r) {
      r.started.child.kill("SIGTERM");
      assert.fail("the service started with a bad registry config");
    }
    assert.match(
      r.error.message,
      /bad\.toml: registry\."docker\.io"\.mirrors: expected an array of strings, got a string/,
    );
  });
});
