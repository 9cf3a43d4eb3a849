import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { InvalidDefinitionError } from "../../src/errors.js";
import { isInsecureHost, parseReference, registryApiHost } from "../../src/registry/reference.js";

const D = "sha256:" + "a".repeat(64);

interface Case {
  ref: string;
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
  str: string;
}

const valid: Case[] = [
  {
    ref: "ubuntu",
    registry: "docker.io",
    repository: "library/ubuntu",
    tag: "latest",
    str: "docker.io/library/ubuntu:latest",
  },
  {
    ref: "ubuntu:22.04",
    registry: "docker.io",
    repository: "library/ubuntu",
    tag: "22.04",
    str: "docker.io/library/ubuntu:22.04",
  },
  {
    ref: "library/ubuntu",
    registry: "docker.io",
    repository: "library/ubuntu",
    tag: "latest",
    str: "docker.io/library/ubuntu:latest",
  },
  {
    ref: "docker.io/ubuntu",
    registry: "docker.io",
    repository: "library/ubuntu",
    tag: "latest",
    str: "docker.io/library/ubuntu:latest",
  },
  {
    ref: "index.docker.io/ubuntu",
    registry: "docker.io",
    repository: "library/ubuntu",
    tag: "latest",
    str: "docker.io/library/ubuntu:latest",
  },
  {
    ref: "bitnami/redis:7",
    registry: "docker.io",
    repository: "bitnami/redis",
    tag: "7",
    str: "docker.io/bitnami/redis:7",
  },
  // "host" has no '.' or ':' and is not localhost, so Docker reads it as a Docker Hub namespace.
  { ref: `host/x@${D}`, registry: "docker.io", repository: "host/x", digest: D, str: `docker.io/host/x@${D}` },
  { ref: `example.com/x@${D}`, registry: "example.com", repository: "x", digest: D, str: `example.com/x@${D}` },
  { ref: "localhost/x", registry: "localhost", repository: "x", tag: "latest", str: "localhost/x:latest" },
  {
    ref: "localhost:5000/x",
    registry: "localhost:5000",
    repository: "x",
    tag: "latest",
    str: "localhost:5000/x:latest",
  },
  { ref: "127.0.0.1:5000/a/b:t", registry: "127.0.0.1:5000", repository: "a/b", tag: "t", str: "127.0.0.1:5000/a/b:t" },
  {
    ref: `x:t@${D}`,
    registry: "docker.io",
    repository: "library/x",
    tag: "t",
    digest: D,
    str: `docker.io/library/x:t@${D}`,
  },
  {
    ref: `ghcr.io/org/team/app:v1.2.3-rc_1@${D}`,
    registry: "ghcr.io",
    repository: "org/team/app",
    tag: "v1.2.3-rc_1",
    digest: D,
    str: `ghcr.io/org/team/app:v1.2.3-rc_1@${D}`,
  },
  { ref: "[::1]:5000/img:1", registry: "[::1]:5000", repository: "img", tag: "1", str: "[::1]:5000/img:1" },
  {
    ref: "my-registry.local:443/a.b/c_d/e__f/g-h--i",
    registry: "my-registry.local:443",
    repository: "a.b/c_d/e__f/g-h--i",
    tag: "latest",
    str: "my-registry.local:443/a.b/c_d/e__f/g-h--i:latest",
  },
  {
    ref: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:prod",
    registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    repository: "app",
    tag: "prod",
    str: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:prod",
  },
  // Uppercase first component is read as a host (Docker's rule), e.g. a Windows-ish host name.
  { ref: "MyHost/app", registry: "MyHost", repository: "app", tag: "latest", str: "MyHost/app:latest" },
];

const invalid: { ref: string; why: RegExp }[] = [
  { ref: "", why: /empty/ },
  { ref: "Ubuntu", why: /lowercase/ },
  { ref: "docker.io/Library/ubuntu", why: /lowercase/ },
  { ref: "ubuntu:", why: /tag "" is invalid/ },
  { ref: "ubuntu:-x", why: /tag "-x" is invalid/ },
  { ref: "ubuntu:" + "a".repeat(129), why: /tag .* is invalid/ },
  { ref: "ubuntu@sha256:abc", why: /64 lowercase hex/ },
  { ref: "ubuntu@sha256:" + "A".repeat(64), why: /64 lowercase hex/ },
  { ref: "ubuntu@md5:" + "a".repeat(32), why: /only sha256/ },
  { ref: "ubuntu@" + "a".repeat(64), why: /algorithm:hex/ },
  { ref: `ubuntu@${D}@${D}`, why: /more than one '@'/ },
  { ref: "example.com//x", why: /empty path component/ },
  { ref: "example.com/x/", why: /empty path component/ },
  { ref: "example.com/", why: /empty/ },
  { ref: "a/-b", why: /path component "-b"/ },
  { ref: "a/b_", why: /path component "b_"/ },
  { ref: "a/b___c", why: /path component "b___c"/ },
  { ref: "bad_host.com:x/y", why: /registry host/ },
  { ref: "exa mple.com/x", why: /whitespace/ },
  { ref: "https://example.com/x", why: /not a URL/ },
  { ref: "example.com/" + "a".repeat(250), why: /longer than 255/ },
  { ref: ":tag", why: /empty/ },
];

describe("parseReference", () => {
  for (const c of valid) {
    test(`parses ${c.ref}`, () => {
      const r = parseReference(c.ref);
      assert.equal(r.registry, c.registry);
      assert.equal(r.repository, c.repository);
      assert.equal(r.tag, c.tag);
      assert.equal(r.digest, c.digest);
      assert.equal(r.toString(), c.str);
      assert.equal(`${r}`, c.str);
      // Normalisation is idempotent.
      const again = parseReference(r.toString());
      assert.equal(again.toString(), c.str);
    });
  }
  for (const c of invalid) {
    test(`rejects ${JSON.stringify(c.ref.length > 40 ? c.ref.slice(0, 40) + "…" : c.ref)}`, () => {
      assert.throws(
        () => parseReference(c.ref),
        (e: unknown) => {
          assert.ok(e instanceof InvalidDefinitionError, `expected InvalidDefinitionError, got ${String(e)}`);
          assert.match(e.message, /^invalid image reference/);
          assert.match(e.message, c.why);
          return true;
        },
      );
    });
  }
});

describe("registryApiHost", () => {
  test("docker.io is served by registry-1.docker.io", () => {
    assert.equal(registryApiHost("docker.io"), "registry-1.docker.io");
    assert.equal(registryApiHost(parseReference("alpine").registry), "registry-1.docker.io");
    assert.equal(registryApiHost("ghcr.io"), "ghcr.io");
    assert.equal(registryApiHost("localhost:5000"), "localhost:5000");
  });
});

describe("isInsecureHost", () => {
  test("loopback hosts speak plain HTTP", () => {
    for (const h of [
      "localhost",
      "localhost:5000",
      "127.0.0.1",
      "127.0.0.1:5000",
      "127.1.2.3:80",
      "[::1]",
      "[::1]:5000",
      "LOCALHOST:1",
    ]) {
      assert.equal(isInsecureHost(h), true, h);
    }
  });
  test("other hosts use HTTPS unless listed in STRATA_INSECURE_REGISTRIES", () => {
    const saved = process.env.STRATA_INSECURE_REGISTRIES;
    try {
      delete process.env.STRATA_INSECURE_REGISTRIES;
      for (const h of [
        "docker.io",
        "ghcr.io",
        "127.0.0.1.example.com",
        "128.0.0.1:5000",
        "localhost.example.com",
        "10.0.0.1:5000",
        "[::2]:5000",
        "127.0.0.256",
      ]) {
        assert.equal(isInsecureHost(h), false, h);
      }
      process.env.STRATA_INSECURE_REGISTRIES = " reg.internal:5000 , build-cache.lan,";
      assert.equal(isInsecureHost("reg.internal:5000"), true);
      assert.equal(isInsecureHost("reg.internal:5001"), false);
      assert.equal(isInsecureHost("build-cache.lan"), true);
      assert.equal(isInsecureHost("build-cache.lan:8080"), true);
      assert.equal(isInsecureHost("ghcr.io"), false);
    } finally {
      if (saved === undefined) delete process.env.STRATA_INSECURE_REGISTRIES;
      else process.env.STRATA_INSECURE_REGISTRIES = saved;
    }
  });
});
