#!/usr/bin/env bash
# Builds the OpenTelemetry Collector the trace tests export to (otelcol-ottoscaler:
# the core OTLP receiver and our `spanfile` exporter, see main.go) from the pinned Go
# module in this folder, into a cache outside the clone keyed by a hash of the module
# files, so later runs (and CI on the same machine) reuse it.
#
# Prints the path of the binary as its last line of stdout. Progress goes to stderr.
# Usage: testenv/otelcol/build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
key="$(cd "$here" && cat build.sh go.mod go.sum ./*.go | sha256sum | cut -c1-16)"
cache="${OTTOSCALER_OTELCOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ottoscaler/otelcol}"
out="$cache/$key"
binary="$out/otelcol-ottoscaler"

if [ -x "$binary" ]; then
  echo "otelcol: cached in $out" >&2
  echo "$binary"
  exit 0
fi

command -v go >/dev/null || { echo "otelcol: Go is required (https://go.dev/dl)" >&2; exit 1; }
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
start=$(date +%s)
echo "otelcol: building otelcol-ottoscaler (the first build takes minutes on 2 cores)..." >&2
(cd "$here" && go build -trimpath -ldflags='-s -w' -o "$out.tmp/otelcol-ottoscaler" .)
rm -rf "$out" && mv "$out.tmp" "$out"
echo "otelcol: built in $(( $(date +%s) - start ))s into $out" >&2
echo "$binary"
