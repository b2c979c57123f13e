#!/usr/bin/env bash
# Installs the Debian packages ottoscaler's tests, demo and benchmarks need:
# redis-server and redis-cli (the real Redis the tests run), the benchmark plot's font,
# python3 and bubblewrap (make check-image), and the Go toolchain check for building
# the test control plane. Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v openssl >/dev/null || need+=(openssl)
command -v make >/dev/null || need+=(make)
command -v cc >/dev/null || need+=(gcc)
# scripts/check-dockerfile.py (make check-image) and its sandbox.
command -v python3 >/dev/null || need+=(python3)
command -v bwrap >/dev/null || need+=(bubblewrap)
# The benchmark plot's font (read at run time; without it only the plot is skipped).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)

if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

command -v go >/dev/null || {
  echo "Go (>= 1.26) is needed to build the test control plane: install it from https://go.dev/dl or your distribution" >&2
  exit 1
}
command -v cargo >/dev/null || {
  echo "Rust (cargo, >= 1.89) is needed: https://rustup.rs" >&2
  exit 1
}
echo "dependencies present: redis-server $(redis-server --version | awk '{print $3}'), $(go version | awk '{print $3}'), $(cargo --version)"
