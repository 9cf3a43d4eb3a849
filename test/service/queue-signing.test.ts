// The MACs of queued jobs and their events (pure): what verifies, and every change that must not.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventSigner, EventVerifier, queueSigningKey, signJob, verifyJob } from "../../src/service/queue-signing.js";

const key = queueSigningKey("w".repeat(64));
const job = { buildId: "b1", token: "0123456789abcdef" };

test("the signing key is derived from the worker token, and is not the token", () => {
  assert.equal(key.length, 32);
  assert.ok(!key.toString("latin1").includes("w".repeat(8)));
  assert.deepEqual(queueSigningKey("w".repeat(64)), key);
  assert.notDeepEqual(queueSigningKey("x".repeat(64)), key);
});

test("a job verifies as signed; another scope, request, job or key does not", () => {
  const claims = { ...job, requestDigest: `sha256:${"a".repeat(64)}`, scope: "alice", hasSecrets: true };
  const mac = signJob(key, claims);
  assert.ok(verifyJob(key, claims, mac));
  assert.ok(!verifyJob(key, { ...claims, scope: "bob" }, mac), "moved to another tenant");
  const { scope: _, ...unscoped } = claims;
  assert.ok(!verifyJob(key, unscoped, mac), "scope removed");
  assert.ok(!verifyJob(key, { ...claims, requestDigest: `sha256:${"b".repeat(64)}` }, mac), "request changed");
  assert.ok(!verifyJob(key, { ...claims, hasSecrets: false }, mac));
  assert.ok(!verifyJob(key, { ...claims, token: "fedcba9876543210" }, mac));
  assert.ok(!verifyJob(queueSigningKey("x".repeat(64)), claims, mac), "another worker token");
  assert.ok(!verifyJob(key, claims, undefined));
  assert.ok(!verifyJob(key, { ...claims, scope: "alice\nx" }, mac), "no newline smuggling");
});

test("events verify in order; forged, tampered, replayed and other jobs' entries do not", () => {
  const signer = new EventSigner(key, job);
  const v = new EventVerifier(key, job);
  const start = signer.fields("start", '{"worker":"w","attempt":1}');
  const line = signer.fields("line", "hello\nworld");
  const done = signer.fields("done", '{"status":"succeeded"}');
  assert.deepEqual(v.check(start), { ok: true, type: "start", data: '{"worker":"w","attempt":1}' });
  assert.deepEqual(v.check(line), { ok: true, type: "line", data: "hello\nworld" });
  assert.equal(v.check(line).ok, false, "a replayed line");
  const tampered = [...done];
  tampered[3] = '{"status":"succeeded","result":{"imageId":"sha256:ff"}}';
  assert.deepEqual(v.check(tampered), { ok: false, type: "done", reason: "its signature does not verify" });
  assert.deepEqual(v.check(["t", "done", "d", "{}"]), { ok: false, type: "done", reason: "it is not signed" });
  const retyped = [...line];
  retyped[1] = "done";
  assert.equal(v.check(retyped).ok, false, "a line re-labelled as done");
  const otherJob = new EventSigner(key, { ...job, token: "fedcba9876543210" }).fields("done", "{}");
  assert.equal(new EventVerifier(key, job).check(otherJob).ok, false, "another job's signed done");
  assert.equal(v.check(done).ok, true);
  // A second writer (a retried attempt on another worker) has its own sequence.
  const retry = new EventSigner(key, job);
  assert.equal(v.check(retry.fields("start", "{}")).ok, true);
});
