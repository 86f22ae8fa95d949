# syntax=docker/dockerfile:1
# Multi-stage build of the Concord coordinator (the default target) and of
# the example participants (target `examples`, used by docker-compose.yml).
#   docker build -t concord .
#   docker run --rm -p 50051:50051 -p 9464:9464 \
#       -e DATABASE_URL=postgres://user:pass@db:5432/concord concord
# Configuration is by environment (CONCORD_*, see config/concord.toml) or
# by a file mounted at /etc/concord/concord.toml with CONCORD_CONFIG set.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin concord \
 && cp target/release/concord /usr/local/bin/concord

FROM build AS examples-build
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p concord-examples --bins \
 && mkdir -p /out \
 && find target/release -maxdepth 1 -type f -executable -exec cp {} /out/ \;

# The example participants and initiators (bank_transfer, order_saga).
FROM debian:bookworm-slim AS examples
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home concord
COPY --from=examples-build /out/ /usr/local/bin/
USER 10001

# The coordinator: small, non-root, no shell tools needed for the health
# check (`concord healthcheck` asks /healthz itself).
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home concord \
 && mkdir -p /var/lib/concord && chown 10001 /var/lib/concord
COPY --from=build /usr/local/bin/concord /usr/local/bin/concord
COPY config/concord.toml /etc/concord/concord.toml
USER 10001
# Without DATABASE_URL the state is the SQLite file /var/lib/concord/concord.db
# (mount a volume there to keep it); with DATABASE_URL=postgres://... it is
# in PostgreSQL. Listening on 0.0.0.0 needs identities (CONCORD_ADMIN_TOKENS
# or CONCORD_IDENTITIES_FILE), or CONCORD_INSECURE_NO_AUTH=true on a trusted
# network: the coordinator refuses to start otherwise (README, "Security").
ENV CONCORD_LISTEN=0.0.0.0:50051 \
    CONCORD_METRICS_LISTEN=0.0.0.0:9464 \
    CONCORD_DTM_LISTEN=0.0.0.0:36789 \
    CONCORD_LOG_FORMAT=json \
    CONCORD_DATA_DIR=/var/lib/concord
VOLUME /var/lib/concord
# 50051: gRPC (Coordinator, Registry, Admin, grpc.health.v1).
# 9464: /metrics, /healthz, /readyz.
# 36789: the DTM-compatible HTTP API (/api/dtmsvr/...).
EXPOSE 50051 9464 36789
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/concord", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/concord"]
CMD ["serve"]
