// The proxy variables a Dockerfile RUN gets from the build args (BuildKit's proxyEnvFromBuildArgs + proxyEnvList).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { proxyEnvFromBuildArgs } from "../../src/dockerfile/proxy-env.js";

describe("proxyEnvFromBuildArgs", () => {
  test("a proxy arg in either case sets both spellings", () => {
    assert.deepEqual(proxyEnvFromBuildArgs({ http_proxy: "hp", NO_PROXY: "np", FOO: "x" }), [
      ["HTTP_PROXY", "hp"],
      ["NO_PROXY", "np"],
      ["http_proxy", "hp"],
      ["no_proxy", "np"],
    ]);
  });
  test("every kind, any case; each spelling takes its own build arg when given, else another's", () => {
    assert.deepEqual(
      proxyEnvFromBuildArgs({
        HTTPS_PROXY: "upper",
        https_proxy: "lower",
        Ftp_Proxy: "f",
        all_proxy: "a",
      }),
      [
        ["ALL_PROXY", "a"],
        ["FTP_PROXY", "f"],
        ["HTTPS_PROXY", "upper"],
        ["all_proxy", "a"],
        ["ftp_proxy", "f"],
        ["https_proxy", "lower"],
      ],
    );
  });
  test("an empty value sets nothing; no proxy args, no variables", () => {
    assert.deepEqual(proxyEnvFromBuildArgs({ http_proxy: "" }), []);
    assert.deepEqual(proxyEnvFromBuildArgs({ HTTP_PROXY: "x", http_proxy: "" }), [["HTTP_PROXY", "x"]]);
    assert.deepEqual(proxyEnvFromBuildArgs({ Http_Proxy: "m", http_proxy: "l" }), [
      ["HTTP_PROXY", "l"],
      ["http_proxy", "l"],
    ]);
    assert.deepEqual(proxyEnvFromBuildArgs({ OTHER: "o" }), []);
  });
});
