// `strata build -f Dockerfile`: the same output contract as SDK builds, build args, targets and secrets; BuildKit's
// --label, --no-cache-filter and --network (proved against a server on the host's loopback only).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { spawnServe } from "../support/service.js";
import { makeBusyboxTree, nonce, scratchSpace, strata } from "../support/strata.js";

const space = scratchSpace();
after(() => space.cleanup());

test("strata build -f Dockerfile with --build-arg, --target and --secret; a changed arg rebuilds only the steps using it", async () => {
  const dir = await space.scratch();
  await makeBusyboxTree(path.join(dir, "rootfs"));
  await fsp.writeFile(
    path.join(dir, "Dockerfile"),
    `FROM scratch AS base\nCOPY rootfs/ /\nRUN echo ${nonce()} > /nonce\n\nFROM base AS final\nRUN echo unrelated > /u\nARG GREETING=hello\nRUN echo $GREETING > /g\nRUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /toklen\nCMD ["cat", "/g"]\n\nFROM base AS other\nRUN echo other > /o\n`,
  );
  const build = async (args: string[]) => {
    const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), ...args, dir, "--json"], {
      env: { TOK: "s3cret-token" },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stderr.includes("s3cret-token"));
    return {
      ...(JSON.parse(r.stdout.trim().split("\n").pop()!) as {
        imageId: string;
        steps: { description: string; cached: boolean }[];
      }),
      sandboxes: r.sandboxes,
    };
  };
  const a = await build(["--build-arg", "GREETING=hi", "--secret", "id=tok,env=TOK", "--target", "final"]);
  assert.equal((await strata(["run", a.imageId])).stdout, "hi\n");
  assert.equal((await strata(["run", a.imageId, "--", "cat", "/toklen"])).stdout.trim(), "12");
  assert.ok(!a.steps.some((s) => s.description.includes("echo other")), "stage `other` is not built for target final");
  const b = await build(["--build-arg", "GREETING=bye", "--secret", "id=tok,env=TOK", "--target", "final"]);
  // As in BuildKit, a RUN sees every ARG in scope (so those after `ARG GREETING` rebuild); steps before it do not.
  const cachedUnrelated = b.steps.find((s) => s.description.includes("echo unrelated"));
  assert.equal(cachedUnrelated?.cached, true, "a step that does not use the arg stays cached");
  assert.equal(b.steps.find((s) => s.description.includes("echo $GREETING"))?.cached, false);
  assert.equal((await strata(["run", b.imageId])).stdout, "bye\n");
  const bad = await strata(["build", "-f", path.join(dir, "Dockerfile"), "--build-arg", "NOEQUALS", dir]);
  assert.equal(bad.code, 2);
});

test("strata build: a NUL byte in a COPY destination is a located Dockerfile error, not an internal error", async () => {
  const dir = await space.scratch();
  await fsp.mkdir(path.join(dir, "bb"));
  await fsp.writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY bb/ /\0\n");
  const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), dir]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Dockerfile:2:11\b.*NUL/);
  assert.doesNotMatch(r.stderr, /internal error|ERR_INVALID_ARG_VALUE/);
});

/** `strata build -f <dir>/Dockerfile <dir> --json …`: exit code, parsed result and stderr. */
async function buildFlags(dir: string, args: string[], env: Record<string, string> = {}) {
  const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), dir, "--json", ...args], { env });
  const last = r.stdout.trim().split("\n").pop() ?? "";
  const parsed =
    r.code === 0
      ? (JSON.parse(last) as { imageId: string; steps: { description: string; cached: boolean; key: string }[] })
      : undefined;
  return { code: r.code, stderr: r.stderr, result: parsed };
}

async function imageConfig(imageId: string): Promise<{ Labels?: Record<string, string> }> {
  const r = await strata(["inspect", imageId]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { config: { config: { Labels?: Record<string, string> } } }).config.config;
}

test("strata build -f --label sets labels on the final image only; --no-cache-filter rebuilds that stage's steps", async () => {
  const dir = await space.scratch();
  await makeBusyboxTree(path.join(dir, "rootfs"));
  const tag = nonce();
  await fsp.writeFile(
    path.join(dir, "Dockerfile"),
    `FROM scratch AS base\nCOPY rootfs/ /\nRUN echo ${tag} > /tag\n\n` +
      "FROM base AS a\nRUN cat /proc/sys/kernel/random/uuid > /ua\n\n" +
      "FROM base AS b\nRUN cat /proc/sys/kernel/random/uuid > /ub\n\n" +
      "FROM base\nLABEL own=dockerfile\nCOPY --from=a /ua /ua\nCOPY --from=b /ub /ub\n",
  );
  const plain = await buildFlags(dir, []);
  assert.equal(plain.code, 0, plain.stderr);
  const labelled = await buildFlags(dir, [
    "--label",
    "org.example.team=infra",
    "--label",
    "own=cli",
    "--label",
    "bare",
  ]);
  assert.equal(labelled.code, 0, labelled.stderr);
  const labels = (await imageConfig(labelled.result!.imageId)).Labels;
  assert.deepEqual(labels, { own: "cli", "org.example.team": "infra", bare: "" });
  // Every step before the labels is the same cached step: keys unchanged, nothing rebuilt.
  const before = labelled.result!.steps.slice(0, -1);
  assert.deepEqual(
    before.map((s) => s.key),
    plain.result!.steps.map((s) => s.key),
  );
  assert.ok(before.every((s) => s.cached));
  assert.equal((await imageConfig(plain.result!.imageId)).Labels?.own, "dockerfile");

  const cat = async (id: string, p: string) => (await strata(["run", id, "--", "cat", p])).stdout;
  const ua = await cat(plain.result!.imageId, "/ua");
  const ub = await cat(plain.result!.imageId, "/ub");
  const filtered = await buildFlags(dir, ["--no-cache-filter", "a"]);
  assert.equal(filtered.code, 0, filtered.stderr);
  const step = (needle: string) => filtered.result!.steps.find((s) => s.description.includes(needle))!;
  // Stages a and b are built before the target's chain (not in its step list): their RUNs write random ids, so the
  // files tell which ran again.
  assert.equal(step("echo " + tag).cached, true, "the shared base stage stays cached");
  assert.notEqual(await cat(filtered.result!.imageId, "/ua"), ua, "stage a's RUN is rebuilt");
  assert.equal(await cat(filtered.result!.imageId, "/ub"), ub, "stage b stays cached");
  assert.equal(step("COPY --from=a").cached, false, "what reads the rebuilt stage follows");
  // Unknown stage names and --label on a definition are errors that say what to do.
  const unknown = await buildFlags(dir, ["--no-cache-filter", "a,c"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no stage named "c".*\(its named stages: base, a, b\)/);
  const def = path.join(dir, "def.ts");
  await fsp.writeFile(def, 'import { Image } from "strata";\nexport default Image.fromScratch();\n');
  const onDef = await strata(["build", def, "--label", "a=b"]);
  assert.equal(onDef.code, 2);
  assert.match(onDef.stderr, /--label is for Dockerfile builds/);
});

describe("strata build -f --network", () => {
  // Every probe targets this server on the host's loopback; no other address is ever named.
  let server: http.Server;
  let port = 0;
  let hits = 0;
  let serve: Awaited<ReturnType<typeof spawnServe>> | undefined;
  before(async () => {
    server = http.createServer((_req, res) => {
      hits++;
      res.end("reached-the-host\n");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    serve?.child.kill("SIGTERM");
    await serve?.exited;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  async function project(): Promise<string> {
    const dir = await space.scratch();
    await makeBusyboxTree(path.join(dir, "rootfs"));
    const probe = `(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 127.0.0.1 ${port} 2>/dev/null | grep -q reached-the-host && echo reached || echo blocked)`;
    await fsp.writeFile(
      path.join(dir, "Dockerfile"),
      `FROM scratch\nCOPY rootfs/ /\nRUN echo ${nonce()} > /n\n` +
        `RUN --network=default ${probe} > /probe; sed -n '3,$p' /proc/net/dev | busybox cut -d: -f1 | sed 's/ //g' > /ifaces\n`,
    );
    return dir;
  }

  test("none: the RUN has only its own loopback; host: it reaches the host's loopback server", async () => {
    const dir = await project();
    const before = hits;
    const none = await buildFlags(dir, ["--network", "none"]);
    assert.equal(none.code, 0, none.stderr);
    const run = (p: string) => strata(["run", none.result!.imageId, "--", "cat", p]);
    assert.equal((await run("/probe")).stdout, "blocked\n");
    assert.equal((await run("/ifaces")).stdout, "lo\n", "a RUN with --network none has no interface but loopback");
    assert.equal(hits, before, "the host's server was reached with --network none");
    assert.ok(none.result!.steps.some((s) => s.description.includes("RUN --network=default") && !s.cached));

    const host = await buildFlags(dir, ["--network", "host"]);
    assert.equal(host.code, 0, host.stderr);
    assert.equal((await strata(["run", host.result!.imageId, "--", "cat", "/probe"])).stdout, "reached\n");
    assert.ok(hits > before, "the host network reaches the host's loopback");
    // The network is keyed: none and host are different steps from each other and from the default.
    const dflt = await buildFlags(dir, ["--network", "default"]);
    assert.equal(dflt.code, 0, dflt.stderr);
    const key = (r: typeof none) => r.result!.steps.at(-1)!.key;
    assert.equal(new Set([key(none), key(host), key(dflt)]).size, 3);
    const bad = await buildFlags(dir, ["--network", "bridge"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--network is default, none or host/);
  });

  test("a build service without the network.host entitlement refuses --network host, naming it", async () => {
    const home = await space.scratch();
    const token = `net-${nonce()}`;
    serve = await spawnServe({ STRATA_HOME: home, STRATA_TOKEN: token });
    const dir = await project();
    const before = hits;
    const r = await buildFlags(dir, ["--network", "host"], { STRATA_SERVER: serve.url, STRATA_TOKEN: token });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /host network.*network\.host entitlement.*--network host/s);
    assert.equal(hits, before);
    // The same build with --network none goes through the same service.
    const ok = await buildFlags(dir, ["--network", "none"], { STRATA_SERVER: serve.url, STRATA_TOKEN: token });
    assert.equal(ok.code, 0, ok.stderr);
  });
});
