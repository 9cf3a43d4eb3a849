import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  processWord,
  processWords,
  reversePattern,
  reverseString,
  shellPatternToRegex,
  ShellLex,
} from "../../src/dockerfile/shell-lex.js";
import { ShellExpansionError } from "../../src/dockerfile/errors.js";
import { readFixture } from "./fixtures.js";

interface EnvVarCase {
  line: number;
  platform: string;
  input: string;
  expected?: string;
  error?: boolean;
}
interface WordsCase {
  line: number;
  input: string;
  env: string[];
  expected?: string[];
  error?: boolean;
}
interface MatchCase {
  input: string;
  env: Record<string, string>;
  expected?: string;
  error?: boolean;
  errorContains?: string;
  matched?: string[];
  unmatched?: string[];
  source?: string;
}

const envVar = readFixture<{ note: string; env: Record<string, string>; cases: EnvVarCase[] }>(
  "shell-envvar-cases.json",
);
const words = readFixture<{ note: string; cases: WordsCase[] }>("shell-words-cases.json");
const lex = readFixture<{
  note: string;
  cases: MatchCase[];
  patterns: {
    toRegex: { pattern: string; regex: string }[];
    invalid: string[];
    reverseString: [string, string][];
    reversePattern: [string, string][];
  };
}>("shell-lex-cases.json");

describe("BuildKit envVarTest (fixtures/dockerfile/shell-envvar-cases.json)", () => {
  test("fixture names its upstream source and has every row", () => {
    assert.match(envVar.note, /[0-9a-f]{40}/);
    assert.equal(envVar.cases.length, 230);
    assert.equal(envVar.cases.filter((c) => c.error).length, 36);
  });
  for (const c of envVar.cases) {
    if (c.platform === "W") continue; // Windows-only rows (case-insensitive names)
    test(`line ${c.line}: ${JSON.stringify(c.input)} -> ${c.error ? "error" : JSON.stringify(c.expected)}`, () => {
      if (c.error) {
        assert.throws(() => processWord(c.input, envVar.env), ShellExpansionError);
        return;
      }
      assert.equal(processWord(c.input, envVar.env).result, c.expected);
      // the same with a map, as the Go test does with ProcessWordWithMap
      assert.equal(processWord(c.input, new Map(Object.entries(envVar.env))).result, c.expected);
    });
  }
});

describe("BuildKit wordsTest (fixtures/dockerfile/shell-words-cases.json)", () => {
  test("fixture names its upstream source", () => {
    assert.match(words.note, /[0-9a-f]{40}/);
    assert.equal(words.cases.length, 24);
  });
  for (const c of words.cases) {
    test(`line ${c.line}: ${JSON.stringify(c.input)} -> ${c.error ? "error" : JSON.stringify(c.expected)}`, () => {
      if (c.error) {
        assert.throws(() => processWords(c.input, c.env), ShellExpansionError);
        return;
      }
      assert.deepEqual(processWords(c.input, c.env), c.expected);
    });
  }
});

describe("BuildKit lex_test.go tables (fixtures/dockerfile/shell-lex-cases.json)", () => {
  test("fixture names its upstream source", () => {
    assert.match(lex.note, /[0-9a-f]{40}/);
  });
  for (const [i, c] of lex.cases.entries()) {
    test(`#${i} ${c.source ?? "TestProcessWithMatches"} ${JSON.stringify(c.input)} ${JSON.stringify(c.env)}`, () => {
      if (c.error) {
        assert.throws(
          () => processWord(c.input, c.env),
          (e: unknown) => e instanceof ShellExpansionError && (!c.errorContains || e.message.includes(c.errorContains)),
        );
        return;
      }
      const r = processWord(c.input, c.env);
      assert.equal(r.result, c.expected);
      if (c.matched) assert.deepEqual([...r.matched].sort(), c.matched);
      if (c.unmatched) assert.deepEqual([...r.unmatched].sort(), c.unmatched);
    });
  }
  for (const { pattern, regex } of lex.patterns.toRegex) {
    test(`pattern ${JSON.stringify(pattern)} -> /${regex}/`, () => {
      assert.equal(shellPatternToRegex(pattern, true, true).source, regex);
    });
  }
  for (const pattern of lex.patterns.invalid) {
    test(`pattern ${JSON.stringify(pattern)} is rejected`, () => {
      assert.throws(() => shellPatternToRegex(pattern, true, true));
    });
  }
  for (const [input, expected] of lex.patterns.reverseString) {
    test(`reverseString ${input}`, () => assert.equal(reverseString(input), expected));
  }
  for (const [input, expected] of lex.patterns.reversePattern) {
    test(`reversePattern ${input}`, () => assert.equal(reversePattern(input), expected));
  }
});

describe("lexer options and extras", () => {
  test("backtick escape token", () => {
    const l = new ShellLex({ escapeToken: "`" });
    assert.equal(l.processWord("a`$B\\c", { B: "x" }), "a$B\\c");
  });
  test("rawQuotes keeps quotes, skipUnsetEnv keeps unset references", () => {
    const l = new ShellLex({ rawQuotes: true, skipUnsetEnv: true });
    assert.equal(l.processWord(`'a'"$X"$Y\${Z:-q}`, { X: "1" }), `'a'"1"$Y\${Z:-q}`.replace("\\$", "$"));
  });
  test("// replacement expands $0 like Go's ReplaceAllString, / does not", () => {
    assert.equal(processWord("${A//b/<\\$0>}", { A: "abc" }).result, "a<\\b>c");
    assert.equal(processWord("${A/b/[\\$0]}", { A: "abc" }).result, "a[\\$0]c");
  });
  test("error offset points into the word", () => {
    try {
      processWord("ab${C", {});
      assert.fail("no error");
    } catch (e) {
      assert.ok(e instanceof ShellExpansionError);
      assert.equal(e.offset, 5);
    }
  });
});
