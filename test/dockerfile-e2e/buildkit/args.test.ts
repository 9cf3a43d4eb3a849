// Ported from BuildKit frontend/dockerfile/dockerfile_args_test.go (see ../README.md for the table).
// Where BuildKit's Dockerfile builds busybox's name from args (`FROM busy$a2`, `FROM busybox:${tag}`), the loopback
// registry's host is written before it, so the args still make the name; `alpine` bases are busybox.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { buildkitHarness } from "./harness.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

/** `<registry>/library/` — busybox's repository is `${lib()}busybox`. */
const lib = () => `${bk.registryHost}/library/`;

describe("dockerfile_args_test.go", { concurrency: 4 }, () => {
  test("testGlobalArg", async () => {
    await bk.build({
      dockerfile: `\nARG tag=nosuchtag\nFROM ${lib()}busybox:\${tag}\n`,
      buildArgs: { tag: "latest" },
    });
  });

  test("testGlobalArgErrors", async () => {
    const dockerfile = '\nARG FOO=${FOO:?"custom error"}\nFROM busybox\n';
    const err = await bk.buildFails({ dockerfile });
    assert.match(err.message, /FOO: custom error/);
    await bk.build({ dockerfile, buildArgs: { FOO: "bar" } });
  });

  test("testArgDefaultExpansion", async () => {
    const dockerfile = '\nFROM scratch\nARG FOO\nARG BAR=${FOO:?"foo missing"}\n';
    const err = await bk.buildFails({ dockerfile });
    assert.match(err.message, /FOO: foo missing/);
    await bk.build({ dockerfile, buildArgs: { FOO: "123" } });
    await bk.build({ dockerfile, buildArgs: { BAR: "123" } });
  });

  test("testMultiArgs", async () => {
    const r = await bk.build({
      dockerfile:
        '\nARG a1="foo bar" a2=box\nARG a3="$a2-foo"\n' +
        `FROM ${lib()}busy$a2 AS build\n` +
        'ARG a3 a4="123 456" a1\nRUN echo -n "$a1:$a3:$a4" > /out\nFROM scratch\nCOPY --from=build /out .\n',
    });
    assert.equal(await r.readFile("/out"), "foo bar:box-foo:123 456");
  });

  test("testQuotedMetaArgs", async () => {
    const r = await bk.build({
      dockerfile:
        '\nARG a1="box"\nARG a2="$a1-foo"\n' +
        `FROM ${lib()}busy$a1 AS build\n` +
        'ARG a2\nARG a3="bar-$a2"\nRUN echo -n $a3 > /out\nFROM scratch\nCOPY --from=build /out .\n',
    });
    assert.equal(await r.readFile("/out"), "bar-box-foo");
  });

  test("testTargetStageNameArg", async () => {
    const dockerfile =
      '\nFROM busybox AS base\nWORKDIR /out\nRUN echo -n "value:$TARGETSTAGE" > /out/first\nARG TARGETSTAGE\n' +
      'RUN echo -n "value:$TARGETSTAGE" > /out/second\n\nFROM scratch AS foo\nCOPY --from=base /out/ /\n\n' +
      "FROM scratch\nCOPY --from=base /out/ /\n";
    let r = await bk.build({ dockerfile, target: "foo" });
    assert.equal(await r.readFile("/first"), "value:");
    assert.equal(await r.readFile("/second"), "value:foo");

    r = await bk.build({ dockerfile });
    assert.equal(await r.readFile("/first"), "value:");
    assert.equal(await r.readFile("/second"), "value:default");

    // stage name defined in Dockerfile but not passed in request
    r = await bk.build({ dockerfile: `${dockerfile}\n\n\tFROM scratch AS final\n\tCOPY --from=base /out/ /\n\t` });
    assert.equal(await r.readFile("/first"), "value:");
    assert.equal(await r.readFile("/second"), "value:final");
  });

  test("testBuiltinArgs", async () => {
    const dockerfile =
      "\nFROM busybox AS build\nARG FOO\nARG BAR\nARG BAZ=bazcontent\n" +
      "RUN echo -n $HTTP_PROXY::$NO_PROXY::$FOO::$BAR::$BAZ > /out\nFROM scratch\nCOPY --from=build /out /\n\n";
    let r = await bk.build({
      dockerfile,
      buildArgs: { FOO: "foocontents", http_proxy: "hpvalue", NO_PROXY: "npvalue" },
    });
    assert.equal(await r.readFile("/out"), "hpvalue::npvalue::foocontents::::bazcontent");

    // repeat with changed default args should match the old cache
    r = await bk.build({ dockerfile, buildArgs: { FOO: "foocontents", http_proxy: "hpvalue2" } });
    assert.equal(await r.readFile("/out"), "hpvalue::npvalue::foocontents::::bazcontent");

    // changing actual value invalidates cache
    r = await bk.build({ dockerfile, buildArgs: { FOO: "foocontents2", http_proxy: "hpvalue2" } });
    assert.equal(await r.readFile("/out"), "hpvalue2::::foocontents2::::bazcontent");
  });

  test("testDefaultEnvWithArgs", async () => {
    const dockerfile =
      "\nARG image=idlebox\n" +
      `FROM ${lib()}busy\${image#idle} AS build\n` +
      'ARG my_arg\nENV my_arg "my_arg=${my_arg:-def_val}"\nENV my_trimmed_arg "${my_arg%%e*}"\n' +
      "COPY myscript.sh myscript.sh\nRUN ./myscript.sh $my_arg $my_trimmed_arg\nFROM scratch\nCOPY --from=build /out /out\n";
    const files = { "myscript.sh": { content: "\n#!/usr/bin/env sh\necho -n $my_arg $* > /out\n", mode: 0o700 } };
    for (const [name, buildArgs, expected] of [
      ["nil", undefined, "my_arg=def_val my_arg=def_val my_arg=d"],
      ["empty", { my_arg: "" }, "my_arg=def_val my_arg=def_val my_arg=d"],
      ["override", { my_arg: "override" }, "my_arg=override my_arg=override my_arg=ov"],
    ] as const) {
      const r = await bk.build({ dockerfile, files, ...(buildArgs ? { buildArgs } : {}) });
      assert.equal(await r.readFile("/out"), expected, name);
    }
  });

  test("testEmptyStringArgInEnv", async () => {
    const r = await bk.build({
      dockerfile:
        "\nFROM busybox AS build\nARG FOO\nARG BAR=\nRUN env > env.txt\n\nFROM scratch\nCOPY --from=build env.txt .\n",
    });
    const env = (await r.readFile("/env.txt")) ?? "";
    assert.ok(env.includes("BAR="), env);
    assert.ok(!env.includes("FOO="), env);
  });

  test("testEnvEmptyFormatting", async () => {
    await bk.build({ dockerfile: "\nFROM busybox AS build\nENV myenv foo%sbar\nRUN [ \"$myenv\" = 'foo%sbar' ]\n" });
  });
});
