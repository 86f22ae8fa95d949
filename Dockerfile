# Multi-stage build of the Concord coordinator.
#   docker build -t concord .
#   docker run --rm -p 50051:50051 -e DATABASE_URL=postgres://user:pass@db:5432/concord concord
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin concord \
 && cp target/release/concord /usr/local/bin/concord

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home concord
COPY --from=build /usr/local/bin/concord /usr/local/bin/concord
COPY config/concord.toml /etc/concord/concord.toml
USER 10001
ENV CONCORD_LISTEN=0.0.0.0:50051 \
    CONCORD_LOG_FORMAT=json
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/concord"]
CMD ["serve"]
