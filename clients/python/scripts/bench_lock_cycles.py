"""Lock acquire+release cycles through coord_client against raw generated
stubs, alternated raw/lib 3 times on one coord, one caller each: what the
library's layer (KeepAlive bookkeeping, guards, retries) costs per cycle.

    python scripts/bench_lock_cycles.py HOST:PORT [SECONDS]     (after scripts/generate.py)
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import grpc  # noqa: E402

from coord_client import Client  # noqa: E402
from coord_client._pb.coord.v1 import lock_pb2, lock_pb2_grpc  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def raw(addr: str, secs: float) -> tuple[float, float]:
    stub = lock_pb2_grpc.LockServiceStub(grpc.insecure_channel(addr))
    n, end, c0 = 0, time.monotonic() + secs, cpu()
    while time.monotonic() < end:
        r = stub.Acquire(lock_pb2.AcquireRequest(name="raw", ttl_ms=10_000, request_id=uuid.uuid4().hex), timeout=5)
        stub.Release(lock_pb2.ReleaseRequest(name="raw", lease_id=r.lease_id), timeout=5)
        n += 1
    return n / secs, (cpu() - c0) / n * 1e6


def lib(addr: str, secs: float) -> tuple[float, float]:
    with Client(addr) as coord:
        n, end, c0 = 0, time.monotonic() + secs, cpu()
        while time.monotonic() < end:
            with coord.lock("lib", ttl=10):
                pass
            n += 1
        return n / secs, (cpu() - c0) / n * 1e6


def main() -> None:
    addr, secs = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    runs: dict[str, list[tuple[float, float]]] = {"raw": [], "lib": []}
    ways: dict[str, Callable[[str, float], tuple[float, float]]] = {"raw": raw, "lib": lib}
    for _ in range(3):
        for name, way in ways.items():
            runs[name].append(way(addr, secs))
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()}
    for name, (rate, us) in med.items():
        print(f"{name}: {rate:.0f} cycles/s, client CPU {us:.0f} µs/cycle (medians of 3)")
    print(f"lib/raw: {med['lib'][0] / med['raw'][0]:.2f}x cycles/s, +{med['lib'][1] - med['raw'][1]:.0f} µs client CPU")


if __name__ == "__main__":
    main()
