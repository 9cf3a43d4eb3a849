import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  applyInstruction,
  DEFAULT_PATH,
  DEFAULT_SHELL,
  emptyConfig,
  envMap,
  manifestFor,
  nextConfig,
  setEnv,
} from "../../src/engine/config.js";
import { diffInputs } from "../../src/engine/explain.js";
import type { FileInput, KeyInputs } from "../../src/keys/step-key.js";
import { MediaType, type ImageConfig, type RuntimeConfig } from "../../src/oci/types.js";
import type { Instruction } from "../../src/plan/instructions.js";
import type { LayerRecord } from "../../src/store/store.js";
import type { Digest } from "../../src/util/digest.js";

const d = (c: string) => ("sha256:" + c.repeat(64).slice(0, 64)) as Digest;
const layer = (c: string, size = 123): LayerRecord => ({
  digest: d(c),
  diffId: ("sha256:" + c + "0".repeat(63)) as Digest,
  size,
  mediaType: MediaType.ociLayerGzip,
});
const T = "2026-01-01T00:00:00Z";

function deepFreeze<T>(x: T): T {
  if (x && typeof x === "object") {
    for (const v of Object.values(x)) deepFreeze(v);
    Object.freeze(x);
  }
  return x;
}

// ---- setEnv / envMap -------------------------------------------------------------------------------------------

describe("setEnv and envMap", () => {
  test("setEnv appends a new variable at the end", () => {
    assert.deepEqual(setEnv(["A=1", "B=2"], "C", "3"), ["A=1", "B=2", "C=3"]);
  });

  test("setEnv replaces an existing variable in place, keeping order", () => {
    assert.deepEqual(setEnv(["A=1", "B=2", "C=3"], "B", "x"), ["A=1", "B=x", "C=3"]);
  });

  test("setEnv matches whole names, not prefixes", () => {
    assert.deepEqual(setEnv(["AB=1"], "A", "2"), ["AB=1", "A=2"]);
  });

  test("setEnv does not mutate its input", () => {
    const env = Object.freeze(["A=1"]);
    setEnv(env, "A", "2");
    setEnv(env, "B", "2");
    assert.deepEqual(env, ["A=1"]);
  });

  test("setEnv keeps values containing =", () => {
    assert.deepEqual(setEnv([], "OPTS", "a=b=c"), ["OPTS=a=b=c"]);
  });

  test("envMap splits at the first = and skips malformed entries", () => {
    const m = envMap(["A=1", "B=x=y", "=bad", "noeq", "E="]);
    assert.deepEqual(
      [...m],
      [
        ["A", "1"],
        ["B", "x=y"],
        ["E", ""],
      ],
    );
    assert.equal(envMap(undefined).size, 0);
  });

  test("defaults", () => {
    assert.equal(DEFAULT_PATH, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    assert.deepEqual(DEFAULT_SHELL, ["/bin/sh", "-c"]);
    assert.deepEqual(emptyConfig(), {
      architecture: "amd64",
      os: "linux",
      config: {},
      rootfs: { type: "layers", diff_ids: [] },
      history: [],
    });
    assert.notEqual(emptyConfig().rootfs.diff_ids, emptyConfig().rootfs.diff_ids, "fresh arrays each call");
  });
});

// ---- applyInstruction ----------------------------------------------------------------------------------------

describe("applyInstruction", () => {
  test("ENV sets new variables in order and replaces existing ones in place", () => {
    const c = applyInstruction(
      { Env: ["PATH=/bin", "A=1"] },
      {
        op: "ENV",
        vars: [
          ["B", "2"],
          ["PATH", "/usr/bin:/bin"],
          ["C", "3"],
        ],
      },
    );
    assert.deepEqual(c.Env, ["PATH=/usr/bin:/bin", "A=1", "B=2", "C=3"]);
  });

  test("ENV with the same name twice in one instruction keeps the last value", () => {
    const c = applyInstruction(
      {},
      {
        op: "ENV",
        vars: [
          ["A", "1"],
          ["A", "2"],
        ],
      },
    );
    assert.deepEqual(c.Env, ["A=2"]);
  });

  test("ENV on a config without Env starts a list", () => {
    assert.deepEqual(applyInstruction({}, { op: "ENV", vars: [["A", "x y"]] }).Env, ["A=x y"]);
  });

  test("WORKDIR absolute replaces the working directory", () => {
    assert.equal(applyInstruction({ WorkingDir: "/app" }, { op: "WORKDIR", path: "/srv" }).WorkingDir, "/srv");
  });

  test("WORKDIR relative resolves against the current working directory", () => {
    assert.equal(applyInstruction({ WorkingDir: "/app" }, { op: "WORKDIR", path: "sub" }).WorkingDir, "/app/sub");
    assert.equal(applyInstruction({ WorkingDir: "/app/" }, { op: "WORKDIR", path: "sub/x" }).WorkingDir, "/app/sub/x");
  });

  test("WORKDIR relative without a working directory resolves against /", () => {
    assert.equal(applyInstruction({}, { op: "WORKDIR", path: "sub" }).WorkingDir, "/sub");
  });

  test("WORKDIR relative chains: each resolves against the previous", () => {
    let c: RuntimeConfig = {};
    for (const p of ["/a", "b", "c"]) c = applyInstruction(c, { op: "WORKDIR", path: p });
    assert.equal(c.WorkingDir, "/a/b/c");
  });

  test("USER sets the user", () => {
    assert.equal(applyInstruction({ User: "root" }, { op: "USER", user: "1000:1000" }).User, "1000:1000");
  });

  test("ENTRYPOINT clears an inherited CMD", () => {
    const c = applyInstruction({ Cmd: ["python3"] }, { op: "ENTRYPOINT", argv: ["/bin/tini", "--"] });
    assert.deepEqual(c.Entrypoint, ["/bin/tini", "--"]);
    assert.equal(c.Cmd, null);
  });

  test("CMD after ENTRYPOINT is kept", () => {
    let c: RuntimeConfig = { Cmd: ["python3"] };
    c = applyInstruction(c, { op: "ENTRYPOINT", argv: ["/bin/tini", "--"] });
    c = applyInstruction(c, { op: "CMD", argv: ["app"] });
    assert.deepEqual(c, { Entrypoint: ["/bin/tini", "--"], Cmd: ["app"] });
  });

  test("CMD does not touch ENTRYPOINT", () => {
    assert.deepEqual(applyInstruction({ Entrypoint: ["e"] }, { op: "CMD", argv: ["c"] }), {
      Entrypoint: ["e"],
      Cmd: ["c"],
    });
  });

  test("SHELL sets the shell", () => {
    assert.deepEqual(applyInstruction({}, { op: "SHELL", argv: ["/bin/bash", "-c"] }).Shell, ["/bin/bash", "-c"]);
  });

  test("LABEL merges with existing labels, later values winning", () => {
    const c = applyInstruction(
      { Labels: { a: "1", b: "2" } },
      {
        op: "LABEL",
        labels: [
          ["b", "3"],
          ["c", "4"],
        ],
      },
    );
    assert.deepEqual(c.Labels, { a: "1", b: "3", c: "4" });
  });

  test("LABEL on a config without labels creates them", () => {
    assert.deepEqual(applyInstruction({}, { op: "LABEL", labels: [["x", "y"]] }).Labels, { x: "y" });
  });

  test("RUN and COPY leave the config unchanged (same object)", () => {
    const c: RuntimeConfig = { Env: ["A=1"] };
    assert.equal(applyInstruction(c, { op: "RUN", command: "x" }), c);
    assert.equal(applyInstruction(c, { op: "COPY", source: "context", dest: "/" }), c);
  });

  test("applyInstruction never mutates its input", () => {
    const c = deepFreeze<RuntimeConfig>({ Env: ["A=1"], Labels: { a: "1" }, Cmd: ["x"], WorkingDir: "/w" });
    const all: Instruction[] = [
      { op: "ENV", vars: [["A", "2"]] },
      { op: "WORKDIR", path: "rel" },
      { op: "USER", user: "u" },
      { op: "ENTRYPOINT", argv: ["e"] },
      { op: "CMD", argv: ["c"] },
      { op: "SHELL", argv: ["s"] },
      { op: "LABEL", labels: [["a", "2"]] },
    ];
    for (const ins of all) applyInstruction(c, ins); // frozen: would throw in strict mode if mutated
    assert.deepEqual(c, { Env: ["A=1"], Labels: { a: "1" }, Cmd: ["x"], WorkingDir: "/w" });
  });
});

// ---- nextConfig ----------------------------------------------------------------------------------------------

describe("nextConfig", () => {
  const parent = (): ImageConfig => ({
    created: "2025-01-01T00:00:00Z",
    architecture: "amd64",
    os: "linux",
    config: { Env: ["PATH=/bin"], Cmd: ["python3"] },
    rootfs: { type: "layers", diff_ids: [d("1")] },
    history: [{ created: "2025-01-01T00:00:00Z", created_by: "base", comment: "base" }],
  });

  test("a step with a layer appends its diff_id and a history entry without empty_layer", () => {
    const l = layer("a");
    const c = nextConfig(
      parent(),
      [
        { op: "RUN", command: "apt-get update" },
        { op: "RUN", command: "apt-get install -y jq" },
      ],
      l,
      T,
      "aptInstall jq",
    );
    assert.deepEqual(c.rootfs, { type: "layers", diff_ids: [d("1"), l.diffId] });
    assert.equal(c.history.length, 2);
    assert.deepEqual(c.history[1], {
      created: T,
      created_by: "RUN apt-get update && RUN apt-get install -y jq",
      comment: "aptInstall jq",
    });
    assert.ok(!("empty_layer" in c.history[1]!));
    assert.equal(c.created, T);
    assert.deepEqual(c.config, { Env: ["PATH=/bin"], Cmd: ["python3"] });
  });

  test("a metadata-only step adds a history entry with empty_layer and keeps diff_ids", () => {
    const c = nextConfig(parent(), [{ op: "ENV", vars: [["A", "x y"]] }], undefined, T, "env A");
    assert.deepEqual(c.rootfs.diff_ids, [d("1")]);
    assert.deepEqual(c.history[1], { created: T, created_by: 'ENV A="x y"', comment: "env A", empty_layer: true });
    assert.deepEqual(c.config.Env, ["PATH=/bin", "A=x y"]);
  });

  test("with no instructions the comment is used as created_by", () => {
    const c = nextConfig(parent(), [], undefined, T, "fromScratch");
    assert.equal(c.history[1]!.created_by, "fromScratch");
    assert.equal(c.history[1]!.empty_layer, true);
  });

  test("instructions are applied in order", () => {
    const c = nextConfig(
      parent(),
      [
        { op: "WORKDIR", path: "/app" },
        { op: "WORKDIR", path: "src" },
        { op: "ENTRYPOINT", argv: ["e"] },
        { op: "CMD", argv: ["c"] },
        { op: "LABEL", labels: [["k", "v"]] },
        { op: "USER", user: "nobody" },
      ],
      undefined,
      T,
      "meta",
    );
    assert.deepEqual(c.config, {
      Env: ["PATH=/bin"],
      Cmd: ["c"],
      Entrypoint: ["e"],
      WorkingDir: "/app/src",
      Labels: { k: "v" },
      User: "nobody",
    });
  });

  test("ENTRYPOINT in a step clears the parent's CMD (null, kept in the JSON)", () => {
    const c = nextConfig(parent(), [{ op: "ENTRYPOINT", argv: ["/bin/tini"] }], undefined, T, "entrypoint");
    assert.equal(c.config.Cmd, null);
    assert.ok(JSON.stringify(c.config).includes('"Cmd":null'));
  });

  test("undefined config keys are removed", () => {
    const p = parent();
    p.config = { Env: ["A=1"], User: undefined, WorkingDir: undefined };
    const c = nextConfig(p, [], undefined, T, "x");
    assert.deepEqual(Object.keys(c.config), ["Env"]);
  });

  test("architecture and os come from the parent", () => {
    const p = parent();
    p.architecture = "arm64";
    p.os = "linux";
    const c = nextConfig(p, [], undefined, T, "x");
    assert.equal(c.architecture, "arm64");
    assert.equal(c.os, "linux");
  });

  test("nextConfig does not mutate the parent", () => {
    const p = deepFreeze(parent());
    const snapshot = JSON.stringify(p);
    nextConfig(
      p,
      [
        { op: "ENV", vars: [["B", "2"]] },
        { op: "LABEL", labels: [["a", "b"]] },
      ],
      layer("b"),
      T,
      "x",
    );
    assert.equal(JSON.stringify(p), snapshot);
  });

  test("successive steps accumulate diff_ids and history", () => {
    let c = emptyConfig();
    const l1 = layer("a");
    const l2 = layer("c");
    c = nextConfig(c, [{ op: "COPY", source: "context", dest: "/" }], l1, T, "one");
    c = nextConfig(c, [{ op: "USER", user: "u" }], undefined, T, "two");
    c = nextConfig(c, [{ op: "RUN", command: "x" }], l2, T, "three");
    assert.deepEqual(c.rootfs.diff_ids, [l1.diffId, l2.diffId]);
    assert.deepEqual(
      c.history.map((h) => [h.comment, h.empty_layer ?? false]),
      [
        ["one", false],
        ["two", true],
        ["three", false],
      ],
    );
    // Every non-empty history entry corresponds to one diff_id, as the OCI spec requires.
    assert.equal(c.history.filter((h) => !h.empty_layer).length, c.rootfs.diff_ids.length);
  });
});

// ---- manifestFor -------------------------------------------------------------------------------------------

describe("manifestFor", () => {
  test("manifestFor builds an OCI manifest with config and layer descriptors", () => {
    const l1 = layer("a", 10);
    const l2: LayerRecord = { ...layer("c", 20), mediaType: MediaType.ociLayerTar };
    const m = manifestFor(d("f"), 42, [l1, l2]);
    assert.deepEqual(m, {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d("f"), size: 42 },
      layers: [
        { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: l1.digest, size: 10 },
        { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: l2.digest, size: 20 },
      ],
    });
  });

  test("manifestFor layer descriptors use the compressed digest, never the diffId", () => {
    const l = layer("a");
    const m = manifestFor(d("f"), 1, [l]);
    assert.ok(!JSON.stringify(m).includes(l.diffId));
  });

  test("manifestFor with no layers has an empty layer list", () => {
    assert.deepEqual(manifestFor(d("f"), 2, []).layers, []);
  });

  test("manifestFor JSON key order is stable (schemaVersion, mediaType, config, layers)", () => {
    assert.deepEqual(Object.keys(manifestFor(d("f"), 2, [])), ["schemaVersion", "mediaType", "config", "layers"]);
  });
});

// ---- diffInputs ----------------------------------------------------------------------------------------------

describe("diffInputs (strata explain)", () => {
  const file = (p: string, digest: string, extra: Partial<FileInput> = {}): FileInput => ({
    path: p,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    digest,
    ...extra,
  });
  const k = (over: Partial<KeyInputs> = {}): KeyInputs => ({
    builderVersion: "2026.11",
    parent: null,
    instructions: [],
    files: [],
    buildArgs: [],
    secretNames: [],
    extra: [],
    ...over,
  });

  test("identical inputs give no differences", () => {
    const a = k({ instructions: ["RUN x"], files: [file("context/a", "1")], secretNames: ["S"], extra: [["x", "1"]] });
    assert.deepEqual(diffInputs("runCommands", a, k({ ...a }), "runCommands x", "runCommands x"), []);
  });

  test("an added package is reported as +name", () => {
    const r = diffInputs(
      "pipInstall",
      k({ instructions: ["RUN python -m pip install pandas"] }),
      k({ instructions: ["RUN python -m pip install numpy pandas"] }),
      "pipInstall pandas",
      "pipInstall numpy pandas",
    );
    assert.deepEqual(r, ["packages changed: +numpy"]);
  });

  test("added and removed packages are both listed, added first", () => {
    const r = diffInputs(
      "aptInstall",
      k({ instructions: ["a"] }),
      k({ instructions: ["b"] }),
      "aptInstall jq curl",
      "aptInstall jq git",
    );
    assert.deepEqual(r, ["packages changed: +git -curl"]);
  });

  test("uvPipInstall is a package method too", () => {
    const r = diffInputs(
      "uvPipInstall",
      k({ instructions: ["a"] }),
      k({ instructions: ["b"] }),
      "uvPipInstall a",
      "uvPipInstall a b==2",
    );
    assert.deepEqual(r, ["packages changed: +b==2"]);
  });

  test("same packages with different instructions are reported as options changed", () => {
    const r = diffInputs(
      "pipInstall",
      k({ instructions: ["RUN python -m pip install a"] }),
      k({ instructions: ["RUN python -m pip install a --pre"] }),
      "pipInstall a",
      "pipInstall a",
    );
    assert.deepEqual(r, ["options changed: RUN python -m pip install a --pre"]);
  });

  test("other methods report the old and new instructions", () => {
    const r = diffInputs(
      "runCommands",
      k({ instructions: ["RUN a", "RUN b"] }),
      k({ instructions: ["RUN a", "RUN c"] }),
      "runCommands a",
      "runCommands a",
    );
    assert.deepEqual(r, ["instructions changed: was `RUN a && RUN b`, now `RUN a && RUN c`"]);
  });

  test("a file whose content changed is named (without the input name prefix)", () => {
    const r = diffInputs(
      "addLocalDir",
      k({ files: [file("context/src/app.py", "1"), file("context/b", "2")] }),
      k({ files: [file("context/src/app.py", "9"), file("context/b", "2")] }),
      "d",
      "d",
    );
    assert.deepEqual(r, ["src/app.py content changed"]);
  });

  test("a type change counts as a content change", () => {
    const r = diffInputs(
      "addLocalDir",
      k({ files: [file("context/x", "1")] }),
      k({ files: [file("context/x", "1", { type: "symlink" })] }),
      "d",
      "d",
    );
    assert.deepEqual(r, ["x content changed"]);
  });

  test("mode, uid or gid changes are reported as mode/owner changes", () => {
    const before = k({ files: [file("context/a", "1"), file("context/b", "1"), file("context/c", "1")] });
    const now = k({
      files: [
        file("context/a", "1", { mode: 0o755 }),
        file("context/b", "1", { uid: 1 }),
        file("context/c", "1", { gid: 1 }),
      ],
    });
    assert.deepEqual(diffInputs("addLocalDir", before, now, "d", "d"), ["a, b, c mode/owner changed"]);
  });

  test("added and removed files are counted and named", () => {
    const before = k({ files: [file("context/keep", "1"), file("context/old", "2")] });
    const now = k({ files: [file("context/keep", "1"), file("context/new1", "3"), file("context/new2", "4")] });
    assert.deepEqual(diffInputs("addLocalDir", before, now, "d", "d"), [
      "2 files added (new1, new2), 1 file removed (old)",
    ]);
  });

  test("content, mode, added and removed parts are combined in one line", () => {
    const before = k({ files: [file("context/a", "1"), file("context/b", "1"), file("context/gone", "1")] });
    const now = k({
      files: [file("context/a", "2"), file("context/b", "1", { mode: 0o600 }), file("context/new", "1")],
    });
    assert.deepEqual(diffInputs("addLocalDir", before, now, "d", "d"), [
      "a content changed, b mode/owner changed, 1 file added (new), 1 file removed (gone)",
    ]);
  });

  test("more than five files are elided with a total", () => {
    const names = ["a", "b", "c", "d", "e", "f", "g"];
    const now = k({ files: names.map((n) => file(`context/${n}`, "1")) });
    assert.deepEqual(diffInputs("addLocalDir", k(), now, "d", "d"), ["7 files added (a, b, c, d, e, … (7 in all))"]);
  });

  test("a changed function source is reported", () => {
    const r = diffInputs(
      "runFunction",
      k({
        extra: [
          ["function.source", "() => 1"],
          ["function.args", "[]"],
        ],
      }),
      k({
        extra: [
          ["function.source", "() => 2"],
          ["function.args", "[]"],
        ],
      }),
      "f",
      "f",
    );
    assert.deepEqual(r, ["function source changed"]);
  });

  test("changed function arguments show old and new JSON", () => {
    const r = diffInputs(
      "runFunction",
      k({ extra: [["function.args", "[1]"]] }),
      k({ extra: [["function.args", "[2]"]] }),
      "f",
      "f",
    );
    assert.deepEqual(r, ["function arguments changed: [1] → [2]"]);
    const r2 = diffInputs("runFunction", k(), k({ extra: [["function.args", "[2]"]] }), "f", "f");
    assert.deepEqual(r2, ["function arguments changed: none → [2]"]);
  });

  test("step env, base manifest and other extras are named", () => {
    const r = diffInputs(
      "runCommands",
      k({
        extra: [
          ["env.FOO", "1"],
          ["base.manifest", "sha256:old"],
          ["uvVersion", "0.9.5"],
        ],
      }),
      k({
        extra: [
          ["env.FOO", "2"],
          ["base.manifest", "sha256:new"],
          ["uvVersion", "0.9.6"],
        ],
      }),
      "x",
      "x",
    );
    assert.deepEqual(r, ["step env FOO changed", "base image moved: sha256:old → sha256:new", "uvVersion changed"]);
  });

  test("a changed builder version is reported first", () => {
    const r = diffInputs(
      "runCommands",
      k({ builderVersion: "2026.11", instructions: ["RUN a"] }),
      k({ builderVersion: "PREVIEW", instructions: ["RUN b"] }),
      "x",
      "x",
    );
    assert.equal(r[0], "builder version changed: 2026.11 → PREVIEW");
    assert.equal(r.length, 2);
  });

  test("changed secret names are reported", () => {
    assert.deepEqual(diffInputs("runCommands", k({ secretNames: ["A"] }), k({ secretNames: ["A", "B"] }), "x", "x"), [
      "secret names changed: [A] → [A,B]",
    ]);
  });

  test("file order does not produce spurious differences", () => {
    const files = [file("context/a", "1"), file("context/b", "2")];
    assert.deepEqual(diffInputs("addLocalDir", k({ files }), k({ files: [...files].reverse() }), "d", "d"), []);
  });

  test("extra order does not produce spurious differences", () => {
    const extra: [string, string][] = [
      ["a", "1"],
      ["b", "2"],
    ];
    assert.deepEqual(diffInputs("x", k({ extra }), k({ extra: [...extra].reverse() }), "d", "d"), []);
  });

  test("secret name order and duplicates do not produce spurious differences (the key ignores them)", () => {
    assert.deepEqual(
      diffInputs("runCommands", k({ secretNames: ["A", "B"] }), k({ secretNames: ["B", "A", "B"] }), "x", "x"),
      [],
    );
  });

  test("changed, added and removed build args are reported by name", () => {
    const r = diffInputs(
      "runCommands",
      k({
        buildArgs: [
          ["A", "1"],
          ["GONE", "x"],
        ],
      }),
      k({
        buildArgs: [
          ["NEW", "y"],
          ["A", "2"],
        ],
      }),
      "x",
      "x",
    );
    assert.equal(r.length, 3);
    assert.ok(
      r.some((l) => /build arg A changed/.test(l) && l.includes("1") && l.includes("2")),
      r.join("\n"),
    );
    assert.ok(
      r.some((l) => /build arg GONE changed/.test(l)),
      r.join("\n"),
    );
    assert.ok(
      r.some((l) => /build arg NEW changed/.test(l)),
      r.join("\n"),
    );
  });

  test("build arg order does not produce spurious differences", () => {
    const buildArgs: [string, string][] = [
      ["A", "1"],
      ["B", "2"],
    ];
    assert.deepEqual(diffInputs("x", k({ buildArgs }), k({ buildArgs: [...buildArgs].reverse() }), "d", "d"), []);
  });
});

describe("ENTRYPOINT and CMD in one definition", () => {
  test("an ENTRYPOINT after a cmd() of the same chain keeps that CMD; an inherited CMD is reset", async () => {
    const { Image } = await import("../../src/sdk/image.js");
    const { applyInstruction } = await import("../../src/engine/config.js");
    const own = Image.fromScratch().cmd(["app"]).entrypoint(["tini", "--"]).plan("2026.11");
    let rc = {};
    for (const st of own.steps) for (const ins of st.instructions) rc = applyInstruction(rc, ins);
    assert.deepEqual(rc, { Cmd: ["app"], Entrypoint: ["tini", "--"] });
    const inherited = Image.debianSlim().entrypoint(["tini", "--"]).plan("2026.11");
    rc = {};
    for (const st of inherited.steps) for (const ins of st.instructions) rc = applyInstruction(rc, ins);
    assert.deepEqual(rc, { Cmd: null, Entrypoint: ["tini", "--"] });
  });
});
