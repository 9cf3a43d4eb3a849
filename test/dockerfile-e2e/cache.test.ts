// Cache behaviour of Dockerfile builds: every instruction is its own step; COPY keys cover exactly the matched source
// paths (content, mode, owner — not mtime); --build-arg changes rebuild only the steps that use the arg; cache mounts
// persist but never enter a layer or key; secrets never enter a layer, key or log; stages are content-keyed and
// independent stages build concurrently.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { after, before, describe, test } from "node:test";
import { Image, InvalidDefinitionError, StepFailedError, type BuiltImage, type LocalStore } from "../../src/index.js";
import { makeBusyboxTree, nonce } from "../support/strata.js";
import { privateStore, strataConfig, strataTree } from "./support.js";

let store: LocalStore;
let cleanupStore: () => Promise<void>;
const dirs: string[] = [];
before(async () => {
  const s = await privateStore();
  store = s.store;
  cleanupStore = s.cleanup;
});
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  await cleanupStore?.();
});

/** A project: Dockerfile + context (with a busybox tree at context/rootfs). */
async function project(
  dockerfile: string,
  files: Record<string, string> = {},
): Promise<{ dir: string; dockerfile: string; context: string }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-cache-"));
  dirs.push(dir);
  const context = path.join(dir, "context");
  await makeBusyboxTree(path.join(context, "rootfs"));
  for (const [p, c] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(context, p)), { recursive: true });
    await fsp.writeFile(path.join(context, p), c);
  }
  await fsp.writeFile(path.join(dir, "Dockerfile"), dockerfile);
  return { dir, dockerfile: path.join(dir, "Dockerfile"), context };
}

async function build(
  p: { dockerfile: string; context: string },
  opts: {
    buildArgs?: Record<string, string>;
    secrets?: Record<string, string>;
    forceBuild?: boolean;
    log?: string[];
  } = {},
): Promise<BuiltImage> {
  const img = Image.fromDockerfile(p.dockerfile, {
    contextDir: p.context,
    buildArgs: opts.buildArgs,
    secrets: opts.secrets,
    secretsAsEnv: false, // BuildKit's meaning: these cases are docker build's
    forceBuild: opts.forceBuild,
  });
  return img.build({ store, log: (l) => opts.log?.push(l) });
}

/** Which steps were cached, by the instruction text of their description. */
function cachedByInstruction(r: BuiltImage): Record<string, boolean> {
  return Object.fromEntries(r.steps.map((s) => [s.description.replace(/^.*?:\d+:\d+ /, ""), s.cached]));
}

async function file(r: BuiltImage, p: string): Promise<string | undefined> {
  return (await strataTree(store, r.imageId)).get(p)?.content;
}

const BB = (tag: string) => `FROM scratch\nCOPY rootfs/ /\nENV TEST_NONCE=${tag}\n`;

describe("Dockerfile cache behaviour", () => {
  test("editing a file copied after a RUN leaves the RUN cached; unrelated context edits bust nothing", async () => {
    const p = await project(
      BB(nonce()) + "COPY a.txt /a.txt\nRUN cat /proc/sys/kernel/random/uuid > /unique\nCOPY b.txt /b.txt\n",
      { "a.txt": "a\n", "b.txt": "b1\n", "unused.txt": "u1\n" },
    );
    const first = await build(p);
    assert.ok(first.steps.every((s) => !s.cached || s.description.includes("FROM")));
    const unique = await file(first, "/unique");

    await fsp.writeFile(path.join(p.context, "unused.txt"), "u2\n");
    const again = await build(p);
    assert.ok(
      again.steps.every((s) => s.cached),
      "an edit to a file no COPY reads changes nothing",
    );
    assert.equal(again.imageId, first.imageId);

    await fsp.writeFile(path.join(p.context, "b.txt"), "b2\n");
    const edited = await build(p);
    const c = cachedByInstruction(edited);
    assert.equal(c["RUN cat /proc/sys/kernel/random/uuid > /unique"], true, "the RUN before the edited COPY is cached");
    assert.equal(c["COPY b.txt /b.txt"], false, "the COPY of the edited file is rebuilt");
    assert.equal(await file(edited, "/unique"), unique);
    assert.equal(await file(edited, "/b.txt"), "b2\n");

    // mtime alone is not content: touching a.txt keeps everything cached.
    const future = new Date(Date.now() + 3600_000);
    await fsp.utimes(path.join(p.context, "a.txt"), future, future);
    assert.ok(
      (await build(p)).steps.every((s) => s.cached),
      "mtime is not in the key",
    );
    // Mode is: chmod a.txt busts its COPY and everything after.
    await fsp.chmod(path.join(p.context, "a.txt"), 0o600);
    const chmodded = cachedByInstruction(await build(p));
    assert.equal(chmodded["COPY a.txt /a.txt"], false);
  });

  test("renaming a file matched by a glob busts the COPY and what follows", async () => {
    const p = await project(BB(nonce()) + "COPY file* /files/\nRUN ls /files > /listing\n", {
      file1: "same\n",
      other: "o\n",
    });
    const first = await build(p);
    assert.equal(await file(first, "/listing"), "file1\n");
    await fsp.writeFile(path.join(p.context, "other"), "changed\n");
    assert.ok(
      (await build(p)).steps.every((s) => s.cached),
      "a file the glob does not match is not keyed",
    );
    await fsp.rename(path.join(p.context, "file1"), path.join(p.context, "file2"));
    const renamed = await build(p);
    const c = cachedByInstruction(renamed);
    assert.equal(c["COPY file* /files/"], false, "same content under a new name is a new key");
    assert.equal(c["RUN ls /files > /listing"], false);
    assert.equal(await file(renamed, "/listing"), "file2\n");
  });

  test("--build-arg changes rebuild only the steps that use the arg", async () => {
    const p = await project(
      BB(nonce()) +
        "RUN cat /proc/sys/kernel/random/uuid > /before\nARG V=1\nARG OTHER=x\nENV STATIC=1\nCOPY a.txt /a.txt\nLABEL version=$V\nRUN cat /proc/sys/kernel/random/uuid > /after\n",
      { "a.txt": "a\n" },
    );
    const v1 = await build(p, { buildArgs: { V: "1" } });
    const v2 = await build(p, { buildArgs: { V: "2" } });
    const c2 = cachedByInstruction(v2);
    for (const ins of [
      "RUN cat /proc/sys/kernel/random/uuid > /before",
      "ARG V=1",
      "ARG OTHER=x",
      "ENV STATIC=1",
      "COPY a.txt /a.txt",
    ])
      assert.equal(c2[ins], true, `${ins} does not use V`);
    assert.equal(c2["LABEL version=$V"], false, "LABEL expands $V");
    assert.equal(c2["RUN cat /proc/sys/kernel/random/uuid > /after"], false, "a RUN sees every ARG in scope");
    assert.deepEqual(((await strataConfig(store, v2.imageId)).config as { Labels: Record<string, string> }).Labels, {
      version: "2",
    });
    assert.equal(await file(v2, "/before"), await file(v1, "/before"));

    const other = cachedByInstruction(await build(p, { buildArgs: { V: "2", OTHER: "y" } }));
    assert.equal(other["LABEL version=$V"], true, "LABEL does not use OTHER");
    assert.equal(other["RUN cat /proc/sys/kernel/random/uuid > /after"], false, "the RUN has OTHER in scope");

    const undeclared = await build(p, { buildArgs: { V: "2", OTHER: "y", NOT_DECLARED: "z" } });
    assert.ok(
      undeclared.steps.every((s) => s.cached),
      "an arg no ARG declares changes nothing",
    );
    const back = await build(p, { buildArgs: { V: "1" } });
    assert.equal(back.imageId, v1.imageId, "going back to V=1 hits the first build's steps");
  });

  test("RUN --mount=type=cache persists between builds but never enters a layer or the key", async () => {
    const id = `cache-${nonce()}`;
    const df =
      BB(nonce()) +
      `ARG X\nRUN --mount=type=cache,target=/c,id=${id} sh -c 'cat /proc/sys/kernel/random/uuid >> /c/log; wc -l < /c/log > /count'\n`;
    const p = await project(df);
    const first = await build(p, { buildArgs: { X: "1" } });
    assert.equal((await file(first, "/count"))?.trim(), "1");
    const second = await build(p, { buildArgs: { X: "2" } });
    assert.equal((await file(second, "/count"))?.trim(), "2", "the second run saw the first run's cache contents");
    const tree = await strataTree(store, second.imageId);
    assert.ok(![...tree.keys()].some((k) => k === "/c" || k.startsWith("/c/")), "the cache mount is not in the image");
    // X=1 again hits the first build's RUN, though the cache directory changed since: its contents are not keyed.
    const third = await build(p, { buildArgs: { X: "1" } });
    assert.ok(third.steps.every((s) => s.cached));
    assert.equal(third.imageId, first.imageId);
    const runStep = second.steps.find((s) => s.description.includes("--mount=type=cache"))!;
    const rec = await store.getImage(runStep.imageId);
    assert.deepEqual(rec!.step!.inputs.files, [], "no file of the cache is a key input");
    const cacheDir = path.join(store.root, "cache-mounts");
    assert.ok((await fsp.readdir(cacheDir)).length >= 1, "the cache lives in the store");
  });

  test("RUN --mount=type=cache,from=,source= starts seeded from the stage's path; the seed is keyed, a new seed a new cache", async () => {
    const id = `seeded-${nonce()}`;
    const df =
      BB(nonce()) +
      "COPY seed.txt /seed/sub/seed.txt\n" +
      "FROM scratch AS out\nCOPY rootfs/ /\n" +
      `ARG X\nRUN --mount=type=cache,from=0,source=/seed/sub,target=/c,id=${id} sh -c 'cat /c/seed.txt > /seen; echo run >> /c/log; wc -l < /c/log > /count'\n`;
    const p = await project(df, { "seed.txt": "one\n" });
    const first = await build(p, { buildArgs: { X: "1" } });
    assert.equal(await file(first, "/seen"), "one\n", "the cache starts with the stage's /seed/sub");
    assert.equal((await file(first, "/count"))?.trim(), "1");
    const second = await build(p, { buildArgs: { X: "2" } });
    assert.equal((await file(second, "/count"))?.trim(), "2", "the same seed keeps one cache between builds");
    const tree = await strataTree(store, second.imageId);
    assert.ok(![...tree.keys()].some((k) => k === "/c" || k.startsWith("/c/")), "the cache mount is not in the image");
    const runStep = second.steps.find((s) => s.description.includes("--mount=type=cache"))!;
    const rec = await store.getImage(runStep.imageId);
    assert.deepEqual(
      rec!.step!.inputs.files.map((f) => f.path),
      ["mount0/seed/sub", "mount0/seed/sub/seed.txt"],
      "the seed's files are the step's key inputs",
    );
    // A new seed: the RUN is rebuilt (X=1 is cached no more) on a new cache that starts from the new content.
    await fsp.writeFile(path.join(p.context, "seed.txt"), "two\n");
    const third = await build(p, { buildArgs: { X: "1" } });
    assert.notEqual(third.imageId, first.imageId);
    assert.equal(await file(third, "/seen"), "two\n");
    assert.equal((await file(third, "/count"))?.trim(), "1", "a new seed is a new cache");
  });

  test("RUN --mount=type=cache,source= mounts a path inside the cache; one resolving out of it through a link fails", async () => {
    // BuildKit's testCacheMountSourceEscape: a source that is a symlink to /etc must not reach the image's /etc.
    const id = `source-${nonce()}`;
    const init =
      BB(nonce()) +
      `RUN --mount=type=cache,id=${id},target=/cache mkdir -p /cache/sel && echo benign > /cache/sel/benign.txt\n` +
      `RUN --mount=type=cache,id=${id},source=sel,target=/v cat /v/benign.txt > /seen\n`;
    const ok = await build(await project(init));
    assert.equal(await file(ok, "/seen"), "benign\n", "source= names a directory inside the cache");
    const df =
      init +
      `RUN --mount=type=cache,id=${id},target=/cache rm -rf /cache/sel && ln -s /etc /cache/sel\n` +
      `RUN --mount=type=cache,id=${id},source=sel,target=/victim ls /victim > /listed\n`;
    const p = await project(df);
    const err = await build(p).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof Error, "the build must fail");
    assert.match(err.message, /source=sel: there is no "sel" inside the cache/);
    assert.match(err.message, /Dockerfile:7:1/, "the failing step is named by its line");
  });

  test("a secret holding a NUL byte given as env= is a typed error naming the step; as a file it is fine", async () => {
    const p = await project(
      BB(nonce()) +
        "RUN --mount=type=secret,id=S,target=/s wc -c < /s > /size\nRUN --mount=type=secret,id=S,env=S true\n",
    );
    const err = await build(p, { secrets: { S: "a\0b" } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof InvalidDefinitionError, `expected InvalidDefinitionError, got ${String(err)}`);
    assert.match(err.message, /Dockerfile:5:1 .*environment variable S holds a NUL byte.*mount that secret as a file/);
  });

  test("a secret mount never enters a layer, a key or a log, and its value does not bust the cache", async () => {
    const value = `TOPSECRET-${nonce()}`;
    const df =
      BB(nonce()) +
      'RUN --mount=type=secret,id=tok cat /run/secrets/tok && wc -c < /run/secrets/tok > /len\nRUN --mount=type=secret,id=tok,env=TOK echo "$TOK" > /dev/null && echo used > /used\n';
    const p = await project(df);
    const log: string[] = [];
    const r = await build(p, { secrets: { tok: value }, log });
    assert.equal((await file(r, "/len"))?.trim(), String(value.length));
    assert.ok(!log.join("\n").includes(value), "the build log redacts the secret");
    assert.ok(
      log.some((l) => l.includes("***")),
      "the secret printed by the RUN is shown as ***",
    );
    const rec = (await store.getImage(r.imageId))!;
    for (const l of rec.layers) {
      const tar = gunzipSync(await store.readBlob(l.digest));
      assert.ok(!tar.includes(Buffer.from(value)), `layer ${l.digest} contains the secret`);
      assert.ok(!tar.includes(Buffer.from("run/secrets")), "the secret's mount point is not in a layer");
    }
    for (const s of r.steps) {
      const sr = (await store.getImage(s.imageId))!;
      assert.ok(!JSON.stringify(sr.step?.inputs ?? {}).includes(value), "key inputs do not hold the value");
      assert.ok(!((await store.getLog(s.imageId)) ?? "").includes(value), "stored logs do not hold the value");
    }
    assert.ok(!(await store.readBlob(rec.configDigest)).toString().includes(value));
    // Another value: still cached (only the name is keyed).
    const other = await build(p, { secrets: { tok: `${value}-rotated` } });
    assert.ok(other.steps.every((s) => s.cached));
  });

  test("stages are keyed by the content COPY --from reads; unrelated stage changes leave the target cached", async () => {
    const p = await project(
      "FROM scratch AS build\nCOPY rootfs/ /\nCOPY src/ /src/\nRUN cat /src/a.txt > /out.txt\n" +
        "FROM scratch\n" +
        `ENV N=${nonce()}\nCOPY --from=build /out.txt /out.txt\nCOPY --from=build /bin/busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "/bin/busybox cat /proc/sys/kernel/random/uuid > /unique"]\n`,
      { "src/a.txt": "a\n", "src/b.txt": "b1\n" },
    );
    const first = await build(p);
    await fsp.writeFile(path.join(p.context, "src/b.txt"), "b2\n");
    const second = await build(p);
    assert.ok(
      second.steps.every((s) => s.cached),
      "the stage rebuilt, but /out.txt is the same content, so the target's steps hit",
    );
    assert.equal(second.imageId, first.imageId);
    await fsp.writeFile(path.join(p.context, "src/a.txt"), "a2\n");
    const third = await build(p);
    const c = cachedByInstruction(third);
    assert.equal(c["COPY --from=build /out.txt /out.txt"], false);
    assert.equal(await file(third, "/out.txt"), "a2\n");
  });

  test("COPY --link makes a layer independent of its parent: a changed parent reuses the same layer; symlinks in dest are not followed", async () => {
    const df = (v: string) =>
      BB(nonce()) +
      `RUN echo ${v} > /v && ln -s /usr /opt\nCOPY --link --chown=app:app app/ /opt/app/\nRUN ls -ld /opt /opt/app | cut -c1-10 > /modes && stat -c %u:%g /opt/app/main.txt > /owner\n`;
    const p = await project(df("one"), { "app/main.txt": "main\n", "app/sub/x.txt": "x\n" });
    const first = await build(p);
    const layerOf = (r: BuiltImage) => r.steps.find((s) => s.description.includes("COPY --link"))!.layer;
    assert.equal(await file(first, "/opt/app/main.txt"), "main\n");
    assert.equal(await file(first, "/owner"), "1000:1000\n", "--chown names resolve against the parent's /etc/passwd");
    assert.equal(
      await file(first, "/modes"),
      "drwxr-xr-x\ndrwxr-xr-x\n",
      "/opt is a directory of the --link layer, not the image's symlink to /usr",
    );
    assert.equal(await file(first, "/usr/app/main.txt"), undefined, "nothing was written through the symlink");
    await fsp.writeFile(p.dockerfile, (await fsp.readFile(p.dockerfile, "utf8")).replace("echo one", "echo two"));
    const log: string[] = [];
    const second = await build(p, { log });
    const c = cachedByInstruction(second);
    assert.equal(c["COPY --link --chown=app:app app/ /opt/app/"], false, "the parent changed, so the step is new");
    assert.equal(layerOf(second), layerOf(first), "but its layer is the one built on the old parent");
    assert.ok(
      log.some((l) => l.includes("--link: reusing layer")),
      log.join("\n"),
    );
    assert.equal(await file(second, "/opt/app/sub/x.txt"), "x\n");
    await fsp.writeFile(path.join(p.context, "app/main.txt"), "edited\n");
    const third = await build(p);
    assert.notEqual(layerOf(third), layerOf(first), "a content change is a new layer");
    assert.equal(await file(third, "/opt/app/main.txt"), "edited\n");
  });

  test("independent stages build concurrently", async () => {
    const stage = (n: string) =>
      `FROM base AS ${n}\nRUN cut -d' ' -f1 /proc/uptime > /${n}-start && sleep 1 && cut -d' ' -f1 /proc/uptime > /${n}-end\n`;
    const p = await project(
      `FROM scratch AS base\nCOPY rootfs/ /\nENV N=${nonce()}\n` +
        stage("left") +
        stage("right") +
        "FROM base\nCOPY --from=left /left-start /left-end /\nCOPY --from=right /right-start /right-end /\n",
    );
    const r = await build(p);
    const t = async (n: string) => Number((await file(r, `/${n}`))!.trim());
    const [ls, le, rs, re] = [await t("left-start"), await t("left-end"), await t("right-start"), await t("right-end")];
    assert.ok(ls < re && rs < le, `the two stages' RUNs overlap in time (left ${ls}..${le}, right ${rs}..${re})`);
  });

  test("forceBuild rebuilds every Dockerfile step; a failing RUN names its Dockerfile line", async () => {
    const p = await project(BB(nonce()) + "RUN cat /proc/sys/kernel/random/uuid > /t\n");
    const a = await build(p);
    const b = await build(p, { forceBuild: true });
    assert.ok(b.steps.slice(1).every((s) => !s.cached));
    assert.notEqual(await file(a, "/t"), await file(b, "/t"));
    const bad = await project(BB(nonce()) + "\nRUN echo failing-now; exit 7\n");
    await assert.rejects(build(bad), (e: unknown) => {
      assert.ok(e instanceof StepFailedError);
      assert.match(e.message, /Dockerfile:5:1 RUN echo failing-now; exit 7\) failed: .* exited with code 7/);
      assert.ok(e.logTail.includes("failing-now"));
      return true;
    });
  });
});

describe("SDK and Dockerfile together", () => {
  test("SDK methods chain after fromDockerfile, and dockerfileCommands extends an SDK image", async () => {
    const p = await project(BB(nonce()) + "WORKDIR /app\nENV FROM_DOCKERFILE=1\n", { "x.txt": "x\n" });
    const img = Image.fromDockerfile(p.dockerfile, { contextDir: p.context })
      .runCommands("echo sdk > sdk.txt")
      .dockerfileCommands(["COPY x.txt .", "RUN cat x.txt sdk.txt > both.txt", "ARG A=a", "LABEL a=$A"], {
        contextDir: p.context,
        buildArgs: { A: "arg" },
      })
      .env({ AFTER: "1" });
    const r = await img.build({ store, log: () => undefined });
    assert.equal(await file(r, "/app/both.txt"), "x\nsdk\n");
    const cfg = (await strataConfig(store, r.imageId)).config as { Env: string[]; Labels: Record<string, string> };
    assert.ok(cfg.Env.includes("FROM_DOCKERFILE=1") && cfg.Env.includes("AFTER=1"));
    assert.deepEqual(cfg.Labels, { a: "arg" });
    const again = await img.build({ store, log: () => undefined });
    assert.ok(again.steps.every((s) => s.cached));
  });

  test("dockerfileCommands expands against the ENV and WORKDIR of the SDK calls before it", async () => {
    const p = await project("FROM scratch\n", { "x.txt": "x\n" });
    const img = Image.fromScratch()
      .env({ ROOT: "/opt/r", TAG: nonce() })
      .workdir("/w")
      .dockerfileCommands(["COPY x.txt $ROOT/", "ENV P2=$ROOT/bin", "WORKDIR sub"], { contextDir: p.context })
      .dockerfileCommands(["COPY x.txt ${P2}/y.txt"], { contextDir: p.context });
    const r = await img.build({ store, log: () => undefined });
    assert.equal(await file(r, "/opt/r/x.txt"), "x\n");
    assert.equal(await file(r, "/opt/r/bin/y.txt"), "x\n", "a later dockerfileCommands sees what an earlier one set");
    const cfg = (await strataConfig(store, r.imageId)).config as { Env: string[]; WorkingDir: string };
    assert.ok(cfg.Env.includes("P2=/opt/r/bin"), cfg.Env.join(" "));
    assert.equal(cfg.WorkingDir, "/w/sub");
  });

  test("dockerfileCommands errors count lines from the first command; FROM is rejected", () => {
    assert.throws(
      () => Image.fromScratch().dockerfileCommands(["ENV A=1", "RUNN x"]),
      /dockerfileCommands:2:1: unknown instruction "RUNN"/,
    );
    assert.throws(
      () => Image.fromScratch().dockerfileCommands(["ENV A=1", "FROM scratch"]),
      /dockerfileCommands:2:1: FROM is not allowed/,
    );
  });
});
