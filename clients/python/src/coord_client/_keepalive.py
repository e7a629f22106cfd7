"""One KeepAlive stream per client renews every lease the client's guards
hold. Renewals go out every third of a lease's TTL; a lease is declared lost
when the server says so (LockLost, or a renewal answered with TTL 0) or when
no renewal was confirmed for a whole TTL (coord or its Redis unreachable). A
broken stream is reopened with backoff, on the client's next endpoint."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from coord_client._pb.coord.v1 import lock_pb2

if TYPE_CHECKING:
    from coord_client._client import Client

LOST_REASONS = {
    lock_pb2.LOCK_LOST_REASON_EXPIRED: "expired",
    lock_pb2.LOCK_LOST_REASON_FORCE_RELEASED: "force released",
    lock_pb2.LOCK_LOST_REASON_LEASE_REVOKED: "lease revoked",
    lock_pb2.LOCK_LOST_REASON_BACKEND_UNAVAILABLE: "backend unavailable",
    lock_pb2.LOCK_LOST_REASON_QUORUM_LOST: "quorum lost",
}


@dataclass(eq=False)
class Lease:
    """A lease the stream keeps alive, and whether it is lost."""

    lease_id: str
    ttl: float
    confirmed: float = field(default_factory=time.monotonic)
    due: float = 0.0
    lost: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    on_lost: list[Callable[[str], None]] = field(default_factory=list)

    def lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.reason = reason
        self.lost.set()
        for callback in self.on_lost:
            callback(reason)


class KeepAlive:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    def add(self, lease_id: str, ttl: float) -> Lease:
        lease = Lease(lease_id, ttl, due=time.monotonic() + ttl / 3)
        with self._lock:
            self._leases[lease_id] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="coord-keepalive", daemon=True)
                self._thread.start()
                self._watchdog = threading.Thread(target=self._watch, name="coord-watchdog", daemon=True)
                self._watchdog.start()
            self._lock.notify_all()
        return lease

    def remove(self, lease: Lease) -> None:
        with self._lock:
            if self._leases.get(lease.lease_id) is lease:
                del self._leases[lease.lease_id]
            self._lock.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def _requests(self, stop: threading.Event) -> Iterator[lock_pb2.KeepAliveRequest]:
        """Renewals as they fall due; ends when the stream is replaced."""
        while True:
            with self._lock:
                while True:
                    if self._closed or stop.is_set():
                        return
                    now = time.monotonic()
                    due = [lease for lease in self._leases.values() if lease.due <= now and not lease.lost.is_set()]
                    if due:
                        for lease in due:
                            lease.due = now + lease.ttl / 3
                        break
                    upcoming = [lease.due for lease in self._leases.values()]
                    self._lock.wait(timeout=min(upcoming, default=now + 1.0) - now)
            for lease in due:
                yield lock_pb2.KeepAliveRequest(lease_id=lease.lease_id)

    def _run(self) -> None:
        delay = 0.05
        while True:
            with self._lock:
                if self._closed:
                    return
                # Everything due now: the new stream renews at once.
                for lease in self._leases.values():
                    lease.due = 0.0
            stop = threading.Event()
            stub = self._client._lock_stub()
            call = stub.KeepAlive(self._requests(stop), metadata=self._client._metadata())
            try:
                for event in call:
                    delay = 0.05
                    self._handle(event)
            except grpc.RpcError:
                pass
            finally:
                stop.set()
                call.cancel()
            with self._lock:
                if self._closed:
                    return
            self._client._rotate()
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def _handle(self, event: lock_pb2.KeepAliveResponse) -> None:
        with self._lock:
            if event.HasField("renewed"):
                lease = self._leases.get(event.renewed.lease_id)
                if lease is None:
                    return
                if event.renewed.ttl_ms <= 0:
                    lost = (lease, "expired")
                else:
                    lease.confirmed = time.monotonic()
                    return
            elif event.HasField("lock_lost"):
                found = self._leases.get(event.lock_lost.lease_id)
                if found is None:
                    return
                lost = (found, LOST_REASONS.get(event.lock_lost.reason, "lost"))
            else:
                return
        lost[0].lose(lost[1])

    def _watch(self) -> None:
        """A lease with no confirmed renewal for a whole TTL is presumed lost."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                silent = [lease for lease in self._leases.values() if now - lease.confirmed > lease.ttl]
            for lease in silent:
                lease.lose("no renewal confirmed for a whole TTL")
            time.sleep(0.05)
