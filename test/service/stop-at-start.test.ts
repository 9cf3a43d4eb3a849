// A `strata worker` or `strata serve` SIGTERMed the moment it prints its name (or URL) stops cleanly and exits 0.
// Until a process listens for a signal, the signal's default action kills it; the name on stdout is what a
// supervisor (or a test) waits for, so the listeners must be in place before it is printed. Each round starts two at
// once (the race needs a busy machine) and SIGTERMs them as soon as the line arrives.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { startRedis, type TestRedis } from "../support/redis.js";
import { spawnServe } from "../support/service.js";
import { REPO_ROOT, tempDir } from "../support/strata.js";

const ROUNDS = 5;
let redis: TestRedis;
const children: ChildProcess[] = [];
const dirs: string[] = [];

before(async () => {
  redis = await startRedis();
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await redis?.stop();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true }).catch(() => undefined);
});

interface Started {
  child: ChildProcess;
  stderr: () => string;
  /** The exit code, or the signal that killed it. */
  exited: Promise<number | NodeJS.Signals | null>;
}

/** Resolves once the child's stdout has a whole line. */
function firstLine(s: Started, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let out = "";
    s.child.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("\n")) resolve();
    });
    void s.exited.then((code) => reject(new Error(`${what} exited (${code}) before printing a line:\n${s.stderr()}`)));
  });
}

function started(child: ChildProcess): Started {
  children.push(child);
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | NodeJS.Signals | null>((r) => child.on("exit", (code, sig) => r(code ?? sig)));
  return { child, stderr: () => stderr, exited };
}

/** `strata worker` (cmdWorker) on its own local store, resolved once it printed its name. */
async function startWorker(): Promise<Started> {
  const home = await tempDir("strata-stop-worker-");
  dirs.push(home);
  const argv = ["--grace", "5s"];
  const script = `import(${JSON.stringify(path.join(REPO_ROOT, "dist/src/cli/worker.js"))}).then((m) => m.cmdWorker(${JSON.stringify(argv)})).then((c) => process.exit(c), (e) => { console.error(e); process.exit(70); });`;
  const s = started(
    spawn(process.execPath, ["--input-type=module", "-e", script], {
      env: {
        ...process.env,
        STRATA_HOME: home,
        STRATA_REDIS_URL: redis.url,
        STRATA_REDIS_PREFIX: `stop-${randomBytes(4).toString("hex")}`,
        STRATA_WORKER_TOKEN: randomBytes(32).toString("hex"),
        // Never asked: no job is queued.
        STRATA_SERVICE_URL: "http://127.0.0.1:9",
      },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  await firstLine(s, "strata worker");
  return s;
}

test("a worker SIGTERMed as soon as it prints its name stops cleanly (exit 0), every time", async () => {
  for (let round = 0; round < ROUNDS; round++) {
    const pair = await Promise.all([
      startWorker().then((w) => (w.child.kill("SIGTERM"), w)),
      startWorker().then((w) => (w.child.kill("SIGTERM"), w)),
    ]);
    for (const w of pair) {
      const code = await w.exited;
      assert.equal(code, 0, `round ${round}: the worker exited with ${code}:\n${w.stderr()}`);
      assert.match(w.stderr(), /SIGTERM: taking no more builds[\s\S]*strata worker: stopped/);
    }
  }
});

test("a serve SIGTERMed as soon as it prints its URL stops cleanly (exit 0), every time", async () => {
  const serve = async () => {
    const home = await tempDir("strata-stop-serve-");
    dirs.push(home);
    const s = await spawnServe({ STRATA_HOME: home });
    children.push(s.child);
    // spawnServe resolves in the stdout handler that saw the URL: this is as soon as a supervisor could act.
    s.child.kill("SIGTERM");
    return s;
  };
  for (let round = 0; round < ROUNDS; round++) {
    for (const s of await Promise.all([serve(), serve()])) {
      const code = await s.exited;
      assert.equal(
        code,
        0,
        `round ${round}: strata serve exited with ${code} (null: killed by SIGTERM):\n${s.stderr()}`,
      );
      assert.match(s.stderr(), /SIGTERM: terminating running builds[\s\S]*strata serve: stopped/);
    }
  }
});
