// A live coord for the tests: a redis-server and coord processes started
// here (COORD_BIN, default target/debug/coord of the repository;
// redis-server from REDIS_SERVER or PATH). Nothing is mocked.
import { ChildProcess, execFileSync, spawn } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";

import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";

export const ROOT = path.resolve(__dirname, "../../../..");
export const PACKAGE = path.resolve(__dirname, "../..");
export const COORD_BIN = process.env.COORD_BIN || path.join(ROOT, "target/debug/coord");

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

export async function waitPort(port: number, withinMs = 15_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

function which(binary: string): string | undefined {
  try {
    return execFileSync("sh", ["-c", `command -v ${binary}`]).toString().trim() || undefined;
  } catch {
    return undefined;
  }
}

async function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  await new Promise((resolve) => proc.once("exit", resolve));
}

export class Redis {
  port = 0;
  url = "";
  proc!: ChildProcess;

  constructor(readonly dir: string) {}

  async start(): Promise<this> {
    const binary = process.env.REDIS_SERVER || which("redis-server");
    if (!binary) throw new Error("redis-server not found (set REDIS_SERVER)");
    this.port = await freePort();
    this.proc = spawn(binary, ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      "--dir", this.dir], { stdio: "ignore" });
    await waitPort(this.port);
    this.url = `redis://127.0.0.1:${this.port}`;
    return this;
  }

  pause(): void {
    this.proc.kill("SIGSTOP");
  }

  resume(): void {
    this.proc.kill("SIGCONT");
  }

  async stop(): Promise<void> {
    this.resume();
    this.proc.kill("SIGKILL");
    await exited(this.proc);
  }
}

export class Coord {
  port = 0;
  addr = "";
  proc!: ChildProcess;

  constructor(readonly redis: Redis, readonly log: string) {}

  async start(): Promise<this> {
    if (!fs.existsSync(COORD_BIN)) throw new Error(`${COORD_BIN} missing: cargo build --bin coord (or set COORD_BIN)`);
    if (!this.port) {
      this.port = await freePort();
      this.addr = `127.0.0.1:${this.port}`;
    }
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("COORD_")) env[k] = v;
    const log = fs.openSync(this.log, "a");
    this.proc = spawn(COORD_BIN, ["serve", "--redis-url", this.redis.url, "--listen", this.addr, "--metrics-enabled",
      "false", "--log-format", "json", "--pubsub-recoverable-prefixes", "durable."], { env, stdio: ["ignore", "ignore", log] });
    fs.closeSync(log);
    await waitPort(this.port);
    await waitReady(this.addr);
    return this;
  }

  async kill(): Promise<void> {
    this.proc.kill("SIGKILL");
    await exited(this.proc);
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }
}

async function waitReady(addr: string): Promise<void> {
  const client = new grpc.Client(addr, grpc.credentials.createInsecure());
  try {
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 15_000, (error) => (error ? reject(error) : resolve())));
  } finally {
    client.close();
  }
}

/** A redis-server and two coord instances on it. */
export class Cluster {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "coord-node-"));
  redis = new Redis(this.dir);
  coords: Coord[] = [];

  static async start(instances = 2): Promise<Cluster> {
    const cluster = new Cluster();
    await cluster.redis.start();
    for (let i = 0; i < instances; i++) {
      cluster.coords.push(await new Coord(cluster.redis, path.join(cluster.dir, `coord-${i}.log`)).start());
    }
    return cluster;
  }

  get addrs(): string[] {
    return this.coords.map((c) => c.addr);
  }

  async stop(): Promise<void> {
    for (const c of this.coords) if (c.running) await c.kill();
    await this.redis.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// Raw stubs, for what the client does not do (admin calls).
const definition = loader.loadSync(["coord/v1/lock.proto", "coord/v1/semaphore.proto", "coord/v1/election.proto"], {
  includeDirs: [path.join(PACKAGE, "proto")], longs: String, enums: String, defaults: true, oneofs: true,
});
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const pb = (grpc.loadPackageDefinition(definition) as any).coord.v1;

/** A unary call on a raw stub of `service` ("LockService", …) at `addr`. */
export async function raw<T = Record<string, unknown>>(addr: string, service: string, method: string, request: object): Promise<T> {
  const client = new pb[service](addr, grpc.credentials.createInsecure());
  try {
    return await new Promise<T>((resolve, reject) =>
      client[method](request, new grpc.Metadata(), { deadline: Date.now() + 10_000 },
        (error: Error | null, reply: T) => (error ? reject(error) : resolve(reply))));
  } finally {
    client.close();
  }
}

/** Resolves with true once `signal` aborts, false after `ms`. */
export function aborted(signal: AbortSignal, ms: number): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(false);
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
