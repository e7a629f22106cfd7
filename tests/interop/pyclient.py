"""Python side of the interop tests: small helpers over the grpcio stubs, and
a worker process (`python pyclient.py lock-counter …`) that mirrors
node_client.js's, so the two languages can contend for one lock.

The worker connects in plaintext unless COORD_TLS_CA is set (the variables
coord's own CLI reads): COORD_TLS_CA (PEM CA of coord's certificate: TLS),
COORD_TLS_CERT + COORD_TLS_KEY (client certificate: mTLS),
COORD_TLS_SERVER_NAME (the name to verify, default the address's host) and
COORD_TOKEN (sent as `authorization: Bearer`; needs TLS)."""

import argparse
import json
import os
import queue
import threading
import time

import grpc
from coord.v1 import lock_pb2, lock_pb2_grpc


def channel(addr, env=os.environ):
    """A channel to `addr`, with TLS and a token as `env` says (see above)."""
    if not env.get("COORD_TLS_CA"):
        assert not env.get("COORD_TOKEN"), "COORD_TOKEN needs TLS (COORD_TLS_CA): grpcio sends tokens only over TLS"
        return grpc.insecure_channel(addr)

    def read(variable):
        with open(env[variable], "rb") as f:
            return f.read()

    client = env.get("COORD_TLS_CERT") and env.get("COORD_TLS_KEY")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("COORD_TLS_CA"),
        private_key=read("COORD_TLS_KEY") if client else None,
        certificate_chain=read("COORD_TLS_CERT") if client else None,
    )
    if env.get("COORD_TOKEN"):
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(env["COORD_TOKEN"]))
    options = []
    if env.get("COORD_TLS_SERVER_NAME"):
        options.append(("grpc.ssl_target_name_override", env["COORD_TLS_SERVER_NAME"]))
    return grpc.secure_channel(addr, credentials, options=options)


class KeepAlive:
    """A KeepAlive stream renewing one lease every `interval` seconds; the
    events it receives (LeaseRenewed, LockLost, or the RpcError that ended it)
    are queued in `events`."""

    def __init__(self, stub, lease_id, interval):
        self._stop = threading.Event()
        self.events = queue.Queue()

        def requests():
            while True:
                yield lock_pb2.KeepAliveRequest(lease_id=lease_id)
                if self._stop.wait(interval):
                    return

        self._call = stub.KeepAlive(requests())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for event in self._call:
                self.events.put(event)
        except grpc.RpcError as e:
            self.events.put(e)
        self.events.put(None)

    def next_lost(self, timeout):
        """The next LockLost event, skipping renewals; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if event is None or isinstance(event, grpc.RpcError):
                raise AssertionError(f"keepalive stream ended before LockLost: {event}")
            if event.HasField("lock_lost"):
                return event.lock_lost
            if event.renewed.ttl_ms <= 0:
                raise AssertionError(f"lease {event.renewed.lease_id} expired")

    def ended(self, timeout):
        """The RpcError that ended the stream, skipping renewals; fails after
        `timeout` s or if the stream ends otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(event, grpc.RpcError):
                return event
            if event is None or not event.HasField("renewed"):
                raise AssertionError(f"keepalive stream gave {event} before an error")

    def renewals(self):
        """LeaseRenewed events received so far."""
        seen = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return seen
            if event is not None and not isinstance(event, grpc.RpcError) and event.HasField("renewed"):
                seen.append(event.renewed)

    def close(self):
        self._stop.set()
        self._reader.join(10)


def fenced_increment(path, token, hold_s):
    """The protected resource: a counter file that, like any fenced store,
    refuses a token lower than the highest it has seen. Read, wait, write —
    only mutual exclusion keeps the count exact."""
    with open(path) as f:
        state = json.load(f)
    if state["tokens"] and token <= state["tokens"][-1]:
        state["violations"].append(token)
    time.sleep(hold_s)
    state["count"] += 1
    state["tokens"].append(token)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def lock_counter(args):
    stub = lock_pb2_grpc.LockServiceStub(channel(args.addr))
    lease = stub.Grant(lock_pb2.GrantRequest(ttl_ms=args.ttl_ms, owner="python-worker"), timeout=10)
    keepalive = KeepAlive(stub, lease.lease_id, lease.ttl_ms / 3000)
    contended = 0
    for i in range(args.rounds):
        request = lock_pb2.AcquireRequest(name=args.name, lease_id=lease.lease_id)
        got = stub.Acquire(request, timeout=10)
        if got.status != lock_pb2.ACQUIRE_STATUS_ACQUIRED:
            contended += 1
            request.wait_ms = 30_000
            got = stub.Acquire(request, timeout=40)
        assert got.status == lock_pb2.ACQUIRE_STATUS_ACQUIRED, got
        # The first hold outlives the TTL: only the keepalive keeps it ours.
        hold = args.long_hold_ms / 1000 if i == 0 else 0.01
        fenced_increment(args.counter, got.fencing_token, hold)
        print(json.dumps({"token": got.fencing_token}), flush=True)
        released = stub.Release(lock_pb2.ReleaseRequest(name=args.name, lease_id=lease.lease_id), timeout=10)
        assert released.status == lock_pb2.RELEASE_STATUS_RELEASED, released
        time.sleep(0.005)
    renewed = len(keepalive.renewals())
    keepalive.close()
    stub.Revoke(lock_pb2.RevokeRequest(lease_id=lease.lease_id), timeout=10)
    print(json.dumps({"contended": contended, "renewals": renewed}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    counter = sub.add_parser("lock-counter")
    counter.add_argument("--addr", required=True)
    counter.add_argument("--name", required=True)
    counter.add_argument("--counter", required=True)
    counter.add_argument("--rounds", type=int, default=20)
    counter.add_argument("--ttl-ms", type=int, default=1000)
    counter.add_argument("--long-hold-ms", type=int, default=1500)
    args = parser.parse_args()
    lock_counter(args)


if __name__ == "__main__":
    main()
