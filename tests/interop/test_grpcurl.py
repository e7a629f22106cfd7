"""grpcurl (a real gRPC tool, not ours) through server reflection: lists the
services and calls health plus one RPC of each service."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import unique

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
SERVICES = ["AdminService", "LeaderboardService", "LockService", "PubSubService", "RateLimitService"]


def grpcurl(coord, *args, data=None):
    cmd = [GRPCURL, "-plaintext", "-max-time", "10"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    out = subprocess.run([*cmd, coord.addr, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"grpcurl {args}: {out.stderr}"
    return out.stdout


def call(coord, method, data):
    return json.loads(grpcurl(coord, f"coord.v1.{method}", data=data))


def test_reflection_lists_every_service(coord):
    listed = set(grpcurl(coord, "list").split())
    assert {f"coord.v1.{s}" for s in SERVICES} <= listed
    assert "grpc.health.v1.Health" in listed
    described = grpcurl(coord, "describe", "coord.v1.LockService")
    assert "rpc KeepAlive ( stream .coord.v1.KeepAliveRequest ) returns ( stream .coord.v1.KeepAliveResponse );" \
        in described


@pytest.mark.parametrize("service", ["", *(f"coord.v1.{s}" for s in SERVICES)])
def test_health_reports_serving(coord, service):
    reply = json.loads(grpcurl(coord, "grpc.health.v1.Health/Check", data={"service": service}))
    assert reply == {"status": "SERVING"}


def test_lock_acquire(coord):
    reply = call(coord, "LockService/Acquire", {"name": unique("grpcurl"), "ttlMs": 5000, "owner": "grpcurl"})
    assert reply["status"] == "ACQUIRE_STATUS_ACQUIRED"
    assert int(reply["fencingToken"]) >= 1 and reply["leaseId"]


def test_ratelimit_check(coord):
    request = {"subject": unique("grpcurl"), "limits": [{"name": "one", "fixedWindow": {"limit": 1, "windowMs": 60000}}]}
    assert call(coord, "RateLimitService/Check", request)["allowed"] is True
    assert call(coord, "RateLimitService/Check", request).get("allowed", False) is False


def test_leaderboard_create_board(coord):
    board = {"name": unique("grpcurl"), "order": "SORT_ORDER_DESCENDING", "operator": "OPERATOR_BEST",
             "periods": [{"kind": "PERIOD_KIND_ALL_TIME"}]}
    reply = call(coord, "LeaderboardService/CreateBoard", {"board": board})
    assert reply["created"] is True and reply["board"]["name"] == board["name"]


def test_pubsub_publish(coord):
    reply = call(coord, "PubSubService/Publish", {"channel": "durable." + unique("grpcurl"), "payload": "aGk="})
    assert reply["mode"] == "CHANNEL_MODE_RECOVERABLE"
    assert reply["offset"] == "1" and reply["epoch"]


def test_admin_backend_status(coord):
    reply = call(coord, "AdminService/GetBackendStatus", {})
    assert reply["mode"] == "REDIS_MODE_SINGLE"
    assert reply["redisVersion"]
