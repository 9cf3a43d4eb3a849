/**
 * The Dockerfiles of the ported BuildKit integration tests (test/dockerfile-e2e/buildkit/*.test.ts), read out of their
 * source text for the fuzzer's corpus: every string expression assigned to `dockerfile` (`dockerfile: "…"`,
 * `const dockerfile = \`…\``), literals joined with `+` concatenated, and a template's `${…}` parts replaced by `x`.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ESCAPES: Record<string, string> = { n: "\n", t: "\t", r: "\r", b: "\b", f: "\f", v: "\v", "0": "\0" };

/** The JS string literal starting at `src[i]` (a quote or backtick): its value and the index after it. */
export function literalAt(src: string, i: number): { value: string; end: number } | undefined {
  const q = src[i];
  if (q !== '"' && q !== "'" && q !== "`") return undefined;
  let out = "";
  let j = i + 1;
  while (j < src.length) {
    const c = src[j]!;
    if (c === q) return { value: out, end: j + 1 };
    if (c === "\\") {
      const e = src[j + 1] ?? "";
      if (e === "u") {
        const m = /^u\{([0-9a-fA-F]+)\}|^u([0-9a-fA-F]{4})/.exec(src.slice(j + 1));
        if (!m) return undefined;
        out += String.fromCodePoint(Number.parseInt(m[1] ?? m[2]!, 16));
        j += 1 + m[0].length;
        continue;
      }
      if (e === "x") {
        out += String.fromCharCode(Number.parseInt(src.slice(j + 2, j + 4), 16));
        j += 4;
        continue;
      }
      if (e === "\n") {
        j += 2;
        continue;
      }
      out += ESCAPES[e] ?? e;
      j += 2;
      continue;
    }
    if (q === "`" && c === "$" && src[j + 1] === "{") {
      let depth = 1;
      j += 2;
      while (j < src.length && depth > 0) {
        if (src[j] === "{") depth++;
        else if (src[j] === "}") depth--;
        j++;
      }
      out += "x";
      continue;
    }
    if (q !== "`" && c === "\n") return undefined;
    out += c;
    j++;
  }
  return undefined;
}

/** Every Dockerfile text assigned to `dockerfile` in `src` (see the module comment). */
export function dockerfilesIn(src: string): string[] {
  const out: string[] = [];
  for (const m of src.matchAll(/\bdockerfile\s*[:=]\s*/g)) {
    let i = m.index + m[0].length;
    let text = "";
    let any = false;
    for (;;) {
      const lit = literalAt(src, i);
      if (!lit) break;
      text += lit.value;
      any = true;
      const next = /^\s*\+\s*/.exec(src.slice(lit.end));
      if (!next) break;
      i = lit.end + next[0].length;
    }
    if (any && /\bFROM\b/i.test(text)) out.push(text);
  }
  return out;
}

/** The ported tests' Dockerfiles (their sources found from test/ or dist/test/ upwards). */
export function portedBuildkitDockerfiles(): string[] {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, "test", "dockerfile-e2e", "buildkit");
    // (dist/test/… holds the compiled tests: go on up to the sources.)
    const files = existsSync(candidate) ? readdirSync(candidate).filter((f) => f.endsWith(".test.ts")) : [];
    if (files.length) return files.flatMap((f) => dockerfilesIn(readFileSync(join(candidate, f), "utf8")));
    const up = dirname(dir);
    if (up === dir) throw new Error(`test/dockerfile-e2e/buildkit not found above ${import.meta.url}`);
    dir = up;
  }
}
