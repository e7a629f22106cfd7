"""coord_client.aio against a live coord: the same promises as the
synchronous client (mutual exclusion, loss told within a TTL, failover,
subscriptions that resume), and a lost guard cancels the block it guards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest

from conftest import Coord, Redis
from coord_client import errors
from coord_client._pb.coord.v1 import lock_pb2, lock_pb2_grpc
from coord_client.aio import Client
from coord_client.pb import ratelimit_pb2


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=120))


def test_a_guarded_section_with_16_concurrent_holders_counts_exactly(coords: list[Coord]) -> None:
    async def body() -> None:
        total = [0]
        async with Client([c.addr for c in coords]) as a, Client([coords[1].addr, coords[0].addr]) as b:
            async def worker(coord: Client) -> None:
                for _ in range(5):
                    async with coord.lock("counter", ttl=5, wait=60):
                        seen = total[0]
                        await asyncio.sleep(0.002)  # a lost update if two were inside at once
                        total[0] = seen + 1

            await asyncio.gather(*(worker(a if i % 2 else b) for i in range(16)))
        assert total[0] == 80

    run(body)


def test_a_lost_lock_cancels_the_block_it_guards(coords: list[Coord]) -> None:
    async def body() -> None:
        admin = lock_pb2_grpc.LockServiceStub(grpc.insecure_channel(coords[1].addr))
        async with Client(coords[0].addr) as coord:
            started = time.monotonic()
            with pytest.raises(errors.LockLostError, match="force released"):
                async with coord.lock("forced", ttl=3) as lock:
                    admin.ForceRelease(lock_pb2.ForceReleaseRequest(name="forced"), timeout=10)
                    await asyncio.sleep(30)  # cut short by the loss
            assert time.monotonic() - started < 3, "told within one TTL"
            assert lock.lost.is_set()
            # The task was not left cancelled: it goes on awaiting.
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
            await asyncio.sleep(0.01)

            # A block that swallows the cancellation ends normally, and the
            # cancellation does not reach the code after it.
            async with coord.lock("forced", ttl=3) as again:
                admin.ForceRelease(lock_pb2.ForceReleaseRequest(name="forced"), timeout=10)
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    pass
            assert again.lost.is_set() and task.cancelling() == 0
            await asyncio.sleep(0.01)

    run(body)


def test_a_cancellation_from_elsewhere_stays_a_cancellation(coords: list[Coord]) -> None:
    async def body() -> None:
        async with Client(coords[0].addr) as coord:
            async def holder() -> None:
                async with coord.lock("cancelled", ttl=3):
                    await asyncio.sleep(30)

            task = asyncio.create_task(holder())
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with coord.lock("cancelled", ttl=3):  # released on the way out
                pass

    run(body)


def test_the_guard_is_told_within_a_ttl_when_redis_stops(redis: Redis, coords: list[Coord]) -> None:
    async def body() -> None:
        async with Client([c.addr for c in coords]) as coord:
            lock = await coord.lock("paused", ttl=2).acquire()
            redis.pause()
            try:
                started = time.monotonic()
                await asyncio.wait_for(lock.lost.wait(), timeout=4)
                assert time.monotonic() - started <= 2.5 + 0.5
            finally:
                redis.resume()

    run(body)


def test_the_guard_is_told_when_its_only_coord_is_killed(coords: list[Coord]) -> None:
    async def body() -> None:
        async with Client(coords[0].addr) as coord:
            lock = await coord.lock("lonely", ttl=2).acquire()
            coords[0].kill()
            await asyncio.wait_for(lock.lost.wait(), timeout=4)
            assert lock.lost_reason == "no renewal confirmed for a whole TTL"

    run(body)


def test_the_lock_survives_a_killed_coord_when_another_is_reachable(coords: list[Coord]) -> None:
    async def body() -> None:
        async with Client([c.addr for c in coords]) as coord:
            async with coord.lock("survivor", ttl=2) as lock:
                coords[0].kill()
                await asyncio.sleep(5)
                lock.check()

    run(body)


def test_a_subscription_resumes_across_a_coord_restart_without_losing_a_message(coords: list[Coord]) -> None:
    first = coords[0]

    async def body() -> None:
        async with Client(first.addr) as sub_client, Client(coords[1].addr) as pub_client:
            sub = await sub_client.subscribe("durable.orders")
            got: list[bytes] = []

            async def read() -> None:
                async for message in sub:
                    got.append(message.payload)
                    if message.payload == b"99":
                        return

            reader = asyncio.create_task(read())
            for i in range(100):
                await pub_client.publish("durable.orders", str(i).encode())
                if i == 30:
                    first.kill()
                if i == 60:
                    await asyncio.to_thread(first.start)
                await asyncio.sleep(0.01)
            await asyncio.wait_for(reader, timeout=30)
            sub.close()
        assert got == [str(i).encode() for i in range(100)]

    run(body)


def test_an_ephemeral_subscription_says_when_messages_may_be_lost(coords: list[Coord]) -> None:
    first = coords[0]

    async def body() -> None:
        async with Client(first.addr) as client:
            sub = await client.subscribe("plain")

            async def read() -> None:
                async for _ in sub:
                    pass

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.3)
            first.kill()
            await asyncio.to_thread(first.start)
            with pytest.raises(errors.MessagesLost) as lost:
                await asyncio.wait_for(reader, timeout=20)
            assert lost.value.channel == "plain"

    run(body)


def test_permits_leadership_and_the_decorator_work_on_asyncio(coords: list[Coord]) -> None:
    async def body() -> None:
        per_minute = ratelimit_pb2.Limit(name="api", sliding_log=ratelimit_pb2.SlidingLog(limit=1, window_ms=60_000))
        async with Client(coords[0].addr) as a, Client(coords[1].addr) as b:
            async with a.semaphore("pool", permits=2, size=2, ttl=5) as permit:
                assert permit.permit_id > 0
                with pytest.raises(errors.NotAcquired):
                    await b.semaphore("pool", ttl=5).acquire()
            async with b.semaphore("pool", permits=2, ttl=5) as again:
                assert again.permit_id > permit.permit_id

            changes = a.observe("primary")
            assert not (await anext(changes)).has_leader
            async with a.campaign("primary", value=b"a", ttl=5) as leadership:
                state = await anext(changes)
                assert state.has_leader and state.value == b"a" and state.term == leadership.term
                await leadership.proclaim(b"a2")
                assert (await anext(changes)).value == b"a2"
                leader = await b.leader("primary")
                assert leader is not None and leader.value == b"a2"
            assert not (await anext(changes)).has_leader
            await changes.aclose()

            @a.rate_limited("user:1", limits=[per_minute])
            async def handle() -> str:
                return "ok"

            assert await handle() == "ok"
            with pytest.raises(errors.RateLimited):
                await handle()

    run(body)


def test_a_dead_first_endpoint_is_skipped_by_locks_and_subscriptions(coords: list[Coord]) -> None:
    async def body() -> None:
        async with Client(["127.0.0.1:1", coords[0].addr]) as coord:
            async with coord.lock("skip", ttl=5) as lock:
                assert lock.fencing_token > 0
        async with Client(["127.0.0.1:1", coords[0].addr]) as coord:
            sub = await coord.subscribe("durable.skip")
            await coord.publish("durable.skip", b"hello")
            async for message in sub:
                assert message.payload == b"hello"
                break
            sub.close()

    run(body)
