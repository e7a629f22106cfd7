"""Harness for the interop tests: real gRPC clients that no one here wrote
(grpcio for Python, @grpc/grpc-js for Node) against a live coord on a real
redis-server.

At start-up the Python stubs are generated from proto/ with grpcio-tools into
a temporary directory (nothing generated is checked in); Node loads the same
.proto files at run time with @grpc/proto-loader. One redis-server and two
coord instances on it serve the whole session; tests use names of their own.

Environment: COORD_BIN (default target/debug/coord, built by `make interop`),
REDIS_SERVER (default: redis-server on PATH), NODE (default: node).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
HERE = Path(__file__).resolve().parent

STUBS = Path(tempfile.mkdtemp(prefix="coord-stubs-"))
subprocess.run(
    [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}",
        f"--python_out={STUBS}", f"--pyi_out={STUBS}", f"--grpc_python_out={STUBS}",
        *sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto")),
    ],
    check=True,
    cwd=PROTO,
)
sys.path.insert(0, str(STUBS))
# Subprocesses (the Python worker, the docs example) import the same stubs.
os.environ["PYTHONPATH"] = os.pathsep.join([str(STUBS), str(HERE), os.environ.get("PYTHONPATH", "")])

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

COORD_BIN = Path(os.environ.get("COORD_BIN", ROOT / "target" / "debug" / "coord"))
NODE = os.environ.get("NODE", "node")
# Every process the tests start is given this long before it is killed.
PROC_TIMEOUT = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, within, what):
    deadline = time.monotonic() + within
    while True:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {within} s")
        time.sleep(0.05)


class Redis:
    def __init__(self, tmp):
        binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
        assert binary, "redis-server not found: run `make test`, which installs it"
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.port), 0.2).close() is None, 10,
                   "redis-server")
        self.url = f"redis://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Coord:
    """One `coord serve` process on the shared Redis."""

    def __init__(self, redis_url, log):
        assert COORD_BIN.is_file(), f"{COORD_BIN} missing: `make interop` builds it"
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
        with open(log, "w") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [str(COORD_BIN), "serve", "--redis-url", redis_url, "--listen", self.addr,
                 "--metrics-enabled", "false", "--log-format", "json",
                 "--pubsub-recoverable-prefixes", "durable."],
                env=env, stdout=subprocess.DEVNULL, stderr=log_file,
            )
        self.channel = grpc.insecure_channel(self.addr)
        health = health_pb2_grpc.HealthStub(self.channel)

        def serving():
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        wait_until(serving, 30, f"coord on {self.addr} (log: {log})")

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def node(script_args, **popen):
    """Starts tests/interop/node_client.js with these arguments."""
    return subprocess.Popen(
        [NODE, str(HERE / "node_client.js"), *script_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE, **popen,
    )


def python(script_args):
    """Starts tests/interop/pyclient.py with these arguments."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "pyclient.py"), *script_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE,
    )


def finish(proc, timeout=PROC_TIMEOUT):
    """Waits for a client process, asserts it succeeded, returns its JSON lines."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} timed out\nstdout:\n{out}\nstderr:\n{err}")
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def unique(prefix):
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"
