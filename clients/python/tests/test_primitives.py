"""Semaphores, read/write locks, leader election, leaderboards and the
rate-limit decorator through the synchronous client, against a live coord."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from conftest import Coord
from coord_client import Client, errors
from coord_client.pb import election_pb2, leaderboard_pb2, ratelimit_pb2, semaphore_pb2
from coord_client._pb.coord.v1 import election_pb2_grpc, leaderboard_pb2_grpc, semaphore_pb2_grpc


def test_a_semaphore_never_has_more_holders_than_permits(coords: list[Coord]) -> None:
    inside, most, guard = [0], [0], threading.Lock()
    with Client([c.addr for c in coords]) as coord:
        def worker() -> None:
            for _ in range(4):
                with coord.semaphore("pool", size=3, ttl=5, wait=60) as permit:
                    assert permit.permit_id > 0
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.01)
                    permit.check()
                    with guard:
                        inside[0] -= 1

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert inside[0] == 0
    assert most[0] == 3, f"at most 3 at once, and the pool was used fully: {most[0]}"


def test_a_permit_is_told_when_it_is_force_released(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as coord, coord.semaphore("forced-pool", permits=2, size=2, ttl=3) as permit:
        with pytest.raises(errors.NotAcquired):
            coord.semaphore("forced-pool", ttl=3).acquire()
        admin = semaphore_pb2_grpc.SemaphoreServiceStub(grpc.insecure_channel(coords[1].addr))
        admin.ForceRelease(semaphore_pb2.SemaphoreServiceForceReleaseRequest(name="forced-pool",
                                                                             permit_id=permit.permit_id), timeout=10)
        assert permit.lost.wait(timeout=3) and permit.lost_reason == "force released"
        with pytest.raises(errors.LockLostError, match="semaphore 'forced-pool' lost"):
            permit.check()


def test_readers_share_and_a_writer_excludes(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as a, Client(coords[1].addr) as b:
        with a.lock("doc", shared=True, ttl=5), b.lock("doc", shared=True, ttl=5):
            with pytest.raises(errors.NotAcquired):
                a.lock("doc", shared=False, ttl=5).acquire()
        with b.lock("doc", shared=False, ttl=5) as writer:
            assert writer.fencing_token > 0
            with pytest.raises(errors.NotAcquired):
                a.lock("doc", shared=True, ttl=5).acquire()


def test_leadership_passes_in_order_and_observers_see_every_change(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as a, Client(coords[1].addr) as b:
        seen: list[tuple[bool, bytes]] = []
        changes = a.observe("primary")
        ready = threading.Event()

        def watch() -> None:
            for state in changes:
                seen.append((state.has_leader, state.value))
                ready.set()
                if state.value == b"b":
                    return

        threading.Thread(target=watch, daemon=True).start()
        assert ready.wait(10)
        assert a.leader("primary") is None
        first = a.campaign("primary", value=b"a", ttl=5).acquire()
        elected = threading.Event()
        second_box: list[int] = []

        def candidate() -> None:
            with b.campaign("primary", value=b"b", ttl=5) as second:
                second_box.append(second.term)
                elected.set()
                time.sleep(0.5)

        second_thread = threading.Thread(target=candidate, daemon=True)
        second_thread.start()
        time.sleep(0.3)
        leader = b.leader("primary")
        assert leader is not None and leader.value == b"a" and leader.term == first.term
        first.proclaim(b"a2")
        assert not elected.is_set()
        first.release()
        assert elected.wait(10), "the waiting candidate is elected when the leader resigns"
        assert second_box[0] > first.term
        deadline = time.monotonic() + 10
        while (True, b"b") not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        second_thread.join(timeout=10)
    assert seen == [(False, b""), (True, b"a"), (True, b"a2"), (False, b""), (True, b"b")], seen


def test_a_leader_is_told_when_an_admin_ends_its_leadership(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as coord, coord.campaign("deposed", ttl=3) as leadership:
        admin = election_pb2_grpc.ElectionServiceStub(grpc.insecure_channel(coords[1].addr))
        admin.ForceResign(election_pb2.ElectionServiceForceResignRequest(election="deposed"), timeout=10)
        assert leadership.lost.wait(timeout=3) and leadership.lost_reason == "force released"
        with pytest.raises(errors.LockLostError, match="leadership 'deposed' lost"):
            leadership.check()


def test_a_campaign_that_runs_out_of_time_is_not_elected(coords: list[Coord]) -> None:
    with Client(coords[0].addr) as coord, coord.campaign("busy", ttl=5):
        with pytest.raises(errors.NotElected):
            coord.campaign("busy", ttl=5, wait=0.2).acquire()


def test_leaderboard_wrappers_rank_members(coords: list[Coord]) -> None:
    boards = leaderboard_pb2_grpc.LeaderboardServiceStub(grpc.insecure_channel(coords[0].addr))
    boards.CreateBoard(leaderboard_pb2.CreateBoardRequest(board=leaderboard_pb2.Board(name="season")), timeout=10)
    with Client(coords[1].addr) as coord:
        board = coord.leaderboard("season")
        for member, score in [("ann", 30), ("bob", 10), ("cid", 20)]:
            board.submit(member, score)
        assert [e.member for e in board.top(3)] == ["ann", "cid", "bob"]
        assert board.ranks("bob", "nobody") == {"bob": board.ranks("bob")["bob"]}
        assert board.ranks("bob")["bob"].rank == 3
        assert [e.member for e in board.around("cid", before=1, after=1)] == ["ann", "cid", "bob"]
        assert board.count() == 3
        assert board.remove("bob") and not board.remove("bob")
        assert board.count() == 2


def test_the_rate_limit_decorator_refuses_calls_over_the_limit(coords: list[Coord]) -> None:
    per_minute = ratelimit_pb2.Limit(name="api", sliding_log=ratelimit_pb2.SlidingLog(limit=2, window_ms=60_000))
    calls: list[str] = []
    with Client(coords[0].addr) as coord:
        @coord.rate_limited(lambda user: f"user:{user}", limits=[per_minute])
        def handle(user: str) -> str:
            calls.append(user)
            return f"hello {user}"

        assert handle("ann") == "hello ann" and handle("ann") == "hello ann"
        with pytest.raises(errors.RateLimited) as denied:
            handle("ann")
        assert denied.value.retry_after is not None and 0 < denied.value.retry_after <= 60
        assert handle("bob") == "hello bob"
    assert calls == ["ann", "ann", "bob"]


def test_an_observer_follows_the_election_across_a_coord_kill_without_repeats(coords: list[Coord]) -> None:
    with Client([c.addr for c in coords]) as watcher, Client(coords[1].addr) as candidate:
        leadership = candidate.campaign("watched", value=b"x", ttl=5).acquire()
        states: list[tuple[bool, bytes]] = []
        done = threading.Event()

        def watch() -> None:
            for state in watcher.observe("watched"):
                states.append((state.has_leader, state.value))
                if state.value == b"y":
                    done.set()
                    return

        threading.Thread(target=watch, daemon=True).start()
        deadline = time.monotonic() + 10
        while not states and time.monotonic() < deadline:
            time.sleep(0.05)
        coords[0].kill()  # the watcher's instance
        time.sleep(1)
        leadership.proclaim(b"y")
        assert done.wait(10), states
        leadership.release()
    assert states == [(True, b"x"), (True, b"y")], "reconnected without repeating x or missing y"
