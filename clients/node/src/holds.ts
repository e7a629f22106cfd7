/**
 * Held locks, permits and leaderships: renewed on the client's KeepAlive
 * stream until released, with their loss signalled by an `AbortSignal`.
 *
 * @module
 */

import { LockLostError } from "./errors";
import type { Lease } from "./keepalive";
import { toBuffer } from "./util";

/** What a hold needs of the client. @internal */
export interface HoldOwner {
  /** Stops renewing a lease. */
  forget(lease: Lease): void;
}

/**
 * Something held under a lease that the client renews for you: a
 * {@link Lock}, a {@link Permit} or a {@link Leadership}.
 *
 * Holds are leases, not mutual exclusion: check {@link Hold.signal} (or call
 * {@link Hold.check}) between steps of the work, and pass
 * {@link Hold.fencingToken} to what you write so a stale holder is refused.
 *
 * `await using hold = await client.lock(...)` releases it at the end of the
 * scope where the runtime has `Symbol.asyncDispose` (Node ≥ 18.18 with
 * TypeScript ≥ 5.2); otherwise call {@link Hold.release} in `finally`, or use
 * {@link Client.withLock} and friends.
 */
export abstract class Hold {
  /** The lock, semaphore or election name. */
  readonly name: string;
  /** The (private) lease that holds it. */
  readonly leaseId: string;
  /**
   * Strictly increasing per name across grants (uint64 as a decimal string;
   * compare with `BigInt`): the lock's fencing token, the permit id or the
   * leadership's term.
   */
  readonly fencingToken: string;
  /** The TTL granted, in milliseconds. */
  readonly ttlMs: number;
  /** @internal */
  protected readonly lease: Lease;
  /** @internal */
  protected readonly owner: HoldOwner;
  private released: Promise<void> | null = null;

  /** @internal */
  constructor(owner: HoldOwner, name: string, lease: Lease, fencingToken: string) {
    this.owner = owner;
    this.name = name;
    this.lease = lease;
    this.leaseId = lease.leaseId;
    this.ttlMs = lease.ttlMs;
    this.fencingToken = fencingToken;
  }

  /**
   * Aborted when the hold is lost, with a {@link LockLostError} as its
   * `reason` (whose `reason` says why: "force released", "expired", "lease
   * revoked", "no renewal confirmed for a whole TTL", …). Pass it to
   * anything that takes an `AbortSignal`.
   */
  get signal(): AbortSignal {
    return this.lease.controller.signal;
  }

  /** True once the hold is lost. */
  get lost(): boolean {
    return this.lease.lost;
  }

  /** Why the hold was lost, or undefined while it is held. */
  get lostReason(): string | undefined {
    return this.lease.lost ? this.lease.reason : undefined;
  }

  /** Throws {@link LockLostError} if the hold is lost. */
  check(): void {
    if (this.lease.lost) throw new LockLostError(this.name, this.lease.reason);
  }

  /**
   * Gives the hold back (nothing to do if it was lost). Safe to call more
   * than once.
   */
  release(): Promise<void> {
    if (!this.released) {
      this.owner.forget(this.lease);
      this.released = this.lease.lost ? Promise.resolve() : this.giveBack();
    }
    return this.released;
  }

  /** @internal */
  protected abstract giveBack(): Promise<void>;
}

// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface Hold {
  /** Releases the hold: `await using`. Present when the runtime has `Symbol.asyncDispose`. */
  [Symbol.asyncDispose](): Promise<void>;
}

if (typeof Symbol.asyncDispose === "symbol") {
  Object.defineProperty(Hold.prototype, Symbol.asyncDispose, {
    value: function (this: Hold): Promise<void> {
      return this.release();
    },
    writable: true,
    configurable: true,
  });
}

/** A held lock or read/write lock hold; see {@link Client.lock}. */
export class Lock extends Hold {
  /** `"shared"` / `"exclusive"` for a read/write lock; undefined for a plain lock. */
  readonly mode: LockModeName | undefined;
  private readonly releaser: () => Promise<void>;

  /** @internal */
  constructor(owner: HoldOwner, name: string, lease: Lease, token: string, mode: LockModeName | undefined,
    releaser: () => Promise<void>) {
    super(owner, name, lease, token);
    this.mode = mode;
    this.releaser = releaser;
  }

  /** @internal */
  protected giveBack(): Promise<void> {
    return this.releaser();
  }
}

/** A read/write lock's side: many `shared` holders or one `exclusive` one. */
export type LockModeName = "shared" | "exclusive";

/** Permits of a semaphore; see {@link Client.semaphore}. */
export class Permit extends Hold {
  /** The grant's id (= {@link Hold.fencingToken}), strictly increasing per semaphore. */
  readonly permitId: string;
  /** How many permits this grant holds. */
  readonly permits: number;
  private readonly releaser: () => Promise<void>;

  /** @internal */
  constructor(owner: HoldOwner, name: string, lease: Lease, permitId: string, permits: number,
    releaser: () => Promise<void>) {
    super(owner, name, lease, permitId);
    this.permitId = permitId;
    this.permits = permits;
    this.releaser = releaser;
  }

  /** @internal */
  protected giveBack(): Promise<void> {
    return this.releaser();
  }
}

/** A held leadership; see {@link Client.campaign}. Release = {@link Leadership.resign}. */
export class Leadership extends Hold {
  /** The leadership's term (= {@link Hold.fencingToken}), strictly increasing per election. */
  readonly term: string;
  private readonly proclaimer: (value: Buffer) => Promise<void>;
  private readonly resigner: () => Promise<void>;

  /** @internal */
  constructor(owner: HoldOwner, election: string, lease: Lease, term: string,
    proclaimer: (value: Buffer) => Promise<void>, resigner: () => Promise<void>) {
    super(owner, election, lease, term);
    this.term = term;
    this.proclaimer = proclaimer;
    this.resigner = resigner;
  }

  /** Sets the leader's value (observers see it) without a new election. */
  proclaim(value: Buffer | Uint8Array | string): Promise<void> {
    this.check();
    return this.proclaimer(toBuffer(value));
  }

  /** Gives the leadership up; the next candidate is elected at once. Same as {@link Hold.release}. */
  resign(): Promise<void> {
    return this.release();
  }

  /** @internal */
  protected giveBack(): Promise<void> {
    return this.resigner();
  }
}
