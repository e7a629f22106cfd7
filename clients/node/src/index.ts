/**
 * Node/TypeScript client for coord: locks, read/write locks, semaphores and
 * leader election held under leases renewed on one KeepAlive stream (with
 * their loss signalled by an `AbortSignal`), rate-limit checks and an
 * Express-style middleware, leaderboards, and subscriptions that resume
 * after a disconnect without losing a message.
 *
 * @packageDocumentation
 */

export { Client } from "./client";
export type {
  CampaignOptions, CheckOptions, ClientOptions, Decision, ElectionState, LockOptions, PublishOptions,
  SemaphoreOptions, SubscribeOptions, TlsOptions,
} from "./client";
export { Hold, Leadership, Lock, Permit } from "./holds";
export type { LockModeName } from "./holds";
export { Observation, Subscription } from "./streams";
export type { Message } from "./streams";
export { Leaderboard } from "./leaderboard";
export type { AroundOptions, BoardSettings, PeriodSelection, ScoreOperator, SubmitOptions, TopOptions } from "./leaderboard";
export { rateLimitMiddleware } from "./middleware";
export type { NextLike, RateLimitMiddlewareOptions, RequestLike, ResponseLike } from "./middleware";
export {
  AlreadyExistsError, CoordError, DeadlineExceededError, FailedPreconditionError, InvalidArgumentError,
  LockLostError, MessagesLostError, NotAcquiredError, NotFoundError, PermissionDeniedError,
  ResourceExhaustedError, UnauthenticatedError, UnavailableError,
} from "./errors";
export type { Position } from "./errors";
// Message shapes generated from coord's protos (int64 fields are decimal strings, enums their names).
export type { Limit } from "./generated/coord/v1/Limit";
export type { TokenBucket } from "./generated/coord/v1/TokenBucket";
export type { Gcra } from "./generated/coord/v1/Gcra";
export type { SlidingLog } from "./generated/coord/v1/SlidingLog";
export type { SlidingWindow } from "./generated/coord/v1/SlidingWindow";
export type { FixedWindow } from "./generated/coord/v1/FixedWindow";
export type { LimitStatus__Output } from "./generated/coord/v1/LimitStatus";
export type { PublishResponse__Output } from "./generated/coord/v1/PublishResponse";
export type { ChannelMode, ChannelMode__Output } from "./generated/coord/v1/ChannelMode";
export type { Message__Output } from "./generated/coord/v1/Message";
export type { ElectionState__Output } from "./generated/coord/v1/ElectionState";
export type { Board, Board__Output } from "./generated/coord/v1/Board";
export type { Period } from "./generated/coord/v1/Period";
export type { PeriodKind, PeriodKind__Output } from "./generated/coord/v1/PeriodKind";
export type { SortOrder, SortOrder__Output } from "./generated/coord/v1/SortOrder";
export type { Operator, Operator__Output } from "./generated/coord/v1/Operator";
export type { Weekday, Weekday__Output } from "./generated/coord/v1/Weekday";
export type { PeriodSelector } from "./generated/coord/v1/PeriodSelector";
export type { CreateBoardResponse__Output } from "./generated/coord/v1/CreateBoardResponse";
export type { GetBoardResponse__Output } from "./generated/coord/v1/GetBoardResponse";
export type { SubmitResponse__Output } from "./generated/coord/v1/SubmitResponse";
export type { TopResponse__Output } from "./generated/coord/v1/TopResponse";
export type { AroundResponse__Output } from "./generated/coord/v1/AroundResponse";
export type { GetRanksResponse__Output } from "./generated/coord/v1/GetRanksResponse";
export type { Entry__Output } from "./generated/coord/v1/Entry";
export type { MemberEntry__Output } from "./generated/coord/v1/MemberEntry";
export type { PeriodInstance__Output } from "./generated/coord/v1/PeriodInstance";
export type { PeriodResult__Output } from "./generated/coord/v1/PeriodResult";
export type { Period__Output } from "./generated/coord/v1/Period";
export type { StreamPosition__Output } from "./generated/coord/v1/StreamPosition";
export { status } from "@grpc/grpc-js";
