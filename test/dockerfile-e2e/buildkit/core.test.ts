// Ported from BuildKit frontend/dockerfile/dockerfile_core_test.go (see ../README.md for the table).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import { after, before, describe, test } from "node:test";
import { buildkitHarness, withBusybox } from "./harness.js";
import { tarOf } from "./tar.js";

const bk = buildkitHarness();
before(bk.start);
after(bk.stop);

describe("dockerfile_core_test.go", { concurrency: 4 }, () => {
  test("testDockerfileDirs", async () => {
    const dockerfile =
      "FROM busybox\nCOPY foo /foo2\nCOPY foo /\nRUN echo -n bar > foo3\nRUN test -f foo\nRUN cmp -s foo foo2\nRUN cmp -s foo foo3\n";
    const r = await bk.build({ dockerfile, files: { foo: { content: "bar", mode: 0o600 } } });
    assert.equal(await r.readFile("/foo3"), "bar");
    // Different context and Dockerfile directories.
    const r2 = await bk.build({ dockerfile, files: { foo: "bar" }, separateDockerfileDir: true });
    assert.equal(await r2.readFile("/foo3"), "bar");
  });

  test("testSymlinkedDockerfile", async () => {
    const r = await bk.build({
      dockerfile: "FROM scratch\nENV foo bar\n",
      dockerfileName: "Dockerfile.web",
      files: { Dockerfile: { symlink: "Dockerfile.web" } },
      buildFile: "Dockerfile",
    });
    assert.ok((await r.config()).config.Env?.includes("foo=bar"));
  });

  test("testSymlinkDestination", async () => {
    const t = await tarOf([{ name: "symlink", type: "symlink", linkname: "../tmp/symlink-target", mode: 0o755 }]);
    const r = await bk.build({
      dockerfile: "FROM scratch\nADD t.tar /\nCOPY foo /symlink/\n",
      files: { foo: { content: "content0", mode: 0o600 }, "t.tar": { content: t, mode: 0o600 } },
    });
    assert.equal(await r.readFile("/tmp/symlink-target/foo"), "content0");
  });

  // tonistiigi/fsutil#46: a context path that was a directory in one build and is a file in the next.
  test("testContextChangeDirToFile", async () => {
    const dockerfile = "FROM scratch\nCOPY foo /\n";
    await bk.build({ dockerfile, files: { "foo/bar": { content: "contents", mode: 0o600 } } });
    const r = await bk.build({ dockerfile, files: { foo: { content: "contents2", mode: 0o600 } } });
    assert.equal(await r.readFile("/foo"), "contents2");
  });

  test("testExposeExpansion", async () => {
    const r = await bk.build({ dockerfile: 'FROM scratch\nARG PORTS="3000 4000/udp"\nEXPOSE $PORTS\nEXPOSE 5000\n' });
    const ports = Object.keys((await r.config()).config.ExposedPorts ?? {}).sort();
    assert.deepEqual(ports, ["3000/tcp", "4000/udp", "5000/tcp"]);
  });

  test("testUser", async () => {
    const id = `"$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)"`;
    const r = await bk.build({
      dockerfile: `FROM busybox AS base
RUN mkdir -m 0777 /out
RUN id -un > /out/rootuser

# Make sure our defaults work
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)" = '0:0/root:root' ]

USER root
RUN [ "$(id -G):$(id -Gn)" = '0 10:root wheel' ]

# Setup dockerio user and group
RUN echo 'dockerio:x:1001:1001::/bin:/bin/false' >> /etc/passwd && \\
	echo 'dockerio:x:1001:' >> /etc/group

# Make sure we can switch to our user and all the information is exactly as we expect it to be
USER dockerio
RUN [ ${id} = '1001:1001/dockerio:dockerio/1001:dockerio' ]

# Switch back to root and double check that worked exactly as we might expect it to
USER root
RUN [ ${id} = '0:0/root:root/0 10:root wheel' ] && \\
        # Add a "supplementary" group for our dockerio user
	echo 'supplementary:x:1002:dockerio' >> /etc/group

# ... and then go verify that we get it like we expect
USER dockerio
RUN [ ${id} = '1001:1001/dockerio:dockerio/1001 1002:dockerio supplementary' ]
USER 1001
RUN [ ${id} = '1001:1001/dockerio:dockerio/1001 1002:dockerio supplementary' ]

# super test the new "user:group" syntax
USER dockerio:dockerio
RUN [ ${id} = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER 1001:dockerio
RUN [ ${id} = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER dockerio:1001
RUN [ ${id} = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER 1001:1001
RUN [ ${id} = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER dockerio:supplementary
RUN [ ${id} = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER dockerio:1002
RUN [ ${id} = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER 1001:supplementary
RUN [ ${id} = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER 1001:1002
RUN [ ${id} = '1001:1002/dockerio:supplementary/1002:supplementary' ]

# make sure unknown uid/gid still works properly
USER 1042:1043
RUN [ ${id} = '1042:1043/1042:1043/1043:1043' ]
USER daemon
RUN id -un > /out/daemonuser
FROM scratch
COPY --from=base /out /
USER nobody
`,
    });
    assert.equal(await r.readFile("/rootuser"), "root\n");
    assert.equal(await r.readFile("/daemonuser"), "daemon\n");
    assert.equal((await r.config()).config.User, "nobody");
  });

  // CVE-2023-25173: the primary GID is also in the additional GID list.
  test("testUserAdditionalGids", async () => {
    await bk.build({
      dockerfile: `FROM busybox
SHELL ["/bin/sh", "-euxc"]
RUN [ "$(id)" = "uid=0(root) gid=0(root) groups=0(root),10(wheel)" ]
USER 1234
RUN [ "$(id)" = "uid=1234 gid=0(root) groups=0(root)" ]
USER 1234:1234
RUN [ "$(id)" = "uid=1234 gid=1234 groups=1234" ]
USER daemon
RUN [ "$(id)" = "uid=1(daemon) gid=1(daemon) groups=1(daemon)" ]
`,
    });
  });

  // moby/buildkit#1301
  test("testDockerfileCheckHostname", async () => {
    const dockerfile =
      "FROM busybox\nRUN cat /etc/hosts | grep foo\nRUN echo $HOSTNAME | grep foo\n\tRUN echo $(hostname) | grep foo\n\t";
    const cases: [string, { hostname?: string; buildArgs?: Record<string, string> }][] = [
      ["meta", { hostname: "foo" }],
      ["arg", { buildArgs: { BUILDKIT_SANDBOX_HOSTNAME: "foo" } }],
      ["meta and arg", { hostname: "bar", buildArgs: { BUILDKIT_SANDBOX_HOSTNAME: "foo" } }],
    ];
    for (const [name, opts] of cases)
      await bk.build({ dockerfile, ...opts }).catch((e: Error) => assert.fail(`${name}: ${e.message}`));
    // Not a hostname: refused before anything runs, naming where it came from.
    await assert.rejects(
      bk.build({ dockerfile, buildArgs: { BUILDKIT_SANDBOX_HOSTNAME: "no such host" } }),
      /build arg BUILDKIT_SANDBOX_HOSTNAME: "no such host" is not a valid hostname/,
    );
  });

  test("testStepNames", async () => {
    const r = await bk.build({
      dockerfile:
        'FROM busybox AS base\nWORKDIR /out\nRUN echo "base" > base\nFROM scratch\nCOPY --from=base --chmod=0644 /out /out\n',
    });
    // BuildKit's vertex names, in Strata's step lines: the progress name, then the location, then the instruction.
    const log = r.log.join("\n");
    assert.match(log, /\[base 3\/3\] \S*Dockerfile:3:1 RUN echo "base" > base/);
    assert.match(log, /\[stage-1 1\/1\] \S*Dockerfile:5:1 COPY --from=base --chmod=0644 \/out \/out/);
  });

  test("testTargetMistype", async () => {
    const err = await bk.buildFails({
      dockerfile: "FROM scratch AS build\nCOPY Dockerfile /out\n\nFROM scratch\nCOPY --from=build /out /\n",
      target: "bulid",
    });
    assert.match(err.message, /target stage "bulid" could not be found \(did you mean build\?\)/);
  });
});

// Alone: it counts what the store holds, so no other build may run meanwhile.
describe("dockerfile_core_test.go (store contents)", () => {
  test("testNoSnapshotLeak", async () => {
    const opts = { dockerfile: "FROM scratch\nCOPY foo /\n", files: { foo: { content: "contents", mode: 0o600 } } };
    const layout = bk.store.layout;
    const count = async () => {
      const n: Record<string, number> = {};
      for (const d of [layout.blobsDir, layout.layersDir, layout.imagesDir, layout.tmpDir])
        n[d] = (await fsp.readdir(d).catch(() => [])).length;
      return n;
    };
    await bk.build(opts);
    const before = await count();
    await bk.build(opts);
    assert.deepEqual(await count(), before);
  });
});

describe("harness", () => {
  test("withBusybox rewrites Docker Hub's busybox in FROM and --from, and nothing else", () => {
    const ref = "127.0.0.1:5000/library/busybox:latest";
    assert.equal(
      withBusybox(
        "FROM busybox AS a\nFROM --platform=$BUILDPLATFORM busybox:1.36\nFROM docker.io/library/busybox:latest\n" +
          "COPY --from=busybox /bin/sh /x\nRUN --mount=type=bind,from=busybox,target=/b true\nRUN echo busybox\n" +
          "FROM mybusybox\nFROM busybox-extra\n",
        ref,
      ),
      `FROM ${ref} AS a\nFROM --platform=$BUILDPLATFORM ${ref}\nFROM ${ref}\n` +
        `COPY --from=${ref} /bin/sh /x\nRUN --mount=type=bind,from=${ref},target=/b true\nRUN echo busybox\n` +
        "FROM mybusybox\nFROM busybox-extra\n",
    );
  });

  // BuildKit's `label:bar` attribute is `--label bar=baz` (`labels`); it reads the config from containerd.
  test("testLabels", async () => {
    const r = await bk.build({ dockerfile: "\nFROM scratch\nLABEL foo=bar\n", labels: { bar: "baz" } });
    const labels = (await r.config()).config.Labels ?? {};
    assert.equal(labels.foo, "bar");
    assert.equal(labels.bar, "baz");
  });
});
