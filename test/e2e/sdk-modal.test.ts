// Modal parity end to end (issue 13, items 4 and 5): Dockerfile steps of the SDK give every RUN the secrets as env
// (a secret mount keeps BuildKit's meaning; `strata build -f --secret` keeps BuildKit's meaning throughout); `~` in
// local paths; `ignore` predicates; a relative workdir.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { buildJson, makeBusyboxTree, scratchSpace, strata } from "../support/strata.js";

const space = scratchSpace();
after(() => space.cleanup());

const SECRET = "s3cret-value-9f2";
/** A check of $TOKEN in a RUN that does not spell out the value (a step's command is logged): its length and end. */
const CHECK = `test "\${#TOKEN}" = ${SECRET.length} && test "\${TOKEN%-9f2}" != "$TOKEN"`;

/** Asserts the image holds no file containing the secret value, and the build output never shows it. */
async function assertNoSecret(imageId: string, output: string): Promise<void> {
  assert.ok(!output.includes(SECRET), "the value is not in the build output");
  const grep = await strata([
    "run",
    imageId,
    "-e",
    `PAT=${SECRET}`,
    "--",
    "sh",
    "-c",
    'for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rl "$PAT" "$d";; esac; done; true',
  ]);
  assert.equal(grep.stdout, "", "no file in the image holds the value");
}

describe("secrets in Dockerfile steps", () => {
  test("dockerfileCommands: a plain RUN sees the secret as env; a secret mount still mounts it", async () => {
    const { def } = await space.project(
      `export default base.dockerfileCommands(
  ['RUN ${CHECK} && echo env-ok > /env-ok',
   "RUN --mount=type=secret,id=TOKEN wc -c < /run/secrets/TOKEN > /len"],
  { secrets: Secret.fromObject({ TOKEN: "${SECRET}" }) },
);\n`,
    );
    const built = await buildJson(def);
    const r = await strata(["run", built.imageId, "--", "cat", "/env-ok", "/len"]);
    assert.equal(r.stdout, `env-ok\n${SECRET.length}\n`);
    await assertNoSecret(built.imageId, built.stderr);
  });

  test("fromDockerfile: every RUN sees the secrets as env", async () => {
    const dir = await space.scratch();
    await makeBusyboxTree(path.join(dir, "rootfs"));
    await fsp.writeFile(
      path.join(dir, "Dockerfile"),
      `FROM scratch\nCOPY rootfs/ /\nRUN ${CHECK} && echo a > /a\nRUN echo "$TOKEN" | wc -c > /b\n`,
    );
    const def = path.join(dir, "image.ts");
    await fsp.writeFile(
      def,
      `import { Image, Secret } from "strata";\nexport default Image.fromDockerfile("./Dockerfile", { secrets: Secret.fromObject({ TOKEN: "${SECRET}" }) });\n`,
    );
    const built = await buildJson(def);
    const r = await strata(["run", built.imageId, "--", "cat", "/a", "/b"]);
    assert.equal(r.stdout, `a\n${SECRET.length + 1}\n`);
    await assertNoSecret(built.imageId, built.stderr);
  });

  test("strata build -f --secret keeps BuildKit's meaning: only a secret mount sees it", async () => {
    const dir = await space.scratch();
    await makeBusyboxTree(path.join(dir, "rootfs"));
    await fsp.writeFile(
      path.join(dir, "Dockerfile"),
      `FROM scratch\nCOPY rootfs/ /\nRUN test -z "$TOKEN" && echo unset > /plain\nRUN --mount=type=secret,id=TOKEN,env=TOKEN ${CHECK} && echo mounted > /mounted\n`,
    );
    const r = await strata(["build", "-f", path.join(dir, "Dockerfile"), "--secret", "id=TOKEN,env=TOK", dir], {
      env: { TOK: SECRET },
    });
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim().split("\n").pop()!;
    const run = await strata(["run", id, "--", "cat", "/plain", "/mounted"]);
    assert.equal(run.stdout, "unset\nmounted\n");
  });
});

describe("strict options, local paths and workdir", () => {
  test("~ in local paths is the home directory", async () => {
    const home = await space.scratch();
    await fsp.writeFile(path.join(home, "greeting.txt"), "from home\n");
    const { def } = await space.project(
      `export default base.addLocalFile("~/greeting.txt", "/greeting.txt", { copy: true });\n`,
    );
    const built = await buildJson(def, [], { env: { HOME: home } });
    assert.equal((await strata(["run", built.imageId, "--", "cat", "/greeting.txt"])).stdout, "from home\n");
  });

  test("an ignore predicate leaves out what it returns true for (a directory with its subtree)", async () => {
    const { def } = await space.project(
      `export default base.addLocalDir("./data", "/data", { copy: true, ignore: (p) => p === "cache" || p.endsWith(".log") });\n`,
      {
        "data/keep.txt": "k\n",
        "data/run.log": "l\n",
        "data/sub/also.log": "l\n",
        "data/sub/x.txt": "x\n",
        "data/cache/big": "b\n",
      },
    );
    const built = await buildJson(def);
    const r = await strata(["run", built.imageId, "--", "sh", "-c", "cd /data && find . | sort"]);
    assert.equal(r.stdout, ".\n./keep.txt\n./sub\n./sub/x.txt\n");
  });

  test("a relative workdir resolves against the previous one, as Docker's WORKDIR", async () => {
    const { def } = await space.project(
      `export default base.workdir("/srv").workdir("app").runCommands("pwd > /pwd").workdir("../other");\n`,
    );
    const built = await buildJson(def);
    assert.equal((await strata(["run", built.imageId, "--", "cat", "/pwd"])).stdout, "/srv/app\n");
    assert.equal((await strata(["run", built.imageId, "--", "pwd"])).stdout, "/srv/other\n");
  });
});
