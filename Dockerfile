# syntax=docker/dockerfile:1
# ottoscaler's container image: a release build in a Rust image, then only the binary on
# distroless (glibc, CA certificates, no shell), running as the non-root user 65532.
#
#   docker build -t ghcr.io/otto-ci/ottoscaler:0.1.0 .
#
# The registry name is a placeholder: tag and push to yours, and set the same image in
# manifests/base/deployment.yaml.

# --- build -----------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when a manifest or the lock
# file changes. `testenv` is a workspace member and a dev-dependency only; the release
# binary does not link it, but cargo needs its manifest (and a target file) to load the
# workspace.
COPY Cargo.toml Cargo.lock ./
COPY testenv/Cargo.toml testenv/Cargo.toml
RUN mkdir -p src testenv/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs testenv/src/lib.rs \
    && echo 'fn main() {}' > testenv/src/main.rs \
    && cargo build --release --locked --bin ottoscaler \
    && rm -rf src

# The real sources. `touch` makes them newer than the placeholder build, so cargo
# rebuilds ottoscaler itself whatever timestamps the build context carried.
COPY src src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin ottoscaler \
    && cp target/release/ottoscaler /ottoscaler

# --- run -------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ottoscaler" \
      org.opencontainers.image.description="Scales Otto CI/CD build agents on Kubernetes from a Redis Stream of scale events" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /ottoscaler /ottoscaler
USER 65532:65532
# /healthz, /readyz and /metrics (http.addr).
EXPOSE 8080
ENTRYPOINT ["/ottoscaler"]
CMD ["run"]
