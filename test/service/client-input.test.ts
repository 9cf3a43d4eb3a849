// Attacks a client of the build service can send, replayed through `strata serve` (in this process, on loopback):
// client input must never run as root on the host (mmdebstrap options), never choose a cache key (a base's recipe),
// and never name a host path (WORKDIR, RUN mount targets, the mount-stub scrubber, a builder tool's location).
// Each attack either gets a 400 or builds with no host-side effect.
import assert from "node:assert/strict";
import { existsSync, promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { loadBuilderVersion } from "../../src/builder-version.js";
import { keyInputsFor } from "../../src/engine/build.js";
import { InvalidDefinitionError } from "../../src/errors.js";
import { initKeys, stepKey } from "../../src/keys/step-key.js";
import { Image } from "../../src/sdk/image.js";
import { compileRequest } from "../../src/service/wire/encode.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { parseBuildRequest } from "../../src/service/wire/decode.js";
import { WIRE_FORMAT } from "../../src/service/wire/limits.js";
import { FINISHED, type BuildInfo, type BuildStatus } from "../../src/service/wire/responses.js";
import { layerDirs } from "../../src/store/store.js";
import type { Digest } from "../../src/util/digest.js";
import { busyboxBase, raw, startService, type RawResponse, type TestService } from "../support/service.js";
import { nonce } from "../support/strata.js";

let svc: TestService;
const cleanup: string[] = [];
before(async () => {
  svc = await startService();
});
after(async () => {
  await svc.close();
  for (const d of cleanup) await fsp.rm(d, { recursive: true, force: true });
});

type Json = Record<string, any>;

const post = (body: unknown): Promise<RawResponse> =>
  raw(svc.url, "POST", "/v1/images", { body: JSON.stringify(body), headers: { "content-type": "application/json" } });

/** Waits for a build to finish and returns its info. */
async function finished(buildId: string): Promise<BuildInfo> {
  for (;;) {
    const r = await raw(svc.url, "GET", `/v1/images/${buildId}`);
    assert.equal(r.status, 200, r.text);
    const info = r.json() as BuildInfo;
    if (FINISHED.has(info.status as BuildStatus)) return info;
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Posts a request; when accepted, waits for the build. Returns the response and, if it ran, the finished build. */
async function submit(body: unknown): Promise<{ res: RawResponse; build?: BuildInfo }> {
  const res = await post(body);
  if (res.status >= 300) return { res };
  return { res, build: await finished(res.json().buildId as string) };
}

/** A busybox base compiled to a wire request with its blobs uploaded (the steps attacks are appended to). */
async function busyboxRequest(): Promise<Json> {
  const { dir, base } = await busyboxBase();
  cleanup.push(dir);
  const { request, files } = await compileRequest(base.plan());
  for (const [digest, f] of files) {
    const put = await raw(svc.url, "PUT", `/v1/blobs/${digest}`, { body: await fsp.readFile(f.absPath) });
    assert.ok(put.status < 300, put.text);
  }
  return structuredClone(request) as unknown as Json;
}

function step(description: string, instructions: Json[], more: Json = {}): Json {
  return {
    method: "dockerfile",
    description,
    instructions,
    inputs: [],
    secrets: [],
    env: {},
    forceBuild: false,
    extra: [],
    ...more,
  };
}

/** The file `rel` in the topmost layer of an image that has it, or undefined. */
async function fileInImage(imageId: string, rel: string): Promise<string | undefined> {
  const rec = await svc.store.getImage(imageId as Digest);
  assert.ok(rec, `image ${imageId} is in the store`);
  for (const d of (await layerDirs(svc.store, rec.layers)).reverse()) {
    const text = await fsp.readFile(path.join(d, rel), "utf8").catch(() => undefined);
    if (text !== undefined) return text;
  }
  return undefined;
}

/** Far more `..` than any store path is deep, so a plain join would reach the host's `/`. */
const CLIMB = "/..".repeat(40);

describe("mmdebstrap options from the wire (client input as root on the host)", () => {
  const OFFICIAL = {
    python: "3.11",
    variant: "minbase",
    packages: ["ca-certificates", "python-is-python3", "python3", "python3-pip", "python3-venv"],
    cmd: ["python3"],
  };

  test("a debian base whose suite or mirror is an mmdebstrap option is refused (400); the hook never runs on the host", {
    timeout: 120_000,
  }, async () => {
    const markers: string[] = [];
    const attacks: Json[] = [];
    for (const field of ["suite", "mirror"] as const) {
      const marker = `/tmp/strata-pwned-${field}-${nonce()}`;
      markers.push(marker);
      // `exit 1` stops mmdebstrap right after the hook (before any download), should it ever run.
      const hook = `--setup-hook=touch ${marker}; exit 1`;
      // With the suite taken as an option, mmdebstrap's positional target would be the mirror: a throwaway directory.
      const target = `/tmp/strata-attack-target-${nonce()}`;
      cleanup.push(target);
      const base = {
        kind: "debian",
        ...OFFICIAL,
        suite: "bookworm",
        mirror: "http://127.0.0.1:9/debian",
        [field]: hook,
        ...(field === "suite" ? { mirror: target } : {}),
      };
      const desc = `debianSlim ${nonce()}`;
      const stepJson = {
        method: "debianSlim",
        description: desc,
        base,
        instructions: [{ op: "CMD", argv: ["python3"] }],
        inputs: [],
        secrets: [],
        env: {},
        forceBuild: false,
        extra: [["base", JSON.stringify(base)]],
      };
      // As an old (strata-build/2) client sends it, and with the current format named.
      attacks.push({ builderVersion: "2026.11", steps: [stepJson], deferred: [] });
      attacks.push({ format: WIRE_FORMAT, builderVersion: "2026.11", steps: [stepJson], deferred: [] });
    }
    // The current format: the client names only a Python series.
    const pyMarker = `/tmp/strata-pwned-python-${nonce()}`;
    markers.push(pyMarker);
    attacks.push({
      format: WIRE_FORMAT,
      builderVersion: "2026.11",
      steps: [
        {
          method: "debianSlim",
          description: "debianSlim",
          base: { kind: "debian", python: `--setup-hook=touch ${pyMarker}` },
          instructions: [],
          inputs: [],
          secrets: [],
          env: {},
          forceBuild: false,
          extra: [],
        },
      ],
      deferred: [],
    });
    cleanup.push(...markers);
    const outcomes = [];
    for (const body of attacks) outcomes.push(await submit(body));
    for (const m of markers) assert.equal(existsSync(m), false, `${m} was created on the host`);
    for (const { res, build } of outcomes) {
      assert.equal(res.status, 400, `refused: ${res.text} ${JSON.stringify(build?.failure ?? "")}`);
      assert.equal(res.json().error.code, "BAD_REQUEST");
    }
  });

  test("a request with no format (an older client) gets a 400 that says to upgrade", async () => {
    const r = await post({
      builderVersion: "2026.11",
      steps: [step("FROM scratch", [], { base: { kind: "scratch" } })],
      deferred: [],
    });
    assert.equal(r.status, 400, r.text);
    assert.match(r.json().error.message, new RegExp(`format.*${WIRE_FORMAT}.*upgrade`, "i"));
  });
});

describe("the client sends a debian base as its Python series", () => {
  test("Image.debianSlim compiles to { kind: debian, python } with nothing else; a hand-made recipe is refused", async () => {
    const { request } = await compileRequest(
      Image.debianSlim({ pythonVersion: "3.13" }).runCommands("true").plan("2026.11"),
    );
    assert.equal(request.format, WIRE_FORMAT);
    assert.deepEqual(request.steps[0], {
      method: "debianSlim",
      description: "debianSlim python 3.13 (trixie)",
      base: { kind: "debian", python: "3.13" },
      instructions: [],
      inputs: [],
      secrets: [],
      env: {},
      forceBuild: false,
      extra: [],
    });
    const plan = Image.debianSlim().plan("2026.11");
    const s0 = plan.steps[0]!;
    plan.steps[0] = {
      ...s0,
      base: {
        ...(s0.base as Extract<NonNullable<typeof s0.base>, { kind: "debian" }>),
        mirror: "http://127.0.0.1:1/mine",
      },
    };
    await assert.rejects(
      compileRequest(plan),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /differs from builder version 2026\.11's debianSlim recipe.*build locally/.test(e.message),
    );
  });
});

describe("cache keys the client chooses", () => {
  let scratchKey: string;
  let scratchImage: string;
  before(async () => {
    const { build } = await submit({
      format: WIRE_FORMAT,
      builderVersion: "2026.11",
      steps: [step("FROM scratch", [], { base: { kind: "scratch" } })],
      deferred: [],
    });
    assert.equal(build?.status, "succeeded", JSON.stringify(build?.failure));
    scratchKey = build!.result!.steps[0]!.key;
    scratchImage = build!.result!.imageId;
  });

  test("a debian base with an empty extra is never answered with another recipe's cached image (here: scratch's)", async () => {
    const base = {
      kind: "debian",
      python: "3.11",
      suite: "bookworm",
      mirror: "http://deb.debian.org/debian",
      variant: "minbase",
      packages: ["ca-certificates"],
      cmd: [],
    };
    for (const format of [undefined, WIRE_FORMAT]) {
      const { res, build } = await submit({
        ...(format ? { format } : {}),
        builderVersion: "2026.11",
        steps: [
          {
            method: "debianSlim",
            description: "debianSlim",
            base,
            instructions: [],
            inputs: [],
            secrets: [],
            env: {},
            forceBuild: false,
            extra: [],
          },
        ],
        deferred: [],
      });
      if (res.status === 400) continue;
      assert.notEqual(build?.result?.steps[0]?.key, scratchKey, "the debian base was keyed as fromScratch");
      assert.notEqual(build?.result?.imageId, scratchImage, "the debian base was answered with the scratch image");
    }
  });

  test("extra entries the engine derives (base, base.manifest, env.*, link.*, workdir.create) are refused with 400", async () => {
    const forged: [string, string][] = [
      ["base", JSON.stringify({ kind: "debian", python: "3.11" })],
      ["base.manifest", "sha256:" + "1".repeat(64)],
      ["env.PATH", "/evil"],
      ["link.workdir", "/"],
      ["workdir.create", "true"],
    ];
    for (const pair of forged) {
      const r = await post({
        format: WIRE_FORMAT,
        builderVersion: "2026.11",
        steps: [step("FROM scratch", [], { base: { kind: "scratch" }, extra: [pair] })],
        deferred: [],
      });
      assert.equal(r.status, 400, `${pair[0]}: ${r.text}`);
      assert.match(
        r.json().error.message,
        new RegExp(`steps\\[0\\]\\.extra\\[0\\].*${pair[0].replace(".", "\\.")}.*derive`),
      );
    }
  });

  test("a debian base names only its Python series; the server keys it from builders/<version>.json, as a local build does", async () => {
    await initKeys();
    const b = loadBuilderVersion("2026.11");
    const local = Image.debianSlim({ pythonVersion: "3.11" }).plan(b).steps[0]!;
    const officialKey = stepKey(keyInputsFor(b, local, null, []));
    // Stand in for the built base (mmdebstrap takes minutes): the official key names the scratch image in this store.
    await svc.view.putIndex({
      key: officialKey,
      imageId: scratchImage as Digest,
      createdAt: new Date().toISOString(),
    });
    const debianStep = (more: Json = {}) => ({
      method: "debianSlim",
      description: "debianSlim",
      base: { kind: "debian", python: "3.11" },
      instructions: [],
      inputs: [],
      secrets: [],
      env: {},
      forceBuild: false,
      extra: [],
      ...more,
    });
    const { res, build } = await submit({
      format: WIRE_FORMAT,
      builderVersion: "2026.11",
      steps: [debianStep()],
      deferred: [],
    });
    assert.ok(res.status < 300, res.text);
    assert.equal(build?.status, "succeeded", JSON.stringify(build?.failure));
    assert.equal(build!.result!.steps[0]!.key, officialKey);
    assert.equal(build!.result!.steps[0]!.description, local.description);
    // Anything else about the base step is the server's to decide.
    for (const [field, value] of [
      ["instructions", [{ op: "CMD", argv: ["evil"] }]],
      ["env", { A: "1" }],
      ["extra", [["uvVersion", "1"]]],
    ] as const) {
      const r = await post({
        format: WIRE_FORMAT,
        builderVersion: "2026.11",
        steps: [debianStep({ [field]: value })],
        deferred: [],
      });
      assert.equal(r.status, 400, `${field}: ${r.text}`);
      assert.match(r.json().error.message, new RegExp(`steps\\[0\\]\\.${field}`));
    }
    const unknown = await post({
      format: WIRE_FORMAT,
      builderVersion: "2026.11",
      steps: [debianStep({ base: { kind: "debian", python: "3.12" } })],
      deferred: [],
    });
    assert.equal(unknown.status, 400, unknown.text);
    assert.match(unknown.json().error.message, /steps\[0\]\.base\.python: .*3\.12.*supported: 3\.11, 3\.13/);
  });
});

describe("host paths built from client strings", () => {
  test("WORKDIR climbing with .. (absolute, or relative to the previous one) then RUN: nothing is created on the host", {
    timeout: 120_000,
  }, async () => {
    const abs = `/tmp/strata-attack-workdir-${nonce()}`;
    const rel = `/tmp/strata-attack-workdir-rel-${nonce()}`;
    cleanup.push(abs, rel);
    const req = await busyboxRequest();
    req.steps.push(
      step(`WORKDIR ${nonce()}`, [{ op: "WORKDIR", path: CLIMB + abs }]),
      step("RUN pwd", [{ op: "RUN", command: "pwd > /pwd-abs" }]),
      step("WORKDIR /a", [{ op: "WORKDIR", path: "/a", create: false }]),
      step("WORKDIR rel", [{ op: "WORKDIR", path: CLIMB.slice(1) + rel, create: false }]),
      step("RUN pwd", [{ op: "RUN", command: "pwd > /pwd-rel" }]),
    );
    const { res, build } = await submit(req);
    if (res.status !== 400) {
      assert.equal(build?.status, "succeeded", JSON.stringify(build?.failure));
      assert.equal(
        (await fileInImage(build!.result!.imageId, "pwd-abs"))?.trim(),
        abs,
        "the working directory is inside the image",
      );
      assert.equal((await fileInImage(build!.result!.imageId, "pwd-rel"))?.trim(), rel);
    }
    assert.equal(existsSync(abs), false, `${abs} was created on the host`);
    assert.equal(existsSync(rel), false, `${rel} was created on the host`);
  });

  test("a RUN mount target climbing with ..: the stub scrubber never removes an empty host directory", {
    timeout: 120_000,
  }, async () => {
    const sentinel = `/tmp/strata-sentinel-${nonce()}`;
    await fsp.mkdir(sentinel);
    cleanup.push(sentinel);
    const req = await busyboxRequest();
    req.steps.push(
      step(`RUN tmpfs ${nonce()}`, [
        { op: "RUN", command: "true", mounts: [{ type: "tmpfs", target: `${CLIMB}${sentinel}/new` }] },
      ]),
      step(`RUN cache ${nonce()}`, [
        {
          op: "RUN",
          command: "true",
          mounts: [{ type: "cache", id: nonce(), target: `${CLIMB}${sentinel}/cache`, sharing: "shared" }],
        },
      ]),
    );
    const { res, build } = await submit(req);
    if (res.status !== 400) assert.equal(build?.status, "succeeded", JSON.stringify(build?.failure));
    assert.ok(existsSync(sentinel), `the empty host directory ${sentinel} was deleted`);
  });

  test("a RUN that swaps a mount stub's parent for a symlink to the host: the scrubber stays inside the layer", {
    timeout: 120_000,
  }, async () => {
    // After the RUN, /stub-<n> in the upper dir is a symlink to an absolute path; following it from the host would
    // reach the host's <sentinel>/sub/mnt, an empty directory the scrubber would take for the mount's stub.
    const n = nonce();
    const sentinel = `/tmp/strata-sentinel-swap-${n}`;
    await fsp.mkdir(`${sentinel}/sub/mnt`, { recursive: true });
    cleanup.push(sentinel);
    const req = await busyboxRequest();
    req.steps.push(
      step(`RUN swap ${n}`, [
        {
          op: "RUN",
          command: `mv /stub-${n} /moved-${n} && ln -s ${sentinel} /stub-${n}`,
          mounts: [{ type: "tmpfs", target: `/stub-${n}/sub/mnt` }],
        },
      ]),
    );
    const { build } = await submit(req);
    assert.equal(build?.status, "succeeded", JSON.stringify(build?.failure));
    assert.ok(existsSync(`${sentinel}/sub/mnt`), `the empty host directory ${sentinel}/sub/mnt was deleted`);
  });

  test("a builder tool (uv) the image names through a symlink to a host file never mounts the host file", {
    timeout: 120_000,
  }, async () => {
    const n = nonce();
    const secret = `/tmp/strata-host-secret-${n}`;
    await fsp.writeFile(secret, `host secret ${n}\n`, { mode: 0o755 });
    cleanup.push(secret);
    const saved = process.env.STRATA_UV_BINARY;
    delete process.env.STRATA_UV_BINARY;
    try {
      const req = await busyboxRequest();
      req.steps.push(
        step(`RUN link ${n}`, [{ op: "RUN", command: `mkdir -p /usr/local/bin && ln -s ${secret} /usr/local/bin/uv` }]),
        step(`RUN leak ${n}`, [
          {
            op: "RUN",
            command: "cat /x > /leak; true",
            mounts: [{ type: "bind", source: "builder:uv", target: "/x", readonly: true }],
          },
        ]),
      );
      const { res, build } = await submit(req);
      if (res.status !== 400 && build?.status === "succeeded") {
        const leak = await fileInImage(build.result!.imageId, "leak");
        assert.ok(!leak?.includes("host secret"), `the host file reached the image: ${JSON.stringify(leak)}`);
      }
    } finally {
      if (saved !== undefined) process.env.STRATA_UV_BINARY = saved;
    }
  });

  test("a definition whose paths climb with .. keys the same locally and through the service (both clamp them)", {
    timeout: 120_000,
  }, async () => {
    const { dir, base } = await busyboxBase();
    cleanup.push(dir);
    const image = base
      .workdir(`${CLIMB}/srv`)
      .dockerfileCommands([
        `WORKDIR ${CLIMB}/w/${nonce()}`,
        `RUN --mount=type=tmpfs,target=${CLIMB}/t pwd > /pwd`,
        `COPY <<EOF ${CLIMB}/copied/`,
        "x",
        "EOF",
      ]);
    const remote = await remoteBuildImage(image, { server: svc.url, statCache: false, log: () => undefined });
    const local = await image.build({ store: svc.view, log: () => undefined });
    assert.deepEqual(
      local.steps.map((s) => s.key),
      remote.steps.map((s) => s.key),
    );
    assert.ok(
      local.steps.every((s) => s.cached),
      "a local build on the service's store hits every step",
    );
    assert.match((await fileInImage(remote.imageId, "pwd")) ?? "", /^\/w\/[0-9a-f]+\n$/);
    assert.equal(await fileInImage(remote.imageId, "copied/EOF"), "x\n");
  });

  test("the wire decoder clamps absolute paths whose .. climbs above / (and keeps every other path as written)", () => {
    const req = parseBuildRequest({
      format: WIRE_FORMAT,
      builderVersion: "2026.11",
      steps: [
        step("FROM scratch", [], { base: { kind: "scratch" } }),
        step(
          "paths",
          [
            { op: "WORKDIR", path: `${CLIMB}/w` },
            { op: "WORKDIR", path: "../../rel", create: true },
            {
              op: "RUN",
              command: "true",
              mounts: [
                { type: "tmpfs", target: `${CLIMB}/t` },
                { type: "cache", id: "c", target: "/a/../c", sharing: "shared" },
                { type: "secret", id: "S", target: "/../s" },
              ],
            },
            { op: "COPY", source: "src", dest: "/../d/", sources: ["<<EOF"] },
          ],
          { inputs: [{ kind: "inline", name: "src", content: "x", mode: 0o644 }] },
        ),
      ],
      deferred: [
        {
          kind: "file",
          remotePath: `${CLIMB}/f`,
          ignore: [],
          entries: [
            { path: "f", type: "file", mode: 0o644, uid: 0, gid: 0, size: 1, digest: "sha256:" + "0".repeat(64) },
          ],
        },
      ],
    });
    assert.deepEqual(req.steps[1]!.instructions, [
      { op: "WORKDIR", path: "/w" },
      { op: "WORKDIR", path: "../../rel", create: true },
      {
        op: "RUN",
        command: "true",
        mounts: [
          { type: "tmpfs", target: "/t" },
          { type: "cache", id: "c", target: "/a/../c", sharing: "shared" },
          { type: "secret", id: "S", target: "/s" },
        ],
      },
      { op: "COPY", source: "src", dest: "/d/", sources: ["<<EOF"] },
    ]);
    assert.equal(req.deferred[0]!.remotePath, "/f");
  });

  test("input names . and .. are refused (they would name the step's work dirs)", async () => {
    const req = await busyboxRequest();
    for (const name of [".", ".."]) {
      const body = structuredClone(req);
      body.steps.push(
        step(
          "RUN",
          [{ op: "RUN", command: "true", mounts: [{ type: "bind", source: name, target: "/m", readonly: true }] }],
          { inputs: [{ kind: "inline", name, content: "x", mode: 0o644 }] },
        ),
      );
      const r = await post(body);
      assert.equal(r.status, 400, r.text);
      assert.match(r.json().error.message, /inputs\[0\]\.name/);
    }
  });
});
