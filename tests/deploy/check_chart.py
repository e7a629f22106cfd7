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
  locally (its ConfigMap, Secret and env turned into files and variables)
  and `coord serve --check-config --print-config` must accept exactly what
  the pod would run; ports, probe service names, the helm-test command and
  the grace periods must match what coord then reports; a live coord
  (embedded Redis) answers every probe's health name, the helm-test command
  and the image's HEALTHCHECK;
- hadolint on the Dockerfile, the Dockerfile's ports/user/entrypoint against
  the chart and the binary, .dockerignore against what the build copies, and
  ldd of the binary (only glibc and libgcc_s, which distroless cc has).

Usage: check_chart.py [--coord target/debug/coord] [--build-context]
Prints one line per check and "N passed, N failed"; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import shutil
import signal
import socket
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
REQUIRED_SCENARIOS = {"redlock", "cluster", "everything"}

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
}
# What distroless cc (Debian 12) provides.
ALLOWED_LIBS = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0",
                "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}

# The fields of monitoring.coreos.com/v1 ServiceMonitor this chart uses, as
# the Prometheus Operator's CRD types them.
SERVICE_MONITOR_SCHEMA = {
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

def make_tls(directory: Path) -> dict[str, bytes]:
    """A CA certificate and a client certificate and key, PEM."""
    def req(name: str) -> None:
        result = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-days", "1", "-subj", f"/CN={name}",
                      "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.crt")])
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
    req("ca")
    req("client")
    return {"tls_ca_file": (directory / "ca.crt").read_bytes(),
            "tls_cert_file": (directory / "client.crt").read_bytes(),
            "tls_key_file": (directory / "client.key").read_bytes()}


def replay_pod(name: str, docs: list[tuple[str, dict]], coord: Path, tls: dict[str, bytes],
               values: dict) -> tuple[dict, str] | None:
    """Runs coord --check-config as the Deployment's container would run."""
    deployment = one(docs, "Deployment")
    configmap = one(docs, "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "coord")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    root = Path(tempfile.mkdtemp(prefix=f"pod-{name}-"))
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}

    def rewrite(text: str) -> str:
        for mount_path in sorted(mounts, key=len, reverse=True):
            text = text.replace(mount_path + "/", f"{root}{mount_path}/")
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
    # does not hold: an existing ConfigMap's policies, the TLS Secret's files.
    file_config = tomllib.loads(Path(config_arg).read_text())
    policy_file = file_config.get("ratelimit", {}).get("policy_file")
    if policy_file and not Path(policy_file).exists():
        R.check(policy_file.startswith(str(root)), f"[{name}] policy file {policy_file} is on a mounted volume")
        Path(policy_file).write_text(SAMPLE_POLICIES)
    for key, pem in tls.items():
        path = file_config.get("redis", {}).get(key)
        if path:
            R.check(path.startswith(str(root)), f"[{name}] redis.{key} is on a mounted volume")
            Path(path).write_bytes(pem)

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
    return tomllib.loads(effective.replace(str(root), "")), summary.replace(str(root), "")


def check_against_binary(name: str, values: dict, docs: list[tuple[str, dict]], coord: Path,
                         tls: dict[str, bytes], probes: set[str], tests: list[list[str]]) -> None:
    replayed = replay_pod(name, docs, coord, tls, values)
    if replayed is None:
        return
    effective, summary = replayed
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
    for probe_kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(probe_kind, {}).get("grpc")
        if not R.check(probe is not None, f"[{name}] {probe_kind} is a native gRPC probe"):
            continue
        R.check(probe["port"] == grpc_port, f"[{name}] {probe_kind} port {probe['port']} = coord's gRPC port")
        service_name = probe.get("service", "")
        R.check(service_name in health_names, f"[{name}] {probe_kind} service {service_name!r} is a health name coord registers",
                f"coord registers {sorted(health_names)}")
        probes.add(service_name)
    R.check(container["readinessProbe"]["grpc"].get("service", "") == "",
            f"[{name}] readiness follows the overall status (Redis writable)")
    R.check(container["livenessProbe"]["grpc"].get("service") == "liveness",
            f"[{name}] liveness does not depend on Redis")

    for port in service["spec"]["ports"]:
        R.check(port["targetPort"] in ports, f"[{name}] Service port {port['name']} targets container port {port['targetPort']}")
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    R.check(grpc.get("appProtocol") == "grpc", f"[{name}] Service port grpc has appProtocol grpc")
    monitor = one(docs, "ServiceMonitor")
    if monitor:
        names = {p["name"] for p in service["spec"]["ports"]}
        R.check(all(e["port"] in names for e in monitor["spec"]["endpoints"]),
                f"[{name}] ServiceMonitor scrapes a named Service port")
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

    test_pod = next((d for _, d in docs if d["kind"] == "Pod"
                     and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"), None)
    if R.check(test_pod is not None, f"[{name}] helm test pod"):
        args = test_pod["spec"]["containers"][0]["args"]
        endpoint = args[args.index("--endpoint") + 1]
        want = f"http://{service['metadata']['name']}:{grpc['port']}"
        R.check(args[0] == "health" and endpoint == want, f"[{name}] helm test runs coord health against {want}", str(args))
        tests.append(args)


def check_schema_covers_binary(coord: Path, everything: dict | None) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    in_schema = schema_keys(schema["properties"]["config"])
    result = run([str(coord), "serve", "--print-config"], env=clean_env())
    binary_keys = flatten(tomllib.loads(result.stdout))
    missing = sorted(k for k in binary_keys - in_schema - CHART_OWNED)
    R.check(not missing, f"values.schema.json `config` covers every key coord prints ({len(binary_keys)})",
            f"not settable through the chart: {missing}")
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

@contextlib.contextmanager
def live_coord(coord: Path):
    grpc, metrics = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="coord-live-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [str(coord), "serve", "--listen", f"127.0.0.1:{grpc}", "--metrics-addr", f"127.0.0.1:{metrics}",
         "--log-format", "json"],
        env=clean_env(), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        yield grpc, metrics, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.unlink(log.name)


def check_live(coord: Path, probes: set[str], tests: list[list[str]]) -> None:
    if shutil.which("redis-server") is None:
        R.skip("live health names", "no redis-server on PATH for coord's embedded mode (./scripts/install-deps.sh redis)")
        return
    with live_coord(coord) as (grpc, metrics, process):
        endpoint = f"http://127.0.0.1:{grpc}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if run([str(coord), "health", "--endpoint", endpoint, "--timeout", "1s"]).returncode == 0:
                break
            time.sleep(0.2)
        if not R.check(process.poll() is None, "live coord (embedded Redis) is up"):
            return
        for name in sorted(probes):
            result = run([str(coord), "health", "--endpoint", endpoint, "--service", name])
            R.check(result.returncode == 0, f"live: probe health name {name!r} answers SERVING",
                    result.stdout + result.stderr)
        result = run([str(coord), "health", "--endpoint", endpoint, "--service", "no.such.Service"])
        R.check(result.returncode != 0, "live: an unknown health name fails (so the probe check means something)")
        for args in {tuple(a) for a in tests}:
            local = list(args)
            local[local.index("--endpoint") + 1] = endpoint
            result = run([str(coord), *local])
            R.check(result.returncode == 0, f"live: the helm test command `coord {' '.join(args)}` passes",
                    result.stdout + result.stderr)
        healthcheck = next(rest for word, rest in dockerfile_instructions() if word == "HEALTHCHECK")
        command = json.loads(re.search(r"CMD (\[.*\])", healthcheck).group(1))
        result = run([str(coord), *command[1:]], env=clean_env({"COORD_ENDPOINT": endpoint}))
        R.check(result.returncode == 0, f"live: the image HEALTHCHECK `{' '.join(command)}` passes",
                result.stdout + result.stderr)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
                body = response.read().decode()
            R.check(response.status == 200 and "coord_" in body, "live: GET /metrics (the ServiceMonitor's path) serves coord metrics")
        except OSError as e:
            R.check(False, "live: GET /metrics", str(e))


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
    tls = make_tls(tls_dir)

    check_versions()
    found = scenarios()
    R.check(REQUIRED_SCENARIOS <= found.keys(), f"scenarios: {', '.join(found)}",
            f"missing {REQUIRED_SCENARIOS - found.keys()}")
    probes: set[str] = set()
    tests: list[list[str]] = []
    for name, values in found.items():
        rendered = lint_and_render(name, values, out / name)
        if rendered is None:
            continue
        docs = documents(rendered)
        kube_validate(name, out / name, docs)
        check_against_binary(name, values, docs, coord, tls, probes, tests)
    check_bad_values()
    check_checksum_rolls_only_config()
    check_schema_covers_binary(coord, found.get("everything"))
    check_dockerfile(coord, yaml.safe_load((CHART / "values.yaml").read_text())["ports"])
    if args.build_context:
        check_build_context()
    check_ldd(coord)
    check_live(coord, probes, tests)

    shutil.rmtree(tls_dir, ignore_errors=True)
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
