# The Riposte server image: `riposte` and the four plugins, run as user 10001 on a read-only root
# filesystem. Deployment guide: docs/deploy.md.
#
#   docker build -t riposte:0.1.0 .
#   docker run --rm --read-only -v riposte-data:/var/lib/riposte -p 8080:8080 \
#       -e RIPOSTE_QUICKSTART_TOKEN=change-me riposte:0.1.0
#
# It needs BuildKit (the default builder of Docker 23 and later; podman and buildah also read the
# cache mounts below). No `# syntax=` line, so the build fetches no frontend image.

# --- Build: the server for the host, the plugins for wasm32-wasip2 ----------------------------
#
# rustc 1.95 is required: wasmtime is pinned at the newest version that builds with it. The image
# is Debian bookworm, like the runtime image below, so the binary links against the same glibc.
# Its gcc and libc6-dev are all the C the dependencies need: ring and the bundled SQLite
# (libsqlite3-sys, with pregenerated bindings) are compiled with `cc`; no cmake, clang or OpenSSL.
FROM rust:1.95-slim-bookworm AS build

# The target ships with the toolchain's wasm-component-ld, which links the plugins as components.
RUN rustup target add wasm32-wasip2

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY plugins plugins

# The registry and the target folder live in cache mounts, so a rebuild recompiles only what
# changed. Cache mounts are not part of the image: the artifacts are copied out to /out.
# The release profile keeps line tables for backtraces on a developer's machine: 200 MB of the
# binary's 244. The image drops them and keeps the symbols (panics still name functions).
RUN --mount=type=cache,id=riposte-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=riposte-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=riposte-target,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --release --locked -p riposte; \
    cargo build --release --locked --target wasm32-wasip2 --manifest-path plugins/Cargo.toml \
        --target-dir target/plugins --workspace --exclude testbed; \
    install -D -m 0755 target/release/riposte /out/riposte; \
    strip --strip-debug /out/riposte; \
    for plugin in enrich_ioc block_ip notify_slack http; do \
        install -D -m 0644 "target/plugins/wasm32-wasip2/release/$plugin.wasm" \
            "/out/plugins/$plugin.wasm"; \
    done; \
    install -d -o 10001 -g 10001 /out/data

# --- Runtime -----------------------------------------------------------------------------------
#
# Distroless cc: glibc, libgcc_s and CA certificates, no shell and no package manager. The server
# needs nothing more: TLS is rustls with its own (webpki) root certificates, and SQLite is built
# in. `:nonroot` only changes the default user, which USER below sets anyway.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=
LABEL org.opencontainers.image.title="riposte" \
      org.opencontainers.image.description="Open-source SOAR server: webhooks start YAML playbooks of sandboxed WebAssembly plugins, with a tamper-evident audit trail." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

# Root owns the program, the plugins and the configuration: the server cannot change them.
COPY --from=build /out/riposte /usr/local/bin/riposte
COPY --from=build /out/plugins/ /opt/riposte/plugins/
COPY docker/riposte.yaml /etc/riposte/riposte.yaml
COPY playbooks/hello-webhook.yaml /etc/riposte/playbooks/hello-webhook.yaml
# The connector catalogue (docs/connectors.md): used once a configuration names the folder
# (`connectors: { path: /opt/riposte/connectors }`) and sets each connector's settings.
COPY connectors/ /opt/riposte/connectors/
# The one place the server writes: the SQLite store (without Redis) and cache/, the plugins
# compiled to native code. A new Docker volume starts with this folder's owner, 10001.
COPY --from=build --chown=10001:10001 /out/data/ /var/lib/riposte/

# Plugins are compiled at start, not here: the cache is keyed by the plugin's hash and by the
# engine's configuration, which only the running server knows for sure, and it must sit in the
# writable data folder. The first start on an empty volume takes a few seconds longer; a volume
# that persists keeps the compiled plugins for the next start.
#
# Variables win over the configuration file: mount your own file, and set these to change them.
ENV RIPOSTE_LISTEN=0.0.0.0:8080 \
    RIPOSTE_PLUGINS=/opt/riposte/plugins \
    RIPOSTE_DATA_DIR=/var/lib/riposte \
    RIPOSTE_LOG=info

USER 10001:10001
WORKDIR /var/lib/riposte
VOLUME ["/var/lib/riposte"]
# 8080: `riposte serve` (webhooks, /api/v1, /healthz, /readyz, /metrics).
# 9090: `riposte worker`'s /healthz, /readyz and /metrics, when RIPOSTE_OPS_LISTEN=0.0.0.0:9090.
EXPOSE 8080 9090

# riposte runs as PID 1 without an init: it handles SIGTERM itself (stop taking work, finish the
# runs in hand, exit 0) and starts no child processes. Give it a grace period as long as your
# longest steps (`docker stop -t`, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/riposte"]
CMD ["serve", "--config", "/etc/riposte/riposte.yaml"]
