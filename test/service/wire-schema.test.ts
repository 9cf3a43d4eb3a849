// The wire schema on its own (no server): the fast path for entry lists gives the schema's answers, and refused
// requests get messages in the service's words, naming the field.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseBuildRequest } from "../../src/service/wire/decode.js";
import { isValidEntry } from "../../src/service/wire/entries.js";
import { PARSE_OPTIONS } from "../../src/service/wire/fields.js";
import { WIRE_FORMAT, WireError } from "../../src/service/wire/limits.js";
import { EntrySchema } from "../../src/service/wire/schema.js";

const DIGEST = `sha256:${"a".repeat(64)}`;

describe("entries: the fast path and the schema agree", () => {
  const valid: Record<string, unknown>[] = [
    { path: "a", type: "dir", mode: 0o755, uid: 0, gid: 0 },
    { path: "a/b.txt", type: "file", mode: 0o4755, uid: 1000, gid: 0xfffffffe, size: 0, digest: DIGEST },
    { path: "a/l", type: "symlink", mode: 0o777, uid: 0, gid: 0, target: "../x" },
    { path: "é/ü n", type: "file", mode: 0, uid: 0, gid: 0, size: Number.MAX_SAFE_INTEGER, digest: DIGEST },
    { path: "t", type: "file", mode: 0o644, uid: 0, gid: 0, size: 1, digest: DIGEST, mtimeMs: 1_600_000_000_123.456 },
  ];
  /** One change each: a field removed, set to a wrong value, or added. */
  const changes: [string, unknown][] = [
    ["path", undefined],
    ["path", ""],
    ["path", "/abs"],
    ["path", "a/../b"],
    ["path", "a//b"],
    ["path", "./a"],
    ["path", "a/."],
    ["path", "a\0b"],
    ["path", "x".repeat(4097)],
    ["path", 3],
    ["type", undefined],
    ["type", "socket"],
    ["type", 1],
    ["mode", undefined],
    ["mode", -1],
    ["mode", 0o10000],
    ["mode", 1.5],
    ["mode", "644"],
    ["uid", undefined],
    ["uid", -1],
    ["uid", 0xffffffff],
    ["gid", 0x100000000],
    ["gid", null],
    ["size", undefined],
    ["size", -1],
    ["size", 2 ** 53],
    ["size", "1"],
    ["digest", undefined],
    ["digest", "sha256:abc"],
    ["digest", DIGEST.toUpperCase()],
    ["digest", `md5:${"a".repeat(32)}`],
    ["target", undefined],
    ["target", ""],
    ["target", "x\0"],
    ["target", "t"],
    ["target", 7],
    ["mtimeMs", undefined],
    ["mtimeMs", 0],
    ["mtimeMs", 0o77777777777 * 1000],
    ["mtimeMs", 0o77777777777 * 1000 + 1],
    ["mtimeMs", -1],
    ["mtimeMs", Number.NaN],
    ["mtimeMs", Number.POSITIVE_INFINITY],
    ["mtimeMs", "1600000000000"],
    ["mtimeMs", null],
    ["extra", 1],
    ["__proto__", 1],
  ];
  test("on valid entries and on every one-field change of them", () => {
    let checked = 0;
    for (const e of valid) {
      assert.equal(isValidEntry(e), true, JSON.stringify(e));
      assert.equal(EntrySchema.safeParse(e, PARSE_OPTIONS).success, true, JSON.stringify(e));
      for (const [k, v] of changes) {
        const changed: Record<string, unknown> = JSON.parse(JSON.stringify(e));
        if (v === undefined) delete changed[k];
        else changed[k] = v;
        const schema = EntrySchema.safeParse(changed, PARSE_OPTIONS).success;
        assert.equal(
          isValidEntry(changed),
          schema,
          `${JSON.stringify(changed)}: fast path ${!schema}, schema ${schema}`,
        );
        checked++;
      }
    }
    for (const v of [null, [], "x", 1, {}]) assert.equal(isValidEntry(v), EntrySchema.safeParse(v).success);
    assert.ok(checked > 100);
  });

  test("a long list is refused at its first bad entry, in the schema's words", () => {
    const entries = Array.from({ length: 5000 }, (_, i) => ({
      path: `f${i}`,
      type: "file",
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 1,
      digest: DIGEST,
    }));
    entries[4321] = { ...entries[4321]!, digest: "sha256:nope" };
    const req = {
      format: WIRE_FORMAT,
      builderVersion: "2026.11",
      steps: [
        {
          method: "fromScratch",
          description: "x",
          base: { kind: "scratch" },
          instructions: [],
          inputs: [{ kind: "dir", name: "ctx", entries }],
          secrets: [],
          env: {},
          forceBuild: false,
          extra: [],
        },
      ],
      deferred: [],
    };
    assert.throws(
      () => parseBuildRequest(req),
      (e: unknown) =>
        e instanceof WireError &&
        /^steps\[0\]\.inputs\[0\]\.entries\[4321\]\.digest: expected sha256:<64 lowercase hex digits>, got the string "sha256:nope"$/.test(
          e.message,
        ),
    );
  });
});

describe("messages name the field, in the service's words", () => {
  const request = (step: Record<string, unknown>) => ({
    format: WIRE_FORMAT,
    builderVersion: "2026.11",
    steps: [
      {
        method: "fromScratch",
        description: "x",
        base: { kind: "scratch" },
        instructions: [],
        inputs: [],
        secrets: [],
        env: {},
        forceBuild: false,
        extra: [],
        ...step,
      },
    ],
    deferred: [],
  });
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { base: { kind: "registry", ref: "r", login: "ldap" } },
      /^steps\[0\]\.base\.login: expected one of registry, ecr, gcp, got the string "ldap"$/,
    ],
    [
      { base: { kind: "registry", ref: "r", password: "x" } },
      /^steps\[0\]\.base: unknown field "password" \(allowed: kind, ref, insecure, login, gcpMode\)$/,
    ],
    [
      { base: { kind: "git" } },
      /^steps\[0\]\.base\.kind: expected one of scratch, debian, registry, image, got the string "git"$/,
    ],
    [{ env: { "A-B": "1" } }, /^steps\[0\]\.env: "A-B" is not a valid variable name$/],
    [{ env: { A: 1 } }, /^steps\[0\]\.env\.A: expected a string, got number 1$/],
    [{ description: "a\0b" }, /^steps\[0\]\.description: contains a NUL character$/],
    [{ timeoutMs: 0 }, /^steps\[0\]\.timeoutMs: expected an integer from 1 to 604800000, got number 0$/],
    [{ instructions: [{ op: "RUN", command: 7 }] }, /^steps\[0\]\.instructions\[0\]\.command: /],
    [{ instructions: [{ op: "ENV", vars: [["A", "1", "2"]] }] }, /^steps\[0\]\.instructions\[0\]\.vars\[0\]: /],
    [{ secrets: ["A", "A"] }, /^steps\[0\]\.secrets: a secret name is listed twice$/],
    [
      { instructions: [{ op: "RUN", command: "true", hostname: "a b" }] },
      /^steps\[0\]\.instructions\[0\]\.hostname: a hostname is dot-separated labels/,
    ],
  ];
  for (const [step, message] of cases) {
    test(`${JSON.stringify(step)} → ${message.source}`, () => {
      assert.throws(
        () => parseBuildRequest(request(step)),
        (e: unknown) => e instanceof WireError && message.test(e.message),
      );
    });
  }
  test("a request whose body is not an object", () => {
    assert.throws(() => parseBuildRequest([]), /^WireError: request: expected an object, got an array$/);
  });
});
