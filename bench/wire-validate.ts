/**
 * Benchmark: the build service's request validator (`parseBuildRequest`) on a large request.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/wire-validate.js [--entries 200000] [--runs 7]
 *
 * One `dir` input of N walked entries (200 directories of files), the shape a large context takes on the wire. Prints
 * the JSON size and, per run, the time of JSON.parse and of the validation (schema + whole-request rules): min and
 * median. Pure CPU, no server.
 */
import { parseArgs } from "node:util";
import { parseBuildRequest } from "../src/service/wire/decode.js";
import { WIRE_FORMAT } from "../src/service/wire/limits.js";

const { values } = parseArgs({
  options: { entries: { type: "string", default: "200000" }, runs: { type: "string", default: "7" } },
});
const n = Number(values.entries);
const runs = Number(values.runs);
const dirs = 200;
const entries: Record<string, unknown>[] = [];
for (let d = 0; d < dirs; d++) {
  entries.push({ path: `d${d}`, type: "dir", mode: 0o755, uid: 0, gid: 0 });
  for (let f = 0; f < n / dirs - 1; f++)
    entries.push({
      path: `d${d}/f${f}.txt`,
      type: "file",
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 10,
      digest: `sha256:${"a".repeat(64)}`,
    });
}
const request = {
  format: WIRE_FORMAT,
  builderVersion: "2026.11",
  steps: [
    {
      method: "fromScratch",
      description: "fromScratch",
      base: { kind: "scratch" },
      instructions: [],
      inputs: [],
      secrets: [],
      env: {},
      forceBuild: false,
      extra: [],
    },
    {
      method: "addLocalDir",
      description: "addLocalDir",
      instructions: [{ op: "COPY", source: "context", dest: "/app" }],
      inputs: [{ kind: "dir", name: "context", entries }],
      secrets: [],
      env: {},
      forceBuild: false,
      extra: [],
    },
  ],
  deferred: [],
};
const text = JSON.stringify(request);
const parse: number[] = [];
const validate: number[] = [];
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  const v = JSON.parse(text) as unknown;
  const t1 = performance.now();
  parseBuildRequest(v);
  parse.push(t1 - t0);
  validate.push(performance.now() - t1);
}
const summary = (ms: number[]) => {
  const s = [...ms].sort((a, b) => a - b);
  return `min ${s[0]!.toFixed(0)} ms  median ${s[Math.floor(s.length / 2)]!.toFixed(0)} ms`;
};
console.log(`${entries.length} entries, ${(text.length / 1e6).toFixed(1)} MB of JSON, ${runs} runs`);
console.log(`JSON.parse   ${summary(parse)}`);
console.log(`validate     ${summary(validate)}`);
