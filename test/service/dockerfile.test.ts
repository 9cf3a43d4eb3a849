// Dockerfile plans on the wire: context selections the service must reproduce exactly (symlinks followed inside the
// context, globs through a symlinked directory, --parents, --exclude, names with glob characters, .dockerignore
// exceptions, RUN bind mounts) key the same remotely as locally; malformed Dockerfile requests are a clear 400.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Image } from "../../src/sdk/image.js";
import { compileRequest } from "../../src/service/wire/encode.js";
import { remoteBuildImage } from "../support/remote-image.js";
import { parseBuildRequest } from "../../src/service/wire/decode.js";
import { LIMITS, WIRE_FORMAT, WireError } from "../../src/service/wire/limits.js";
import { raw, startService, type TestService } from "../support/service.js";
import { makeBusyboxTree, nonce, tempDir } from "../support/strata.js";

let svc: TestService;
const dirs: string[] = [];
before(async () => {
  svc = await startService();
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

const sha = (b: string | Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");

async function write(dir: string, rel: string, content: string): Promise<void> {
  await fsp.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
  await fsp.writeFile(path.join(dir, rel), content);
}

test("tricky context selections: the service selects what the client selected, with the same keys and image", async () => {
  const dir = await tempDir("strata-service-df-");
  dirs.push(dir);
  await makeBusyboxTree(path.join(dir, "rootfs"));
  await write(dir, "real/one.txt", "one\n");
  await write(dir, "real/two.txt", "two\n");
  await write(dir, "real/sub/three.md", "three\n");
  await fsp.symlink("real", path.join(dir, "linkdir"));
  await fsp.symlink("real/one.txt", path.join(dir, "linkfile"));
  await fsp.symlink("one.txt", path.join(dir, "real/inner-link"));
  await write(dir, "p/a/x.md", "x\n");
  await write(dir, "p/a/y.txt", "y\n");
  await write(dir, "p/b/c/z.md", "z\n");
  await write(dir, "ex/keep.txt", "keep\n");
  await write(dir, "ex/drop.tmp", "drop\n");
  await write(dir, "ex/deep/drop2.tmp", "drop\n");
  await write(dir, "weird[1].txt", "weird\n");
  await write(dir, "star*.txt", "star\n");
  await write(dir, "logs/app.log", "ignored\n");
  await write(dir, "logs/keep.log", "re-included\n");
  await write(dir, "mnt/data.txt", "mounted\n");
  await fsp.chmod(path.join(dir, "real/two.txt"), 0o640);
  await fsp.lchown(path.join(dir, "p/a/x.md"), 1000, 1000);
  await write(dir, ".dockerignore", "logs\n!logs/keep.log\n*.tmp\n");
  await fsp.writeFile(
    path.join(dir, "Dockerfile"),
    [
      "FROM scratch",
      "COPY rootfs/ /",
      `ENV N=${nonce()}`,
      "COPY linkfile /a/",
      "COPY linkdir /b/",
      "COPY linkdir/*.txt /c/",
      "COPY --parents p/./**/*.md /d/",
      "COPY --parents p/a/*.txt /e/",
      "COPY --exclude=deep ex /f/",
      "COPY weird[[]1].txt star[*].txt /g/",
      "COPY logs /h/",
      "COPY real/sub/ real/one.txt /i/",
      "RUN --mount=type=bind,source=mnt,target=/m cat /m/data.txt > /mounted",
      "COPY . /all/",
      "",
    ].join("\n"),
  );
  const image = Image.fromDockerfile(path.join(dir, "Dockerfile"), { contextDir: dir });
  const { request } = await compileRequest(image.plan());
  const copies = request.steps.filter((s) => s.inputs.some((i) => i.kind === "select"));
  assert.ok(copies.length >= 10);

  const remote = await remoteBuildImage(image, { server: svc.url, statCache: false, log: () => undefined });
  const local = await image.build({ store: svc.view, log: () => undefined });
  assert.deepEqual(
    local.steps.map((s) => [s.description, s.key]),
    remote.steps.map((s) => [s.description, s.key]),
    "same step keys",
  );
  assert.ok(
    local.steps.every((s) => s.cached),
    "a local build on the service's store hits every step",
  );
  assert.equal(local.imageId, remote.imageId);
  const again = await remoteBuildImage(image, { server: svc.url, statCache: false, log: () => undefined });
  assert.equal(again.uploadedFiles, 0);
  assert.equal(again.imageId, remote.imageId);
});

describe("malformed Dockerfile requests → 400 naming the field", () => {
  const entry = (p: string, content = "x") => ({
    path: p,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: Buffer.byteLength(content),
    digest: sha(content),
  });
  /** A valid request: a scratch base, then a COPY of one context file selected by the client. */
  function request(): Record<string, any> {
    return {
      format: WIRE_FORMAT,
      builderVersion: "2026.11",
      steps: [
        {
          method: "dockerfile",
          description: "FROM scratch",
          base: { kind: "scratch" },
          instructions: [],
          inputs: [],
          secrets: [],
          env: {},
          forceBuild: false,
          extra: [],
        },
        {
          method: "dockerfile",
          description: `Dockerfile:2:1 COPY a.txt /x/ ${nonce()}`,
          instructions: [{ op: "COPY", source: "src", dest: "/x/", sources: ["a.txt"] }],
          inputs: [
            {
              kind: "select",
              name: "src",
              root: { kind: "context", source: "/client/ctx" },
              patterns: ["a.txt"],
              location: { file: "Dockerfile", line: 2, column: 1 },
              matches: [{ path: "a.txt", type: "file" }],
              entries: [entry("a.txt")],
            },
          ],
          secrets: [],
          secretsAsEnv: false,
          env: {},
          forceBuild: false,
          extra: [],
        },
      ],
      deferred: [],
    };
  }
  const post = (body: unknown) =>
    raw(svc.url, "POST", "/v1/images", { body: JSON.stringify(body), headers: { "content-type": "application/json" } });
  const sel = (r: Record<string, any>) => r.steps[1].inputs[0];

  test("the valid request is accepted", async () => {
    const put = await raw(svc.url, "PUT", `/v1/blobs/${sha("x")}`, { body: "x" });
    assert.ok(put.status < 300, put.text);
    const r = await post(request());
    assert.ok(r.status === 202 || r.status === 200, r.text);
  });

  test("schema violations", async () => {
    const cases: [(r: Record<string, any>) => void, RegExp][] = [
      [
        (r) => (sel(r).root = { kind: "svn", url: "x" }),
        /steps\[1\]\.inputs\[0\]\.root\.kind: expected one of context, stage, image, git, got the string "svn"/,
      ],
      [(r) => (sel(r).root = { kind: "context", localPath: "/etc" }), /root: unknown field "localPath"/],
      [
        (r) => (sel(r).patterns = Array.from({ length: LIMITS.patterns + 1 }, () => "a.txt")),
        /inputs\[0\]\.patterns: more than 1000 items/,
      ],
      [
        (r) => (sel(r).patterns = ["a".repeat(LIMITS.patternBytes + 1)]),
        /inputs\[0\]\.patterns\[0\]: longer than 4096 characters/,
      ],
      [(r) => (sel(r).exclude = ["x".repeat(LIMITS.patternBytes + 1)]), /inputs\[0\]\.exclude\[0\]: longer than/],
      [(r) => (sel(r).patterns = []), /at least one pattern/],
      [
        (r) => (
          (sel(r).entries = [entry("../../etc/passwd")]),
          (sel(r).matches = [{ path: "../../etc/passwd", type: "file" }])
        ),
        /entries\[0\]\.path: path "\.\.\/\.\.\/etc\/passwd" contains "\.\."/,
      ],
      [(r) => (sel(r).entries = [entry("/etc/passwd")]), /entries\[0\]\.path: path "\/etc\/passwd" is absolute/],
      [
        (r) => (sel(r).matches = [{ path: "a/../../x", type: "file" }]),
        /matches\[0\]\.path: path "a\/\.\.\/\.\.\/x" contains "\.\."/,
      ],
      [(r) => (sel(r).matches = [{ path: "b.txt", type: "file" }]), /matched file "b\.txt" is not listed as a file/],
      [
        (r) => (sel(r).entries = [entry("a.txt"), entry("other.txt")]),
        /"other\.txt" is not a matched source or below one/,
      ],
      [
        (r) => (
          (sel(r).matches = [{ path: "d", type: "dir" }]),
          (sel(r).entries = [{ path: "d", type: "dir", mode: 0o755, uid: 0, gid: 0 }, entry("d/e/f")])
        ),
        /directory "d\/e" is below the matched directory "d" but not listed/,
      ],
      [
        (r) => (
          (sel(r).matches = [{ path: "", type: "dir" }]),
          (sel(r).entries = [{ path: "l", type: "symlink", mode: 0o777, uid: 0, gid: 0, target: "/" }, entry("l/x")])
        ),
        /"l\/x" is below "l", which is a symlink/,
      ],
      [
        (r) => (
          (sel(r).root = { kind: "stage", stage: "build", plan: 0 }), delete sel(r).matches, delete sel(r).entries
        ),
        /root\.plan: no nested plan can be named here/,
      ],
      [
        (r) => (sel(r).root = { kind: "stage", stage: "build", plan: 0 }),
        /resolved by the server: send no matches or entries/,
      ],
      [
        (r) => ((sel(r).root = { kind: "image", ref: "busybox" }), delete sel(r).location),
        /resolved by the server: send no matches or entries/,
      ],
      [
        (r) => (r.steps[1].inputs = [{ kind: "url", name: "url0", url: "file:///etc/shadow" }]),
        /inputs\[0\]\.url: expected an http:\/\/ or https:\/\/ URL/,
      ],
      [
        (r) => (r.steps[1].inputs = [{ kind: "stages", name: "stages", plans: [3] }]),
        /inputs\[0\]\.plans\[0\]: no nested plan/,
      ],
      [
        (r) =>
          (r.plans = [
            {
              builderVersion: "2026.11",
              steps: [
                { ...r.steps[1], base: { kind: "scratch" }, inputs: [{ kind: "stages", name: "s", plans: [0] }] },
              ],
            },
          ]),
        /plans\[0\]\.steps\[0\]\.inputs\[0\]\.plans\[0\]: no nested plan/,
      ],
      // A nested plan's secrets are the build's (the request's "secrets"), not its own.
      [
        (r) => (r.plans = [{ builderVersion: "2026.11", steps: [r.steps[0]], secrets: [{ TOKEN: "v" }] }]),
        /plans\[0\]: unknown field "secrets" \(allowed: builderVersion, steps\)/,
      ],
      [
        (r) => (r.steps[1].instructions[0].op = "ADD") && (r.steps[1].instructions[0].unpack = "yes"),
        /instructions\[0\]\.unpack: expected true or false/,
      ],
      [
        (r) =>
          (r.steps[1].instructions = [{ op: "RUN", command: "true", mounts: [{ type: "secret", id: "bad-name" }] }]),
        /mounts\[0\]\.id: "bad-name" is not a valid secret name/,
      ],
      [
        (r) =>
          (r.steps[1].instructions = [
            { op: "RUN", command: "true", mounts: [{ type: "cache", id: "c", target: "/c", sharing: "sometimes" }] },
          ]),
        /mounts\[0\]\.sharing: expected one of shared, private, locked/,
      ],
      [
        (r) => (r.steps[1].instructions = [{ op: "COPY", source: "src", dest: "relative" }]),
        /instructions\[0\]\.dest: expected an absolute path/,
      ],
      [(r) => (r.steps[1].buildArgs = [["A"]]), /buildArgs\[0\]: expected a \[name, value\] pair/],
    ];
    for (const [mutate, message] of cases) {
      const req = request();
      mutate(req);
      const r = await post(req);
      assert.equal(r.status, 400, `${message}: ${r.text}`);
      assert.equal(r.json().error.code, "BAD_REQUEST");
      assert.match(r.json().error.message, message);
      // The same validator runs in-process (the client can check a request before sending it).
      assert.throws(
        () => parseBuildRequest(req),
        (e: unknown) => e instanceof WireError && message.test(e.message),
      );
    }
  });
});
