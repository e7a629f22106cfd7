/**
 * Errors: every failed call rejects with a {@link CoordError} subclass that
 * carries the gRPC status code and coord's message (which names the field
 * for bad input).
 *
 * @module
 */

import { status as Status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";

/** A call to coord failed; {@link CoordError.code} is the gRPC status code. */
export class CoordError extends Error {
  /** The gRPC status code (`@grpc/grpc-js`'s `status`); `OK` (0) for client-side conditions. */
  readonly code: Status;
  /** coord's message (for bad input it names the field and its bound). */
  readonly details: string;

  /**
   * @param message - the error message.
   * @param code - the gRPC status code.
   * @param details - coord's own message, when it sent one.
   */
  constructor(message: string, code: Status = Status.UNKNOWN, details = message) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** `INVALID_ARGUMENT`: bad input; the message names the field. */
export class InvalidArgumentError extends CoordError {}
/** `NOT_FOUND`: e.g. a leaderboard that does not exist. */
export class NotFoundError extends CoordError {}
/** `ALREADY_EXISTS`: e.g. a board created again with other settings. */
export class AlreadyExistsError extends CoordError {}
/** `FAILED_PRECONDITION`: e.g. a read/write lock asked again by its holder, or a leadership no longer held. */
export class FailedPreconditionError extends CoordError {}
/** `PERMISSION_DENIED`: the token lacks a permission. */
export class PermissionDeniedError extends CoordError {}
/** `UNAUTHENTICATED`: no token, or a bad one. */
export class UnauthenticatedError extends CoordError {}
/** `UNAVAILABLE`: no coord instance (or its Redis) answered; idempotent calls are retried for you. */
export class UnavailableError extends CoordError {}
/** `RESOURCE_EXHAUSTED`: a quota, or a subscriber that could not keep up. */
export class ResourceExhaustedError extends CoordError {}
/** `DEADLINE_EXCEEDED`: the call's timeout ran out. */
export class DeadlineExceededError extends CoordError {}

/**
 * A lock, permits or a leadership were still held by others when the wait
 * ran out (coord's `NOT_ACQUIRED` / `NOT_ELECTED`: a normal answer, not a
 * gRPC error, hence `code` OK).
 */
export class NotAcquiredError extends CoordError {
  /** The holder's owner label, when coord says it. */
  readonly holder: string;

  /**
   * @param message - what was not acquired.
   * @param holder - the holder's owner label, if known.
   */
  constructor(message: string, holder = "") {
    super(message, Status.OK);
    this.holder = holder;
  }
}

/**
 * A hold (lock, permit or leadership) is gone: stop the work it protects.
 * Also the `reason` of the hold's aborted `signal`.
 */
export class LockLostError extends CoordError {
  /** The lock, semaphore or election name. */
  readonly lockName: string;
  /**
   * Why: `"expired"`, `"force released"`, `"lease revoked"`, `"backend
   * unavailable"`, `"quorum lost"` (coord's LockLost), or `"no renewal
   * confirmed for a whole TTL"` (coord or its Redis unreachable).
   */
  readonly reason: string;

  /**
   * @param lockName - the lock, semaphore or election name.
   * @param reason - why it was lost.
   */
  constructor(lockName: string, reason: string) {
    super(`${JSON.stringify(lockName)} lost: ${reason}`, Status.OK);
    this.lockName = lockName;
    this.reason = reason;
  }
}

/** A place in a recoverable channel: the last offset seen in an epoch. */
export interface Position {
  /** The offset of the last message seen (`"0"`: none yet), as a decimal string (uint64). */
  offset: string;
  /** The epoch that offset belongs to. */
  epoch: string;
}

/**
 * A subscription could not recover what was published while it was away
 * (`Recovery{recovered: false}`, or a reconnect of an ephemeral channel):
 * reload state from your source of truth, then subscribe again from
 * {@link MessagesLostError.position}.
 */
export class MessagesLostError extends CoordError {
  /** The channel that may have lost messages. */
  readonly channel: string;
  /** coord's reason, e.g. "history trimmed", "epoch changed", "ephemeral channel". */
  readonly reason: string;
  /** Where the stream would continue from. */
  readonly position: Position;

  /**
   * @param channel - the channel.
   * @param reason - why messages may be lost.
   * @param position - where the stream continues from.
   */
  constructor(channel: string, reason: string, position: Position) {
    super(`messages of ${JSON.stringify(channel)} may be lost: ${reason}`, Status.OK);
    this.channel = channel;
    this.reason = reason;
    this.position = position;
  }
}

const BY_CODE: Partial<Record<Status, new (message: string, code: Status, details: string) => CoordError>> = {
  [Status.INVALID_ARGUMENT]: InvalidArgumentError,
  [Status.NOT_FOUND]: NotFoundError,
  [Status.ALREADY_EXISTS]: AlreadyExistsError,
  [Status.FAILED_PRECONDITION]: FailedPreconditionError,
  [Status.PERMISSION_DENIED]: PermissionDeniedError,
  [Status.UNAUTHENTICATED]: UnauthenticatedError,
  [Status.UNAVAILABLE]: UnavailableError,
  [Status.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
  [Status.DEADLINE_EXCEEDED]: DeadlineExceededError,
};

/**
 * The {@link CoordError} for a failed gRPC call (anything else is returned
 * as is, wrapped in a CoordError if it is not an Error).
 *
 * @param error - what grpc-js rejected with.
 */
export function fromGrpc(error: unknown): CoordError {
  if (error instanceof CoordError) return error;
  const e = error as Partial<ServiceError>;
  if (typeof e?.code === "number") {
    const details = e.details || e.message || "";
    const Kind = BY_CODE[e.code as Status] ?? CoordError;
    return new Kind(details, e.code as Status, details);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new CoordError(message, Status.UNKNOWN, message);
}
