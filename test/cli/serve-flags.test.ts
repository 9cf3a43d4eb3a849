// strata serve's front-door, quota, TLS and metrics flags (pure parsing): a flag wins over its STRATA_* variable,
// sizes and durations take units, bad values are ConfigErrors naming the flag or variable.
import assert from "node:assert/strict";
import { test } from "node:test";
import { doorConfig, hostPort } from "../../src/cli/serve-flags.js";
import { ConfigError } from "../../src/errors.js";

test("doorConfig: flags, their environment variables, units; unset values are left to the defaults", () => {
  const c = doorConfig(
    { "max-connections": "200", "header-timeout": "15s", "tenant-store-bytes": "10GiB", "tenant-max-running": "2" },
    { STRATA_MAX_CONNECTIONS: "999", STRATA_TENANT_UPLOAD_PER_HOUR: "512m", STRATA_IDLE_TIMEOUT: "2m" },
  );
  assert.deepEqual(c.frontDoor, { maxConnections: 200, headersTimeoutMs: 15_000, idleTimeoutMs: 120_000 });
  assert.deepEqual(c.quotas, { maxUploadBytesPerWindow: 512 * 1024 ** 2, maxStoreBytes: 10 * 1024 ** 3 });
  assert.equal(c.maxRunningPerTenant, 2);
  assert.equal(c.tls, undefined);
  assert.deepEqual(doorConfig({}, {}), { frontDoor: {}, quotas: {} });
});

test("doorConfig: TLS needs both files; --metrics-listen takes HOST:PORT, [v6]:PORT or a port", () => {
  assert.deepEqual(doorConfig({ "tls-cert": "c.pem", "tls-key": "k.pem" }, {}).tls, {
    certFile: "c.pem",
    keyFile: "k.pem",
  });
  assert.throws(() => doorConfig({ "tls-cert": "c.pem" }, {}), /--tls-cert needs --tls-key/);
  assert.deepEqual(hostPort("0.0.0.0:9464", "x"), { host: "0.0.0.0", port: 9464 });
  assert.deepEqual(hostPort("[::1]:9464", "x"), { host: "::1", port: 9464 });
  assert.deepEqual(hostPort("9464", "x"), { host: "127.0.0.1", port: 9464 });
  assert.throws(() => hostPort("host:99999", "--metrics-listen"), /--metrics-listen: expects HOST:PORT/);
});

test("doorConfig: bad values are ConfigErrors that name the flag or variable", () => {
  for (const [values, env, re] of [
    [{ "max-connections": "0" }, {}, /--max-connections: expects a whole number ≥ 1/],
    [{}, { STRATA_MAX_CONNECTIONS_PER_CLIENT: "-1" }, /STRATA_MAX_CONNECTIONS_PER_CLIENT: expects a whole number ≥ 0/],
    [{ "header-timeout": "soon" }, {}, /--header-timeout: "soon" is not a duration/],
    [{ "tenant-upload-in-flight": "lots" }, {}, /--tenant-upload-in-flight: invalid size "lots"/],
  ] as const) {
    assert.throws(
      () => doorConfig(values, env),
      (e: unknown) => e instanceof ConfigError && re.test(e.message),
    );
  }
});
