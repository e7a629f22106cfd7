"""grpcurl (a real gRPC tool, not ours) through server reflection: lists the
services and calls health plus one RPC of each service; then the same over
TLS with an API key (`-cacert`, `-H 'authorization: Bearer …'`) and with a
client certificate (`-cert`, `-key`)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import Pki, unique

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
SERVICES = ["AdminService", "LeaderboardService", "LockService", "PubSubService", "RateLimitService"]


def grpcurl(coord, *args, data=None):
    cmd = [GRPCURL, "-plaintext", "-max-time", "10"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    out = subprocess.run([*cmd, coord.addr, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"grpcurl {args}: {out.stderr}"
    return out.stdout


def grpcurl_tls(coord, pki, *args, data=None, flags=()):
    """grpcurl over TLS trusting the CA; returns the CompletedProcess."""
    cmd = [GRPCURL, "-cacert", str(pki.ca), "-max-time", "10", *flags]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    return subprocess.run([*cmd, coord.addr, *args], capture_output=True, text=True, timeout=30)


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
    request = {"subject": unique("grpcurl"), "limits": [{"name": "one", "slidingLog": {"limit": 1, "windowMs": 60000}}]}
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


def bearer(principals, name):
    return ["-H", f"authorization: Bearer {principals.key(name)}"]


def test_tls_reflection_and_health_need_no_token(secure, pki):
    out = grpcurl_tls(secure, pki, "list")
    assert out.returncode == 0, out.stderr
    assert {f"coord.v1.{s}" for s in SERVICES} <= set(out.stdout.split())
    # Verified as coord.internal, the certificate's DNS name, though dialled by IP.
    out = grpcurl_tls(secure, pki, "grpc.health.v1.Health/Check", flags=["-authority", Pki.SERVER_NAME])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "SERVING"}


def test_tls_with_a_token_lists_services_and_acquires_a_lock(secure, pki, principals):
    out = grpcurl_tls(secure, pki, "list", flags=bearer(principals, "orders"))
    assert out.returncode == 0, out.stderr
    assert "coord.v1.LockService" in out.stdout.split()
    request = {"name": unique("grpcurl-tls"), "ttlMs": 5000, "owner": "grpcurl"}
    out = grpcurl_tls(secure, pki, "coord.v1.LockService/Acquire", data=request,
                      flags=[*bearer(principals, "orders"), "-H", "coord-namespace: orders-grpcurl"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "ACQUIRE_STATUS_ACQUIRED"


@pytest.mark.parametrize("case", ["no token", "other namespace"])
def test_tls_grpcurl_sees_unauthenticated_and_permission_denied(secure, pki, principals, case):
    flags, code = {
        "no token": ([], "Unauthenticated"),
        "other namespace": ([*bearer(principals, "orders"), "-H", "coord-namespace: billing"], "PermissionDenied"),
    }[case]
    out = grpcurl_tls(secure, pki, "coord.v1.LockService/Describe", data={"name": "x"}, flags=flags)
    assert out.returncode != 0
    assert f"Code: {code}" in out.stderr, out.stderr


def test_mtls_grpcurl_with_a_client_certificate(mtls, pki, mtls_client):
    cert, key = mtls_client
    request = {"name": unique("grpcurl-mtls"), "ttlMs": 5000, "owner": "grpcurl"}
    out = grpcurl_tls(mtls, pki, "coord.v1.LockService/Acquire", data=request,
                      flags=["-cert", str(cert), "-key", str(key)])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "ACQUIRE_STATUS_ACQUIRED"
    # No client certificate: the handshake fails (grpcurl retries it until -connect-timeout).
    refused = grpcurl_tls(mtls, pki, "list", flags=["-connect-timeout", "1"])
    assert refused.returncode != 0, refused.stdout
    assert "Failed to dial target host" in refused.stderr, refused.stderr
