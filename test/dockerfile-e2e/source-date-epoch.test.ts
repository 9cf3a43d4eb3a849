// SOURCE_DATE_EPOCH built for real, mirroring BuildKit's dockerfile_source_date_epoch_test.go with busybox from Debian
// for the base and a loopback docker-registry: the config's and new history entries' `created`, file times in the
// layers clamped to the epoch as BuildKit's rewrite-timestamp does (older times kept, the base's layers and history
// untouched), reproducible image ids across forced rebuilds, and the CLI's environment variable and build arg.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { after, before, test } from "node:test";
import { resolveBaseImages } from "../../src/dockerfile/base-images.js";
import { Image, type LocalStore } from "../../src/index.js";
import { TarParser } from "../../src/layer/tar-parser.js";
import { pushImage } from "../../src/registry/push.js";
import type { Digest } from "../../src/util/digest.js";
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

async function project(text: string, busybox = false): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-df-sde-"));
  dirs.push(dir);
  if (busybox) await makeBusyboxTree(path.join(dir, "rootfs"));
  await fsp.writeFile(path.join(dir, "Dockerfile"), text);
  return path.join(dir, "Dockerfile");
}

interface Config {
  created: string;
  history: { created: string; created_by?: string }[];
}

/** The mtimes (seconds) of the entries of a stored layer blob, by path. */
async function layerMtimes(digest: string): Promise<Map<string, number>> {
  const bytes = gunzipSync(await fsp.readFile(await store.blobPath(digest as Digest)));
  const out = new Map<string, number>();
  for (const ev of new TarParser("layer").feed(bytes))
    if (ev.kind === "entry") out.set(ev.header.name, ev.header.mtime);
  return out;
}

const quiet = { log: () => undefined };
const iso = (s: number) => new Date(s * 1000).toISOString();

test("testSourceDateEpochWithoutExporter: the build arg sets the config's and every history entry's created", async () => {
  const tm = 1700000001;
  const df = await project(`FROM scratch\nENTRYPOINT foo bar\nCOPY Dockerfile .\nLABEL n=${nonce()}\n`);
  const built = await Image.fromDockerfile(df, { buildArgs: { SOURCE_DATE_EPOCH: String(tm) } }).build({
    store,
    ...quiet,
  });
  const cfg = (await strataConfig(store, built.imageId)) as unknown as Config;
  assert.equal(cfg.created, iso(tm));
  assert.ok(cfg.history.length >= 3);
  for (const h of cfg.history) assert.equal(h.created, iso(tm), JSON.stringify(h));
  const rec = (await store.getImage(built.imageId as never))!;
  const mtimes = await layerMtimes(rec.layers.at(-1)!.digest);
  assert.equal(mtimes.get("Dockerfile"), tm, "a context file newer than the epoch is clamped to it");
});

test("testReproSourceDateEpoch (Basic): new layers' times clamped, older kept; the base's layers and history untouched; forced rebuilds give the same image", async () => {
  const base = await project(`FROM scratch\nCOPY rootfs/ /\nRUN echo ${nonce()} > /base-nonce\n`, true);
  const baseBuilt = await Image.fromDockerfile(base).build({ store, ...quiet });
  const ref = `${registry.host}/sde/base-${nonce()}:1`;
  await pushImage(store, (await store.getImage(baseBuilt.imageId))!, ref, { dockerConfig: false });
  const baseRec = (await store.getImage(baseBuilt.imageId))!;
  const baseCfg = (await strataConfig(store, baseBuilt.imageId)) as unknown as Config;

  const tm = 1673354096; // 2023-01-10T12:34:56Z, as BuildKit's test
  const df = await project(
    `FROM ${ref}\nRUN touch /foo\nRUN touch /foo.1\nRUN touch -d '2010-01-01 12:34:56' /foo-2010\n` +
      "RUN touch -d '2010-01-01 12:34:56' /foo-2010.1\nRUN touch -d '2030-01-01 12:34:56' /foo-2030\n" +
      "RUN touch -d '2030-01-01 12:34:56' /foo-2030.1\nRUN rm -f /foo.1\nRUN rm -f /foo-2010.1\nRUN rm -f /foo-2030.1\n" +
      "ARG SOURCE_DATE_EPOCH\nRUN echo $SOURCE_DATE_EPOCH > /sde\n",
  );
  const buildIt = async (forceBuild: boolean) => {
    const baseImages = await resolveBaseImages(df, { store });
    return Image.fromDockerfile(df, { baseImages, sourceDateEpoch: tm, forceBuild }).build({ store, ...quiet });
  };
  const built = await buildIt(false);
  const rec = (await store.getImage(built.imageId))!;
  const cfg = (await strataConfig(store, built.imageId)) as unknown as Config;
  assert.equal(cfg.created, iso(tm));
  assert.deepEqual(
    cfg.history.slice(0, baseCfg.history.length),
    baseCfg.history,
    "the base's history keeps its own times",
  );
  for (const h of cfg.history.slice(baseCfg.history.length)) assert.equal(h.created, iso(tm));
  assert.deepEqual(
    rec.layers.slice(0, baseRec.layers.length).map((l) => l.digest),
    baseRec.layers.map((l) => l.digest),
    "the base's layers are not rewritten",
  );
  const all = new Map<string, number>();
  for (const l of rec.layers.slice(baseRec.layers.length))
    for (const [p, t] of await layerMtimes(l.digest)) all.set(p, t);
  assert.equal(all.get("foo"), tm, "touched now: clamped to the epoch");
  assert.equal(all.get("foo-2010"), 1262349296, "older than the epoch: kept");
  assert.equal(all.get("foo-2030"), tm, "newer than the epoch: clamped");
  assert.equal(all.get(".wh.foo.1"), tm);
  for (const [p, t] of all) assert.ok(t <= tm, `${p}: ${t} > ${tm}`);
  assert.equal(
    (await strataTree(store, built.imageId)).get("/sde")?.content,
    `${tm}\n`,
    "RUN sees ARG SOURCE_DATE_EPOCH",
  );

  const again = await buildIt(true);
  assert.ok(
    again.steps.slice(1).every((s) => !s.cached),
    "forced",
  );
  assert.equal(again.imageId, built.imageId, "the same bytes: reproducible");
});

test("strata build: SOURCE_DATE_EPOCH from the environment, --build-arg over it, an invalid value a clear error", async () => {
  const df = await project(
    `FROM scratch\nCOPY rootfs/ /\nARG SOURCE_DATE_EPOCH\nRUN echo ${nonce()} $SOURCE_DATE_EPOCH > /sde\n`,
    true,
  );
  const ctx = path.dirname(df);
  const run = (args: string[], env: Record<string, string>) => strata(["build", "-f", df, ...args, ctx], { home, env });
  const a = await run([], { SOURCE_DATE_EPOCH: "1600000000" });
  assert.equal(a.code, 0, a.stderr);
  const cfgA = (await strataConfig(store, a.stdout.trim())) as unknown as Config;
  assert.equal(cfgA.created, iso(1600000000));
  assert.match((await strataTree(store, a.stdout.trim())).get("/sde")?.content ?? "", / 1600000000\n$/);
  const b = await run(["--build-arg", "SOURCE_DATE_EPOCH=1600000005"], { SOURCE_DATE_EPOCH: "1600000000" });
  assert.equal(b.code, 0, b.stderr);
  assert.equal(((await strataConfig(store, b.stdout.trim())) as unknown as Config).created, iso(1600000005));
  const bad = await run([], { SOURCE_DATE_EPOCH: "yesterday" });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /invalid SOURCE_DATE_EPOCH: yesterday/);
  assert.doesNotMatch(bad.stderr, /internal error/);
});
