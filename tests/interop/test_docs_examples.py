"""The lock examples of docs/clients.md, run as written: each must print its
fencing token, still hold the lock after its 3 s TTL (the keepalive works),
and leave it free when it exits. The TLS examples (`interop:python-tls`,
`interop:node-tls`) run against a coord serving TLS with auth on: with an API
key they take the lock in the namespace they name, over a quota they wait out
`retry-after-ms`, and in a namespace the key is not granted they fail at once
with PERMISSION_DENIED. The election and semaphore examples lead (or hold
their permits and read hold) past their 3 s TTL, show in Leader / Describe
meanwhile, leave nothing behind (their own Revoke at exit is not a loss), and
exit 75 when deposed or revoked."""

import os
import re
import subprocess
import sys
import time

import pytest
from coord.v1 import election_pb2, election_pb2_grpc, lock_pb2, lock_pb2_grpc, semaphore_pb2, semaphore_pb2_grpc
from harness import HERE, NODE, ROOT, client_env, new_key
from pyclient import channel

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
    """Runs the lock example; returns the process and the fencing token it printed."""
    proc, match = start_example(coord, tmp_path, language, r"fencing token (\d+)\n")
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


def run_tls(secure, pki, tmp_path, language, token, namespace, hold=None):
    """Runs the TLS example with this key and namespace; returns (process,
    stdout, stderr). `hold`: (stub, lease id) of a holder of the example's
    lock in that namespace, released once the example has waited 1.5 s."""
    script = tmp_path / f"example-tls{SUFFIX[language]}"
    script.write_text(example(f"{language}-tls"))
    env = client_env({"COORD_ADDR": secure.addr, "COORD_PROTO_DIR": str(ROOT / "proto"),
                      "NODE_PATH": str(HERE / "node_modules"), "COORD_TLS_CA": str(pki.ca),
                      "COORD_TOKEN": token, "COORD_NAMESPACE": namespace})
    proc = subprocess.Popen([*RUNNERS[language], str(script)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if hold:
            stub, lease_id = hold
            time.sleep(1.5)
            assert proc.poll() is None, "the example did not wait for the lock held in its namespace"
            stub.Release(lock_pb2.ReleaseRequest(name=NAME, lease_id=lease_id),
                         metadata=[("coord-namespace", namespace)], timeout=10)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc, out, err


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_docs_tls_example_takes_the_lock_in_its_namespace_with_an_api_key(secure, pki, principals, tmp_path,
                                                                           language):
    namespace = "orders-docs"  # granted to orders by the pattern orders-*
    locks = lock_pb2_grpc.LockServiceStub(channel(secure.addr, {"COORD_TLS_CA": str(pki.ca),
                                                                "COORD_TOKEN": principals.key("orders")}))
    ns = [("coord-namespace", namespace)]
    held = locks.Acquire(lock_pb2.AcquireRequest(name=NAME, ttl_ms=30_000, owner="docs-test"), metadata=ns, timeout=10)
    assert held.status == lock_pb2.ACQUIRE_STATUS_ACQUIRED
    proc, out, err = run_tls(secure, pki, tmp_path, language, principals.key("orders"), namespace,
                             hold=(locks, held.lease_id))
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    match = re.fullmatch(r"fencing token (\d+)\n", out)
    assert match and int(match.group(1)) > held.fencing_token, out
    assert not locks.Describe(lock_pb2.DescribeRequest(name=NAME), metadata=ns, timeout=10).lock.held


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_docs_tls_example_waits_out_its_quota(secure, pki, principals, tmp_path, language):
    # 1 request per second: Release right after Acquire is RESOURCE_EXHAUSTED with retry-after-ms.
    proc, out, err = run_tls(secure, pki, tmp_path, language, principals.key("throttled"), "throttled")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert re.fullmatch(r"fencing token \d+\n", out), out
    assert re.search(r"^over quota, retrying in \d+ ms$", err, re.M), err


@pytest.mark.parametrize("language", sorted(RUNNERS))
@pytest.mark.parametrize("case", ["namespace not granted", "unknown key"])
def test_docs_tls_example_fails_at_once_without_a_grant_or_a_valid_key(secure, pki, principals, tmp_path,
                                                                       language, case):
    token, namespace, code = {
        "namespace not granted": (principals.key("orders"), "billing", "PERMISSION_DENIED"),
        "unknown key": (new_key("nobody")[0], "orders", "UNAUTHENTICATED"),
    }[case]
    started = time.monotonic()
    proc, out, err = run_tls(secure, pki, tmp_path, language, token, namespace)
    assert proc.returncode != 0 and out == "", f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert code in err and "over quota" not in err, err
    assert time.monotonic() - started < 10  # not retried


def start_example(coord, tmp_path, name, first_line):
    """Runs example `name`; returns the process and the match of its first line."""
    language = name.split("-")[0]
    script = tmp_path / f"example-{name}{SUFFIX[language]}"
    script.write_text(example(name))
    env = {**os.environ, "COORD_ADDR": coord.addr, "COORD_PROTO_DIR": str(ROOT / "proto"),
           "NODE_PATH": str(HERE / "node_modules")}
    proc = subprocess.Popen([*RUNNERS[language], str(script)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    match = re.fullmatch(first_line, line)
    if not match:
        proc.kill()
        raise AssertionError(f"unexpected output {line!r}; stderr: {proc.stderr.read()}")
    return proc, match


def leader_of(coord, election):
    return election_pb2_grpc.ElectionServiceStub(coord.channel).Leader(
        election_pb2.ElectionServiceLeaderRequest(election=election), timeout=10)


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_docs_election_example_leads_past_its_ttl_proclaims_then_resigns(coord, tmp_path, language):
    proc, match = start_example(coord, tmp_path, f"{language}-election", r"term (\d+)\n")
    term = int(match.group(1))
    try:
        time.sleep(4.0)  # past the 3 s TTL
        state = leader_of(coord, "scheduler").state
        assert state.has_leader and state.term == term and state.value == b"ready", state
        assert state.owner == {"python": "py-leader", "node": "node-leader"}[language], state
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    state = leader_of(coord, "scheduler").state
    assert not state.has_leader and state.term == term, state


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_docs_election_example_stops_leading_when_deposed(coord, tmp_path, language):
    proc, match = start_example(coord, tmp_path, f"{language}-election", r"term (\d+)\n")
    try:
        time.sleep(0.5)  # its KeepAlive stream is up
        elections = election_pb2_grpc.ElectionServiceStub(coord.channel)
        forced = elections.ForceResign(election_pb2.ElectionServiceForceResignRequest(election="scheduler"), timeout=10)
        assert forced.resigned and forced.term == int(match.group(1)), forced
        out, err = proc.communicate(timeout=10)  # 75 only from the leadership-lost path
    finally:
        proc.kill()
    assert proc.returncode == 75, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_docs_semaphore_example_holds_permits_and_a_read_hold_past_its_ttl(coord, tmp_path, language):
    proc, match = start_example(coord, tmp_path, f"{language}-semaphore", r"permit (\d+) read token (\d+)\n")
    sems = semaphore_pb2_grpc.SemaphoreServiceStub(coord.channel)
    locks = lock_pb2_grpc.LockServiceStub(coord.channel)
    exports = semaphore_pb2.SemaphoreServiceDescribeRequest(name="exports")
    config = lock_pb2.DescribeRequest(name="config", mode=lock_pb2.LOCK_MODE_SHARED)
    try:
        time.sleep(4.0)  # past the 3 s TTL
        held = sems.Describe(exports, timeout=10)
        assert (held.size, held.used) == (8, 2) and held.holders[0].permit_id == int(match.group(1)), held
        read = locks.Describe(config, timeout=10).lock
        assert read.held and read.mode == lock_pb2.LOCK_MODE_SHARED and read.fencing_token == int(match.group(2))
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert sems.Describe(exports, timeout=10).used == 0
    assert not locks.Describe(config, timeout=10).lock.held


@pytest.mark.parametrize("language", sorted(RUNNERS))
def test_docs_semaphore_example_stops_when_its_permits_are_taken(coord, tmp_path, language):
    proc, match = start_example(coord, tmp_path, f"{language}-semaphore", r"permit (\d+) read token (\d+)\n")
    try:
        time.sleep(0.5)
        sems = semaphore_pb2_grpc.SemaphoreServiceStub(coord.channel)
        forced = sems.ForceRelease(semaphore_pb2.SemaphoreServiceForceReleaseRequest(
            name="exports", permit_id=int(match.group(1))), timeout=10)
        assert forced.released and forced.permits == 2, forced
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 75, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert re.search(r"^lost (HOLD_KIND_SEMAPHORE|2) exports LOCK_LOST_REASON_FORCE_RELEASED$", out, re.M), out
    locks = lock_pb2_grpc.LockServiceStub(coord.channel)
    locks.ForceRelease(lock_pb2.ForceReleaseRequest(name="config", mode=lock_pb2.LOCK_MODE_SHARED,
                                                    fencing_token=int(match.group(2))), timeout=10)
