// Two tenants on one build service (alice and mallory, each with a token of a tenants table): the attacks of issue 10,
// replayed. Sharing stays automatic inside a tenant and is impossible across tenants: no join across tenants (or
// within one when secret values differ), another tenant's build, log and image are 404, cache mounts and the cache
// index are per tenant (a poisoned secret-mounted step is built again), another tenant's blob is missing (HEAD, check,
// and a 400 naming it when a request names it), and a writable bind mount never changes the input tree.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { buildPlan } from "../../src/engine/build.js";
import { Image } from "../../src/sdk/image.js";
import { Secret } from "../../src/sdk/secret.js";
import type { Plan, Step } from "../../src/plan/step.js";
import { sandboxRunCount } from "../../src/sandbox/runc.js";
import { remoteBuild, type RemoteBuiltImage } from "../../src/service/client.js";
import { compileRequest } from "../../src/service/wire/encode.js";
import { parseTenants, TenantTable } from "../../src/service/tenants.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, raw, startService, type TestService } from "../support/service.js";
import { makeBusyboxTree, nonce, tempDir } from "../support/strata.js";

const ALICE = `alice-${randomBytes(16).toString("hex")}`;
const MALLORY = `mallory-${randomBytes(16).toString("hex")}`;
const tenants = () =>
  TenantTable.of(
    parseTenants(
      JSON.stringify([
        { tenant: "alice", token: ALICE },
        { tenant: "mallory", tokenSha256: createHash("sha256").update(MALLORY).digest("hex") },
      ]),
      "test",
    ),
  );

let svc: TestService;
let home: string;
const dirs: string[] = [];
before(async () => {
  home = await tempDir("strata-tenants-");
  svc = await startService({ home, tenants: tenants() });
});
after(async () => {
  assert.deepEqual(
    svc.serverLog.filter((l) => /internal error|join across/.test(l)),
    [],
    "no request hit an internal error",
  );
  await svc.close();
  for (const d of [...dirs, home]) await fsp.rm(d, { recursive: true, force: true });
});

const sha = (b: string | Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");
const as = (token: string, log?: (l: string) => void) => ({
  server: svc.url,
  token,
  statCache: false as const,
  log: log ?? (() => undefined),
});

/** A Dockerfile (outside `context`) built as an Image with `context` as its context. */
async function dockerfile(lines: string[], context: string, secrets?: Record<string, string>): Promise<Image> {
  const dir = await tempDir("strata-tenants-df-");
  dirs.push(dir);
  const file = path.join(dir, "Dockerfile");
  await fsp.writeFile(file, ["FROM scratch", "COPY rootfs/ /", ...lines, ""].join("\n"));
  return Image.fromDockerfile(file, {
    contextDir: context,
    ...(secrets ? { secrets: Secret.fromObject(secrets) } : {}),
  });
}

/** A context dir holding a busybox rootfs (and `files`). */
async function context(files: Record<string, string> = {}): Promise<string> {
  const dir = await tempDir("strata-tenants-ctx-");
  dirs.push(dir);
  await makeBusyboxTree(path.join(dir, "rootfs"));
  for (const [rel, text] of Object.entries(files)) await fsp.writeFile(path.join(dir, rel), text);
  return dir;
}

describe("joins", () => {
  test("the same definition from two tenants: two builds, each runs its RUN step; none joins the other", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const image = base.runCommands("sleep 0.5; echo built > /built").cmd(["cat", "/built"]);
    const before = sandboxRunCount();
    const [a, m] = await Promise.all([remoteBuildImage(image, as(ALICE)), remoteBuildImage(image, as(MALLORY))]);
    assert.notEqual(a.buildId, m.buildId);
    assert.equal(a.joined, false);
    assert.equal(m.joined, false);
    assert.equal(sandboxRunCount() - before, 2, "each tenant ran the RUN step itself");
    assert.notEqual(a.imageId, m.imageId);
    // Within a tenant, sharing stays: asking again joins the finished build.
    const again = await remoteBuildImage(image, as(ALICE));
    assert.equal(again.buildId, a.buildId);
    assert.ok(again.joined);
  });

  test("within a tenant, concurrent identical requests join only when their secret values are equal", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const def = (value: string) =>
      base.runCommands("sleep 0.5; echo $S | base64", { secrets: [Secret.fromObject({ S: value })] });
    const logs: string[][] = [[], [], []];
    const [one, two, same] = await Promise.all([
      remoteBuildImage(
        def("value-one"),
        as(ALICE, (l) => logs[0]!.push(l)),
      ),
      remoteBuildImage(
        def("value-two"),
        as(ALICE, (l) => logs[1]!.push(l)),
      ),
      remoteBuildImage(
        def("value-one"),
        as(ALICE, (l) => logs[2]!.push(l)),
      ),
    ]);
    assert.notEqual(one.buildId, two.buildId, "different secret values: different builds");
    assert.ok(!two.joined);
    assert.equal(same.buildId, one.buildId, "same secret values: joined");
    const b64 = (s: string) => Buffer.from(`${s}\n`).toString("base64");
    assert.ok(!logs[1]!.join("\n").includes(b64("value-one")), "the other value's log (base64) never reached it");
  });
});

describe("reading another tenant's build, log and image", () => {
  test("the other tenant gets 404 for the build, its log and its image, also after a restart", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const built = await remoteBuildImage(base.runCommands(`echo private-${nonce()}`), as(ALICE));
    const check = async (url: string) => {
      for (const p of [
        `/v1/images/${built.buildId}`,
        `/v1/images/${built.buildId}/logs`,
        `/v1/images/${built.imageId}`,
      ]) {
        const m = await raw(url, "GET", p, { token: MALLORY });
        assert.equal(m.status, 404, `mallory: GET ${p} → ${m.status} ${m.text.slice(0, 200)}`);
        assert.equal(m.json().error.code, "NOT_FOUND");
        const a = await raw(url, "GET", p, { token: ALICE });
        assert.equal(a.status, 200, `alice: GET ${p} → ${a.status} ${a.text.slice(0, 200)}`);
      }
    };
    await check(svc.url);
    // A server restarted on the same store (records and grants are in the store) answers the same.
    const again = await startService({ home, tenants: tenants() });
    try {
      await check(again.url);
    } finally {
      await again.close();
    }
  });
});

describe("cache", () => {
  test("cache mounts are per tenant: what mallory planted (a setuid file too) is not in alice's mount", async () => {
    const ctx = await context();
    const id = `shared-${nonce()}`;
    const step = (tag: string) =>
      `RUN --mount=type=cache,id=${id},target=/c sh -c 'echo ${tag}; echo "seen: $(ls -A /c | tr "\\n" " ")"; echo planted > /c/planted; cp /bin/busybox /c/suid; chmod 4755 /c/suid'`;
    const mLog: string[] = [];
    await remoteBuildImage(
      await dockerfile([step("m1")], ctx),
      as(MALLORY, (l) => mLog.push(l)),
    );
    const mLog2: string[] = [];
    await remoteBuildImage(
      await dockerfile([step("m2")], ctx),
      as(MALLORY, (l) => mLog2.push(l)),
    );
    assert.ok(
      mLog2.some((l) => /^\s*seen: .*planted/.test(l) && /suid/.test(l)),
      `the mount is kept within the tenant:\n${mLog2.join("\n")}`,
    );
    const aLog: string[] = [];
    await remoteBuildImage(
      await dockerfile([step("a1")], ctx),
      as(ALICE, (l) => aLog.push(l)),
    );
    const seen = aLog.find((l) => l.trim().startsWith("seen:"));
    assert.ok(seen, aLog.join("\n"));
    assert.equal(seen.trim(), "seen:", `alice's cache mount starts empty:\n${aLog.join("\n")}`);
  });

  test("poisoned cache: mallory's secret-mounted step is not a cache hit for alice, who builds it with her value", async () => {
    const ctx = await context();
    const lines = [
      `ENV N=${nonce()}`,
      `RUN --mount=type=secret,id=index,env=INDEX_URL sh -c 'echo "$INDEX_URL" > /index-url'`,
      "RUN cat /index-url",
    ];
    const m = await remoteBuildImage(
      await dockerfile(lines, ctx, { index: "http://evil.invalid/simple" }),
      as(MALLORY),
    );
    assert.equal(m.steps.find((s) => s.description.includes("INDEX_URL"))!.cached, false);
    const aLog: string[] = [];
    const a = await remoteBuildImage(
      await dockerfile(lines, ctx, { index: "https://pypi.example/simple" }),
      as(ALICE, (l) => aLog.push(l)),
    );
    const secretStep = a.steps.find((s) => s.description.includes("INDEX_URL"))!;
    assert.equal(secretStep.cached, false, "alice's secret-mounted step was built, not taken from mallory");
    assert.ok(!aLog.join("\n").includes("evil.invalid"), aLog.join("\n"));
    assert.ok(
      aLog.some((l) => l.trim() === "***"),
      `alice's step printed her own (redacted) value:\n${aLog.join("\n")}`,
    );
  });
});

describe("blobs", () => {
  test("a blob another tenant holds is missing: HEAD 404, check lists it, and a request naming it is a 400 naming it", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const secretFile = path.join(dir, "secret.txt");
    await fsp.writeFile(secretFile, `alice's secret ${nonce()}\n`);
    const built = await remoteBuildImage(base.addLocalFile(secretFile, "/secret.txt", { copy: true }), as(ALICE));
    // What mallory would learn from GET /v1/images/<id> (alice's answer, which mallory cannot get: 404 above).
    const info = (await raw(svc.url, "GET", `/v1/images/${built.imageId}`, { token: ALICE })).json();
    const layer = info.layers[info.layers.length - 1].digest as string;
    const uploaded = sha(await fsp.readFile(secretFile));
    for (const d of [layer, uploaded]) {
      assert.equal((await raw(svc.url, "HEAD", `/v1/blobs/${d}`, { token: ALICE })).status, 200);
      assert.equal((await raw(svc.url, "HEAD", `/v1/blobs/${d}`, { token: MALLORY })).status, 404, `HEAD ${d}`);
    }
    const checked = await raw(svc.url, "POST", "/v1/blobs/check", {
      token: MALLORY,
      body: JSON.stringify({ digests: [layer, uploaded] }),
    });
    assert.deepEqual(checked.json().missing.sort(), [layer, uploaded].sort());
    // Mallory names alice's layer as a context file of her own request.
    const probe = path.join(dir, "probe");
    await fsp.writeFile(probe, "x");
    const { request } = await compileRequest(base.addLocalFile(probe, "/probe", { copy: true }).plan());
    const text = JSON.stringify(request).split(sha("x")).join(layer);
    const r = await raw(svc.url, "POST", "/v1/images", {
      token: MALLORY,
      body: text,
      headers: { "content-type": "application/json" },
    });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json().error.code, "MISSING_BLOBS");
    assert.ok(r.json().error.missing.includes(layer), r.text);
    assert.match(r.json().error.message, new RegExp(layer.replace(/[:]/g, "."))); // names the blob (first missing)
    // Uploading the bytes (verified in full) makes a blob hers, even though it was stored already.
    const bytes = await fsp.readFile(secretFile);
    assert.equal((await raw(svc.url, "PUT", `/v1/blobs/${uploaded}`, { token: MALLORY, body: bytes })).status, 201);
    assert.equal((await raw(svc.url, "HEAD", `/v1/blobs/${uploaded}`, { token: MALLORY })).status, 200);
  });

  test("fromId of another tenant's image is refused like a missing image", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const built = await remoteBuildImage(base.runCommands(`echo base-${nonce()} > /b`), as(ALICE));
    const derived = Image.fromId(built.imageId).env({ X: nonce() });
    await assert.rejects(remoteBuildImage(derived, as(MALLORY)), /MISSING_IMAGE|is not in the server's store/);
    const ok = await remoteBuildImage(derived, as(ALICE));
    assert.ok(ok.imageId);
  });
});

describe("writable bind mounts", () => {
  const rwStep = (name: string, localPath: string, tag: string): Step => ({
    method: "runCommands",
    description: `runCommands (rw mount) ${tag}`,
    instructions: [
      {
        op: "RUN",
        command: "cat /ctx/data.txt; echo poisoned > /ctx/data.txt; echo new > /ctx/new.txt",
        mounts: [{ type: "bind", source: name, target: "/ctx", readonly: false }],
      },
    ],
    inputs: [{ kind: "dir", name, localPath, ignore: [] }],
    secrets: [],
    env: {},
    forceBuild: false,
    extra: [],
  });
  const readStep = (name: string, localPath: string): Step => ({
    ...rwStep(name, localPath, "read"),
    description: `runCommands (read) ${nonce()}`,
    instructions: [
      {
        op: "RUN",
        command: "echo data=$(cat /ctx/data.txt); ls /ctx",
        mounts: [{ type: "bind", source: name, target: "/ctx", readonly: true }],
      },
    ],
  });

  test("a service build's write through a rw bind mount never reaches a later build with the same context", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const ctxDir = path.join(dir, "ctx");
    await fsp.mkdir(ctxDir);
    await fsp.writeFile(path.join(ctxDir, "data.txt"), "original\n");
    const plan = (step: Step): Plan => {
      const p = base.plan();
      return { ...p, steps: [...p.steps, step] };
    };
    const first: RemoteBuiltImage = await remoteBuild(plan(rwStep("ctx", ctxDir, nonce())), as(ALICE));
    assert.ok(first.imageId);
    const lines: string[] = [];
    await remoteBuild(
      plan(readStep("ctx", ctxDir)),
      as(ALICE, (l) => lines.push(l)),
    );
    assert.ok(
      lines.some((l) => l.trim() === "data=original"),
      lines.join("\n"),
    );
    assert.ok(!lines.some((l) => l.includes("new.txt")), lines.join("\n"));
    // Every materialised tree still holds the original file.
    const trees = path.join(home, "service", "trees");
    for (const t of await fsp.readdir(trees)) {
      const f = path.join(trees, t, "data.txt");
      const text = await fsp.readFile(f, "utf8").catch(() => undefined);
      if (text !== undefined) assert.equal(text, "original\n", f);
    }
    // The Dockerfile form (a context selection) too.
    const df = await context({ "data.txt": "original\n" });
    await remoteBuildImage(
      await dockerfile(
        [`RUN --mount=type=bind,source=.,target=/ctx,rw sh -c 'echo poisoned > /ctx/data.txt; echo ${nonce()}'`],
        df,
      ),
      as(ALICE),
    );
    const dfLines: string[] = [];
    await remoteBuildImage(
      await dockerfile(
        [`RUN --mount=type=bind,source=.,target=/ctx sh -c 'echo data=$(cat /ctx/data.txt); echo ${nonce()}'`],
        df,
      ),
      as(ALICE, (l) => dfLines.push(l)),
    );
    assert.ok(
      dfLines.some((l) => l.trim() === "data=original"),
      dfLines.join("\n"),
    );
  });

  test("a local build's rw bind mount leaves the user's directory unchanged", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const ctxDir = path.join(dir, "ctx");
    await fsp.mkdir(ctxDir);
    await fsp.writeFile(path.join(ctxDir, "data.txt"), "original\n");
    const p = base.plan();
    await buildPlan(
      { ...p, steps: [...p.steps, rwStep("ctx", ctxDir, nonce())] },
      { store: svc.store, log: () => undefined },
    );
    assert.equal(await fsp.readFile(path.join(ctxDir, "data.txt"), "utf8"), "original\n");
    assert.deepEqual(await fsp.readdir(ctxDir), ["data.txt"]);
  });
});
