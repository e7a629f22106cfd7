/**
 * The client.
 *
 * @module
 */

import { randomUUID } from "crypto";
import * as grpc from "@grpc/grpc-js";

import { CoordError, NotAcquiredError, UnavailableError, fromGrpc } from "./errors";
import type { Position } from "./errors";
import type { ElectionState__Output } from "./generated/coord/v1/ElectionState";
import type { Limit } from "./generated/coord/v1/Limit";
import type { LimitStatus__Output } from "./generated/coord/v1/LimitStatus";
import type { PublishResponse__Output } from "./generated/coord/v1/PublishResponse";
import { Hold, Leadership, Lock, Permit } from "./holds";
import type { HoldOwner, LockModeName } from "./holds";
import { KeepAlive } from "./keepalive";
import type { Lease } from "./keepalive";
import { Leaderboard } from "./leaderboard";
import { stubs as makeStubs } from "./proto";
import type { Stubs } from "./proto";
import { Observation, Subscription } from "./streams";
import { jitter, sleep, toBuffer } from "./util";

/** TLS to coord. */
export interface TlsOptions {
  /** PEM of the CA that signed coord's certificate (default: the system's roots). */
  ca?: Buffer | string;
  /** PEM client certificate, for mutual TLS (with `key`). */
  cert?: Buffer | string;
  /** PEM private key of `cert`. */
  key?: Buffer | string;
  /** The name to verify in coord's certificate (default: the endpoint's host). */
  serverName?: string;
}

/** How to reach coord. */
export interface ClientOptions {
  /** `host:port` of coord's instances, tried in turn when one fails. */
  endpoints: string | string[];
  /** coord's tenant namespace (`coord-namespace` header; coord's default: "default"). */
  namespace?: string;
  /** An API key or a JWT, sent as `authorization: Bearer <token>`. */
  token?: string;
  /** TLS (plaintext without it). */
  tls?: TlsOptions;
  /** Deadline of each call in milliseconds, on top of any wait it asks for (default 10 000). */
  timeoutMs?: number;
}

/** Options of {@link Client.lock}. */
export interface LockOptions {
  /** The lease's TTL in milliseconds (default 10 000); renewed every third of it. */
  ttlMs?: number;
  /** How long to wait for the lock in milliseconds (default 0: try once). */
  waitMs?: number;
  /** Free text shown in Describe, e.g. "billing-7f9c". */
  owner?: string;
  /** `"shared"` / `"exclusive"`: a side of the read/write lock `name` (a separate lock from the plain one). */
  mode?: LockModeName;
}

/** Options of {@link Client.semaphore}. */
export interface SemaphoreOptions {
  /** Permits wanted (default 1). */
  permits?: number;
  /** The semaphore's size when this call creates it (default 1); an existing one keeps its size. */
  size?: number;
  /** The lease's TTL in milliseconds (default 10 000). */
  ttlMs?: number;
  /** How long to wait in milliseconds (default 0: try once). */
  waitMs?: number;
  /** Free text shown in Describe. */
  owner?: string;
}

/** Options of {@link Client.campaign}. */
export interface CampaignOptions {
  /** The leader's value (e.g. its address), seen by observers. */
  value?: Buffer | Uint8Array | string;
  /** The lease's TTL in milliseconds (default 10 000). */
  ttlMs?: number;
  /** How long to wait to be elected in milliseconds (default 0: coord's maximum wait, 5 min by default). */
  waitMs?: number;
  /** Free text shown as the leader's owner. */
  owner?: string;
}

/** Options of {@link Client.check}. */
export interface CheckOptions {
  /** A named policy from coord's policy file. */
  policy?: string;
  /** Limits inline (or none when `policy` names them), e.g. `{name: "api", fixedWindow: {limit: 2, windowMs: 1000}}`. */
  limits?: Limit[];
  /** Units to charge (default 1). */
  cost?: number;
  /** Report what a check would answer without charging anything. */
  peek?: boolean;
}

/** The answer of {@link Client.check}. */
export interface Decision {
  /** Whether every limit admitted the cost (and charged it, unless peeking). */
  allowed: boolean;
  /** 0 when allowed; else milliseconds until a retry can pass; null when it never can (cost above a limit's size). */
  retryAfterMs: number | null;
  /** Per limit: its size, what remains, its retry and reset times. */
  limits: LimitStatus__Output[];
}

/** Options of {@link Client.publish}. */
export interface PublishOptions {
  /** Recoverable channels: a key seen recently is not published again (and makes the call safe to retry). */
  idempotencyKey?: string;
  /** Delivered with the message. */
  headers?: Record<string, string>;
}

/** Options of {@link Client.subscribe}. */
export interface SubscribeOptions {
  /** Recoverable channels: resume after these positions (e.g. {@link Subscription.positions} of an earlier subscription). */
  since?: Record<string, Position>;
}

/** The state of an election: its leader, or none. */
export type ElectionState = ElectionState__Output;

/** Options of a unary call. @internal */
export interface CallOptions {
  /** Safe to retry on another endpoint after UNAVAILABLE. */
  idempotent?: boolean;
  /** Extra milliseconds on top of the client's timeout (a wait). */
  extraMs?: number;
}

/** A unary call on a set of stubs. @internal */
export type Unary<T> = (s: Stubs, metadata: grpc.Metadata, options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, value?: T) => void) => unknown;

/** Runs `fn` with the hold once acquired, and gives the hold back afterwards whatever happens. */
async function holding<H extends Hold, T>(acquired: Promise<H>, fn: (hold: H) => Promise<T> | T): Promise<T> {
  const hold = await acquired;
  try {
    return await fn(hold);
  } finally {
    await hold.release();
  }
}

/**
 * A connection to coord: channels to its instances (tried in turn when one
 * fails), one KeepAlive stream renewing every hold, and the calls.
 *
 * ```ts
 * const coord = new Client({ endpoints: ["10.0.0.1:50051", "10.0.0.2:50051"], namespace: "billing" });
 * await coord.withLock("nightly-report", { ttlMs: 10_000, waitMs: 5_000 }, async (lock) => {
 *   // ... pass lock.fencingToken to what you write; lock.signal aborts if the lock is lost
 * });
 * coord.close();
 * ```
 */
export class Client {
  /** Deadline of each call in milliseconds. */
  readonly timeoutMs: number;
  private readonly endpoints: string[];
  private readonly namespace: string | undefined;
  private readonly token: string | undefined;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly channelOptions: grpc.ChannelOptions;
  private readonly connections = new Map<string, Stubs>();
  private index = 0;
  private closed = false;
  private readonly keepAlive: KeepAlive;
  private readonly holdOwner: HoldOwner;
  private readonly streams = new Set<{ close(): void }>();

  /** @param options - endpoints, namespace, token, TLS, timeout. */
  constructor(options: ClientOptions) {
    this.endpoints = typeof options.endpoints === "string" ? [options.endpoints] : [...options.endpoints];
    if (this.endpoints.length === 0) throw new CoordError("endpoints: give at least one host:port", grpc.status.INVALID_ARGUMENT);
    this.namespace = options.namespace;
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.channelOptions = {
      // Reconnect quickly to an instance that comes back.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2000,
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
    };
    if (options.tls) {
      const pem = (v: Buffer | string | undefined): Buffer | null => (v === undefined ? null : Buffer.from(v));
      this.credentials = grpc.credentials.createSsl(pem(options.tls.ca), pem(options.tls.key), pem(options.tls.cert));
      if (options.tls.serverName) this.channelOptions["grpc.ssl_target_name_override"] = options.tls.serverName;
    } else {
      this.credentials = grpc.credentials.createInsecure();
    }
    this.keepAlive = new KeepAlive({
      current: () => this.current(),
      rotate: (i) => this.rotate(i),
      metadata: () => this.metadata(),
    });
    this.holdOwner = { forget: (lease: Lease) => this.keepAlive.remove(lease) };
  }

  // --- connections ---

  /** The stubs of the current endpoint and its index. @internal */
  current(): [Stubs, number] {
    if (this.closed) throw new CoordError("client closed", grpc.status.CANCELLED);
    const index = this.index;
    const endpoint = this.endpoints[index % this.endpoints.length] as string;
    let s = this.connections.get(endpoint);
    if (!s) {
      s = makeStubs(endpoint, this.credentials, this.channelOptions);
      this.connections.set(endpoint, s);
    }
    return [s, index];
  }

  /** Moves on to the next endpoint after endpoint `index` failed (once per failure). @internal */
  rotate(index: number): void {
    if (this.index === index) this.index += 1;
  }

  /** The metadata of every call. @internal */
  metadata(): grpc.Metadata {
    const m = new grpc.Metadata();
    if (this.namespace) m.set("coord-namespace", this.namespace);
    if (this.token) m.set("authorization", `Bearer ${this.token}`);
    return m;
  }

  /**
   * One unary call; UNAVAILABLE moves to the next endpoint, and is retried
   * there with jittered backoff when the call is idempotent. @internal
   */
  async call<T>(fn: Unary<T>, options: CallOptions = {}): Promise<T> {
    const attempts = options.idempotent ? Math.max(3, this.endpoints.length * 2) : 1;
    let delay = 50;
    for (let attempt = 1; ; attempt++) {
      const [s, index] = this.current();
      try {
        return await new Promise<T>((resolve, reject) => {
          const deadline = new Date(Date.now() + this.timeoutMs + (options.extraMs ?? 0));
          fn(s, this.metadata(), { deadline }, (error, value) => (error ? reject(error) : resolve(value as T)));
        });
      } catch (e) {
        const error = fromGrpc(e);
        if (!(error instanceof UnavailableError)) throw error;
        this.rotate(index);
        if (attempt >= attempts) throw error;
        await sleep(jitter(delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  /**
   * Stops renewals, ends subscriptions and observations, and closes the
   * connections. Holds not released first run out their TTL on coord (and
   * are signalled lost here).
   */
  close(): void {
    if (this.closed) return;
    this.keepAlive.close();
    for (const stream of [...this.streams]) stream.close();
    this.closed = true;
    for (const s of this.connections.values()) s.channel.close();
    this.connections.clear();
  }

  /** @internal */
  track(stream: { close(): void }): () => void {
    this.streams.add(stream);
    return () => {
      this.streams.delete(stream);
    };
  }

  // --- locks ---

  /**
   * Acquires the lock `name` (waiting up to `waitMs`) under a private lease
   * that this client's KeepAlive stream renews until {@link Hold.release}.
   * With `mode` it is a side of the read/write lock `name`.
   *
   * @throws {@link NotAcquiredError} when someone else still held it when the wait ran out.
   */
  async lock(name: string, options: LockOptions = {}): Promise<Lock> {
    const ttlMs = options.ttlMs ?? 10_000;
    const waitMs = options.waitMs ?? 0;
    const mode = options.mode === undefined ? "LOCK_MODE_UNSPECIFIED"
      : options.mode === "shared" ? "LOCK_MODE_SHARED" : "LOCK_MODE_EXCLUSIVE";
    // A request id makes a retried Acquire return the first one's grant
    // (coord does not use it for read/write locks: those are not retried).
    const requestId = options.mode === undefined ? randomUUID() : "";
    const reply = await this.call<import("./generated/coord/v1/AcquireResponse").AcquireResponse__Output>(
      (s, m, o, cb) => s.locks.Acquire({ name, ttlMs, waitMs, owner: options.owner ?? "", requestId, mode }, m, o, cb),
      { idempotent: options.mode === undefined, extraMs: waitMs },
    );
    if (reply.status !== "ACQUIRE_STATUS_ACQUIRED") {
      throw new NotAcquiredError(`lock ${JSON.stringify(name)} is held by ${reply.holderOwner || "another holder"}`,
        reply.holderOwner);
    }
    const lease = this.keepAlive.add(name, reply.leaseId, Number(reply.ttlMs));
    const leaseId = reply.leaseId;
    return new Lock(this.holdOwner, name, lease, reply.fencingToken, options.mode, async () => {
      await this.call((s, m, o, cb) => s.locks.Release({ name, leaseId, mode }, m, o, cb), { idempotent: true });
    });
  }

  /**
   * Runs `fn` holding the lock `name`, and releases it afterwards whatever
   * happens. `fn` gets the {@link Lock}: check its `signal` between steps.
   */
  withLock<T>(name: string, options: LockOptions, fn: (lock: Lock) => Promise<T> | T): Promise<T> {
    return holding(this.lock(name, options), fn);
  }

  // --- semaphores ---

  /**
   * Takes `permits` permits of the semaphore `name` (all or nothing, FIFO),
   * waiting up to `waitMs`, under a private lease renewed until
   * {@link Hold.release}. Not retried (coord has no request id for it).
   *
   * @throws {@link NotAcquiredError} when not enough permits were free in time.
   */
  async semaphore(name: string, options: SemaphoreOptions = {}): Promise<Permit> {
    const permits = options.permits ?? 1;
    const waitMs = options.waitMs ?? 0;
    const reply = await this.call<import("./generated/coord/v1/SemaphoreServiceAcquireResponse").SemaphoreServiceAcquireResponse__Output>(
      (s, m, o, cb) => s.semaphores.Acquire({
        name, permits, size: options.size ?? 1, ttlMs: options.ttlMs ?? 10_000, waitMs, owner: options.owner ?? "",
      }, m, o, cb),
      { extraMs: waitMs },
    );
    if (reply.status !== "SEMAPHORE_ACQUIRE_STATUS_ACQUIRED") {
      throw new NotAcquiredError(`semaphore ${JSON.stringify(name)}: ${permits} permit(s) not free ` +
        `(${reply.waitersAhead} waiting ahead)`);
    }
    const lease = this.keepAlive.add(name, reply.leaseId, Number(reply.ttlMs));
    const { permitId, leaseId } = reply;
    return new Permit(this.holdOwner, name, lease, permitId, permits, async () => {
      await this.call((s, m, o, cb) => s.semaphores.Release({ name, permitId, leaseId }, m, o, cb), { idempotent: true });
    });
  }

  /** Runs `fn` holding permits of the semaphore `name`, and releases them afterwards. */
  withSemaphore<T>(name: string, options: SemaphoreOptions, fn: (permit: Permit) => Promise<T> | T): Promise<T> {
    return holding(this.semaphore(name, options), fn);
  }

  // --- elections ---

  /**
   * Campaigns in `election` until elected (first come, first served),
   * waiting up to `waitMs`, under a private lease renewed until
   * {@link Leadership.resign}. Not retried (a retry would queue again).
   *
   * @throws {@link NotAcquiredError} when not elected in time.
   */
  async campaign(election: string, options: CampaignOptions = {}): Promise<Leadership> {
    const waitMs = options.waitMs ?? 0;
    const value = options.value === undefined ? Buffer.alloc(0) : toBuffer(options.value);
    const reply = await this.call<import("./generated/coord/v1/ElectionServiceCampaignResponse").ElectionServiceCampaignResponse__Output>(
      (s, m, o, cb) => s.elections.Campaign({
        election, ttlMs: options.ttlMs ?? 10_000, value, waitMs, owner: options.owner ?? "",
      }, m, o, cb),
      // waitMs 0 is coord's maximum wait (5 min by default).
      { extraMs: waitMs > 0 ? waitMs : 6 * 60_000 },
    );
    if (reply.status !== "CAMPAIGN_STATUS_ELECTED" || !reply.leadership) {
      throw new NotAcquiredError(`election ${JSON.stringify(election)}: not elected (${reply.candidatesAhead} ahead)`);
    }
    const leadership = { election, leaseId: reply.leadership.leaseId, term: reply.leadership.term };
    const lease = this.keepAlive.add(election, leadership.leaseId, Number(reply.ttlMs));
    return new Leadership(this.holdOwner, election, lease, leadership.term,
      async (v) => {
        await this.call((s, m, o, cb) => s.elections.Proclaim({ leadership, value: v }, m, o, cb), { idempotent: true });
      },
      async () => {
        await this.call((s, m, o, cb) => s.elections.Resign({ leadership }, m, o, cb), { idempotent: true });
      });
  }

  /** Runs `fn` as the leader of `election` (once elected), and resigns afterwards. */
  withLeadership<T>(election: string, options: CampaignOptions, fn: (leadership: Leadership) => Promise<T> | T): Promise<T> {
    return holding(this.campaign(election, options), fn);
  }

  /** The current state of `election`: its leader, or `hasLeader: false`. */
  async leader(election: string): Promise<ElectionState> {
    const reply = await this.call<import("./generated/coord/v1/ElectionServiceLeaderResponse").ElectionServiceLeaderResponse__Output>(
      (s, m, o, cb) => s.elections.Leader({ election }, m, o, cb), { idempotent: true });
    if (!reply.state) throw new CoordError("Leader: no state in the answer");
    return reply.state;
  }

  /**
   * The states of `election`: the current one, then every change in order
   * (new leader, proclaimed value, no leader). Reconnects (on the next
   * endpoint) after a disconnect, starting again from the then-current
   * state. End it with `break` or {@link Observation.close}.
   */
  observe(election: string): Observation {
    return new Observation(this, election);
  }

  // --- rate limits ---

  /**
   * Checks (and charges, unless `peek`) `cost` against a named policy or
   * inline limits. Not retried: a check may have charged.
   */
  async check(subject: string, options: CheckOptions = {}): Promise<Decision> {
    const reply = await this.call<import("./generated/coord/v1/CheckResponse").CheckResponse__Output>(
      (s, m, o, cb) => s.rateLimits.Check({
        subject, policy: options.policy ?? "", limits: options.limits ?? [], cost: options.cost ?? 1,
        mode: options.peek ? "CHECK_MODE_PEEK" : "CHECK_MODE_CONSUME",
      }, m, o, cb));
    let retryAfterMs: number | null = 0;
    if (!reply.allowed) {
      for (const limit of reply.limits) {
        if (limit.allowed) continue;
        const ms = Number(limit.retryAfterMs);
        if (ms < 0) {
          retryAfterMs = null;
          break;
        }
        retryAfterMs = Math.max(retryAfterMs ?? 0, ms);
      }
    }
    return { allowed: reply.allowed, retryAfterMs, limits: reply.limits };
  }

  // --- leaderboards ---

  /** The leaderboard `board` (created with {@link Leaderboard.create} or by an admin). */
  leaderboard(board: string): Leaderboard {
    return new Leaderboard(this, board);
  }

  // --- pub/sub ---

  /**
   * Publishes `payload` on `channel`. Retried on another instance only
   * with an `idempotencyKey` (otherwise a retry could publish twice).
   */
  async publish(channel: string, payload: Buffer | Uint8Array | string, options: PublishOptions = {}): Promise<PublishResponse__Output> {
    const idempotencyKey = options.idempotencyKey ?? "";
    return this.call<PublishResponse__Output>(
      (s, m, o, cb) => s.pubsub.Publish({
        channel, payload: toBuffer(payload), headers: options.headers ?? {}, idempotencyKey,
      }, m, o, cb),
      { idempotent: idempotencyKey !== "" });
  }

  /**
   * Subscribes to `channels`; resolves once the subscription is in place
   * (anything published from then on is delivered). Iterate it with `for
   * await`; it resumes after a disconnect from the last position it
   * yielded, and throws {@link MessagesLostError} when a gap cannot be
   * filled — never silently.
   */
  async subscribe(channels: string | string[], options: SubscribeOptions = {}): Promise<Subscription> {
    const subscription = new Subscription(this, typeof channels === "string" ? [channels] : channels, options.since ?? {});
    await subscription.start(Math.max(3, this.endpoints.length * 2));
    return subscription;
  }
}
