"""What the synchronous and the asyncio clients share, with no I/O: the
endpoint list, credentials, the leases a KeepAlive stream renews, the
requests each guard sends and how replies become results."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from coord_client import errors
from coord_client._pb.coord.v1 import (
    election_pb2,
    election_pb2_grpc,
    leaderboard_pb2,
    leaderboard_pb2_grpc,
    lock_pb2,
    lock_pb2_grpc,
    pubsub_pb2,
    pubsub_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    semaphore_pb2,
    semaphore_pb2_grpc,
)


@dataclass(frozen=True)
class Tls:
    """TLS to coord: the CA that signed its certificate (PEM; None: the
    system's roots), and a client certificate and key for mutual TLS."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None


# grpcio's generated stubs are untyped; both clients take them from here.
STUBS: dict[str, Any] = {
    "LockService": lock_pb2_grpc.LockServiceStub,
    "SemaphoreService": semaphore_pb2_grpc.SemaphoreServiceStub,
    "ElectionService": election_pb2_grpc.ElectionServiceStub,
    "RateLimitService": ratelimit_pb2_grpc.RateLimitServiceStub,
    "LeaderboardService": leaderboard_pb2_grpc.LeaderboardServiceStub,
    "PubSubService": pubsub_pb2_grpc.PubSubServiceStub,
}


def credentials(tls: Tls) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
    creds = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
    return creds, [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []


class Endpoints:
    """coord's instances, tried in turn when one fails, and what goes with
    every call (namespace, token)."""

    def __init__(self, endpoints: str | Sequence[str], namespace: str | None, token: str | None) -> None:
        self.all = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.all:
            raise ValueError("endpoints: give at least one host:port")
        self.current = 0
        meta = []
        if namespace:
            meta.append(("coord-namespace", namespace))
        if token:
            meta.append(("authorization", f"Bearer {token}"))
        self.metadata = meta

    def now(self) -> tuple[str, int]:
        """The endpoint to use, and its turn (to pass to :meth:`rotate`)."""
        return self.all[self.current % len(self.all)], self.current

    def rotate(self, turn: int) -> None:
        """Moves on from the endpoint of ``turn`` after it failed; once, however
        many calls saw it fail (so that concurrent failures do not rotate
        back onto it)."""
        if self.current == turn:
            self.current += 1


class Backoff:
    """Jittered exponential delays between reconnects."""

    def __init__(self, first: float = 0.05, most: float = 2.0) -> None:
        self.first, self.most, self.next = first, most, first

    def reset(self) -> None:
        self.next = self.first

    def delay(self) -> float:
        d = self.next * (0.5 + random.random())
        self.next = min(self.next * 2, self.most)
        return d


# --- leases kept alive on one KeepAlive stream ---

LOST_REASONS = {
    lock_pb2.LOCK_LOST_REASON_EXPIRED: "expired",
    lock_pb2.LOCK_LOST_REASON_FORCE_RELEASED: "force released",
    lock_pb2.LOCK_LOST_REASON_LEASE_REVOKED: "lease revoked",
    lock_pb2.LOCK_LOST_REASON_BACKEND_UNAVAILABLE: "backend unavailable",
    lock_pb2.LOCK_LOST_REASON_QUORUM_LOST: "quorum lost",
}
SILENT = "no renewal confirmed for a whole TTL"


@dataclass(eq=False)
class Lease:
    """A lease the stream keeps alive; ``reason`` is set once it is lost."""

    lease_id: str
    ttl: float
    on_lost: Callable[[str], None]
    confirmed: float = field(default_factory=time.monotonic)
    due: float = 0.0
    reason: str = ""

    def lose(self, reason: str) -> None:
        if self.reason:
            return
        self.reason = reason
        self.on_lost(reason)


class Leases:
    """The bookkeeping of a KeepAlive stream: which lease is due for renewal
    (every third of its TTL), which answers confirm or end a lease, which
    lease went a whole TTL without a confirmed renewal. The sync and asyncio
    drivers call it under their own lock / on their loop."""

    def __init__(self) -> None:
        self.by_id: dict[str, Lease] = {}

    def add(self, lease_id: str, ttl: float, on_lost: Callable[[str], None]) -> Lease:
        lease = Lease(lease_id, ttl, on_lost, due=time.monotonic() + ttl / 3)
        self.by_id[lease_id] = lease
        return lease

    def remove(self, lease: Lease) -> None:
        if self.by_id.get(lease.lease_id) is lease:
            del self.by_id[lease.lease_id]

    def all_due(self) -> None:
        """A new stream renews everything at once."""
        for lease in self.by_id.values():
            lease.due = 0.0

    def take_due(self, now: float) -> list[lock_pb2.KeepAliveRequest]:
        due = [lease for lease in self.by_id.values() if lease.due <= now and not lease.reason]
        for lease in due:
            lease.due = now + lease.ttl / 3
        return [lock_pb2.KeepAliveRequest(lease_id=lease.lease_id) for lease in due]

    def next_due(self, now: float) -> float:
        """Seconds until the next renewal is due (at most 1)."""
        return max(0.0, min((lease.due for lease in self.by_id.values()), default=now + 1.0) - now)

    def handle(self, event: lock_pb2.KeepAliveResponse) -> tuple[Lease, str] | None:
        """The lease an event ends and why, if it ends one."""
        if event.HasField("renewed"):
            lease = self.by_id.get(event.renewed.lease_id)
            if lease is None:
                return None
            if event.renewed.ttl_ms <= 0:
                return lease, "expired"
            lease.confirmed = time.monotonic()
        elif event.HasField("lock_lost"):
            found = self.by_id.get(event.lock_lost.lease_id)
            if found is not None:
                return found, LOST_REASONS.get(event.lock_lost.reason, "lost")
        return None

    def silent(self, now: float) -> list[Lease]:
        return [lease for lease in self.by_id.values() if now - lease.confirmed > lease.ttl and not lease.reason]


# --- guards: what each one sends ---

@dataclass(frozen=True)
class Granted:
    """What a guard holds once acquired."""

    lease_id: str
    ttl: float
    token: int


_MODES = {None: lock_pb2.LOCK_MODE_UNSPECIFIED, True: lock_pb2.LOCK_MODE_SHARED, False: lock_pb2.LOCK_MODE_EXCLUSIVE}


class LockCalls:
    """Acquire / Release of a lock (``shared`` None: a plain lock; True /
    False: the read / write side of a read/write lock)."""

    kind = "lock"
    service, methods = "LockService", ("Acquire", "Release")

    def __init__(self, name: str, ttl: float, wait: float, owner: str, shared: bool | None) -> None:
        self.name, self.mode = name, _MODES[shared]
        # A request id makes a retried Acquire return the first one's grant;
        # coord does not use it with a mode, so those are not retried.
        self.idempotent = shared is None
        self.request = lock_pb2.AcquireRequest(
            name=name, ttl_ms=int(ttl * 1000), wait_ms=int(wait * 1000), owner=owner, mode=self.mode,
            request_id=uuid.uuid4().hex if shared is None else "")

    def granted(self, reply: lock_pb2.AcquireResponse) -> Granted:
        if reply.status != lock_pb2.ACQUIRE_STATUS_ACQUIRED:
            raise errors.NotAcquired(f"lock {self.name!r} is held by {reply.holder_owner or 'another holder'}",
                                     reply.holder_owner)
        return Granted(reply.lease_id, reply.ttl_ms / 1000, reply.fencing_token)

    def release(self, held: Granted) -> lock_pb2.ReleaseRequest:
        return lock_pb2.ReleaseRequest(name=self.name, lease_id=held.lease_id, mode=self.mode)


class PermitCalls:
    """Acquire / Release of semaphore permits. Acquire is not retried: it
    has no request id, and a retry could take a second grant."""

    kind = "semaphore"
    service, methods = "SemaphoreService", ("Acquire", "Release")
    idempotent = False

    def __init__(self, name: str, permits: int, size: int, ttl: float, wait: float, owner: str) -> None:
        self.name = name
        self.request = semaphore_pb2.SemaphoreServiceAcquireRequest(
            name=name, permits=permits, size=size, ttl_ms=int(ttl * 1000), wait_ms=int(wait * 1000), owner=owner)

    def granted(self, reply: semaphore_pb2.SemaphoreServiceAcquireResponse) -> Granted:
        if reply.status != semaphore_pb2.SEMAPHORE_ACQUIRE_STATUS_ACQUIRED:
            raise errors.NotAcquired(f"semaphore {self.name!r}: not enough free permits "
                                     f"({reply.available} of {reply.size}, {reply.waiters_ahead} waiting ahead)")
        return Granted(reply.lease_id, reply.ttl_ms / 1000, reply.permit_id)

    def release(self, held: Granted) -> semaphore_pb2.SemaphoreServiceReleaseRequest:
        return semaphore_pb2.SemaphoreServiceReleaseRequest(name=self.name, permit_id=held.token,
                                                            lease_id=held.lease_id)


class CampaignCalls:
    """Campaign / Resign of a leadership. Campaign is not retried (a retry
    would queue a second candidate)."""

    kind = "leadership"
    service, methods = "ElectionService", ("Campaign", "Resign")
    idempotent = False

    def __init__(self, election: str, value: bytes, ttl: float, wait: float, owner: str) -> None:
        self.name = election
        self.request = election_pb2.ElectionServiceCampaignRequest(
            election=election, value=value, ttl_ms=int(ttl * 1000), wait_ms=int(wait * 1000), owner=owner)

    def granted(self, reply: election_pb2.ElectionServiceCampaignResponse) -> Granted:
        if reply.status != election_pb2.CAMPAIGN_STATUS_ELECTED:
            raise errors.NotElected(f"election {self.name!r}: not elected in time "
                                    f"({reply.candidates_ahead} candidates ahead)")
        return Granted(reply.leadership.lease_id, reply.ttl_ms / 1000, reply.leadership.term)

    def leadership(self, held: Granted) -> election_pb2.Leadership:
        return election_pb2.Leadership(election=self.name, lease_id=held.lease_id, term=held.token)

    def release(self, held: Granted) -> election_pb2.ElectionServiceResignRequest:
        return election_pb2.ElectionServiceResignRequest(leadership=self.leadership(held))


class Held:
    """What a held lock, permit or leadership shows, whichever client
    (threads or asyncio) holds it; ``lost`` is that client's Event."""

    name: str
    lost: threading.Event | asyncio.Event
    lost_reason: str
    _held: Granted | None
    _calls: LockCalls | PermitCalls | CampaignCalls

    @property
    def lease_id(self) -> str:
        return self._held.lease_id if self._held else ""

    @property
    def _token(self) -> int:
        return self._held.token if self._held else 0

    def check(self) -> None:
        """Raises :class:`errors.LockLostError` if it is lost."""
        if self.lost.is_set():
            raise errors.LockLostError(self.name, self.lost_reason, self._calls.kind)


class LockView(Held):
    @property
    def fencing_token(self) -> int:
        """Strictly increasing per lock name: orders holders."""
        return self._token


class PermitView(Held):
    @property
    def permit_id(self) -> int:
        """The grant's id, strictly increasing per semaphore: its fencing token."""
        return self._token


class LeadershipView(Held):
    _calls: CampaignCalls

    @property
    def term(self) -> int:
        """Strictly increasing per election: the leader's fencing token."""
        return self._token

    def _proclaim(self, value: bytes) -> election_pb2.ElectionServiceProclaimRequest:
        if self._held is None:
            raise RuntimeError("not elected")
        return election_pb2.ElectionServiceProclaimRequest(leadership=self._calls.leadership(self._held), value=value)


# --- rate limits ---

@dataclass(frozen=True)
class Decision:
    """A rate-limit decision."""

    allowed: bool
    #: Seconds until a retry can pass; None when it never can (cost above the limit).
    retry_after: float | None
    limits: list[ratelimit_pb2.LimitStatus]


def check_request(subject: str, policy: str, limits: Sequence[ratelimit_pb2.Limit], cost: int,
                  peek: bool) -> ratelimit_pb2.CheckRequest:
    mode = ratelimit_pb2.CHECK_MODE_PEEK if peek else ratelimit_pb2.CHECK_MODE_CONSUME
    return ratelimit_pb2.CheckRequest(subject=subject, policy=policy, limits=list(limits), cost=cost, mode=mode)


def decision(reply: ratelimit_pb2.CheckResponse) -> Decision:
    retry = max((s.retry_after_ms for s in reply.limits if not s.allowed), default=0)
    never = any(s.retry_after_ms < 0 for s in reply.limits if not s.allowed)
    return Decision(reply.allowed, None if never else retry / 1000, list(reply.limits))


# --- leaderboards ---

def period(ago: int, period_id: str) -> leaderboard_pb2.PeriodSelector | None:
    """The period a read is about: the board's first period, ``ago`` periods
    back, or the one named ``period_id``; None: the current one."""
    if not ago and not period_id:
        return None
    return leaderboard_pb2.PeriodSelector(ago=ago, id=period_id)


# --- pub/sub ---

class Positions:
    """Where a subscription is in each recoverable channel, so that it can
    resume from there; which channels are ephemeral (nothing to resume)."""

    def __init__(self, channels: list[str], since: dict[str, tuple[int, str]]) -> None:
        self.channels, self.at = channels, since
        self.ephemeral: set[str] = set()

    def request(self) -> pubsub_pb2.SubscribeRequest:
        return pubsub_pb2.SubscribeRequest(channels=[
            pubsub_pb2.ChannelSubscription(
                channel=c,
                since=pubsub_pb2.StreamPosition(offset=self.at[c][0], epoch=self.at[c][1]) if c in self.at else None)
            for c in self.channels
        ])

    def subscribed(self, event: pubsub_pb2.SubscribeResponse) -> bool:
        """Takes in the Subscribed event; False for any other."""
        if not event.HasField("subscribed"):
            return False
        for state in event.subscribed.channels:
            if state.mode == pubsub_pb2.CHANNEL_MODE_EPHEMERAL:
                self.ephemeral.add(state.channel)
            elif state.position.epoch:
                self.at[state.channel] = (state.position.offset, state.position.epoch)
        return True

    def before_reconnect(self) -> None:
        """Raises when the subscription cannot resume without a gap."""
        if self.ephemeral:
            # No history to fill the gap from: say so.
            raise errors.MessagesLost(sorted(self.ephemeral)[0], "reconnected: messages of an ephemeral channel "
                                      "published while the subscription was down are lost", (0, ""))

    def message(self, event: pubsub_pb2.SubscribeResponse) -> pubsub_pb2.Message | None:
        """The message an event carries (its position noted), None for
        other events; raises on a recovery that lost messages."""
        if event.HasField("message"):
            m = event.message
            if m.epoch:
                self.at[m.channel] = (m.offset, m.epoch)
            return m
        if event.HasField("recovery") and not event.recovery.recovered:
            r = event.recovery
            raise errors.MessagesLost(r.channel, r.reason, (r.position.offset, r.position.epoch))
        return None


class Observed:
    """The last election state an observer yielded: after a reconnect, the
    current state is yielded only if it differs (a change missed while away
    shows as that state, not as nothing)."""

    def __init__(self) -> None:
        self.last: election_pb2.ElectionState | None = None

    def changed(self, state: election_pb2.ElectionState, first: bool) -> bool:
        last, self.last = self.last, state
        same = last is not None and (last.has_leader, last.term, last.lease_id, last.value) == (
            state.has_leader, state.term, state.lease_id, state.value)
        return not (first and same)


def leader_state(state: election_pb2.ElectionState) -> election_pb2.ElectionState | None:
    return state if state.has_leader else None
