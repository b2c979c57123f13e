# syntax=docker/dockerfile:1
# ottoscaler's container image: a release build in a Rust image, then only the binary on
# distroless (glibc, CA certificates, no shell), running as the non-root user 65532.
#
#   docker build -t ghcr.io/otto-ci/ottoscaler:0.1.0 .
#
# Without a Docker engine, `make check-image` runs the build stage below in a sandbox
# that holds only what the COPY lines (filtered by .dockerignore) put there.
#
# The registry name is a placeholder: tag and push to yours, and set the same image in
# manifests/base/deployment.yaml.

# --- build -----------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when a manifest or the lock
# file changes. Cargo loads the whole workspace (Cargo.toml `[workspace] members`: ".",
# testenv, bench; `fuzz` is excluded), so every member's manifest is here, each with
# placeholder targets; testenv and bench are never built. A new workspace member needs a
# line here too: `make check-image` catches a missing one.
COPY Cargo.toml Cargo.lock ./
COPY testenv/Cargo.toml testenv/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src testenv/src bench/src \
    && touch src/lib.rs testenv/src/lib.rs bench/src/lib.rs \
    && echo 'fn main() {}' | tee src/main.rs testenv/src/main.rs bench/src/main.rs >/dev/null \
    && cargo build --profile dist --locked --bin ottoscaler \
    && rm -rf src

# The real sources. `touch` makes them newer than the placeholder build, so cargo
# rebuilds ottoscaler itself whatever timestamps the build context carried. The `dist`
# profile (Cargo.toml) is release without debug information.
COPY src src
RUN touch src/main.rs src/lib.rs \
    && cargo build --profile dist --locked --bin ottoscaler \
    && cp target/dist/ottoscaler /ottoscaler

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
