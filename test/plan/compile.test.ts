import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { promises as fsp, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Image } from "../../src/sdk/image.js";
import { functionModule } from "../../src/sdk/function-module.js";
import { Secret, mergeSecrets } from "../../src/sdk/secret.js";
import { isMetadataOnly, render, shellQuote, type Instruction } from "../../src/plan/instructions.js";
import type { Plan } from "../../src/plan/step.js";
import { stepExtra } from "../../src/keys/step-extra.js";
import { InvalidDefinitionError, UnknownBuilderVersionError, StrataError } from "../../src/errors.js";
import {
  DEFAULT_BUILDER_VERSION,
  knownBuilderVersions,
  loadBuilderVersion,
  packageRoot,
} from "../../src/builder-version.js";

const BV = "2026.11";
const builderJson = JSON.parse(readFileSync(path.join(packageRoot(), "builders", `${BV}.json`), "utf8")) as {
  tools: { uv: { defaultVersion: string } };
  debian: { cmd: string[]; packages: string[]; mirror: string; variant: string };
};

/** Rendered instructions of step `i`. */
function rendered(plan: Plan, i: number): string[] {
  return plan.steps[i]!.instructions.map(render);
}

/** A step as plain JSON (drops undefined properties such as `network: undefined`). */
function plain<T>(x: T): T {
  return JSON.parse(JSON.stringify(x)) as T;
}

const base = () => Image.debianSlim();

async function tmpdir(): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), "strata-compile-test-"));
}

// ---- bases -----------------------------------------------------------------------------------------------------

describe("bases", () => {
  test("debianSlim defaults to Python 3.11 on bookworm, sorted packages, CMD from the builder version", () => {
    const p = base().plan(BV);
    assert.equal(p.builderVersion, BV);
    assert.equal(p.steps.length, 1);
    const s = p.steps[0]!;
    assert.equal(s.method, "debianSlim");
    assert.equal(s.description, "debianSlim python 3.11 (bookworm)");
    assert.deepEqual(s.base, {
      kind: "debian",
      python: "3.11",
      suite: "bookworm",
      mirror: builderJson.debian.mirror,
      variant: builderJson.debian.variant,
      packages: [...builderJson.debian.packages].sort(),
      cmd: builderJson.debian.cmd,
    });
    assert.deepEqual(rendered(p, 0), ['CMD ["python3"]']);
    // The recipe is keyed by the engine from the base it builds (src/keys/step-extra.ts), never from the plan's extras.
    assert.deepEqual(s.extra, []);
    assert.deepEqual(stepExtra(s), [["base", JSON.stringify(s.base)]]);
    assert.deepEqual(p.deferred, []);
  });

  test('debianSlim pythonVersion "3.13" selects trixie', () => {
    const s = Image.debianSlim({ pythonVersion: "3.13" }).plan(BV).steps[0]!;
    assert.equal(s.description, "debianSlim python 3.13 (trixie)");
    assert.equal((s.base as { suite: string }).suite, "trixie");
    assert.equal((s.base as { python: string }).python, "3.13");
  });

  test('debianSlim pythonVersion "3.12" fails naming the supported versions', () => {
    assert.throws(
      () => Image.debianSlim({ pythonVersion: "3.12" }).plan(BV),
      (e: unknown) => {
        assert.ok(e instanceof InvalidDefinitionError);
        assert.match(e.message, /Python 3\.12 is not supported/);
        assert.match(e.message, /supported: 3\.11, 3\.13/);
        assert.match(e.message, /2026\.11/);
        return true;
      },
    );
  });

  test("debianSlim rejects a non-string pythonVersion at definition time", () => {
    assert.throws(() => Image.debianSlim({ pythonVersion: 3.11 as unknown as string }), InvalidDefinitionError);
  });

  test("debianSlim forceBuild is carried on the base step", () => {
    assert.equal(Image.debianSlim({ forceBuild: true }).plan(BV).steps[0]!.forceBuild, true);
    assert.equal(Image.debianSlim().plan(BV).steps[0]!.forceBuild, false);
  });

  test("fromScratch is a base with no instructions", () => {
    const s = Image.fromScratch().plan(BV).steps[0]!;
    assert.deepEqual(plain(s), {
      method: "fromScratch",
      description: "fromScratch",
      base: { kind: "scratch" },
      instructions: [],
      inputs: [],
      secrets: [],
      env: {},
      forceBuild: false,
      extra: [],
    });
  });

  test("fromRegistry keeps the reference and insecure flag; empty references are rejected", () => {
    const s = Image.fromRegistry("127.0.0.1:5000/team/base:1", { insecure: true }).plan(BV).steps[0]!;
    assert.deepEqual(s.base, {
      kind: "registry",
      ref: "127.0.0.1:5000/team/base:1",
      insecure: true,
      login: "registry",
    });
    assert.equal(s.description, "fromRegistry 127.0.0.1:5000/team/base:1");
    assert.throws(() => Image.fromRegistry(""), InvalidDefinitionError);
    assert.throws(() => Image.fromRegistry("   "), InvalidDefinitionError);
  });

  test("fromId is an image base", () => {
    const s = Image.fromId("abcdef12").plan(BV).steps[0]!;
    assert.deepEqual(s.base, { kind: "image", imageId: "abcdef12" });
  });
});

// ---- builder versions ------------------------------------------------------------------------------------------

describe("builder versions", () => {
  test("an unknown builder version throws UnknownBuilderVersionError listing the known ones", () => {
    assert.throws(
      () => base().plan("1999.01"),
      (e: unknown) => {
        assert.ok(e instanceof UnknownBuilderVersionError);
        assert.ok(e instanceof StrataError);
        assert.equal(e.version, "1999.01");
        assert.ok(e.known.includes("2026.11"));
        assert.ok(e.known.includes("PREVIEW"));
        assert.match(e.message, /unknown builder version "1999\.01"/);
        assert.match(e.message, /2026\.11/);
        assert.match(e.message, /PREVIEW/);
        assert.match(e.message, /STRATA_BUILDER_VERSION/);
        assert.equal(e.fault, "user");
        return true;
      },
    );
  });

  test("knownBuilderVersions lists the json files in builders/, sorted", () => {
    const known = knownBuilderVersions();
    assert.ok(known.includes("2026.11") && known.includes("PREVIEW"));
    assert.deepEqual(known, [...known].sort());
  });

  test("plan() accepts a loaded BuilderVersion object as well as its name", () => {
    assert.deepEqual(plain(base().plan(loadBuilderVersion(BV))), plain(base().plan(BV)));
  });

  test("plan() without an argument uses STRATA_BUILDER_VERSION, else the default", () => {
    const saved = process.env.STRATA_BUILDER_VERSION;
    try {
      delete process.env.STRATA_BUILDER_VERSION;
      assert.equal(base().plan().builderVersion, DEFAULT_BUILDER_VERSION);
      process.env.STRATA_BUILDER_VERSION = "PREVIEW";
      assert.equal(base().plan().builderVersion, "PREVIEW");
      process.env.STRATA_BUILDER_VERSION = "nope";
      assert.throws(() => base().plan(), UnknownBuilderVersionError);
    } finally {
      if (saved === undefined) delete process.env.STRATA_BUILDER_VERSION;
      else process.env.STRATA_BUILDER_VERSION = saved;
    }
  });
});

// ---- aptInstall ----------------------------------------------------------------------------------------------

describe("aptInstall", () => {
  test("aptInstall is apt-get update then apt-get install -y, in one step, package order kept", () => {
    const p = base().aptInstall("jq", "curl").plan(BV);
    assert.equal(p.steps.length, 2);
    assert.deepEqual(rendered(p, 1), ["RUN apt-get update", "RUN apt-get install -y jq curl"]);
    assert.equal(p.steps[1]!.method, "aptInstall");
    assert.equal(p.steps[1]!.description, "aptInstall jq curl");
    assert.deepEqual(p.steps[1]!.inputs, []);
    assert.deepEqual(p.steps[1]!.extra, []);
  });

  test("aptInstall shell-quotes package words", () => {
    const p = base().aptInstall("it's", "a b", "", "$HOME", "pkg=1.0~x", "lib+foo:amd64").plan(BV);
    assert.deepEqual(rendered(p, 1), [
      "RUN apt-get update",
      `RUN apt-get install -y 'it'"'"'s' 'a b' '' '$HOME' 'pkg=1.0~x' lib+foo:amd64`,
    ]);
  });

  test("aptInstall flattens arrays and accepts a trailing params object", () => {
    const a = base().aptInstall(["jq", "curl"], "git", { network: "none" }).plan(BV);
    assert.deepEqual(rendered(a, 1), [
      "RUN --network=none apt-get update",
      "RUN --network=none apt-get install -y jq curl git",
    ]);
  });

  test('aptInstall network "host" is rendered (and keyed): it is not the default sandboxed network', () => {
    const p = base().aptInstall("jq", { network: "host" }).plan(BV);
    assert.deepEqual(rendered(p, 1), ["RUN --network=host apt-get update", "RUN --network=host apt-get install -y jq"]);
    assert.deepEqual(rendered(base().aptInstall("jq").plan(BV), 1), [
      "RUN apt-get update",
      "RUN apt-get install -y jq",
    ]);
  });

  test("aptInstall timeout is converted to milliseconds", () => {
    assert.equal(base().aptInstall("jq", { timeout: 1.5 }).plan(BV).steps[1]!.timeoutMs, 1500);
    assert.equal(base().aptInstall("jq").plan(BV).steps[1]!.timeoutMs, undefined);
  });

  test("a non-positive timeout is an InvalidDefinitionError (at the latest when planning)", () => {
    assert.throws(() => base().aptInstall("jq", { timeout: 0 }).plan(BV), /timeout must be a positive number/);
    assert.throws(() => base().runCommands("x", { timeout: -1 }).plan(BV), InvalidDefinitionError);
  });

  test("a package starting with - is rejected, pointing at extraOptions", () => {
    assert.throws(
      () => base().aptInstall("jq", "--no-install-recommends"),
      (e: unknown) => {
        assert.ok(e instanceof InvalidDefinitionError);
        assert.match(e.message, /aptInstall: "--no-install-recommends" looks like an option/);
        assert.match(e.message, /extraOptions/);
        return true;
      },
    );
  });

  test("non-string package arguments are rejected", () => {
    assert.throws(() => base().aptInstall("jq", 3 as unknown as string), /aptInstall: expected strings, got number/);
    assert.throws(() => base().aptInstall(null as unknown as string, "jq"), /expected strings/);
  });
});

// ---- pipInstall ----------------------------------------------------------------------------------------------

describe("pipInstall", () => {
  test("pipInstall sorts packages so order does not change the instructions", () => {
    const a = base().pipInstall("zeta", "alpha==1.0", "Mid").plan(BV);
    const b = base().pipInstall("Mid", "zeta", "alpha==1.0").plan(BV);
    assert.deepEqual(rendered(a, 1), ["RUN python -m pip install Mid alpha==1.0 zeta"]);
    assert.deepEqual(rendered(a, 1), rendered(b, 1));
    assert.equal(a.steps[1]!.description, "pipInstall Mid alpha==1.0 zeta");
  });

  test("pipInstall flags come in a fixed order: --find-links, --index-url, --extra-index-url, --pre, extraOptions", () => {
    const p = base()
      .pipInstall("b", "a", {
        extraOptions: "--no-deps -q",
        pre: true,
        extraIndexUrl: "https://y/simple",
        indexUrl: "https://x/simple",
        findLinks: "/w h",
      })
      .plan(BV);
    assert.deepEqual(rendered(p, 1), [
      "RUN python -m pip install a b --find-links '/w h' --index-url https://x/simple --extra-index-url https://y/simple --pre --no-deps -q",
    ]);
  });

  test("pipInstall quotes package specifiers with shell metacharacters", () => {
    const p = base().pipInstall("numpy>=1.26", "pandas<3", "requests[socks]").plan(BV);
    assert.deepEqual(rendered(p, 1), ["RUN python -m pip install 'numpy>=1.26' 'pandas<3' 'requests[socks]'"]);
  });

  test("pipInstall pre: false adds no flag; network none is rendered", () => {
    const p = base().pipInstall("a", { pre: false, network: "none" }).plan(BV);
    assert.deepEqual(rendered(p, 1), ["RUN --network=none python -m pip install a"]);
  });

  test("pipInstall rejects options passed as packages", () => {
    assert.throws(() => base().pipInstall("-U", "a"), /pipInstall: "-U" looks like an option/);
  });

  test("pipInstallFromRequirements copies the file and installs it with the same flags", () => {
    const p = base()
      .pipInstallFromRequirements("reqs/requirements.txt", { indexUrl: "https://x/simple", pre: true })
      .plan(BV);
    const s = p.steps[1]!;
    assert.deepEqual(rendered(p, 1), [
      "COPY requirements /.requirements.txt",
      "RUN python -m pip install -r /.requirements.txt --index-url https://x/simple --pre",
    ]);
    assert.deepEqual(s.inputs, [
      { kind: "file", name: "requirements", localPath: path.resolve("reqs/requirements.txt") },
    ]);
    assert.equal(s.description, "pipInstallFromRequirements reqs/requirements.txt");
  });

  test("pipInstallFromRequirements without params has no flags", () => {
    const p = base().pipInstallFromRequirements("/abs/requirements.txt").plan(BV);
    assert.deepEqual(rendered(p, 1), [
      "COPY requirements /.requirements.txt",
      "RUN python -m pip install -r /.requirements.txt",
    ]);
    assert.equal(p.steps[1]!.inputs[0]!.kind === "file" && p.steps[1]!.inputs[0]!.localPath, "/abs/requirements.txt");
  });
});

// ---- uvPipInstall --------------------------------------------------------------------------------------------

describe("uvPipInstall", () => {
  test("uvPipInstall mounts builder:uv read-only and records the builder's default uv version", () => {
    const p = base().uvPipInstall("b", "a").plan(BV);
    const s = p.steps[1]!;
    assert.deepEqual(rendered(p, 1), [
      "RUN --mount=type=bind,source=builder:uv,target=/.strata/uv,readonly /.strata/uv pip install --system --compile-bytecode a b",
    ]);
    assert.deepEqual((s.instructions[0] as Extract<Instruction, { op: "RUN" }>).mounts, [
      { type: "bind", source: "builder:uv", target: "/.strata/uv", readonly: true },
    ]);
    assert.deepEqual(s.extra, [["uvVersion", builderJson.tools.uv.defaultVersion]]);
    assert.equal(builderJson.tools.uv.defaultVersion, "0.9.5");
    assert.deepEqual(s.inputs, []);
    assert.equal(s.description, "uvPipInstall a b");
  });

  test("uvPipInstall flags: --find-links, --index-url, --extra-index-url, --prerelease allow, extraOptions", () => {
    const p = base()
      .uvPipInstall("a", {
        findLinks: "/wheels",
        indexUrl: "https://x/simple",
        extraIndexUrl: "https://y/simple",
        pre: true,
        extraOptions: "--no-deps",
        network: "none",
      })
      .plan(BV);
    assert.deepEqual(rendered(p, 1), [
      "RUN --mount=type=bind,source=builder:uv,target=/.strata/uv,readonly --network=none /.strata/uv pip install --system --compile-bytecode a --find-links /wheels --index-url https://x/simple --extra-index-url https://y/simple --prerelease allow --no-deps",
    ]);
  });

  test("uvPipInstall uvVersion overrides the default in the key extras", () => {
    assert.deepEqual(base().uvPipInstall("a", { uvVersion: "0.4.0" }).plan(BV).steps[1]!.extra, [
      ["uvVersion", "0.4.0"],
    ]);
  });

  test("uvPipInstall with requirements copies the file first and keys its content as an input", () => {
    const p = base().uvPipInstall("b", "a", { requirements: "req.txt" }).plan(BV);
    const s = p.steps[1]!;
    assert.deepEqual(rendered(p, 1), [
      "COPY requirements /.uv-requirements.txt",
      "RUN --mount=type=bind,source=builder:uv,target=/.strata/uv,readonly /.strata/uv pip install --system --compile-bytecode -r /.uv-requirements.txt a b",
    ]);
    assert.deepEqual(s.inputs, [{ kind: "file", name: "requirements", localPath: path.resolve("req.txt") }]);
    assert.equal(s.description, "uvPipInstall a b -r req.txt");
  });

  test("uvPipInstall with only a requirements file is a step, with no packages", () => {
    const p = base().uvPipInstall({ requirements: "/r.txt" }).plan(BV);
    assert.equal(p.steps.length, 2);
    assert.deepEqual(
      rendered(p, 1)[1],
      "RUN --mount=type=bind,source=builder:uv,target=/.strata/uv,readonly /.strata/uv pip install --system --compile-bytecode -r /.uv-requirements.txt",
    );
  });

  test("uvPipInstall sorts packages and rejects options", () => {
    assert.deepEqual(
      rendered(base().uvPipInstall("z", "a").plan(BV), 1),
      rendered(base().uvPipInstall("a", "z").plan(BV), 1),
    );
    assert.throws(() => base().uvPipInstall("--upgrade"), /uvPipInstall: "--upgrade" looks like an option/);
  });

  test("uvPipInstall follows the builder version's uv default (PREVIEW)", () => {
    const preview = loadBuilderVersion("PREVIEW");
    const steps = base().uvPipInstall("a").plan("PREVIEW").steps;
    assert.deepEqual(steps.find((st) => st.method === "uvPipInstall")!.extra, [
      ["uvVersion", preview.tools.uv.defaultVersion],
    ]);
  });
});

// ---- runCommands ---------------------------------------------------------------------------------------------

describe("runCommands", () => {
  test("runCommands gives one RUN per command, in one step", () => {
    const p = base().runCommands("echo 1", ["echo 2", "echo 3"], { network: "none" }).plan(BV);
    assert.equal(p.steps.length, 2);
    assert.deepEqual(rendered(p, 1), [
      "RUN --network=none echo 1",
      "RUN --network=none echo 2",
      "RUN --network=none echo 3",
    ]);
    assert.equal(p.steps[1]!.description, "runCommands echo 1 (+2 more)");
  });

  test("runCommands commands are not quoted or reordered", () => {
    const p = base().runCommands("z && a | b > 'c'", "a").plan(BV);
    assert.deepEqual(rendered(p, 1), ["RUN z && a | b > 'c'", "RUN a"]);
    assert.equal(p.steps[1]!.description, "runCommands z && a | b > 'c' (+1 more)");
  });

  test("a single runCommands command is the description", () => {
    assert.equal(base().runCommands("make").plan(BV).steps[1]!.description, "runCommands make");
  });

  test("step env and forceBuild are carried on the step, not in instructions", () => {
    const s = base()
      .runCommands("x", { env: { A: "1" }, forceBuild: true })
      .plan(BV).steps[1]!;
    assert.deepEqual(s.env, { A: "1" });
    assert.equal(s.forceBuild, true);
    assert.deepEqual(s.instructions.map(render), ["RUN x"]);
  });

  test("step env is copied: mutating the object passed in does not change the image", () => {
    const env = { A: "1" };
    const img = base().runCommands("x", { env });
    env.A = "2";
    assert.deepEqual(img.plan(BV).steps[1]!.env, { A: "1" });
  });

  test("pip params are snapshotted: mutating the params object afterwards does not change the image", () => {
    const params: { pre?: boolean } = {};
    const img = base().pipInstall("a", params);
    params.pre = true;
    assert.deepEqual(rendered(img.plan(BV), 1), ["RUN python -m pip install a"]);
  });
});

// ---- runFunction ---------------------------------------------------------------------------------------------

describe("runFunction", () => {
  // Functions the generated module calls with (file, text); each writes `<tag>:<text>` to `file`.
  const obj = {
    write(file: string, text: string) {
      return import("node:fs").then((fs) => fs.writeFileSync(file, "method:" + text));
    },
    async writeAsync(file: string, text: string) {
      const fs = await import("node:fs");
      fs.writeFileSync(file, "asyncMethod:" + text);
    },
    async async(file: string, text: string) {
      const fs = await import("node:fs");
      fs.writeFileSync(file, "methodNamedAsync:" + text);
    },
    café(file: string, text: string) {
      return import("node:fs").then((fs) => fs.writeFileSync(file, "unicodeMethod:" + text));
    },
    "my method"(file: string, text: string) {
      return import("node:fs").then((fs) => fs.writeFileSync(file, "stringMethod:" + text));
    },
    *gen(file: string, text: string) {
      yield 1;
      void file;
      void text;
    },
  };
  const asyncArrow = async (file: string, text: string) => {
    const fs = await import("node:fs");
    fs.writeFileSync(file, "asyncArrow:" + text);
  };
  async function namedAsync(file: string, text: string) {
    const fs = await import("node:fs");
    fs.writeFileSync(file, "named:" + text);
  }
  function namedSync(file: string, text: string) {
    return import("node:fs").then((fs) => fs.writeFileSync(file, "namedSync:" + text));
  }
  const anon = function (file: string, text: string) {
    return import("node:fs").then((fs) => fs.writeFileSync(file, "anonymous:" + text));
  };
  const plainArrow = (file: string, text: string) =>
    import("node:fs").then((fs) => fs.writeFileSync(file, "arrow:" + text));

  const AsyncFunction = (async () => undefined).constructor as new (body: string) => unknown;
  /** The module uses top-level await, so it parses as the body of an async function. */
  const parses = (module: string) => {
    new AsyncFunction(module);
    return true;
  };

  async function runModule(module: string, dir: string): Promise<void> {
    const modFile = path.join(dir, `function-${Math.random().toString(36).slice(2)}.mjs`);
    await fsp.writeFile(modFile, module);
    await import(pathToFileURL(modFile).href);
  }

  const cases: [string, (file: string, text: string) => unknown, string][] = [
    ["method shorthand", obj.write, "method"],
    ["async method shorthand", obj.writeAsync, "asyncMethod"],
    ["method named async", obj.async, "methodNamedAsync"],
    ["method with a non-ASCII name", obj.café, "unicodeMethod"],
    ["method with a string-literal name", obj["my method"], "stringMethod"],
    ["async arrow", asyncArrow, "asyncArrow"],
    ["named async function", namedAsync, "named"],
    ["named function", namedSync, "namedSync"],
    ["anonymous function expression", anon, "anonymous"],
    ["arrow with expression body", plainArrow, "arrow"],
  ];

  for (const [name, fn, tag] of cases) {
    test(`runFunction module for a ${name} parses and runs with its JSON arguments`, async () => {
      const dir = await tmpdir();
      try {
        const out = path.join(dir, "out.txt");
        const text = `hello "world" \\ ü $HOME \`x\` ${name}\n`;
        const p = base()
          .runFunction(fn, { args: [out, text] })
          .plan(BV);
        const s = p.steps[1]!;
        const input = s.inputs[0]!;
        assert.equal(input.kind, "inline");
        const module = (input as { content: string }).content;
        // The key covers the function's own text and the JSON of the arguments; the module holds both.
        const source = new Map(s.extra).get("function.source")!;
        assert.equal(source, fn.toString());
        assert.ok(module.includes(source), module);
        assert.equal(new Map(s.extra).get("function.args"), JSON.stringify([out, text]));
        assert.ok(module.includes(JSON.stringify(JSON.stringify([out, text]))), module);
        assert.ok(parses(module));
        // The module really runs the function with the arguments.
        await runModule(module, dir);
        assert.equal(await fsp.readFile(out, "utf8"), `${tag}:${text}`);
      } finally {
        await fsp.rm(dir, { recursive: true, force: true });
      }
    });
  }

  test("runFunction module for an async arrow with one unparenthesised parameter runs", async () => {
    const dir = await tmpdir();
    try {
      const out = path.join(dir, "out.txt");
      // Built from text so that compilation cannot add parentheses around the parameter.
      const src =
        "async args => { const fs = await import('node:fs'); const [f, t] = JSON.parse(args); fs.writeFileSync(f, 'single:' + t); }";
      const fn = new Function(`return (${src});`)() as (a: string) => Promise<void>;
      const { module } = functionModule(fn as (...a: never[]) => unknown, [JSON.stringify([out, "x"])]);
      await runModule(module, dir);
      assert.equal(await fsp.readFile(out, "utf8"), "single:x");
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  test("a generator method yields a parseable module", () => {
    const { module, source } = functionModule(obj.gen as (...a: never[]) => unknown, []);
    assert.equal(source, obj.gen.toString());
    assert.ok(parses(module));
  });

  test("runFunction compiles to one RUN of the builder's node with the function mounted read-only", () => {
    const p = base()
      .runFunction(namedAsync, { args: ["/x", "y"] })
      .plan(BV);
    const s = p.steps[1]!;
    assert.deepEqual(rendered(p, 1), [
      'RUN --mount=type=bind,source=builder:node,target=/.strata/node,readonly --mount=type=bind,source=function,target=/.strata/function.mjs,readonly ["/.strata/node/node","/.strata/function.mjs"]',
    ]);
    assert.equal(s.description, "runFunction namedAsync");
    assert.equal(s.inputs.length, 1);
    assert.deepEqual(
      { ...s.inputs[0]!, content: undefined },
      { kind: "inline", name: "function", content: undefined, mode: 0o444 },
    );
    assert.equal(s.timeoutMs, 3600 * 1000);
    assert.deepEqual(
      s.extra.map(([k]) => k),
      ["function.source", "function.args"],
    );
  });

  test("runFunction module text for an expression function is exactly the documented wrapper", () => {
    const fn = (a: number) => a + 1;
    const m = functionModule(fn as (...args: never[]) => unknown, [1, "two"]);
    assert.equal(m.argsJson, '[1,"two"]');
    assert.equal(m.source, fn.toString());
    assert.equal(
      m.module,
      `// Generated by Strata for runFunction.\nconst fn = (${fn.toString()});\nconst args = "[1,\\"two\\"]";\nawait fn(...JSON.parse(args));\n`,
    );
  });

  test("runFunction default args are [] and the anonymous description is used for unnamed functions", () => {
    const s = base()
      .runFunction(
        (
          () => () =>
            1
        )(),
        {},
      )
      .plan(BV).steps[1]!;
    assert.equal(new Map(s.extra).get("function.args"), "[]");
    assert.equal(s.description, "runFunction anonymous");
  });

  test("runFunction timeout defaults to 3600 s and can be set", () => {
    assert.equal(
      base()
        .runFunction(() => 1, { timeout: 5 })
        .plan(BV).steps[1]!.timeoutMs,
      5000,
    );
  });

  test("runFunction rejects non-functions, classes, bound and native functions, and non-JSON arguments", () => {
    assert.throws(() => base().runFunction("x" as unknown as () => void), /runFunction: expected a function/);
    assert.throws(() => base().runFunction(class A {} as unknown as () => void), /expected a function, got a class/);
    assert.throws(() => base().runFunction(namedAsync.bind(null)), /native or bound/);
    assert.throws(() => base().runFunction(Math.max), /native or bound/);
    assert.throws(
      () => base().runFunction((x: bigint) => x, { args: [1n] }),
      (e: unknown) => e instanceof InvalidDefinitionError && /JSON-serialisable/.test(e.message),
    );
    const cyc: Record<string, unknown> = {};
    cyc.self = cyc;
    assert.throws(() => base().runFunction((x: unknown) => x, { args: [cyc] }), /JSON-serialisable/);
  });

  test("the function's source and arguments change the step's extras", () => {
    const a = base()
      .runFunction((x: number) => x, { args: [1] })
      .plan(BV).steps[1]!.extra;
    const b = base()
      .runFunction((x: number) => x, { args: [2] })
      .plan(BV).steps[1]!.extra;
    const c = base()
      .runFunction((y: number) => y, { args: [1] })
      .plan(BV).steps[1]!.extra;
    assert.notDeepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test("runFunction arguments are captured at call time", () => {
    const args: [Record<string, number>] = [{ n: 1 }];
    const img = base().runFunction((o: Record<string, number>) => o, { args });
    args[0].n = 2;
    assert.equal(new Map(img.plan(BV).steps[1]!.extra).get("function.args"), '[{"n":1}]');
  });
});

// ---- metadata methods and render ----------------------------------------------------------------------------

describe("metadata instructions", () => {
  test("env, workdir, cmd, entrypoint, shell, user and label each add one metadata step", () => {
    const p = Image.fromScratch()
      .env({ A: "1", PATH_X: "/a:/b" })
      .workdir("/app")
      .cmd(["python3", "app.py"])
      .entrypoint(["/bin/tini", "--"])
      .shell(["/bin/bash", "-c"])
      .user("1000:1000")
      .label({ "org.opencontainers.image.title": "demo", "a b": 'say "hi"' })
      .plan(BV);
    assert.deepEqual(
      p.steps.slice(1).map((s) => [s.method, s.description, s.instructions.map(render)]),
      [
        ["env", "env A PATH_X", ["ENV A=1 PATH_X=/a:/b"]],
        ["workdir", "workdir /app", ["WORKDIR /app"]],
        ["cmd", 'cmd ["python3","app.py"]', ['CMD ["python3","app.py"]']],
        ["entrypoint", 'entrypoint ["/bin/tini","--"]', ['ENTRYPOINT ["/bin/tini","--"]']],
        ["shell", 'shell ["/bin/bash","-c"]', ['SHELL ["/bin/bash","-c"]']],
        ["user", "user 1000:1000", ["USER 1000:1000"]],
        [
          "label",
          "label org.opencontainers.image.title a b",
          ['LABEL org.opencontainers.image.title=demo "a b"="say \\"hi\\""'],
        ],
      ],
    );
    for (const s of p.steps.slice(1)) {
      assert.ok(s.instructions.every(isMetadataOnly));
      assert.deepEqual(s.inputs, []);
      assert.deepEqual(s.secrets, []);
    }
  });

  test("render() double-quotes ENV values with spaces, quotes, $, backticks, backslashes and newlines", () => {
    const ins: Instruction = {
      op: "ENV",
      vars: [
        ["PLAIN", "abc-1.2_x/y:z@%+=,"],
        ["SPACE", "x y"],
        ["QUOTE", 'say "hi"'],
        ["SINGLE", "it's"],
        ["DOLLAR", "$HOME/bin"],
        ["BACKTICK", "`id`"],
        ["BACKSLASH", "a\\b"],
        ["NEWLINE", "a\nb"],
        ["EMPTY", ""],
      ],
    };
    assert.equal(
      render(ins),
      'ENV PLAIN=abc-1.2_x/y:z@%+=, SPACE="x y" QUOTE="say \\"hi\\"" SINGLE="it\'s" DOLLAR="\\$HOME/bin" BACKTICK="\\`id\\`" BACKSLASH="a\\\\b" NEWLINE="a\\nb" EMPTY=""',
    );
  });

  test("env keeps insertion order of the object", () => {
    const p = Image.fromScratch().env({ Z: "1", A: "2" }).plan(BV);
    assert.deepEqual(rendered(p, 1), ["ENV Z=1 A=2"]);
  });

  test("env rejects invalid names and non-string values", () => {
    assert.throws(() => Image.fromScratch().env({ "1A": "x" }), /env: "1A" is not a valid variable name/);
    assert.throws(() => Image.fromScratch().env({ "A-B": "x" }), InvalidDefinitionError);
    assert.throws(
      () => Image.fromScratch().env({ A: 1 as unknown as string }),
      /env: value of A must be a string, got number/,
    );
  });

  test("a relative workdir is kept as written (resolved against the previous one when it runs, as Docker's)", () => {
    const plan = Image.fromScratch().workdir("/srv").workdir("app").plan(BV);
    assert.deepEqual(plan.steps[2]!.instructions, [{ op: "WORKDIR", path: "app" }]);
    assert.throws(() => Image.fromScratch().workdir(""), /workdir: expected a path/);
  });

  test("cmd, entrypoint, shell and user validate their arguments", () => {
    assert.throws(() => Image.fromScratch().cmd("python3" as unknown as string[]), /cmd: expected an array of strings/);
    assert.throws(
      () => Image.fromScratch().entrypoint([1] as unknown as string[]),
      /entrypoint: expected an array of strings/,
    );
    assert.throws(() => Image.fromScratch().shell([]), /shell: expected a non-empty array/);
    assert.throws(() => Image.fromScratch().user(""), /user: expected a user name or uid/);
  });

  test("render covers RUN (string and exec form), COPY, and network flags", () => {
    assert.equal(render({ op: "RUN", command: "echo hi" }), "RUN echo hi");
    assert.equal(render({ op: "RUN", command: ["a", "b c"] }), 'RUN ["a","b c"]');
    assert.equal(render({ op: "RUN", command: "x", network: "host" }), "RUN --network=host x");
    assert.equal(render({ op: "RUN", command: "x", network: "none" }), "RUN --network=none x");
    assert.equal(
      render({
        op: "RUN",
        command: "x",
        network: "none",
        mounts: [{ type: "bind", source: "s", target: "/t", readonly: true }],
      }),
      "RUN --mount=type=bind,source=s,target=/t,readonly --network=none x",
    );
    assert.equal(render({ op: "COPY", source: "context", dest: "/app" }), "COPY context /app");
    assert.equal(render({ op: "CMD", argv: [] }), "CMD []");
  });

  test("isMetadataOnly is false exactly for RUN and COPY", () => {
    assert.equal(isMetadataOnly({ op: "RUN", command: "x" }), false);
    assert.equal(isMetadataOnly({ op: "COPY", source: "a", dest: "/b" }), false);
    for (const ins of [
      { op: "ENV", vars: [] },
      { op: "WORKDIR", path: "/" },
      { op: "USER", user: "0" },
      { op: "ENTRYPOINT", argv: [] },
      { op: "CMD", argv: [] },
      { op: "SHELL", argv: ["sh"] },
      { op: "LABEL", labels: [] },
    ] as Instruction[]) {
      assert.equal(isMetadataOnly(ins), true, ins.op);
    }
  });

  test("shellQuote follows Python's shlex.quote", () => {
    assert.equal(shellQuote(""), "''");
    assert.equal(shellQuote("abc"), "abc");
    assert.equal(shellQuote("A-Z_a.z/0:9,@%+="), "A-Z_a.z/0:9,@%+=");
    assert.equal(shellQuote("a b"), "'a b'");
    assert.equal(shellQuote("it's"), `'it'"'"'s'`);
    assert.equal(shellQuote("$x"), "'$x'");
    assert.equal(shellQuote("a*"), "'a*'");
    assert.equal(shellQuote("é"), "'é'");
    assert.equal(shellQuote("a\nb"), "'a\nb'");
  });
});

// ---- immutability and empty calls --------------------------------------------------------------------------

describe("immutability", () => {
  test("calling a method on the same base twice yields independent chains", () => {
    const b = base();
    const x = b.aptInstall("jq");
    const y = b.aptInstall("curl");
    assert.notEqual(x, y);
    assert.deepEqual(rendered(x.plan(BV), 1), ["RUN apt-get update", "RUN apt-get install -y jq"]);
    assert.deepEqual(rendered(y.plan(BV), 1), ["RUN apt-get update", "RUN apt-get install -y curl"]);
  });

  test("the base's plan is unchanged by extending it", () => {
    const b = base().env({ A: "1" });
    const before = plain(b.plan(BV));
    const ext = b.pipInstall("x").runCommands("y").addLocalDir("/tmp", "/data");
    ext.plan(BV);
    assert.deepEqual(plain(b.plan(BV)), before);
    assert.equal(b.plan(BV).steps.length, 2);
    assert.deepEqual(b.plan(BV).deferred, []);
    assert.equal(ext.plan(BV).steps.length, 4);
    assert.equal(ext.plan(BV).deferred.length, 1);
  });

  test("extending an intermediate chain does not affect its other extensions", () => {
    const mid = base().aptInstall("jq");
    const a = mid.runCommands("a");
    const b = mid.runCommands("b");
    const a2 = a.runCommands("a2");
    assert.deepEqual(
      a.plan(BV).steps.map((s) => s.description),
      ["debianSlim python 3.11 (bookworm)", "aptInstall jq", "runCommands a"],
    );
    assert.deepEqual(
      b.plan(BV).steps.map((s) => s.description),
      ["debianSlim python 3.11 (bookworm)", "aptInstall jq", "runCommands b"],
    );
    assert.equal(a2.plan(BV).steps.length, 4);
  });

  test("plan() is deterministic: two plans of one Image are deep-equal", () => {
    const img = base()
      .aptInstall("jq")
      .pipInstall("a")
      .runFunction((x: number) => x, { args: [1] })
      .env({ A: "1" });
    assert.deepEqual(plain(img.plan(BV)), plain(img.plan(BV)));
  });

  test("plan() gives a fresh steps array each time", () => {
    const img = base().aptInstall("jq");
    const p1 = img.plan(BV);
    p1.steps.push(p1.steps[0]!);
    p1.deferred.push({ kind: "dir", localPath: "/x", remotePath: "/y", ignore: [] });
    assert.equal(img.plan(BV).steps.length, 2);
    assert.equal(img.plan(BV).deferred.length, 0);
  });

  test("mutating the argv arrays passed to cmd(), entrypoint() and shell() afterwards does not change the image", () => {
    const cmd = ["python3", "app.py"];
    const ep = ["/bin/tini"];
    const sh = ["/bin/sh", "-c"];
    const img = Image.fromScratch().cmd(cmd).entrypoint(ep).shell(sh);
    cmd.push("--evil");
    ep.push("--evil");
    sh[0] = "/evil";
    const p = img.plan(BV);
    assert.deepEqual(
      [...rendered(p, 1), ...rendered(p, 2), ...rendered(p, 3)],
      ['CMD ["python3","app.py"]', 'ENTRYPOINT ["/bin/tini"]', 'SHELL ["/bin/sh","-c"]'],
    );
  });

  test("mutating params objects afterwards does not change the image (secrets, ignore, runFunction, addLocal*)", () => {
    const secrets: Record<string, string> = { TOKEN: "one" };
    const ignore = ["*.pyc"];
    const fnParams: { timeout?: number; network?: "host" | "none" } = { timeout: 5 };
    const addParams: { copy?: boolean } = { copy: true };
    const img = base()
      .runCommands("x", { secrets })
      .addLocalDir("/src", "/app", { copy: true, ignore })
      .runFunction(() => 1, fnParams)
      .addLocalFile("/f", "/f", addParams);
    secrets.TOKEN = "two";
    ignore.push("node_modules");
    fnParams.timeout = 99;
    fnParams.network = "none";
    addParams.copy = false;
    const p = img.plan(BV);
    assert.deepEqual(p.steps[1]!.secrets, ["TOKEN"]);
    assert.deepEqual(img.secretValues(), { TOKEN: "one" });
    assert.deepEqual(p.steps[2]!.inputs[0], { kind: "dir", name: "context", localPath: "/src", ignore: ["*.pyc"] });
    assert.equal(p.steps[3]!.timeoutMs, 5000);
    assert.ok(!rendered(p, 3)[0]!.includes("--network=none"));
    assert.equal(p.steps.length, 5, "addLocalFile stays a copy step");
  });

  test("mutating one plan's instructions does not leak into the next plan()", () => {
    const img = Image.fromScratch().env({ A: "1" });
    const p1 = img.plan(BV);
    (p1.steps[1]!.instructions[0] as Extract<Instruction, { op: "ENV" }>).vars.push(["B", "2"]);
    assert.deepEqual(rendered(img.plan(BV), 1), ["ENV A=1"]);
  });

  test("env() and label() snapshot the object passed in", () => {
    const vars: Record<string, string> = { X: "1" };
    const labels: Record<string, string> = { l: "1" };
    const img = Image.fromScratch().env(vars).label(labels);
    vars.X = "2";
    vars.Y = "3";
    labels.l = "2";
    assert.deepEqual(rendered(img.plan(BV), 1), ["ENV X=1"]);
    assert.deepEqual(rendered(img.plan(BV), 2), ["LABEL l=1"]);
  });

  test("empty calls return the same Image", () => {
    const img = base();
    assert.equal(img.aptInstall(), img);
    assert.equal(img.aptInstall([]), img);
    assert.equal(img.aptInstall({ network: "none" }), img);
    assert.equal(img.pipInstall(), img);
    assert.equal(img.pipInstall([], { pre: true }), img);
    assert.equal(img.uvPipInstall(), img);
    assert.equal(img.uvPipInstall({ pre: true }), img);
    assert.equal(img.runCommands(), img);
    assert.equal(img.runCommands([]), img);
    assert.equal(img.env({}), img);
    assert.equal(img.label({}), img);
  });
});

// ---- local files -------------------------------------------------------------------------------------------

describe("addLocalDir / addLocalFile", () => {
  test("addLocalDir with copy: true is a COPY step keyed on the directory and ignore patterns", () => {
    const p = base()
      .addLocalDir("src", "/app", { copy: true, ignore: ["*.pyc", "node_modules"] })
      .plan(BV);
    const s = p.steps[1]!;
    assert.deepEqual(rendered(p, 1), ["COPY context /app"]);
    assert.deepEqual(s.inputs, [
      { kind: "dir", name: "context", localPath: path.resolve("src"), ignore: ["*.pyc", "node_modules"] },
    ]);
    assert.deepEqual(s.extra, [["ignore", JSON.stringify(["*.pyc", "node_modules"])]]);
    assert.equal(s.description, "addLocalDir src → /app");
    assert.deepEqual(p.deferred, []);
  });

  test("addLocalDir with copy: true and no ignore patterns has no extras", () => {
    assert.deepEqual(base().addLocalDir("/src", "/app", { copy: true }).plan(BV).steps[1]!.extra, []);
  });

  test("addLocalFile with copy: true copies to the remote path; a trailing / keeps the file name", () => {
    const a = base().addLocalFile("conf/app.toml", "/etc/app.toml", { copy: true }).plan(BV);
    assert.deepEqual(rendered(a, 1), ["COPY context /etc/app.toml"]);
    assert.deepEqual(a.steps[1]!.inputs, [{ kind: "file", name: "context", localPath: path.resolve("conf/app.toml") }]);
    const b = base().addLocalFile("conf/app.toml", "/etc/", { copy: true }).plan(BV);
    assert.deepEqual(rendered(b, 1), ["COPY context /etc/app.toml"]);
  });

  test("addLocalDir/addLocalFile without copy are deferred mounts, not steps", () => {
    const p = base()
      .addLocalDir("data", "/data", { ignore: ["*.tmp"] })
      .addLocalFile("x/run.sh", "/bin/")
      .plan(BV);
    assert.equal(p.steps.length, 1);
    assert.deepEqual(p.deferred, [
      { kind: "dir", localPath: path.resolve("data"), remotePath: "/data", ignore: ["*.tmp"] },
      { kind: "file", localPath: path.resolve("x/run.sh"), remotePath: "/bin/run.sh", ignore: [] },
    ]);
  });

  test("a build step after addLocalDir(copy: false) throws, saying to move it last or use copy: true", () => {
    const img = base().addLocalDir("./data", "/data");
    for (const next of [
      () => img.runCommands("ls"),
      () => img.aptInstall("jq"),
      () => img.pipInstall("x"),
      () => img.env({ A: "1" }),
      () => img.workdir("/x"),
      () => img.addLocalDir("/y", "/y", { copy: true }),
    ]) {
      assert.throws(next, (e: unknown) => {
        assert.ok(e instanceof InvalidDefinitionError);
        assert.match(e.message, /cannot come after addLocalDir\(".*\/data", "\/data"\) with copy: false/);
        assert.match(e.message, /Move the addLocal\* calls to the end of the chain/);
        assert.match(e.message, /copy: true/);
        return true;
      });
    }
  });

  test("the error names the method and the offending addLocalFile call", () => {
    const img = base().addLocalFile("/etc/hosts", "/hosts");
    assert.throws(
      () => img.runCommands("cat /hosts"),
      /^InvalidDefinitionError: runCommands\(\) cannot come after addLocalFile\("\/etc\/hosts", "\/hosts"\)/,
    );
  });

  test("empty calls after a deferred mount still return the same Image (nothing is added)", () => {
    const img = base().addLocalDir("/d", "/d");
    assert.equal(img.runCommands(), img);
    assert.equal(img.env({}), img);
  });

  test("relative remote paths are rejected", () => {
    assert.throws(() => base().addLocalDir("src", "app"), /addLocalDir: remote path "app" must be absolute/);
    assert.throws(
      () => base().addLocalFile("a.txt", "a.txt", { copy: true }),
      /addLocalFile: remote path "a.txt" must be absolute/,
    );
    assert.throws(() => base().addLocalDir("src", "./app", { copy: true }), InvalidDefinitionError);
  });
});

// ---- secrets -----------------------------------------------------------------------------------------------

describe("secrets", () => {
  test("step.secrets names all secrets given, sorted; the image keeps their values, merged", () => {
    const img = base().runCommands("x", { secrets: [Secret.fromObject({ TOKEN: "t0k3n" }), { API_KEY: "k3y" }] });
    assert.deepEqual(img.plan(BV).steps[1]!.secrets, ["API_KEY", "TOKEN"]);
    assert.deepEqual(img.secretValues(), { TOKEN: "t0k3n", API_KEY: "k3y" });
  });

  test("a single secret (not in an array) is accepted", () => {
    const img = base().pipInstall("a", { secrets: Secret.fromObject({ A: "1" }) });
    assert.deepEqual(img.plan(BV).steps[1]!.secrets, ["A"]);
    assert.deepEqual(img.secretValues(), { A: "1" });
  });

  test("steps of one image share a secret's value: a name given two values is an error naming it and both steps", () => {
    const one = base().runCommands("a", { secrets: { TOKEN: "v1" } });
    assert.deepEqual(
      one.runCommands("b", { secrets: { TOKEN: "v1" } }).secretValues(),
      { TOKEN: "v1" },
      "the same value twice is fine",
    );
    assert.throws(
      () => one.runCommands("b", { secrets: { TOKEN: "v2" } }),
      (e: unknown) =>
        e instanceof InvalidDefinitionError &&
        /secret TOKEN is given two different values/.test(e.message) &&
        e.message.includes('"runCommands a"') &&
        e.message.includes('"runCommands b"'),
    );
    // A registry base's login and a step's secret are one name space, as are a Dockerfile's mounts (stages included).
    assert.throws(
      () =>
        Image.fromRegistry("127.0.0.1:5000/x:1", { secret: { REGISTRY_PASSWORD: "p" } }).runCommands("c", {
          secrets: { REGISTRY_PASSWORD: "q" },
        }),
      /secret REGISTRY_PASSWORD/,
    );
  });

  test("later secrets override earlier ones of the same name", () => {
    assert.deepEqual(mergeSecrets([{ A: "1" }, Secret.fromObject({ A: "2", B: "3" })]), { A: "2", B: "3" });
    assert.deepEqual(mergeSecrets(undefined), {});
  });

  test("JSON.stringify of Secret objects never includes their values", () => {
    const secret = Secret.fromObject({ TOKEN: "super-secret-value", A: "another-value" });
    const json = JSON.stringify({ secret, list: [secret], nested: { s: secret } });
    assert.ok(!json.includes("super-secret-value"), json);
    assert.ok(!json.includes("another-value"), json);
    assert.deepEqual(JSON.parse(JSON.stringify(secret)), { names: ["A", "TOKEN"] });
    assert.equal(String(secret), "Secret(A, TOKEN)");
    assert.deepEqual(secret.names, ["A", "TOKEN"]);
    assert.deepEqual(Object.keys(secret), []);
  });

  test("a plan names the secrets only; their values come from secretValues()", () => {
    const img = base().runCommands("echo $TOKEN", { secrets: [Secret.fromObject({ TOKEN: "super-secret-value" })] });
    const p = img.plan(BV);
    assert.equal(img.secretValues().TOKEN, "super-secret-value");
    assert.ok(!JSON.stringify(p).includes("super-secret-value"));
    assert.match(JSON.stringify(p.steps[1]), /"secrets":\["TOKEN"\]/);
  });

  test("secret values are copies: Secret.values() cannot be used to change the secret", () => {
    const secret = Secret.fromObject({ A: "1" });
    const v = secret.values();
    v.A = "2";
    assert.deepEqual(secret.values(), { A: "1" });
  });

  test("secret names must be valid environment variable names and values strings", () => {
    assert.throws(
      () => Secret.fromObject({ "bad-name": "x" }),
      /secret name "bad-name" is not a valid environment variable name/,
    );
    assert.throws(() => Secret.fromObject({ A: 1 as unknown as string }), /secret A must be a string/);
    // Plain-object secrets are validated when the step is compiled (at the latest in plan()).
    assert.throws(
      () =>
        base()
          .runCommands("x", { secrets: { "1X": "v" } })
          .plan(BV),
      InvalidDefinitionError,
    );
  });

  test("Secret.fromLocalEnv reads the local environment and names a missing variable", () => {
    const name = `STRATA_TEST_SECRET_${process.pid}`;
    process.env[name] = "from-env";
    try {
      assert.deepEqual(Secret.fromLocalEnv([name]).values(), { [name]: "from-env" });
    } finally {
      delete process.env[name];
    }
    assert.throws(() => Secret.fromLocalEnv([name]), new RegExp(`${name} is not set in the local environment`));
  });
});
