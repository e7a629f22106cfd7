/**
 * One KeepAlive stream per client renews every lease the client's holds
 * use. Renewals go out every third of a lease's TTL; a lease is declared
 * lost when the server says so (`lock_lost`, or a renewal answered with
 * TTL ≤ 0) or when no renewal was confirmed for a whole TTL (coord or its
 * Redis unreachable). A broken stream is reopened with backoff, on the
 * client's next endpoint.
 *
 * @internal
 * @module
 */

import type { ClientDuplexStream } from "@grpc/grpc-js";

import { LockLostError } from "./errors";
import type { KeepAliveRequest } from "./generated/coord/v1/KeepAliveRequest";
import type { KeepAliveResponse__Output } from "./generated/coord/v1/KeepAliveResponse";
import type { Stubs } from "./proto";
import { jitter, now } from "./util";

/** What the KeepAlive stream needs of the client. */
export interface Connector {
  /** The stubs of the current endpoint, and its index. */
  current(): [Stubs, number];
  /** Moves on from endpoint `index` after a failure. */
  rotate(index: number): void;
  /** Metadata of every call. */
  metadata(): import("@grpc/grpc-js").Metadata;
}

const LOST_REASONS: Record<string, string> = {
  LOCK_LOST_REASON_EXPIRED: "expired",
  LOCK_LOST_REASON_FORCE_RELEASED: "force released",
  LOCK_LOST_REASON_LEASE_REVOKED: "lease revoked",
  LOCK_LOST_REASON_BACKEND_UNAVAILABLE: "backend unavailable",
  LOCK_LOST_REASON_QUORUM_LOST: "quorum lost",
};

/** The reason no renewal could be confirmed in time. */
export const WATCHDOG_REASON = "no renewal confirmed for a whole TTL";

const TICK_MS = 25;

/** A lease kept alive, and whether it is lost. */
export class Lease {
  /** When the last renewal coord confirmed was sent (or the grant arrived). */
  confirmed = now();
  /** When the next renewal is due. */
  due: number;
  /** Send times of renewals not answered yet, oldest first. */
  pending: number[] = [];
  /** Why it was lost ("" while held). */
  reason = "";
  readonly controller = new AbortController();

  constructor(
    readonly name: string,
    readonly leaseId: string,
    readonly ttlMs: number,
  ) {
    this.due = this.confirmed + ttlMs / 3;
  }

  get lost(): boolean {
    return this.controller.signal.aborted;
  }

  lose(reason: string): void {
    if (this.lost) return;
    this.reason = reason;
    this.controller.abort(new LockLostError(this.name, reason));
  }
}

/** The client's KeepAlive stream. */
export class KeepAlive {
  private readonly leases = new Map<string, Lease>();
  private stream: ClientDuplexStream<KeepAliveRequest, KeepAliveResponse__Output> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private reopenAt = 0;
  /** Set when a stream broke: its successor renews every lease at once. */
  private broke = false;
  private delay = 50;
  private closed = false;

  constructor(private readonly connector: Connector) {}

  /** Starts renewing `leaseId` (granted with `ttlMs`) for the hold `name`. */
  add(name: string, leaseId: string, ttlMs: number): Lease {
    const lease = new Lease(name, leaseId, ttlMs);
    if (this.closed) {
      lease.lose("client closed");
      return lease;
    }
    this.leases.set(leaseId, lease);
    if (!this.timer) this.timer = setInterval(() => this.tick(), TICK_MS);
    this.tick();
    return lease;
  }

  /** Stops renewing `lease`; the stream closes when nothing is left to renew. */
  remove(lease: Lease): void {
    if (this.leases.get(lease.leaseId) === lease) this.leases.delete(lease.leaseId);
    if (this.leases.size === 0) this.stop();
  }

  /** Stops renewals for good (held leases then run out their TTL). */
  close(): void {
    this.closed = true;
    for (const lease of this.leases.values()) lease.lose("client closed");
    this.leases.clear();
    this.stop();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const stream = this.stream;
    this.stream = null;
    stream?.cancel();
  }

  private tick(): void {
    const t = now();
    // The watchdog: no renewal confirmed for a whole TTL.
    for (const lease of this.leases.values()) {
      if (!lease.lost && t - lease.confirmed > lease.ttlMs) lease.lose(WATCHDOG_REASON);
    }
    if (!this.stream) {
      if (t < this.reopenAt) return;
      this.open();
    }
    const stream = this.stream;
    if (!stream) return;
    for (const lease of this.leases.values()) {
      if (lease.lost || lease.due > t) continue;
      lease.due = t + lease.ttlMs / 3;
      lease.pending.push(t);
      stream.write({ leaseId: lease.leaseId });
    }
  }

  private open(): void {
    const [stubs, index] = this.connector.current();
    const call = stubs.locks.KeepAlive(this.connector.metadata());
    this.stream = call;
    for (const lease of this.leases.values()) {
      // After a break, renew everything at once (renewals may have been
      // lost with the old stream); a first stream keeps the grants' schedule.
      if (this.broke) lease.due = 0;
      lease.pending = [];
    }
    this.broke = false;
    call.on("data", (event: KeepAliveResponse__Output) => {
      if (this.stream !== call) return;
      this.delay = 50;
      this.handle(event);
    });
    const broken = (): void => {
      if (this.stream !== call) return;
      this.stream = null;
      this.broke = true;
      call.cancel();
      this.connector.rotate(index);
      this.reopenAt = now() + jitter(this.delay);
      this.delay = Math.min(this.delay * 2, 2000);
    };
    call.on("error", broken);
    call.on("end", broken);
  }

  private handle(event: KeepAliveResponse__Output): void {
    if (event.renewed) {
      const lease = this.leases.get(event.renewed.leaseId);
      if (!lease) return;
      const sent = lease.pending.shift();
      if (Number(event.renewed.ttlMs) <= 0) {
        lease.lose("expired");
      } else if (sent !== undefined) {
        lease.confirmed = Math.max(lease.confirmed, sent);
      }
    } else if (event.lockLost) {
      const lease = this.leases.get(event.lockLost.leaseId);
      lease?.lose(LOST_REASONS[event.lockLost.reason] ?? `lost (${event.lockLost.reason})`);
    }
  }
}
