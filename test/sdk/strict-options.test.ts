// Strict options (issue 13, item 5): an option a method does not take is an InvalidDefinitionError at definition
// time naming the option, the method and what Strata does instead; `~` expands in local paths; `ignore` takes a
// predicate; a relative workdir resolves like Docker's WORKDIR.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { InvalidDefinitionError } from "../../src/errors.js";
import { Image } from "../../src/sdk/image.js";
import { exactPattern, expandHome } from "../../src/sdk/local-paths.js";
import { PatternMatcher } from "../../src/ignore/pattern-matcher.js";

const BV = "2026.11";
const tmp = mkdtempSync(path.join(os.tmpdir(), "strata-strict-options-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Asserts `fn` throws an InvalidDefinitionError whose message matches every pattern. */
function rejects(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InvalidDefinitionError, `expected InvalidDefinitionError, got ${String(e)}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

// Options objects typed loosely, as a JavaScript (or type-stripped) definition passes them.
const loose = (o: Record<string, unknown>): any => o;

describe("unknown options are definition errors", () => {
  const base = () => Image.fromScratch();
  const df = path.join(tmp, "Dockerfile");
  writeFileSync(df, "FROM scratch\n");

  test("Modal's gpu names the method and says builds have no GPUs", () => {
    rejects(
      () => base().runCommands("true", loose({ gpu: "A100" })),
      /^runCommands: option "gpu"/,
      /build-time GPUs are not supported/,
    );
    rejects(() => base().pipInstall("x", loose({ gpu: "any" })), /^pipInstall: option "gpu"/);
    rejects(() => base().dockerfileCommands(["RUN true"], loose({ gpu: "T4" })), /^dockerfileCommands: option "gpu"/);
    rejects(() => Image.fromDockerfile(df, loose({ gpu: "T4" })), /^fromDockerfile: option "gpu"/);
    rejects(() => base().runFunction(() => 1, loose({ gpu: "T4" })), /^runFunction: option "gpu"/);
  });

  test("cloud, region, cpu, memory, kwargs, context_files say what Strata does instead", () => {
    rejects(() => base().runFunction(() => 1, loose({ cloud: "aws" })), /runFunction: option "cloud"/, /STRATA_SERVER/);
    rejects(() => base().runFunction(() => 1, loose({ region: "us-east" })), /option "region"/, /where it runs/);
    rejects(() => base().runFunction(() => 1, loose({ cpu: 4 })), /option "cpu"/, /operator/);
    rejects(() => base().runFunction(() => 1, loose({ memory: 1024 })), /option "memory"/);
    rejects(() => base().runFunction(() => 1, loose({ kwargs: { a: 1 } })), /option "kwargs"/, /args/);
    rejects(
      () => base().runCommands("x", loose({ network_file_systems: {} })),
      /option "network_file_systems"/,
      /cache mount/,
    );
    rejects(
      () => base().dockerfileCommands(["RUN x"], loose({ context_files: {} })),
      /option "context_files"/,
      /contextDir/,
    );
  });

  test("a typo gets a did-you-mean", () => {
    rejects(
      () => Image.debianSlim(loose({ pythonVerison: "3.11" })),
      /^debianSlim: unknown option "pythonVerison" \(did you mean pythonVersion\?\)/,
    );
    rejects(
      () => base().aptInstall("jq", loose({ forcebuild: true })),
      /aptInstall: unknown option "forcebuild" \(did you mean forceBuild\?\)/,
    );
    rejects(() => base().runCommands("x", loose({ secret: {} })), /did you mean secrets\?/);
    rejects(
      () => base().addLocalDir(tmp, "/x", loose({ ignored: [] })),
      /addLocalDir: unknown option "ignored" \(did you mean ignore\?\)/,
    );
  });

  test("Modal's snake_case spelling points to the camelCase one", () => {
    rejects(
      () => Image.debianSlim(loose({ python_version: "3.11" })),
      /debianSlim: unknown option "python_version": options are camelCase in Strata \(did you mean pythonVersion\?\)/,
    );
    rejects(() => base().pipInstall("x", loose({ index_url: "http://127.0.0.1/" })), /did you mean indexUrl\?/);
    rejects(
      () => Image.fromRegistry("127.0.0.1:5000/a:1", loose({ setup_dockerfile_commands: [] })),
      /did you mean setupDockerfileCommands\?/,
    );
  });

  test("an unrelated name lists what the method takes", () => {
    rejects(() => base().env({ A: "1" }, loose({ zzzzzz: 1 })), /^env: unknown option "zzzzzz"; env takes forceBuild$/);
  });

  test("pythonVersion outside debianSlim says how to get Python", () => {
    rejects(
      () => Image.fromRegistry("127.0.0.1:5000/a:1", loose({ pythonVersion: "3.11" })),
      /fromRegistry: option "pythonVersion"/,
      /addPython/,
    );
  });

  test("every method checks: bases, layer methods, local files, build", async () => {
    rejects(() => Image.fromScratch(loose({ gpu: "x" })), /^fromScratch:/);
    rejects(
      () => Image.fromAwsEcr("1.dkr.ecr.us-east-1.amazonaws.com/a:1", loose({ secret: {}, gpu: "x" })),
      /^fromAwsEcr:/,
    );
    rejects(
      () => Image.fromGcpArtifactRegistry("us-docker.pkg.dev/p/r/a:1", loose({ secret: {}, gpu: "x" })),
      /^fromGcpArtifactRegistry:/,
    );
    rejects(() => base().uvPipInstall("x", loose({ uv_version: "1" })), /^uvPipInstall:.*uvVersion/);
    rejects(
      () => base().pipInstallFromRequirements("r.txt", loose({ find_links: "x" })),
      /^pipInstallFromRequirements:.*findLinks/,
    );
    rejects(() => base().addLocalFile(df, "/x", loose({ ignore: [] })), /^addLocalFile: unknown option "ignore"/);
    await assert.rejects(base().build(loose({ gpu: "x" })), /^InvalidDefinitionError: build: option "gpu"/);
  });

  test("methods without options reject any (Modal's client, environmentName, force_build)", () => {
    rejects(() => Image.fromId("sha256:0123", loose({ client: {} })), /^fromId: option "client"/, /needs no client/);
    rejects(
      () => base().workdir("/app", loose({ force_build: true })),
      /^workdir: unknown option "force_build"; workdir takes no options$/,
    );
    rejects(() => base().cmd(["x"], loose({ gpu: "T4" })), /^cmd: option "gpu"/);
    for (const m of ["entrypoint", "shell"] as const)
      rejects(() => base()[m](["x"], loose({ x: 1 })), new RegExp(`^${m}: unknown option "x"`));
    rejects(() => base().user("app", loose({ x: 1 })), /^user:/);
    rejects(() => base().label({ a: "b" }, loose({ x: 1 })), /^label:/);
  });

  test("an option set to undefined counts as not given; known options still work", () => {
    assert.doesNotThrow(() => base().runCommands("x", loose({ gpu: undefined, forceBuild: false, timeout: 5 })));
    assert.doesNotThrow(() => Image.debianSlim({ pythonVersion: "3.11", forceBuild: true }));
  });
});

describe("~ expands to the home directory", () => {
  test("expandHome", () => {
    assert.equal(expandHome("~"), os.homedir());
    assert.equal(expandHome("~/a/b"), path.join(os.homedir(), "a/b"));
    assert.equal(expandHome("a/~/b"), "a/~/b");
    assert.equal(expandHome("~user/x"), "~user/x");
  });

  test("in addLocalDir, addLocalFile, pipInstallFromRequirements and uvPipInstall's requirements", () => {
    const home = os.homedir();
    const plan = Image.fromScratch()
      .addLocalDir("~/proj", "/p", { copy: true })
      .addLocalFile("~/f.txt", "/f", { copy: true })
      .pipInstallFromRequirements("~/req.txt")
      .uvPipInstall({ requirements: "~/uv.txt" })
      .addLocalDir("~/later", "/l")
      .plan(BV);
    const locals = plan.steps.flatMap((s) => s.inputs.map((i) => ("localPath" in i ? i.localPath : "")));
    assert.deepEqual(locals, [`${home}/proj`, `${home}/f.txt`, `${home}/req.txt`, `${home}/uv.txt`]);
    assert.equal(plan.deferred[0]!.localPath, `${home}/later`);
  });
});

describe("ignore takes a predicate", () => {
  const dir = path.join(tmp, "ctx");
  mkdirSync(path.join(dir, ".venv/lib"), { recursive: true });
  mkdirSync(path.join(dir, "src"), { recursive: true });
  writeFileSync(path.join(dir, ".venv/lib/big.so"), "x");
  writeFileSync(path.join(dir, "src/app.py"), "print(1)\n");
  writeFileSync(path.join(dir, "src/app.log"), "log\n");
  writeFileSync(path.join(dir, "odd [name]*.py"), "x\n");

  test("it sees relative paths, a directory before its contents, and a left-out directory is not walked", () => {
    const seen: string[] = [];
    const plan = Image.fromScratch()
      .addLocalDir(dir, "/app", {
        copy: true,
        ignore: (p) => {
          seen.push(p);
          return p === ".venv" || p.endsWith(".log");
        },
      })
      .plan(BV);
    assert.deepEqual(seen, [".venv", "odd [name]*.py", "src", "src/app.log", "src/app.py"]);
    const input = plan.steps[1]!.inputs[0]!;
    assert.equal(input.kind, "dir");
    assert.deepEqual(input.kind === "dir" ? input.ignore : [], [".venv", "src/app.log"]);
  });

  test("what it leaves out is keyed as exact patterns (a function's text is not: it cannot show its closure)", () => {
    const mk = (f: (p: string) => boolean) =>
      Image.fromScratch().addLocalDir(dir, "/app", { copy: true, ignore: f }).plan(BV).steps[1]!.extra;
    const logs = (p: string) => p.endsWith(".log");
    const sameResult = (p: string) => p === "src/app.log";
    assert.deepEqual(mk(logs), mk(sameResult), "same paths left out: same key input");
    assert.notDeepEqual(
      mk(logs),
      mk((p) => p === ".venv"),
    );
    assert.deepEqual(mk(logs), [["ignore", JSON.stringify(["src/app.log"])]]);
  });

  test("exact patterns match only their path, however odd its name", () => {
    const pat = exactPattern("odd [name]*.py");
    const m = PatternMatcher.parse([pat]);
    assert.ok(m.matches("odd [name]*.py"));
    assert.ok(!m.matches("odd n.py"));
    assert.equal(exactPattern("!x y"), "\\!x\\ y");
  });

  test("for deferred dirs, dockerfileCommands and fromDockerfile contexts too", () => {
    const pred = (p: string) => p === ".venv";
    assert.deepEqual(Image.fromScratch().addLocalDir(dir, "/a", { ignore: pred }).plan(BV).deferred[0]!.ignore, [
      ".venv",
    ]);
    const ctxRoot = (img: Image) => {
      const sel = img
        .plan(BV)
        .steps.flatMap((s) => s.inputs)
        .find((i) => i.kind === "select");
      return sel?.kind === "select" && sel.root.kind === "context" ? sel.root.ignore : undefined;
    };
    assert.deepEqual(
      ctxRoot(Image.fromScratch().dockerfileCommands(["COPY . /x"], { contextDir: dir, ignore: pred })),
      [".venv"],
    );
    writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY . /x\n");
    assert.deepEqual(ctxRoot(Image.fromDockerfile(path.join(dir, "Dockerfile"), { ignore: pred })), [".venv"]);
  });

  test("a predicate that throws, or a missing directory, is a definition error", () => {
    rejects(
      () =>
        Image.fromScratch().addLocalDir(dir, "/a", {
          ignore: () => {
            throw new Error("boom");
          },
        }),
      /addLocalDir: the ignore function threw for "\.venv": boom/,
    );
    rejects(
      () => Image.fromScratch().addLocalDir(path.join(tmp, "nope"), "/a", { ignore: () => false }),
      /addLocalDir: cannot read/,
    );
    rejects(
      () => Image.fromScratch().addLocalDir(dir, "/a", loose({ ignore: "x" })),
      /ignore must be a list of patterns/,
    );
  });
});
