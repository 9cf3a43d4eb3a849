import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import {
  encodeKeyInputs,
  initKeys,
  KEY_FORMAT,
  stepKey,
  type FileInput,
  type KeyInputs,
} from "../../src/keys/step-key.js";

const PARENT = "sha256:" + "ab".repeat(32);

// ---- golden values ---------------------------------------------------------------------------------------------
// These keys were computed once with the implementation of KEY_FORMAT "strata-cache-key/1" and are pinned on
// purpose: if one of them changes, every existing cache is invalidated, so the change must be deliberate (bump
// KEY_FORMAT and update the goldens together).

const MINIMAL: KeyInputs = {
  builderVersion: "2026.11",
  parent: null,
  instructions: [],
  files: [],
  buildArgs: [],
  secretNames: [],
  extra: [],
};

const FULL: KeyInputs = {
  builderVersion: "2026.11",
  parent: PARENT,
  instructions: ["COPY context /app", "RUN python -m pip install -r /app/requirements.txt"],
  files: [
    {
      path: "context/requirements.txt",
      type: "file",
      mode: 0o644,
      uid: 1000,
      gid: 1000,
      digest: "sha256:" + "11".repeat(32),
    },
    { path: "context/bin", type: "dir", mode: 0o755, uid: 0, gid: 0, digest: "" },
    { path: "context/bin/run", type: "symlink", mode: 0o777, uid: 0, gid: 0, digest: "sha256:" + "22".repeat(32) },
  ],
  buildArgs: [
    ["PYTHON", "3.11"],
    ["DEBUG", "1"],
  ],
  secretNames: ["TOKEN", "API_KEY"],
  extra: [
    ["env.FOO", "bar"],
    ["uvVersion", "0.9.5"],
  ],
};

const UNICODE: KeyInputs = {
  builderVersion: "PREVIEW",
  parent: null,
  instructions: ["COPY context /données"],
  files: [
    {
      path: "context/héllo/日本語.txt",
      type: "file",
      mode: 0o600,
      uid: 0,
      gid: 0,
      digest: "sha256:" + "33".repeat(32),
    },
    {
      path: "context/emoji-😀.md",
      type: "file",
      mode: 0o4755,
      uid: 65534,
      gid: 65534,
      digest: "sha256:" + "44".repeat(32),
    },
  ],
  buildArgs: [],
  secretNames: [],
  extra: [],
};

const QUOTING: KeyInputs = {
  builderVersion: "2026.11",
  parent: PARENT,
  instructions: [
    'RUN echo "hi \\"there\\"" && printf \'a\\nb\'',
    'ENV A="x y" B="$HOME"',
    'RUN ["/.strata/node/node","/.strata/function.mjs"]',
  ],
  files: [],
  buildArgs: [["EMPTY", ""]],
  secretNames: ["S"],
  extra: [
    ["function.source", 'async () => {\n  console.log("hi\\n");\n}'],
    ["function.args", '[1,"two",{"three":3}]'],
  ],
};

const DEBIAN: KeyInputs = {
  builderVersion: "2026.11",
  parent: null,
  instructions: ['CMD ["python3"]'],
  files: [],
  buildArgs: [],
  secretNames: [],
  extra: [["base", JSON.stringify({ kind: "debian", python: "3.11", suite: "bookworm" })]],
};

const GOLDEN: [string, KeyInputs, string][] = [
  ["minimal (base step, nothing else)", MINIMAL, "8ef1dea3fe9bebff8250f8693fd7a627"],
  ["files, secrets, build args and extra", FULL, "aa349516ffe8fb03609c68f4602fba29"],
  ["unicode paths and setuid mode", UNICODE, "7cb7547b593a6f50c269f191cf3808f1"],
  ["quotes, newlines and JSON in instructions and extra", QUOTING, "a33d32472209997817420d09ec73c7e1"],
  ["debian base recipe in extra", DEBIAN, "7049d50cd04398e623525820d00b0ea4"],
];

const FULL_ENCODING =
  "strata-cache-key/1\n" +
  'builder "2026.11"\n' +
  'parent "sha256:abababababababababababababababababababababababababababababababab"\n' +
  'ins "COPY context /app"\n' +
  'ins "RUN python -m pip install -r /app/requirements.txt"\n' +
  'file ["context/bin","dir","755",0,0,""]\n' +
  'file ["context/bin/run","symlink","777",0,0,"sha256:2222222222222222222222222222222222222222222222222222222222222222"]\n' +
  'file ["context/requirements.txt","file","644",1000,1000,"sha256:1111111111111111111111111111111111111111111111111111111111111111"]\n' +
  'arg ["DEBUG","1"]\n' +
  'arg ["PYTHON","3.11"]\n' +
  'secret "API_KEY"\n' +
  'secret "TOKEN"\n' +
  'extra ["env.FOO","bar"]\n' +
  'extra ["uvVersion","0.9.5"]\n';

function clone(k: KeyInputs): KeyInputs {
  return {
    ...k,
    instructions: [...k.instructions],
    files: k.files.map((f) => ({ ...f })),
    buildArgs: k.buildArgs.map(([a, b]) => [a, b] as [string, string]),
    secretNames: [...k.secretNames],
    extra: k.extra.map(([a, b]) => [a, b] as [string, string]),
  };
}

function shuffled<T>(xs: readonly T[]): T[] {
  // Deterministic permutation: reverse, then rotate by one.
  const r = [...xs].reverse();
  if (r.length > 1) r.push(r.shift()!);
  return r;
}

describe("stepKey before initKeys", () => {
  test("stepKey throws if initKeys() was never called (fresh module instance)", async () => {
    const url = new URL("../../src/keys/step-key.js", import.meta.url).href + "?fresh=" + Date.now();
    const fresh = (await import(url)) as typeof import("../../src/keys/step-key.js");
    assert.throws(() => fresh.stepKey(MINIMAL), /initKeys/);
    // encodeKeyInputs is pure and needs no wasm.
    assert.equal(fresh.encodeKeyInputs(FULL), FULL_ENCODING);
    await fresh.initKeys();
    assert.equal(fresh.stepKey(MINIMAL), GOLDEN[0]![2]);
  });
});

describe("golden keys", () => {
  before(async () => {
    await initKeys();
  });

  test("KEY_FORMAT is strata-cache-key/1", () => {
    assert.equal(KEY_FORMAT, "strata-cache-key/1");
  });

  for (const [name, inputs, key] of GOLDEN) {
    test(`golden key: ${name}`, () => {
      assert.equal(stepKey(inputs), key);
    });
  }

  test("encodeKeyInputs produces the exact pinned text (sorted files, args, secrets, extra; octal modes)", () => {
    assert.equal(encodeKeyInputs(FULL), FULL_ENCODING);
  });

  test("encodeKeyInputs of the minimal value is the three header lines", () => {
    assert.equal(encodeKeyInputs(MINIMAL), 'strata-cache-key/1\nbuilder "2026.11"\nparent null\n');
  });

  test("the encoding keeps unicode as UTF-8 text (not \\u escapes) and modes in octal", () => {
    const enc = encodeKeyInputs(UNICODE);
    assert.ok(enc.includes('"context/héllo/日本語.txt"'), enc);
    assert.ok(enc.includes('"context/emoji-😀.md","file","4755",65534,65534'), enc);
  });

  test("initKeys is idempotent and concurrent calls are fine", async () => {
    await Promise.all([initKeys(), initKeys(), initKeys()]);
    assert.equal(stepKey(MINIMAL), GOLDEN[0]![2]);
  });

  test("keys are 32 lowercase hex digits", () => {
    for (const [, inputs] of GOLDEN) assert.match(stepKey(inputs), /^[0-9a-f]{32}$/);
    // Many varied inputs, to catch missing zero-padding of either half.
    for (let i = 0; i < 2000; i++) {
      const k = stepKey({ ...MINIMAL, instructions: [`RUN echo ${i}`] });
      assert.match(k, /^[0-9a-f]{32}$/, `input ${i} gave ${k}`);
    }
  });

  test("stepKey is a pure function: same inputs give the same key, inputs are not mutated", () => {
    const a = clone(FULL);
    const before = JSON.stringify(a);
    assert.equal(stepKey(a), stepKey(clone(FULL)));
    assert.equal(JSON.stringify(a), before);
  });
});

describe("every input changes the key", () => {
  before(async () => {
    await initKeys();
  });

  const base = FULL;
  const baseKey = () => stepKey(base);
  const variants: [string, (k: KeyInputs) => void][] = [
    ["builderVersion", (k) => (k.builderVersion = "PREVIEW")],
    ["parent (other id)", (k) => (k.parent = "sha256:" + "cd".repeat(32))],
    ["parent (null)", (k) => (k.parent = null)],
    ["first instruction", (k) => (k.instructions[0] = "COPY context /srv")],
    ["second instruction", (k) => (k.instructions[1] = "RUN python -m pip install -r /app/requirements.txt --pre")],
    ["an added instruction", (k) => k.instructions.push("WORKDIR /app")],
    ["a removed instruction", (k) => k.instructions.pop()],
    ["instruction whitespace", (k) => (k.instructions[0] = "COPY context  /app")],
    ["file path", (k) => (k.files[0]!.path = "context/requirements-dev.txt")],
    ["file type", (k) => (k.files[2]!.type = "file")],
    ["file mode", (k) => (k.files[0]!.mode = 0o755)],
    ["file mode setuid bit", (k) => (k.files[0]!.mode = 0o4644)],
    ["file uid", (k) => (k.files[0]!.uid = 1001)],
    ["file gid", (k) => (k.files[0]!.gid = 1001)],
    ["file digest", (k) => (k.files[0]!.digest = "sha256:" + "12".repeat(32))],
    ["directory digest empty vs not", (k) => (k.files[1]!.digest = "x")],
    [
      "an added file",
      (k) =>
        k.files.push({
          path: "context/new",
          type: "file",
          mode: 0o644,
          uid: 0,
          gid: 0,
          digest: "sha256:" + "55".repeat(32),
        }),
    ],
    ["a removed file", (k) => k.files.pop()],
    ["build arg value", (k) => (k.buildArgs[0] = ["PYTHON", "3.13"])],
    ["build arg name", (k) => (k.buildArgs[0] = ["PY", "3.11"])],
    ["an added build arg", (k) => k.buildArgs.push(["NEW", ""])],
    ["a removed build arg", (k) => k.buildArgs.pop()],
    ["secret name", (k) => (k.secretNames[0] = "TOKEN2")],
    ["an added secret name", (k) => k.secretNames.push("OTHER")],
    ["a removed secret name", (k) => k.secretNames.pop()],
    ["extra value", (k) => (k.extra[0] = ["env.FOO", "baz"])],
    ["extra name", (k) => (k.extra[0] = ["env.FOO2", "bar"])],
    ["an added extra", (k) => k.extra.push(["function.args", "[]"])],
    ["a removed extra", (k) => k.extra.pop()],
  ];
  for (const [name, mutate] of variants) {
    test(`changing ${name} changes the key`, () => {
      const k = clone(base);
      mutate(k);
      assert.notEqual(stepKey(k), baseKey());
    });
  }

  test("all single-field variants give pairwise distinct keys", () => {
    const keys = new Set<string>([baseKey()]);
    for (const [, mutate] of variants) {
      const k = clone(base);
      mutate(k);
      keys.add(stepKey(k));
    }
    assert.equal(keys.size, variants.length + 1);
  });

  test('parent null and parent "null" differ (JSON encoding, not string interpolation)', () => {
    assert.notEqual(stepKey({ ...MINIMAL, parent: null }), stepKey({ ...MINIMAL, parent: "null" }));
  });

  test("field boundaries cannot be forged: an instruction containing a newline and 'ins' differs from two instructions", () => {
    const one = stepKey({ ...MINIMAL, instructions: ['RUN a"\nins "RUN b'] });
    const two = stepKey({ ...MINIMAL, instructions: ["RUN a", "RUN b"] });
    assert.notEqual(one, two);
  });

  test("the same string in different sections gives different keys (build arg vs extra)", () => {
    assert.notEqual(stepKey({ ...MINIMAL, buildArgs: [["A", "1"]] }), stepKey({ ...MINIMAL, extra: [["A", "1"]] }));
  });

  test("a secret name is not the same as a build arg of that name", () => {
    assert.notEqual(stepKey({ ...MINIMAL, secretNames: ["A"] }), stepKey({ ...MINIMAL, buildArgs: [["A", ""]] }));
  });

  test("file mode 0o644 and 644 (decimal) differ", () => {
    const f = (mode: number): FileInput => ({ path: "c/f", type: "file", mode, uid: 0, gid: 0, digest: "d" });
    assert.notEqual(stepKey({ ...MINIMAL, files: [f(0o644)] }), stepKey({ ...MINIMAL, files: [f(644)] }));
  });
});

describe("order-insensitive and order-sensitive parts", () => {
  before(async () => {
    await initKeys();
  });

  test("the order of files does not change the key", () => {
    const k = clone(FULL);
    k.files = shuffled(k.files);
    assert.notDeepEqual(k.files, FULL.files);
    assert.equal(stepKey(k), stepKey(FULL));
    assert.equal(encodeKeyInputs(k), encodeKeyInputs(FULL));
  });

  test("the order of unicode file paths does not change the key", () => {
    const k = clone(UNICODE);
    k.files.reverse();
    assert.equal(stepKey(k), stepKey(UNICODE));
  });

  test("the order of build args does not change the key", () => {
    const k = clone(FULL);
    k.buildArgs.reverse();
    assert.equal(stepKey(k), stepKey(FULL));
  });

  test("the order of secret names does not change the key", () => {
    const k = clone(FULL);
    k.secretNames.reverse();
    assert.equal(stepKey(k), stepKey(FULL));
  });

  test("duplicate secret names do not change the key", () => {
    const k = clone(FULL);
    k.secretNames = ["TOKEN", "API_KEY", "TOKEN", "API_KEY", "TOKEN"];
    assert.equal(stepKey(k), stepKey(FULL));
    assert.equal(encodeKeyInputs(k), encodeKeyInputs(FULL));
  });

  test("the order of extra entries does not change the key", () => {
    const k = clone(FULL);
    k.extra.reverse();
    assert.equal(stepKey(k), stepKey(FULL));
    const q = clone(QUOTING);
    q.extra.reverse();
    assert.equal(stepKey(q), stepKey(QUOTING));
  });

  test("all set-like parts shuffled at once still give the same key", () => {
    const k = clone(FULL);
    k.files = shuffled(k.files);
    k.buildArgs.reverse();
    k.secretNames = [...k.secretNames.reverse(), ...k.secretNames];
    k.extra.reverse();
    assert.equal(stepKey(k), "aa349516ffe8fb03609c68f4602fba29");
  });

  test("instruction order does change the key", () => {
    const k = clone(FULL);
    k.instructions.reverse();
    assert.notEqual(stepKey(k), stepKey(FULL));
  });

  test("a repeated instruction changes the key (instructions are a list, not a set)", () => {
    const k = clone(FULL);
    k.instructions.push(k.instructions[1]!);
    assert.notEqual(stepKey(k), stepKey(FULL));
  });

  test("sorting uses code units, deterministically, regardless of locale", () => {
    const files: FileInput[] = ["c/b", "c/B", "c/a", "c/é", "c/z", "c/😀", "c/日"].map((p) => ({
      path: p,
      type: "file",
      mode: 0o644,
      uid: 0,
      gid: 0,
      digest: "",
    }));
    const enc = encodeKeyInputs({ ...MINIMAL, files });
    const order = enc
      .split("\n")
      .filter((l) => l.startsWith("file "))
      .map((l) => (JSON.parse(l.slice(5)) as string[])[0]);
    assert.deepEqual(order, ["c/B", "c/a", "c/b", "c/z", "c/é", "c/日", "c/😀"]);
  });
});
