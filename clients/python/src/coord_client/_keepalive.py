"""One KeepAlive stream per client renews every lease the client's guards
hold. Renewals go out every third of a lease's TTL; a lease is declared lost
when the server says so (LockLost, or a renewal answered with TTL 0) or when
no renewal was confirmed for a whole TTL (coord or its Redis unreachable). A
broken stream is reopened with backoff, on the client's next endpoint. This
is the threaded driver; ``aio`` has the asyncio one, both over ``Leases``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc

from coord_client._core import SILENT, STUBS, Backoff, Lease, Leases
from coord_client._pb.coord.v1 import lock_pb2

if TYPE_CHECKING:
    from coord_client._client import Client


class KeepAlive:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._leases = Leases()
        self._lock = threading.Condition()
        self._closed = False
        self._started = False
        # When the renewal thread wakes next: a new lease due before that
        # wakes it; otherwise adding and removing leases costs no wake-up.
        self._wake_at = 0.0

    def add(self, lease_id: str, ttl: float, on_lost: Callable[[str], None]) -> Lease:
        with self._lock:
            lease = self._leases.add(lease_id, ttl, on_lost)
            if not self._started:
                self._started = True
                threading.Thread(target=self._run, name="coord-keepalive", daemon=True).start()
                threading.Thread(target=self._watch, name="coord-watchdog", daemon=True).start()
            if lease.due < self._wake_at:
                self._lock.notify_all()
        return lease

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.remove(lease)

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
                    due = self._leases.take_due(now)
                    if due:
                        break
                    wait = self._leases.next_due(now)
                    self._wake_at = now + wait
                    self._lock.wait(timeout=wait)
            yield from due

    def _run(self) -> None:
        backoff = Backoff()
        while True:
            with self._lock:
                if self._closed:
                    return
                self._leases.all_due()
            stop = threading.Event()
            channel, turn = self._client._channel()
            stub = STUBS["LockService"](channel)
            call = stub.KeepAlive(self._requests(stop), metadata=self._client._endpoints.metadata)
            try:
                for event in call:
                    backoff.reset()
                    with self._lock:
                        lost = self._leases.handle(event)
                    if lost:
                        lost[0].lose(lost[1])
            except grpc.RpcError:
                pass
            finally:
                stop.set()
                call.cancel()
            with self._lock:
                if self._closed:
                    return
            self._client._rotate(turn)
            time.sleep(backoff.delay())

    def _watch(self) -> None:
        """A lease with no confirmed renewal for a whole TTL is presumed lost."""
        while True:
            with self._lock:
                if self._closed:
                    return
                silent = self._leases.silent(time.monotonic())
            for lease in silent:
                lease.lose(SILENT)
            time.sleep(0.05)
