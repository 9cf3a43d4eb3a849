// HTTPS end to end: `strata serve --tls-cert --tls-key` with a certificate from a throw-away CA (openssl), and
// `strata build` with an https STRATA_SERVER and STRATA_CA_FILE builds on it; without the CA file the client refuses
// the server and says to set it; plain HTTP to the TLS port fails; SIGHUP serves a renewed certificate;
// `--metrics-listen` serves /metrics apart from the API; a handshake that trickles in is closed.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import tls from "node:tls";
import { after, test } from "node:test";
import { spawnServe } from "../support/service.js";
import { trickle } from "../support/slow-client.js";
import { buildJson, scratchSpace, SHARED_HOME, strata } from "../support/strata.js";
import { issueServerCert, makeTestCa } from "../support/tls.js";

const space = scratchSpace();
after(() => space.cleanup());

function peerSerial(url: string, ca: Buffer): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: u.hostname, port: Number(u.port), ca, servername: undefined }, () => {
      resolve(s.getPeerCertificate().serialNumber.toUpperCase().replace(/^0+/, ""));
      s.end();
    });
    s.on("error", reject);
  });
}

test("strata build over HTTPS: STRATA_CA_FILE trusts the server's CA; without it a clear refusal; SIGHUP renews", async () => {
  const dir = await space.scratch();
  const ca = await makeTestCa(dir);
  const cert = await issueServerCert(ca, "server");
  const token = "tls-token-" + Date.now();
  const serve = await spawnServe({ STRATA_HOME: SHARED_HOME, STRATA_TOKEN: token }, [
    "--tls-cert",
    cert.certFile,
    "--tls-key",
    cert.keyFile,
    "--metrics-listen",
    "127.0.0.1:0",
  ]);
  try {
    assert.match(serve.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    // A handshake that trickles in (a ClientHello record header, then a byte a second) is closed by the handshake
    // timeout (the header timeout, 20 s): checked at the end.
    const slowHello = trickle(serve.url, {
      head: "\x16\x03\x01\x02\x00",
      drip: "\x01",
      intervalMs: 1000,
      maxMs: 60_000,
    });
    assert.match(serve.stderr(), /listening on https:\/\/127\.0\.0\.1:\d+ .*TLS/);
    const { def } = await space.project(`export default base.runCommands("echo over-tls > /t");\n`);

    const env = { STRATA_SERVER: serve.url, STRATA_TOKEN: token };
    const untrusted = await strata(["build", def], { env });
    assert.notEqual(untrusted.code, 0);
    assert.match(untrusted.stderr, /not signed by a CA this client trusts: set STRATA_CA_FILE/);

    const built = await buildJson(def, [], { env: { ...env, STRATA_CA_FILE: ca.caFile } });
    assert.match(built.stderr, /=> Step \d+: runCommands echo over-tls > \/t/);
    assert.match(built.imageId, /^sha256:[0-9a-f]{64}$/);

    // Plain HTTP to the TLS port gets no HTTP answer.
    const plain = await new Promise<string>((resolve) => {
      const req = http.get(serve.url.replace("https:", "http:") + "/v1/images/x", { agent: false }, (res) =>
        resolve(`status ${res.statusCode}`),
      );
      req.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    assert.doesNotMatch(plain, /^status 2/);

    // Renewal: new files in place, SIGHUP, and new connections get the new certificate.
    const caPem = await fsp.readFile(ca.caFile);
    assert.equal(await peerSerial(serve.url, caPem), cert.serial.replace(/^0+/, ""));
    const renewed = await issueServerCert(ca, "renewed");
    await fsp.copyFile(renewed.certFile, cert.certFile);
    await fsp.copyFile(renewed.keyFile, cert.keyFile);
    serve.child.kill("SIGHUP");
    const t0 = Date.now();
    while (!/reloaded the TLS certificate/.test(serve.stderr())) {
      if (Date.now() - t0 > 10_000) throw new Error(`no reload: ${serve.stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await peerSerial(serve.url, caPem), renewed.serial.replace(/^0+/, ""));

    // The metrics listener (plain HTTP, its own port) answers; this server has no metrics token.
    const m = /metrics on (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(serve.stderr());
    assert.ok(m, serve.stderr());
    const scrape = await fetch(`${m[1]}/metrics`);
    assert.equal(scrape.status, 200);
    assert.match(await scrape.text(), /^# HELP strata_builds_total /m);

    const hello = await slowHello.closed;
    assert.ok(
      hello.closedAfterMs !== undefined && hello.closedAfterMs < 30_000,
      `slow handshake closed after ${hello.closedAfterMs} ms`,
    );
  } finally {
    serve.child.kill("SIGTERM");
    await serve.exited;
  }
});
