// The tenants file of `strata serve --tenants FILE`: validation with errors that say what to fix, timing-safe
// lookup by token or by its SHA-256, and SIGHUP reloading it in a running `strata serve` (a bad file keeps the old
// tenants). Also: ScopedStore views of one store never see each other's index entries, chains or locks.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { ScopedStore } from "../../src/store/scoped.js";
import { LocalStore } from "../../src/store/local.js";
import { parseTenants, TenantTable, TenantsFileError } from "../../src/service/tenants.js";
import { raw, spawnServe } from "../support/service.js";
import { tempDir } from "../support/strata.js";
import type { Digest } from "../../src/util/digest.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

const tok = () => randomBytes(16).toString("hex");
const hex = (t: string) => createHash("sha256").update(t).digest("hex");
const bad = (value: unknown, message: RegExp) =>
  assert.throws(
    () => parseTenants(JSON.stringify(value), "tenants.json"),
    (e: unknown) => e instanceof TenantsFileError && message.test(e.message),
  );

test("tenants file validation: each mistake is an error naming the entry and what to do", () => {
  const t = tok();
  assert.throws(() => parseTenants("{nope", "tenants.json"), /tenants\.json is not valid JSON/);
  bad({ tenant: "a", token: t }, /must hold a JSON array/);
  bad([], /lists no tenants/);
  bad([{ tenant: "Alice", token: t }], /entry 0: tenant "Alice" is not a tenant name: use 1–63 lowercase/);
  bad([{ tenant: "a/b", token: t }], /not a tenant name/);
  bad([{ tenant: "-a", token: t }], /not a tenant name/);
  bad([{ tenant: "a".repeat(64), token: t }], /not a tenant name/);
  bad([{ tenant: "a", token: t, admin: true }], /unknown field\(s\) admin/);
  bad([{ tenant: "a" }], /needs exactly one of "token" and "tokenSha256"/);
  bad([{ tenant: "a", token: t, tokenSha256: hex(t) }], /exactly one of/);
  bad([{ tenant: "a", token: "short" }], /at least 16 characters/);
  bad([{ tenant: "a", token: ` ${t}` }], /whitespace/);
  bad([{ tenant: "a", tokenSha256: "xyz" }], /64 hex digits/);
  bad(
    [
      { tenant: "a", token: t },
      { tenant: "a", token: tok() },
    ],
    /entry 1: tenant "a" is listed twice \(also entry 0\)/,
  );
  bad(
    [
      { tenant: "a", token: t },
      { tenant: "b", tokenSha256: hex(t).toUpperCase() },
    ],
    /entry 1 \(tenant "b"\) has the same token as entry 0 \(tenant "a"\)/,
  );
});

test("a table authenticates each tenant by its token or by the token's SHA-256, and nothing else", () => {
  const a = tok();
  const b = tok();
  const table = TenantTable.of(
    parseTenants(
      JSON.stringify([
        { tenant: "team-a", token: a },
        { tenant: "team-b", tokenSha256: hex(b) },
      ]),
      "t",
    ),
  );
  assert.deepEqual(table.authenticate(a), { id: "team-a", scope: "team-a" });
  assert.deepEqual(table.authenticate(b), { id: "team-b", scope: "team-b" });
  assert.equal(table.authenticate(hex(b)), undefined, "the hash is not a token");
  assert.equal(table.authenticate(tok()), undefined);
  assert.equal(table.open, false);
  // STRATA_TOKEN alone: one unscoped tenant, `default`; no token: open, the same tenant.
  assert.deepEqual(TenantTable.single("x").authenticate("x"), { id: "default" });
  assert.equal(TenantTable.single().open, true);
});

test("scoped views of one store: index entries, chains and locks of one scope are invisible to the others", async () => {
  const home = await tempDir("strata-scoped-");
  dirs.push(home);
  const store = await LocalStore.open(home);
  const a = new ScopedStore(store, "a");
  const b = new ScopedStore(store, "b");
  const bytes = await store.putBlobBytes(Buffer.from("{}"));
  const image = {
    id: bytes,
    configDigest: bytes,
    configSize: 2,
    manifestDigest: bytes,
    manifestSize: 2,
    layers: [],
  };
  await store.putImage(image);
  // The same key (a colliding or equal one) in scope a: b and the unscoped store never meet it.
  const key = "0123456789abcdef0123456789abcdef";
  await a.putIndex({ key, imageId: bytes as Digest, createdAt: new Date().toISOString() });
  assert.equal((await a.getIndex(key))?.imageId, bytes);
  assert.equal((await a.getIndex(key))?.key, key);
  assert.equal(await b.getIndex(key), undefined);
  assert.equal(await store.getIndex(key), undefined);
  await a.putChain({ name: "def.ts", builtAt: "now", imageIds: [bytes] });
  assert.equal((await a.getChain("def.ts"))?.name, "def.ts");
  assert.equal(await b.getChain("def.ts"), undefined);
  assert.equal(await store.getChain("def.ts"), undefined);
  // Locks: a's lock of a key does not hold b's.
  const release = await a.lock(key);
  const other = await Promise.race([b.lock(key), new Promise((r) => setTimeout(() => r("blocked"), 2000))]);
  assert.notEqual(other, "blocked");
  await (other as () => Promise<void>)();
  await release();
  // Cache mounts and link layers live apart; blobs and images are shared.
  assert.notEqual(a.layout.cacheMountDir("ab"), b.layout.cacheMountDir("ab"));
  assert.notEqual(a.layout.cacheMountDir("ab"), store.layout.cacheMountDir("ab"));
  assert.notEqual(a.layout.linkLayerFile(key), store.layout.linkLayerFile(key));
  assert.equal(a.layout.blobFile(bytes), store.layout.blobFile(bytes));
  assert.ok(await b.getImage(bytes));
});

test("strata serve --tenants: SIGHUP adds and removes tenants; a bad file keeps the old ones", async () => {
  const home = await tempDir("strata-tenants-serve-");
  dirs.push(home);
  const file = path.join(home, "tenants.json");
  const alice = tok();
  const bob = tok();
  await fsp.writeFile(file, JSON.stringify([{ tenant: "alice", token: alice }]));
  const { url, child, stderr, exited } = await spawnServe({ STRATA_HOME: path.join(home, "store") }, [
    "--tenants",
    file,
  ]);
  const status = async (token: string) => (await raw(url, "GET", `/v1/images/${"0".repeat(64)}`, { token })).status;
  const waitFor = async (what: () => Promise<boolean>, label: string) => {
    const t0 = Date.now();
    while (!(await what())) {
      if (Date.now() - t0 > 10_000) throw new Error(`timed out waiting for ${label}:\n${stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    assert.match(stderr(), /1 tenant\(s\) from .*tenants\.json, bearer token required/);
    assert.equal(await status(alice), 404, "alice is known (the build is not)");
    assert.equal(await status(bob), 401);
    await fsp.writeFile(file, JSON.stringify([{ tenant: "bob", tokenSha256: hex(bob) }]));
    child.kill("SIGHUP");
    await waitFor(async () => (await status(bob)) === 404, "bob to be added");
    assert.equal(await status(alice), 401, "alice was removed");
    assert.match(stderr(), /SIGHUP: reloaded .*: 1 tenant\(s\); added \[bob\], removed \[alice\]/);
    // A file that does not validate: bob stays, the reason is logged.
    await fsp.writeFile(file, JSON.stringify([{ tenant: "Bob!", token: bob }]));
    child.kill("SIGHUP");
    await waitFor(async () => /kept the previous 1 tenant\(s\)/.test(stderr()), "the refusal");
    assert.match(stderr(), /tenant "Bob!" is not a tenant name/);
    assert.equal(await status(bob), 404);
  } finally {
    child.kill("SIGTERM");
    assert.equal(await exited, 0, stderr());
  }
  // Both --tenants and STRATA_TOKEN: refused at start.
  await assert.rejects(
    spawnServe({ STRATA_HOME: path.join(home, "store"), STRATA_TOKEN: alice }, ["--tenants", file]),
    /both --tenants and STRATA_TOKEN are set/,
  );
});
