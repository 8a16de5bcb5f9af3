# syntax=docker/dockerfile:1
# The container image of Safra: one `safra` binary that runs any process of
# the mesh (`safra serve <accounts|marketplace|wallet|distribution|
# notifications|gateway>`, `safra migrate up --service <name>`), as the Helm
# chart in charts/safra does. Three stages: the web console is built with
# npm (its files are embedded into the binary at compile time), the binary
# with cargo, and the runtime image holds the binary alone on Debian slim,
# run as an unprivileged user.
#
#   docker build -t safra .
#   docker run --rm safra --version

# 1. The console (gateway/console): generated clients from proto/ (and the
# test-only proto-test/ that its type check reads), type check, bundle.
FROM node:22-bookworm-slim AS console
WORKDIR /src/gateway/console
COPY gateway/console/package.json gateway/console/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY proto /src/proto
COPY proto-test /src/proto-test
COPY gateway/console /src/gateway/console
RUN npm run build

# 2. The binary. The toolchain is the one rust-toolchain.toml pins; the
# console's dist/ is in place before cargo runs, so gateway/build.rs embeds it.
FROM rust:1.95-trixie AS build
WORKDIR /src
COPY rust-toolchain.toml ./
RUN rustup toolchain install
COPY . .
COPY --from=console /src/gateway/console/dist gateway/console/dist
# `docker build --build-arg SAFRA_GIT_REVISION=$(git rev-parse --short=12 HEAD)`:
# .dockerignore keeps .git out, so the binary learns its revision from here.
ARG SAFRA_GIT_REVISION=unknown
ENV SAFRA_GIT_REVISION=${SAFRA_GIT_REVISION}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin safra \
    && install -D -m 0755 target/release/safra /out/safra

# 3. The runtime: glibc and the binary (pure Rust: rustls, no libpq, no
# OpenSSL). The same Debian release as the build stage, for the same glibc.
FROM debian:trixie-slim
RUN groupadd --system --gid 10001 safra \
    && useradd --system --uid 10001 --gid safra --home-dir /var/lib/safra --create-home \
       --shell /usr/sbin/nologin safra
COPY --from=build /out/safra /usr/local/bin/safra
USER 10001:10001
WORKDIR /var/lib/safra
ENV SAFRA_HOME=/var/lib/safra \
    SAFRA_LOG_FORMAT=json
# The gateway (REST, gRPC, grpc-web, console), the services' mTLS gRPC ports
# and their admin HTTP ports (/metrics, /healthz, /readyz).
EXPOSE 8080 7001 7002 7003 7004 7005 9001 9002 9003 9004 9005
# /healthz over plain HTTP with bash alone (no curl in the image): on the
# admin port when SAFRA_ADMIN_ADDR is set (a service), else on the gateway's
# SAFRA_LISTEN_ADDR (default 8080). Kubernetes uses the chart's probes instead.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "addr=${SAFRA_ADMIN_ADDR:-${SAFRA_LISTEN_ADDR:-127.0.0.1:8080}}; exec 3<>/dev/tcp/127.0.0.1/${addr##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/safra"]
CMD ["serve", "gateway"]
