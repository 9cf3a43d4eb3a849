// Images built on a build service, reachable from the client (issue 13, items 6 and 7), with two tenants (alice and
// mallory): `strata build --tag` names the image on the service; `images`, `tag` and `rmi` act on the tenant's names
// there; `run`, `inspect`, `logs`, `export` and `pull` fetch from the service only what the local store lacks; `push`
// has the service push to a (loopback, htpasswd) registry with the login sent as a request secret it never stores.
// Attacks: mallory cannot resolve, read, fetch, name or push alice's image (by name, id, id prefix or blob digest),
// and a server (here: a proxy in front of it) whose content does not match its digests is refused, nothing recorded.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { parseTenants, TenantTable } from "../../src/service/tenants.js";
import { startCountingProxy, type CountingProxy } from "../support/counting-proxy.js";
import { startRegistry, type TestRegistry } from "../support/registry.js";
import { allowFetch, raw, startService, type TestService } from "../support/service.js";
import { buildJson, scratchSpace, strata, type CliResult } from "../support/strata.js";

const ALICE = `alice-${randomBytes(16).toString("hex")}`;
const MALLORY = `mallory-${randomBytes(16).toString("hex")}`;
const REGISTRY_PASSWORD = `reg-${randomBytes(12).toString("hex")}`;

const space = scratchSpace();
let svc: TestService;
let registry: TestRegistry;
let counting: CountingProxy;
/** alice's image: built on the service, named `<repo>:1`. */
let built: { imageId: string; steps: { imageId: string }[] };
let repo: string;
let tag: string;

before(async () => {
  registry = await startRegistry({ auth: "htpasswd", users: { pusher: REGISTRY_PASSWORD } });
  svc = await startService({
    tenants: TenantTable.of(
      parseTenants(
        JSON.stringify([
          { tenant: "alice", token: ALICE },
          { tenant: "mallory", tokenSha256: createHash("sha256").update(MALLORY).digest("hex") },
        ]),
        "test",
      ),
    ),
    fetchPolicy: allowFetch(registry.host),
  });
  counting = await startCountingProxy(new URL(svc.url).host);
  const p = await space.project(
    `export default base.runCommands("echo ${"$"}TEST_NONCE > /n; echo built-by-alice").cmd(["cat", "/n"]);\n`,
  );
  tag = p.tag;
  repo = `svc-${tag}/app`;
  const home = await space.scratch();
  built = await buildJson(p.def, ["--tag", `${repo}:1`], { home, env: as(ALICE) });
  assert.match((built as unknown as { stderr: string }).stderr, new RegExp(`=> Named ${repo}:1 on the build server`));
});
after(async () => {
  assert.deepEqual(
    svc.serverLog.filter((l) => /internal error/.test(l)),
    [],
    "no request hit an internal error",
  );
  await counting?.close();
  await svc?.close();
  await registry?.stop();
  await space.cleanup();
});

/** The environment of a client of the service as `token` (through the counting proxy). */
function as(token: string): Record<string, string> {
  // DOCKER_CONFIG: no login of this machine's user reaches a push.
  return { STRATA_SERVER: `http://${counting.host}`, STRATA_TOKEN: token, DOCKER_CONFIG: "/nonexistent-strata-test" };
}

/** `strata <args>` as a client of the service with its own (fresh unless given) store. */
async function client(token: string, args: string[], home?: string): Promise<CliResult & { home: string }> {
  const h = home ?? (await space.scratch());
  return { ...(await strata(args, { home: h, env: as(token) })), home: h };
}

const blobGets = () => counting.requests.filter((r) => r.method === "GET" && r.path.startsWith("/v1/blobs/"));

describe("names on the service", () => {
  test("images lists the tenant's names there; tag and rmi change them; another tenant sees none of them", async () => {
    const listing = await client(ALICE, ["images"]);
    assert.equal(listing.code, 0, listing.stderr);
    assert.match(listing.stdout, new RegExp(`^${repo}\\s+1\\s+${built.imageId.slice(7, 19)}\\s+`, "m"));
    const tagged = await client(ALICE, ["tag", `${repo}:1`, `${repo}:2`]);
    assert.equal(tagged.code, 0, tagged.stderr);
    const json = JSON.parse((await client(ALICE, ["images", "--json"])).stdout) as {
      name: string;
      tag: string;
      id: string;
    }[];
    assert.deepEqual(
      json
        .filter((i) => i.name === repo)
        .map((i) => [i.tag, i.id])
        .sort(),
      [
        ["1", built.imageId],
        ["2", built.imageId],
      ],
    );
    const theirs = await client(MALLORY, ["images", "--json"]);
    assert.deepEqual(JSON.parse(theirs.stdout), [], "mallory has no names");
    const removed = await client(ALICE, ["rmi", `${repo}:2`]);
    assert.equal(removed.stdout, `Untagged: ${repo}:2\n`, removed.stderr);
    // --all: the names and every step image they stand on; mallory's --all is empty too.
    const all = JSON.parse((await client(ALICE, ["images", "--all", "--json"])).stdout) as {
      id: string;
      name: string | null;
      step?: string;
    }[];
    for (const step of built.steps)
      assert.ok(
        all.some((i) => i.id === step.imageId),
        `step image ${step.imageId} listed`,
      );
    assert.equal(all.find((i) => i.id === built.steps[1]!.imageId)?.name, null);
    assert.match(all.find((i) => i.id === built.imageId)?.step ?? "", /cmd/);
    assert.deepEqual(JSON.parse((await client(MALLORY, ["images", "--all", "--json"])).stdout), []);
  });

  test("fromId takes the tenant's name on the service", async () => {
    const { def } = await space.project(
      `import { Image as I } from "strata";\nexport default I.fromId(${JSON.stringify(`${repo}:1`)}).runCommands("cat /n > /copy");\n`,
    );
    const child = await buildJson(def, [], { home: await space.scratch(), env: as(ALICE) });
    assert.equal(child.steps.length, 2);
    const theirs = await client(MALLORY, ["build", def]);
    assert.equal(theirs.code, 1);
    assert.match(theirs.stderr, /is not in the server's store/);
  });
});

describe("images built on the service, on the client", () => {
  test("run, inspect and logs by name; a second run fetches no blob again", async () => {
    const home = await space.scratch();
    counting.reset();
    const run = await client(ALICE, ["run", `${repo}:1`], home);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${tag}\n`);
    const fetched = blobGets().length;
    assert.ok(fetched >= 3, `config, manifest and layers were fetched (${fetched})`);
    counting.reset();
    const again = await client(ALICE, ["run", built.imageId.slice(7, 19), "--", "cat", "/n"], home);
    assert.equal(again.stdout, `${tag}\n`, again.stderr);
    assert.equal(blobGets().length, 0, "nothing the local store has is fetched again");

    const inspect = JSON.parse((await client(ALICE, ["inspect", `${repo}:1`])).stdout) as {
      id: string;
      chain: { imageId: string }[];
    };
    assert.equal(inspect.id, built.imageId);
    assert.deepEqual(
      inspect.chain.map((c) => c.imageId),
      built.steps.map((s) => s.imageId),
    );
    const logs = await client(ALICE, ["logs", `${repo}:1`]);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(
      logs.stdout,
      /=> Step 3: runCommands echo \$TEST_NONCE > \/n; echo built-by-alice[^\n]*\n {4}\$ [^\n]*\n {4}built-by-alice\n/,
    );
  });

  test("export writes the image fetched from the service; pull keeps it, its chain, logs and name locally", async () => {
    const home = await space.scratch();
    const oci = path.join(home, "oci-out");
    const exported = await client(ALICE, ["export", `${repo}:1`, "--oci", oci], home);
    assert.equal(exported.code, 0, exported.stderr);
    const index = JSON.parse(await fsp.readFile(path.join(oci, "index.json"), "utf8")) as { manifests: unknown[] };
    assert.equal(index.manifests.length, 1);
    const pulled = await client(ALICE, ["pull", `${repo}:1`], home);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(pulled.stdout, `${built.imageId}\n`);
    // Without the service: the local store has the name, the chain and the logs.
    const local = await strata(["logs", `${repo}:1`], { home, env: { STRATA_SERVER: "" } });
    assert.equal(local.code, 0, local.stderr);
    assert.match(local.stdout, /built-by-alice/);
    const run = await strata(["run", `${repo}:1`], { home, env: { STRATA_SERVER: "" } });
    assert.equal(run.stdout, `${tag}\n`, run.stderr);
  });

  test("push: the service pushes to the registry with the login sent as a request secret, and never stores it", async () => {
    const target = `${registry.host}/team/svc-${tag}:1`;
    const anonymous = await client(ALICE, ["push", `${repo}:1`, target]);
    assert.equal(anonymous.code, 1);
    assert.match(anonymous.stderr, /push to .* failed/);
    const home = await space.scratch();
    const pushed = await strata(["push", `${repo}:1`, target], {
      home,
      env: { ...as(ALICE), REGISTRY_USERNAME: "pusher", REGISTRY_PASSWORD: REGISTRY_PASSWORD },
    });
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.match(pushed.stdout, new RegExp(`^${registry.host}/team/svc-${tag}@sha256:[0-9a-f]{64}\\n$`));
    assert.match(pushed.stderr, /from the build server/);
    assert.deepEqual(
      await fsp.readdir(path.join(home)).catch(() => []),
      [],
      "no image went through the client's store",
    );
    const manifest = await fetch(`${registry.url}/v2/team/svc-${tag}/manifests/1`, {
      headers: {
        authorization: `Basic ${Buffer.from(`pusher:${REGISTRY_PASSWORD}`).toString("base64")}`,
        accept: "application/vnd.oci.image.manifest.v1+json",
      },
    });
    assert.equal(manifest.status, 200);
    assert.equal(manifest.headers.get("docker-content-digest"), pushed.stdout.trim().split("@")[1]);
    // The password is nowhere in the service's store, nor in its log.
    const found = await grep(svc.home, REGISTRY_PASSWORD);
    assert.deepEqual(found, [], "the registry password is not stored by the service");
    assert.ok(!svc.serverLog.some((l) => l.includes(REGISTRY_PASSWORD)));
  });
});

describe("attacks", () => {
  test("mallory cannot resolve, read, fetch, name or push alice's image, by name, id, prefix or blob", async () => {
    const id = built.imageId;
    const layer = JSON.parse((await raw(svc.url, "GET", `/v1/images/${id}/record`, { token: ALICE })).text) as {
      layers: { digest: string }[];
      configDigest: string;
    };
    const unknown = `sha256:${"0".repeat(63)}1`;
    const notFound = async (method: string, p: string, body?: unknown) => {
      const r = await raw(svc.url, method, p, {
        token: MALLORY,
        ...(body ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}),
      });
      assert.equal(r.status, 404, `${method} ${p}: ${r.text}`);
      return (r.json() as { error: { message: string } }).error.message;
    };
    const foreign = await notFound("GET", `/v1/images/${id}/record`);
    const missing = await notFound("GET", `/v1/images/${unknown}/record`);
    assert.equal(
      foreign.replace(id, "<id>"),
      missing.replace(unknown, "<id>"),
      "a foreign image reads as a missing one",
    );
    await notFound("GET", `/v1/images/${id}/logs`);
    await notFound("GET", `/v1/resolve/${encodeURIComponent(id)}`);
    await notFound("GET", `/v1/resolve/${id.slice(7, 19)}`);
    await notFound("GET", `/v1/resolve/${encodeURIComponent(`${repo}:1`)}`);
    for (const d of [layer.configDigest, ...layer.layers.map((l) => l.digest)]) await notFound("GET", `/v1/blobs/${d}`);
    await notFound("PUT", `/v1/names/${encodeURIComponent(`stolen-${tag}:1`)}`, { imageId: id });
    await notFound("POST", "/v1/push", { imageId: id, reference: `${registry.host}/stolen/x:1` });
    await notFound("DELETE", `/v1/names/${encodeURIComponent(`${repo}:1`)}`);
    assert.equal((await raw(svc.url, "GET", "/v1/names", { headers: { authorization: "Bearer nope" } })).status, 401);
    // Alice's name is untouched.
    assert.equal(
      (await raw(svc.url, "GET", `/v1/names/${encodeURIComponent(`${repo}:1`)}`, { token: ALICE })).status,
      200,
    );
    const run = await client(MALLORY, ["run", id, "--", "true"]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /is not in the server's store.*nor is it in the local store/);
  });

  test("content that does not match its digest is refused and nothing is recorded", async () => {
    const rec = JSON.parse(
      (await raw(svc.url, "GET", `/v1/images/${built.imageId}/record`, { token: ALICE })).text,
    ) as {
      layers: { digest: string; size: number }[];
    };
    const target = rec.layers[rec.layers.length - 1]!.digest;
    for (const mode of ["blob", "record"] as const) {
      const proxy = await tamperingProxy(svc.url, mode, target);
      try {
        const home = await space.scratch();
        const r = await strata(["run", built.imageId, "--", "true"], {
          home,
          env: { STRATA_SERVER: proxy.url, STRATA_TOKEN: ALICE },
        });
        assert.equal(r.code, 1, `${mode}: ${r.stderr}`);
        assert.match(r.stderr, mode === "blob" ? /digest mismatch/ : /differs from its manifest.*refusing it/);
        assert.ok(proxy.tampered() > 0, `${mode}: the proxy changed a response`);
        assert.deepEqual(await fsp.readdir(path.join(home, "images")), [], `${mode}: no image record was written`);
        assert.ok(
          !(await fsp.readdir(path.join(home, "blobs", "sha256"))).includes(target.slice(7)),
          `${mode}: no bad blob`,
        );
      } finally {
        await proxy.close();
      }
    }
  });
});

/** Files under `dir` whose content includes `needle`. */
async function grep(dir: string, needle: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const file = path.join(e.parentPath, e.name);
    const text = await fsp.readFile(file).catch(() => Buffer.alloc(0));
    if (text.includes(needle)) out.push(file);
  }
  return out;
}

/**
 * A loopback proxy in front of the service that lies: `blob` flips a byte of the blob `digest` it serves; `record`
 * changes that layer's size in image records.
 */
async function tamperingProxy(
  target: string,
  mode: "blob" | "record",
  digest: string,
): Promise<{ url: string; tampered: () => number; close: () => Promise<void> }> {
  let tampered = 0;
  const server = http.createServer((req, res) => {
    const up = http.request(new URL(req.url ?? "/", target), { method: req.method, headers: req.headers }, (upRes) => {
      const chunks: Buffer[] = [];
      upRes.on("data", (c: Buffer) => chunks.push(c));
      upRes.on("end", () => {
        let body = Buffer.concat(chunks);
        const url = req.url ?? "";
        if (mode === "blob" && url === `/v1/blobs/${digest}` && body.length) {
          body = Buffer.from(body);
          body[body.length - 1] = body[body.length - 1]! ^ 0xff;
          tampered++;
        } else if (mode === "record" && url.endsWith("/record") && upRes.statusCode === 200) {
          const rec = JSON.parse(body.toString()) as { layers: { digest: string; size: number }[] };
          for (const l of rec.layers) if (l.digest === digest) l.size += 1;
          body = Buffer.from(JSON.stringify(rec));
          tampered++;
        }
        const headers = { ...upRes.headers, "content-length": String(body.length) };
        res.writeHead(upRes.statusCode ?? 502, headers);
        res.end(body);
      });
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    tampered: () => tampered,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe("a single-tenant service", () => {
  test("names and images work the same for its one tenant, the store's own names", async () => {
    const token = `single-${randomBytes(16).toString("hex")}`;
    const single = await startService({ token, tenants: TenantTable.single(token) });
    try {
      const env = { STRATA_SERVER: single.url, STRATA_TOKEN: token };
      const p = await space.project(`export default base.runCommands("echo single-${"$"}TEST_NONCE > /s");\n`);
      const name = `single-${p.tag}/app`;
      const b = await buildJson(p.def, ["--tag", name], { home: await space.scratch(), env });
      assert.equal((await single.store.getName(`${name}:latest`))?.imageId, b.imageId, "an unscoped name");
      const home = await space.scratch();
      const run = await strata(["run", name, "--", "cat", "/s"], { home, env });
      assert.equal(run.stdout, `single-${p.tag}\n`, run.stderr);
      const listing = JSON.parse((await strata(["images", "--json"], { home, env })).stdout) as { name: string }[];
      assert.deepEqual(
        listing.map((i) => i.name),
        [name],
      );
      const prefix = await strata(["inspect", b.imageId.slice(7, 19)], { home: await space.scratch(), env });
      assert.equal((JSON.parse(prefix.stdout) as { id: string }).id, b.imageId, prefix.stderr);
    } finally {
      await single.close();
    }
  });
});
