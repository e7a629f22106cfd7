# syntax=docker/dockerfile:1
#
# coord server image: a release build on Debian 12, run on distroless cc
# (glibc, libgcc_s, CA certificates; no shell, no package manager).
#
#   docker build -t coord .
#   docker run --read-only -p 50051:50051 -p 9090:9090 \
#     -e COORD_REDIS_URL=redis://redis.internal:6379 -e COORD_REDIS_PASSWORD coord
#
# The image is for an external Redis (COORD_REDIS_URL, COORD_REDIS_CLUSTER or a
# config file): it has no redis-server, so coord's embedded mode (no Redis
# configured) cannot start here and `coord serve` exits with an error naming
# redis.embedded_binary. `coord serve --check-config` validates a
# configuration without connecting anywhere.
#
# Verified without a container engine by `make deploy-check` (hadolint, and
# the ports and health names against the binary); see README "Deploy".

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Only what the build reads (.dockerignore keeps everything else out).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
# The registry and target directories are cache mounts, so the binary is
# copied out of target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin coord \
    && install -D -m 0755 -s target/release/coord /out/coord

# Same Debian release as the build stage, so the glibc matches.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/coord /usr/local/bin/coord
# distroless' nonroot user, numerically, so runAsNonRoot can verify it.
USER 65532:65532
# gRPC (server.listen) and Prometheus metrics (metrics.listen).
EXPOSE 50051 9090
# coord writes nothing to disk: run it with --read-only / readOnlyRootFilesystem.
# Healthy = SERVING: gRPC up and Redis writable. Exec form: there is no shell.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["coord", "health", "--timeout", "3s"]
ENTRYPOINT ["coord"]
CMD ["serve"]
