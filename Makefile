# The two commands of the README:
#   make run   installs redis-server if missing, builds, and starts coord on its
#              embedded Redis (gRPC :50051, metrics :9090). Set COORD_REDIS_URL to
#              use an existing Redis instead (then nothing is installed).
#   make test  installs redis-server/redis-cli and buf if missing, then runs every
#              check: formatting, clippy, the whole test suite, buf lint.

CARGO ?= cargo
BUF := .venv/bin/buf

.PHONY: run test deps-run deps-test fmt-check clippy cargo-test proto-lint

run: deps-run
	$(CARGO) run --release --locked -- serve

test: deps-test fmt-check clippy cargo-test proto-lint

deps-run:
	@if [ -z "$$COORD_REDIS_URL" ]; then ./scripts/install-deps.sh redis; fi

deps-test:
	./scripts/install-deps.sh redis buf

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

cargo-test:
	$(CARGO) test --locked

proto-lint:
	$(BUF) lint
