// Layers end to end: whiteouts, export to OCI layout / docker-archive accepted by skopeo, umoci and podman,
// deep images, secrets, runFunction and users.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { after, describe, test } from "node:test";
import { SHARED_HOME, buildJson, scratchSpace, strata } from "../support/strata.js";

const exec = promisify(execFile);
const space = scratchSpace();
after(() => space.cleanup());
const project = space.project;

describe("layers and export", () => {
  test("a deleted file and a replaced directory survive export + umoci unpack; skopeo and podman accept the export", async () => {
    const { def } = await project(
      `export default base
  .runCommands("mkdir -p /data/sub && echo keep > /data/keep && echo gone > /data/gone && echo old > /data/sub/old && echo base > /replaced-file")
  .runCommands("rm /data/gone && rm -rf /data/sub && mkdir /data/sub && echo new > /data/sub/new && rm /bin/wc")
  .cmd(["sh", "-c", "ls /data /data/sub; cat /data/sub/new"]);\n`,
    );
    const built = await buildJson(def);
    const out = await space.scratch();
    const layout = path.join(out, "layout");
    const ex = await strata(["export", built.imageId, "--oci", layout, "--tag", "t1"]);
    assert.equal(ex.code, 0, ex.stderr);
    // The whiteouts are in the layer as OCI whiteout entries.
    const layerDigest = built.steps[4]!.layer!;
    const tarBytes = gunzipSync(await fsp.readFile(path.join(layout, "blobs/sha256", layerDigest.slice(7))));
    const names = tarNames(tarBytes);
    assert.ok(names.includes("data/.wh.gone"), names.join(","));
    assert.ok(names.includes("data/sub/.wh..wh..opq"), names.join(","));
    assert.ok(names.includes("bin/.wh.wc"), names.join(","));
    const inspect = JSON.parse((await exec("skopeo", ["inspect", `oci:${layout}:t1`])).stdout) as {
      Layers: string[];
      Architecture: string;
    };
    assert.equal(inspect.Architecture, "amd64");
    assert.equal(inspect.Layers.length, 3);
    const bundle = path.join(out, "bundle");
    await exec("umoci", ["unpack", "--image", `${layout}:t1`, bundle]);
    const rootfs = path.join(bundle, "rootfs");
    assert.equal(await fsp.readFile(path.join(rootfs, "data/keep"), "utf8"), "keep\n");
    await assert.rejects(fsp.access(path.join(rootfs, "data/gone")));
    await assert.rejects(fsp.access(path.join(rootfs, "data/sub/old")));
    await assert.rejects(fsp.access(path.join(rootfs, "bin/wc")));
    assert.equal(await fsp.readFile(path.join(rootfs, "data/sub/new"), "utf8"), "new\n");
    // podman: load the docker-archive and run; same output as strata run.
    const archive = path.join(out, "image.tar");
    const tag = `localhost/strata-test:${built.imageId.slice(7, 19)}`;
    assert.equal((await strata(["export", built.imageId, "--docker-archive", archive, "--tag", tag])).code, 0);
    const ours = await strata(["run", built.imageId]);
    assert.equal(ours.code, 0, ours.stderr);
    const podRoot = path.join(out, "podman");
    const podman = [
      "--root",
      path.join(podRoot, "root"),
      "--runroot",
      path.join(podRoot, "runroot"),
      "--runtime",
      "/usr/sbin/runc",
      "--storage-driver",
      "vfs",
      "--cgroup-manager",
      "cgroupfs",
      "--events-backend",
      "none",
    ];
    try {
      await exec("podman", [...podman, "load", "-i", archive]);
      // podman's default ulimits exceed this machine's hard limits: run with none (inherit ours).
      const conf = path.join(out, "containers.conf");
      await fsp.writeFile(conf, "[containers]\ndefault_ulimits = []\n");
      const theirs = await exec("podman", [...podman, "run", "--rm", "--network", "none", tag], {
        env: { ...process.env, CONTAINERS_CONF: conf },
      });
      assert.equal(theirs.stdout, ours.stdout);
      assert.equal(ours.stdout, "/data:\nkeep\nsub\n\n/data/sub:\nnew\nnew\n");
    } finally {
      await exec("podman", [...podman, "rmi", "-a", "-f"]).catch(() => undefined);
    }
  });

  test("COPY into existing and symlinked directories stays inside the image and merges with what is there", async () => {
    const { def } = await project(
      `export default base.runCommands("mkdir -p /srv/app /host-escape-check && echo old > /srv/app/old.txt && chmod 750 /srv/app && ln -s /srv/app /abs && ln -s /tmp /tmplink")
  .addLocalDir("./app", "/srv/app", { copy: true })
  .addLocalDir("./more", "/abs/more", { copy: true })
  .addLocalFile("./one.txt", "/tmplink/one.txt", { copy: true });\n`,
      { "app/new.txt": "new\n", "more/m.txt": "m\n", "one.txt": "one\n" },
    );
    const built = await buildJson(def);
    const run = await strata([
      "run",
      built.imageId,
      "--",
      "sh",
      "-c",
      "cat /srv/app/old.txt /srv/app/new.txt /srv/app/more/m.txt /tmp/one.txt; stat -c %a /srv/app; test -L /abs && echo link-kept",
    ]);
    assert.equal(run.stdout, "old\nnew\nm\none\n750\nlink-kept\n");
    await assert.rejects(fsp.access("/srv/app/more/m.txt"), "nothing was written through the symlink onto the host");
    await assert.rejects(fsp.access("/tmp/one.txt"));
  });

  test("an image deeper than 100 layers builds and runs (overlay option length is not a limit)", async () => {
    const steps = Array.from({ length: 110 }, (_, i) => `.runCommands("echo ${i} > /f${i}")`).join("");
    const { def } = await project(`export default base${steps};\n`);
    const built = await buildJson(def);
    assert.ok(built.steps.length >= 113);
    const run = await strata(["run", built.imageId, "--", "sh", "-c", "cat /f0 /f109; ls / | grep -c '^f'"]);
    assert.equal(run.stdout, "0\n109\n110\n");
  });

  test("secrets reach the step as env but never the layer, config, key, or saved log", async () => {
    const secret = `s3cr3t-${Date.now()}-value`;
    const { def } = await project(
      `export default base.runCommands("echo token=$API_TOKEN; echo \${#API_TOKEN} > /checked", { secrets: [Secret.fromLocalEnv(["API_TOKEN"])] });\n`,
    );
    const r = await strata(["build", def, "--json"], { env: { API_TOKEN: secret } });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stderr.includes(secret), "streamed log is redacted");
    assert.match(r.stderr, /token=\*\*\*/);
    const built = JSON.parse(r.stdout.trim().split("\n").pop()!) as {
      imageId: string;
      steps: { layer: string | null }[];
    };
    assert.equal((await strata(["run", built.imageId, "--", "cat", "/checked"])).stdout, `${secret.length}\n`);
    const inspect = await strata(["inspect", built.imageId]);
    assert.ok(!inspect.stdout.includes(secret));
    // Nothing anywhere in the store mentions it (layers, configs, records, index, logs).
    const grep = await exec("grep", ["-rl", "--binary-files=text", secret, SHARED_HOME, "--exclude-dir=layers"]).then(
      (x) => x.stdout,
      () => "",
    );
    assert.equal(grep, "");
    for (const s of built.steps) {
      if (!s.layer) continue;
      const blob = gunzipSync(await fsp.readFile(path.join(SHARED_HOME, "blobs/sha256", s.layer.slice(7))));
      assert.ok(!blob.includes(secret));
    }
  });

  test("runFunction runs with the builder's node in an image without node, and its source and args are keyed", async () => {
    const { def } = await project(
      `export default base.runFunction(async (name: string, n: number) => {
  const fs = await import("node:fs");
  fs.writeFileSync("/from-fn", name + ":" + n + ":" + process.version);
}, { args: ["strata", 2] });\n`,
    );
    const a = await buildJson(def);
    const out = await strata(["run", a.imageId, "--", "cat", "/from-fn"]);
    assert.equal(out.stdout, `strata:2:${process.version}`);
    // The builder's node and the function module never enter the layer.
    const ls = await strata(["run", a.imageId, "--", "ls", "-a", "/"]);
    assert.doesNotMatch(ls.stdout, /\.strata/);
    await fsp.writeFile(def, (await fsp.readFile(def, "utf8")).replace(`args: ["strata", 2]`, `args: ["strata", 3]`));
    const b = await buildJson(def);
    assert.equal(b.steps[b.steps.length - 1]!.cached, false);
    assert.equal((await strata(["run", b.imageId, "--", "cat", "/from-fn"])).stdout, `strata:3:${process.version}`);
  });

  test("user, workdir and env apply to later steps and to run; copy:false files are added at the end", async () => {
    const { def } = await project(
      `export default base.runCommands("mkdir -p /home/app && chown app:app /home/app").user("app").workdir("/home/app")
  .env({ WHO: "me" }).runCommands("id -u > uid.txt; echo $WHO $HOME > who.txt")
  .addLocalFile("./note.txt", "/home/app/").addLocalDir("./data", "/data", { ignore: ["*.tmp"] });\n`,
      { "note.txt": "note\n", "data/a.txt": "a\n", "data/skip.tmp": "x\n" },
    );
    const built = await buildJson(def);
    const run = await strata([
      "run",
      built.imageId,
      "--",
      "sh",
      "-c",
      "cat uid.txt who.txt note.txt; ls /data; id -u; pwd",
    ]);
    assert.equal(run.stdout, "1000\nme /home/app\nnote\na.txt\n1000\n/home/app\n");
  });
});

/** Entry names of an uncompressed tar. */
function tarNames(buf: Buffer): string[] {
  const names: string[] = [];
  let off = 0;
  let longName: string | undefined;
  while (off + 512 <= buf.length) {
    const header = buf.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const name = header.subarray(0, 100).toString().replace(/\0.*$/s, "");
    const prefix = header.subarray(345, 500).toString().replace(/\0.*$/s, "");
    const size = parseInt(header.subarray(124, 136).toString().replace(/\0.*$/s, "").trim() || "0", 8);
    const type = String.fromCharCode(header[156]!);
    const body = buf.subarray(off + 512, off + 512 + size);
    if (type === "x") {
      const m = /\d+ path=([^\n]*)\n/.exec(body.toString());
      longName = m?.[1];
    } else {
      names.push(longName ?? (prefix ? `${prefix}/${name}` : name));
      longName = undefined;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return names;
}
