// What `strata images`, `strata logs` and `strata explain --builder-version` print (pure formatting).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { formatBuilderVersion } from "../../src/cli/builder-info.js";
import { formatLogs } from "../../src/cli/image-info.js";
import { ago, formatImages, humanSize } from "../../src/cli/names.js";
import type { ImageRecord } from "../../src/store/store.js";
import type { Digest } from "../../src/util/digest.js";

describe("strata images", () => {
  test("sizes and ages read as Docker's", () => {
    assert.equal(humanSize(0), "0B");
    assert.equal(humanSize(999), "999B");
    assert.equal(humanSize(1234), "1.23kB");
    assert.equal(humanSize(45_600_000), "45.6MB");
    assert.equal(humanSize(7_000_000_000), "7GB");
    const now = Date.parse("2026-12-07T12:00:00Z");
    assert.equal(ago("2026-12-07T12:00:00Z", now), "Less than a second ago");
    assert.equal(ago("2026-12-07T11:59:59Z", now), "1 second ago");
    assert.equal(ago("2026-12-07T11:57:00Z", now), "3 minutes ago");
    assert.equal(ago("2026-12-07T10:00:00Z", now), "2 hours ago");
    assert.equal(ago("2026-12-04T12:00:00Z", now), "3 days ago");
    assert.equal(ago("2026-11-16T12:00:00Z", now), "3 weeks ago");
    assert.equal(ago("2025-11-07T12:00:00Z", now), "1 year ago");
    assert.equal(ago(undefined, now), "");
  });

  test("columns NAME, TAG, IMAGE ID, CREATED, SIZE (STEP with --all); unnamed images are <none>", () => {
    const now = Date.parse("2026-12-07T12:00:00Z");
    const id = `sha256:${"ab".repeat(32)}`;
    const text = formatImages(
      [
        { name: "team/app", tag: "v1", id, createdAt: "2026-12-07T11:00:00Z", size: 1_500_000, step: 'cmd ["sh"]' },
        { id, size: 12, step: "fromScratch" },
      ],
      true,
      now,
    );
    const lines = text.trimEnd().split("\n");
    assert.match(lines[0]!, /^NAME\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE\s+STEP$/);
    assert.match(lines[1]!, /^team\/app\s+v1\s+abababababab\s+1 hour ago\s+1\.5MB\s+cmd \["sh"\]$/);
    assert.match(lines[2]!, /^<none>\s+<none>\s+abababababab\s+12B\s+fromScratch$/);
    assert.match(formatImages([], false, now), /^NAME\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE\n$/);
  });
});

describe("strata logs", () => {
  test("a header per step, its lines indented; a step without a log or output says so", () => {
    const rec = (hex: string, index: number, description: string) =>
      ({
        id: `sha256:${hex.repeat(64)}` as Digest,
        step: { index, description, builtAt: "2026-12-07T12:00:00Z" },
      }) as unknown as ImageRecord;
    const text = formatLogs([
      { image: rec("a", 0, "fromScratch"), log: "" },
      { image: rec("b", 1, "runCommands echo ***"), log: "$ echo ***\n***" },
      { image: rec("c", 2, "env"), log: undefined },
    ]);
    assert.equal(
      text,
      "=> Step 0: fromScratch  (aaaaaaaaaaaa, built 2026-12-07T12:00:00Z)\n    (no output)\n" +
        "=> Step 1: runCommands echo ***  (bbbbbbbbbbbb, built 2026-12-07T12:00:00Z)\n    $ echo ***\n    ***\n" +
        "=> Step 2: env  (cccccccccccc, built 2026-12-07T12:00:00Z)\n    (no log stored)\n",
    );
  });
});

describe("strata explain --builder-version", () => {
  test("names the version, where it came from and what it pins; fields a file lacks are left out", () => {
    const text = formatBuilderVersion(
      {
        version: "2099.01",
        description: "test pins",
        sourceDateEpoch: 1767225600,
        debian: {
          mirror: "http://m",
          variant: "minbase",
          python: { "3.11": { suite: "bookworm" } },
          packages: ["a", "b"],
        },
        tools: { uv: { defaultVersion: "0.9.5" } },
      },
      "from STRATA_BUILDER_VERSION",
      ["2099.01", "PREVIEW"],
    );
    assert.match(text, /^builder version 2099\.01 \(from STRATA_BUILDER_VERSION\)\n {2}test pins\n/);
    assert.match(text, /python series: 3\.11 → bookworm/);
    assert.match(text, /packages: a, b/);
    assert.match(text, /uv: 0\.9\.5/);
    assert.match(text, /layer timestamps clamped to 2026-01-01T00:00:00\.000Z/);
    assert.match(text, /known versions: 2099\.01, PREVIEW/);
    assert.doesNotMatch(text, /python-build-standalone/);
    assert.equal(
      formatBuilderVersion({ version: "x" }, "the default", ["x"]).split("\n")[0],
      "builder version x (the default)",
    );
  });
});
