// Semaphores and leader election against a live coord.
import * as assert from "assert/strict";
import { test } from "node:test";

import { Client, ElectionState, LockLostError, NotAcquiredError } from "@coord/client";
import { Cluster, aborted, raw, sleep } from "./harness";

test("a semaphore never has more than size holders; a permit is lost on ForceRelease", async () => {
  const cluster = await Cluster.start();
  const clients = [new Client({ endpoints: cluster.addrs }), new Client({ endpoints: [...cluster.addrs].reverse() })];
  try {
    let inside = 0;
    let most = 0;
    const worker = async (client: Client): Promise<void> => {
      for (let i = 0; i < 3; i++) {
        await client.withSemaphore("pool", { size: 3, ttlMs: 5000, waitMs: 60_000 }, async (permit) => {
          inside += 1;
          most = Math.max(most, inside);
          await sleep(20);
          permit.check();
          inside -= 1;
        });
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, i) => worker(clients[i % 2] as Client)));
    assert.ok(most <= 3, `${most} inside at once`);
    assert.ok(most >= 2, `permits were shared (${most})`);

    const permit = await clients[0]!.semaphore("pool", { ttlMs: 5000 });
    assert.equal(permit.permitId, permit.fencingToken);
    const full = await clients[1]!.semaphore("pool", { permits: 2, ttlMs: 5000 });
    await assert.rejects(clients[1]!.semaphore("pool", { ttlMs: 5000 }), NotAcquiredError);
    await full.release();
    await raw(cluster.addrs[1] as string, "SemaphoreService", "ForceRelease", { name: "pool", permitId: permit.permitId });
    assert.ok(await aborted(permit.signal, 5000), "told within one TTL");
    assert.equal(permit.lostReason, "force released");
  } finally {
    clients.forEach((c) => c.close());
    await cluster.stop();
  }
});

test("election: campaign, hand-over on resign, observe in order, deposed leader told", async () => {
  const cluster = await Cluster.start();
  const [a, b, c] = [0, 1, 0].map((i) => new Client({ endpoints: cluster.addrs[i] as string }));
  const watcher = new Client({ endpoints: cluster.addrs });
  try {
    const states: ElectionState[] = [];
    const observation = watcher.observe("jobs");
    const observing = (async () => {
      for await (const state of observation) states.push(state);
    })();
    for (let i = 0; i < 200 && states.length === 0; i++) await sleep(25); // observing

    const la = await a!.campaign("jobs", { value: "a", ttlMs: 5000 });
    const leader = await a!.leader("jobs");
    assert.equal(leader.hasLeader, true);
    assert.equal(leader.term, la.term);
    assert.equal(leader.value.toString(), "a");
    await assert.rejects(b!.campaign("jobs", { value: "b", ttlMs: 5000, waitMs: 200 }), NotAcquiredError);

    const pending = b!.campaign("jobs", { value: "b", ttlMs: 5000, waitMs: 30_000 });
    await sleep(300); // b queued
    await la.resign();
    const lb = await pending;
    assert.ok(BigInt(lb.term) > BigInt(la.term));
    await lb.proclaim("b2");
    await lb.resign();
    await sleep(300);
    const none = await c!.leader("jobs");
    assert.equal(none.hasLeader, false);

    const lc = await c!.campaign("jobs", { value: "c", ttlMs: 5000 });
    await raw(cluster.addrs[1] as string, "ElectionService", "ForceResign", { election: "jobs" });
    assert.ok(await aborted(lc.signal, 5000), "deposed leader told within one TTL");
    assert.equal(lc.lostReason, "force released");
    assert.throws(() => lc.check(), LockLostError);

    await sleep(500);
    observation.close();
    await observing;
    const seen = states.map((s) => (s.hasLeader ? `${s.value.toString()}@${s.term}` : "none"));
    const order = [`a@${la.term}`, `b@${lb.term}`, `b2@${lb.term}`, "none", `c@${lc.term}`, "none"];
    let at = -1;
    for (const step of order) {
      const found = seen.indexOf(step, at + 1);
      assert.ok(found > at, `${step} after position ${at} in ${seen.join(" ")}`);
      at = found;
    }
    assert.equal(seen[0], "none", "the first state: nobody leads yet");
  } finally {
    [a, b, c, watcher].forEach((client) => client!.close());
    await cluster.stop();
  }
});
