"""The synchronous client."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from coord_client import errors
from coord_client._keepalive import KeepAlive, Lease
from coord_client._pb.coord.v1 import (
    lock_pb2,
    lock_pb2_grpc,
    pubsub_pb2,
    pubsub_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
)


@dataclass(frozen=True)
class Tls:
    """TLS to coord: the CA that signed its certificate (PEM; None: the
    system's roots), and a client certificate and key for mutual TLS."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None


class Client:
    """A connection to coord: ``endpoints`` are ``host:port`` of its
    instances, tried in turn when one fails. ``namespace`` and ``token``
    (an API key or a JWT) go with every call."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        namespace: str | None = None,
        token: str | None = None,
        tls: Tls | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self._endpoints:
            raise ValueError("endpoints: give at least one host:port")
        self._namespace, self._token, self._tls, self.timeout = namespace, token, tls, timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._current = 0
        self._guard = threading.Lock()
        self._keepalive = KeepAlive(self)

    # --- connections ---

    def _channel(self) -> grpc.Channel:
        with self._guard:
            endpoint = self._endpoints[self._current % len(self._endpoints)]
            channel = self._channels.get(endpoint)
            if channel is None:
                if self._tls is None:
                    channel = grpc.insecure_channel(endpoint)
                else:
                    creds = grpc.ssl_channel_credentials(self._tls.ca, self._tls.key, self._tls.cert)
                    options = [("grpc.ssl_target_name_override", self._tls.server_name)] if self._tls.server_name else []
                    channel = grpc.secure_channel(endpoint, creds, options)
                self._channels[endpoint] = channel
            return channel

    def _rotate(self) -> None:
        """Moves on to the next endpoint (after a failure)."""
        with self._guard:
            self._current += 1

    def _metadata(self) -> list[tuple[str, str]]:
        meta = []
        if self._namespace:
            meta.append(("coord-namespace", self._namespace))
        if self._token:
            meta.append(("authorization", f"Bearer {self._token}"))
        return meta

    def _stub(self, stub: Any) -> Any:
        """A generated stub (grpcio's generated stubs are untyped) on the
        current endpoint."""
        return stub(self._channel())

    def _lock_stub(self) -> Any:
        return self._stub(lock_pb2_grpc.LockServiceStub)

    def _call(self, method: str, request: object, *, stub: type, timeout: float | None = None,
              idempotent: bool = False) -> object:
        """One unary call; UNAVAILABLE is retried on the other endpoints when
        the call is idempotent."""
        attempts = len(self._endpoints) * 2 if idempotent else 1
        delay = 0.05
        for attempt in range(attempts):
            try:
                return getattr(self._stub(stub), method)(
                    request, timeout=timeout or self.timeout, metadata=self._metadata())
            except grpc.RpcError as e:
                error = errors.from_rpc(e)
                if not isinstance(error, errors.Unavailable) or attempt + 1 == attempts:
                    raise error from None
                self._rotate()
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
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

    # --- locks ---

    def lock(self, name: str, *, ttl: float = 10.0, wait: float = 0.0, owner: str = "",
             shared: bool | None = None) -> Lock:
        """A lock to hold in a ``with`` block: acquired on entry (waiting up
        to ``wait`` seconds), renewed on the client's KeepAlive stream,
        released on exit. ``shared`` True / False makes it the read / write
        side of the read/write lock ``name``."""
        return Lock(self, name, ttl=ttl, wait=wait, owner=owner, shared=shared)

    # --- rate limits ---

    def check(self, subject: str, *, policy: str = "", limits: Sequence[ratelimit_pb2.Limit] = (), cost: int = 1,
              peek: bool = False) -> Decision:
        """Checks (and charges, unless ``peek``) ``cost`` against a named
        policy or inline limits. Not retried: a Check may have charged."""
        mode = ratelimit_pb2.CHECK_MODE_PEEK if peek else ratelimit_pb2.CHECK_MODE_CONSUME
        request = ratelimit_pb2.CheckRequest(subject=subject, policy=policy, limits=list(limits), cost=cost, mode=mode)
        reply = self._call("Check", request, stub=ratelimit_pb2_grpc.RateLimitServiceStub)
        assert isinstance(reply, ratelimit_pb2.CheckResponse)
        retry = max((s.retry_after_ms for s in reply.limits if not s.allowed), default=0)
        return Decision(reply.allowed, retry / 1000 if retry >= 0 else None, list(reply.limits))

    # --- pub/sub ---

    def subscribe(self, *channels: str, since: dict[str, tuple[int, str]] | None = None) -> Subscription:
        """An iterator over messages of ``channels`` that resumes after a
        disconnect from the last position it yielded; a gap that cannot be
        filled raises :class:`errors.MessagesLost`, never silently."""
        return Subscription(self, list(channels), dict(since or {}))

    def publish(self, channel: str, payload: bytes, *, idempotency_key: str = "") -> pubsub_pb2.PublishResponse:
        """Publishes; retried on other instances only with an idempotency key."""
        request = pubsub_pb2.PublishRequest(channel=channel, payload=payload, idempotency_key=idempotency_key)
        reply = self._call("Publish", request, stub=pubsub_pb2_grpc.PubSubServiceStub,
                           idempotent=bool(idempotency_key))
        assert isinstance(reply, pubsub_pb2.PublishResponse)
        return reply


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Seconds until a retry can pass; None when it never can (cost above the limit).
    retry_after: float | None
    limits: list[ratelimit_pb2.LimitStatus]


class Lock:
    """A held lock (see :meth:`Client.lock`). ``fencing_token`` orders
    holders; ``lost`` is set when the lock is gone, and :meth:`check`
    raises :class:`errors.LockLostError` then: check it between steps of
    the work and pass the token to what you write."""

    def __init__(self, client: Client, name: str, *, ttl: float, wait: float, owner: str,
                 shared: bool | None) -> None:
        self._client, self.name, self._ttl, self._wait, self._owner = client, name, ttl, wait, owner
        self._mode = {None: lock_pb2.LOCK_MODE_UNSPECIFIED, True: lock_pb2.LOCK_MODE_SHARED,
                      False: lock_pb2.LOCK_MODE_EXCLUSIVE}[shared]
        self._lease: Lease | None = None
        self.fencing_token = 0
        self.lease_id = ""

    def acquire(self) -> Lock:
        request = lock_pb2.AcquireRequest(
            name=self.name, ttl_ms=int(self._ttl * 1000), wait_ms=int(self._wait * 1000), owner=self._owner,
            mode=self._mode, request_id=uuid.uuid4().hex)
        # A request id makes a retried Acquire return the first one's grant.
        reply = self._client._call("Acquire", request, stub=lock_pb2_grpc.LockServiceStub,
                                   timeout=self._wait + self._client.timeout, idempotent=True)
        assert isinstance(reply, lock_pb2.AcquireResponse)
        if reply.status != lock_pb2.ACQUIRE_STATUS_ACQUIRED:
            raise errors.NotAcquired(f"lock {self.name!r} is held by {reply.holder_owner or 'another holder'}",
                                     reply.holder_owner)
        self.fencing_token, self.lease_id = reply.fencing_token, reply.lease_id
        self._lease = self._client._keepalive.add(reply.lease_id, reply.ttl_ms / 1000)
        return self

    @property
    def lost(self) -> threading.Event:
        """Set when the lock is lost (see :attr:`lost_reason`)."""
        if self._lease is None:
            raise RuntimeError("not acquired")
        return self._lease.lost

    @property
    def lost_reason(self) -> str:
        return self._lease.reason if self._lease else ""

    def check(self) -> None:
        """Raises :class:`errors.LockLostError` if the lock is lost."""
        if self._lease is not None and self._lease.lost.is_set():
            raise errors.LockLostError(self.name, self._lease.reason)

    def release(self) -> None:
        """Releases the lock (nothing to do if it was lost)."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        self._client._keepalive.remove(lease)
        if not lease.lost.is_set():
            request = lock_pb2.ReleaseRequest(name=self.name, lease_id=lease.lease_id, mode=self._mode)
            self._client._call("Release", request, stub=lock_pb2_grpc.LockServiceStub, idempotent=True)

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


class Subscription:
    """Iterates messages; see :meth:`Client.subscribe`. Created once the
    subscription is in place: anything published from then on is yielded."""

    def __init__(self, client: Client, channels: list[str], since: dict[str, tuple[int, str]]) -> None:
        self._client, self._channels, self.positions = client, channels, since
        self._ephemeral: set[str] = set()
        self._closed = False
        try:
            self._call: Any = self._open()
        except grpc.RpcError as e:
            raise errors.from_rpc(e) from None

    def _open(self) -> Any:
        """Subscribes (from the positions reached) and waits for Subscribed."""
        request = pubsub_pb2.SubscribeRequest(channels=[
            pubsub_pb2.ChannelSubscription(
                channel=c,
                since=pubsub_pb2.StreamPosition(offset=self.positions[c][0], epoch=self.positions[c][1])
                if c in self.positions else None)
            for c in self._channels
        ])
        call = self._client._stub(pubsub_pb2_grpc.PubSubServiceStub).Subscribe(
            request, metadata=self._client._metadata())
        for event in call:
            if event.HasField("subscribed"):
                for state in event.subscribed.channels:
                    if state.mode == pubsub_pb2.CHANNEL_MODE_EPHEMERAL:
                        self._ephemeral.add(state.channel)
                    elif state.position.epoch:
                        self.positions[state.channel] = (state.position.offset, state.position.epoch)
                return call
        raise errors.Unavailable("the subscription ended before it was in place")

    def __iter__(self) -> Iterator[pubsub_pb2.Message]:
        delay, call = 0.05, self._call
        while not self._closed:
            try:
                if call is None:
                    if self._ephemeral:
                        # No history to fill the gap from: say so.
                        raise errors.MessagesLost(sorted(self._ephemeral)[0], "reconnected: messages of an ephemeral "
                                                  "channel published while the subscription was down are lost", (0, ""))
                    call = self._call = self._open()
                for event in call:
                    delay = 0.05
                    if event.HasField("message"):
                        m = event.message
                        if m.epoch:
                            self.positions[m.channel] = (m.offset, m.epoch)
                        yield m
                    elif event.HasField("recovery") and not event.recovery.recovered:
                        r = event.recovery
                        raise errors.MessagesLost(r.channel, r.reason, (r.position.offset, r.position.epoch))
                return
            except grpc.RpcError as e:
                if self._closed:
                    return
                error = errors.from_rpc(e)
                if not isinstance(error, errors.Unavailable):
                    raise error from None
                self._client._rotate()
                time.sleep(delay * (0.5 + random.random()))
                delay, call = min(delay * 2, 2.0), None

    def close(self) -> None:
        self._closed = True
        self._call.cancel()
