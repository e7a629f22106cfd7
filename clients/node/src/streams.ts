/**
 * Server streams that survive a disconnect: subscriptions (which resume
 * from their last position) and election observations.
 *
 * @module
 */

import type * as grpc from "@grpc/grpc-js";

import type { Client } from "./client";
import { MessagesLostError, UnavailableError, fromGrpc } from "./errors";
import type { Position } from "./errors";
import type { ElectionState__Output } from "./generated/coord/v1/ElectionState";
import type { ElectionServiceObserveResponse__Output } from "./generated/coord/v1/ElectionServiceObserveResponse";
import type { Message__Output } from "./generated/coord/v1/Message";
import type { SubscribeResponse__Output } from "./generated/coord/v1/SubscribeResponse";
import { jitter, sleep } from "./util";

/** A published message: `channel`, `payload` (bytes), `headers`, and on recoverable channels its `offset` and `epoch`. */
export type Message = Message__Output;

/** Reconnects a server stream with backoff on the client's next endpoint. */
abstract class Resumable<Event, Item> implements AsyncIterable<Item> {
  /** @internal */
  protected readonly client: Client;
  private call: grpc.ClientReadableStream<Event> | null = null;
  private iterator: AsyncIterator<Event> | null = null;
  private index = 0;
  private closed = false;
  private iterating = false;
  private readonly untrack: () => void;

  /** @internal */
  constructor(client: Client) {
    this.client = client;
    this.untrack = client.track(this);
  }

  /** Opens the call on the current endpoint. @internal */
  protected abstract open(): grpc.ClientReadableStream<Event>;

  /** What to yield for an event, or undefined; may throw. @internal */
  protected abstract accept(event: Event, first: boolean): Item | undefined;

  /** Called before reconnecting; may throw to stop. @internal */
  protected beforeReconnect(): void {}

  /** Opens the stream; returns its first event. @internal */
  protected async connect(): Promise<Event | undefined> {
    const [, index] = this.client.current();
    this.index = index;
    const call = this.open();
    this.call = call;
    this.iterator = call[Symbol.asyncIterator]() as AsyncIterator<Event>;
    const first = await this.iterator.next();
    return first.done ? undefined : first.value;
  }

  private drop(): void {
    const call = this.call;
    this.call = null;
    this.iterator = null;
    call?.cancel();
  }

  /** Drops a broken call and moves to the next endpoint. @internal */
  protected reset(): void {
    this.client.rotate(this.index);
    this.drop();
  }

  /** Ends the stream; a pending iteration returns. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.untrack();
    this.drop();
  }

  /** Iterates (once per object). */
  async *[Symbol.asyncIterator](): AsyncGenerator<Item, void, undefined> {
    if (this.iterating) throw new Error("already being iterated");
    this.iterating = true;
    let delay = 50;
    try {
      while (!this.closed) {
        try {
          let first: Event | undefined;
          if (!this.iterator) {
            this.beforeReconnect();
            first = await this.connect();
            if (first !== undefined) {
              const item = this.accept(first, true);
              if (item !== undefined) yield item;
            }
          }
          for (;;) {
            const iterator = this.iterator;
            if (!iterator || this.closed) break;
            const next = await iterator.next();
            if (next.done) break;
            delay = 50;
            const item = this.accept(next.value, false);
            if (item !== undefined) yield item;
          }
          if (this.closed) return;
          // Ended without an error: coord went away; reconnect.
        } catch (e) {
          if (this.closed) return;
          const error = fromGrpc(e);
          if (!(error instanceof UnavailableError)) throw error;
        }
        this.reset();
        await sleep(jitter(delay));
        delay = Math.min(delay * 2, 2000);
      }
    } finally {
      this.close();
    }
  }
}

/**
 * Messages of channels; see {@link Client.subscribe}. Iterate with `for
 * await`; `break` (or {@link Subscription.close}) unsubscribes.
 */
export class Subscription extends Resumable<SubscribeResponse__Output, Message> {
  /** The channels subscribed to. */
  readonly channels: readonly string[];
  /** Recoverable channels: the position of the last message yielded (subscribe again `since` these). */
  readonly positions: Map<string, Position>;
  private readonly ephemeral = new Set<string>();

  /** @internal */
  constructor(client: Client, channels: string[], since: Record<string, Position>) {
    super(client);
    this.channels = [...channels];
    this.positions = new Map(Object.entries(since));
  }

  /** Subscribes and waits until the subscription is in place. @internal */
  async start(attempts: number): Promise<void> {
    let delay = 50;
    for (let attempt = 1; ; attempt++) {
      try {
        const first = await this.connect();
        if (first === undefined) throw new UnavailableError("the subscription ended before it was in place", 14);
        this.accept(first, true);
        return;
      } catch (e) {
        const error = fromGrpc(e);
        if (!(error instanceof UnavailableError) || attempt >= attempts) {
          this.close();
          throw error;
        }
        this.reset();
        await sleep(jitter(delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  /** @internal */
  protected open(): grpc.ClientReadableStream<SubscribeResponse__Output> {
    const [s] = this.client.current();
    const channels = this.channels.map((channel) => {
      const since = this.positions.get(channel);
      return since ? { channel, since: { offset: since.offset, epoch: since.epoch } } : { channel };
    });
    return s.pubsub.Subscribe({ channels }, this.client.metadata());
  }

  /** @internal */
  protected override beforeReconnect(): void {
    const [channel] = [...this.ephemeral].sort();
    if (channel !== undefined) {
      // No history to fill the gap from: say so.
      throw new MessagesLostError(channel, "reconnected: messages of an ephemeral channel published while the " +
        "subscription was down are lost", { offset: "0", epoch: "" });
    }
  }

  /** @internal */
  protected accept(event: SubscribeResponse__Output, first: boolean): Message | undefined {
    if (event.subscribed) {
      for (const state of event.subscribed.channels) {
        if (state.mode === "CHANNEL_MODE_EPHEMERAL") this.ephemeral.add(state.channel);
        else if (state.position?.epoch) this.positions.set(state.channel, { offset: state.position.offset, epoch: state.position.epoch });
      }
      return undefined;
    }
    if (first) throw new UnavailableError("the subscription did not start with `subscribed`", 14);
    if (event.message) {
      const m = event.message;
      if (m.epoch) this.positions.set(m.channel, { offset: m.offset, epoch: m.epoch });
      return m;
    }
    if (event.recovery && !event.recovery.recovered) {
      const r = event.recovery;
      throw new MessagesLostError(r.channel, r.reason, { offset: r.position?.offset ?? "0", epoch: r.position?.epoch ?? "" });
    }
    return undefined;
  }
}

/**
 * The states of an election; see {@link Client.observe}. Iterate with `for
 * await`; `break` (or {@link Observation.close}) ends it.
 */
export class Observation extends Resumable<ElectionServiceObserveResponse__Output, ElectionState__Output> {
  /** The election observed. */
  readonly election: string;
  private last: ElectionState__Output | undefined;

  /** @internal */
  constructor(client: Client, election: string) {
    super(client);
    this.election = election;
  }

  /** @internal */
  protected open(): grpc.ClientReadableStream<ElectionServiceObserveResponse__Output> {
    const [s] = this.client.current();
    return s.elections.Observe({ election: this.election }, this.client.metadata());
  }

  /** @internal */
  protected accept(event: ElectionServiceObserveResponse__Output, first: boolean): ElectionState__Output | undefined {
    const state = event.state;
    if (!state) return undefined;
    const last = this.last;
    this.last = state;
    // After a reconnect, the current state again is no change.
    if (first && last && last.hasLeader === state.hasLeader && last.term === state.term &&
      last.leaseId === state.leaseId && Buffer.compare(last.value, state.value) === 0) {
      return undefined;
    }
    return state;
  }
}
