// ADD <git url> on the build service: the service fetches the repository itself under its fetch policy — refused by
// default (loopback is not public), fetched once the operator allows the address — and keys it as a local build does.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { Image } from "../../src/sdk/image.js";
import { makeRepo, startGitHttp } from "../support/git-server.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { allowFetch, startService, type TestService } from "../support/service.js";
import { nonce, tempDir } from "../support/strata.js";

let root: string;
let web: Awaited<ReturnType<typeof startGitHttp>>;
const services: TestService[] = [];
before(async () => {
  root = await tempDir("strata-service-git-");
  const repo = await makeRepo(root, "r");
  await repo.commit({ "a.txt": "from git\n" });
  web = await startGitHttp(root);
});
after(async () => {
  for (const s of services) await s.close();
  await web?.stop();
  await fsp.rm(root, { recursive: true, force: true });
});

test("the service fetches a git source under its policy: refused by default, built (same keys as locally) when allowed", async () => {
  const dir = await tempDir("strata-service-git-df-");
  await fsp.writeFile(
    path.join(dir, "Dockerfile"),
    `FROM scratch\nADD ${web.url("r")}#main /src\nLABEL n=${nonce()}\n`,
  );
  const image = Image.fromDockerfile(path.join(dir, "Dockerfile"));
  const strict = await startService();
  services.push(strict);
  await assert.rejects(remoteBuildImage(image, { server: strict.url, log: () => undefined }), /127\.0\.0\.1/);
  assert.ok(!web.requests.length, "nothing reached the git server");

  const port = new URL(web.url("r")).port;
  const open = await startService({ fetchPolicy: allowFetch(`127.0.0.1:${port}`) });
  services.push(open);
  const remote = await remoteBuildImage(image, { server: open.url, log: () => undefined });
  const local = await image.build({ store: open.view, log: () => undefined });
  assert.deepEqual(
    local.steps.map((s) => s.key),
    remote.steps.map((s) => s.key),
  );
  assert.equal(local.imageId, remote.imageId);
  await fsp.rm(dir, { recursive: true, force: true });
});
