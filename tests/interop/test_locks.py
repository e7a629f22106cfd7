"""Locks across languages: a Python and a Node process contend for one lock
under KeepAlive streams; Node force-releases a Python holder."""

import json

from coord.v1 import lock_pb2, lock_pb2_grpc
from harness import finish, node, python, unique
from pyclient import KeepAlive

ROUNDS = 15


def test_python_and_node_contend_for_one_lock_count_exactly_with_increasing_tokens(cluster, tmp_path):
    name = unique("interop-counter")
    counter = tmp_path / "counter.json"
    counter.write_text(json.dumps({"count": 0, "tokens": [], "violations": []}))
    common = ["--name", name, "--counter", str(counter), "--rounds", str(ROUNDS), "--ttl-ms", "1000",
              "--long-hold-ms", "1500"]
    # Each on its own coord instance: the lock, its wake-ups and its fencing
    # counter live in Redis, not in either instance.
    py = python(["lock-counter", "--addr", cluster[0].addr, *common])
    js = node(["lock-counter", "--addr", cluster[1].addr, *common])
    py_out, js_out = finish(py), finish(js)

    state = json.loads(counter.read_text())
    assert state["count"] == 2 * ROUNDS, state
    assert state["violations"] == [], "a holder wrote after a later grant"
    # Fencing tokens strictly increase in the order the grants used the resource…
    assert all(a < b for a, b in zip(state["tokens"], state["tokens"][1:])), state["tokens"]
    # …and they are exactly the grants the two processes saw.
    py_tokens = [line["token"] for line in py_out if "token" in line]
    js_tokens = [line["token"] for line in js_out if "token" in line]
    assert sorted(py_tokens + js_tokens) == state["tokens"]
    assert len(py_tokens) == len(js_tokens) == ROUNDS
    # They really contended (each held 1.5 s while the other asked), the grants
    # interleave, and both streams renewed through holds longer than the TTL.
    py_summary, js_summary = py_out[-1], js_out[-1]
    assert py_summary["contended"] + js_summary["contended"] >= 1, (py_summary, js_summary)
    assert not (max(py_tokens) < min(js_tokens) or max(js_tokens) < min(py_tokens))
    assert py_summary["renewals"] >= 3 and js_summary["renewals"] >= 3, (py_summary, js_summary)


def test_node_force_release_sends_lock_lost_to_the_python_holder(cluster):
    locks = lock_pb2_grpc.LockServiceStub(cluster[0].channel)
    name = unique("interop-force")
    got = locks.Acquire(lock_pb2.AcquireRequest(name=name, ttl_ms=10_000, owner="python-holder"), timeout=10)
    assert got.status == lock_pb2.ACQUIRE_STATUS_ACQUIRED
    keepalive = KeepAlive(locks, got.lease_id, 1.0)
    try:
        # Released through the other instance: the event crosses Redis.
        out = finish(node(["force-release", "--addr", cluster[1].addr, "--name", name]))
        assert out == [{"released": True, "leaseId": got.lease_id, "owner": "python-holder"}]

        lost = keepalive.next_lost(timeout=10)
        assert lost.name == name
        assert lost.lease_id == got.lease_id
        assert lost.reason == lock_pb2.LOCK_LOST_REASON_FORCE_RELEASED
        assert lost.fencing_token == got.fencing_token
    finally:
        keepalive.close()
    assert not locks.Describe(lock_pb2.DescribeRequest(name=name), timeout=10).lock.held
