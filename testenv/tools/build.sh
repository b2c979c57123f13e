#!/usr/bin/env bash
# Builds the tools the chart, manifest and monitoring tests run (helm, promtool,
# kube-score) from the pinned Go modules in this folder, and copies the Prometheus
# Operator's CRDs out of its pinned module, into a cache outside the clone keyed by a
# hash of the module files, so later runs (and CI on the same machine) reuse them.
#
# One module per tool: each builds with exactly the dependency versions its own go.mod
# was released with (one shared module would let one tool's Kubernetes libraries raise
# another's).
#
# Prints the directory that holds the binaries (and crds/) as its last line of stdout.
# Progress goes to stderr. Usage: testenv/tools/build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
modules=(helm promtool kube-score prometheus-operator)
key="$(cd "$here" && cat build.sh $(for m in "${modules[@]}"; do echo "$m/go.mod $m/go.sum"; ls "$m"/*.go 2>/dev/null || true; done) | sha256sum | cut -c1-16)"
cache="${OTTOSCALER_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ottoscaler/tools}"
out="$cache/$key"
binaries=(helm promtool kube-score)
crds=(servicemonitors podmonitors prometheusrules)

cached=1
for name in "${binaries[@]}"; do [ -x "$out/$name" ] || cached=0; done
for crd in "${crds[@]}"; do [ -f "$out/crds/monitoring.coreos.com_$crd.yaml" ] || cached=0; done
if [ "$cached" = 1 ]; then
  echo "tools: cached in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "tools: Go is required (https://go.dev/dl)" >&2; exit 1; }
rm -rf "$out.tmp" && mkdir -p "$out.tmp/crds"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
start=$(date +%s)
build() {
  local name=$1 module=$2 pkg=$3 tags=${4:-}
  echo "tools: building $name (the first build takes minutes on 2 cores)..." >&2
  local t0
  t0=$(date +%s)
  (cd "$here/$module" && go build -trimpath -tags="$tags" -ldflags='-s -w' -o "$out.tmp/$name" "$pkg")
  echo "tools: built $name in $(( $(date +%s) - t0 ))s" >&2
}
build kube-score kube-score github.com/zegl/kube-score/cmd/kube-score
build helm helm helm.sh/helm/v4/cmd/helm
# remove_all_sd: without Prometheus' service discovery plugins (the AWS, Azure, GCE,
# Kubernetes... clients), which `promtool check rules` and `test rules` never use; it
# halves the build.
build promtool promtool github.com/prometheus/prometheus/cmd/promtool remove_all_sd

# The CRDs: the module as go.sum pins it, from the module proxy into the module cache.
operator="github.com/prometheus-operator/prometheus-operator"
dir="$(cd "$here/prometheus-operator" && go mod download -json "$operator" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$dir/example/prometheus-operator-crd" ] || { echo "tools: no CRDs in $operator ($dir)" >&2; exit 1; }
for crd in "${crds[@]}"; do
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" "$out.tmp/crds/"
done
chmod -R u+w "$out.tmp/crds"

rm -rf "$out" && mv "$out.tmp" "$out"
echo "tools: all built in $(( $(date +%s) - start ))s into $out" >&2
echo "$out"
