"""The synchronous client (``coord_client.aio`` has the asyncio one)."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import grpc

from coord_client import errors
from coord_client._core import (
    STUBS,
    Backoff,
    CampaignCalls,
    Decision,
    Endpoints,
    Granted,
    Held,
    Lease,
    LeadershipView,
    LockCalls,
    LockView,
    Observed,
    PermitCalls,
    PermitView,
    Positions,
    Tls,
    check_request,
    credentials,
    decision,
    leader_state,
    period,
)
from coord_client._keepalive import KeepAlive
from coord_client._pb.coord.v1 import election_pb2, leaderboard_pb2, pubsub_pb2, ratelimit_pb2

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound="_Hold")


class Client:
    """A connection to coord: ``endpoints`` are ``host:port`` of its
    instances, tried in turn when one fails. ``namespace`` and ``token``
    (an API key or a JWT) go with every call; ``timeout`` (seconds) is the
    deadline of unary calls (a wait is added to it)."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        namespace: str | None = None,
        token: str | None = None,
        tls: Tls | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._endpoints = Endpoints(endpoints, namespace, token)
        self._tls, self.timeout = tls, timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._guard = threading.Lock()
        self._keepalive = KeepAlive(self)

    # --- connections ---

    def _channel(self) -> tuple[grpc.Channel, int]:
        """The current endpoint's channel, and its turn for :meth:`_rotate`."""
        with self._guard:
            endpoint, turn = self._endpoints.now()
            channel = self._channels.get(endpoint)
            if channel is None:
                if self._tls is None:
                    channel = grpc.insecure_channel(endpoint)
                else:
                    channel = grpc.secure_channel(endpoint, *credentials(self._tls))
                self._channels[endpoint] = channel
            return channel, turn

    def _rotate(self, turn: int) -> None:
        with self._guard:
            self._endpoints.rotate(turn)

    def _call(self, service: str, method: str, request: object, *, timeout: float | None = None,
              idempotent: bool = False) -> Any:
        """One unary call; UNAVAILABLE is retried on the other endpoints when
        the call is idempotent."""
        attempts = len(self._endpoints.all) * 2 if idempotent else 1
        backoff = Backoff(most=1.0)
        for attempt in range(attempts):
            channel, turn = self._channel()
            try:
                stub = STUBS[service](channel)
                return getattr(stub, method)(request, timeout=timeout or self.timeout,
                                             metadata=self._endpoints.metadata)
            except grpc.RpcError as e:
                error = errors.from_rpc(e)
                if not isinstance(error, errors.Unavailable):
                    raise error from None
                # The next call (or attempt) goes to the next endpoint.
                self._rotate(turn)
                if attempt + 1 == attempts:
                    raise error from None
                time.sleep(backoff.delay())
        raise errors.Unavailable("no endpoint answered")

    def close(self) -> None:
        """Stops renewals and closes the connections (held locks then
        expire after their TTL; release them first)."""
        self._keepalive.close()
        with self._guard:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- locks, permits, leadership ---

    def lock(self, name: str, *, ttl: float = 10.0, wait: float = 0.0, owner: str = "",
             shared: bool | None = None) -> Lock:
        """A lock to hold in a ``with`` block: acquired on entry (waiting up
        to ``wait`` seconds), renewed on the client's KeepAlive stream,
        released on exit. ``shared`` True / False makes it the read / write
        side of the read/write lock ``name`` (writer-preferring)."""
        return Lock(self, LockCalls(name, ttl, wait, owner, shared), wait)

    def semaphore(self, name: str, *, permits: int = 1, size: int = 0, ttl: float = 10.0, wait: float = 0.0,
                  owner: str = "") -> Permit:
        """``permits`` permits of the semaphore ``name`` (all or nothing,
        first come first served) to hold in a ``with`` block; ``size`` is
        the semaphore's size if this call creates it. ``permit_id`` is the
        grant's fencing token."""
        return Permit(self, PermitCalls(name, permits, size, ttl, wait, owner), wait)

    def campaign(self, election: str, *, value: bytes = b"", ttl: float = 10.0, wait: float = 0.0,
                 owner: str = "") -> Leadership:
        """Leadership of ``election`` to hold in a ``with`` block: entering
        waits until this candidate leads (up to ``wait`` seconds; 0: the
        server's max wait) and raises :class:`errors.NotElected` if it did
        not; leaving resigns. ``term`` is its fencing token."""
        return Leadership(self, CampaignCalls(election, value, ttl, wait, owner), wait)

    def leader(self, election: str) -> election_pb2.ElectionState | None:
        """The current leader of ``election`` (value, term, owner), or None."""
        reply = self._call("ElectionService", "Leader", election_pb2.ElectionServiceLeaderRequest(election=election),
                           idempotent=True)
        return leader_state(reply.state)

    def observe(self, election: str) -> Iterator[election_pb2.ElectionState]:
        """The election's state, then every change in order (a new leader, a
        Proclaim, nobody leading: ``has_leader`` False). After a reconnect it
        continues from the current state: changes while disconnected are
        collapsed into it (and it is not repeated if nothing changed)."""
        request = election_pb2.ElectionServiceObserveRequest(election=election)
        backoff, observed = Backoff(), Observed()
        while True:
            channel, turn = self._channel()
            call = STUBS["ElectionService"](channel).Observe(request, metadata=self._endpoints.metadata)
            try:
                first = True
                for event in call:
                    backoff.reset()
                    if observed.changed(event.state, first):
                        yield event.state
                    first = False
                return
            except grpc.RpcError as e:
                error = errors.from_rpc(e)
                if not isinstance(error, errors.Unavailable):
                    raise error from None
            finally:
                call.cancel()
            self._rotate(turn)
            time.sleep(backoff.delay())

    # --- rate limits ---

    def check(self, subject: str, *, policy: str = "", limits: Sequence[ratelimit_pb2.Limit] = (), cost: int = 1,
              peek: bool = False) -> Decision:
        """Checks (and charges, unless ``peek``) ``cost`` against a named
        policy or inline limits. Not retried: a Check may have charged."""
        reply = self._call("RateLimitService", "Check", check_request(subject, policy, limits, cost, peek))
        return decision(reply)

    @overload
    def rate_limited(self, subject: str, *, policy: str = "", limits: Sequence[ratelimit_pb2.Limit] = (),
                     cost: int = 1) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    @overload
    def rate_limited(self, subject: Callable[P, str], *, policy: str = "", limits: Sequence[ratelimit_pb2.Limit] = (),
                     cost: int = 1) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def rate_limited(self, subject: str | Callable[P, str], *, policy: str = "",
                     limits: Sequence[ratelimit_pb2.Limit] = (),
                     cost: int = 1) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator: each call first checks ``subject`` (or
        ``subject(*args, **kwargs)``) and raises :class:`errors.RateLimited`
        when denied, without calling the function."""
        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(fn)
            def limited(*args: P.args, **kwargs: P.kwargs) -> R:
                who = subject(*args, **kwargs) if callable(subject) else subject
                verdict = self.check(who, policy=policy, limits=limits, cost=cost)
                if not verdict.allowed:
                    raise errors.RateLimited(who, verdict.retry_after)
                return fn(*args, **kwargs)
            return limited
        return decorate

    # --- leaderboards ---

    def leaderboard(self, board: str) -> Leaderboard:
        """The board ``board`` (created with CreateBoard, e.g. by
        ``coord board create``)."""
        return Leaderboard(self, board)

    # --- pub/sub ---

    def subscribe(self, *channels: str, since: dict[str, tuple[int, str]] | None = None) -> Subscription:
        """An iterator over messages of ``channels`` that resumes after a
        disconnect from the last position it yielded; a gap that cannot be
        filled raises :class:`errors.MessagesLost`, never silently."""
        return Subscription(self, Positions(list(channels), dict(since or {})))

    def publish(self, channel: str, payload: bytes, *, idempotency_key: str = "") -> pubsub_pb2.PublishResponse:
        """Publishes; retried on other instances only with an idempotency key."""
        request = pubsub_pb2.PublishRequest(channel=channel, payload=payload, idempotency_key=idempotency_key)
        reply: pubsub_pb2.PublishResponse = self._call("PubSubService", "Publish", request,
                                                       idempotent=bool(idempotency_key))
        return reply


class _Hold(Held):
    """Something held under a lease that the client's KeepAlive stream
    renews: ``lost`` is set when it is gone and :meth:`check` raises
    :class:`errors.LockLostError` then. Check it between steps of the work,
    and pass the fencing token to what you write."""

    lost: threading.Event

    def __init__(self, client: Client, calls: LockCalls | PermitCalls | CampaignCalls, wait: float) -> None:
        self._client, self._calls, self._wait = client, calls, wait
        self.name = calls.name
        self._held: Granted | None = None
        self._lease: Lease | None = None
        self.lost = threading.Event()
        self.lost_reason = ""

    def _on_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost.set()

    def acquire(self: H) -> H:
        reply = self._client._call(self._calls.service, self._calls.methods[0], self._calls.request,
                                   timeout=self._wait + self._client.timeout, idempotent=self._calls.idempotent)
        held = self._calls.granted(reply)
        self._held = held
        self._lease = self._client._keepalive.add(held.lease_id, held.ttl, self._on_lost)
        return self

    def release(self) -> None:
        """Gives it back (nothing to do if it was lost)."""
        held, lease, self._lease = self._held, self._lease, None
        if lease is None or held is None:
            return
        self._client._keepalive.remove(lease)
        if not self.lost.is_set():
            self._client._call(self._calls.service, self._calls.methods[1], self._calls.release(held),
                               idempotent=True)

    def __enter__(self: H) -> H:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


class Lock(_Hold, LockView):
    """A held lock (see :meth:`Client.lock`)."""


class Permit(_Hold, PermitView):
    """Held semaphore permits (see :meth:`Client.semaphore`)."""


class Leadership(_Hold, LeadershipView):
    """A held leadership (see :meth:`Client.campaign`)."""

    def proclaim(self, value: bytes) -> None:
        """Sets the leader's value without a new election (observers see it);
        raises :class:`errors.FailedPrecondition` if no longer leader."""
        self._client._call("ElectionService", "Proclaim", self._proclaim(value), idempotent=True)


class Leaderboard:
    """A leaderboard's reads and writes. ``ago`` / ``period_id`` pick a past
    period of the board's first period kind (default: the current one)."""

    def __init__(self, client: Client, board: str) -> None:
        self._client, self.board = client, board

    def _read(self, method: str, request: object) -> Any:
        return self._client._call("LeaderboardService", method, request, idempotent=True)

    def submit(self, member: str, score: int, *, subscore: int = 0, metadata: str | None = None,
               operator: leaderboard_pb2.Operator = leaderboard_pb2.OPERATOR_UNSPECIFIED) -> leaderboard_pb2.SubmitResponse:
        """Records a score (the board's operator unless ``operator``); safe
        to retry: it carries a request id."""
        request = leaderboard_pb2.SubmitRequest(board=self.board, member=member, score=score, subscore=subscore,
                                                metadata=metadata, operator=operator, request_id=uuid.uuid4().hex)
        return self._read("Submit", request)  # type: ignore[no-any-return]

    def top(self, limit: int = 10, *, ago: int = 0, period_id: str = "") -> list[leaderboard_pb2.Entry]:
        request = leaderboard_pb2.TopRequest(board=self.board, limit=limit, period=period(ago, period_id))
        return list(self._read("Top", request).entries)

    def around(self, member: str, *, before: int = 5, after: int = 5, ago: int = 0,
               period_id: str = "") -> list[leaderboard_pb2.Entry]:
        request = leaderboard_pb2.AroundRequest(board=self.board, member=member, before=before, after=after,
                                                period=period(ago, period_id))
        return list(self._read("Around", request).entries)

    def ranks(self, *members: str, ago: int = 0, period_id: str = "") -> dict[str, leaderboard_pb2.Entry]:
        """Members' entries; members without a score are left out."""
        request = leaderboard_pb2.GetRanksRequest(board=self.board, members=list(members),
                                                  period=period(ago, period_id))
        return {e.member: e.entry for e in self._read("GetRanks", request).entries if e.HasField("entry")}

    def count(self, *, ago: int = 0, period_id: str = "") -> int:
        request = leaderboard_pb2.CountRequest(board=self.board, period=period(ago, period_id))
        return int(self._read("Count", request).count)

    def remove(self, member: str) -> bool:
        reply = self._read("Remove", leaderboard_pb2.RemoveRequest(board=self.board, member=member))
        return bool(reply.removed)


class Subscription:
    """Iterates messages; see :meth:`Client.subscribe`. Created once the
    subscription is in place: anything published from then on is yielded."""

    def __init__(self, client: Client, positions: Positions) -> None:
        self._client, self._positions = client, positions
        self._closed = False
        self._turn = 0
        backoff = Backoff(most=1.0)
        attempts = len(client._endpoints.all) * 2
        for attempt in range(attempts):
            try:
                self._call: Any = self._open()
                return
            except grpc.RpcError as e:
                error = errors.from_rpc(e)
            except errors.Unavailable as e:
                error = e
            # Subscribing changes nothing: try the other endpoints.
            if not isinstance(error, errors.Unavailable) or attempt + 1 == attempts:
                raise error from None
            client._rotate(self._turn)
            time.sleep(backoff.delay())

    @property
    def positions(self) -> dict[str, tuple[int, str]]:
        """The last (offset, epoch) yielded per recoverable channel."""
        return self._positions.at

    def _open(self) -> Any:
        """Subscribes (from the positions reached) and waits for Subscribed."""
        channel, self._turn = self._client._channel()
        call = STUBS["PubSubService"](channel).Subscribe(
            self._positions.request(), metadata=self._client._endpoints.metadata)
        for event in call:
            if self._positions.subscribed(event):
                return call
        raise errors.Unavailable("the subscription ended before it was in place")

    def __iter__(self) -> Iterator[pubsub_pb2.Message]:
        backoff, call = Backoff(), self._call
        while not self._closed:
            try:
                if call is None:
                    self._positions.before_reconnect()
                    call = self._call = self._open()
                for event in call:
                    backoff.reset()
                    message = self._positions.message(event)
                    if message is not None:
                        yield message
                return
            except grpc.RpcError as e:
                if self._closed:
                    return
                error = errors.from_rpc(e)
                if not isinstance(error, errors.Unavailable):
                    raise error from None
                self._client._rotate(self._turn)
                time.sleep(backoff.delay())
                call = None

    def close(self) -> None:
        self._closed = True
        self._call.cancel()
