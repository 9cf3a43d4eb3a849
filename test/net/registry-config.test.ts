// The registry config parser (buildkitd.toml's [registry."<host>"] sections) and the endpoint order it gives: every
// bad config is a RegistryConfigError naming the file and the key; good ones give mirrors in order, then the registry.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { RegistryConfigError } from "../../src/errors.js";
import { loadRegistryConfig, registryConfigFromEnv } from "../../src/net/registry-config-file.js";
import { normalizeRegistryHost, parseRegistryConfig } from "../../src/net/registry-config.js";
import { registryEndpoints } from "../../src/registry/endpoints.js";

const FILE = "/etc/strata/registries.toml";

function bad(toml: string, key: string | undefined, message: RegExp): void {
  assert.throws(
    () => parseRegistryConfig(toml, FILE),
    (e: unknown) => {
      assert.ok(e instanceof RegistryConfigError, String(e));
      assert.equal(e.file, FILE);
      assert.equal(e.key, key);
      assert.ok(e.message.startsWith(FILE), e.message);
      assert.match(e.message, message);
      return true;
    },
  );
}

describe("parseRegistryConfig: good configs", () => {
  test("an empty file has no registries", () => {
    assert.equal(parseRegistryConfig("", FILE).registries.size, 0);
    assert.equal(parseRegistryConfig("# nothing\n", FILE).file, FILE);
  });

  test("BuildKit's example: mirrors in order, the mirror's own section gives http and insecure", () => {
    const c = parseRegistryConfig(
      `[registry."docker.io"]
  mirrors = ["yourmirror.local:5000", "core.harbor.domain/proxy.docker.io"]

[registry."yourmirror.local:5000"]
  http = true
  insecure = true
`,
      FILE,
    );
    const hub = c.registries.get("docker.io")!;
    assert.deepEqual(
      hub.mirrors.map((m) => [m.host, m.path, m.scheme]),
      [
        ["yourmirror.local:5000", "", undefined],
        ["core.harbor.domain", "/proxy.docker.io", undefined],
      ],
    );
    assert.equal(hub.http, undefined);
    const m = c.registries.get("yourmirror.local:5000")!;
    assert.equal(m.http, true);
    assert.equal(m.insecure, true);
    assert.deepEqual(m.mirrors, []);
  });

  test("host names are case-insensitive; index.docker.io is docker.io", () => {
    const c = parseRegistryConfig(`[registry."Index.Docker.IO"]\nmirrors = ["Mirror.Example:5000/"]\n`, FILE);
    assert.deepEqual([...c.registries.keys()], ["docker.io"]);
    assert.equal(c.registries.get("docker.io")!.mirrors[0]!.host, "mirror.example:5000");
    assert.equal(c.registries.get("docker.io")!.mirrors[0]!.path, "");
  });

  test("IPv6 literals, schemes and dotted tables", () => {
    const c = parseRegistryConfig(
      `registry."ghcr.io".mirrors = ["https://[fd00::1]:5000/v2/a/b", "http://127.0.0.5"]\n[registry."[fd00::1]:5000"]\nca = ["ca.pem"]\n`,
      FILE,
    );
    const ghcr = c.registries.get("ghcr.io")!;
    assert.deepEqual(
      ghcr.mirrors.map((m) => [m.host, m.path, m.scheme]),
      [
        ["[fd00::1]:5000", "/v2/a/b", "https"],
        ["127.0.0.5", "", "http"],
      ],
    );
    assert.deepEqual(c.registries.get("[fd00::1]:5000")!.ca, ["/etc/strata/ca.pem"], "relative to the file");
  });

  test("normalizeRegistryHost", () => {
    assert.equal(normalizeRegistryHost("localhost:5000"), "localhost:5000");
    assert.equal(normalizeRegistryHost("a.b"), "a.b");
    assert.equal(normalizeRegistryHost("a.b:0"), undefined);
    assert.equal(normalizeRegistryHost("a.b:65536"), undefined);
    assert.equal(normalizeRegistryHost("-a.b"), undefined);
    assert.equal(normalizeRegistryHost("a/b"), undefined);
    assert.equal(normalizeRegistryHost(""), undefined);
  });
});

describe("parseRegistryConfig: every bad config names the file and the key", () => {
  test("TOML syntax errors carry line and column", () => {
    bad(
      `[registry."docker.io"]\nmirrors = ["a"\n`,
      undefined,
      /^\/etc\/strata\/registries\.toml:3:1: not valid TOML: /,
    );
    bad(`[registry."docker.io"\n`, undefined, /:1:\d+: not valid TOML/);
    bad(`a = 1\na = 2\n`, undefined, /:2:\d+: not valid TOML/);
  });

  test("only [registry] at the top", () => {
    bad(
      `debug = true\n`,
      "debug",
      /unknown key "debug" \(a registry config holds only \[registry\."<host>"\] sections/,
    );
    bad(`[worker.oci]\nenabled = true\n`, "worker", /unknown key "worker"/);
    bad(`registry = 1\n`, "registry", /registry: expected \[registry\."<host>"\] sections, got a number/);
    bad(`registry = [1]\n`, "registry", /got an array/);
  });

  test("section names must be hosts", () => {
    bad(
      `[registry."https://docker.io"]\n`,
      'registry."https://docker.io"',
      /is not a registry host\[:port\] \(no scheme or path/,
    );
    bad(`[registry."docker.io/library"]\n`, 'registry."docker.io/library"', /not a registry host/);
    bad(`[registry."x:99999"]\n`, 'registry."x:99999"', /not a registry host/);
    bad(`[registry.""]\n`, 'registry.""', /not a registry host/);
    bad(`[registry]\n"docker.io" = 1\n`, 'registry."docker.io"', /expected a table, got a number/);
    bad(
      `[registry."docker.io"]\nhttp = true\n[registry."index.docker.io"]\nhttp = false\n`,
      'registry."index.docker.io"',
      /a second section for docker\.io/,
    );
  });

  test("unknown and unsupported keys", () => {
    bad(
      `[registry."docker.io"]\nmirror = ["a"]\n`,
      'registry."docker.io".mirror',
      /unknown key \(a registry's section takes mirrors, http, insecure, ca\)/,
    );
    bad(
      `[registry."docker.io"]\n[[registry."docker.io".keypair]]\nkey = "k"\ncert = "c"\n`,
      'registry."docker.io".keypair',
      /not supported by Strata \(client certificates/,
    );
    bad(
      `[registry."docker.io"]\ntlsconfigdir = ["/x"]\n`,
      'registry."docker.io".tlsconfigdir',
      /not supported by Strata/,
    );
  });

  test("wrong types", () => {
    bad(
      `[registry."docker.io"]\nhttp = "yes"\n`,
      'registry."docker.io".http',
      /expected true or false, got a string \("yes"\)/,
    );
    bad(
      `[registry."docker.io"]\ninsecure = 1\n`,
      'registry."docker.io".insecure',
      /expected true or false, got a number/,
    );
    bad(
      `[registry."docker.io"]\nmirrors = "m:5000"\n`,
      'registry."docker.io".mirrors',
      /expected an array of strings, got a string/,
    );
    bad(
      `[registry."docker.io"]\nmirrors = ["a", 2]\n`,
      'registry."docker.io".mirrors[1]',
      /expected a non-empty string, got a number/,
    );
    bad(`[registry."docker.io"]\nmirrors = [""]\n`, 'registry."docker.io".mirrors[0]', /expected a non-empty string/);
    bad(`[registry."docker.io"]\nca = [{}]\n`, 'registry."docker.io".ca[0]', /got a table/);
    bad(`[registry."docker.io"]\nca = "x.pem"\n`, 'registry."docker.io".ca', /expected an array of strings/);
    bad(`[registry."docker.io"]\nhttp = 1979-05-27\n`, 'registry."docker.io".http', /got a date/);
  });

  test("bad mirrors", () => {
    const k = 'registry."docker.io".mirrors[0]';
    const m = (s: string) => `[registry."docker.io"]\nmirrors = [${JSON.stringify(s)}]\n`;
    bad(m("ftp://m"), k, /the scheme must be http:\/\/ or https:\/\/ \(or none\), not ftp:\/\//);
    bad(m("m:5000?x=1"), k, /no query or fragment/);
    bad(m("m#f"), k, /no query or fragment/);
    bad(m("user:pw@m"), k, /no user name or password/);
    bad(m("m_x"), k, /"m_x" is not a host\[:port\]/);
    bad(m("m:0"), k, /not a host\[:port\]/);
    bad(m("http://"), k, /"" is not a host\[:port\]/);
    bad(m("m/../x"), k, /the path segment "\.\." is not allowed/);
    bad(m("m/a b"), k, /the path segment "a b" is not allowed/);
    bad(m("docker.io"), k, /a registry is not its own mirror/);
    bad(
      `[registry."docker.io"]\nmirrors = ["m:5000", "M:5000/"]\n`,
      'registry."docker.io".mirrors[1]',
      /"M:5000\/" repeats registry\."docker\.io"\.mirrors\[0\]/,
    );
  });

  test("a mirror's scheme must agree with its own section", () => {
    bad(
      `[registry."docker.io"]\nmirrors = ["https://m:5000"]\n[registry."m:5000"]\nhttp = true\n`,
      'registry."docker.io".mirrors[0]',
      /says https:\/\/, but registry\."m:5000"\.http = true/,
    );
  });
});

describe("loading the file", () => {
  test("a missing file, a missing CA file and a CA file with no certificate are errors naming them", async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-regconf-"));
    try {
      const file = path.join(dir, "r.toml");
      assert.throws(
        () => loadRegistryConfig(file),
        (e: unknown) => {
          assert.ok(e instanceof RegistryConfigError);
          assert.match(e.message, new RegExp(`the registry config ${file} cannot be read \\(ENOENT\\)`));
          return true;
        },
      );
      await fsp.writeFile(file, `[registry."m:5000"]\nca = ["ca.pem"]\n`);
      assert.throws(
        () => loadRegistryConfig(file),
        (e: unknown) => {
          assert.ok(e instanceof RegistryConfigError);
          assert.equal(e.key, 'registry."m:5000".ca[0]');
          assert.match(e.message, /the CA file .*ca\.pem cannot be read \(ENOENT\)/);
          return true;
        },
      );
      await fsp.writeFile(path.join(dir, "ca.pem"), "not a certificate\n");
      assert.throws(() => loadRegistryConfig(file), /holds no PEM certificate/);
      await fsp.writeFile(path.join(dir, "ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
      const c = loadRegistryConfig(file);
      assert.equal(c.caPems?.get("m:5000")?.length, 1);
      assert.equal(registryConfigFromEnv({ STRATA_REGISTRY_CONFIG: file }).file, file);
      assert.equal(registryConfigFromEnv({}).registries.size, 0);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

describe("registryEndpoints", () => {
  const config = parseRegistryConfig(
    `[registry."docker.io"]
mirrors = ["127.0.0.1:5000", "mirror.example/hub", "http://plain.example", "tls.example:443"]
[registry."tls.example:443"]
http = false
[registry."127.0.0.1:6000"]
http = false
[registry."plain-origin.example"]
http = true
`,
    FILE,
  );

  test("mirrors in order, then the registry (Docker Hub's API host); loopback speaks plain HTTP", () => {
    assert.deepEqual(
      registryEndpoints("docker.io", config).map((e) => [e.label, e.host, e.path, e.http, e.mirror]),
      [
        ["mirror 127.0.0.1:5000", "127.0.0.1:5000", "", true, true],
        ["mirror mirror.example/hub", "mirror.example", "/hub", false, true],
        ["mirror plain.example", "plain.example", "", true, true],
        ["mirror tls.example:443", "tls.example:443", "", false, true],
        ["docker.io", "registry-1.docker.io", "", false, false],
      ],
    );
  });

  test("a registry without mirrors is its only endpoint; its section's http applies, also against loopback", () => {
    assert.deepEqual(
      registryEndpoints("ghcr.io", config).map((e) => [e.host, e.http]),
      [["ghcr.io", false]],
    );
    assert.equal(registryEndpoints("127.0.0.1:6000", config)[0]!.http, false, "http = false wins over loopback");
    assert.equal(registryEndpoints("127.0.0.1:7000", config)[0]!.http, true);
    assert.equal(registryEndpoints("plain-origin.example", config)[0]!.http, true);
  });
});
