"""The client's bookkeeping without a server: endpoint rotation and the
leases a KeepAlive stream renews."""

from __future__ import annotations

import time

from coord_client._core import Endpoints, Leases
from coord_client.pb import lock_pb2


def test_concurrent_failures_of_one_endpoint_rotate_once() -> None:
    endpoints = Endpoints(["a:1", "b:1"], None, None)
    _, turn = endpoints.now()
    for _ in range(16):  # 16 calls saw "a" fail
        endpoints.rotate(turn)
    assert endpoints.now()[0] == "b:1", "an even number of failures must not rotate back onto a"
    endpoints.rotate(endpoints.now()[1])
    assert endpoints.now()[0] == "a:1"


def test_leases_fall_due_every_third_of_their_ttl_and_end_as_coord_says() -> None:
    lost: list[str] = []
    leases = Leases()
    lease = leases.add("l1", 3.0, lost.append)
    now = time.monotonic()
    assert leases.take_due(now) == [], "not due before a third of the TTL"
    assert [r.lease_id for r in leases.take_due(now + 1.01)] == ["l1"]
    assert leases.take_due(now + 1.02) == [], "renewed once per period"

    renewed = lock_pb2.KeepAliveResponse(renewed=lock_pb2.LeaseRenewed(lease_id="l1", ttl_ms=3000))
    assert leases.handle(renewed) is None
    assert leases.silent(time.monotonic() + 2.9) == []
    assert leases.silent(time.monotonic() + 3.1) == [lease], "silent for a whole TTL"

    gone = lock_pb2.KeepAliveResponse(lock_lost=lock_pb2.LockLost(
        lease_id="l1", reason=lock_pb2.LOCK_LOST_REASON_FORCE_RELEASED))
    found = leases.handle(gone)
    assert found is not None and found[1] == "force released"
    found[0].lose(found[1])
    found[0].lose("expired")  # only the first loss counts
    assert lost == ["force released"]
    expired = lock_pb2.KeepAliveResponse(renewed=lock_pb2.LeaseRenewed(lease_id="l1", ttl_ms=0))
    assert leases.handle(expired) == (lease, "expired")
