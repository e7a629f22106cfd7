// Copies coord's protos (../../proto/coord/v1/*.proto) into proto/ so the
// packed package loads them at run time without the repository or protoc.
"use strict";
const fs = require("fs");
const path = require("path");

const from = path.resolve(__dirname, "../../../proto/coord/v1");
const to = path.resolve(__dirname, "../proto/coord/v1");
if (!fs.existsSync(from)) {
  if (fs.existsSync(to)) process.exit(0); // an unpacked package: already copied
  throw new Error(`${from} not found: run from clients/node of the coord repository`);
}
fs.rmSync(path.resolve(__dirname, "../proto"), { recursive: true, force: true });
fs.mkdirSync(to, { recursive: true });
for (const file of fs.readdirSync(from).filter((f) => f.endsWith(".proto"))) {
  fs.copyFileSync(path.join(from, file), path.join(to, file));
}
