// Node side of the interop tests: @grpc/grpc-js with the stubs loaded from
// proto/ at run time by @grpc/proto-loader (nothing generated is checked in).
//   node node_client.js <command> --addr HOST:PORT [--flag value…]
// Every command prints JSON lines on stdout and exits non-zero on failure.
//
// Plaintext unless COORD_TLS_CA is set (the variables coord's own CLI reads):
//   COORD_TLS_CA             PEM CA of coord's certificate: TLS
//   COORD_TLS_CERT, _KEY     client certificate and key: mTLS
//   COORD_TLS_SERVER_NAME    name to verify (default: the address's host)
//   COORD_TOKEN              sent as `authorization: Bearer <token>` (needs TLS)
//   COORD_NAMESPACE          sent as `coord-namespace` on every call
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const PROTO_DIR = path.resolve(__dirname, "../../proto");
const definition = loader.loadSync(
  ["coord/v1/lock.proto", "coord/v1/ratelimit.proto", "coord/v1/leaderboard.proto", "coord/v1/pubsub.proto"],
  // int64 as strings: JavaScript numbers lose precision past 2^53.
  { includeDirs: [PROTO_DIR], longs: String, enums: String, defaults: true, oneofs: true },
);
const pb = grpc.loadPackageDefinition(definition).coord.v1;

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--")) throw new Error(`unexpected argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  return args;
}

const print = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const deadline = (ms) => ({ deadline: new Date(Date.now() + ms) });

// Metadata of every call: the namespace, if COORD_NAMESPACE says one.
function metadata() {
  const m = new grpc.Metadata();
  if (process.env.COORD_NAMESPACE) m.set("coord-namespace", process.env.COORD_NAMESPACE);
  return m;
}

// A unary call as a promise.
function call(client, method, request, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), deadline(timeoutMs), (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// Channel credentials and options from the environment (see the top).
function channel() {
  const env = process.env;
  if (!env.COORD_TLS_CA) {
    if (env.COORD_TOKEN) throw new Error("COORD_TOKEN needs TLS (COORD_TLS_CA): call credentials go only over TLS");
    return { credentials: grpc.credentials.createInsecure(), options: {} };
  }
  const read = (variable) => fs.readFileSync(env[variable]);
  const mtls = env.COORD_TLS_CERT && env.COORD_TLS_KEY;
  let credentials = grpc.credentials.createSsl(
    read("COORD_TLS_CA"),
    mtls ? read("COORD_TLS_KEY") : null,
    mtls ? read("COORD_TLS_CERT") : null,
  );
  if (env.COORD_TOKEN) {
    const token = grpc.credentials.createFromMetadataGenerator((_params, done) => {
      const m = new grpc.Metadata();
      m.set("authorization", `Bearer ${env.COORD_TOKEN}`);
      done(null, m);
    });
    credentials = grpc.credentials.combineChannelCredentials(credentials, token);
  }
  const options = env.COORD_TLS_SERVER_NAME ? { "grpc.ssl_target_name_override": env.COORD_TLS_SERVER_NAME } : {};
  return { credentials, options };
}

function client(Service, addr) {
  const { credentials, options } = channel();
  return new Service(addr, credentials, options);
}

// The same protected resource as pyclient.py's fenced_increment.
async function fencedIncrement(file, token, holdMs) {
  const state = JSON.parse(fs.readFileSync(file, "utf8"));
  const last = state.tokens.length ? BigInt(state.tokens[state.tokens.length - 1]) : -1n;
  if (BigInt(token) <= last) state.violations.push(Number(token));
  await sleep(holdMs);
  state.count += 1;
  state.tokens.push(Number(token));
  const tmp = `${file}.${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(state));
  fs.renameSync(tmp, file);
}

const commands = {
  // Contends with pyclient.py's worker for one lock, holding it under a lease
  // kept alive on one KeepAlive stream.
  async "lock-counter"(a) {
    const locks = client(pb.LockService, a.addr);
    const lease = await call(locks, "Grant", { ttlMs: a["ttl-ms"] || "1000", owner: "node-worker" });
    const stream = locks.KeepAlive(metadata());
    let renewals = 0;
    let failure = null;
    stream.on("data", (e) => {
      if (e.renewed) renewals += 1;
      if (e.lockLost) failure = `lock lost: ${e.lockLost.reason}`;
    });
    stream.on("error", (err) => (failure = failure || `keepalive: ${err.message}`));
    const renew = () => stream.write({ leaseId: lease.leaseId });
    renew();
    const timer = setInterval(renew, Number(lease.ttlMs) / 3);
    let contended = 0;
    for (let i = 0; i < Number(a.rounds || 20); i++) {
      const request = { name: a.name, leaseId: lease.leaseId, waitMs: 0 };
      let got = await call(locks, "Acquire", request);
      if (got.status !== "ACQUIRE_STATUS_ACQUIRED") {
        contended += 1;
        got = await call(locks, "Acquire", { ...request, waitMs: 30000 }, 40000);
      }
      if (got.status !== "ACQUIRE_STATUS_ACQUIRED") throw new Error(`not acquired: ${JSON.stringify(got)}`);
      // The first hold outlives the TTL: only the keepalive keeps it ours.
      await fencedIncrement(a.counter, got.fencingToken, i === 0 ? Number(a["long-hold-ms"] || 1500) : 10);
      print({ token: Number(got.fencingToken) });
      const released = await call(locks, "Release", { name: a.name, leaseId: lease.leaseId });
      if (released.status !== "RELEASE_STATUS_RELEASED") throw new Error(`release: ${released.status}`);
      if (failure) throw new Error(failure);
      await sleep(5);
    }
    clearInterval(timer);
    stream.end();
    await call(locks, "Revoke", { leaseId: lease.leaseId });
    print({ contended, renewals });
    locks.close();
  },

  // A unary call, `--service LockService --method Describe --request JSON`,
  // made `--times` times (default 1) one after the other: prints {reply} or,
  // when it fails, {code, status, details, retryAfterMs} for each.
  async call(a) {
    const stub = client(pb[a.service], a.addr);
    for (let i = 0; i < Number(a.times || 1); i++) {
      try {
        print({ reply: await call(stub, a.method, JSON.parse(a.request || "{}")) });
      } catch (err) {
        if (err.code === undefined) throw err;
        const [retryAfterMs] = err.metadata ? err.metadata.get("retry-after-ms") : [];
        print({ code: err.code, status: grpc.status[err.code], details: err.details, retryAfterMs });
      }
    }
    stub.close();
  },

  async "force-release"(a) {
    const locks = client(pb.LockService, a.addr);
    print(await call(locks, "ForceRelease", { name: a.name }));
    locks.close();
  },

  // `n` checks of one limit, `concurrency` in flight; prints the decisions.
  async ratelimit(a) {
    const limits = client(pb.RateLimitService, a.addr);
    const limit = { name: "interop", ...JSON.parse(a.limit) };
    let left = Number(a.n);
    let allowed = 0;
    let denied = 0;
    const worker = async () => {
      while (left-- > 0) {
        const reply = await call(limits, "Check", { subject: a.subject, limits: [limit] });
        if (reply.allowed) allowed += 1;
        else denied += 1;
      }
    };
    await Promise.all(Array.from({ length: Number(a.concurrency || 8) }, worker));
    print({ allowed, denied });
    limits.close();
  },

  // Creates a board and submits the entries of a JSON file in order.
  async "board-write"(a) {
    const boards = client(pb.LeaderboardService, a.addr);
    const board = { name: a.board, order: a.order, operator: "OPERATOR_BEST", periods: [{ kind: "PERIOD_KIND_ALL_TIME" }] };
    const created = await call(boards, "CreateBoard", { board });
    if (!created.created) throw new Error(`board ${a.board} existed`);
    for (const e of JSON.parse(fs.readFileSync(a.entries, "utf8"))) {
      // Scores are int64 strings: exact beyond 2^53.
      const reply = await call(boards, "Submit", { board: a.board, member: e.member, score: e.score, metadata: e.metadata });
      print({ member: e.member, rank: Number(reply.results[0].entry.rank) });
    }
    boards.close();
  },

  // Subscribes and prints `subscribed`, then `count` messages (payload in base64).
  async subscribe(a) {
    const pubsub = client(pb.PubSubService, a.addr);
    const stream = pubsub.Subscribe({ channels: [{ channel: a.channel }] }, metadata());
    let left = Number(a.count);
    await new Promise((resolve, reject) => {
      stream.on("data", (e) => {
        if (e.subscribed) print({ subscribed: e.subscribed.channels.map((c) => c.channel) });
        if (e.message) {
          const m = e.message;
          print({ channel: m.channel, payload: m.payload.toString("base64"), headers: m.headers, offset: m.offset });
          if (--left === 0) {
            stream.cancel();
            resolve();
          }
        }
      });
      stream.on("error", (err) => (err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
      stream.on("end", () => (left > 0 ? reject(new Error("stream ended")) : resolve()));
    });
    pubsub.close();
  },

  // A recoverable subscriber: takes `break-after` messages from `first`,
  // drops the stream and the connection, then resubscribes on `second` from
  // the last position it saw and reads until it has `total` messages.
  async resume(a) {
    const total = Number(a.total);
    const seen = [];
    let position = null;
    const session = (addr, since, stopAt) =>
      new Promise((resolve, reject) => {
        const pubsub = client(pb.PubSubService, addr);
        const stream = pubsub.Subscribe({ channels: [{ channel: a.channel, since }] }, metadata());
        let finished = false;
        const done = () => {
          finished = true;
          stream.cancel();
          pubsub.close();
          resolve();
        };
        stream.on("data", (e) => {
          if (e.subscribed) print({ subscribed: addr, position: e.subscribed.channels[0].position });
          if (e.recovery) print({ recovery: e.recovery });
          if (e.message && !finished) {
            const m = e.message;
            seen.push(m.payload.toString());
            position = { offset: m.offset, epoch: m.epoch };
            if (seen.length === stopAt) done();
          }
        });
        stream.on("error", (err) => (err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
      });
    await session(a.first, null, Number(a["break-after"]));
    print({ broke_after: seen.length, position });
    await sleep(300); // the publisher goes on meanwhile
    await session(a.second, position, total);
    print({ received: seen });
  },
};

const [command, ...rest] = process.argv.slice(2);
if (!commands[command]) {
  console.error(`unknown command ${command}; one of ${Object.keys(commands).join(", ")}`);
  process.exit(2);
}
commands[command](parseArgs(rest)).then(
  () => process.exit(0),
  (err) => {
    console.error(err.stack || err);
    process.exit(1);
  },
);
