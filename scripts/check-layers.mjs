#!/usr/bin/env node
// The layer check (`npm run lint`, `npm test`): reads every import of src/ (static, `import type`, `export … from` and
// `await import()`), then fails on
//   - any import cycle between files of src/;
//   - an import a folder's rules forbid (RULES below);
//   - an ARCHITECTURE.md whose folder-dependency block differs from the imports (`--write` rewrites that block);
//   - a file outside src/store/ that computes a path under a store's root (`path.join(store.root, …)`, a template
//     `${store.root}/…`, `defaultStoreRoot()` joined onto): src/store/layout.ts is the one owner of the on-disk layout.
// It reads the sources as text (comments removed), not through a compiler: this codebase writes imports one way.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const src = path.join(root, "src");

/** folder → folders it must not import (a folder is src/<name>/ or a top-level file src/<name>.ts). */
export const RULES = {
  plan: ["sdk", "engine", "service", "store", "dockerfile", "cli", "sandbox", "registry"],
  keys: ["sdk", "engine", "service", "store", "dockerfile", "cli"],
  sdk: ["engine", "service", "store", "cli"],
  engine: ["sdk", "service", "dockerfile", "cli", "build"],
  dockerfile: ["engine", "sdk", "service", "store", "cli", "build"],
  store: ["sdk", "engine", "service", "dockerfile", "cli", "build"],
  layer: ["sdk", "engine", "service", "dockerfile", "cli", "build"],
  registry: ["sdk", "engine", "service", "dockerfile", "cli", "build"],
  sandbox: ["sdk", "engine", "service", "dockerfile", "store", "cli", "build"],
  service: ["cli"],
  net: [
    "sdk",
    "engine",
    "service",
    "dockerfile",
    "cli",
    "build",
    "store",
    "registry",
    "layer",
    "sandbox",
    "plan",
    "keys",
  ],
};

function files(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) out.push(p);
  }
  return out.sort();
}

const stripComments = (s) => s.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`\\])\/\/.*$/gm, "$1");

const IMPORT_RE =
  /(?:^|[;\n}])\s*(?:import|export)\s+(?:type\s+)?(?:[^;"'`]*?\sfrom\s*)?["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

/** file (relative to src/) → files it imports (relative to src/). */
export function importGraph() {
  const graph = new Map();
  for (const f of files(src)) {
    const text = stripComments(readFileSync(f, "utf8"));
    const deps = new Set();
    for (const m of text.matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2];
      if (!spec.startsWith(".")) continue;
      const target = path.resolve(path.dirname(f), spec).replace(/\.js$/, ".ts");
      deps.add(path.relative(src, target));
    }
    graph.set(path.relative(src, f), [...deps].sort());
  }
  return graph;
}

const folderOf = (rel) => rel.split(path.sep)[0].replace(/\.ts$/, "");

/** Strongly connected components with more than one file (or a file importing itself). */
function cycles(graph) {
  let next = 0;
  const index = new Map(),
    low = new Map(),
    stack = [],
    onStack = new Set(),
    out = [];
  const visit = (v) => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
    }
    if (low.get(v) === index.get(v)) {
      const c = [];
      let w;
      do {
        w = stack.pop();
        onStack.delete(w);
        c.push(w);
      } while (w !== v);
      if (c.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(c.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

/** One line per folder: `folder → a, b, c` (what it imports), sorted. */
export function folderGraph(graph) {
  const deps = new Map();
  for (const [f, ds] of graph) {
    const a = folderOf(f);
    if (!deps.has(a)) deps.set(a, new Set());
    for (const d of ds) if (folderOf(d) !== a) deps.get(a).add(folderOf(d));
  }
  return [...deps]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([a, s]) => `${a} → ${[...s].sort().join(", ") || "(nothing)"}`);
}

/** Ways of joining a path onto a store root: the root is `<…>store<…>.root` or `defaultStoreRoot()`. */
const STORE_ROOT = String.raw`(?:(?:[\w$]+\.)*\w*store\w*\.root\b|defaultStoreRoot\(\))`;
const STORE_ROOT_JOINS = [
  new RegExp(String.raw`path\.(?:join|resolve)\(\s*${STORE_ROOT}`, "gi"),
  new RegExp(String.raw`\$\{\s*${STORE_ROOT}\s*\}\/`, "gi"),
  new RegExp(String.raw`${STORE_ROOT}\s*\+\s*["'\x60]\/`, "gi"),
];

/** `src/<file>:<line>` of every store-root join outside src/store/. */
export function storeRootJoins() {
  const out = [];
  for (const f of files(src)) {
    const rel = path.relative(src, f);
    if (folderOf(rel) === "store") continue;
    // Comments go, their line breaks stay (for the line numbers).
    const text = stripComments(readFileSync(f, "utf8").replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, "")));
    for (const re of STORE_ROOT_JOINS) {
      for (const m of text.matchAll(re)) out.push(`src/${rel}:${text.slice(0, m.index).split("\n").length}`);
    }
  }
  return out.sort();
}

const BEGIN = "<!-- layers:begin (scripts/check-layers.mjs --write) -->";
const END = "<!-- layers:end -->";

function main() {
  const graph = importGraph();
  const problems = [];
  for (const c of cycles(graph)) problems.push(`import cycle: ${c.join(" → ")}`);
  for (const [f, ds] of graph) {
    const forbidden = RULES[folderOf(f)] ?? [];
    for (const d of ds)
      if (forbidden.includes(folderOf(d)))
        problems.push(`${folderOf(f)}/ must not import ${folderOf(d)}/: src/${f} imports src/${d}`);
  }
  for (const at of storeRootJoins())
    problems.push(
      `${at} joins a path onto the store's root: ask its StoreLayout (src/store/layout.ts), the one owner of the on-disk layout`,
    );
  for (const [f, ds] of graph)
    for (const d of ds) if (!graph.has(d)) problems.push(`src/${f} imports src/${d}, which does not exist`);
  const block = ["```", ...folderGraph(graph), "```"].join("\n");
  const archPath = path.join(root, "ARCHITECTURE.md");
  const arch = readFileSync(archPath, "utf8");
  const start = arch.indexOf(BEGIN),
    end = arch.indexOf(END);
  if (process.argv.includes("--write")) {
    if (start < 0 || end < 0) throw new Error(`ARCHITECTURE.md has no ${BEGIN} … ${END} block to write into`);
    writeFileSync(archPath, `${arch.slice(0, start + BEGIN.length)}\n${block}\n${arch.slice(end)}`);
  } else if (start < 0 || end < 0 || arch.slice(start + BEGIN.length, end).trim() !== block) {
    problems.push(
      "ARCHITECTURE.md: the folder-dependency block differs from the imports; run `node scripts/check-layers.mjs --write` and check the prose around it still holds",
    );
  }
  if (problems.length) {
    console.error(`check-layers: ${problems.length} problem(s)\n  ${problems.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`check-layers: ${graph.size} files, no cycles, layer rules hold, ARCHITECTURE.md is current`);
}

if (import.meta.url === `file://${process.argv[1]}`) main();
