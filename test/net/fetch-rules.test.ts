// The fetch policy's decisions (pure): operator allowances by name, address, range and port; refusals that name the
// policy and the allowance that would change them; plain-HTTP registries; settings from flags and environment.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FetchPolicyConfigError } from "../../src/errors.js";
import {
  decide,
  insecureRefusal,
  parseAllowRule,
  permissiveConfig,
  refusalMessage,
  serviceConfig,
  serviceConfigFrom,
  type ConnectTarget,
  type FetchPolicyConfig,
} from "../../src/net/fetch-rules.js";

const at = (host: string, port: number, address = host): ConnectTarget => ({ host, port, address });
const allowed = (cfg: FetchPolicyConfig, t: ConnectTarget) => decide(cfg, t).allowed;
const withAllow = (...rules: string[]) => serviceConfig({ allow: rules.map((r) => parseAllowRule(r)) });

describe("decide", () => {
  test("the service refuses every non-public address and allows public ones", () => {
    const cfg = serviceConfig();
    for (const a of ["127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1", "::1", "fd00::1", "0.0.0.0", "::"])
      assert.equal(allowed(cfg, at(a, 80)), false, a);
    for (const a of ["::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "::ffff:192.168.0.1"])
      assert.equal(allowed(cfg, at(a, 80)), false, a);
    assert.equal(allowed(cfg, at("8.8.8.8", 443)), true);
    assert.equal(allowed(cfg, at("example.com", 443, "93.184.216.34")), true);
  });
  test("a permissive policy allows everything", () => {
    assert.equal(allowed(permissiveConfig(), at("127.0.0.1", 80)), true);
  });
  test("an address allowance with a port allows that port only", () => {
    const cfg = withAllow("127.0.0.1:5000");
    assert.equal(allowed(cfg, at("127.0.0.1", 5000)), true);
    assert.equal(allowed(cfg, at("127.0.0.1", 5001)), false);
    assert.equal(allowed(cfg, at("127.0.0.2", 5000)), false);
    assert.equal(allowed(cfg, at("::ffff:127.0.0.1", 5000)), true, "the IPv4-mapped form is the same address");
    assert.equal(allowed(cfg, at("localhost", 5000, "127.0.0.1")), true, "a name that resolves to it");
  });
  test("a range allowance allows its addresses on any port; with a port, on that port", () => {
    const cfg = withAllow("10.0.0.0/8", "[fd00::/8]:443");
    assert.equal(allowed(cfg, at("10.255.0.1", 1)), true);
    assert.equal(allowed(cfg, at("11.0.0.1", 1)), true, "public anyway");
    assert.equal(allowed(cfg, at("192.168.0.1", 1)), false);
    assert.equal(allowed(cfg, at("fd00::1", 443)), true);
    assert.equal(allowed(cfg, at("fd00::1", 80)), false);
  });
  test("a host allowance allows that name whatever it resolves to, and no other name to the same address", () => {
    const cfg = withAllow("registry.internal:5000");
    assert.equal(allowed(cfg, at("registry.internal", 5000, "10.1.2.3")), true);
    assert.equal(allowed(cfg, at("REGISTRY.internal.".toLowerCase(), 5000, "10.1.2.3")), true);
    assert.equal(allowed(cfg, at("registry.internal", 5001, "10.1.2.3")), false);
    assert.equal(allowed(cfg, at("evil.example", 5000, "10.1.2.3")), false);
    assert.equal(allowed(cfg, at("10.1.2.3", 5000)), false);
  });
  test("an answer that is not an address is refused", () => {
    assert.equal(allowed(serviceConfig(), at("x.example", 80, "not-an-ip")), false);
  });
});

describe("refusals", () => {
  test("name the policy, the address class and the allowance that would let it through", () => {
    const cfg = serviceConfig();
    const t = at("127.0.0.1", 5000);
    const v = decide(cfg, t);
    assert.ok(!v.allowed);
    assert.equal(
      refusalMessage(cfg, t, v),
      "connecting to 127.0.0.1:5000 is refused by the service's fetch policy: 127.0.0.1 is a loopback address (127.0.0.0/8); an operator can allow it with --allow-fetch 127.0.0.1:5000 (or STRATA_ALLOW_FETCH)",
    );
  });
  test("a name says what it resolved to and suggests allowing the name", () => {
    const cfg = serviceConfig();
    const t = at("rebind.test", 80, "169.254.169.254");
    const v = decide(cfg, t);
    assert.ok(!v.allowed);
    assert.match(v.reason, /^rebind\.test resolved to 169\.254\.169\.254, a link-local address/);
    assert.equal(v.allowWith, "rebind.test:80");
  });
  test("IPv6 allowances are bracketed; mapped forms suggest the IPv4 address", () => {
    const v6 = decide(serviceConfig(), at("::1", 8080));
    assert.ok(!v6.allowed);
    assert.equal(v6.allowWith, "[::1]:8080");
    const mapped = decide(serviceConfig(), at("::ffff:10.0.0.1", 80));
    assert.ok(!mapped.allowed);
    assert.equal(mapped.allowWith, "10.0.0.1:80");
  });
  test("a local restricted policy says which environment variable to set", () => {
    const cfg = { ...serviceConfig(), origin: "local" as const };
    const t = at("10.0.0.1", 80);
    const v = decide(cfg, t);
    assert.ok(!v.allowed);
    assert.match(refusalMessage(cfg, t, v), /STRATA_FETCH_POLICY=restricted.*STRATA_ALLOW_FETCH=10\.0\.0\.1:80/);
  });
});

describe("plain-HTTP registries", () => {
  test("the service refuses a client's insecure for an unlisted registry, saying how to list it", () => {
    const cfg = serviceConfig({ insecureRegistries: ["registry.lan:5000", "other.lan"] });
    assert.equal(insecureRefusal(cfg, "registry.lan:5000"), undefined);
    assert.equal(insecureRefusal(cfg, "other.lan:1234"), undefined, "a host entry lists every port");
    const msg = insecureRefusal(cfg, "registry.lan:5001");
    assert.match(msg ?? "", /refused by the service's fetch policy.*--insecure-registry registry\.lan:5001/);
    assert.equal(insecureRefusal(permissiveConfig(), "anything:1"), undefined);
  });
});

describe("settings", () => {
  test("allowances parse as host, host:port, address, [v6]:port and ranges; malformed ones say what is expected", () => {
    assert.deepEqual(parseAllowRule("Registry.LAN:5000"), {
      text: "Registry.LAN:5000",
      host: "registry.lan",
      port: 5000,
    });
    assert.equal(parseAllowRule("[::1]:5000").port, 5000);
    assert.equal(parseAllowRule("::1").port, undefined);
    assert.equal(parseAllowRule("10.0.0.0/8").range?.prefix, 8);
    assert.equal(parseAllowRule("::ffff:127.0.0.1").range?.address.family, 4, "mapped allowances are IPv4");
    for (const bad of ["", "10.0.0.1/8", "host:0", "host:99999", "a b", "http://x", "10.0.0.0/33", "[::1]:x"])
      assert.throws(() => parseAllowRule(bad), FetchPolicyConfigError, bad);
  });
  test("flags and environment add up; limits parse with units; flags win over the environment", () => {
    const cfg = serviceConfigFrom(
      { allow: ["127.0.0.1:5000"], insecureRegistries: ["127.0.0.1:5000"], maxBytes: "1MiB", timeout: "90s" },
      {
        STRATA_ALLOW_FETCH: "10.0.0.0/8, registry.lan",
        STRATA_INSECURE_REGISTRIES: "registry.lan:80",
        STRATA_FETCH_MAX_BYTES: "5",
        STRATA_FETCH_IDLE_TIMEOUT: "1500ms",
      },
    );
    assert.deepEqual(
      cfg.allow.map((r) => r.text),
      ["127.0.0.1:5000", "10.0.0.0/8", "registry.lan"],
    );
    assert.deepEqual(cfg.insecureRegistries, ["127.0.0.1:5000", "registry.lan:80"]);
    assert.equal(cfg.maxDownloadBytes, 1024 * 1024);
    assert.equal(cfg.downloadTimeoutMs, 90_000);
    assert.equal(cfg.idleTimeoutMs, 1500);
    assert.throws(() => serviceConfigFrom({ maxBytes: "lots" }, {}), /--fetch-max-bytes "lots"/);
    assert.throws(() => serviceConfigFrom({ timeout: "0s" }, {}), /--fetch-timeout/);
    assert.throws(() => serviceConfigFrom({}, { STRATA_ALLOW_FETCH: "a b" }), /STRATA_ALLOW_FETCH "a b"/);
  });
});
