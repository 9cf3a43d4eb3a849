// Ported from BuildKit frontend/dockerfile/dockerfile_source_date_epoch_test.go (see ../README.md for the table).
// BuildKit exports an OCI tar and reads the image config's `created`, its history, and the layer annotation
// `buildkit/rewritten-timestamp` its exporter writes when it clamps file times (`rewrite-timestamp`). Strata clamps the
// file times of the layers it builds whenever SOURCE_DATE_EPOCH is set: the ports read the clamped time from the
// layer's files (the copied Dockerfile is newer than every epoch here) and `created` from the config.
// `SOURCE_DATE_EPOCH=context` and `=<stage>` are refused on purpose (a number of seconds only): see the table.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import { gunzipSync } from "node:zlib";
import { after, before, describe, test } from "node:test";
import { TarParser } from "../../../src/layer/tar-parser.js";
import type { Digest } from "../../../src/util/digest.js";
import type { BkResult } from "./harness.js";
import { buildkitHarness } from "./harness.js";
import { startHttpServer } from "./http.js";
import { tarOf } from "./tar.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

/** The mtime (seconds) of `name` in the image's last layer blob: what BuildKit's exporter annotation records. */
async function layerMtime(r: BkResult, name: string): Promise<number | undefined> {
  const rec = await bk.store.getImage(r.built.imageId);
  const digest = rec?.layers.at(-1)?.digest;
  if (!digest) throw new Error(`image ${r.built.imageId} has no layer`);
  const bytes = gunzipSync(await fsp.readFile(await bk.store.blobPath(digest as Digest)));
  for (const ev of new TarParser("layer").feed(bytes))
    if (ev.kind === "entry" && ev.header.name === name) return ev.header.mtime;
  return undefined;
}

const unix = (iso: string | undefined) => (iso === undefined ? undefined : Math.floor(Date.parse(iso) / 1000));

describe("dockerfile_source_date_epoch_test.go", { concurrency: 4 }, () => {
  // BuildKit turns its exporter's own epoch off to see the Dockerfile frontend's: the config and every history entry.
  test("testSourceDateEpochWithoutExporter", async () => {
    const tm = 1700000001;
    const r = await bk.build({
      dockerfile: "\nFROM scratch\nENTRYPOINT foo bar\nCOPY Dockerfile .\n",
      buildArgs: { SOURCE_DATE_EPOCH: String(tm) },
    });
    const config = await r.config();
    assert.equal(unix(config.created), tm);
    assert.ok(config.history?.length);
    for (const h of config.history ?? []) assert.equal(unix(h.created), tm, JSON.stringify(h));
  });

  test("testSourceDateEpochDockerfileDefault", async () => {
    const tm = Date.UTC(2015, 9, 21, 7, 28, 0) / 1000;
    const r = await bk.build({ dockerfile: `\nARG SOURCE_DATE_EPOCH=${tm}\nFROM scratch\nCOPY Dockerfile .\n` });
    const config = await r.config();
    assert.equal(config.rootfs.diff_ids.length, 1);
    assert.equal(await layerMtime(r, "Dockerfile"), tm);
    assert.equal(unix(config.created), tm);
  });

  test("testSourceDateEpochDockerfileDefaultOverride", async () => {
    const defaultTM = 1700000001;
    const overrideTM = 1700000002;
    const r = await bk.build({
      dockerfile: `\nARG SOURCE_DATE_EPOCH=${defaultTM}\nFROM scratch\nCOPY Dockerfile .\n`,
      buildArgs: { SOURCE_DATE_EPOCH: String(overrideTM) },
    });
    assert.equal((await r.config()).rootfs.diff_ids.length, 1);
    assert.equal(await layerMtime(r, "Dockerfile"), overrideTM);
    // The same through the SDK's option (`sourceDateEpoch`, which sets the build arg).
    const r2 = await bk.build({
      dockerfile: `\nARG SOURCE_DATE_EPOCH=${defaultTM}\nFROM scratch\nCOPY Dockerfile .\n`,
      sourceDateEpoch: overrideTM,
    });
    assert.equal(await layerMtime(r2, "Dockerfile"), overrideTM);
  });

  test("testSourceDateEpochDockerfileDefaultInvalid", async () => {
    const err = await bk.buildFails({
      dockerfile: "\nARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM scratch\nCOPY Dockerfile .\n",
    });
    assert.match(err.message, /invalid SOURCE_DATE_EPOCH: not-a-timestamp/);
  });

  // The build arg wins over the global ARG naming a stage, so the stage is never asked for its time (nor built).
  test("testSourceDateEpochStageOverride", async (t) => {
    const overrideTime = 1700000502;
    // BuildKit gives foo the mtime 1700000501 (the stage's time); the stage is never built here or there.
    const tar = await tarOf([{ name: "foo", content: "bar", mode: 0o644 }]);
    const server = await startHttpServer({ "/src.tar": { etag: "e1", content: tar } });
    t.after(() => server.close());
    const r = await bk.build({
      dockerfile: `\nARG SOURCE_DATE_EPOCH=mysource\nFROM scratch AS mysource\nADD ${server.url}/src.tar /\nFROM scratch\nCOPY Dockerfile .\n`,
      buildArgs: { SOURCE_DATE_EPOCH: String(overrideTime) },
    });
    assert.equal((await r.config()).rootfs.diff_ids.length, 1);
    assert.equal(await layerMtime(r, "Dockerfile"), overrideTime);
    assert.equal(unix((await r.config()).created), overrideTime);
  });
});
