"""Envoy's rate limit service as Envoy calls it: a Python client generated
from the vendored protos (third_party/envoy) calls
envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit on a coord
serving an envoyproxy/ratelimit YAML directory."""

import uuid

import grpc
import pytest

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from envoy.type.v3 import ratelimit_unit_pb2
from harness import Coord

EDGE = """domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: hour
      requests_per_unit: 3
  - key: path
    value: /login
    descriptors:
      - key: user
        rate_limit:
          name: login_per_user
          unit: hour
          requests_per_unit: 2
  - key: health
    rate_limit:
      unlimited: true
"""


@pytest.fixture(scope="module")
def rls(redis, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rls")
    (tmp / "config").mkdir()
    (tmp / "config" / "edge.yaml").write_text(EDGE)
    coord = Coord(redis.url, tmp / "coord.log", args=["--ratelimit-envoy-config-dir", str(tmp / "config")])
    yield rls_pb2_grpc.RateLimitServiceStub(coord.channel)
    coord.stop()


def descriptor(*entries, limit=None, hits=None):
    d = common_pb2.RateLimitDescriptor(
        entries=[common_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries])
    if limit is not None:
        d.limit.requests_per_unit, d.limit.unit = limit
    if hits is not None:
        d.hits_addend.value = hits
    return d


def ask(rls, *descriptors, hits=0, domain="edge"):
    return rls.ShouldRateLimit(
        rls_pb2.RateLimitRequest(domain=domain, descriptors=list(descriptors), hits_addend=hits), timeout=10)


Code = rls_pb2.RateLimitResponse.Code
Unit = rls_pb2.RateLimitResponse.RateLimit.Unit


def test_a_client_from_the_vendored_protos_is_limited_per_descriptor_value(rls):
    ip = f"10.0.0.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    codes, remaining = [], []
    for _ in range(4):
        r = ask(rls, descriptor(("remote_address", ip)))
        codes.append(r.overall_code)
        remaining.append(r.statuses[0].limit_remaining)
        assert r.statuses[0].current_limit.requests_per_unit == 3
        assert r.statuses[0].current_limit.unit == Unit.HOUR
        assert 0 < r.statuses[0].duration_until_reset.seconds <= 3600
    assert codes == [Code.OK, Code.OK, Code.OK, Code.OVER_LIMIT]
    assert remaining == [2, 1, 0, 0]
    # Another value has its own counter.
    assert ask(rls, descriptor(("remote_address", ip + "-other"))).overall_code == Code.OK


def test_nested_descriptors_named_rules_unlimited_and_unknown_keys(rls):
    user = uuid.uuid4().hex
    login = descriptor(("path", "/login"), ("user", user))
    health = descriptor(("health", "probe"))
    unknown = descriptor(("nothing", "here"))
    r = ask(rls, login, health, unknown)
    assert r.overall_code == Code.OK
    assert [s.code for s in r.statuses] == [Code.OK] * 3
    assert r.statuses[0].current_limit.name == "login_per_user"
    assert r.statuses[1].limit_remaining == 2**32 - 1 and not r.statuses[1].HasField("current_limit")
    assert not r.statuses[2].HasField("current_limit")
    ask(rls, login)
    r = ask(rls, login, health)
    assert r.overall_code == Code.OVER_LIMIT
    assert [s.code for s in r.statuses] == [Code.OVER_LIMIT, Code.OK]


def test_hits_addend_and_an_override_as_envoy_sends_them(rls):
    ip = uuid.uuid4().hex
    assert ask(rls, descriptor(("remote_address", ip)), hits=2).statuses[0].limit_remaining == 1
    # The descriptor's own hits_addend wins over the request's; 0 only looks.
    assert ask(rls, descriptor(("remote_address", ip), hits=0), hits=2).statuses[0].limit_remaining == 1
    r = ask(rls, descriptor(("remote_address", ip + "x"), limit=(10, ratelimit_unit_pb2.MINUTE)))
    assert (r.statuses[0].current_limit.requests_per_unit, r.statuses[0].current_limit.unit) == (10, Unit.MINUTE)
    assert r.statuses[0].limit_remaining == 9


def test_bad_requests_are_invalid_argument_naming_the_field(rls):
    with pytest.raises(grpc.RpcError) as e:
        ask(rls, descriptor(("a", "b")), domain="")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "domain" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        ask(rls)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "descriptors" in e.value.details()
