// Rate limits and leaderboards against a live coord.
import * as assert from "assert/strict";
import * as http from "http";
import { test } from "node:test";

import { Client, rateLimitMiddleware } from "@coord/client";
import type { Limit } from "@coord/client";
import { Cluster } from "./harness";

const perMinute: Limit = { name: "api", slidingLog: { limit: 2, windowMs: 60_000 } };

test("check: allowed, then denied with a retry-after", async () => {
  const cluster = await Cluster.start(1);
  const client = new Client({ endpoints: cluster.addrs });
  try {
    const peek = await client.check("user:1", { limits: [perMinute], peek: true });
    assert.equal(peek.allowed, true);
    const decisions = [];
    for (let i = 0; i < 3; i++) decisions.push(await client.check("user:1", { limits: [perMinute] }));
    assert.deepEqual(decisions.map((d) => d.allowed), [true, true, false]);
    const denied = decisions[2]!;
    assert.ok(denied.retryAfterMs !== null && denied.retryAfterMs > 0 && denied.retryAfterMs <= 60_000, String(denied.retryAfterMs));
    assert.equal(denied.limits[0]?.name, "api");
    const never = await client.check("user:2", { limits: [perMinute], cost: 5 });
    assert.equal(never.allowed, false);
    assert.equal(never.retryAfterMs, null, "a cost above the limit never passes");
  } finally {
    client.close();
    await cluster.stop();
  }
});

test("the middleware answers 429 with Retry-After", async () => {
  const cluster = await Cluster.start(1);
  const client = new Client({ endpoints: cluster.addrs });
  const limit = rateLimitMiddleware<http.IncomingMessage>(client, {
    limits: [perMinute],
    subject: (req) => `user:${String(req.headers["x-user"])}`,
  });
  const server = http.createServer((req, res) => limit(req, res, (error?: unknown) => {
    res.statusCode = error ? 500 : 200;
    res.end(error ? String(error) : "ok");
  }));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const get = (user: string): Promise<{ status: number; retryAfter: string | undefined }> =>
    new Promise((resolve, reject) => {
      http.get({ host: "127.0.0.1", port, path: "/", headers: { "x-user": user } }, (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] as string | undefined }));
      }).on("error", reject);
    });
  try {
    assert.equal((await get("7")).status, 200);
    assert.equal((await get("7")).status, 200);
    const denied = await get("7");
    assert.equal(denied.status, 429);
    assert.ok(Number(denied.retryAfter) >= 1 && Number(denied.retryAfter) <= 60, `Retry-After ${denied.retryAfter}`);
    assert.equal((await get("8")).status, 200, "another subject has its own limit");
  } finally {
    server.close();
    client.close();
    await cluster.stop();
  }
});

test("leaderboard: submit, top, around, ranks, count, remove", async () => {
  const cluster = await Cluster.start(1);
  const client = new Client({ endpoints: cluster.addrs });
  try {
    const board = client.leaderboard("scores");
    const created = await board.create({ order: "SORT_ORDER_DESCENDING", operator: "OPERATOR_BEST" });
    assert.equal(created.created, true);
    for (const [member, score] of [["ann", 30], ["bob", 10], ["cy", 20]] as const) await board.submit(member, score);
    await board.submit("bob", 5); // BEST keeps 10
    const top = await board.top({ limit: 10 });
    assert.deepEqual(top.entries.map((e) => [e.member, e.score, e.rank]), [["ann", "30", "1"], ["cy", "20", "2"], ["bob", "10", "3"]]);
    const around = await board.around("cy", { before: 1, after: 1 });
    assert.equal(around.found, true);
    assert.deepEqual(around.entries.map((e) => e.member), ["ann", "cy", "bob"]);
    const ranks = await board.ranks(["bob", "nobody"]);
    assert.equal(ranks.entries.find((e) => e.member === "bob")?.entry?.rank, "3");
    assert.equal(await board.count(), 3);
    assert.equal(await board.remove("ann"), true);
    assert.equal(await board.remove("ann"), false);
    assert.equal(await board.count(), 2);
  } finally {
    client.close();
    await cluster.stop();
  }
});
