// FairSlots (pure): the total and per-tenant caps hold, a freed slot goes round-robin to tenants under their cap, and
// one tenant's backlog never keeps another tenant's build from a free slot.
import assert from "node:assert/strict";
import { test } from "node:test";
import { FairSlots } from "../../src/service/fair-slots.js";

const tick = () => new Promise((r) => setImmediate(r));

test("FairSlots: a tenant at its cap waits while another tenant takes a free slot", async () => {
  const slots = new FairSlots(4, () => 2);
  const granted: string[] = [];
  const releases: (() => void)[] = [];
  const ask = (t: string) =>
    void slots.acquire(t).then((r) => {
      granted.push(t);
      releases.push(r);
    });
  for (let i = 0; i < 5; i++) ask("a");
  await tick();
  assert.deepEqual(granted, ["a", "a"], "a runs 2 (its cap); 3 wait although 2 slots are free");
  assert.equal(slots.waiting("a"), 3);
  ask("b");
  await tick();
  assert.deepEqual(granted, ["a", "a", "b"], "b starts at once");
  releases[0]!();
  await tick();
  assert.deepEqual(granted, ["a", "a", "b", "a"]);
  assert.equal(slots.running("a"), 2);
});

test("FairSlots: freed slots go round-robin between waiting tenants", async () => {
  const slots = new FairSlots(1, () => 1);
  const order: string[] = [];
  const first = await slots.acquire("x");
  for (const t of ["a", "a", "a", "b", "b", "c"])
    void slots.acquire(t).then((release) => {
      order.push(t);
      setImmediate(release);
    });
  first();
  for (let i = 0; i < 20; i++) await tick();
  assert.deepEqual(order, ["a", "b", "c", "a", "b", "a"]);
});

test("FairSlots: a release is idempotent and the total cap holds", async () => {
  const slots = new FairSlots(2, () => 10);
  const r1 = await slots.acquire("a");
  await slots.acquire("b");
  let third = false;
  void slots.acquire("c").then(() => (third = true));
  await tick();
  assert.equal(third, false);
  r1();
  r1();
  await tick();
  assert.equal(third, true);
  let fourth = false;
  void slots.acquire("d").then(() => (fourth = true));
  await tick();
  assert.equal(fourth, false, "a second release of the same slot frees nothing");
});
