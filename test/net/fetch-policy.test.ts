// The fetch policy on real connections (loopback only): refused literals, redirects to a refused host, names that
// resolve to refused addresses (a resolver hook, never real DNS), the connection pinned to the address that was
// checked (DNS rebinding), plain HTTP to unlisted registries, and ADD <url>'s size cap and timeouts.
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { FetchPolicyError } from "../../src/errors.js";
import { fetchUrl, UrlFetchError } from "../../src/engine/fetch-url.js";
import { FetchPolicy, policyRefusal, type Resolver } from "../../src/net/fetch-policy.js";
import { parseAllowRule, serviceConfig } from "../../src/net/fetch-rules.js";
import { RegistryClient } from "../../src/registry/client.js";
import { parseReference } from "../../src/registry/reference.js";
import { tempDir } from "../support/strata.js";

interface Served {
  port: number;
  hits: string[];
  close: () => Promise<void>;
}

async function serve(handler: http.RequestListener, host = "127.0.0.1", port = 0): Promise<Served> {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? "");
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    hits,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const ok: http.RequestListener = (_req, res) => res.end("hello\n");
const policyWith = (allow: string[], more: Parameters<typeof serviceConfig>[0] = {}, resolve?: Resolver) =>
  new FetchPolicy(serviceConfig({ allow: allow.map((r) => parseAllowRule(r)), ...more }), resolve ? { resolve } : {});

async function refusal(p: Promise<unknown>): Promise<FetchPolicyError> {
  const e = await p.then(
    () => assert.fail("expected a refusal"),
    (err: unknown) => err,
  );
  const r = policyRefusal(e);
  assert.ok(r, `a FetchPolicyError in ${String(e)}`);
  return r;
}

let target: Served;
let cacheDir: string;
before(async () => {
  target = await serve(ok);
  cacheDir = await tempDir("strata-fetch-policy-");
});
after(async () => {
  await target.close();
  await fsp.rm(cacheDir, { recursive: true, force: true });
});

describe("connections", () => {
  test("a loopback address is refused by default, before any byte is sent, naming the policy and the allowance", async () => {
    const before = target.hits.length;
    const e = await refusal(policyWith([]).fetch(`http://127.0.0.1:${target.port}/x`));
    assert.match(e.message, /refused by the service's fetch policy: 127\.0\.0\.1 is a loopback address/);
    assert.match(e.message, new RegExp(`--allow-fetch 127\\.0\\.0\\.1:${target.port}`));
    assert.equal(target.hits.length, before, "the server saw no request");
  });

  test("the allowance lets it through; another port stays refused", async () => {
    const res = await policyWith([`127.0.0.1:${target.port}`]).fetch(`http://127.0.0.1:${target.port}/x`);
    assert.equal(await res.text(), "hello\n");
    await refusal(policyWith([`127.0.0.1:${target.port + 1}`]).fetch(`http://127.0.0.1:${target.port}/x`));
  });

  test("IPv4-mapped and [::1] literals are refused too", async () => {
    await refusal(policyWith([]).fetch(`http://[::ffff:127.0.0.1]:${target.port}/`));
    await refusal(policyWith([]).fetch(`http://[::1]:${target.port}/`));
  });

  test("a redirect from an allowed host to a refused one is refused when it connects", async () => {
    const hop = await serve((_req, res) => res.writeHead(302, { location: `http://127.0.0.1:${target.port}/x` }).end());
    try {
      const before = target.hits.length;
      const e = await refusal(policyWith([`127.0.0.1:${hop.port}`]).fetch(`http://127.0.0.1:${hop.port}/start`));
      assert.match(e.message, new RegExp(`connecting to 127\\.0\\.0\\.1:${target.port} is refused`));
      assert.equal(hop.hits.length, 1, "the allowed host was asked");
      assert.equal(target.hits.length, before, "the refused host was not");
    } finally {
      await hop.close();
    }
  });

  test("a name resolving to a refused address is refused after resolution (resolver hook, no real DNS)", async () => {
    // Through fetch, with a loopback answer only: the refusal happens before any connection.
    const local: Resolver = async () => ["127.0.0.1"];
    const viaFetch = await refusal(policyWith([], {}, local).fetch("http://local.test/"));
    assert.match(viaFetch.message, /local\.test resolved to 127\.0\.0\.1, a loopback address/);
    // Other answers are checked by `address`, which connects to nothing: no test sends traffic off loopback.
    const resolve: Resolver = async (h) => (h === "meta.test" ? ["169.254.169.254"] : ["127.0.0.1"]);
    const e = await refusal(policyWith([], {}, resolve).address("meta.test", 80));
    assert.match(e.message, /meta\.test resolved to 169\.254\.169\.254, a link-local address/);
    assert.match(e.message, /--allow-fetch meta\.test:80/);
    // One refused address among public ones refuses the name: nothing is half-used.
    const mixed: Resolver = async () => ["8.8.8.8", `::ffff:127.0.0.1`];
    await refusal(policyWith([], {}, mixed).address("mixed.test", 80));
  });

  test("DNS rebinding: the connection goes to the address that was checked, resolved once", async () => {
    // Two servers on one port: 127.0.0.2 (allowed) and 127.0.0.1 (refused). The name answers .2 first, then .1.
    const good = await serve(
      (_req, res) => res.writeHead(200, { connection: "close" }).end("checked address\n"),
      "127.0.0.2",
    );
    const evil = await serve((_req, res) => res.end("rebound address\n"), "127.0.0.1", good.port);
    const answers: string[] = [];
    const resolve: Resolver = async () => {
      const a = answers.length === 0 ? "127.0.0.2" : "127.0.0.1";
      answers.push(a);
      return [a];
    };
    try {
      const policy = policyWith([`127.0.0.2:${good.port}`], {}, resolve);
      const res = await policy.fetch(`http://rebind.test:${good.port}/`);
      assert.equal(await res.text(), "checked address\n");
      assert.deepEqual(answers, ["127.0.0.2"], "one resolution per connection: nothing re-resolves after the check");
      assert.equal(evil.hits.length, 0);
      // The next connection (the server closed this one) resolves again and gets the rebound answer: refused.
      await refusal(policy.fetch(`http://rebind.test:${good.port}/again`));
      assert.equal(evil.hits.length, 0);
    } finally {
      await good.close();
      await evil.close();
    }
  });

  test("a registry client: a loopback registry is refused unless allowed; insecure for an unlisted registry is refused", async () => {
    const ref = parseReference(`127.0.0.1:${target.port}/team/base:1`);
    const e = await refusal(
      new RegistryClient(ref, { fetchPolicy: policyWith([]) }).fetch(
        new URL("/v2/", `http://127.0.0.1:${target.port}`),
      ),
    );
    assert.match(e.message, /^image 127\.0\.0\.1:\d+\/team\/base:1 \(http:\/\/127\.0\.0\.1:\d+\/v2\/\): connecting to/);
    assert.throws(
      () =>
        new RegistryClient(parseReference("registry.example:5000/a:1"), {
          insecure: true,
          fetchPolicy: policyWith([]),
        }),
      (err: unknown) =>
        err instanceof FetchPolicyError &&
        /plain HTTP \(insecure\) to registry registry\.example:5000 is refused by the service's fetch policy.*--insecure-registry registry\.example:5000/.test(
          err.message,
        ),
    );
    const listed = new RegistryClient(parseReference("registry.example:5000/a:1"), {
      insecure: true,
      fetchPolicy: policyWith([], { insecureRegistries: ["registry.example:5000"] }),
    });
    assert.equal(listed.insecure, true);
    assert.equal(new RegistryClient(parseReference("registry.example:5000/a:1"), { insecure: true }).insecure, true);
  });
});

describe("registry auth", () => {
  test("a registry whose token realm points at a refused host gets no request sent there", async () => {
    const fake = await serve((_req, res) =>
      res
        .writeHead(401, { "www-authenticate": `Bearer realm="http://127.0.0.1:${target.port}/token",service="x"` })
        .end(),
    );
    try {
      const before = target.hits.length;
      const client = new RegistryClient(parseReference(`127.0.0.1:${fake.port}/team/base:1`), {
        fetchPolicy: policyWith([`127.0.0.1:${fake.port}`]),
        dockerConfig: false,
      });
      const e = await refusal(client.fetch(client.url("manifests", "1")));
      assert.match(
        e.message,
        /^the token service of registry 127\.0\.0\.1:\d+ .*: connecting to 127\.0\.0\.1:\d+ is refused/,
      );
      assert.equal(target.hits.length, before);
    } finally {
      await fake.close();
    }
  });
});

describe("ADD <url> downloads", () => {
  test("a refused URL fails with an ADD error naming the policy, before the cache or the network", async () => {
    const e = await fetchUrl(`http://127.0.0.1:${target.port}/x`, { cacheDir, policy: policyWith([]) }).then(
      () => assert.fail("refused"),
      (err: unknown) => err,
    );
    assert.ok(e instanceof FetchPolicyError);
    assert.match(e.message, new RegExp(`^ADD http://127\\.0\\.0\\.1:${target.port}/x: connecting to .* fetch policy`));
  });

  test("a download over the size cap fails, with or without a Content-Length, and leaves nothing behind", async () => {
    const big = await serve((req, res) => {
      if (req.url === "/declared") res.writeHead(200, { "content-length": "5000" }).end(Buffer.alloc(5000));
      else {
        res.writeHead(200);
        for (let i = 0; i < 10; i++) res.write(Buffer.alloc(500, i));
        res.end();
      }
    });
    try {
      const policy = policyWith([`127.0.0.1:${big.port}`], { maxDownloadBytes: 1000 });
      for (const p of ["/declared", "/chunked"]) {
        const e = await fetchUrl(`http://127.0.0.1:${big.port}${p}`, { cacheDir, policy }).then(
          () => assert.fail("too large"),
          (err: unknown) => err,
        );
        assert.ok(e instanceof UrlFetchError, String(e));
        assert.match(
          e.message,
          /is larger than the service's fetch policy allows.*the cap is 1000 bytes.*--fetch-max-bytes/,
        );
      }
      assert.deepEqual(
        (await fsp.readdir(cacheDir)).filter((f) => f.startsWith(".tmp-")),
        [],
        "no partial download left",
      );
      const small = policyWith([`127.0.0.1:${big.port}`], { maxDownloadBytes: 5000 });
      assert.equal((await fetchUrl(`http://127.0.0.1:${big.port}/chunked`, { cacheDir, policy: small })).size, 5000);
    } finally {
      await big.close();
    }
  });

  test("a server that stalls mid-body fails after the idle timeout; one that trickles fails at the overall timeout", async () => {
    const slow = await serve((req, res) => {
      res.writeHead(200);
      res.write("first bytes\n");
      if (req.url === "/trickle") {
        const t = setInterval(() => res.write("."), 50);
        res.on("close", () => clearInterval(t));
      }
    });
    try {
      const stall = policyWith([`127.0.0.1:${slow.port}`], { idleTimeoutMs: 300 });
      const t0 = Date.now();
      const e = await fetchUrl(`http://127.0.0.1:${slow.port}/stall`, { cacheDir, policy: stall }).then(
        () => assert.fail("stalled"),
        (err: unknown) => err,
      );
      assert.ok(e instanceof UrlFetchError, String(e));
      assert.match(
        e.message,
        /the server stalled: no data for 0\.3 s \(in the middle of the body\).*--fetch-idle-timeout/,
      );
      assert.ok(Date.now() - t0 < 5000);
      const trickle = policyWith([`127.0.0.1:${slow.port}`], { idleTimeoutMs: 300, downloadTimeoutMs: 600 });
      const e2 = await fetchUrl(`http://127.0.0.1:${slow.port}/trickle`, { cacheDir, policy: trickle }).then(
        () => assert.fail("timed out"),
        (err: unknown) => err,
      );
      assert.match(String((e2 as Error).message), /did not finish within 0\.6 s.*--fetch-timeout/);
    } finally {
      await slow.close();
    }
  });

  test("a server that never answers fails at the idle timeout while waiting for headers", async () => {
    const mute = await serve(() => undefined);
    try {
      const policy = policyWith([`127.0.0.1:${mute.port}`], { idleTimeoutMs: 300 });
      const e = await fetchUrl(`http://127.0.0.1:${mute.port}/`, { cacheDir, policy }).then(
        () => assert.fail("stalled"),
        (err: unknown) => err,
      );
      assert.match(String((e as Error).message), /stalled: no data for 0\.3 s \(waiting for the response headers\)/);
    } finally {
      await mute.close();
    }
  });
});

describe("local builds", () => {
  test("fetch as before by default; STRATA_FETCH_POLICY=restricted applies the service's rules with the variables", async () => {
    const open = await fetchUrl(`http://127.0.0.1:${target.port}/local`, { cacheDir });
    assert.equal(open.size, "hello\n".length, "no policy given: the permissive one");
    assert.equal(FetchPolicy.fromEnv({}).config.restrictAddresses, false);
    const restricted = FetchPolicy.fromEnv({ STRATA_FETCH_POLICY: "restricted" });
    assert.equal(restricted, FetchPolicy.fromEnv({ STRATA_FETCH_POLICY: "restricted" }), "one policy per settings");
    const e = await refusal(restricted.fetch(`http://127.0.0.1:${target.port}/`));
    assert.match(
      e.message,
      /refused by the fetch policy \(STRATA_FETCH_POLICY=restricted\).*STRATA_ALLOW_FETCH=127\.0\.0\.1:\d+/,
    );
    const allowed = FetchPolicy.fromEnv({
      STRATA_FETCH_POLICY: "restricted",
      STRATA_ALLOW_FETCH: `127.0.0.1:${target.port}`,
    });
    assert.equal(await (await allowed.fetch(`http://127.0.0.1:${target.port}/`)).text(), "hello\n");
    assert.throws(() => FetchPolicy.fromEnv({ STRATA_FETCH_POLICY: "strict" }), /expected "restricted" or "open"/);
  });
});
