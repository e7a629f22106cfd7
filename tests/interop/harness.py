"""Harness for the interop tests: real gRPC clients that no one here wrote
(grpcio for Python, @grpc/grpc-js for Node) against a live coord on a real
redis-server.

At start-up the Python stubs are generated from proto/ (and Envoy's rate
limit service from third_party/envoy/) with grpcio-tools into a temporary
directory (nothing generated is checked in); Node loads the same
.proto files at run time with @grpc/proto-loader. One redis-server and two
coord instances on it serve the whole session; tests use names of their own.

The TLS tests (test_secure.py) add coords that serve TLS with
authentication on: certificates from a throwaway CA made with openssl
(`Pki`), principals whose API keys come from `coord new-key` (`Principals`).

Environment: COORD_BIN (default target/debug/coord, built by `make interop`),
REDIS_SERVER (default: redis-server on PATH), NODE (default: node), OPENSSL
(default: openssl on PATH).
"""

import json
import os
import re
import secrets
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
# Envoy's rate limit service, from the vendored protos, as an Envoy
# sidecar's client would be generated.
ENVOY_PROTO = ROOT / "third_party" / "envoy"
subprocess.run(
    [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{ENVOY_PROTO}",
        f"--python_out={STUBS}", f"--pyi_out={STUBS}", f"--grpc_python_out={STUBS}",
        *sorted(str(p.relative_to(ENVOY_PROTO)) for p in ENVOY_PROTO.rglob("*.proto")),
    ],
    check=True,
    cwd=ENVOY_PROTO,
)
sys.path.insert(0, str(STUBS))
# Subprocesses (the Python worker, the docs example) import the same stubs.
os.environ["PYTHONPATH"] = os.pathsep.join([str(STUBS), str(HERE), os.environ.get("PYTHONPATH", "")])

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

COORD_BIN = Path(os.environ.get("COORD_BIN", ROOT / "target" / "debug" / "coord"))
NODE = os.environ.get("NODE", "node")
OPENSSL = os.environ.get("OPENSSL") or shutil.which("openssl")
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
    """One `coord serve` process on the shared Redis. `args`: more flags
    (TLS, auth); `credentials`: the grpc.ChannelCredentials `channel` (used
    for the health check and by tests) connects with, plaintext if None."""

    def __init__(self, redis_url, log, args=(), credentials=None):
        assert COORD_BIN.is_file(), f"{COORD_BIN} missing: `make interop` builds it"
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_")}
        with open(log, "w") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [str(COORD_BIN), "serve", "--redis-url", redis_url, "--listen", self.addr,
                 "--metrics-enabled", "false", "--log-format", "json",
                 "--pubsub-recoverable-prefixes", "durable.", *args],
                env=env, stdout=subprocess.DEVNULL, stderr=log_file,
            )
        if credentials is None:
            self.channel = grpc.insecure_channel(self.addr)
        else:
            self.channel = grpc.secure_channel(self.addr, credentials)
        health = health_pb2_grpc.HealthStub(self.channel)

        def serving():
            assert self.proc.poll() is None, f"coord exited {self.proc.returncode} (log: {log})"
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        wait_until(serving, 30, f"coord on {self.addr} (log: {log})")

    def reload(self):
        """SIGHUP: coord re-reads its credential files now."""
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Pki:
    """A throwaway CA (made with openssl) and certificates it signs: one for
    coord (coord.internal, localhost, 127.0.0.1) and client certificates for
    mTLS. EC P-256 keys, PEM files in `directory`."""

    SERVER_NAME = "coord.internal"

    def __init__(self, directory, name="coord interop CA"):
        assert OPENSSL, "openssl not found: `make test` installs it (scripts/install-deps.sh deploy)"
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        self._ca_key = self.dir / "ca-key.pem"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", self._ca_key, "-out", self.ca, "-days", "2", "-subj", f"/CN={name}",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.server_cert, self.server_key = self.issue(
            "server", self.SERVER_NAME,
            [f"subjectAltName=DNS:{self.SERVER_NAME},DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth"])

    def client(self, common_name):
        """A client certificate and key whose subject is CN=common_name."""
        return self.issue(f"client-{common_name}", common_name, ["extendedKeyUsage=clientAuth"])

    def issue(self, stem, common_name, extensions):
        key, csr, cert, ext = (self.dir / f"{stem}{suffix}" for suffix in ("-key.pem", ".csr", ".pem", ".ext"))
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", f"/CN={common_name}")
        ext.write_text("\n".join(["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
                                   *extensions]) + "\n")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self._ca_key,
                      "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "2", "-extfile", ext, "-out", cert)
        return cert, key

    def credentials(self, client=None):
        """grpcio channel credentials trusting this CA; `client`: (cert, key) for mTLS."""
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        cert, key = client
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes(), private_key=key.read_bytes(),
                                            certificate_chain=cert.read_bytes())

    @staticmethod
    def _openssl(*args):
        out = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=PROC_TIMEOUT)
        assert out.returncode == 0, f"openssl {' '.join(map(str, args))}: {out.stderr}"


def new_key(principal):
    """`coord new-key`: the key, and the {id, sha256} entry that stores it."""
    out = subprocess.run([str(COORD_BIN), "new-key", principal], capture_output=True, text=True, check=True,
                         timeout=PROC_TIMEOUT).stdout
    key = re.search(r"^key: (coord_\w+_\S+)$", out, re.M)
    entry = re.search(r'keys = \[\{ id = "(\w+)", sha256 = "([0-9a-f]{64})" \}\]', out)
    assert key and entry, f"unexpected `coord new-key` output:\n{out}"
    return key.group(1), {"id": entry.group(1), "sha256": entry.group(2)}


class Principals:
    """A principals file (TOML) that tests can change; coord reloads it on
    SIGHUP (`Coord.reload`) and when it changes. `key(name)`: the API key."""

    def __init__(self, path):
        self.path = Path(path)
        self.specs = {}
        self.keys = {}

    def add(self, name, grants, default_namespace=None, certificates=(), quota=None, key=True):
        """grants: [(namespaces, permissions)]; quota: a dict of the TOML's quota fields."""
        spec = {"name": name}
        if default_namespace:
            spec["default_namespace"] = default_namespace
        if key:
            self.keys[name], entry = new_key(name)
            spec["keys"] = [entry]
        if certificates:
            spec["certificates"] = list(certificates)
        spec["grants"] = [{"namespaces": list(ns), "permissions": list(p)} for ns, p in grants]
        if quota:
            spec["quota"] = dict(quota)
        self.specs[name] = spec
        return self

    def key(self, name):
        return self.keys[name]

    def rekey(self, name):
        """Replaces the principal's key by a new one (write() to apply)."""
        self.keys[name], entry = new_key(name)
        self.specs[name]["keys"] = [entry]
        return self.keys[name]

    def write(self):
        def value(v):  # TOML values: JSON's strings, integers and arrays are TOML's too
            if isinstance(v, dict):
                return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
            if isinstance(v, list):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return json.dumps(v)

        text = "".join("[[principal]]\n" + "".join(f"{k} = {value(v)}\n" for k, v in spec.items()) + "\n"
                       for spec in self.specs.values())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)  # whole, so a reload never sees half a file


def client_env(env=None):
    """The environment of a client process: ours without COORD_* (which the
    clients read for TLS and credentials), plus `env`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("COORD_")}, **(env or {})}


def node(script_args, env=None, **popen):
    """Starts tests/interop/node_client.js with these arguments; `env`:
    COORD_TLS_CA, COORD_TOKEN… (see node_client.js)."""
    return subprocess.Popen(
        [NODE, str(HERE / "node_client.js"), *script_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE, env=client_env(env), **popen,
    )


def python(script_args, env=None):
    """Starts tests/interop/pyclient.py with these arguments; `env` as for node()."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "pyclient.py"), *script_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE, env=client_env(env),
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
