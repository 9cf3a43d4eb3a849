// Named build contexts built for real (`--build-context`, BuildKit's `context:<name>`), each case mirroring one of
// BuildKit's frontend/dockerfile/dockerfile_namedcontext_test.go tests with busybox from Debian standing in for
// busybox/alpine and a loopback docker-registry for the images: a directory context with its own .dockerignore, an
// image context replacing a stage (and its config's ENV), docker-image://scratch, FROM a directory context, RUN
// --mount from= a context, the cache across context changes, and the CLI flag.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { resolveBaseImages } from "../../src/dockerfile/base-images.js";
import { Image, type LocalStore } from "../../src/index.js";
import { pushImage } from "../../src/registry/push.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { makeBusyboxTree, nonce, strata } from "../support/strata.js";
import { privateStore, strataConfig, strataTree } from "./support.js";

let registry: TestRegistry;
let store: LocalStore;
let home: string;
let cleanupStore: () => Promise<void>;
const dirs: string[] = [];
before(async () => {
  registry = await startRegistry();
  const s = await privateStore();
  store = s.store;
  home = s.home;
  cleanupStore = s.cleanup;
});
after(async () => {
  await registry?.stop();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  await cleanupStore?.();
});

async function tmp(files: Record<string, string> = {}, busybox = false): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-named-"));
  dirs.push(dir);
  if (busybox) await makeBusyboxTree(dir);
  for (const [p, c] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await fsp.writeFile(path.join(dir, p), c);
  }
  return dir;
}

const quiet = { log: () => undefined };

/** Builds a Dockerfile text with named contexts (image contexts' configs resolved first, as `strata build` does). */
async function build(text: string, buildContexts: Record<string, string>, opts: { target?: string } = {}) {
  const dir = await tmp({ Dockerfile: text });
  const dockerfile = path.join(dir, "Dockerfile");
  const baseImages = await resolveBaseImages(dockerfile, { store, buildContexts, ...opts });
  return Image.fromDockerfile(dockerfile, { buildContexts, baseImages, ...opts }).build({ store, ...quiet });
}

/** Pushes an image built from `text` (its context: a busybox tree plus `files`) to the loopback registry. */
async function pushed(text: string, files: Record<string, string>, name: string): Promise<string> {
  const ctx = await tmp({ ...files, Dockerfile: text }, true);
  const built = await Image.fromDockerfile(path.join(ctx, "Dockerfile"), { contextDir: ctx }).build({
    store,
    ...quiet,
  });
  const ref = `${registry.host}/named/${name}:latest`;
  await pushImage(store, (await store.getImage(built.imageId))!, ref, { dockerConfig: false });
  return ref;
}

test("testNamedLocalContext: a stage replaced by a directory context, whose own .dockerignore applies", async () => {
  const basedir = await tmp({ out: "dummy-result", out2: "dummy-result", ".dockerignore": "out2\n" });
  const built = await build(
    "FROM busybox AS base\nRUN cat /etc/alpine-release > /out\nFROM scratch\nCOPY --from=base /o* /\n",
    { base: basedir },
  );
  const tree = await strataTree(store, built.imageId);
  assert.equal(tree.get("/out")?.content, "dummy-result");
  assert.equal(tree.has("/out2"), false, "out2 is in the context's .dockerignore");
});

test("testNamedImageContext: an image context replaces FROM busybox, with its config's ENV; a stage FROM another stage is replaced too", async () => {
  const ref = await pushed(
    `FROM scratch\nCOPY . /\nRUN echo 3.99.${nonce()} > /etc/alpine-release\nENV PATH=/foobar:$PATH\nENV FOOBAR=foobar\n`,
    {},
    `alpine-${nonce()}`,
  );
  const built = await build(
    "FROM busybox AS base\nRUN cat /etc/alpine-release > /out\nRUN env | grep PATH > /env_path\n" +
      "RUN env | grep FOOBAR > /env_foobar\nFROM scratch\nCOPY --from=base /out /\nCOPY --from=base /env_path /\n" +
      "COPY --from=base /env_foobar /\n",
    { busybox: `docker-image://${ref}` },
  );
  const tree = await strataTree(store, built.imageId);
  assert.match(tree.get("/out")?.content ?? "", /^3\.99\./);
  assert.equal(tree.get("/env_foobar")?.content?.trim(), "FOOBAR=foobar");
  assert.ok(tree.get("/env_path")?.content?.includes("/foobar:"), tree.get("/env_path")?.content);

  // moby/buildkit#5578: replacing a stage that is based on another stage.
  const replaced = await build(
    "FROM busybox AS parent\nFROM parent AS base\nRUN echo base > /out\nFROM base\n" +
      "RUN [ -f /etc/alpine-release ]\nRUN [ ! -f /out ]\n",
    { base: `docker-image://${ref}` },
  );
  const cfg = (await strataConfig(store, replaced.imageId)).config as { Env: string[] };
  assert.ok(cfg.Env.includes("FOOBAR=foobar"), "the stage FROM the replaced stage has the image's config");
});

test("testNamedImageContextScratch: docker-image://scratch gives an empty stage", async () => {
  const built = await build("FROM busybox AS build\nCOPY <<EOF /out\nhello world!\nEOF\n", {
    busybox: "docker-image://scratch",
  });
  const tree = await strataTree(store, built.imageId);
  assert.deepEqual([...tree.keys()], ["/out"]);
  assert.equal(tree.get("/out")?.content, "hello world!\n");
});

test("testNamedFilteredContext (its stages, minus transfer sizes): COPY --from, RUN --mount from= and FROM a directory context; keyed by content", async () => {
  const foo = await tmp({ foo: `foo-${nonce()}\n` });
  const tools = await tmp({}, true);
  const text =
    "FROM scratch AS copy_from\nCOPY --from=foo /foo /\n" +
    "FROM tools AS run_mount\nRUN --mount=from=foo,src=/foo,target=/in/foo cp /in/foo /foo\n" +
    "FROM foo AS image_source\nCOPY --from=tools / /\nRUN cat /foo > /bar\n";
  const ctxs = { foo, tools };
  const copyFrom = await build(text, ctxs, { target: "copy_from" });
  const want = await fsp.readFile(path.join(foo, "foo"), "utf8");
  assert.equal((await strataTree(store, copyFrom.imageId)).get("/foo")?.content, want);
  const runMount = await build(text, ctxs, { target: "run_mount" });
  assert.equal((await strataTree(store, runMount.imageId)).get("/foo")?.content, want);
  const source = await build(text, ctxs, { target: "image_source" });
  const tree = await strataTree(store, source.imageId);
  assert.equal(tree.get("/bar")?.content, want);
  assert.equal(tree.get("/foo")?.uid, 0, "FROM a directory context copies it as COPY does (owner 0:0)");

  // Unchanged contexts: every step cached. A changed file in one: the steps reading it rebuild, the others hit.
  const again = await build(text, ctxs, { target: "run_mount" });
  assert.ok(again.steps.every((s) => s.cached));
  assert.equal(again.imageId, runMount.imageId);
  await fsp.writeFile(path.join(foo, "foo"), "changed\n");
  const changed = await build(text, ctxs, { target: "run_mount" });
  assert.deepEqual(
    changed.steps.map((s) => s.cached),
    [true, true, false],
    changed.steps.map((s) => s.description).join("\n"),
  );
  assert.equal((await strataTree(store, changed.imageId)).get("/foo")?.content, "changed\n");
});

test("strata build --build-context name=DIR and name=docker-image://REF; bad values are usage errors naming the context", async () => {
  const data = await tmp({ "msg.txt": `hello-${nonce()}\n` });
  const ref = await pushed("FROM scratch\nCOPY . /\nENV FROM_IMAGE=yes\n", {}, `cli-${nonce()}`);
  const dir = await tmp({
    Dockerfile: "FROM base\nCOPY --from=data msg.txt /msg.txt\nRUN echo $FROM_IMAGE > /env.txt\n",
  });
  const r = await strata(
    [
      "build",
      "-f",
      path.join(dir, "Dockerfile"),
      "--build-context",
      `data=${data}`,
      "--build-context",
      `base=docker-image://${ref}`,
      dir,
    ],
    { home },
  );
  assert.equal(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  const tree = await strataTree(store, id);
  assert.equal(tree.get("/msg.txt")?.content, await fsp.readFile(path.join(data, "msg.txt"), "utf8"));
  assert.equal(tree.get("/env.txt")?.content, "yes\n");

  const missing = await strata(
    ["build", "-f", path.join(dir, "Dockerfile"), "--build-context", `data=${path.join(dir, "nope")}`, dir],
    { home },
  );
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /build context data: .*nope does not exist/);
  assert.doesNotMatch(missing.stderr, /internal error/);
  const bad = await strata(["build", "-f", path.join(dir, "Dockerfile"), "--build-context", "novalue", dir], { home });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--build-context expects name=value/);
});
