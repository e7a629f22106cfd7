"""The asyncio client: the same API as :class:`coord_client.Client` with
``async``/``await``, on ``grpc.aio``. One more thing it can do: a guard
used as ``async with`` cancels the task running the block when the lock
(permits, leadership) is lost, and the block ends with
:class:`errors.LockLostError` instead of running on unprotected.

    from coord_client.aio import Client

    async with Client(["coord-0:50051", "coord-1:50051"]) as coord:
        async with coord.lock("nightly-report", ttl=10, wait=5) as lock:
            await write(batch, fence=lock.fencing_token)
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import grpc
import grpc.aio

from coord_client import errors
from coord_client._core import (
    SILENT,
    STUBS,
    Backoff,
    CampaignCalls,
    Decision,
    Endpoints,
    Granted,
    Held,
    Lease,
    LeadershipView,
    Leases,
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
from coord_client._pb.coord.v1 import (
    election_pb2,
    leaderboard_pb2,
    lock_pb2,
    pubsub_pb2,
    ratelimit_pb2,
)

__all__ = ["Client", "Leaderboard", "Leadership", "Lock", "Permit", "Subscription", "Tls"]

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound="_Hold")


class Client:
    """A connection to coord; see :class:`coord_client.Client`. Create and
    use it inside one running event loop."""

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
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._keepalive = _KeepAlive(self)

    def _channel(self) -> tuple[grpc.aio.Channel, int]:
        endpoint, turn = self._endpoints.now()
        channel = self._channels.get(endpoint)
        if channel is None:
            if self._tls is None:
                channel = grpc.aio.insecure_channel(endpoint)
            else:
                channel = grpc.aio.secure_channel(endpoint, *credentials(self._tls))
            self._channels[endpoint] = channel
        return channel, turn

    def _rotate(self, turn: int) -> None:
        self._endpoints.rotate(turn)

    async def _call(self, service: str, method: str, request: object, *, timeout: float | None = None,
                    idempotent: bool = False) -> Any:
        attempts = len(self._endpoints.all) * 2 if idempotent else 1
        backoff = Backoff(most=1.0)
        for attempt in range(attempts):
            channel, turn = self._channel()
            try:
                stub = STUBS[service](channel)
                return await getattr(stub, method)(request, timeout=timeout or self.timeout,
                                                   metadata=self._endpoints.metadata)
            except grpc.RpcError as e:
                error = errors.from_rpc(e)
                if not isinstance(error, errors.Unavailable):
                    raise error from None
                # The next call (or attempt) goes to the next endpoint.
                self._rotate(turn)
                if attempt + 1 == attempts:
                    raise error from None
                await asyncio.sleep(backoff.delay())
        raise errors.Unavailable("no endpoint answered")

    async def close(self) -> None:
        """Stops renewals and closes the connections (held locks then
        expire after their TTL; release them first)."""
        await self._keepalive.close()
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- locks, permits, leadership ---

    def lock(self, name: str, *, ttl: float = 10.0, wait: float = 0.0, owner: str = "",
             shared: bool | None = None) -> Lock:
        """See :meth:`coord_client.Client.lock`; use with ``async with``."""
        return Lock(self, LockCalls(name, ttl, wait, owner, shared), wait)

    def semaphore(self, name: str, *, permits: int = 1, size: int = 0, ttl: float = 10.0, wait: float = 0.0,
                  owner: str = "") -> Permit:
        """See :meth:`coord_client.Client.semaphore`; use with ``async with``."""
        return Permit(self, PermitCalls(name, permits, size, ttl, wait, owner), wait)

    def campaign(self, election: str, *, value: bytes = b"", ttl: float = 10.0, wait: float = 0.0,
                 owner: str = "") -> Leadership:
        """See :meth:`coord_client.Client.campaign`; use with ``async with``."""
        return Leadership(self, CampaignCalls(election, value, ttl, wait, owner), wait)

    async def leader(self, election: str) -> election_pb2.ElectionState | None:
        reply = await self._call("ElectionService", "Leader",
                                 election_pb2.ElectionServiceLeaderRequest(election=election), idempotent=True)
        return leader_state(reply.state)

    async def observe(self, election: str) -> AsyncGenerator[election_pb2.ElectionState, None]:
        """See :meth:`coord_client.Client.observe`."""
        request = election_pb2.ElectionServiceObserveRequest(election=election)
        backoff, observed = Backoff(), Observed()
        while True:
            channel, turn = self._channel()
            call = STUBS["ElectionService"](channel).Observe(request, metadata=self._endpoints.metadata)
            try:
                first = True
                async for event in call:
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
            await asyncio.sleep(backoff.delay())

    # --- rate limits ---

    async def check(self, subject: str, *, policy: str = "", limits: Sequence[ratelimit_pb2.Limit] = (),
                    cost: int = 1, peek: bool = False) -> Decision:
        """See :meth:`coord_client.Client.check`."""
        return decision(await self._call("RateLimitService", "Check",
                                         check_request(subject, policy, limits, cost, peek)))

    @overload
    def rate_limited(self, subject: str, *, policy: str = "", limits: Sequence[ratelimit_pb2.Limit] = (),
                     cost: int = 1) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]: ...

    @overload
    def rate_limited(self, subject: Callable[P, str], *, policy: str = "", limits: Sequence[ratelimit_pb2.Limit] = (),
                     cost: int = 1) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]: ...

    def rate_limited(self, subject: str | Callable[P, str], *, policy: str = "",
                     limits: Sequence[ratelimit_pb2.Limit] = (),
                     cost: int = 1) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """A decorator for coroutine functions; see
        :meth:`coord_client.Client.rate_limited`."""
        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(fn)
            async def limited(*args: P.args, **kwargs: P.kwargs) -> R:
                who = subject(*args, **kwargs) if callable(subject) else subject
                verdict = await self.check(who, policy=policy, limits=limits, cost=cost)
                if not verdict.allowed:
                    raise errors.RateLimited(who, verdict.retry_after)
                return await fn(*args, **kwargs)
            return limited
        return decorate

    # --- leaderboards ---

    def leaderboard(self, board: str) -> Leaderboard:
        return Leaderboard(self, board)

    # --- pub/sub ---

    async def subscribe(self, *channels: str, since: dict[str, tuple[int, str]] | None = None) -> Subscription:
        """See :meth:`coord_client.Client.subscribe`; iterate with ``async for``."""
        sub = Subscription(self, Positions(list(channels), dict(since or {})))
        backoff = Backoff(most=1.0)
        attempts = len(self._endpoints.all) * 2
        for attempt in range(attempts):
            try:
                await sub._open()
                return sub
            except grpc.RpcError as e:
                error = errors.from_rpc(e)
            except errors.Unavailable as e:
                error = e
            # Subscribing changes nothing: try the other endpoints.
            if not isinstance(error, errors.Unavailable) or attempt + 1 == attempts:
                raise error from None
            self._rotate(sub._turn)
            await asyncio.sleep(backoff.delay())
        raise errors.Unavailable("no endpoint answered")

    async def publish(self, channel: str, payload: bytes, *,
                      idempotency_key: str = "") -> pubsub_pb2.PublishResponse:
        request = pubsub_pb2.PublishRequest(channel=channel, payload=payload, idempotency_key=idempotency_key)
        reply: pubsub_pb2.PublishResponse = await self._call("PubSubService", "Publish", request,
                                                             idempotent=bool(idempotency_key))
        return reply


class _KeepAlive:
    """The asyncio driver of the client's one KeepAlive stream (see
    ``coord_client._keepalive``): a task for the stream, one for the
    watchdog, started with the first lease."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._leases = Leases()
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def add(self, lease_id: str, ttl: float, on_lost: Callable[[str], None]) -> Lease:
        lease = self._leases.add(lease_id, ttl, on_lost)
        if self._wake is None:
            self._wake = asyncio.Event()
            self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._watch())]
        self._wake.set()
        return lease

    def remove(self, lease: Lease) -> None:
        self._leases.remove(lease)

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _requests(self, wake: asyncio.Event) -> AsyncIterator[lock_pb2.KeepAliveRequest]:
        while not self._closed:
            now = time.monotonic()
            due = self._leases.take_due(now)
            for request in due:
                yield request
            if not due:
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), self._leases.next_due(now))
                except asyncio.TimeoutError:
                    pass

    async def _run(self) -> None:
        assert self._wake is not None
        backoff = Backoff()
        while not self._closed:
            self._leases.all_due()
            channel, turn = self._client._channel()
            stub = STUBS["LockService"](channel)
            call = stub.KeepAlive(self._requests(self._wake), metadata=self._client._endpoints.metadata)
            try:
                async for event in call:
                    backoff.reset()
                    lost = self._leases.handle(event)
                    if lost:
                        lost[0].lose(lost[1])
            except grpc.RpcError:
                pass
            finally:
                call.cancel()
            self._client._rotate(turn)
            await asyncio.sleep(backoff.delay())

    async def _watch(self) -> None:
        while not self._closed:
            for lease in self._leases.silent(time.monotonic()):
                lease.lose(SILENT)
            await asyncio.sleep(0.05)


class _Hold(Held):
    """Something held under a lease; see ``coord_client._client._Hold``.
    ``lost`` is an :class:`asyncio.Event`. In ``async with``, losing it
    cancels the task running the block, which then raises
    :class:`errors.LockLostError` (``cancel_on_loss=False``: only the event)."""

    lost: asyncio.Event
    cancel_on_loss = True

    def __init__(self, client: Client, calls: LockCalls | PermitCalls | CampaignCalls, wait: float) -> None:
        self._client, self._calls, self._wait = client, calls, wait
        self.name = calls.name
        self._held: Granted | None = None
        self._lease: Lease | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self.lost = asyncio.Event()
        self.lost_reason = ""

    def _on_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        if self._task is not None and self.cancel_on_loss:
            self._cancelled = True
            self._task.cancel(f"{self._calls.kind} {self.name!r} lost: {reason}")

    async def acquire(self: H) -> H:
        reply = await self._client._call(self._calls.service, self._calls.methods[0], self._calls.request,
                                         timeout=self._wait + self._client.timeout,
                                         idempotent=self._calls.idempotent)
        held = self._calls.granted(reply)
        self._held = held
        self._lease = self._client._keepalive.add(held.lease_id, held.ttl, self._on_lost)
        return self

    async def release(self) -> None:
        held, lease, self._lease = self._held, self._lease, None
        if lease is None or held is None:
            return
        self._client._keepalive.remove(lease)
        if not self.lost.is_set():
            await self._client._call(self._calls.service, self._calls.methods[1], self._calls.release(held),
                                     idempotent=True)

    async def __aenter__(self: H) -> H:
        await self.acquire()
        self._task = asyncio.current_task()
        if self.lost.is_set():
            self.check()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        task, self._task = self._task, None
        await self.release()
        if not self._cancelled:
            return
        if not isinstance(value, asyncio.CancelledError):
            # The block ended before our cancellation reached it (or it
            # swallowed it): take it back so it does not hit the caller.
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass
        if task is not None and hasattr(task, "uncancel"):  # Python ≥ 3.11
            task.uncancel()
        if isinstance(value, asyncio.CancelledError):
            # Our cancellation, not the caller's: say why instead.
            raise errors.LockLostError(self.name, self.lost_reason, self._calls.kind) from None


class Lock(_Hold, LockView):
    """A held lock (see :meth:`Client.lock`)."""


class Permit(_Hold, PermitView):
    """Held semaphore permits (see :meth:`Client.semaphore`)."""


class Leadership(_Hold, LeadershipView):
    """A held leadership (see :meth:`Client.campaign`)."""

    async def proclaim(self, value: bytes) -> None:
        """See :meth:`coord_client.Leadership.proclaim`."""
        await self._client._call("ElectionService", "Proclaim", self._proclaim(value), idempotent=True)


class Leaderboard:
    """See :class:`coord_client.Leaderboard`."""

    def __init__(self, client: Client, board: str) -> None:
        self._client, self.board = client, board

    async def _read(self, method: str, request: object) -> Any:
        return await self._client._call("LeaderboardService", method, request, idempotent=True)

    async def submit(self, member: str, score: int, *, subscore: int = 0, metadata: str | None = None,
                     operator: leaderboard_pb2.Operator = leaderboard_pb2.OPERATOR_UNSPECIFIED) -> leaderboard_pb2.SubmitResponse:
        request = leaderboard_pb2.SubmitRequest(board=self.board, member=member, score=score, subscore=subscore,
                                                metadata=metadata, operator=operator, request_id=uuid.uuid4().hex)
        return await self._read("Submit", request)  # type: ignore[no-any-return]

    async def top(self, limit: int = 10, *, ago: int = 0, period_id: str = "") -> list[leaderboard_pb2.Entry]:
        request = leaderboard_pb2.TopRequest(board=self.board, limit=limit, period=period(ago, period_id))
        return list((await self._read("Top", request)).entries)

    async def around(self, member: str, *, before: int = 5, after: int = 5, ago: int = 0,
                     period_id: str = "") -> list[leaderboard_pb2.Entry]:
        request = leaderboard_pb2.AroundRequest(board=self.board, member=member, before=before, after=after,
                                                period=period(ago, period_id))
        return list((await self._read("Around", request)).entries)

    async def ranks(self, *members: str, ago: int = 0, period_id: str = "") -> dict[str, leaderboard_pb2.Entry]:
        request = leaderboard_pb2.GetRanksRequest(board=self.board, members=list(members),
                                                  period=period(ago, period_id))
        reply = await self._read("GetRanks", request)
        return {e.member: e.entry for e in reply.entries if e.HasField("entry")}

    async def count(self, *, ago: int = 0, period_id: str = "") -> int:
        request = leaderboard_pb2.CountRequest(board=self.board, period=period(ago, period_id))
        return int((await self._read("Count", request)).count)

    async def remove(self, member: str) -> bool:
        reply = await self._read("Remove", leaderboard_pb2.RemoveRequest(board=self.board, member=member))
        return bool(reply.removed)


class Subscription:
    """Iterates messages with ``async for``; see :meth:`Client.subscribe`."""

    def __init__(self, client: Client, positions: Positions) -> None:
        self._client, self._positions = client, positions
        self._closed = False
        self._call: Any = None
        self._turn = 0

    @property
    def positions(self) -> dict[str, tuple[int, str]]:
        return self._positions.at

    async def _open(self) -> None:
        channel, self._turn = self._client._channel()
        call = STUBS["PubSubService"](channel).Subscribe(
            self._positions.request(), metadata=self._client._endpoints.metadata)
        async for event in call:
            if self._positions.subscribed(event):
                self._call = call
                return
        raise errors.Unavailable("the subscription ended before it was in place")

    async def __aiter__(self) -> AsyncIterator[pubsub_pb2.Message]:
        backoff = Backoff()
        while not self._closed:
            try:
                if self._call is None:
                    self._positions.before_reconnect()
                    await self._open()
                async for event in self._call:
                    backoff.reset()
                    message = self._positions.message(event)
                    if message is not None:
                        yield message
                return
            except asyncio.CancelledError:
                if self._closed:  # close() cancelled the call
                    return
                raise
            except grpc.RpcError as e:
                if self._closed:
                    return
                error = errors.from_rpc(e)
                if not isinstance(error, errors.Unavailable):
                    raise error from None
                self._client._rotate(self._turn)
                await asyncio.sleep(backoff.delay())
                self._call = None

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
