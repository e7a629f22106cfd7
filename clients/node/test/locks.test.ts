// Locks against a live coord: mutual exclusion, fencing, loss signalled
// (ForceRelease, Redis stopped, the only coord killed), survival of a coord
// kill when another instance is reachable, read/write locks, error codes.
import * as assert from "assert/strict";
import { test } from "node:test";

import { Client, InvalidArgumentError, LockLostError, NotAcquiredError, status } from "@coord/client";
import { Cluster, aborted, raw, sleep } from "./harness";

async function withCluster(fn: (cluster: Cluster) => Promise<void>): Promise<void> {
  const cluster = await Cluster.start();
  try {
    await fn(cluster);
  } finally {
    await cluster.stop();
  }
}

test("a guarded section with 16 concurrent holders on two clients counts exactly", () => withCluster(async (cluster) => {
  const clients = [new Client({ endpoints: cluster.addrs }), new Client({ endpoints: [...cluster.addrs].reverse() })];
  let total = 0;
  try {
    const worker = async (client: Client): Promise<void> => {
      for (let i = 0; i < 5; i++) {
        await client.withLock("counter", { ttlMs: 5000, waitMs: 60_000 }, async (lock) => {
          const seen = total;
          await sleep(2); // a lost update if two were inside at once
          lock.check();
          total = seen + 1;
        });
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, i) => worker(clients[i % 2] as Client)));
  } finally {
    clients.forEach((c) => c.close());
  }
  assert.equal(total, 80);
}));

test("fencing tokens increase and a busy lock is not acquired", () => withCluster(async (cluster) => {
  const a = new Client({ endpoints: cluster.addrs[0] as string });
  const b = new Client({ endpoints: cluster.addrs[1] as string });
  try {
    const first = await a.lock("tokens", { ttlMs: 5000, owner: "a" });
    await assert.rejects(b.lock("tokens", { ttlMs: 5000, owner: "b" }), (e: unknown) =>
      e instanceof NotAcquiredError && e.holder === "a");
    await first.release();
    const second = await b.lock("tokens", { ttlMs: 5000 });
    assert.ok(BigInt(second.fencingToken) > BigInt(first.fencingToken), `${second.fencingToken} > ${first.fencingToken}`);
    await second.release();
    await second.release(); // idempotent
  } finally {
    a.close();
    b.close();
  }
}));

test("the guard's signal aborts within a TTL when the lock is force released", () => withCluster(async (cluster) => {
  const client = new Client({ endpoints: cluster.addrs[0] as string });
  try {
    const lock = await client.lock("forced", { ttlMs: 3000 });
    await raw(cluster.addrs[1] as string, "LockService", "ForceRelease", { name: "forced" });
    assert.ok(await aborted(lock.signal, 3000), "told within one TTL");
    assert.equal(lock.lostReason, "force released");
    assert.ok(lock.signal.reason instanceof LockLostError);
    assert.equal((lock.signal.reason as LockLostError).reason, "force released");
    assert.throws(() => lock.check(), LockLostError);
    await lock.release(); // nothing to do
  } finally {
    client.close();
  }
}));

test("the guard's signal aborts within a TTL when Redis stops", () => withCluster(async (cluster) => {
  const client = new Client({ endpoints: cluster.addrs });
  try {
    const lock = await client.lock("paused", { ttlMs: 2000 });
    cluster.redis.pause();
    try {
      const started = performance.now();
      assert.ok(await aborted(lock.signal, 6000), "told once no renewal was confirmed for a whole TTL");
      const took = performance.now() - started;
      assert.ok(took <= 2000 + 1500, `told after ${took} ms`);
      assert.ok(lock.lost);
    } finally {
      cluster.redis.resume();
    }
  } finally {
    client.close();
  }
}));

test("the guard's signal aborts when its only coord is killed", () => withCluster(async (cluster) => {
  const client = new Client({ endpoints: cluster.addrs[0] as string });
  try {
    const lock = await client.lock("lonely", { ttlMs: 2000 });
    await cluster.coords[0]?.kill();
    assert.ok(await aborted(lock.signal, 2000 + 3000));
    assert.equal(lock.lostReason, "no renewal confirmed for a whole TTL");
  } finally {
    client.close();
  }
}));

test("the lock survives a killed coord when another is reachable", () => withCluster(async (cluster) => {
  const client = new Client({ endpoints: cluster.addrs });
  try {
    const lock = await client.lock("survivor", { ttlMs: 2000 });
    await cluster.coords[0]?.kill();
    assert.equal(await aborted(lock.signal, 5000), false, `kept across the kill: ${lock.lostReason}`);
    lock.check();
    await lock.release();
  } finally {
    client.close();
  }
}));

test("read/write locks: shared holders coexist, exclusive is excluded", () => withCluster(async (cluster) => {
  const a = new Client({ endpoints: cluster.addrs[0] as string });
  const b = new Client({ endpoints: cluster.addrs[1] as string });
  try {
    const r1 = await a.lock("doc", { ttlMs: 5000, mode: "shared" });
    const r2 = await b.lock("doc", { ttlMs: 5000, mode: "shared" });
    await assert.rejects(a.lock("doc", { ttlMs: 5000, mode: "exclusive" }), NotAcquiredError);
    await r1.release();
    await r2.release();
    const w = await b.lock("doc", { ttlMs: 5000, mode: "exclusive" });
    assert.equal(w.mode, "exclusive");
    assert.ok(BigInt(w.fencingToken) > BigInt(r2.fencingToken));
    await assert.rejects(a.lock("doc", { ttlMs: 5000, mode: "shared" }), NotAcquiredError);
    await assert.rejects(a.lock("doc", { ttlMs: 5000, mode: "exclusive" }), NotAcquiredError);
    // The plain lock of that name is a separate lock.
    await (await a.lock("doc", { ttlMs: 5000 })).release();
    await w.release();
    await (await a.lock("doc", { ttlMs: 5000, mode: "shared" })).release();
  } finally {
    a.close();
    b.close();
  }
}));

test("await using releases the lock at the end of the scope", { skip: typeof Symbol.asyncDispose !== "symbol" },
  () => withCluster(async (cluster) => {
    const a = new Client({ endpoints: cluster.addrs });
    const b = new Client({ endpoints: cluster.addrs });
    try {
      {
        await using lock = await a.lock("scoped", { ttlMs: 5000 });
        await assert.rejects(b.lock("scoped", { ttlMs: 5000 }), NotAcquiredError);
        lock.check();
      }
      await (await b.lock("scoped", { ttlMs: 5000 })).release();
    } finally {
      a.close();
      b.close();
    }
  }));

test("errors carry the gRPC code", () => withCluster(async (cluster) => {
  const client = new Client({ endpoints: cluster.addrs[0] as string });
  try {
    await assert.rejects(client.lock("", { ttlMs: 1000 }), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError, String(e));
      assert.equal(e.code, status.INVALID_ARGUMENT);
      assert.match(e.details, /name/);
      return true;
    });
  } finally {
    client.close();
  }
}));
