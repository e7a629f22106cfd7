"""The lock examples of docs/clients.md, run as written: each must print its
fencing token, still hold the lock after its 3 s TTL (the keepalive works),
and leave it free when it exits."""

import os
import re
import subprocess
import sys
import time

import pytest
from coord.v1 import lock_pb2, lock_pb2_grpc
from harness import HERE, NODE, ROOT

DOC = ROOT / "docs" / "clients.md"
RUNNERS = {"python": [sys.executable], "node": [NODE]}
SUFFIX = {"python": ".py", "node": ".js"}
OWNER = {"python": "py-example", "node": "node-example"}
NAME = "nightly-report"


def example(language):
    """The fenced code block that follows `<!-- interop:language -->`."""
    match = re.search(rf"<!-- interop:{language} -->\n```\w+\n(.*?)\n```", DOC.read_text(), re.S)
    assert match, f"no interop:{language} example in {DOC}"
    return match.group(1)


def start(coord, tmp_path, language):
    """Runs the example; returns the process and the fencing token it printed."""
    script = tmp_path / f"example{SUFFIX[language]}"
    script.write_text(example(language))
    env = {**os.environ, "COORD_ADDR": coord.addr, "COORD_PROTO_DIR": str(ROOT / "proto"),
           "NODE_PATH": str(HERE / "node_modules")}
    proc = subprocess.Popen([*RUNNERS[language], str(script)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    match = re.fullmatch(r"fencing token (\d+)\n", line)
    if not match:
        proc.kill()
        raise AssertionError(f"unexpected output {line!r}; stderr: {proc.stderr.read()}")
    return proc, int(match.group(1))


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_docs_lock_example_holds_the_lock_past_its_ttl_then_releases(coord, tmp_path, language):
    proc, token = start(coord, tmp_path, language)
    granted = time.monotonic()
    try:
        locks = lock_pb2_grpc.LockServiceStub(coord.channel)
        time.sleep(max(0.0, 4.0 - (time.monotonic() - granted)))  # past the 3 s TTL
        held = locks.Describe(lock_pb2.DescribeRequest(name=NAME), timeout=10).lock
        assert held.held and held.owner == OWNER[language] and held.fencing_token == token, held

        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert not locks.Describe(lock_pb2.DescribeRequest(name=NAME), timeout=10).lock.held


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_docs_lock_example_stops_when_its_lock_is_force_released(coord, tmp_path, language):
    proc, _ = start(coord, tmp_path, language)
    try:
        locks = lock_pb2_grpc.LockServiceStub(coord.channel)
        released = locks.ForceRelease(lock_pb2.ForceReleaseRequest(name=NAME), timeout=10)
        assert released.released and released.owner == OWNER[language]
        out, err = proc.communicate(timeout=10)  # 75 only from the lock_lost path
    finally:
        proc.kill()
    assert proc.returncode == 75, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
