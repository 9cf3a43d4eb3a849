// `strata serve` (cmdServe) as a child process: prints its URL, requires the token it was given, builds through the
// client (sandboxes counted with STRATA_SANDBOX_COUNTER), and on SIGTERM terminates a running build — the client
// gets a clear "terminated" error — and exits 0.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { RemoteBuildError } from "../../src/service/client.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { busyboxBase, raw, spawnServe } from "../support/service.js";
import { nonce, tempDir } from "../support/strata.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

test("strata serve: token auth, builds counted in the child, SIGTERM terminates a running build and exits 0", async () => {
  const home = await tempDir("strata-serve-");
  dirs.push(home);
  const counter = path.join(os.tmpdir(), `strata-count-${nonce()}`);
  await fsp.writeFile(counter, "");
  dirs.push(counter);
  const token = "serve-" + nonce();
  const { url, child, stderr, exited } = await spawnServe({
    STRATA_HOME: home,
    STRATA_TOKEN: token,
    STRATA_SANDBOX_COUNTER: counter,
  });
  try {
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(stderr(), /listening on http:\/\/127\.0\.0\.1:\d+ .*bearer token required/);
    assert.equal((await raw(url, "GET", `/v1/images/${"0".repeat(64)}`)).status, 401);

    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const image = base.runCommands("echo one > /one").runCommands("echo two > /two");
    const built = await Promise.all(
      [1, 2, 3].map(() => remoteBuildImage(image, { server: url, token, statCache: false, log: () => undefined })),
    );
    assert.equal(new Set(built.map((b) => b.imageId)).size, 1);
    const runs = (await fsp.readFile(counter, "utf8")).split("\n").filter(Boolean).length;
    assert.equal(runs, 2, "each RUN once in the server process");

    // A long build, then SIGTERM while it runs.
    const lines: string[] = [];
    const slow = remoteBuildImage(base.runCommands("echo started-slow; sleep 60"), {
      server: url,
      token,
      statCache: false,
      log: (l) => lines.push(l),
    });
    const outcome = slow.then(
      () => undefined,
      (e: unknown) => e,
    );
    const t0 = Date.now();
    while (!lines.some((l) => l.trim() === "started-slow")) {
      if (Date.now() - t0 > 20_000) throw new Error(`the slow build never started: ${lines.join("\n")}\n${stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGTERM");
    const err = await outcome;
    assert.ok(err instanceof RemoteBuildError, String(err));
    assert.equal(err.code, "TERMINATED");
    assert.match(err.message, /terminated because the build server shut down/);
    assert.equal(await exited, 0);
    assert.ok(Date.now() - t0 < 30_000, "shut down promptly (the sandbox was killed, not waited for)");
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
});
