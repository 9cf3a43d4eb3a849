// Redaction covers the forms a step can print a secret in without effort: the value itself, its base64 (standard and
// URL-safe, with and without padding, wherever it sits in the encoded bytes), its URL encodings, hex and JSON escaping,
// each line of a multi-line value, and `base64`'s 76-column lines. Each attack prints the value in one form inside
// other output; the check decodes what is left and must not find the value.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { redactor } from "../../src/engine/log.js";
import { secretForms } from "../../src/engine/secret-forms.js";

const SECRET = "hunter2-Sup3r/Secret+Value?&=é";

/** Every way to read base64 back out of text: each run of base64 characters, at each of its four alignments. */
function base64Decodings(text: string): Buffer[] {
  const out: Buffer[] = [];
  for (const run of text.match(/[A-Za-z0-9+/\-_]{4,}/g) ?? []) {
    const std = run.replace(/-/g, "+").replace(/_/g, "/");
    for (let skip = 0; skip < 4; skip++) out.push(Buffer.from(std.slice(skip), "base64"));
  }
  return out;
}

function leaks(text: string, value: string): boolean {
  if (text.includes(value)) return true;
  const bytes = Buffer.from(value);
  if (base64Decodings(text).some((b) => b.includes(bytes))) return true;
  let decoded = text;
  try {
    decoded = decodeURIComponent(text.replace(/\+/g, " "));
  } catch {
    // Not valid percent-encoding as a whole: the pieces are checked below.
  }
  if (decoded.includes(value)) return true;
  for (const run of text.match(/(?:%[0-9a-fA-F]{2})+/g) ?? [])
    if (Buffer.from(run.replace(/%/g, ""), "hex").includes(bytes)) return true;
  for (const run of text.match(/[0-9a-fA-F]{8,}/g) ?? [])
    for (const skip of [0, 1]) if (Buffer.from(run.slice(skip), "hex").includes(bytes)) return true;
  return false;
}

describe("redactor", () => {
  const redact = redactor([SECRET]);

  test("the attack works without redaction (the check finds every form)", () => {
    for (const pre of ["", "a", "ab"]) {
      const enc = Buffer.from(`${pre}${SECRET}tail`).toString("base64");
      assert.ok(leaks(`token=${enc}`, SECRET), `base64 at alignment ${pre.length} is found`);
    }
    assert.ok(leaks(`q=${encodeURIComponent(SECRET)}`, SECRET));
    assert.ok(leaks(Buffer.from(SECRET).toString("hex"), SECRET));
  });

  test("the value itself, anywhere in a line", () => {
    assert.equal(redact(`before ${SECRET} after ${SECRET}`), "before *** after ***");
  });

  for (const pre of ["", "x", "xy", "xyz", "wxyz"]) {
    for (const post of ["", "\n", "1", "12", "123"]) {
      test(`base64 of ${JSON.stringify(pre)} + value + ${JSON.stringify(post)}: standard and URL-safe, padded or not`, () => {
        const std = Buffer.from(pre + SECRET + post).toString("base64");
        const forms = [std, std.replace(/=+$/, ""), std.replace(/\+/g, "-").replace(/\//g, "_")];
        for (const enc of forms) {
          const out = redact(`Authorization: Basic ${enc} (end)`);
          assert.match(out, /\*\*\*/, `redacted: ${out}`);
          assert.ok(!leaks(out, SECRET), `no ${SECRET} left in ${out}`);
          assert.match(out, /^Authorization: Basic .*\(end\)$/, "the rest of the line stays");
        }
      });
    }
  }

  test("base64 of a long value wrapped at 76 columns (GNU base64): every line redacted", () => {
    const long = `-----BEGIN KEY-----${"k3y".repeat(40)}-----END KEY-----`;
    const r = redactor([long]);
    const lines = Buffer.from(long)
      .toString("base64")
      .match(/.{1,76}/g)!;
    assert.ok(lines.length >= 3);
    const out = lines.map(r);
    for (const l of out) assert.ok(!leaks(l, long.slice(0, 20)) && l.includes("***"), `line redacted: ${l}`);
  });

  test("URL encodings: encodeURIComponent, encodeURI, form encoding, %XX of every byte (both cases)", () => {
    const forms = [
      encodeURIComponent(SECRET),
      encodeURI(SECRET),
      new URLSearchParams({ q: SECRET }).toString().slice(2),
      [...Buffer.from(SECRET)].map((b) => `%${b.toString(16).padStart(2, "0").toUpperCase()}`).join(""),
      [...Buffer.from(SECRET)].map((b) => `%${b.toString(16).padStart(2, "0")}`).join(""),
    ];
    for (const f of forms) {
      const out = redact(`GET /cb?x=1&token=${f}&y=2`);
      assert.equal(out, "GET /cb?x=1&token=***&y=2", `redacted: ${f}`);
    }
  });

  test("hex (lower and upper case) and JSON escaping", () => {
    const hex = Buffer.from(SECRET).toString("hex");
    assert.equal(redact(`sum ${hex} .`), "sum *** .");
    assert.equal(redact(`sum ${hex.toUpperCase()} .`), "sum *** .");
    const quoted = redactor(['pa"ss\\word'])(JSON.stringify({ p: 'pa"ss\\word' }));
    assert.equal(quoted, '{"p":"***"}');
  });

  test("each line of a multi-line value is redacted (logs arrive line by line)", () => {
    const pem = "-----BEGIN-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END-----";
    const r = redactor([pem]);
    assert.equal(r("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "***");
    assert.equal(r("  BKcwggSjAgEAAoIBAQC7"), "  ***");
  });

  test("short values: 3 bytes redacted as themselves only, shorter ones not at all, no encoded forms below 4 bytes", () => {
    assert.equal(redactor(["abc"])("xabcx"), "x***x");
    assert.equal(redactor(["ab"])("xabx"), "xabx");
    assert.deepEqual(secretForms("abc"), ["abc"]);
    assert.deepEqual(secretForms("ab"), []);
    assert.ok(secretForms("abcd").length > 1);
    for (const f of secretForms("abcd")) assert.ok(f.length >= 4, `form ${f} is at least 4 characters`);
  });

  test("text without the value is left alone", () => {
    const text = "Step 3/4 : RUN pip install -r requirements.txt # sha256:0123abcd ok %20 +/= aGVsbG8=";
    assert.equal(redact(text), text);
    assert.equal(redactor([])(text), text);
  });

  test("many values at once: longest form wins, every value redacted", () => {
    const values = Array.from({ length: 20 }, (_, i) => `value-${i}-${"z".repeat(i)}`);
    const r = redactor(values);
    const line = values.map((v) => `${v} ${Buffer.from(v).toString("base64")} ${encodeURIComponent(v)}`).join(" | ");
    const out = r(line);
    for (const v of values) assert.ok(!leaks(out, v), `${v} redacted`);
  });
});
