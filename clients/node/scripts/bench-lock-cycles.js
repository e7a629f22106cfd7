// Lock acquire+release cycles through @coord/client against raw
// proto-loader stubs, alternated raw/lib 3 times on one coord, one caller
// each: what the library's layer costs per cycle.
//
//   node scripts/bench-lock-cycles.js HOST:PORT [SECONDS]     (after npm run build)
"use strict";
const path = require("path");
const { randomUUID } = require("crypto");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const { Client } = require("..");

const [addr, secs = "4"] = process.argv.slice(2);
const definition = loader.loadSync(["coord/v1/lock.proto"], {
  includeDirs: [path.join(__dirname, "..", "proto")], longs: String, enums: String, defaults: true, oneofs: true,
});
const LockService = grpc.loadPackageDefinition(definition).coord.v1.LockService;
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const unary = (stub, method, request) => new Promise((resolve, reject) =>
  stub[method](request, { deadline: Date.now() + 5000 }, (e, v) => (e ? reject(e) : resolve(v))));

async function timed(cycle) {
  let n = 0;
  const end = Date.now() + Number(secs) * 1000;
  const c0 = cpu();
  while (Date.now() < end) { await cycle(); n++; }
  return [n / Number(secs), ((cpu() - c0) / n) * 1e6];
}

async function raw() {
  const stub = new LockService(addr, grpc.credentials.createInsecure());
  const result = await timed(async () => {
    const r = await unary(stub, "Acquire", { name: "raw", ttlMs: 10000, requestId: randomUUID() });
    await unary(stub, "Release", { name: "raw", leaseId: r.leaseId });
  });
  stub.close();
  return result;
}

async function lib() {
  const coord = new Client({ endpoints: addr });
  const result = await timed(() => coord.withLock("lib", { ttlMs: 10000 }, async () => {}));
  coord.close();
  return result;
}

(async () => {
  const runs = { raw: [], lib: [] };
  for (let i = 0; i < 3; i++) { runs.raw.push(await raw()); runs.lib.push(await lib()); }
  const median = (xs) => xs.slice().sort((a, b) => a - b)[1];
  const med = {};
  for (const k of ["raw", "lib"]) {
    med[k] = [median(runs[k].map((r) => r[0])), median(runs[k].map((r) => r[1]))];
    console.log(`${k}: ${med[k][0].toFixed(0)} cycles/s, client CPU ${med[k][1].toFixed(0)} µs/cycle (medians of 3)`);
  }
  console.log(`lib/raw: ${(med.lib[0] / med.raw[0]).toFixed(2)}x cycles/s, +${(med.lib[1] - med.raw[1]).toFixed(0)} µs client CPU`);
})();
