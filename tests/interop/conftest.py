"""pytest fixtures of the interop suite; the harness itself is harness.py."""

import shutil

import pytest

from harness import STUBS, Coord, Redis


def pytest_unconfigure(config):
    shutil.rmtree(STUBS, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One redis-server and two coord instances: (coord_a, coord_b)."""
    tmp = tmp_path_factory.mktemp("interop")
    redis = Redis(tmp)
    coords = []
    try:
        coords = [Coord(redis.url, tmp / f"coord-{i}.log") for i in range(2)]
        yield coords
    finally:
        for c in coords:
            c.stop()
        redis.stop()


@pytest.fixture(scope="session")
def coord(cluster):
    return cluster[0]
