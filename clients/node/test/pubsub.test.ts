// Subscriptions against a live coord: a recoverable channel resumes across
// a coord kill and restart without losing or repeating a message; an
// ephemeral one says that messages may be lost.
import * as assert from "assert/strict";
import { test } from "node:test";

import { Client, MessagesLostError } from "@coord/client";
import { Cluster, sleep } from "./harness";

test("a subscription resumes across a coord restart with every message once, in order", async () => {
  const cluster = await Cluster.start();
  const first = cluster.coords[0]!;
  const subClient = new Client({ endpoints: first.addr });
  const pubClient = new Client({ endpoints: cluster.addrs[1] as string });
  try {
    const sub = await subClient.subscribe(["durable.orders"]);
    const got: string[] = [];
    const reading = (async () => {
      for await (const message of sub) {
        got.push(message.payload.toString());
        if (message.payload.toString() === "99") return;
      }
    })();
    for (let i = 0; i < 100; i++) {
      await pubClient.publish("durable.orders", String(i));
      if (i === 30) await first.kill();
      if (i === 60) await first.start();
      await sleep(10);
    }
    const done = await Promise.race([reading.then(() => true), sleep(30_000).then(() => false)]);
    sub.close();
    assert.ok(done, `got ${got.length}: ${got.join(",")}`);
    assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => String(i)));
    assert.equal(sub.positions.get("durable.orders")?.offset, "100");
  } finally {
    subClient.close();
    pubClient.close();
    await cluster.stop();
  }
});

test("an ephemeral subscription throws MessagesLostError after a coord restart", async () => {
  const cluster = await Cluster.start();
  const first = cluster.coords[0]!;
  const client = new Client({ endpoints: first.addr });
  try {
    const sub = await client.subscribe("plain");
    const reading = (async () => {
      for await (const message of sub) void message;
    })();
    const outcome = reading.then(() => "ended", (e: unknown) => e);
    await sleep(300);
    await first.kill();
    await first.start();
    const error = await Promise.race([outcome, sleep(20_000).then(() => "timeout")]);
    assert.ok(error instanceof MessagesLostError, `threw ${String(error)}`);
    assert.equal(error.channel, "plain");
  } finally {
    client.close();
    await cluster.stop();
  }
});

test("publish with an idempotency key is published once", async () => {
  const cluster = await Cluster.start(1);
  const client = new Client({ endpoints: cluster.addrs });
  try {
    const a = await client.publish("durable.once", "x", { idempotencyKey: "k1" });
    const b = await client.publish("durable.once", "x", { idempotencyKey: "k1" });
    assert.equal(a.mode, "CHANNEL_MODE_RECOVERABLE");
    assert.equal(b.replayed, true);
    assert.equal(b.offset, a.offset);
  } finally {
    client.close();
    await cluster.stop();
  }
});
