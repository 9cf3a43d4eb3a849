/**
 * The engine's cache policy against a fake Executor and an in-memory store: a miss runs the step, a hit does not, a
 * forced step rebuilds itself and everything after it (cascading invalidation) and nothing before it, `ignoreCache`
 * rebuilds without reading or writing the index. The fake executor "runs" a command by writing a file into the
 * step's root, so each layer's content is known; overlay mounts are real (root).
 */
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { type BuiltImage, buildPlan } from "../../src/engine/build.js";
import type { Executor, RunOptions, RunResult } from "../../src/sandbox/runc.js";
import type { SandboxSpec } from "../../src/sandbox/runtime-spec.js";
import { Image } from "../../src/sdk/image.js";
import { MemoryStore } from "../support/memory-store.js";

/** Runs nothing: writes `/out/<n>` (n = how many runs so far) holding the command, and records the spec. */
class FakeExecutor implements Executor {
  readonly runs: SandboxSpec[] = [];
  prepared = 0;
  prepare(): void {
    this.prepared++;
  }
  async run(spec: SandboxSpec, opts: RunOptions): Promise<RunResult> {
    this.runs.push(spec);
    const command = spec.argv.at(-1) ?? "";
    await fsp.mkdir(path.join(spec.rootfs, "out"), { recursive: true });
    await fsp.writeFile(path.join(spec.rootfs, "out", command.replace(/\W/g, "_")), `${command}\n`);
    opts.onOutput?.(`ran ${command}\n`, "stdout");
    if (command.includes("fail")) return { exitCode: 3, timedOut: false, durationMs: 1 };
    return { exitCode: 0, timedOut: false, durationMs: 1 };
  }
}

const commandsRun = (e: FakeExecutor) => e.runs.map((s) => s.argv.at(-1));
const ids = (b: BuiltImage) => b.steps.map((s) => s.imageId);
const cached = (b: BuiltImage) => b.steps.map((s) => s.cached);

describe("engine: cache policy with a fake executor and a memory store", () => {
  let dir: string;
  let store: MemoryStore;
  const log: string[] = [];
  const chain = (force?: "b") =>
    Image.fromScratch()
      .runCommands("echo a")
      .runCommands("echo b", ...(force ? [{ forceBuild: true }] : []))
      .runCommands("echo c");
  const build = async (image: Image, opts: { forceBuild?: boolean; ignoreCache?: boolean } = {}) => {
    const executor = new FakeExecutor();
    const built = await buildPlan(image.plan(), { store, executor, log: (l) => log.push(l), ...opts });
    return { built, executor };
  };

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-engine-"));
    store = new MemoryStore(dir);
  });
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  let first: BuiltImage;
  test("a cold build misses every step and runs each command once, in order", async () => {
    const { built, executor } = await build(chain());
    first = built;
    assert.deepEqual(cached(built), [false, false, false, false]);
    assert.deepEqual(commandsRun(executor), ["echo a", "echo b", "echo c"]);
    assert.equal(executor.prepared, 1, "the sandbox is prepared once, at the first miss");
    assert.equal(new Set(ids(built)).size, 4, "each step is its own image");
    // Each step's layer holds what its command wrote, and its image sees its parents' files.
    const top = store.images.get(built.imageId)!;
    assert.equal(top.layers.length, 3);
    const files = await fsp.readdir(path.join(store.layers.get(top.layers[2]!.diffId)!, "out"));
    assert.deepEqual(files, ["echo_c"], "a layer holds only its own step's change");
    assert.ok(log.some((l) => l.startsWith("=> Step 1: ")));
  });

  test("a second build hits every step: nothing runs, the same images come back", async () => {
    const { built, executor } = await build(chain());
    assert.deepEqual(cached(built), [true, true, true, true]);
    assert.equal(executor.runs.length, 0);
    assert.equal(executor.prepared, 0, "no miss, no sandbox");
    assert.deepEqual(ids(built), ids(first));
  });

  let forced: BuiltImage;
  test("forcing one step rebuilds it and every later step, and nothing before it", async () => {
    const { built, executor } = await build(chain("b"));
    forced = built;
    assert.deepEqual(cached(built), [true, true, false, false]);
    assert.deepEqual(commandsRun(executor), ["echo b", "echo c"]);
    assert.deepEqual(ids(built).slice(0, 2), ids(first).slice(0, 2));
    assert.notEqual(built.steps[2]!.imageId, first.steps[2]!.imageId, "a forced rebuild is a new image");
    assert.notEqual(built.steps[3]!.imageId, first.steps[3]!.imageId, "its parent changed, so the next key did");
    assert.notEqual(built.steps[3]!.key, first.steps[3]!.key);
    assert.equal(built.steps[2]!.key, first.steps[2]!.key, "force keeps the key and replaces the entry");
  });

  test("after a forced build, an ordinary build hits the replaced entries", async () => {
    const { built, executor } = await build(chain());
    assert.deepEqual(cached(built), [true, true, true, true]);
    assert.equal(executor.runs.length, 0);
    assert.deepEqual(ids(built), ids(forced));
  });

  test("ignoreCache rebuilds every step without reading or writing the index", async () => {
    const before = new Map(store.index);
    const { built, executor } = await build(chain(), { ignoreCache: true });
    assert.deepEqual(cached(built), [false, false, false, false]);
    assert.deepEqual(commandsRun(executor), ["echo a", "echo b", "echo c"]);
    assert.deepEqual(store.index, before, "the index is untouched");
    const again = await build(chain());
    assert.deepEqual(ids(again.built), ids(forced), "the next ordinary build still hits the earlier entries");
  });

  test("changing one step's command rebuilds it and what follows; earlier steps hit", async () => {
    const edited = Image.fromScratch().runCommands("echo a").runCommands("echo B").runCommands("echo c");
    const { built, executor } = await build(edited);
    assert.deepEqual(cached(built), [true, true, false, false]);
    assert.deepEqual(commandsRun(executor), ["echo B", "echo c"]);
  });

  test("a failing step leaves no index entry for it or after it; the steps before stay cached", async () => {
    const failing = Image.fromScratch().runCommands("echo a").runCommands("fail here").runCommands("echo z");
    const entries = store.index.size;
    await assert.rejects(build(failing), /fail here|exit code 3|exited with 3/);
    assert.equal(store.index.size, entries, "nothing was added for the failed step");
    const fixed = Image.fromScratch().runCommands("echo a").runCommands("echo z");
    const { built } = await build(fixed);
    assert.equal(built.steps[1]!.cached, true, "step 1 (echo a) still hits");
  });

  test("concurrent identical builds run each step once (single flight)", async () => {
    const executor = new FakeExecutor();
    const image = Image.fromScratch().runCommands("echo concurrent");
    const [x, y] = await Promise.all([
      buildPlan(image.plan(), { store, executor, log: () => {} }),
      buildPlan(image.plan(), { store, executor, log: () => {} }),
    ]);
    assert.equal(executor.runs.length, 1);
    assert.equal(x.imageId, y.imageId);
  });
});
