"""coord_client against a live coord: locks keep mutual exclusion, say when
they are lost (ForceRelease, Redis stopped, coord killed with no other
instance) and survive the loss of one instance when another is reachable;
subscriptions resume across a coord restart without losing a message."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from conftest import Coord, Redis
from coord_client import Client, errors
from coord_client._pb.coord.v1 import lock_pb2, lock_pb2_grpc


def test_a_guarded_section_with_16_concurrent_holders_counts_exactly(coords: list[Coord]) -> None:
    total = {"n": 0}
    with Client([c.addr for c in coords]) as coord:
        def worker() -> None:
            for _ in range(5):
                with coord.lock("counter", ttl=5, wait=60) as lock:
                    seen = total["n"]
                    time.sleep(0.002)  # a lost update if two were inside at once
                    lock.check()
                    total["n"] = seen + 1

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert total["n"] == 80


def test_fencing_tokens_increase_and_a_busy_lock_is_not_acquired(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as a, Client(coords[1].addr) as b:
        with a.lock("tokens", ttl=5) as first:
            with pytest.raises(errors.NotAcquired):
                b.lock("tokens", ttl=5, owner="b").acquire()
        with b.lock("tokens", ttl=5) as second:
            assert second.fencing_token > first.fencing_token


def test_the_guard_is_told_within_a_ttl_when_the_lock_is_force_released(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as coord, coord.lock("forced", ttl=3) as lock:
        admin = lock_pb2_grpc.LockServiceStub(grpc.insecure_channel(coords[1].addr))
        admin.ForceRelease(lock_pb2.ForceReleaseRequest(name="forced"), timeout=10)
        assert lock.lost.wait(timeout=3), "told within one TTL"
        assert lock.lost_reason == "force released"
        with pytest.raises(errors.LockLostError):
            lock.check()


def test_the_guard_is_told_within_a_ttl_when_redis_stops(redis: Redis, coords: list[Coord]) -> None:
    with Client([c.addr for c in coords]) as coord:
        lock = coord.lock("paused", ttl=2).acquire()
        redis.pause()
        try:
            started = time.monotonic()
            assert lock.lost.wait(timeout=4), "told once no renewal was confirmed for a whole TTL"
            assert time.monotonic() - started <= 2.5 + 0.5
        finally:
            redis.resume()


def test_the_guard_is_told_when_its_only_coord_is_killed(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as coord:
        lock = coord.lock("lonely", ttl=2).acquire()
        coords[0].kill()
        assert lock.lost.wait(timeout=4)
        assert lock.lost_reason == "no renewal confirmed for a whole TTL"


def test_the_lock_survives_a_killed_coord_when_another_is_reachable(coords: list[Coord]) -> None:
    with Client([c.addr for c in coords]) as coord:
        with coord.lock("survivor", ttl=2) as lock:
            coords[0].kill()
            assert not lock.lost.wait(timeout=5), f"kept across the kill: {lock.lost_reason}"
            lock.check()


def test_a_subscription_resumes_across_a_coord_restart_without_losing_a_message(coords: list[Coord]) -> None:
    first = coords[0]
    with Client(first.addr) as sub_client, Client(coords[1].addr) as pub_client:
        sub = sub_client.subscribe("durable.orders")
        got: list[bytes] = []
        done = threading.Event()

        def read() -> None:
            for message in sub:
                got.append(message.payload)
                if message.payload == b"99":
                    done.set()
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.5)  # subscribed
        for i in range(100):
            pub_client.publish("durable.orders", str(i).encode())
            if i == 30:
                first.kill()
            if i == 60:
                first.start()
            time.sleep(0.01)
        assert done.wait(timeout=30), f"got {len(got)}"
        sub.close()
    assert got == [str(i).encode() for i in range(100)]


def test_an_ephemeral_subscription_says_when_messages_may_be_lost(coords: list[Coord]) -> None:
    first = coords[0]
    with Client(first.addr) as client:
        sub = client.subscribe("plain")
        raised: list[BaseException] = []

        def read() -> None:
            try:
                for _ in sub:
                    pass
            except errors.MessagesLost as e:
                raised.append(e)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.5)
        first.kill()
        first.start()
        reader.join(timeout=20)
        assert raised and raised[0].channel == "plain"  # type: ignore[attr-defined]


def test_errors_carry_the_grpc_code(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as coord:
        with pytest.raises(errors.InvalidArgument) as e:
            coord.lock("", ttl=1).acquire()
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "name" in e.value.message


def test_a_dead_first_endpoint_is_skipped_by_locks_and_subscriptions(coords: list[Coord]) -> None:
    with Client(["127.0.0.1:1", coords[0].addr]) as coord:
        with coord.lock("skip", ttl=5) as lock:
            assert lock.fencing_token > 0
    with Client(["127.0.0.1:1", coords[0].addr]) as coord:
        sub = coord.subscribe("durable.skip")
        coord.publish("durable.skip", b"hello")
        assert next(iter(sub)).payload == b"hello"
        sub.close()
    with Client(["127.0.0.1:1", coords[0].addr]) as coord:
        # A Check is not retried (it may have charged), but the next call
        # goes to the next endpoint.
        with pytest.raises(errors.Unavailable):
            coord.check("user:1", limits=[])
        with pytest.raises(errors.InvalidArgument):
            coord.check("user:1", limits=[])  # reached coord: no limits is bad input
