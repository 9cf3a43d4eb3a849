// BuildKit's frontend/dockerfile/dockerfile_namedcontext_test.go, ported: named build contexts (`context:<name>`
// frontend options, `--build-context name=value` here). See ../README.md for the functions not ported and why.
//
// BuildKit's tests start some stages `FROM alpine` and read `/etc/alpine-release`; here `alpine` is the harness's
// busybox plus that file, pushed to the file's loopback registry, and `alpine` in FROM, `--from=` and context names is
// rewritten to that registry's reference (as the harness does for busybox). Images BuildKit pushes to its test registry
// are pushed to the loopback one (`bk.push`).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { resolveBaseImages } from "../../../src/dockerfile/base-images.js";
import { Image } from "../../../src/index.js";
import { allowFetch, startService, type TestService } from "../../support/service.js";
import { remoteBuildImage } from "../../support/remote-image.js";
import { nonce } from "../../support/strata.js";
import { strataTree } from "../support.js";
import { buildkitHarness, contextsWithBusybox, withBusybox } from "./harness.js";

const bk = buildkitHarness();
/** The stand-in for Docker Hub's alpine (`<registry>/library/alpine:latest`). */
let alpine = "";

before(async () => {
  await bk.start();
  const r = await bk.build({ dockerfile: "FROM busybox\nRUN echo 3.20.3 > /etc/alpine-release\n" });
  alpine = await bk.push(r, "library/alpine:latest");
});
after(bk.stop);

/** `alpine` (with an optional `:latest`) in FROM, `--from=` and `from=` rewritten to the stand-in's reference. */
function withAlpine(text: string): string {
  return text.replace(/(?<=^\s*FROM\s+(?:--\S+\s+)*|--from=|,from=)alpine(?::latest)?(?![\w./:@-])/gim, alpine);
}

/** `size` zero bytes but for a nonce at the start (the service must not have seen it). */
function uniqueBlank(size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(nonce());
  return b;
}

/** Context names naming alpine rewritten as `withAlpine` rewrites the Dockerfile. */
function alpineContexts(contexts: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(contexts).map(([k, v]) => [k === "alpine" ? alpine : k, v]));
}

describe("dockerfile_namedcontext_test.go", { concurrency: 4 }, () => {
  test("testNamedImageContext", async () => {
    // context:busybox = docker-image://alpine, with no tag (image resolution must add none).
    const untagged = alpine.replace(/:latest$/, "");
    const first = await bk.build({
      dockerfile: "FROM busybox AS base\nRUN cat /etc/alpine-release > /out\nFROM scratch\nCOPY --from=base /out /\n",
      buildContexts: { busybox: `docker-image://${untagged}` },
    });
    assert.ok(((await first.readFile("/out")) ?? "").length > 0);

    // An image with custom envs, pushed, then named as the context for busybox.
    const envImage = await bk.build({
      dockerfile: withAlpine("FROM alpine:latest\nENV PATH=/foobar:$PATH\nENV FOOBAR=foobar\n"),
    });
    const target = await bk.push(envImage, "buildkit/testnamedimagecontext:latest");
    const r = await bk.build({
      dockerfile: `
FROM busybox AS base
RUN cat /etc/alpine-release > /out
RUN env | grep PATH > /env_path
RUN env | grep FOOBAR > /env_foobar
FROM scratch
COPY --from=base /out /
COPY --from=base /env_path /
COPY --from=base /env_foobar /
	`,
      buildContexts: { busybox: `docker-image://${target}` },
    });
    assert.ok(((await r.readFile("/out")) ?? "").length > 0);
    assert.equal((await r.readFile("/env_foobar"))?.trim(), "FOOBAR=foobar");
    assert.ok((await r.readFile("/env_path"))?.includes("/foobar:"), await r.readFile("/env_path"));

    // Replacing a stage that is based on another stage (moby/buildkit#5578).
    await bk.build({
      dockerfile: `
FROM busybox AS parent
FROM parent AS base
RUN echo base > /out
FROM base
RUN [ -f /etc/alpine-release ]
RUN [ ! -f /out ]
`,
      buildContexts: { base: `docker-image://${target}` },
    });
  });

  test("testNamedImageContextTimestamps", async () => {
    const dockerfile = withAlpine("\nFROM alpine\nRUN echo foo >> /test\n");
    const base = await bk.build({ dockerfile });
    const target = await bk.push(base, "buildkit/testnamedimagecontexttimestamps:latest");
    const derived = await bk.build({
      dockerfile,
      buildContexts: alpineContexts({ alpine: `docker-image://${target}` }),
    });
    await bk.push(derived, "buildkit/testnamedimagecontexttimestampsderived:latest");
    const created = Date.parse((await base.config()).created ?? "");
    const createdDerived = Date.parse((await derived.config()).created ?? "");
    assert.ok(Number.isFinite(created) && Number.isFinite(createdDerived));
    assert.notEqual(createdDerived, created);
    const diff = createdDerived - created;
    assert.ok(diff > 0, `the derived image is created after its base (${diff} ms)`);
    assert.ok(diff < 10 * 60_000, `${diff} ms`);
  });

  test("testNamedImageContextScratch", async () => {
    const r = await bk.build({
      dockerfile: "\nFROM busybox AS build\nCOPY <<EOF /out\nhello world!\nEOF\n",
      buildContexts: { busybox: "docker-image://scratch" },
    });
    const names = [...(await r.tree()).keys()].filter((p) => p === "/out");
    assert.deepEqual(names, ["/out"]);
    assert.equal(await r.readFile("/out"), "hello world!\n");
  });

  test("testNamedLocalContext", async () => {
    const basedir = await bk.dir({
      out: { content: "dummy-result", mode: 0o600 },
      out2: { content: "dummy-result", mode: 0o600 },
      ".dockerignore": { content: "out2\n", mode: 0o600 },
    });
    const r = await bk.build({
      dockerfile: "\nFROM busybox AS base\nRUN cat /etc/alpine-release > /out\nFROM scratch\nCOPY --from=base /o* /\n",
      buildContexts: { base: basedir },
    });
    assert.ok(((await r.readFile("/out")) ?? "").length > 0);
    assert.equal((await r.tree()).has("/out2"), false);
  });

  // BuildKit measures the bytes its client sent for context foo ("[context foo] load from client"): only what a
  // build reads of it. Here a build service's client uploads a named directory context, so the port builds on a
  // loopback service and counts `uploadedBytes`. The service skips files it already has, so each build gets a foo
  // directory of its own (BuildKit's two files, with content unique to the build).
  describe("testNamedFilteredContext", () => {
    let svc: TestService;
    before(async () => {
      svc = await startService({ fetchPolicy: allowFetch(bk.registryHost) });
    });
    after(async () => {
      assert.deepEqual(
        svc.serverLog.filter((l) => /internal error/.test(l)),
        [],
      );
      await svc.close();
    });

    const dockerfileBase = `
FROM scratch AS copy_from
COPY --from=foo /foo /

FROM alpine AS run_mount
RUN --mount=from=foo,src=/foo,target=/in/foo cp /in/foo /foo

FROM foo AS image_source
COPY --from=alpine / /
RUN cat /foo > /bar

FROM scratch AS all
COPY --link --from=copy_from /foo /foo.b
COPY --link --from=run_mount /foo /foo.c
COPY --link --from=image_source /bar /foo.d
`;
    const dockerfileFull = `
FROM scratch AS foo
COPY <<EOF /foo
test
EOF
${dockerfileBase}`;

    /** Builds `target` on the service with context foo; returns the bytes uploaded and the image's files. */
    async function run(dockerfile: string, target: string) {
      const foo = await bk.dir({
        foo: { content: `foo ${nonce()}`, mode: 0o600 },
        // BuildKit's: a blank file that's just large (4096*1000 bytes), made unique to this build.
        bar: { content: uniqueBlank(4096 * 1000), mode: 0o600 },
      });
      const dir = await bk.dir({ Dockerfile: withBusybox(withAlpine(dockerfile), bk.busyboxRef()) });
      const file = path.join(dir, "Dockerfile");
      const buildContexts = contextsWithBusybox({ foo }, bk.busyboxRef());
      // A service's client reads the bases' configs itself (no store), as `strata build` with STRATA_SERVER does.
      const baseImages = await resolveBaseImages(file, { buildContexts, target });
      const image = Image.fromDockerfile(file, { contextDir: dir, buildContexts, target, baseImages });
      const built = await remoteBuildImage(image, { server: svc.url, statCache: false, log: () => undefined });
      return { uploaded: built.uploadedBytes, foo, tree: await strataTree(svc.view, built.imageId) };
    }

    const cases: [string, number, number][] = [
      ["run_mount", 1, 1024],
      ["copy_from", 1, 1024],
      ["image_source", 4096 * 1000, Number.MAX_SAFE_INTEGER],
      ["all", 4096 * 1000, Number.MAX_SAFE_INTEGER],
    ];
    for (const [variant, dockerfile] of [
      ["new", dockerfileBase],
      ["replace", dockerfileFull],
    ] as const) {
      for (const [target, min, max] of cases) {
        test(`${variant}/${target}`, async () => {
          const { uploaded, foo, tree } = await run(dockerfile, target);
          assert.ok(uploaded >= min, `not enough data was transferred, ${uploaded} < ${min}`);
          assert.ok(uploaded <= max, `too much data was transferred, ${uploaded} > ${max}`);
          // Not in BuildKit's test: the context's file reached the image.
          const want = await fsp.readFile(path.join(foo, "foo"), "utf8");
          const got = { run_mount: "/foo", copy_from: "/foo", image_source: "/bar", all: "/foo.d" }[target];
          assert.equal(tree.get(got ?? "")?.content, want, `${target}: ${got}`);
        });
      }
    }
  });

  test("testEagerNamedContextLookup", async () => {
    // BuildKit names images on Docker Hub that do not exist; here, images the loopback registry does not hold (tests
    // send no traffic beyond loopback). Looking either up would fail the build.
    const r = await bk.build({
      dockerfile: withAlpine(`
FROM broken AS notused

FROM alpine AS base
RUN echo "base" > /foo

FROM busybox AS otherstage

FROM scratch
COPY --from=base /foo /foo
	`),
      buildContexts: {
        notused: `docker-image://${bk.registryHost}/library/nosuchimage:latest`,
        busybox: `docker-image://${bk.registryHost}/library/dontexist:latest`,
      },
    });
    assert.equal(await r.readFile("/foo"), "base\n");
  });
});
