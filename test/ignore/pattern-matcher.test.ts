import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PatternMatcher, parseIgnoreFile } from "../../src/ignore/pattern-matcher.js";
import { InvalidDefinitionError } from "../../src/errors.js";

interface MatchCase {
  patterns: string[];
  path: string;
  matches: boolean;
  error?: boolean;
  source?: string;
  comment?: string;
}
interface IgnoreFileCase {
  text: string;
  patterns: string[];
  source?: string;
}
interface Fixture {
  note: string;
  cases: MatchCase[];
  ignoreFileCases: IgnoreFileCase[];
}

function loadFixture(): Fixture {
  // Works from both test/ignore (sources) and dist/test/ignore (compiled).
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, "fixtures", "ignore", "patternmatcher-cases.json");
    if (existsSync(candidate)) return JSON.parse(readFileSync(candidate, "utf8")) as Fixture;
    const up = dirname(dir);
    if (up === dir) throw new Error("fixtures/ignore/patternmatcher-cases.json not found above " + import.meta.url);
    dir = up;
  }
}

const fixture = loadFixture();

function m(patterns: string[], path: string): boolean {
  return PatternMatcher.parse(patterns).matches(path);
}

describe("upstream table (fixtures/ignore/patternmatcher-cases.json)", () => {
  test("fixture names its upstream source", () => {
    assert.match(fixture.note, /moby\/patternmatcher/);
    assert.match(fixture.note, /[0-9a-f]{40}/);
    assert.ok(fixture.cases.length > 100, `only ${fixture.cases.length} cases`);
  });

  for (const [i, c] of fixture.cases.entries()) {
    const name = `#${i} ${JSON.stringify(c.patterns)} ${JSON.stringify(c.path)} -> ${c.error ? "error" : c.matches}`;
    test(name, () => {
      if (c.error) {
        assert.throws(() => PatternMatcher.parse(c.patterns), InvalidDefinitionError);
        return;
      }
      assert.equal(m(c.patterns, c.path), c.matches, c.source);
    });
  }

  for (const [i, c] of fixture.ignoreFileCases.entries()) {
    test(`ignore file #${i}`, () => {
      assert.deepEqual(parseIgnoreFile(c.text), c.patterns);
    });
  }
});

describe("parent directory matching", () => {
  test("a directory pattern ignores everything below it", () => {
    assert.equal(m(["node_modules"], "node_modules"), true);
    assert.equal(m(["node_modules"], "node_modules/a/b/c.js"), true);
    assert.equal(m(["node_modules"], "src/node_modules/x"), false, "not recursive without **");
    assert.equal(m(["node_modules"], "node_modules2/x"), false);
  });

  test("a multi-segment pattern matches at its own depth and below", () => {
    assert.equal(m(["a/b"], "a/b/c/d"), true);
    assert.equal(m(["a/b"], "a"), false);
    assert.equal(m(["a/b"], "x/a/b"), false);
    assert.equal(m(["*/tmp"], "x/tmp/y"), true);
    assert.equal(m(["*/tmp"], "x/y/tmp"), false);
  });

  test("a trailing slash does not restrict the pattern to directories", () => {
    assert.equal(m(["build/"], "build"), true);
    assert.equal(m(["build/"], "build/out.o"), true);
  });

  test("a wildcard that matches a parent name ignores the subtree", () => {
    assert.equal(m(["a*"], "ab/c"), true);
    assert.equal(m(["*.d"], "conf.d/x.conf"), true);
  });
});

describe("exclusions", () => {
  test("re-include a file under an excluded directory", () => {
    const pm = PatternMatcher.parse(["build", "!build/keep.txt"]);
    assert.equal(pm.hasExclusions, true);
    assert.equal(pm.matches("build"), true);
    assert.equal(pm.matches("build/other.o"), true);
    assert.equal(pm.matches("build/keep.txt"), false);
    assert.equal(pm.matches("build/sub/keep.txt"), true);
  });

  test("re-include a whole subdirectory, then exclude inside it again", () => {
    const pm = PatternMatcher.parse(["**", "!src", "src/**/*.log"]);
    assert.equal(pm.matches("README.md"), true);
    assert.equal(pm.matches("src"), false);
    assert.equal(pm.matches("src/main.ts"), false);
    assert.equal(pm.matches("src/deep/dir/main.ts"), false);
    assert.equal(pm.matches("src/deep/debug.log"), true);
  });

  test("the last matching pattern wins", () => {
    assert.equal(m(["!a", "a"], "a"), true, "an exclusion before the inclusion does nothing");
    assert.equal(m(["a", "!a"], "a"), false);
    assert.equal(m(["a", "!a", "a"], "a"), true);
    assert.equal(m(["*.md", "!README.md"], "README.md"), false);
    assert.equal(m(["*.md", "!README.md"], "CHANGES.md"), true);
    assert.equal(m(["!README.md"], "README.md"), false, "a lone exclusion ignores nothing");
  });

  test("hasExclusions is false without ! patterns", () => {
    assert.equal(PatternMatcher.parse(["a", "b/**"]).hasExclusions, false);
    assert.equal(PatternMatcher.parse([]).hasExclusions, false);
  });

  test("an escaped ! is a literal name, not an exclusion", () => {
    const pm = PatternMatcher.parse(["\\!important"]);
    assert.equal(pm.hasExclusions, false);
    assert.equal(pm.matches("!important"), true);
    assert.equal(pm.matches("important"), false);
  });
});

describe("**", () => {
  test("at the start: any depth, including the root level", () => {
    assert.equal(m(["**/*.pyc"], "a.pyc"), true);
    assert.equal(m(["**/*.pyc"], "x/y/z/a.pyc"), true);
    assert.equal(m(["**/*.pyc"], "x/y/a.py"), false);
    assert.equal(m(["**/__pycache__"], "pkg/mod/__pycache__/m.cpython-312.pyc"), true);
  });

  test("in the middle: zero or more segments", () => {
    assert.equal(m(["a/**/b"], "a/b"), true);
    assert.equal(m(["a/**/b"], "a/x/b"), true);
    assert.equal(m(["a/**/b"], "a/x/y/b"), true);
    assert.equal(m(["a/**/b"], "a/xb"), false);
    assert.equal(m(["a/**/b"], "ab"), false);
    assert.equal(m(["a/**/b/*.txt"], "a/1/2/b/c.txt"), true);
    assert.equal(m(["a/**/b/*.txt"], "a/1/2/b/c/d.txt"), false);
  });

  test("at the end: everything below, not the directory itself", () => {
    const pm = PatternMatcher.parse(["src/**"]);
    assert.equal(pm.matches("src"), false);
    assert.equal(pm.matches("src/a"), true);
    assert.equal(pm.matches("src/a/b/c"), true);
    assert.equal(pm.matches("srcx/a"), false);
  });

  test("alone: everything", () => {
    for (const p of ["**", "**/", "/**", "**/**"]) {
      assert.equal(m([p], "a"), true, p);
      assert.equal(m([p], "a/b/c"), true, p);
    }
  });

  test("upstream's suffix shortcut: **name matches any path ending in name", () => {
    assert.equal(m(["**file"], "file"), true);
    assert.equal(m(["**file"], "dir/file"), true);
    assert.equal(m(["**file"], "dir/profile"), true);
    assert.equal(m(["**/file"], "dir/profile"), false);
  });
});

describe("wildcards, escapes and character classes", () => {
  test("* and ? stay within one segment", () => {
    assert.equal(m(["*.txt"], "a.txt"), true);
    assert.equal(m(["*.txt"], "dir/a.txt"), false);
    assert.equal(m(["?.txt"], "ab.txt"), false);
    assert.equal(m(["a?c"], "a/c"), false);
    assert.equal(m(["*"], ".hidden"), true, "* matches dotfiles");
  });

  test("regexp metacharacters are literal", () => {
    assert.equal(m(["a.b"], "axb"), false);
    assert.equal(m(["a+b"], "a+b"), true);
    assert.equal(m(["(x)|{y}$*"], "(x)|{y}$z"), true);
    assert.equal(m(["a^*"], "a^b"), true);
    assert.equal(m(["a]*"], "a]b"), true);
  });

  test("escapes", () => {
    assert.equal(m(["\\*"], "*"), true);
    assert.equal(m(["\\*"], "a"), false);
    assert.equal(m(["a\\?b"], "a?b"), true);
    assert.equal(m(["a\\?b"], "axb"), false);
    assert.equal(m(["\\[x]"], "[x]"), true);
    assert.equal(m(["\\[x]"], "x"), false);
    assert.equal(m(["a\\d"], "ad"), true, "\\d is a literal d, not a digit class");
    assert.equal(m(["a\\d"], "a1"), false);
    assert.equal(m(["a\\\\*"], "a\\b"), true);
    assert.equal(m(["**/\\*.log"], "x/*.log"), true);
    assert.equal(m(["**/\\*.log"], "x/a.log"), false);
  });

  test("character classes", () => {
    assert.equal(m(["[abc].txt"], "b.txt"), true);
    assert.equal(m(["[abc].txt"], "d.txt"), false);
    assert.equal(m(["[^abc].txt"], "d.txt"), true);
    assert.equal(m(["[^abc].txt"], "a.txt"), false);
    assert.equal(m(["[a-c][0-9]"], "b7"), true);
    assert.equal(m(["[a-c][0-9]"], "d7"), false);
    assert.equal(m(["[!a]"], "!"), true, "! inside a class is a member, not a negation (Go semantics)");
    assert.equal(m(["[!a]"], "b"), false);
    assert.equal(m(["[\\]]"], "]"), true);
    assert.equal(m(["[*?]"], "?"), true);
    assert.equal(m(["[*?]"], "x"), false);
    assert.equal(m(["[α-ω]x"], "λx"), true);
    assert.equal(m(["file[[]1].txt"], "file[1].txt"), true);
  });
});

describe("errors", () => {
  const bad: Array<[string, RegExp]> = [
    ["[", /unterminated character class/],
    ["a[b", /unterminated character class/],
    ["[^", /unterminated character class/],
    ["[z-a]", /reversed/],
    ["[Local-Only]/", /reversed/],
    ["[]a]", /unescaped "\]"/],
    ["[a-b-c]", /unescaped "-"/],
    ["foo\\", /lone "\\"/],
    ["!", /exclusion needs a pattern/],
    ["  !  ", /exclusion needs a pattern/],
    ["!/", /exclusion needs a pattern/],
  ];
  for (const [pattern, why] of bad) {
    test(`rejects ${JSON.stringify(pattern)}`, () => {
      assert.throws(
        () => PatternMatcher.parse(["ok", pattern]),
        (e: unknown) => {
          assert.ok(e instanceof InvalidDefinitionError);
          assert.equal(e.code, "INVALID_DEFINITION");
          assert.equal(e.fault, "user");
          assert.ok(e.message.includes(JSON.stringify(pattern)), e.message);
          assert.match(e.message, why);
          return true;
        },
      );
    });
  }
});

describe("normalisation", () => {
  test("patterns are trimmed, cleaned and stripped of leading and trailing slashes", () => {
    const pm = PatternMatcher.parse([" /foo/ ", "a//b/./c/../d", "!  ./x", "", "   ", "/", ".", "./", "../up", "**/"]);
    assert.deepEqual(pm.patterns, ["foo", "a/b/d", "!x", "../up", "**"]);
    assert.equal(pm.hasExclusions, true);
    assert.equal(pm.matches("foo/bar"), true);
    assert.equal(pm.matches("a/b/d"), true);
  });

  test("patterns are frozen", () => {
    const pm = PatternMatcher.parse(["a"]);
    assert.throws(() => (pm.patterns as string[]).push("b"));
  });

  test("paths are cleaned before matching; the root never matches", () => {
    assert.equal(m(["foo"], "./foo"), true);
    assert.equal(m(["foo"], "foo/"), true);
    assert.equal(m(["foo"], "x/../foo"), true);
    assert.equal(m(["foo/bar"], "foo//bar"), true);
    assert.equal(m(["**"], ""), false);
    assert.equal(m(["**"], "."), false);
    assert.equal(m(["*"], "./"), false);
  });

  test("no patterns match nothing", () => {
    assert.equal(m([], "a"), false);
    assert.deepEqual(PatternMatcher.parse([]).patterns, []);
  });
});

describe("parseIgnoreFile", () => {
  test("comments, blank lines, whitespace and line endings", () => {
    const text = [
      "\uFEFF# leading comment after a BOM",
      "node_modules",
      "  # indented: not a comment in Docker, a pattern",
      "",
      "   ",
      "\t*.log\t",
      "#!not-an-exclusion",
      "!keep.log",
      "/abs/path/",
      "./rel",
      "dir//sub/../x",
    ].join("\r\n");
    assert.deepEqual(parseIgnoreFile(text), [
      "node_modules",
      "# indented: not a comment in Docker, a pattern",
      "*.log",
      "!keep.log",
      "abs/path",
      "rel",
      "dir/x",
    ]);
  });

  test("old-Mac CR line endings and a missing trailing newline", () => {
    assert.deepEqual(parseIgnoreFile("a\rb\nc"), ["a", "b", "c"]);
  });

  test("empty text", () => {
    assert.deepEqual(parseIgnoreFile(""), []);
    assert.deepEqual(parseIgnoreFile("\n\n# only comments\n"), []);
  });

  test("its output feeds PatternMatcher.parse", () => {
    const pm = PatternMatcher.parse(parseIgnoreFile("# deps\nnode_modules\n*.log\n!important.log\n"));
    assert.equal(pm.matches("node_modules/x/y.js"), true);
    assert.equal(pm.matches("debug.log"), true);
    assert.equal(pm.matches("important.log"), false);
    assert.equal(pm.matches("src/index.ts"), false);
  });

  test("a bare ! survives parsing so that PatternMatcher.parse reports it", () => {
    const lines = parseIgnoreFile("a\n!\n");
    assert.deepEqual(lines, ["a", "!"]);
    assert.throws(() => PatternMatcher.parse(lines), InvalidDefinitionError);
  });
});

describe("robustness", () => {
  test("many ** in a row stay fast on long non-matching paths", () => {
    const pm = PatternMatcher.parse(["**/**/**/**/**/**/needle", "a/**/**/**/**/b/**/**/c"]);
    const deep = Array.from({ length: 60 }, (_, i) => `segment${i}`).join("/") + "/haystack";
    const t0 = performance.now();
    assert.equal(pm.matches(deep), false);
    assert.ok(performance.now() - t0 < 200, "no catastrophic backtracking");
    assert.equal(pm.matches("x/y/needle"), true);
    assert.equal(pm.matches("a/b/c"), true);
    assert.equal(pm.matches("a/1/2/b/3/c"), true);
  });
});
