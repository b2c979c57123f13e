#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager, kubectl) from the pinned Go
# module in this folder and caches the binaries outside the clone, keyed by a hash of
# the module files, so later runs (and CI on the same machine) reuse them.
#
# Prints the directory that holds the binaries as its last line of stdout.
# Progress goes to stderr. Usage: testenv/controlplane/build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/tools.go" "$here/cmd/etcd/main.go" "$here/build.sh" | sha256sum | cut -c1-16)"
binaries=(etcd kube-apiserver kube-scheduler kube-controller-manager kubectl)
cache="${OTTOSCALER_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ottoscaler/testenv}"
out="$cache/$key"

cached=1
for name in "${binaries[@]}"; do [ -x "$out/$name" ] || cached=0; done
if [ "$cached" = 1 ]; then
  echo "controlplane: cached binaries in $out" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "controlplane: Go is required (https://go.dev/dl) " >&2; exit 1; }
mkdir -p "$out.tmp"
cd "$here"
export CGO_ENABLED=0
start=$(date +%s)
for name in "${binaries[@]}"; do
  case "$name" in etcd) pkg=./cmd/etcd ;; *) pkg="k8s.io/kubernetes/cmd/$name" ;; esac
  echo "controlplane: building $name (first build takes several minutes on 2 cores)..." >&2
  t0=$(date +%s)
  go build -trimpath -ldflags='-s -w' -o "$out.tmp/$name" "$pkg"
  echo "controlplane: built $name in $(( $(date +%s) - t0 ))s" >&2
done
rm -rf "$out" && mv "$out.tmp" "$out"
echo "controlplane: all built in $(( $(date +%s) - start ))s into $out" >&2
echo "$out"
