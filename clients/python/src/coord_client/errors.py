"""Errors: every failed call raises a :class:`CoordError` subclass that
carries the gRPC status code and coord's message (which names the field for
bad input)."""

from __future__ import annotations

import grpc


class CoordError(Exception):
    """A call to coord failed; ``code`` is the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(CoordError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CoordError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CoordError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CoordError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(CoordError):
    """No coord instance (or its Redis) answered; safe to retry idempotent calls."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(CoordError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(CoordError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(CoordError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(CoordError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotAcquired(CoordError):
    """A lock or permits were still held by others when the wait ran out."""

    code = grpc.StatusCode.OK

    def __init__(self, message: str, holder: str = "") -> None:
        super().__init__(message)
        self.holder = holder


class NotElected(NotAcquired):
    """Another candidate still led when the campaign's wait ran out."""


class LockLostError(CoordError):
    """The lock (or permits, or leadership: ``kind``) is no longer held:
    stop the work it protects."""

    code = grpc.StatusCode.OK

    def __init__(self, name: str, reason: str, kind: str = "lock") -> None:
        super().__init__(f"{kind} {name!r} lost: {reason}")
        self.name = name
        self.reason = reason
        self.kind = kind


class RateLimited(CoordError):
    """A call guarded by ``rate_limited`` was denied; ``retry_after`` is in
    seconds (None: this cost can never pass)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, subject: str, retry_after: float | None) -> None:
        when = "never" if retry_after is None else f"in {retry_after:.3f} s"
        super().__init__(f"rate limited: {subject!r} (retry {when})")
        self.subject = subject
        self.retry_after = retry_after


class MessagesLost(CoordError):
    """A subscription could not recover what was published while it was
    away (``Recovery{recovered: false}``): reload state from your source of
    truth, then subscribe again from ``position``."""

    code = grpc.StatusCode.OK

    def __init__(self, channel: str, reason: str, position: tuple[int, str]) -> None:
        super().__init__(f"messages of {channel!r} may be lost: {reason}")
        self.channel = channel
        self.reason = reason
        self.position = position


_BY_CODE: dict[grpc.StatusCode, type[CoordError]] = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unavailable, DeadlineExceeded,
                Unauthenticated, PermissionDenied, ResourceExhausted)
}


def from_rpc(error: grpc.RpcError) -> CoordError:
    """The CoordError for a failed gRPC call."""
    # grpc.Call for the sync API, grpc.aio.AioRpcError for asyncio: both
    # have code() and details().
    has = callable(getattr(error, "code", None)) and callable(getattr(error, "details", None))
    code = error.code() if has else grpc.StatusCode.UNKNOWN
    details = (error.details() if has else None) or str(error)
    return _BY_CODE.get(code, CoordError)(details, code)
