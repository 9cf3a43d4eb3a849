// Attacks a client of the build service can send, replayed through `strata serve` (in this process, on loopback):
// client input must never name a host path (WORKDIR, RUN mount targets, the mount-stub scrubber, a builder tool's
// location).
// Each attack either gets a 400 or builds with no host-side effect.
import assert from "node:assert/strict";
import { existsSync, promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { buildImage } from "../../src/engine/build.js";
import { compileRequest, remoteBuild } from "../../src/service/client.js";
import { FINISHED, type BuildInfo, type BuildStatus } from "../../src/service/wire.js";
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


const post = (body: unknown): Promise<RawResponse> => raw(svc.url, "POST", "/v1/images", { body: JSON.stringify(body), headers: { "content-type": "application/json" } });

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
  return { method: "dockerfile", description, instructions, inputs: [], secrets: [], env: {}, forceBuild: false, extra: [], ...more };
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

describe("host paths built from client strings", () => {
  test("WORKDIR climbing with .. (absolute, or relative to the previous one) then RUN: nothing is created on the host", { timeout: 120_000 }, async () => {
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
      assert.equal((await fileInImage(build!.result!.imageId, "pwd-abs"))?.trim(), abs, "the working directory is inside the image");
      assert.equal((await fileInImage(build!.result!.imageId, "pwd-rel"))?.trim(), rel);
    }
    assert.equal(existsSync(abs), false, `${abs} was created on the host`);
    assert.equal(existsSync(rel), false, `${rel} was created on the host`);
  });

  test("a RUN mount target climbing with ..: the stub scrubber never removes an empty host directory", { timeout: 120_000 }, async () => {
    const sentinel = `/tmp/strata-sentinel-${nonce()}`;
    await fsp.mkdir(sentinel);
    cleanup.push(sentinel);
    const req = await busyboxRequest();
    req.steps.push(
      step(`RUN tmpfs ${nonce()}`, [{ op: "RUN", command: "true", mounts: [{ type: "tmpfs", target: `${CLIMB}${sentinel}/new` }] }]),
      step(`RUN cache ${nonce()}`, [{ op: "RUN", command: "true", mounts: [{ type: "cache", id: nonce(), target: `${CLIMB}${sentinel}/cache`, sharing: "shared" }] }]),
    );
    const { res, build } = await submit(req);
    if (res.status !== 400) assert.equal(build?.status, "succeeded", JSON.stringify(build?.failure));
    assert.ok(existsSync(sentinel), `the empty host directory ${sentinel} was deleted`);
  });

  test("a RUN that swaps a mount stub's parent for a symlink to the host: the scrubber stays inside the layer", { timeout: 120_000 }, async () => {
    // After the RUN, /stub-<n> in the upper dir is a symlink to an absolute path; following it from the host would
    // reach the host's <sentinel>/sub/mnt, an empty directory the scrubber would take for the mount's stub.
    const n = nonce();
    const sentinel = `/tmp/strata-sentinel-swap-${n}`;
    await fsp.mkdir(`${sentinel}/sub/mnt`, { recursive: true });
    cleanup.push(sentinel);
    const req = await busyboxRequest();
    req.steps.push(step(`RUN swap ${n}`, [{ op: "RUN", command: `mv /stub-${n} /moved-${n} && ln -s ${sentinel} /stub-${n}`, mounts: [{ type: "tmpfs", target: `/stub-${n}/sub/mnt` }] }]));
    const { build } = await submit(req);
    assert.equal(build?.status, "succeeded", JSON.stringify(build?.failure));
    assert.ok(existsSync(`${sentinel}/sub/mnt`), `the empty host directory ${sentinel}/sub/mnt was deleted`);
  });

  test("a builder tool (uv) the image names through a symlink to a host file never mounts the host file", { timeout: 120_000 }, async () => {
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
        step(`RUN leak ${n}`, [{ op: "RUN", command: "cat /x > /leak; true", mounts: [{ type: "bind", source: "builder:uv", target: "/x", readonly: true }] }]),
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

  test("a definition whose paths climb with .. keys the same locally and through the service (both clamp them)", { timeout: 120_000 }, async () => {
    const { dir, base } = await busyboxBase();
    cleanup.push(dir);
    const image = base
      .workdir(`${CLIMB}/srv`)
      .dockerfileCommands([`WORKDIR ${CLIMB}/w/${nonce()}`, `RUN --mount=type=tmpfs,target=${CLIMB}/t pwd > /pwd`, `COPY <<EOF ${CLIMB}/copied/`, "x", "EOF"]);
    const remote = await remoteBuild(image, { server: svc.url, statCache: false, log: () => undefined });
    const local = await buildImage(image, { store: svc.store, log: () => undefined });
    assert.deepEqual(local.steps.map((s) => s.key), remote.steps.map((s) => s.key));
    assert.ok(local.steps.every((s) => s.cached), "a local build on the service's store hits every step");
    assert.match((await fileInImage(remote.imageId, "pwd")) ?? "", /^\/w\/[0-9a-f]+\n$/);
    assert.equal(await fileInImage(remote.imageId, "copied/EOF"), "x\n");
  });
});
