"""pytest fixtures of the interop suite; the harness itself is harness.py."""

import shutil

import pytest

from harness import STUBS, Coord, Pki, Principals, Redis


def pytest_unconfigure(config):
    shutil.rmtree(STUBS, ignore_errors=True)


@pytest.fixture(scope="session")
def redis(tmp_path_factory):
    """The one redis-server every coord of the session uses."""
    server = Redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(redis, tmp_path_factory):
    """Two plaintext coord instances without auth: (coord_a, coord_b)."""
    tmp = tmp_path_factory.mktemp("interop")
    coords = []
    try:
        coords = [Coord(redis.url, tmp / f"coord-{i}.log") for i in range(2)]
        yield coords
    finally:
        for c in coords:
            c.stop()


@pytest.fixture(scope="session")
def coord(cluster):
    return cluster[0]


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A throwaway CA, coord's certificate and key, and client certificates."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def principals(tmp_path_factory):
    """The principals file of the TLS coords. Each principal has an API key
    from `coord new-key` (`principals.key(name)`) but mtls-client, which
    is known by its client certificate's CN."""
    p = Principals(tmp_path_factory.mktemp("auth") / "principals.toml")
    p.add("orders", [(["orders", "orders-*"], ["lock", "ratelimit.check", "pubsub.*", "board.*"])],
          default_namespace="orders")
    p.add("billing", [(["billing"], ["*"])])
    # Quota: one call per second, so a second call at once is RESOURCE_EXHAUSTED.
    p.add("throttled", [(["throttled"], ["lock", "ratelimit.check"])],
          quota={"requests_per_second": 1, "burst": 1})
    # For the tests that revoke keys and narrow grants under open streams.
    p.add("revoked", [(["revoked"], ["lock"])])
    p.add("narrowed", [(["narrowed"], ["lock", "ratelimit.check"])])
    p.add("mtls-client", [(["mtls"], ["lock", "ratelimit.check"])], certificates=["CN=interop-mtls"], key=False)
    p.write()
    return p


def tls_args(pki, principals):
    return ["--tls-cert-file", pki.server_cert, "--tls-key-file", pki.server_key,
            "--auth-enabled", "true", "--auth-principals-file", principals.path]


@pytest.fixture(scope="session")
def secure_cluster(redis, pki, principals, tmp_path_factory):
    """Two coord instances serving TLS with auth on (API keys): (a, b).
    Their `channel` trusts the CA and sends no token."""
    tmp = tmp_path_factory.mktemp("secure")
    coords = []
    try:
        coords = [Coord(redis.url, tmp / f"coord-tls-{i}.log", args=tls_args(pki, principals),
                        credentials=pki.credentials()) for i in range(2)]
        yield coords
    finally:
        for c in coords:
            c.stop()


@pytest.fixture(scope="session")
def secure(secure_cluster):
    return secure_cluster[0]


@pytest.fixture(scope="session")
def mtls_client(pki):
    """(certificate, key) of CN=interop-mtls, principal mtls-client."""
    return pki.client("interop-mtls")


@pytest.fixture(scope="session")
def mtls(redis, pki, principals, mtls_client, tmp_path_factory):
    """A coord serving TLS that requires a client certificate signed by the
    CA, with auth on. Its `channel` presents mtls_client's certificate."""
    tmp = tmp_path_factory.mktemp("mtls")
    args = [*tls_args(pki, principals), "--tls-client-ca-file", pki.ca, "--tls-client-auth", "require"]
    c = Coord(redis.url, tmp / "coord-mtls.log", args=args, credentials=pki.credentials(client=mtls_client))
    yield c
    c.stop()
