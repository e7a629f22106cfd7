/**
 * A thin wrapper over LeaderboardService for one board.
 *
 * @module
 */

import { randomUUID } from "crypto";

import type { Client } from "./client";
import type { Board } from "./generated/coord/v1/Board";
import type { AroundResponse__Output } from "./generated/coord/v1/AroundResponse";
import type { CountResponse__Output } from "./generated/coord/v1/CountResponse";
import type { CreateBoardResponse__Output } from "./generated/coord/v1/CreateBoardResponse";
import type { GetBoardResponse__Output } from "./generated/coord/v1/GetBoardResponse";
import type { GetRanksResponse__Output } from "./generated/coord/v1/GetRanksResponse";
import type { PeriodSelector } from "./generated/coord/v1/PeriodSelector";
import type { RemoveResponse__Output } from "./generated/coord/v1/RemoveResponse";
import type { SubmitResponse__Output } from "./generated/coord/v1/SubmitResponse";
import type { TopResponse__Output } from "./generated/coord/v1/TopResponse";

/** A board's settings (see leaderboard.proto), e.g. `{order: "SORT_ORDER_DESCENDING", operator: "OPERATOR_BEST", periods: [{kind: "PERIOD_KIND_ALL_TIME"}]}`. */
export type BoardSettings = Omit<Board, "name">;

/** Which period instance to read (default: the board's first period, current instance). */
export type PeriodSelection = PeriodSelector;

/** How a score is combined with the member's previous one. */
export type ScoreOperator = "OPERATOR_SET" | "OPERATOR_BEST" | "OPERATOR_INCREMENT" | "OPERATOR_DECREMENT";

/** Options of {@link Leaderboard.submit}. */
export interface SubmitOptions {
  /** Tie-breaker. */
  subscore?: number | string;
  /** Overrides the board's operator for this submit. */
  operator?: ScoreOperator;
  /** Stored with the entry. */
  metadata?: string;
  /** Unique per logical submit (default: a fresh UUID): a retried Submit with it is a replay, not a second score. */
  requestId?: string;
}

/** Options of {@link Leaderboard.top}. */
export interface TopOptions {
  /** Which period instance. */
  period?: PeriodSelection;
  /** Entries per page. */
  limit?: number;
  /** From the previous page's `nextCursor`. */
  cursor?: string;
  /** Or: start at this rank. */
  startRank?: number | string;
}

/** Options of {@link Leaderboard.around}. */
export interface AroundOptions {
  /** Which period instance. */
  period?: PeriodSelection;
  /** Entries before the member. */
  before?: number;
  /** Entries after the member. */
  after?: number;
  /** When the member has no entry, answer the top entries instead. */
  topIfAbsent?: boolean;
}

/** One leaderboard; see {@link Client.leaderboard}. int64 fields are decimal strings. */
export class Leaderboard {
  /** The board's name. */
  readonly board: string;
  private readonly client: Client;

  /** @internal */
  constructor(client: Client, board: string) {
    this.client = client;
    this.board = board;
  }

  /** Creates the board (idempotent with the same settings; other settings are ALREADY_EXISTS). */
  create(settings: BoardSettings = {}): Promise<CreateBoardResponse__Output> {
    const board = { ...settings, name: this.board };
    return this.client.call((s, m, o, cb) => s.leaderboards.CreateBoard({ board }, m, o, cb), { idempotent: true });
  }

  /** The board's settings and current period instances. */
  get(): Promise<GetBoardResponse__Output> {
    return this.client.call((s, m, o, cb) => s.leaderboards.GetBoard({ board: this.board }, m, o, cb), { idempotent: true });
  }

  /** Deletes the board and its data. */
  delete(): Promise<boolean> {
    return this.client.call<{ deleted: boolean }>((s, m, o, cb) => s.leaderboards.DeleteBoard({ board: this.board }, m, o, cb),
      { idempotent: true }).then((r) => r.deleted);
  }

  /** Records `score` for `member` in every period of the board; answers the member's entry and rank per period. */
  submit(member: string, score: number | string, options: SubmitOptions = {}): Promise<SubmitResponse__Output> {
    const request = {
      board: this.board, member, score, subscore: options.subscore ?? 0,
      // A request id makes a retried Submit a replay, not a second score.
      operator: options.operator ?? ("OPERATOR_UNSPECIFIED" as const), requestId: options.requestId || randomUUID(),
      ...(options.metadata === undefined ? {} : { metadata: options.metadata }),
    };
    return this.client.call((s, m, o, cb) => s.leaderboards.Submit(request, m, o, cb), { idempotent: true });
  }

  /** The best entries, a page at a time. */
  top(options: TopOptions = {}): Promise<TopResponse__Output> {
    const request = {
      board: this.board, limit: options.limit ?? 0, cursor: options.cursor ?? "", startRank: options.startRank ?? 0,
      ...(options.period ? { period: options.period } : {}),
    };
    return this.client.call((s, m, o, cb) => s.leaderboards.Top(request, m, o, cb), { idempotent: true });
  }

  /** The entries around `member`. */
  around(member: string, options: AroundOptions = {}): Promise<AroundResponse__Output> {
    const request = {
      board: this.board, member, before: options.before ?? 0, after: options.after ?? 0,
      topIfAbsent: options.topIfAbsent ?? false, ...(options.period ? { period: options.period } : {}),
    };
    return this.client.call((s, m, o, cb) => s.leaderboards.Around(request, m, o, cb), { idempotent: true });
  }

  /** Entries and ranks of up to 1000 members. */
  ranks(members: string[], options: { period?: PeriodSelection } = {}): Promise<GetRanksResponse__Output> {
    const request = { board: this.board, members, ...(options.period ? { period: options.period } : {}) };
    return this.client.call((s, m, o, cb) => s.leaderboards.GetRanks(request, m, o, cb), { idempotent: true });
  }

  /** Removes `member` from the current instance of every period; whether it was there. */
  remove(member: string): Promise<boolean> {
    return this.client.call<RemoveResponse__Output>((s, m, o, cb) => s.leaderboards.Remove({ board: this.board, member }, m, o, cb),
      { idempotent: true }).then((r) => r.removed);
  }

  /** The number of entries in one period instance. */
  count(options: { period?: PeriodSelection } = {}): Promise<number> {
    const request = { board: this.board, ...(options.period ? { period: options.period } : {}) };
    return this.client.call<CountResponse__Output>((s, m, o, cb) => s.leaderboards.Count(request, m, o, cb), { idempotent: true })
      .then((r) => Number(r.count));
  }
}
