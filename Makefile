# The two commands of the README:
#   make run   installs redis-server if missing, builds, and starts coord on its
#              embedded Redis (gRPC :50051, metrics :9090). Set COORD_REDIS_URL to
#              use an existing Redis instead (then nothing is installed).
#   make test  installs what it needs if missing (redis-server/redis-cli, buf,
#              the Python and Node gRPC clients, grpcurl, hadolint, Helm's SDK,
#              kubernetes-validate), then runs every check: formatting, clippy,
#              the Rust test suite, buf lint and breaking-change check, the
#              interop suite (tests/interop/), the Python and Node client
#              libraries (clients/python/, clients/node/) and the deploy checks.

CARGO ?= cargo
BUF := .venv/bin/buf

.PHONY: run test deps-run deps-test fmt-check clippy cargo-test proto-lint proto-breaking interop client-python client-node deploy-check

run: deps-run
	$(CARGO) run --release --locked -- serve

test: deps-test fmt-check clippy cargo-test proto-lint proto-breaking interop client-python client-node deploy-check

deps-run:
	@if [ -z "$$COORD_REDIS_URL" ]; then ./scripts/install-deps.sh redis; fi

deps-test:
	./scripts/install-deps.sh redis buf interop client-node deploy

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

cargo-test:
	$(CARGO) test --locked

proto-lint:
	$(BUF) lint

proto-breaking:
	BUF=$(BUF) ./scripts/proto-breaking.sh

# Python (grpcio) and Node (@grpc/grpc-js) clients and grpcurl against a
# live coord (the debug binary) on a real redis-server.
interop:
	$(CARGO) build --locked --bin coord
	.venv/bin/python -m pytest tests/interop -q

# The Python client library: stubs generated into the package, mypy
# --strict, its tests against a live coord (the debug binary) and its README
# examples, its API reference (pdoc), the sdist and the wheel built from it
# (python -m build), and the wheel installed and imported.
client-python:
	$(CARGO) build --locked --bin coord
	cd clients/python && ../../.venv/bin/python scripts/generate.py
	cd clients/python && ../../.venv/bin/python -m mypy
	cd clients/python && PYTHONPATH=src:tests ../../.venv/bin/python -m pytest tests -q
	cd clients/python && rm -rf docs-api && PYTHONPATH=src ../../.venv/bin/python -W error -m pdoc coord_client coord_client.aio -o docs-api
	cd clients/python && rm -rf dist && ../../.venv/bin/python -m build -q --outdir dist . >/dev/null
	cd clients/python && rm -rf dist/installed && ../../.venv/bin/pip install -q --disable-pip-version-check --no-deps \
		--target dist/installed dist/*.whl && cd dist && PYTHONPATH=installed ../../../.venv/bin/python -c \
		'import coord_client.aio, coord_client.pb; print("wheel ok:", coord_client.__file__)'

# The Node/TypeScript client library: types generated from the protos,
# tsc --strict (sources and tests), its tests against a live coord (the
# debug binary) and its README quick start, its API reference (typedoc,
# warnings fail), and the npm tarball packed, installed and loaded.
client-node:
	$(CARGO) build --locked --bin coord
	cd clients/node && npm run --silent generate && npm run --silent build && npm run --silent typecheck
	cd clients/node && COORD_BIN=$(CURDIR)/target/debug/coord npm test
	cd clients/node && rm -rf docs-api && npm run --silent docs
	cd clients/node && rm -rf *.tgz dist-installed && npm pack --silent && mkdir dist-installed && cd dist-installed \
		&& npm init -y >/dev/null && npm install --prefer-offline --no-audit --no-fund --loglevel=error ../coord-client-*.tgz \
		&& node -e 'const c = require("@coord/client"); new c.Client({ endpoints: "127.0.0.1:1" }).close(); console.log("npm package ok")'

# The Dockerfile and the Helm chart (helm/coord), checked without a container
# engine or a cluster: helm lint --strict, schema and render of every scenario
# (helm/coord/ci/), kubernetes-validate, bad values rejected, hadolint, and
# the chart against the binary's --check-config (tests/deploy/check_chart.py).
deploy-check:
	$(CARGO) build --locked --bin coord
	.venv/bin/python tests/deploy/check_chart.py --coord target/debug/coord
