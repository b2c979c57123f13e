#!/usr/bin/env bash
# Builds the KEDA operator (github.com/kedacore/keda/v2, pinned in go.mod here) for the
# peer benchmark (`make bench-peers`) and caches it outside the clone, keyed by a hash of
# the module files, so later runs reuse it. Not built by `make test` or `.ci/run`.
#
# Also copies KEDA's CRDs (config/crd/bases of the pinned module) next to the binary.
# Prints the directory that holds `keda-operator` and `crds/` as its last line of stdout.
# Progress goes to stderr. Usage: testenv/keda/build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/tools.go" "$here/build.sh" | sha256sum | cut -c1-16)"
cache="${OTTOSCALER_KEDA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ottoscaler/keda}"
out="$cache/$key"

if [ -x "$out/keda-operator" ] && [ -f "$out/crds/keda.sh_scaledjobs.yaml" ]; then
  echo "keda: cached operator in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "keda: Go is required (https://go.dev/dl)" >&2; exit 1; }
cd "$here"
version="$(go list -m -f '{{.Version}}' github.com/kedacore/keda/v2)"
module_dir="$(go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)"
if [ -z "$module_dir" ]; then
  go mod download github.com/kedacore/keda/v2
  module_dir="$(go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)"
fi
rm -rf "$out.tmp" && mkdir -p "$out.tmp/crds"
export CGO_ENABLED=0
start=$(date +%s)
echo "keda: building keda-operator $version (first build takes many minutes on 2 cores)..." >&2
go build -trimpath \
  -ldflags="-s -w -X github.com/kedacore/keda/v2/version.Version=$version" \
  -o "$out.tmp/keda-operator" github.com/kedacore/keda/v2/cmd/operator
cp "$module_dir"/config/crd/bases/*.yaml "$out.tmp/crds/"
echo "$version" > "$out.tmp/VERSION"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "keda: built in $(( $(date +%s) - start ))s into $out" >&2
echo "$out"
