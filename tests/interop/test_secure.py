"""coord over TLS with authentication on, from grpcio and @grpc/grpc-js:
API keys (made by `coord new-key`) as `authorization: Bearer` call
credentials, client certificates mapped to a principal (mTLS), and the codes
a client sees: UNAUTHENTICATED for a missing or unknown credential,
PERMISSION_DENIED for a namespace or permission not granted,
RESOURCE_EXHAUSTED with `retry-after-ms` over a quota, and open KeepAlive
streams ended when their key is revoked or their grant narrowed."""

import json
import time

import grpc
import pytest
from coord.v1 import admin_pb2, admin_pb2_grpc, lock_pb2, lock_pb2_grpc, ratelimit_pb2, ratelimit_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import Pki, finish, new_key, node, python, unique
from pyclient import KeepAlive, channel

StatusCode = grpc.StatusCode


def tls_env(pki, token=None, client=None, namespace=None, server_name=None):
    """The COORD_* variables pyclient.channel and node_client.js read."""
    env = {"COORD_TLS_CA": str(pki.ca)}
    if token:
        env["COORD_TOKEN"] = token
    if client:
        env["COORD_TLS_CERT"], env["COORD_TLS_KEY"] = map(str, client)
    if namespace:
        env["COORD_NAMESPACE"] = namespace
    if server_name:
        env["COORD_TLS_SERVER_NAME"] = server_name
    return env


def locks(coord, env):
    return lock_pb2_grpc.LockServiceStub(channel(coord.addr, env))


def code_of(call, request, namespace=None):
    """The status code of a unary call (OK if it succeeds)."""
    metadata = [("coord-namespace", namespace)] if namespace else None
    try:
        call(request, metadata=metadata, timeout=10)
    except grpc.RpcError as e:
        return e.code()
    return StatusCode.OK


def one_per_minute(name="one"):
    return json_format.ParseDict({"name": name, "slidingLog": {"limit": 1, "windowMs": 60_000}},
                                 ratelimit_pb2.Limit())


# Python (grpcio) with an API key.

def test_python_over_tls_with_a_key_holds_a_lock_past_its_ttl_then_releases_it(secure, pki, principals):
    stub = locks(secure, tls_env(pki, principals.key("orders")))
    name = unique("tls-lock")
    got = stub.Acquire(lock_pb2.AcquireRequest(name=name, ttl_ms=1000, owner="py-tls"), timeout=10)
    assert got.status == lock_pb2.ACQUIRE_STATUS_ACQUIRED, got
    keepalive = KeepAlive(stub, got.lease_id, 0.3)
    try:
        time.sleep(1.5)  # past the TTL: the KeepAlive stream, over TLS with the key, renews it
        held = stub.Describe(lock_pb2.DescribeRequest(name=name), timeout=10).lock
        assert held.held and held.owner == "py-tls" and held.fencing_token == got.fencing_token, held
        assert len(keepalive.renewals()) >= 3
    finally:
        keepalive.close()
    # The key's default namespace is orders: billing's lock of that name is another one.
    billing = locks(secure, tls_env(pki, principals.key("billing")))
    assert not billing.Describe(lock_pb2.DescribeRequest(name=name), timeout=10).lock.held
    released = stub.Release(lock_pb2.ReleaseRequest(name=name, lease_id=got.lease_id), timeout=10)
    assert released.status == lock_pb2.RELEASE_STATUS_RELEASED
    assert not stub.Describe(lock_pb2.DescribeRequest(name=name), timeout=10).lock.held


def test_python_over_tls_with_a_key_checks_a_rate_limit(secure, pki, principals):
    stub = ratelimit_pb2_grpc.RateLimitServiceStub(channel(secure.addr, tls_env(pki, principals.key("orders"))))
    request = ratelimit_pb2.CheckRequest(subject=unique("tls-subject"), limits=[one_per_minute()])
    assert stub.Check(request, timeout=10).allowed
    assert not stub.Check(request, timeout=10).allowed


@pytest.mark.parametrize("credential", ["none", "unknown key", "wrong secret", "not a key"])
def test_python_without_a_valid_credential_is_unauthenticated(secure, pki, principals, credential):
    key = principals.key("orders")
    token = {
        "none": None,
        "unknown key": new_key("nobody")[0],  # well formed, in no principals file
        "wrong secret": key[:-1] + ("A" if key[-1] != "A" else "B"),  # a known id, another secret
        "not a key": "hello",  # neither a coord_ key nor (no JWT keys configured) a JWT
    }[credential]
    stub = locks(secure, tls_env(pki, token))
    for call, request in [(stub.Describe, lock_pb2.DescribeRequest(name="x")),
                          (stub.Acquire, lock_pb2.AcquireRequest(name="x", ttl_ms=5000))]:
        assert code_of(call, request) == StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("principal, namespace, method, expected", [
    ("orders", None, "Describe", StatusCode.OK),  # its default namespace, orders
    ("orders", "orders-eu", "Describe", StatusCode.OK),  # granted by the pattern orders-*
    ("orders", "billing", "Describe", StatusCode.PERMISSION_DENIED),  # another principal's namespace
    ("billing", "orders", "Describe", StatusCode.PERMISSION_DENIED),  # and the other way round
    ("orders", "orders", "ForceRelease", StatusCode.PERMISSION_DENIED),  # needs lock.admin
    ("billing", "billing", "ForceRelease", StatusCode.OK),  # billing has `*` there
    ("orders", None, "GetBackendStatus", StatusCode.PERMISSION_DENIED),  # needs admin
])
def test_python_calls_are_authorized_per_namespace_and_permission(secure, pki, principals, principal, namespace,
                                                                  method, expected):
    ch = channel(secure.addr, tls_env(pki, principals.key(principal)))
    name = unique("tls-authz")
    call, request = {
        "Describe": (lock_pb2_grpc.LockServiceStub(ch).Describe, lock_pb2.DescribeRequest(name=name)),
        "ForceRelease": (lock_pb2_grpc.LockServiceStub(ch).ForceRelease, lock_pb2.ForceReleaseRequest(name=name)),
        "GetBackendStatus": (admin_pb2_grpc.AdminServiceStub(ch).GetBackendStatus,
                             admin_pb2.GetBackendStatusRequest()),
    }[method]
    assert code_of(call, request, namespace) == expected


def test_python_over_its_quota_gets_resource_exhausted_with_retry_after_ms(secure, pki, principals):
    stub = locks(secure, tls_env(pki, principals.key("throttled")))  # 1 request per second
    denial = None
    for _ in range(3):
        try:
            stub.Describe(lock_pb2.DescribeRequest(name="x"), timeout=10)
        except grpc.RpcError as e:
            denial = e
    assert denial is not None and denial.code() == StatusCode.RESOURCE_EXHAUSTED, denial
    retry_ms = int(dict(denial.trailing_metadata())["retry-after-ms"])
    assert 1 <= retry_ms <= 1000, retry_ms
    time.sleep(retry_ms / 1000)
    stub.Describe(lock_pb2.DescribeRequest(name="x"), timeout=10)  # admitted once it has waited


def test_health_needs_no_credentials_over_tls(secure):
    health = health_pb2_grpc.HealthStub(secure.channel)  # trusts the CA, sends no token
    reply = health.Check(health_pb2.HealthCheckRequest(service="coord.v1.LockService"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_and_untrusting_clients_cannot_connect(secure, tmp_path):
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(secure.addr) as plaintext:
        assert code_of(health_pb2_grpc.HealthStub(plaintext).Check, request) == StatusCode.UNAVAILABLE
    stranger = Pki(tmp_path / "other-ca", name="another CA")
    with grpc.secure_channel(secure.addr, stranger.credentials()) as untrusting:
        assert code_of(health_pb2_grpc.HealthStub(untrusting).Check, request) == StatusCode.UNAVAILABLE


def test_keepalive_stream_ends_unauthenticated_when_its_key_is_revoked_then_reopens_with_a_new_key(
        secure, pki, principals):
    old = locks(secure, tls_env(pki, principals.key("revoked")))
    name = unique("tls-revoked")
    got = old.Acquire(lock_pb2.AcquireRequest(name=name, ttl_ms=30_000, owner="py-revoked"), timeout=10)
    assert got.status == lock_pb2.ACQUIRE_STATUS_ACQUIRED
    keepalive = KeepAlive(old, got.lease_id, 0.2)
    try:
        assert keepalive.events.get(timeout=10).HasField("renewed")
        new_key_text = principals.rekey("revoked")  # the old key is gone from the file
        principals.write()
        secure.reload()
        ended = keepalive.ended(timeout=15)
        assert ended.code() == StatusCode.UNAUTHENTICATED, ended
    finally:
        keepalive.close()
    assert code_of(old.Describe, lock_pb2.DescribeRequest(name=name)) == StatusCode.UNAUTHENTICATED
    # The lease lives on in Redis: a new stream with the new key renews it.
    fresh = locks(secure, tls_env(pki, new_key_text))
    again = KeepAlive(fresh, got.lease_id, 0.2)
    try:
        renewed = again.events.get(timeout=10)
        assert renewed.HasField("renewed") and renewed.renewed.ttl_ms > 0, renewed
    finally:
        again.close()
    assert fresh.Release(lock_pb2.ReleaseRequest(name=name, lease_id=got.lease_id), timeout=10).status \
        == lock_pb2.RELEASE_STATUS_RELEASED


def test_keepalive_stream_ends_permission_denied_when_its_grant_is_narrowed(secure, pki, principals):
    stub = locks(secure, tls_env(pki, principals.key("narrowed")))
    name = unique("tls-narrowed")
    got = stub.Acquire(lock_pb2.AcquireRequest(name=name, ttl_ms=30_000, owner="py-narrowed"), timeout=10)
    assert got.status == lock_pb2.ACQUIRE_STATUS_ACQUIRED
    keepalive = KeepAlive(stub, got.lease_id, 0.2)
    spec = principals.specs["narrowed"]
    grants = spec["grants"]
    try:
        assert keepalive.events.get(timeout=10).HasField("renewed")
        spec["grants"] = [{"namespaces": ["narrowed"], "permissions": ["ratelimit.check"]}]  # no more `lock`
        principals.write()
        secure.reload()
        ended = keepalive.ended(timeout=15)
        assert ended.code() == StatusCode.PERMISSION_DENIED, ended
    finally:
        keepalive.close()
        spec["grants"] = grants
        principals.write()
        secure.reload()
    # Given back, the principal can renew and release again (the reload is asynchronous).
    deadline = time.monotonic() + 15
    while code_of(stub.Describe, lock_pb2.DescribeRequest(name=name)) != StatusCode.OK:
        assert time.monotonic() < deadline, "grant not restored"
        time.sleep(0.1)
    assert stub.Release(lock_pb2.ReleaseRequest(name=name, lease_id=got.lease_id), timeout=10).status \
        == lock_pb2.RELEASE_STATUS_RELEASED


# Node (@grpc/grpc-js) with an API key, and Python next to it.

def test_python_and_node_contend_for_one_lock_over_tls_with_keys(secure_cluster, pki, principals, tmp_path):
    rounds = 5
    name = unique("tls-counter")
    counter = tmp_path / "counter.json"
    counter.write_text(json.dumps({"count": 0, "tokens": [], "violations": []}))
    common = ["--name", name, "--counter", str(counter), "--rounds", str(rounds), "--ttl-ms", "1000",
              "--long-hold-ms", "1500"]
    env = tls_env(pki, principals.key("orders"))  # both in orders, the key's default namespace
    py = python(["lock-counter", "--addr", secure_cluster[0].addr, *common], env=env)
    js = node(["lock-counter", "--addr", secure_cluster[1].addr, *common], env=env)
    py_out, js_out = finish(py), finish(js)

    state = json.loads(counter.read_text())
    assert state["count"] == 2 * rounds, state
    assert state["violations"] == [], "a holder wrote after a later grant"
    assert all(a < b for a, b in zip(state["tokens"], state["tokens"][1:])), state["tokens"]
    tokens = [line["token"] for line in py_out + js_out if "token" in line]
    assert sorted(tokens) == state["tokens"]
    # Both renewed over TLS through a hold longer than the TTL.
    assert py_out[-1]["renewals"] >= 3 and js_out[-1]["renewals"] >= 3, (py_out[-1], js_out[-1])


def test_node_over_tls_with_a_key_checks_a_rate_limit(secure, pki, principals):
    spec = {"slidingLog": {"limit": 5, "windowMs": 60_000}}  # no window end to cross mid-test
    (result,) = finish(node(["ratelimit", "--addr", secure.addr, "--subject", unique("tls-node"),
                             "--limit", json.dumps(spec), "--n", "12", "--concurrency", "4"],
                            env=tls_env(pki, principals.key("orders"))))
    assert result == {"allowed": 5, "denied": 7}


def node_call(coord, env, service, method, request, times=1):
    return finish(node(["call", "--addr", coord.addr, "--service", service, "--method", method,
                        "--request", json.dumps(request), "--times", str(times)], env=env))


def test_node_over_tls_acquires_and_releases_a_lock_verifying_coord_internal(secure, pki, principals):
    # Dialled by IP, verified as coord.internal (the certificate's DNS name).
    env = tls_env(pki, principals.key("orders"), namespace="orders-eu", server_name=Pki.SERVER_NAME)
    name = unique("tls-node-lock")
    (got,) = node_call(secure, env, "LockService", "Acquire", {"name": name, "ttlMs": 10_000, "owner": "node-tls"})
    assert got["reply"]["status"] == "ACQUIRE_STATUS_ACQUIRED", got
    held = locks(secure, tls_env(pki, principals.key("orders"))).Describe(
        lock_pb2.DescribeRequest(name=name), metadata=[("coord-namespace", "orders-eu")], timeout=10).lock
    assert held.held and held.owner == "node-tls" and held.fencing_token == int(got["reply"]["fencingToken"])
    (released,) = node_call(secure, env, "LockService", "Release", {"name": name, "leaseId": got["reply"]["leaseId"]})
    assert released["reply"]["status"] == "RELEASE_STATUS_RELEASED", released


@pytest.mark.parametrize("case", ["no token", "unknown key", "other namespace", "missing permission"])
def test_node_gets_unauthenticated_and_permission_denied(secure, pki, principals, case):
    token, namespace, method, expected = {
        "no token": (None, None, "Describe", "UNAUTHENTICATED"),
        "unknown key": (new_key("nobody")[0], None, "Describe", "UNAUTHENTICATED"),
        "other namespace": (principals.key("orders"), "billing", "Describe", "PERMISSION_DENIED"),
        "missing permission": (principals.key("orders"), None, "ForceRelease", "PERMISSION_DENIED"),
    }[case]
    (out,) = node_call(secure, tls_env(pki, token, namespace=namespace), "LockService", method, {"name": "x"})
    assert out.get("status") == expected, out


def test_node_over_its_quota_gets_resource_exhausted_with_retry_after_ms(secure, pki, principals):
    out = node_call(secure, tls_env(pki, principals.key("throttled")), "LockService", "Describe", {"name": "x"},
                    times=3)
    denials = [o for o in out if o.get("status") == "RESOURCE_EXHAUSTED"]
    assert denials, out
    assert all(1 <= int(d["retryAfterMs"]) <= 1000 for d in denials), denials


# mTLS: a client certificate (CN=interop-mtls) is the credential.

def test_python_with_a_client_certificate_and_no_token_holds_a_lock_and_checks_a_limit(mtls):
    stub = lock_pb2_grpc.LockServiceStub(mtls.channel)  # presents CN=interop-mtls, sends no token
    name = unique("mtls-lock")
    got = stub.Acquire(lock_pb2.AcquireRequest(name=name, ttl_ms=5000, owner="py-mtls"), timeout=10)
    assert got.status == lock_pb2.ACQUIRE_STATUS_ACQUIRED, got
    assert stub.Describe(lock_pb2.DescribeRequest(name=name), timeout=10).lock.owner == "py-mtls"
    assert stub.Release(lock_pb2.ReleaseRequest(name=name, lease_id=got.lease_id), timeout=10).status \
        == lock_pb2.RELEASE_STATUS_RELEASED
    limits = ratelimit_pb2_grpc.RateLimitServiceStub(mtls.channel)
    request = ratelimit_pb2.CheckRequest(subject=unique("mtls-subject"), limits=[one_per_minute()])
    assert [limits.Check(request, timeout=10).allowed for _ in range(2)] == [True, False]
    # The principal's grants still apply: only namespace mtls.
    assert code_of(stub.Describe, lock_pb2.DescribeRequest(name=name), "orders") == StatusCode.PERMISSION_DENIED


def test_node_with_a_client_certificate_acquires_a_lock(mtls, pki, mtls_client):
    name = unique("mtls-node")
    env = tls_env(pki, client=mtls_client)
    (got,) = node_call(mtls, env, "LockService", "Acquire", {"name": name, "ttlMs": 10_000, "owner": "node-mtls"})
    assert got["reply"]["status"] == "ACQUIRE_STATUS_ACQUIRED", got
    held = lock_pb2_grpc.LockServiceStub(mtls.channel).Describe(lock_pb2.DescribeRequest(name=name), timeout=10).lock
    assert held.held and held.owner == "node-mtls"
    (released,) = node_call(mtls, env, "LockService", "Release", {"name": name, "leaseId": got["reply"]["leaseId"]})
    assert released["reply"]["status"] == "RELEASE_STATUS_RELEASED", released


def test_mtls_refuses_clients_without_a_certificate_of_its_ca(mtls, pki, tmp_path):
    request = lock_pb2.DescribeRequest(name="x")
    # A key is no substitute for the certificate the handshake requires.
    with grpc.secure_channel(mtls.addr, pki.credentials()) as no_certificate:
        assert code_of(lock_pb2_grpc.LockServiceStub(no_certificate).Describe, request) == StatusCode.UNAVAILABLE
    stranger = Pki(tmp_path / "other-ca", name="another CA")
    foreign = pki.credentials(client=stranger.client("interop-mtls"))  # right name, wrong CA
    with grpc.secure_channel(mtls.addr, foreign) as ch:
        assert code_of(lock_pb2_grpc.LockServiceStub(ch).Describe, request) == StatusCode.UNAVAILABLE


def test_a_client_certificate_no_principal_claims_is_unauthenticated(mtls, pki):
    with grpc.secure_channel(mtls.addr, pki.credentials(client=pki.client("stranger"))) as ch:
        stub = lock_pb2_grpc.LockServiceStub(ch)
        assert code_of(stub.Describe, lock_pb2.DescribeRequest(name="x")) == StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(ch)  # health needs no principal
        assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status \
            == health_pb2.HealthCheckResponse.SERVING
