#!/usr/bin/env python3
"""Checks the Helm chart (helm/coord) and the Dockerfile without a container
engine or a cluster (neither exists on the build machines):

- helm lint --strict, schema validation and rendering with the default values
  and every scenario in helm/coord/ci/*-values.yaml (helm-python-sdk: Helm's
  own Go SDK, no helm binary); every bad values file in
  tests/deploy/bad-values/ must be rejected with the message it names;
- every rendered manifest validated with kubernetes-validate --strict against
  the chart's oldest supported and a current Kubernetes; the ServiceMonitor
  (a CRD, not in those schemas) against a small schema of the fields we use;
- the chart against the binary: each scenario's Deployment is replayed
  locally (its ConfigMap, Secrets and env turned into files and variables;
  Secrets become real sample material: a CA with server and client
  certificates made with openssl, a principals file with a `coord new-key`
  API key, an HS256 secret, RSA/EC public keys and a JWKS) and
  `coord serve --check-config --print-config` must accept exactly what the
  pod would run; ports (the plaintext health port with TLS), probe ports
  and service names, TLS/auth settings, the helm-test command and the grace
  periods must match what coord then reports; every key of coord's
  configuration is either settable through `config` or chart-owned and
  refused there;
- live: a coord (embedded Redis) per TLS/auth scenario, with that
  scenario's settings and sample files, answers every probe's health name
  on the port the probe names in plaintext without credentials, passes the
  helm-test command, refuses plaintext on a TLS port and client-less
  handshakes with clientAuth require, serves /metrics over TLS, admits the
  API key, the client certificate and JWTs signed for each configured key,
  and refuses unknown keys, expired JWTs and JWTs for another issuer or
  audience; the plaintext coord also passes the image's HEALTHCHECK;
- hadolint on the Dockerfile, the Dockerfile's ports/user/entrypoint against
  the chart and the binary, .dockerignore against what the build copies, and
  ldd of the binary (only glibc and libgcc_s, which distroless cc has).

Usage: check_chart.py [--coord target/debug/coord] [--build-context]
Prints one line per check and "N passed, N failed"; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import helm_python as helm
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "coord"
BAD_VALUES = ROOT / "tests" / "deploy" / "bad-values"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
RELEASE, NAMESPACE = "coord", "platform"
# The chart's floor (Chart.yaml kubeVersion) and a current release.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
REQUIRED_SCENARIOS = {"redlock", "cluster", "everything", "auth", "tls"}

# What a Secret referenced by the chart holds, for replaying the pod.
SAMPLE_PASSWORD = "sample-password-not-in-configmaps"
def sample_secret_env(values: dict) -> dict[str, str]:
    # With redis.tls.enabled coord uses the TLS files for Redlock nodes too.
    scheme = "rediss" if values.get("redis", {}).get("tls", {}).get("enabled") else "redis"
    return {
        "COORD_REDIS_PASSWORD": SAMPLE_PASSWORD,
        "COORD_LOCK_REDLOCK_NODES": ",".join(
            f"{scheme}://:{SAMPLE_PASSWORD}@redlock-{i}.data.svc:6379" for i in range(3)),
    }
SAMPLE_POLICIES = """
[policies.sample]
limits = [{ name = "per-second", fixed_window = { limit = 10, window_ms = 1000 } }]
"""
# Keys of coord's configuration the chart sets from other values; the rest
# of the binary's keys must be settable through `config`.
CHART_OWNED = {
    "server.listen", "metrics.enabled", "metrics.listen", "redis.url", "redis.cluster",
    "redis.username", "redis.password", "redis.tls_ca_file", "redis.tls_cert_file",
    "redis.tls_key_file", "redis.embedded_binary", "lock.redlock.nodes", "ratelimit.policy_file",
    "ratelimit.envoy.config_dir",
    # tls.*, ports.health, auth.*
    "server.tls.cert_file", "server.tls.key_file", "server.tls.client_ca_file", "server.tls.client_auth",
    "server.health_listen", "metrics.tls", "auth.enabled", "auth.principals_file",
    "auth.jwt.hs256_secret_file", "auth.jwt.public_key_files", "auth.jwt.jwks_file",
    "auth.jwt.issuer", "auth.jwt.audience",
}
# What distroless cc (Debian 12) provides.
ALLOWED_LIBS = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0",
                "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}

# The fields of monitoring.coreos.com/v1 ServiceMonitor this chart uses, as
# the Prometheus Operator's CRD types them.
SERVICE_MONITOR_SCHEMA = {
    "definitions": {
        "secretKeySelector": {"type": "object", "required": ["key"], "additionalProperties": False, "properties": {
            "name": {"type": "string"}, "key": {"type": "string"}, "optional": {"type": "boolean"}}},
        "secretOrConfigMap": {"type": "object", "additionalProperties": False, "maxProperties": 1, "properties": {
            "secret": {"$ref": "#/definitions/secretKeySelector"},
            "configMap": {"$ref": "#/definitions/secretKeySelector"}}},
    },
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"},
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                    "any": {"type": "boolean"}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["port"], "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "tlsConfig": {"type": "object", "additionalProperties": False, "properties": {
                            "ca": {"$ref": "#/definitions/secretOrConfigMap"},
                            "cert": {"$ref": "#/definitions/secretOrConfigMap"},
                            "keySecret": {"$ref": "#/definitions/secretKeySelector"},
                            "serverName": {"type": "string"},
                            "insecureSkipVerify": {"type": "boolean"},
                            "minVersion": {"enum": ["TLS10", "TLS11", "TLS12", "TLS13"]},
                            "maxVersion": {"enum": ["TLS10", "TLS11", "TLS12", "TLS13"]},
                        }},
                    }}},
            },
        },
    },
}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed.append(what)
            print(f"FAIL  {what}" + (f"\n      {detail}" if detail else ""))
        return ok

    def skip(self, what: str, why: str) -> None:
        print(f"skip  {what}: {why}")


R = Report()


# ---------------------------------------------------------------- helpers

def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with no COORD_* or RUST_LOG: only what a pod would set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORD_") and k != "RUST_LOG"}
    env.update(extra or {})
    return env


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "day": 86400, "days": 86400}
    total = 0.0
    for number, unit in re.findall(r"([0-9]+)\s*([a-z]+)", text):
        total += int(number) * units[unit]
    return total


def flatten(table: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in table.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            keys |= flatten(v, path + ".")
        else:
            keys.add(path)
    return keys


def schema_keys(schema: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in schema.get("properties", {}).items():
        path = f"{prefix}{k}"
        if v.get("type") == "object" and "properties" in v:
            sub = schema_keys(v, path + ".")
            keys |= sub if sub else set()
        else:
            keys.add(path)
    return keys


def scenarios() -> dict[str, dict]:
    found = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        found[path.name.removesuffix("-values.yaml")] = yaml.safe_load(path.read_text()) or {}
    return found


def documents(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def one(docs: list[tuple[str, dict]], kind: str, name_suffix: str | None = None) -> dict | None:
    found = [d for _, d in docs if d["kind"] == kind
             and (name_suffix is None or d["metadata"]["name"].endswith(name_suffix))]
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------- the chart

def check_versions() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    R.check(chart["appVersion"] == cargo, f"Chart.yaml appVersion {chart['appVersion']} = crate version {cargo}")


def lint_and_render(name: str, values: dict, out: Path) -> dict[str, str] | None:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
    R.check(not problems, f"[{name}] helm lint --strict (kube v{KUBE_VERSIONS[-1]})",
            "; ".join(p["error"].strip() for p in problems))
    chart = helm.Chart.load(CHART)
    try:
        chart.validate_schema(values)
        R.check(True, f"[{name}] values.schema.json accepts the values")
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        R.check(False, f"[{name}] schema and render", str(e))
        return None
    rendered = {k: v for k, v in rendered.items() if v.strip()}
    out.mkdir(parents=True, exist_ok=True)
    for path, text in rendered.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return rendered


def kube_validate(name: str, out: Path, docs: list[tuple[str, dict]]) -> None:
    files = [str(p) for p in sorted(out.rglob("*.yaml"))]
    tool = Path(sys.executable).with_name("kubernetes-validate")
    for version in KUBE_VERSIONS:
        result = run([str(tool), "--strict", "--quiet", "-k", version, *files], timeout=300)
        lines = [l for l in result.stdout.splitlines() if l.strip()]
        errors = [l for l in lines if not l.startswith("WARN")]
        # A CRD is not in Kubernetes' schemas; ServiceMonitor is checked below.
        warnings = [l for l in lines if l.startswith("WARN") and "servicemonitor.yaml" not in l]
        count = sum(1 for _, d in docs if d["kind"] != "ServiceMonitor")
        R.check(result.returncode == 0 and not errors and not warnings,
                f"[{name}] kubernetes-validate --strict -k {version}: {count} manifests",
                "\n      ".join(errors + warnings + result.stderr.splitlines()))
    for _, doc in docs:
        if doc["kind"] == "ServiceMonitor":
            try:
                jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
                R.check(True, f"[{name}] ServiceMonitor against the Prometheus Operator fields it uses "
                              "(a CRD: not in kubernetes-validate's schemas)")
            except jsonschema.ValidationError as e:
                R.check(False, f"[{name}] ServiceMonitor structure", e.message)


def check_bad_values() -> None:
    chart = helm.Chart.load(CHART)
    files = sorted(BAD_VALUES.glob("*.yaml"))
    R.check(len(files) >= 3, f"{len(files)} bad values files in {BAD_VALUES.relative_to(ROOT)}")
    for path in files:
        text = path.read_text()
        expect = re.search(r"^# expect: (.+)$", text, re.M)
        if not R.check(bool(expect), f"{path.name} names the error it expects (# expect: …)"):
            continue
        values = yaml.safe_load(text) or {}
        stage, message = "nothing", ""
        try:
            chart.validate_schema(values)
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmValuesError as e:
            stage, message = "schema", str(e)
        except helm.HelmError as e:
            stage, message = "template", str(e)
        want = expect.group(1).strip()
        R.check(stage != "nothing" and want in message,
                f"bad values {path.name} rejected by the {stage}: {want}",
                f"got {stage}: {message.strip()}")


def check_checksum_rolls_only_config() -> None:
    chart = helm.Chart.load(CHART)

    def checksum(values: dict) -> str:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        deployment = yaml.safe_load(rendered["coord/templates/deployment.yaml"])
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    policies = checksum({"rateLimit": {"policies": SAMPLE_POLICIES}})
    config = checksum({"config": {"redis": {"pool_size": 9}}})
    R.check(base == policies, "changing rate-limit policies keeps checksum/config (reloaded live, no roll)")
    R.check(base != config, "changing config changes checksum/config (pods roll)")


# ---------------------------------------------------- chart against binary

class Material:
    """Sample contents for the files the chart's Secrets hold, real enough for
    coord --check-config and a live coord: a CA, a server certificate it
    signs (localhost, 127.0.0.1 and the Service's names), a client
    certificate it signs, a principals file with an API key (`coord
    new-key`), an HS256 secret, RSA and EC public keys and a JWKS, with the
    private halves kept for signing tokens."""

    CLIENT_NAME = "coord-sample-client"

    def __init__(self, directory: Path, coord: Path) -> None:
        self.dir = directory

        def openssl(*args: str, stdin: bytes | None = None) -> bytes:
            result = subprocess.run(["openssl", *args], capture_output=True, input=stdin, timeout=60)
            if result.returncode != 0:
                raise RuntimeError(f"openssl {' '.join(args)}: {result.stderr.decode()}")
            return result.stdout

        self.openssl = openssl
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self.ca, self.ca_key = directory / "ca.crt", directory / "ca.key"
        openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=coord sample CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout", str(self.ca_key), "-out", str(self.ca))

        def leaf(name: str, subject: str, extensions: str) -> tuple[Path, Path]:
            key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
            ext = directory / f"{name}.ext"
            ext.write_text(extensions)
            openssl("req", "-new", *ec, "-subj", subject, "-keyout", str(key), "-out", str(csr))
            openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
                    "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt))
            return crt, key

        self.server_cert, self.server_key = leaf(
            "server", "/CN=coord", "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            f"subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:{RELEASE},DNS:{RELEASE}.{NAMESPACE}.svc\n")
        self.client_cert, self.client_key = leaf(
            "client", f"/CN={self.CLIENT_NAME}", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")

        out = run([str(coord), "new-key", "sample"], env=clean_env()).stdout
        self.api_key = re.search(r"^key: (\S+)$", out, re.M).group(1)
        keys = re.search(r"^keys = .*$", out, re.M).group(0)
        self.principals = (
            '[[principal]]\nname = "sample"\ndefault_namespace = "default"\n'
            f'{keys}\ncertificates = ["CN={self.CLIENT_NAME}"]\n'
            'grants = [{ namespaces = ["*"], permissions = ["*"] }]\n'
            "quota = { requests_per_second = 1000, streams = 100 }\n")
        self.hs256 = os.urandom(24).hex().encode()  # 48 bytes
        self.rsa_key, self.ec_key, self.jwks_key = (directory / f"{n}.key" for n in ("jwt-rsa", "jwt-ec", "jwks-rsa"))
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self.rsa_key))
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(self.ec_key))
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self.jwks_key))
        self.public_keys = [openssl("pkey", "-in", str(k), "-pubout") for k in (self.rsa_key, self.ec_key)]
        modulus = openssl("rsa", "-in", str(self.jwks_key), "-noout", "-modulus").decode().strip().split("=", 1)[1]
        self.jwks = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "sample-jwks",
                                          "n": b64url(bytes.fromhex(modulus)), "e": "AQAB"}]}).encode()

    def for_setting(self, setting: str, index: int = 0) -> bytes:
        """What the file a coord setting names holds."""
        return {
            "redis.tls_ca_file": lambda: self.ca.read_bytes(),
            "redis.tls_cert_file": lambda: self.client_cert.read_bytes(),
            "redis.tls_key_file": lambda: self.client_key.read_bytes(),
            "server.tls.cert_file": lambda: self.server_cert.read_bytes(),
            "server.tls.key_file": lambda: self.server_key.read_bytes(),
            "server.tls.client_ca_file": lambda: self.ca.read_bytes(),
            "auth.principals_file": lambda: self.principals.encode(),
            "auth.jwt.hs256_secret_file": lambda: self.hs256,
            "auth.jwt.public_key_files": lambda: self.public_keys[index % len(self.public_keys)],
            "auth.jwt.jwks_file": lambda: self.jwks,
        }[setting]()

    def jwt(self, alg: str, claims: dict, kid: str | None = None) -> str:
        header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
        if alg == "HS256":
            signature = hmac.new(self.hs256, signing_input, hashlib.sha256).digest()
        else:
            key = {"RS256": self.jwks_key if kid else self.rsa_key, "ES256": self.ec_key}[alg]
            signature = self.openssl("dgst", "-sha256", "-sign", str(key), stdin=signing_input)
            if alg == "ES256":  # DER ECDSA-Sig-Value to JWS' r || s
                signature = der_ecdsa_to_raw(signature)
        return f"{signing_input.decode()}.{b64url(signature)}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_ecdsa_to_raw(der: bytes, size: int = 32) -> bytes:
    """SEQUENCE { INTEGER r, INTEGER s } (short lengths: P-256) to r || s."""
    assert der[0] == 0x30
    i, out = 2, b""
    for _ in range(2):
        assert der[i] == 0x02
        length = der[i + 1]
        out += int.from_bytes(der[i + 2:i + 2 + length], "big").to_bytes(size, "big")
        i += 2 + length
    return out


# Replayed pods' file trees (their sample files serve the live checks).
POD_ROOTS: list[Path] = []

# The coord settings that name files the chart mounts from Secrets, and the
# value that names each Secret.
SECRET_FILES = {
    "redis.tls_ca_file": ("redis", "tls", "existingSecret"),
    "redis.tls_cert_file": ("redis", "tls", "existingSecret"),
    "redis.tls_key_file": ("redis", "tls", "existingSecret"),
    "server.tls.cert_file": ("tls", "existingSecret"),
    "server.tls.key_file": ("tls", "existingSecret"),
    "server.tls.client_ca_file": ("tls", "existingSecret"),
    "auth.principals_file": ("auth", "existingSecret"),
    "auth.jwt.hs256_secret_file": ("auth", "jwt", "existingSecret"),
    "auth.jwt.public_key_files": ("auth", "jwt", "existingSecret"),
    "auth.jwt.jwks_file": ("auth", "jwt", "existingSecret"),
}


def dig(table: dict, *path: str, default=None):
    for key in path:
        if not isinstance(table, dict) or key not in table:
            return default
        table = table[key]
    return table


def replay_pod(name: str, docs: list[tuple[str, dict]], coord: Path, material: Material,
               values: dict) -> tuple[dict, str, dict] | None:
    """Runs coord --check-config as the Deployment's container would run.
    Returns the effective configuration (paths as in the pod), coord's
    summary, and the effective configuration with the replayed files' paths
    on this machine."""
    deployment = one(docs, "Deployment")
    configmap = one(docs, "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "coord")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    root = Path(tempfile.mkdtemp(prefix=f"pod-{name}-"))
    POD_ROOTS.append(root)  # kept for the live checks; removed at the end
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}

    def rewrite(text: str) -> str:
        # A mount path, or a file in it (ratelimit.envoy.config_dir names
        # the directory itself).
        for mount_path in sorted(mounts, key=len, reverse=True):
            text = re.sub(re.escape(mount_path) + r'(?=[/"])', f"{root}{mount_path}", text)
        return text

    R.check(not any("subPath" in m for m in mounts.values()),
            f"[{name}] no subPath mounts (the kubelet updates whole-directory mounts in place)")
    for mount_path, mount in mounts.items():
        target = root / mount_path.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume and volume["configMap"]["name"] == configmap["metadata"]["name"]:
            for key, text in configmap["data"].items():
                (target / key).write_text(rewrite(text))
    config_arg = next((rewrite(a) for a in container["args"] if a.endswith(".toml")), None)
    if not R.check(config_arg is not None and Path(config_arg).exists(),
                   f"[{name}] the container's --config file comes from the chart's ConfigMap"):
        return None
    # Paths in the file are rewritten already. What the chart's ConfigMap
    # does not hold: an existing ConfigMap's policies, and the files of the
    # Secrets (TLS material, principals, JWT keys), written as real samples.
    file_config = tomllib.loads(Path(config_arg).read_text())
    policy_file = file_config.get("ratelimit", {}).get("policy_file")
    if policy_file and not Path(policy_file).exists():
        R.check(policy_file.startswith(str(root)), f"[{name}] policy file {policy_file} is on a mounted volume")
        Path(policy_file).write_text(SAMPLE_POLICIES)
    for setting, secret_value in SECRET_FILES.items():
        paths = dig(file_config, *setting.split("."))
        if not paths:
            continue
        secret = dig(values, *secret_value, default="")
        for i, path in enumerate(paths if isinstance(paths, list) else [paths]):
            mount_path = next((m for m in sorted(mounts, key=len, reverse=True)
                               if path.startswith(f"{root}{m}/")), None)
            volume = volumes[mounts[mount_path]["name"]] if mount_path else {}
            in_pod = path.replace(str(root), "")
            R.check(bool(secret) and volume.get("secret", {}).get("secretName") == secret
                    and "/" not in path.removeprefix(f"{root}{mount_path}/"),
                    f"[{name}] {setting} {in_pod} is a key of Secret {secret or '?'} mounted as a directory "
                    "(so a changed Secret reaches coord)", f"volume {volume}")
            Path(path).write_bytes(material.for_setting(setting, i))

    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = rewrite(var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):
            samples = sample_secret_env(values)
            if not R.check(var["name"] in samples, f"[{name}] env {var['name']} from a Secret is known"):
                return None
            env[var["name"]] = samples[var["name"]]
    args = [rewrite(a) for a in container["args"]]
    result = run([str(coord), *args, "--check-config", "--print-config"], env=clean_env(env))
    if not R.check(result.returncode == 0, f"[{name}] coord {' '.join(container['args'])} --check-config "
                   "accepts the pod's config file, env and mounts", result.stderr.strip()):
        return None
    summary, _, effective = result.stdout.partition("\n")
    print(f"      {summary.replace(str(root), '')}")
    configmaps = "".join(json.dumps(d.get("data", {})) for _, d in docs if d["kind"] == "ConfigMap")
    R.check(SAMPLE_PASSWORD not in configmaps and "password" not in configmaps,
            f"[{name}] no Redis password in any ConfigMap")
    if values.get("redis", {}).get("auth", {}).get("existingSecret"):
        redacted = tomllib.loads(effective).get("redis", {}).get("password")
        R.check(redacted == "<redacted>", f"[{name}] the password reaches coord from the Secret (env)")
    # Back to the paths inside the pod.
    return (tomllib.loads(effective.replace(str(root), "")), summary.replace(str(root), ""),
            tomllib.loads(effective))


def check_against_binary(name: str, values: dict, docs: list[tuple[str, dict]], coord: Path,
                         material: Material, live: dict[str, dict], effectives: list[dict]) -> None:
    replayed = replay_pod(name, docs, coord, material, values)
    if replayed is None:
        return
    effective, summary, effective_here = replayed
    effectives.append(effective)
    tls_on = bool(dig(effective, "server", "tls", "cert_file"))
    auth_on = bool(dig(effective, "auth", "enabled"))
    # Scenarios without TLS or auth share one plaintext live coord; the
    # others get one each, with their own TLS and auth settings and files.
    profile = live.setdefault(name if tls_on or auth_on else "plain",
                              {"config": effective_here, "probes": set(), "tests": set()})
    health_names = set(re.search(r'health services (.*)$', summary).group(1).replace('""', "''").split())
    health_names = {"" if n == "''" else n for n in health_names}

    deployment = one(docs, "Deployment")
    service = next(d for _, d in docs if d["kind"] == "Service" and d["metadata"]["name"] == deployment["metadata"]["name"])
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "coord")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    grpc_port = int(effective["server"]["listen"].rsplit(":", 1)[1])
    R.check(ports.get("grpc") == grpc_port, f"[{name}] containerPort grpc {ports.get('grpc')} = coord server.listen {grpc_port}")
    if effective["metrics"]["enabled"]:
        metrics_port = int(effective["metrics"]["listen"].rsplit(":", 1)[1])
        R.check(ports.get("metrics") == metrics_port,
                f"[{name}] containerPort metrics {ports.get('metrics')} = coord metrics.listen {metrics_port}")
    health_listen = effective["server"].get("health_listen")
    health_port = int(health_listen.rsplit(":", 1)[1]) if health_listen else None
    if tls_on:
        R.check(health_port is not None and ports.get("health") == health_port,
                f"[{name}] TLS on: containerPort health {ports.get('health')} = coord's plaintext server.health_listen "
                f"{health_listen}")
        client_auth = values.get("tls", {}).get("clientAuth", "none")
        R.check((" (TLS, client certificates)" in summary) == (client_auth != "none") and " (TLS" in summary,
                f"[{name}] coord loads the mounted certificate and key (tls.clientAuth {client_auth})")
        R.check(effective["server"]["tls"].get("client_auth") == client_auth,
                f"[{name}] coord's server.tls.client_auth = tls.clientAuth {client_auth}")
    else:
        R.check(health_port is None and "health" not in ports,
                f"[{name}] TLS off: no plaintext health port (probes use the gRPC port)")
    R.check(effective["metrics"]["tls"] == bool(values.get("tls", {}).get("metrics")),
            f"[{name}] coord's metrics.tls = tls.metrics")
    if auth_on:
        auth_values = values.get("auth", {})
        want = f"auth on ({1 if auth_values.get('existingSecret') else 0} principals"
        want += ", JWT)" if auth_values.get("jwt", {}).get("existingSecret") else ")"
        R.check(want in summary, f"[{name}] coord loads the mounted principals and JWT keys: {want}", summary)
        R.check(effective["auth"]["open_health"] or tls_on,
                f"[{name}] the probes need no credentials (auth.open_health, or TLS and the plaintext health port)")
        for claim in ("issuer", "audience"):
            want_claim = auth_values.get("jwt", {}).get(claim) or None
            R.check(effective["auth"]["jwt"].get(claim) == want_claim,
                    f"[{name}] coord's auth.jwt.{claim} = auth.jwt.{claim} {want_claim!r}")
    else:
        R.check("auth off" in summary, f"[{name}] auth off")
    probe_port = health_port if tls_on else grpc_port
    for probe_kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(probe_kind, {}).get("grpc")
        if not R.check(probe is not None, f"[{name}] {probe_kind} is a native gRPC probe"):
            continue
        R.check(probe["port"] == probe_port,
                f"[{name}] {probe_kind} port {probe['port']} = coord's "
                + ("plaintext health port (the kubelet's gRPC probes cannot speak TLS)" if tls_on else "gRPC port"))
        service_name = probe.get("service", "")
        R.check(service_name in health_names, f"[{name}] {probe_kind} service {service_name!r} is a health name coord registers",
                f"coord registers {sorted(health_names)}")
        # The live check asks the port the probe names, in plaintext.
        kind = next((n for n, port in ports.items() if port == probe["port"]), None)
        if kind in ("grpc", "health"):
            profile["probes"].add((kind, service_name))
    R.check(container["readinessProbe"]["grpc"].get("service", "") == "",
            f"[{name}] readiness follows the overall status (Redis writable)")
    R.check(container["livenessProbe"]["grpc"].get("service") == "liveness",
            f"[{name}] liveness does not depend on Redis")

    for port in service["spec"]["ports"]:
        R.check(port["targetPort"] in ports, f"[{name}] Service port {port['name']} targets container port {port['targetPort']}")
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    R.check(grpc.get("appProtocol") == "grpc", f"[{name}] Service port grpc has appProtocol grpc")
    R.check(("health" in {p["targetPort"] for p in service["spec"]["ports"]}) == tls_on,
            f"[{name}] Service has a plaintext `health` port exactly when TLS is on")
    monitor = one(docs, "ServiceMonitor")
    if monitor:
        names = {p["name"] for p in service["spec"]["ports"]}
        R.check(all(e["port"] in names for e in monitor["spec"]["endpoints"]),
                f"[{name}] ServiceMonitor scrapes a named Service port")
        schemes = {e.get("scheme", "http") for e in monitor["spec"]["endpoints"]}
        R.check(schemes == {"https" if effective["metrics"]["tls"] else "http"},
                f"[{name}] ServiceMonitor scrapes {schemes} (coord's metrics.tls {effective['metrics']['tls']})")
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [d["metadata"]["name"] for _, d in docs if d["kind"] == "Service"
                    and selector.items() <= d["metadata"].get("labels", {}).items()]
        R.check(matching == [service["metadata"]["name"]], f"[{name}] ServiceMonitor selects only coord's Service", str(matching))

    grace = duration_seconds(effective["server"]["shutdown_grace"])
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    termination = pod["terminationGracePeriodSeconds"]
    R.check(termination > grace + pre_stop,
            f"[{name}] terminationGracePeriodSeconds {termination} > preStop {pre_stop}s + coord shutdown_grace {grace:g}s")

    security = container["securityContext"]
    pod_security = pod.get("securityContext", {})
    R.check(security.get("readOnlyRootFilesystem") is True and security.get("allowPrivilegeEscalation") is False
            and security.get("capabilities", {}).get("drop") == ["ALL"]
            and (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")) is True,
            f"[{name}] non-root, read-only root, no privilege escalation, all capabilities dropped")
    R.check(bool(pod.get("topologySpreadConstraints")), f"[{name}] topology spread constraints")
    R.check("checksum/config" in deployment["spec"]["template"]["metadata"].get("annotations", {}),
            f"[{name}] checksum/config annotation")

    policy_file = effective.get("ratelimit", {}).get("policy_file", "")
    mount = next((m for m in container["volumeMounts"] if policy_file.startswith(m["mountPath"] + "/")), None)
    volume = next((v for v in pod["volumes"] if mount and v["name"] == mount["name"]), {})
    R.check(mount is not None and "configMap" in volume and "subPath" not in mount,
            f"[{name}] rate-limit policy file {policy_file} is on a ConfigMap directory mount (reloads on change)")
    R.check(effective["ratelimit"]["reload_interval"] != "", f"[{name}] policy reload interval {effective['ratelimit']['reload_interval']}")

    redis_values = values.get("redis", {})
    if redis_values.get("mode") == "cluster":
        R.check(" redis cluster " in summary, f"[{name}] coord runs on the Redis Cluster")
    if redis_values.get("redlock", {}).get("enabled"):
        R.check("locks on Redlock (3 nodes)" in summary, f"[{name}] coord runs locks on Redlock")
    if redis_values.get("tls", {}).get("enabled"):
        R.check("(TLS files ok)" in summary, f"[{name}] coord reads and parses the mounted TLS files")

    policy = one(docs, "NetworkPolicy", deployment["metadata"]["name"])
    if policy:
        # The kubelet probes from the node, which no peer selector matches.
        open_ports = {p["port"] for rule in policy["spec"].get("ingress", []) if not rule.get("from")
                      for p in rule.get("ports", [])}
        probe_port_name = "health" if tls_on else "grpc"
        if tls_on:
            R.check(probe_port_name in open_ports,
                    f"[{name}] NetworkPolicy admits the probed port {probe_port_name!r} from any source (the kubelet)",
                    json.dumps(policy["spec"].get("ingress")))
        allowed = {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
        R.check(set(ports) <= allowed, f"[{name}] NetworkPolicy lists every container port ({', '.join(sorted(ports))})",
                f"allowed {sorted(allowed)}")

    test_pod = next((d for _, d in docs if d["kind"] == "Pod"
                     and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"), None)
    if R.check(test_pod is not None, f"[{name}] helm test pod"):
        args = test_pod["spec"]["containers"][0]["args"]
        endpoint = args[args.index("--endpoint") + 1]
        target = "health" if tls_on else "grpc"
        port = next(p for p in service["spec"]["ports"] if p["targetPort"] == target)
        want = f"http://{service['metadata']['name']}:{port['port']}"
        R.check(args[0] == "health" and endpoint == want,
                f"[{name}] helm test runs coord health against {want} (the Service's {target} port)", str(args))
        # The live check runs it against the container port the Service port targets.
        used = next((p["targetPort"] for p in service["spec"]["ports"]
                     if endpoint.endswith(f":{p['port']}")), None)
        if used in ("grpc", "health"):
            profile["tests"].add((used, tuple(args)))


def check_schema_covers_binary(coord: Path, everything: dict | None, effectives: list[dict]) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    in_schema = schema_keys(schema["properties"]["config"])
    result = run([str(coord), "serve", "--print-config"], env=clean_env())
    # Optional keys (files, issuer, …) are printed only when set: take them
    # from the scenarios' effective configurations too.
    binary_keys = flatten(tomllib.loads(result.stdout))
    for effective in effectives:
        binary_keys |= flatten(effective)
    missing = sorted(k for k in binary_keys - in_schema - CHART_OWNED)
    R.check(not missing, f"values.schema.json `config` covers every key coord prints ({len(binary_keys)})",
            f"not settable through the chart: {missing}")
    stale = sorted(CHART_OWNED - binary_keys)
    R.check(not stale, f"every chart-owned key ({len(CHART_OWNED)}) is a key of coord's configuration", f"unknown: {stale}")
    chart = helm.Chart.load(CHART)
    accepted = []
    for key in sorted(CHART_OWNED):
        config: dict = {}
        table = config
        *parents, leaf = key.split(".")
        for part in parents:
            table = table.setdefault(part, {})
        table[leaf] = "x"
        try:
            chart.validate_schema({"config": config})
            accepted.append(key)
        except helm.HelmValuesError:
            pass
    R.check(not accepted, f"every chart-owned key is refused in `config` ({len(CHART_OWNED)})",
            f"accepted: {accepted}")
    if everything is not None:
        uncovered = sorted(in_schema - flatten(everything.get("config", {})))
        R.check(not uncovered, f"ci/everything-values.yaml sets all {len(in_schema)} `config` keys of the schema "
                "(so --check-config proves coord accepts each)", f"not set: {uncovered}")


# -------------------------------------------------------------- Dockerfile

def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a
    parent directory matches everything below it."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.lstrip("!").strip().strip("/")
        if p.startswith("./"):
            p = p[2:]
        if any(fnmatch.fnmatchcase(prefix, p) and prefix.count("/") == p.count("/") for prefix in prefixes):
            excluded = not negate
    return excluded


def check_dockerfile(coord: Path, chart_ports: dict) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = run([str(hadolint), str(DOCKERFILE)])
    R.check(result.returncode == 0, "hadolint Dockerfile: no findings", result.stdout + result.stderr)
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore=" in line:
            R.check(bool(re.search(r"hadolint ignore=\S+\s+\S", line)), f"hadolint ignore is justified inline: {line.strip()}")

    ins = dockerfile_instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    R.check(len(froms) >= 2, f"multi-stage build ({len(froms)} stages)")
    R.check(bool(re.match(r"(gcr\.io/distroless/cc-debian\d+|debian:\S*slim)", froms[-1])),
            f"runtime base is minimal glibc: {froms[-1]}")
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    R.check("cargo build --release --locked" in runs, "build stage runs cargo build --release --locked")
    R.check(all(f"--mount=type=cache,target={t}" in runs for t in ("/usr/local/cargo/registry", "/src/target")),
            "cache mounts for the cargo registry and target/")
    user = [rest for word, rest in ins if word == "USER"][-1]
    R.check(bool(re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user)), f"numeric non-root USER {user}")
    exposed = {int(p.split("/")[0]) for word, rest in ins if word == "EXPOSE" for p in rest.split()}
    defaults = tomllib.loads(run([str(coord), "serve", "--print-config"], env=clean_env()).stdout)
    binary_ports = {int(defaults["server"]["listen"].rsplit(":", 1)[1]), int(defaults["metrics"]["listen"].rsplit(":", 1)[1])}
    R.check(exposed == binary_ports == set(chart_ports.values()),
            f"EXPOSE {sorted(exposed)} = coord's default ports {sorted(binary_ports)} = chart ports {sorted(chart_ports.values())}")
    entry = json.loads(next(rest for word, rest in ins if word == "ENTRYPOINT"))
    cmd = json.loads(next(rest for word, rest in ins if word == "CMD"))
    R.check(entry == ["coord"] and cmd == ["serve"], f'ENTRYPOINT {entry} CMD {cmd}')
    health = next((rest for word, rest in ins if word == "HEALTHCHECK"), "")
    exec_form = re.search(r"CMD (\[.*\])", health)
    R.check(bool(exec_form) and json.loads(exec_form.group(1))[:2] == ["coord", "health"],
            "HEALTHCHECK runs coord health (exec form: distroless has no shell)")

    patterns = [l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")]
    copies = [rest.split()[:-1] for word, rest in ins if word == "COPY" and "--from" not in rest]
    sources = [s for c in copies for s in c]
    R.check(all((ROOT / s).exists() and not dockerignored(s, patterns) for s in sources),
            f"COPY sources exist and are in the build context: {' '.join(sources)}")
    tracked = run(["git", "-C", str(ROOT), "ls-files"]).stdout.split()
    needed = [f for f in tracked if any(f == s or f.startswith(s.rstrip("/") + "/") for s in sources)]
    R.check(bool(needed) and not [f for f in needed if dockerignored(f, patterns)],
            f".dockerignore keeps all {len(needed)} tracked files the build copies")
    R.check(all(dockerignored(p, patterns) for p in ("target", ".git", ".venv", "tests/interop/node_modules")),
            ".dockerignore excludes target/, .git/, .venv/, node_modules/")
    return_code = run([str(coord), "serve", "--check-config"], env=clean_env({"PATH": "/nonexistent"}))
    R.check(return_code.returncode == 2 and "redis.embedded_binary" in return_code.stderr,
            "with no Redis configured and no redis-server (as in the image) coord refuses to start, naming redis.embedded_binary")


def check_build_context() -> None:
    """Builds from a copy of exactly the Docker build context."""
    patterns = [l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")]
    tracked = run(["git", "-C", str(ROOT), "ls-files"]).stdout.split()
    with tempfile.TemporaryDirectory(prefix="docker-context-") as context:
        for f in tracked:
            if not dockerignored(f, patterns) and (ROOT / f).is_file():
                (Path(context) / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, Path(context) / f)
        env = clean_env({"CARGO_TARGET_DIR": str(ROOT / "target" / "docker-context")})
        started = time.monotonic()
        result = subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "coord"], cwd=context,
                                env=env, capture_output=True, text=True)
        R.check(result.returncode == 0,
                f"cargo build --release --locked in a copy of the build context ({time.monotonic() - started:.0f} s)",
                result.stderr[-2000:])


def check_ldd(coord: Path) -> None:
    result = run(["ldd", str(coord)])
    libs = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    libs = {Path(l).name for l in libs}
    extra = sorted(libs - ALLOWED_LIBS)
    R.check(result.returncode == 0 and not extra,
            f"ldd {coord.name}: {' '.join(sorted(libs))} (all in distroless cc)", f"unexpected: {extra}")


# ------------------------------------------------------------ live coord

def to_toml(table: dict, prefix: str = "") -> str:
    """Enough TOML for coord's configuration (JSON scalars and arrays are TOML)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            lines += ["", f"[{name}]", to_toml(v, name + ".")]
    return "\n".join(lines)


@contextlib.contextmanager
def live_coord(coord: Path, scenario: dict):
    """coord on its embedded Redis, on free local ports, with a scenario's
    TLS, health port, metrics TLS and auth settings (their files are the
    samples the replay wrote)."""
    ports = {"grpc": free_port(), "metrics": free_port()}
    server: dict = {"listen": f"127.0.0.1:{ports['grpc']}"}
    if scenario["server"].get("health_listen"):
        ports["health"] = free_port()
        server["health_listen"] = f"127.0.0.1:{ports['health']}"
    if scenario["server"]["tls"].get("cert_file"):
        server["tls"] = scenario["server"]["tls"]
    config = {"server": server, "metrics": {"listen": f"127.0.0.1:{ports['metrics']}", "tls": scenario["metrics"]["tls"]},
              "log": {"format": "json"}, "auth": scenario["auth"]}
    directory = Path(tempfile.mkdtemp(prefix="coord-live-"))
    (directory / "coord.toml").write_text(to_toml(config) + "\n")
    log = directory / "coord.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([str(coord), "serve", "--config", str(directory / "coord.toml")],
                                   env=clean_env(), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        yield ports, process, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def live_tokens(auth: dict, material: Material) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Credentials the scenario's auth settings must admit, and some they must refuse."""
    jwt = auth["jwt"]
    claims = {"sub": "sample-jwt", "exp": int(time.time()) + 600, "namespaces": ["*"], "permissions": ["*"],
              **({"iss": jwt["issuer"]} if jwt.get("issuer") else {}),
              **({"aud": jwt["audience"]} if jwt.get("audience") else {})}
    good, bad = [], [("an unknown API key", "coord_0123456789ab_" + "A" * 43)]
    if auth.get("principals_file"):
        good.append(("an API key from the principals file", material.api_key))
    signers = []
    if jwt.get("hs256_secret_file"):
        signers.append(("HS256", None, "the HS256 secret"))
    for i, _ in enumerate(jwt.get("public_key_files", [])[:2]):
        signers.append((("RS256", "ES256")[i], None, f"the {('RSA', 'EC')[i]} public key"))
    if jwt.get("jwks_file"):
        signers.append(("RS256", "sample-jwks", "the JWKS"))
    for alg, kid, what in signers:
        good.append((f"a JWT ({alg}) verified with {what}", material.jwt(alg, claims, kid)))
    if signers:
        alg, kid, _ = signers[0]
        bad.append(("an expired JWT", material.jwt(alg, {**claims, "exp": int(time.time()) - 3600}, kid)))
        for claim, setting in (("iss", "issuer"), ("aud", "audience")):
            if jwt.get(setting):
                bad.append((f"a JWT with another {setting} (auth.jwt.{setting} reached coord)",
                            material.jwt(alg, {**claims, claim: "https://elsewhere.example"}, kid)))
    return good, bad


def check_live(coord: Path, live: dict[str, dict], material: Material) -> None:
    if shutil.which("redis-server") is None:
        R.skip("live health names", "no redis-server on PATH for coord's embedded mode (./scripts/install-deps.sh redis)")
        return
    for name in sorted(live, key=lambda n: (n != "plain", n)):
        with live_coord(coord, live[name]["config"]) as (ports, process, log):
            check_live_scenario(coord, name, live[name], ports, process, log, material)


def check_live_scenario(coord: Path, name: str, profile: dict, ports: dict[str, int], process: subprocess.Popen,
                        log: Path, material: Material) -> None:
    config = profile["config"]
    tls = config["server"]["tls"] if config["server"]["tls"].get("cert_file") else None
    auth = config["auth"] if config["auth"]["enabled"] else None
    tag = "live" if name == "plain" else f"live [{name}]"

    def coord_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run([str(coord), *args], env=clean_env(env))

    probe_endpoint = f"http://127.0.0.1:{ports.get('health', ports['grpc'])}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        if coord_run("health", "--endpoint", probe_endpoint, "--timeout", "1s").returncode == 0:
            break
        time.sleep(0.2)
    what = ", ".join(["embedded Redis"] + (["TLS " + tls["client_auth"]] if tls else []) + (["auth"] if auth else []))
    if not R.check(process.poll() is None, f"{tag}: coord ({what}) is up", log.read_text()[-2000:]):
        return
    for kind, service in sorted(profile["probes"]):
        if not R.check(kind in ports, f"{tag}: coord serves the {kind} port a probe asks"):
            continue
        result = coord_run("health", "--endpoint", f"http://127.0.0.1:{ports[kind]}", "--service", service)
        R.check(result.returncode == 0,
                f"{tag}: probe health name {service!r} answers SERVING"
                + (" on the plaintext health port" if kind == "health" else "")
                + (", without credentials" if auth else ""), result.stdout + result.stderr)
    result = coord_run("health", "--endpoint", probe_endpoint, "--service", "no.such.Service")
    R.check(result.returncode != 0, f"{tag}: an unknown health name fails (so the probe check means something)")
    for kind, args in sorted(profile["tests"]):
        if not R.check(kind in ports, f"{tag}: coord serves the {kind} port the helm test asks"):
            continue
        local = list(args)
        local[local.index("--endpoint") + 1] = f"http://127.0.0.1:{ports[kind]}"
        result = coord_run(*local)
        R.check(result.returncode == 0, f"{tag}: the helm test command `coord {' '.join(args)}` passes",
                result.stdout + result.stderr)

    # How a client reaches the gRPC port.
    endpoint = ["--endpoint", f"http://127.0.0.1:{ports['grpc']}"]
    client_cert: list[str] = []
    if tls:
        endpoint = ["--endpoint", f"https://localhost:{ports['grpc']}", "--tls-ca", str(material.ca)]
        if tls["client_auth"] != "none":
            client_cert = ["--tls-cert", str(material.client_cert), "--tls-key", str(material.client_key)]
        result = coord_run("health", "--endpoint", f"http://127.0.0.1:{ports['grpc']}", "--timeout", "3s")
        R.check(result.returncode != 0, f"{tag}: the gRPC port refuses plaintext (TLS on)")
    good, bad = live_tokens(auth, material) if auth else ([], [])
    health_token = ["--token", good[0][1]] if auth and not auth["open_health"] else []
    result = coord_run("health", *endpoint, *client_cert, *health_token)
    R.check(result.returncode == 0,
            f"{tag}: coord health on the gRPC port" + (" over TLS, verified against the Secret's CA" if tls else "")
            + (" with a client certificate" if client_cert else "")
            + (" with a token (auth.open_health = false)" if health_token else ""), result.stdout + result.stderr)
    if tls and tls["client_auth"] != "none":
        result = coord_run("health", *endpoint, *health_token, "--timeout", "3s")
        refused = tls["client_auth"] == "require"
        R.check((result.returncode != 0) == refused,
                f"{tag}: without a client certificate the handshake is "
                + ("refused (clientAuth require)" if refused else "accepted (clientAuth request)"),
                result.stdout + result.stderr)

    if auth:
        for label, token in good:
            result = coord_run("lock", "list", *endpoint, *client_cert, env={"COORD_TOKEN": token})
            R.check(result.returncode == 0, f"{tag}: a call with {label} is admitted", result.stdout + result.stderr)
        # With a client certificate, a bad bearer token must still fail: it
        # is checked first.
        for label, token in bad:
            result = coord_run("lock", "list", *endpoint, *client_cert, env={"COORD_TOKEN": token})
            R.check(result.returncode != 0 and "nauthenticated" in (result.stdout + result.stderr).lower(),
                    f"{tag}: a call with {label} is UNAUTHENTICATED", result.stdout + result.stderr)
        if tls and tls["client_auth"] != "none" and auth.get("principals_file"):
            result = coord_run("lock", "list", *endpoint, *client_cert)
            R.check(result.returncode == 0,
                    f"{tag}: a client certificate named in the principals file authenticates (CN={material.CLIENT_NAME})",
                    result.stdout + result.stderr)
        if not (tls and tls["client_auth"] == "require"):
            result = coord_run("lock", "list", *endpoint)
            R.check(result.returncode != 0 and "nauthenticated" in (result.stdout + result.stderr).lower(),
                    f"{tag}: a call without credentials is UNAUTHENTICATED", result.stdout + result.stderr)

    if name == "plain":
        healthcheck = next(rest for word, rest in dockerfile_instructions() if word == "HEALTHCHECK")
        command = json.loads(re.search(r"CMD (\[.*\])", healthcheck).group(1))
        result = coord_run(*command[1:], env={"COORD_ENDPOINT": f"http://127.0.0.1:{ports['grpc']}"})
        R.check(result.returncode == 0, f"{tag}: the image HEALTHCHECK `{' '.join(command)}` passes",
                result.stdout + result.stderr)
    metrics_url = f"{'https' if config['metrics']['tls'] else 'http'}://localhost:{ports['metrics']}/metrics"
    context = None
    if config["metrics"]["tls"]:
        context = ssl.create_default_context(cafile=str(material.ca))
        if tls["client_auth"] != "none":
            context.load_cert_chain(str(material.client_cert), str(material.client_key))
    try:
        with urllib.request.urlopen(metrics_url, timeout=5, context=context) as response:
            body = response.read().decode()
        R.check(response.status == 200 and "coord_" in body,
                f"{tag}: GET /metrics (the ServiceMonitor's path) serves coord metrics"
                + (" over TLS, verified against the Secret's CA" if context else ""))
    except OSError as e:
        R.check(False, f"{tag}: GET /metrics", str(e))
    if context:
        try:
            urllib.request.urlopen(f"http://localhost:{ports['metrics']}/metrics", timeout=5).read()
            R.check(False, f"{tag}: plaintext GET /metrics is refused (metrics.tls)")
        except Exception:  # a reset, or no HTTP status line
            R.check(True, f"{tag}: plaintext GET /metrics is refused (metrics.tls)")


# ------------------------------------------------------------------ main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coord", type=Path, default=ROOT / "target" / "debug" / "coord")
    parser.add_argument("--build-context", action="store_true",
                        help="also build the release binary from a copy of the Docker build context (minutes)")
    parser.add_argument("--keep", action="store_true", help="keep the rendered manifests and print where")
    args = parser.parse_args()
    coord = args.coord.resolve()
    if not coord.exists():
        print(f"error: {coord} not found (cargo build --locked first)", file=sys.stderr)
        return 2

    print(f"helm SDK {helm.helm_sdk_version()}, kubernetes-validate against {', '.join(KUBE_VERSIONS)}, coord {coord}")
    out = Path(tempfile.mkdtemp(prefix="coord-chart-"))
    tls_dir = Path(tempfile.mkdtemp(prefix="coord-tls-"))
    material = Material(tls_dir, coord)

    check_versions()
    found = scenarios()
    R.check(REQUIRED_SCENARIOS <= found.keys(), f"scenarios: {', '.join(found)}",
            f"missing {REQUIRED_SCENARIOS - found.keys()}")
    live: dict[str, dict] = {}
    effectives: list[dict] = []
    for name, values in found.items():
        rendered = lint_and_render(name, values, out / name)
        if rendered is None:
            continue
        docs = documents(rendered)
        kube_validate(name, out / name, docs)
        check_against_binary(name, values, docs, coord, material, live, effectives)
    check_bad_values()
    check_checksum_rolls_only_config()
    check_schema_covers_binary(coord, found.get("everything"), effectives)
    # The health-only port is off in coord unless configured (the chart
    # turns it on with tls.enabled), so the image does not EXPOSE it.
    chart_ports = yaml.safe_load((CHART / "values.yaml").read_text())["ports"]
    check_dockerfile(coord, {k: chart_ports[k] for k in ("grpc", "metrics")})
    if args.build_context:
        check_build_context()
    check_ldd(coord)
    check_live(coord, live, material)

    shutil.rmtree(tls_dir, ignore_errors=True)
    for root in POD_ROOTS:
        shutil.rmtree(root, ignore_errors=True)
    if args.keep:
        print(f"rendered manifests: {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n{R.passed} passed, {len(R.failed)} failed")
    for what in R.failed:
        print(f"  failed: {what}")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
