"""A live coord for the client's tests: a redis-server and coord processes
started here (COORD_BIN, default target/debug/coord of the repository;
redis-server from PATH or REDIS_SERVER)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[3]
COORD_BIN = Path(os.environ.get("COORD_BIN", ROOT / "target" / "debug" / "coord"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


class Redis:
    def __init__(self, tmp: Path) -> None:
        binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
        assert binary, "redis-server not found (make test installs it)"
        self.port = free_port()
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
        wait_port(self.port)
        self.url = f"redis://127.0.0.1:{self.port}"

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.proc.kill()
        self.proc.wait()


class Coord:
    def __init__(self, redis: Redis, log: Path, port: int | None = None) -> None:
        assert COORD_BIN.is_file(), f"{COORD_BIN} missing: cargo build --bin coord"
        self.redis, self.log = redis, log
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [str(COORD_BIN), "serve", "--redis-url", self.redis.url, "--listen", self.addr,
                 "--metrics-enabled", "false", "--log-format", "json", "--pubsub-recoverable-prefixes", "durable."],
                env=env, stdout=subprocess.DEVNULL, stderr=log)
        wait_port(self.port)
        grpc.channel_ready_future(grpc.insecure_channel(self.addr)).result(timeout=15)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def coords(redis: Redis, tmp_path: Path) -> Iterator[list[Coord]]:
    """Two coord instances on one Redis."""
    started = [Coord(redis, tmp_path / f"coord-{i}.log") for i in range(2)]
    yield started
    for c in started:
        if c.proc.poll() is None:
            c.kill()
