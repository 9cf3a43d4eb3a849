// Dockerfile errors name file:line:column and say what is wrong — at definition time (syntax, flags, stages, options)
// or at build time (missing or escaping sources, unknown --chown users, failing RUNs): every case in
// fixtures/dockerfiles-negative/<case>/ (Dockerfile, context/, expected.json { when, line, column, contains }).
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Image, StepFailedError, type LocalStore } from "../../src/index.js";
import { loadCases, NEGATIVE_FIXTURES, prepare, privateStore } from "./support.js";

interface NegExpect {
  when: "definition" | "build";
  line?: number;
  column?: number;
  contains: string;
  code?: string;
  target?: string;
}

const cases = loadCases(NEGATIVE_FIXTURES);
let store: LocalStore;
let cleanup: () => Promise<void>;
before(async () => {
  const s = await privateStore();
  store = s.store;
  cleanup = s.cleanup;
});
after(async () => cleanup?.());

describe("Dockerfile errors", { concurrency: 4 }, () => {
  for (const c of cases) {
    const e = c.expect as unknown as NegExpect;
    test(`${c.name} (${e.when})`, async () => {
      const p = await prepare(c);
      try {
        let img: Image | undefined;
        let err: unknown;
        try {
          img = Image.fromDockerfile(p.dockerfile, {
            contextDir: p.context,
            buildArgs: p.buildArgs,
            ...(e.target ? { target: e.target } : {}),
          });
        } catch (x) {
          err = x;
        }
        if (e.when === "definition") {
          assert.ok(err, `${c.name}: expected an error when the definition is made`);
        } else {
          assert.equal(err, undefined, `${c.name}: unexpected definition error ${String(err)}`);
          await assert.rejects(
            img!.build({ store, log: () => undefined }).then(() => undefined),
            (x: unknown) => ((err = x), true),
          );
        }
        const msg = (err as Error).message;
        assert.ok(
          msg.includes(e.contains),
          `${c.name}: message ${JSON.stringify(msg)} lacks ${JSON.stringify(e.contains)}`,
        );
        if (e.line !== undefined) {
          const where = `${path.relative(process.cwd(), p.dockerfile)}:${e.line}`;
          const whereAbs = `${p.dockerfile}:${e.line}`;
          assert.ok(
            msg.includes(where) || msg.includes(whereAbs),
            `${c.name}: message ${JSON.stringify(msg)} does not name ${whereAbs}`,
          );
          if (e.column !== undefined)
            assert.ok(
              msg.includes(`:${e.line}:${e.column}`),
              `${c.name}: message ${JSON.stringify(msg)} lacks column ${e.column}`,
            );
        }
        if (e.code) assert.equal((err as { code?: string }).code, e.code);
        if (e.code === "STEP_FAILED") assert.ok(err instanceof StepFailedError);
      } finally {
        await p.close();
      }
    });
  }
});
