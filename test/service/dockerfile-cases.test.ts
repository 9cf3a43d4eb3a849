// Every Dockerfile behaviour case (fixtures/dockerfiles/<case>/) built through the service: the compiled request passes
// the wire validator unchanged, the image the service builds matches expected.json, and a local build of the same case
// on the service's store hits every step with the same keys (so remote and local builds share every layer).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Image } from "../../src/sdk/image.js";
import { compileRequest } from "../../src/service/wire/encode.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { parseBuildRequest } from "../../src/service/wire/decode.js";
import {
  checkExpect,
  loadCases,
  prepare,
  strataConfig,
  strataTree,
  type FixtureCase,
  type Prepared,
} from "../dockerfile-e2e/support.js";
import { allowFetch, startService, type TestService } from "../support/service.js";

const cases = loadCases();
let svc: TestService;
before(async () => {
  // Cases with `serve` ADD from a loopback file server on a port of their own: the service allows loopback's 127.0.0.1.
  svc = await startService({ fetchPolicy: allowFetch("127.0.0.1") });
});
after(async () => {
  assert.deepEqual(
    svc.serverLog.filter((l) => /internal error/.test(l)),
    [],
    "no request hit an internal error",
  );
  await svc.close();
});

const imageOf = (p: Prepared, c: FixtureCase) =>
  Image.fromDockerfile(p.dockerfile, {
    contextDir: p.context,
    buildArgs: p.buildArgs,
    ...(c.expect.target ? { target: c.expect.target } : {}),
    ...(c.expect.secrets ? { secrets: c.expect.secrets, secretsAsEnv: false } : {}),
  });

describe("Dockerfile cases through the service", { concurrency: 4 }, () => {
  for (const c of cases) {
    test(`${c.name}`, async () => {
      const p = await prepare(c);
      try {
        const image = imageOf(p, c);
        const { request } = await compileRequest(image.plan(), undefined, image.secretValues());
        const wire = JSON.parse(JSON.stringify(request)) as unknown;
        assert.deepEqual(parseBuildRequest(wire), wire, "the validator accepts the request as the client sends it");
        const log: string[] = [];
        const remote = await remoteBuildImage(image, {
          server: svc.url,
          statCache: false,
          log: (l) => log.push(l),
        }).catch((e: Error) => {
          throw new Error(`${e.message}\n${log.join("\n")}`);
        });
        const errs = checkExpect(
          c.expect,
          await strataTree(svc.store, remote.imageId),
          await strataConfig(svc.store, remote.imageId),
        );
        assert.deepEqual(errs, [], `case ${c.name}:\n${errs.join("\n")}`);
        for (const v of Object.values(c.expect.secrets ?? {}))
          assert.ok(!log.join("\n").includes(v), "no secret value in the log");
        const local = await imageOf(p, c).build({ store: svc.view, log: () => undefined });
        assert.deepEqual(
          local.steps.map((s) => [s.description, s.key]),
          remote.steps.map((s) => [s.description, s.key]),
          "same step keys as a local build",
        );
        assert.ok(
          local.steps.every((s) => s.cached),
          "a local build on the service's store hits every step",
        );
        assert.equal(local.imageId, remote.imageId);
      } finally {
        await p.close();
      }
    });
  }
});
