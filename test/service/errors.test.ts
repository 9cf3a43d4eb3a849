// Requests the service refuses, each with the right 4xx and a clear message (never a crash); bearer-token auth;
// failing steps mapped to the local StepFailedError; secret values never in a log, a message or the store.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { StepFailedError } from "../../src/errors.js";
import { Secret } from "../../src/sdk/secret.js";
import { RemoteBuildError } from "../../src/service/client.js";
import { compileRequest } from "../../src/service/wire/encode.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { WIRE_FORMAT } from "../../src/service/wire/limits.js";
import { busyboxBase, raw, readSse, startService, type TestService } from "../support/service.js";

const TOKEN = "test-token-" + Math.random().toString(36).slice(2);
let svc: TestService;
const dirs: string[] = [];
before(async () => {
  svc = await startService({ token: TOKEN });
});
after(async () => {
  assert.deepEqual(
    svc.serverLog.filter((l) => /internal error/.test(l)),
    [],
    "no request hit an internal error",
  );
  await svc.close();
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

const post = (body: string | Buffer, token = TOKEN) =>
  raw(svc.url, "POST", "/v1/images", { body, token, headers: { "content-type": "application/json" } });
const sha = (b: string | Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");

/** A valid minimal request (scratch base + env), as JSON-able object. */
function minimal(): Record<string, any> {
  return {
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
        method: "env",
        description: "env A",
        instructions: [{ op: "ENV", vars: [["A", Math.random().toString(36)]] }],
        inputs: [],
        secrets: [],
        env: {},
        forceBuild: false,
        extra: [],
      },
    ],
    deferred: [],
  };
}

function assertError(r: { status: number; json: () => any }, status: number, code: string, message: RegExp): void {
  assert.equal(r.status, status, JSON.stringify(r.json()));
  const body = r.json();
  assert.equal(body.error.code, code);
  assert.match(body.error.message, message);
}

describe("auth", () => {
  test("no token, a wrong token → 401; the right token → accepted", async () => {
    const body = JSON.stringify(minimal());
    const none = await post(body, "");
    assertError(none, 401, "UNAUTHORIZED", /requires a token/);
    assert.match(String(none.headers["www-authenticate"]), /^Bearer/);
    assertError(await post(body, "wrong"), 401, "UNAUTHORIZED", /not valid/);
    assertError(await raw(svc.url, "GET", `/v1/images/${"0".repeat(64)}`), 401, "UNAUTHORIZED", /token/);
    assertError(await raw(svc.url, "PUT", `/v1/blobs/${sha("x")}`, { body: "x" }), 401, "UNAUTHORIZED", /token/);
    const ok = await post(body);
    assert.ok(ok.status === 202 || ok.status === 200, ok.text);
    assert.match(ok.json().buildId, /^[0-9a-f]{64}$/);
  });

  test("the client sends the token and turns a 401 into a clear error", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    await assert.rejects(
      remoteBuildImage(base, { server: svc.url, token: "nope", statCache: false, log: () => undefined }),
      (e: unknown) => {
        assert.ok(e instanceof RemoteBuildError);
        assert.equal(e.status, 401);
        assert.match(e.message, /STRATA_TOKEN/);
        return true;
      },
    );
    const r = await remoteBuildImage(base, { server: svc.url, token: TOKEN, statCache: false, log: () => undefined });
    assert.match(r.imageId, /^sha256:/);
  });
});

describe("malformed requests", () => {
  test("invalid JSON → 400", async () => {
    assertError(await post("{ not json"), 400, "BAD_JSON", /not valid JSON/);
    assertError(await post(""), 400, "BAD_REQUEST", /empty/);
  });

  test("schema violations → 400 naming the field", async () => {
    const cases: [(r: Record<string, any>) => void, RegExp][] = [
      [(r) => delete r.steps, /steps: expected an array/],
      [(r) => (r.steps = []), /at least one step/],
      [(r) => (r.steps[1].forceBuild = "yes"), /steps\[1\]\.forceBuild: expected true or false/],
      [(r) => (r.steps[1].instructions[0] = { op: "FROB" }), /steps\[1\]\.instructions\[0\]\.op: expected one of RUN/],
      [(r) => (r.steps[1].bogus = 1), /steps\[1\]: unknown field "bogus"/],
      [(r) => (r.steps[0].base = { kind: "scratch", extra: 1 }), /unknown field "extra"/],
      [(r) => delete r.steps[0].base, /first step must carry the base/],
      [(r) => (r.builderVersion = "1999.01"), /not a builder version this server knows/],
      [(r) => (r.steps[1].instructions = [{ op: "WORKDIR", path: "relative" }]), /expected an absolute path/],
      [
        (r) =>
          (r.steps[1].inputs = [
            {
              kind: "dir",
              name: "context",
              entries: [{ path: "/etc/passwd", type: "file", mode: 420, uid: 0, gid: 0, size: 1, digest: sha("x") }],
            },
          ]),
        /is absolute/,
      ],
      [
        (r) =>
          (r.steps[1].inputs = [
            {
              kind: "dir",
              name: "context",
              entries: [{ path: "a/../../x", type: "file", mode: 420, uid: 0, gid: 0, size: 1, digest: sha("x") }],
            },
          ]),
        /contains "\.\."/,
      ],
      [
        (r) =>
          (r.steps[1].inputs = [
            {
              kind: "dir",
              name: "context",
              entries: [{ path: "a/b", type: "file", mode: 420, uid: 0, gid: 0, size: 1, digest: sha("x") }],
            },
          ]),
        /parent directory "a" .* is not listed/,
      ],
      [
        (r) =>
          (r.steps[1].inputs = [
            {
              kind: "dir",
              name: "context",
              entries: [{ path: "x", type: "file", mode: 420, uid: 0, gid: 0, size: 1, digest: "md5:abc" }],
            },
          ]),
        /digest: expected sha256/,
      ],
      [
        (r) =>
          (r.steps[1].inputs = [
            {
              kind: "dir",
              name: "context",
              entries: [{ path: "x", type: "file", mode: 70000, uid: 0, gid: 0, size: 1, digest: sha("x") }],
            },
          ]),
        /mode: expected an integer/,
      ],
      // strata-build/4: the build's secret values travel once, by name; each listed name has one, no other is sent.
      [
        (r) => (r.steps[1].secrets = ["TOKEN"]),
        /steps\[1\]\.secrets: no value for the secret TOKEN in the request's "secrets"/,
      ],
      [(r) => (r.secrets = { TOKEN: "one" }), /secrets\.TOKEN: no step lists the secret TOKEN/],
      [
        (r) => ((r.steps[1].secrets = ["TOKEN"]), (r.secrets = [{ TOKEN: "one" }])),
        /secrets: expected an object of strings, got an array/,
      ],
      [
        (r) => ((r.steps[1].secrets = ["bad-name"]), (r.secrets = { "bad-name": "one" })),
        /steps\[1\]\.secrets\[0\]: "bad-name" is not a valid secret name/,
      ],
      // The format is named; a debian base is a Python series; derived extras are the server's.
      [(r) => delete r.format, new RegExp(`format: missing: this server speaks ${WIRE_FORMAT}.*upgrade the client`)],
      [
        (r) => (r.format = "strata-build/3"),
        new RegExp(
          `format: the string "strata-build/3" is not a request format this server speaks \\(${WIRE_FORMAT}\\).*upgrade the client`,
        ),
      ],
      [
        (r) => (r.format = "strata-build/2"),
        new RegExp(
          `format: the string "strata-build/2" is not a request format this server speaks \\(${WIRE_FORMAT}\\)`,
        ),
      ],
      [
        (r) => (r.steps[0].base = { kind: "debian", python: "3.11", suite: "bookworm" }),
        /steps\[0\]\.base: unknown field "suite" \(allowed: kind, python\)/,
      ],
      [
        (r) => (r.steps[0].base = { kind: "debian", python: "3.x" }),
        /steps\[0\]\.base\.python: expected a Python series such as "3\.11"/,
      ],
      [(r) => (r.steps[1].extra = [["env.A", "1"]]), /steps\[1\]\.extra\[0\]: "env\.A" is derived by the server/],
      [
        (r) => (r.steps[1].inputs = [{ kind: "inline", name: "..", content: "", mode: 420 }]),
        /inputs\[0\]\.name: "\.\." is not a valid input name/,
      ],
    ];
    for (const [mutate, message] of cases) {
      const req = minimal();
      mutate(req);
      assertError(await post(JSON.stringify(req)), 400, "BAD_REQUEST", message);
    }
  });

  test("a request naming content the server does not have → 400 listing the missing digests", async () => {
    const req = minimal();
    const d = sha("never uploaded " + Math.random());
    req.steps[1].inputs = [
      {
        kind: "dir",
        name: "context",
        entries: [{ path: "x", type: "file", mode: 420, uid: 0, gid: 0, size: 3, digest: d }],
      },
    ];
    req.steps[1].instructions.push({ op: "COPY", source: "context", dest: "/x" });
    const r = await post(JSON.stringify(req));
    assertError(r, 400, "MISSING_BLOBS", /upload them/);
    assert.deepEqual(r.json().error.missing, [d]);
  });

  test("an oversized body → 413, and the server keeps serving", async () => {
    const big = Buffer.alloc(11 * 1024 * 1024, 0x20);
    assertError(await post(big), 413, "TOO_LARGE", /larger than 10485760 bytes/);
    const chunked = await new Promise<number>((resolve, reject) => {
      // Without a Content-Length the limit is enforced while reading.
      import("node:http").then(({ request }) => {
        const req = request(new URL("/v1/blobs/check", svc.url), {
          method: "POST",
          headers: { authorization: `Bearer ${TOKEN}`, "transfer-encoding": "chunked" },
        });
        req.on("response", (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on("error", reject);
        for (let i = 0; i < 11; i++) req.write(Buffer.alloc(1024 * 1024, 0x20));
        req.end();
      }, reject);
    });
    assert.equal(chunked, 413);
    const ok = await post(JSON.stringify(minimal()));
    assert.ok(ok.status < 300);
  });

  test("blob uploads: wrong content for the digest → 400; a malformed digest → 400; then the right content → 201", async () => {
    const content = "hello " + Math.random();
    const d = sha(content);
    assertError(
      await raw(svc.url, "PUT", `/v1/blobs/${d}`, { body: "something else", token: TOKEN }),
      400,
      "DIGEST_MISMATCH",
      /has digest sha256:[0-9a-f]{64}, not sha256/,
    );
    assertError(
      await raw(svc.url, "PUT", "/v1/blobs/sha256:xyz", { body: content, token: TOKEN }),
      400,
      "BAD_DIGEST",
      /not a blob digest/,
    );
    const check = await raw(svc.url, "POST", "/v1/blobs/check", {
      body: JSON.stringify({ digests: [d] }),
      token: TOKEN,
    });
    assert.deepEqual(check.json(), { missing: [d] }, "a refused upload stores nothing");
    const put = await raw(svc.url, "PUT", `/v1/blobs/${d}`, { body: content, token: TOKEN });
    assert.equal(put.status, 201);
    assert.deepEqual(
      (await raw(svc.url, "POST", "/v1/blobs/check", { body: JSON.stringify({ digests: [d] }), token: TOKEN })).json(),
      { missing: [] },
    );
    assertError(
      await raw(svc.url, "POST", "/v1/blobs/check", { body: JSON.stringify({ digests: ["nope"] }), token: TOKEN }),
      400,
      "BAD_REQUEST",
      /digests\[0\]/,
    );
  });

  test("unknown ids → 404; unknown endpoints → 404; wrong methods → 405; a bad cursor → 400", async () => {
    assertError(
      await raw(svc.url, "GET", `/v1/images/${"a".repeat(64)}`, { token: TOKEN }),
      404,
      "NOT_FOUND",
      /no build a{64}/,
    );
    assertError(
      await raw(svc.url, "GET", `/v1/images/${"a".repeat(64)}/logs`, { token: TOKEN }),
      404,
      "NOT_FOUND",
      /no build/,
    );
    assertError(
      await raw(svc.url, "GET", "/v1/images/not-an-id", { token: TOKEN }),
      404,
      "NOT_FOUND",
      /not a build id/,
    );
    assertError(
      await raw(svc.url, "GET", `/v1/images/sha256:${"b".repeat(64)}`, { token: TOKEN }),
      404,
      "NOT_FOUND",
      /not in the server's store/,
    );
    assertError(await raw(svc.url, "GET", "/v2/whatever", { token: TOKEN }), 404, "NOT_FOUND", /no such endpoint/);
    assertError(
      await raw(svc.url, "GET", "/v1/images/%E0%A4%A", { token: TOKEN }),
      400,
      "BAD_REQUEST",
      /percent-encoding/,
    );
    const m = await raw(svc.url, "DELETE", "/v1/images", { token: TOKEN });
    assertError(m, 405, "METHOD_NOT_ALLOWED", /DELETE is not allowed/);
    assert.equal(m.headers.allow, "POST");
    const created = (await post(JSON.stringify(minimal()))).json();
    assertError(
      await raw(svc.url, "GET", `/v1/images/${created.buildId}/logs?after=-1`, { token: TOKEN }),
      400,
      "BAD_CURSOR",
      /not a log cursor/,
    );
  });
});

describe("build results", () => {
  test("a failing step throws the local StepFailedError; asking again retries instead of replaying the failure", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const image = base.runCommands("echo about to fail; exit 3");
    let first: StepFailedError | undefined;
    await assert.rejects(
      remoteBuildImage(image, { server: svc.url, token: TOKEN, statCache: false, log: () => undefined }),
      (e: unknown) => {
        assert.ok(e instanceof StepFailedError, String(e));
        assert.equal(e.exitCode, 3);
        assert.equal(e.stepIndex, 3);
        assert.ok(e.logTail.some((l) => l.includes("about to fail")));
        assert.match(
          e.message,
          /step 3 \(runCommands echo about to fail; exit 3\) failed: `echo about to fail; exit 3` exited with code 3/,
        );
        first = e;
        return true;
      },
    );
    assert.ok(first);
    const ids = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const plan = image.plan();
      const { request } = await compileRequest(plan);
      const r = (await post(JSON.stringify(request))).json();
      ids.add(r.buildId);
      const events = (
        await readSse(svc.url, `/v1/images/${r.buildId}/logs`, { headers: { authorization: `Bearer ${TOKEN}` } })
      ).events;
      const end = JSON.parse(events.find((e) => e.event === "result")!.data);
      assert.equal(end.status, "failed");
      assert.equal(end.failure.code, "STEP_FAILED");
      assert.equal(end.failure.exitCode, 3);
    }
    assert.equal(ids.size, 2, "each request after a failure is a new build");
  });

  test("secret values are redacted from the streamed log, the failure and the saved record", async () => {
    const { dir, base } = await busyboxBase();
    dirs.push(dir);
    const value = "s3cr3t-" + Math.random().toString(36).slice(2);
    const image = base.runCommands("echo token=$API_TOKEN; exit 1", {
      secrets: [Secret.fromObject({ API_TOKEN: value })],
    });
    const seen: string[] = [];
    let buildId = "";
    await assert.rejects(
      remoteBuildImage(image, { server: svc.url, token: TOKEN, statCache: false, log: (l) => seen.push(l) }),
      (e: unknown) => {
        assert.ok(e instanceof StepFailedError);
        assert.ok(!e.message.includes(value));
        assert.ok(e.logTail.some((l) => l.includes("token=***")));
        return true;
      },
    );
    assert.ok(
      seen.some((l) => l.includes("token=***")),
      seen.join("\n"),
    );
    assert.ok(!seen.join("\n").includes(value));
    // Find the build and its saved record.
    const logs = await fsp.readdir(path.join(svc.home, "logs"));
    for (const f of logs) {
      const text = await fsp.readFile(path.join(svc.home, "logs", f), "utf8");
      assert.ok(!text.includes(value), `store log ${f} has no secret value`);
      if (text.includes("token=***")) buildId = f;
    }
    assert.ok(buildId, "the failed build's record is saved");
  });
});
