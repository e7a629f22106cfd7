// The README's quick start runs as written against a live coord.
import * as assert from "assert/strict";
import { execFile } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { test } from "node:test";

import { Cluster, PACKAGE } from "./harness";

test("the README quick start runs as written", async () => {
  const readme = fs.readFileSync(path.join(PACKAGE, "README.md"), "utf8");
  const block = /<!-- ci:quickstart -->\n```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, "the quick start block");
  // Inside the package, so that `@coord/client` resolves to it.
  const script = path.join(PACKAGE, "build-test", "quickstart.mjs");
  fs.writeFileSync(script, block[1] as string);
  const cluster = await Cluster.start();
  try {
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [script], { env: { ...process.env, COORD_ENDPOINT: cluster.addrs.join(",") }, timeout: 60_000 },
        (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
    });
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /step 2 fenced with token \d+/);
    assert.match(out.stdout, /allowed: \[ true, true, false \]/);
    assert.match(out.stdout, /got order 1 at offset 1/);
  } finally {
    await cluster.stop();
  }
});
