// Dockerfile builds through `strata serve` (STRATA_SERVER): the client selects the context paths each COPY reads with the
// engine's own rules and uploads only the files the service lacks; the service builds the stages, downloads ADD URLs,
// and keys every step as a local build of the same Dockerfile does (a local build on its store hits every step).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, test } from "node:test";
import { Image } from "../../src/sdk/image.js";
import { Secret } from "../../src/sdk/secret.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { LocalStore } from "../../src/store/local.js";
import { spawnServe } from "../support/service.js";
import { makeBusyboxTree, nonce, scratchSpace, strata, tempDir } from "../support/strata.js";

const space = scratchSpace();
const TOKEN = "svc-df-" + nonce();
const SECRET = "tok-" + nonce() + "-value";
let serve: Awaited<ReturnType<typeof spawnServe>>;
let home: string;
let files: http.Server;
let filesUrl: string;
let downloads = 0;

before(async () => {
  home = await tempDir("strata-service-df-");
  space.track(home);
  files = http.createServer((req, res) => {
    downloads++;
    if (req.url === "/data.txt") res.writeHead(200, { "content-type": "text/plain" }).end("downloaded data\n");
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => files.listen(0, "127.0.0.1", r));
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
  // The service fetches from public addresses only unless the operator allows more: this loopback file server.
  serve = await spawnServe({ STRATA_HOME: home, STRATA_TOKEN: TOKEN }, ["--allow-fetch", new URL(filesUrl).host]);
});

after(async () => {
  serve?.child.kill("SIGTERM");
  await serve?.exited;
  await new Promise<void>((r) => files?.close(() => r()));
  await space.cleanup();
});

async function write(dir: string, rel: string, content: string): Promise<void> {
  await fsp.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
  await fsp.writeFile(path.join(dir, rel), content);
}

/** A multi-stage Dockerfile project: context COPYs (glob, directory, .dockerignore), COPY --from, ADD <url>, a cache mount, a build arg, a secret. */
async function project(): Promise<{ dir: string; dockerfile: string; tag: string }> {
  const dir = await space.scratch();
  const tag = nonce();
  await makeBusyboxTree(path.join(dir, "rootfs"));
  await write(dir, "src/a.txt", "alpha\n");
  await write(dir, "src/b.txt", "beta\n");
  await write(dir, "src/skip.log", "not matched by the glob\n");
  await write(dir, "src/ignored.txt", "excluded by .dockerignore\n");
  await write(dir, "lib/one.sh", "echo one\n");
  await write(dir, "lib/deep/two.sh", "echo two\n");
  await write(dir, "lib/deep/junk.log", "ignored\n");
  await write(dir, "unused/big.bin", "x".repeat(100_000));
  await write(dir, ".dockerignore", "src/ignored.txt\n**/*.log\nunused\n");
  const dockerfile = path.join(dir, "Dockerfile");
  await fsp.writeFile(
    dockerfile,
    [
      "FROM scratch AS base",
      "COPY rootfs/ /",
      `RUN echo ${tag} > /nonce`,
      "",
      "FROM base AS builder",
      "COPY src/*.txt /work/",
      "COPY lib /work/lib",
      'RUN --mount=type=secret,id=tok,env=TOK echo "${#TOK}" > /work/toklen',
      `RUN --mount=type=cache,id=svc-df-${tag},target=/cache echo run >> /cache/runs && wc -l < /cache/runs > /work/runs && cat /work/*.txt > /work/all && ls -R /work/lib > /work/lib.txt`,
      "",
      "FROM base",
      "ARG GREETING=hello",
      "COPY --from=builder /work/all /work/lib.txt /work/runs /work/toklen /app/stage/",
      `ADD ${filesUrl}/data.txt /app/data.txt`,
      'RUN echo "$GREETING" > /app/greeting',
      "RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /app/toklen",
      'CMD ["cat", "/app/stage/all"]',
      "",
    ].join("\n"),
  );
  return { dir, dockerfile, tag };
}

const image = (p: { dir: string; dockerfile: string }, greeting = "hi") =>
  Image.fromDockerfile(p.dockerfile, {
    contextDir: p.dir,
    buildArgs: { GREETING: greeting },
    secrets: Secret.fromObject({ tok: SECRET }),
    secretsAsEnv: false, // as strata build -f --secret, whose keys some tests compare
  });

test("a multi-stage Dockerfile builds on the service: same keys and image as locally; cached rebuilds upload nothing; an edit uploads one file", async () => {
  const p = await project();
  const statCache = path.join(p.dir, "statcache.json");
  const lines: string[] = [];
  const first = await remoteBuildImage(image(p), {
    server: serve.url,
    token: TOKEN,
    statCache,
    log: (l) => lines.push(l),
  });
  // Exactly the files the COPYs read (the service's store is new): not the ignored, unmatched or unused ones.
  const read = [
    "rootfs/bin/busybox",
    "rootfs/etc/passwd",
    "rootfs/etc/group",
    "src/a.txt",
    "src/b.txt",
    "lib/one.sh",
    "lib/deep/two.sh",
  ];
  let bytes = 0;
  for (const f of read) bytes += (await fsp.stat(path.join(p.dir, f))).size;
  assert.equal(first.uploadedFiles, read.length);
  assert.equal(first.uploadedBytes, bytes);
  assert.ok(first.steps.some((s) => !s.cached));
  assert.ok(!lines.join("\n").includes(SECRET), "the secret value never reaches the log");
  assert.ok(!serve.stderr().includes(SECRET));
  assert.ok(downloads >= 1, "the service downloaded the ADD URL");

  // The image the service built has what the Dockerfile says.
  const run = async (...cmd: string[]) => {
    const r = await strata(["run", first.imageId, "--", ...cmd], { home });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  assert.equal(await run("cat", "/app/stage/all"), "alpha\nbeta\n");
  assert.equal(
    (await run("cat", "/app/stage/toklen")).trim(),
    String(SECRET.length),
    "a secret mounted in a stage the target reads",
  );
  assert.equal(await run("cat", "/app/data.txt"), "downloaded data\n");
  assert.equal(await run("cat", "/app/greeting"), "hi\n");
  assert.equal((await run("cat", "/app/toklen")).trim(), String(SECRET.length));
  const listing = await run("cat", "/app/stage/lib.txt");
  assert.match(listing, /one\.sh/);
  assert.match(listing, /two\.sh/);
  assert.doesNotMatch(listing, /junk\.log/, ".dockerignore applies to the service's copy of the context");

  // Same store, built locally: every step a cache hit with the same key (the service keyed what a local build keys).
  const store = await LocalStore.open(home);
  const local = await image(p).build({ store, log: () => undefined });
  assert.deepEqual(
    local.steps.map((s) => s.key),
    first.steps.map((s) => s.key),
    "same step keys locally and on the service",
  );
  assert.ok(
    local.steps.every((s) => s.cached),
    "a local build on the service's store is all cache hits",
  );
  assert.equal(local.imageId, first.imageId);

  const again = await remoteBuildImage(image(p), { server: serve.url, token: TOKEN, statCache, log: () => undefined });
  assert.equal(again.uploadedBytes, 0, "nothing to upload");
  assert.equal(again.uploadedFiles, 0);
  assert.ok(
    again.steps.every((s) => s.cached),
    "all cached",
  );
  assert.equal(again.imageId, first.imageId);

  // An unused or ignored file changes nothing; one edited source uploads just that file.
  await write(p.dir, "unused/big.bin", "y".repeat(100_000));
  await write(p.dir, "lib/deep/junk.log", "still ignored\n");
  const unrelated = await remoteBuildImage(image(p), {
    server: serve.url,
    token: TOKEN,
    statCache,
    log: () => undefined,
  });
  assert.equal(unrelated.uploadedFiles, 0);
  assert.equal(unrelated.imageId, first.imageId);

  await write(p.dir, "src/b.txt", "BETA!\n");
  const edited = await remoteBuildImage(image(p), { server: serve.url, token: TOKEN, statCache, log: () => undefined });
  assert.equal(edited.uploadedFiles, 1, "only the edited file");
  assert.equal(edited.uploadedBytes, "BETA!\n".length);
  assert.notEqual(edited.imageId, first.imageId);
  const byDesc = (r: typeof edited, re: RegExp) => r.steps.find((s) => re.test(s.description));
  assert.equal(byDesc(edited, /ADD http/)?.cached, false, "steps after the changed COPY --from rebuild");
  assert.equal(
    (await strata(["run", edited.imageId, "--", "cat", "/app/stage/all"], { home })).stdout,
    "alpha\nBETA!\n",
  );
  // The cache mount persisted on the service between the two runs of the builder stage's RUN.
  assert.equal(await run("cat", "/app/stage/runs").then((t) => t.trim()), "1");
  assert.equal((await strata(["run", edited.imageId, "--", "cat", "/app/stage/runs"], { home })).stdout.trim(), "2");

  // A changed build arg rebuilds only the steps using it, keyed as locally.
  const bye = await remoteBuildImage(image(p, "bye"), {
    server: serve.url,
    token: TOKEN,
    statCache,
    log: () => undefined,
  });
  assert.equal(bye.uploadedFiles, 0);
  assert.equal(byDesc(bye, /ADD http/)?.cached, true);
  assert.equal(byDesc(bye, /echo "\$GREETING"/)?.cached, false);
  const localBye = await image(p, "bye").build({ store, log: () => undefined });
  assert.deepEqual(
    localBye.steps.map((s) => s.key),
    bye.steps.map((s) => s.key),
  );
  assert.equal(localBye.imageId, bye.imageId);
});

test("strata build of a fromDockerfile definition with STRATA_SERVER builds on the service", async () => {
  const p = await project();
  const def = path.join(p.dir, "image.ts");
  await fsp.writeFile(
    def,
    `import { Image, Secret } from "strata";\nexport default Image.fromDockerfile(${JSON.stringify(p.dockerfile)}, { buildArgs: { GREETING: "cli" }, secrets: Secret.fromObject({ tok: "x" }), secretsAsEnv: false });\n`,
  );
  const r = await strata(["build", def, "--json"], { env: { STRATA_SERVER: serve.url, STRATA_TOKEN: TOKEN } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.sandboxes, 0, "the client ran no sandbox itself");
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as { imageId: string };
  assert.equal((await strata(["run", out.imageId, "--", "cat", "/app/greeting"], { home })).stdout, "cli\n");
});

test("strata build -f Dockerfile <context> with STRATA_SERVER builds on the service, with the keys of the definition build", async () => {
  const p = await project();
  const remote = await strata(
    ["build", "-f", p.dockerfile, p.dir, "--build-arg", "GREETING=cli-f", "--secret", "id=tok,env=TOK_VALUE", "--json"],
    {
      env: { STRATA_SERVER: serve.url, STRATA_TOKEN: TOKEN, TOK_VALUE: "x" },
    },
  );
  assert.equal(remote.code, 0, remote.stderr);
  assert.equal(remote.sandboxes, 0, "the client ran no sandbox itself");
  const out = JSON.parse(remote.stdout.trim().split("\n").pop()!) as { imageId: string; steps: { key: string }[] };
  assert.equal((await strata(["run", out.imageId, "--", "cat", "/app/greeting"], { home })).stdout, "cli-f\n");
  // The same build locally on the service's store: every step is a hit under the same keys.
  const local = await strata(
    ["build", "-f", p.dockerfile, p.dir, "--build-arg", "GREETING=cli-f", "--secret", "id=tok,env=TOK_VALUE", "--json"],
    { home, env: { TOK_VALUE: "x" } },
  );
  assert.equal(local.code, 0, local.stderr);
  const localOut = JSON.parse(local.stdout.trim().split("\n").pop()!) as {
    imageId: string;
    steps: { key: string; cached: boolean }[];
  };
  assert.deepEqual(
    localOut.steps.map((s) => s.key),
    out.steps.map((s) => s.key),
  );
  assert.ok(localOut.steps.every((s) => s.cached));
});
