#!/usr/bin/env bash
# The whole of ottoscaler on loopback, in about a minute: a real redis-server, a real
# kube-apiserver + etcd with kubesim as the kubelet, and the ottoscaler binary. Sends the
# sample events, shows the pods going through their lifecycle, the results and dead-letter
# streams and a few metrics, then stops everything it started.
#
# Usage: scripts/demo.sh   (or `make demo`, which first installs redis and builds the
# control plane). PROFILE=release builds optimised binaries (slower to build).
# Needs: cargo, redis-server, redis-cli, and testenv/controlplane/build.sh's binaries.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile="${PROFILE:-debug}"
namespace=default
run_seconds=3
started_at=$(date +%s)

# Bold headings on a terminal, plain text in a log.
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

for tool in cargo redis-server redis-cli; do
  command -v "$tool" >/dev/null || die "$tool is missing; run scripts/install-deps.sh (or make deps)"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/ottoscaler-demo.XXXXXX")"
pids=()

# Stops what this script started, newest first (ottoscaler before the control plane and
# Redis it talks to), by pid; SIGTERM first, SIGKILL after a grace period.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    printf '\n==> stopping the demo processes\n'
    local i pid
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      pid="${pids[$i]}"
      kill -0 "$pid" 2>/dev/null || continue
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
  fi
  if [ "$status" -ne 0 ] && [ -d "$work" ]; then
    echo "demo failed (exit $status); the last lines of each log:" >&2
    for log in "$work"/*.log; do
      [ -f "$log" ] || continue
      echo "--- $log" >&2
      tail -n 15 "$log" >&2 || true
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

# GET http://127.0.0.1:PORT/PATH with bash alone (no curl needed); prints the response.
http_get() {
  local port=$1 path=$2
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    timeout 5 cat <&3
  ) 2>/dev/null
}

# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND until it succeeds.
wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${seconds}s waiting for $what"
    sleep 0.2
  done
}

step "building ottoscaler and testenv ($profile)"
build_flags=()
[ "$profile" = release ] && build_flags+=(--release)
cargo build "${build_flags[@]}" -p ottoscaler --bin ottoscaler -p testenv --bin testenv
target_dir="${CARGO_TARGET_DIR:-$root/target}"
ottoscaler="$target_dir/$profile/ottoscaler"
testenv="$target_dir/$profile/testenv"
bin_dir="$(testenv/controlplane/build.sh 2>/dev/null | tail -n 1)"
kubectl_bin="$bin_dir/kubectl"
[ -x "$kubectl_bin" ] || die "no kubectl in '$bin_dir': run testenv/controlplane/build.sh (or make controlplane)"
info "binaries: $ottoscaler, $testenv, $kubectl_bin"
info "working directory: $work"

step "starting redis-server on loopback"
redis_port="$(free_port)"
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
  --save '' --appendonly no --daemonize no --logfile "$work/redis.log" &
pids+=($!)
redis() { redis-cli -p "$redis_port" "$@"; }
wait_for "redis-server" 15 redis ping
info "redis-server on 127.0.0.1:$redis_port"

step "starting the control plane (etcd + kube-apiserver) and kubesim"
"$testenv" up --dir "$work/cluster" >"$work/testenv.log" 2>&1 &
pids+=($!)
kubeconfig="$work/cluster/kubeconfig"
kubectl() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }
wait_for "the kubeconfig" 90 test -s "$kubeconfig"
wait_for "kube-apiserver" 90 kubectl get namespace "$namespace"
# kubesim announces itself in the log once its nodes are registered.
wait_for "kubesim's nodes" 60 grep -q "ready in" "$work/testenv.log"
info "$(grep -m1 "ready in" "$work/testenv.log" | sed 's/^.*testenv: //')"
kubectl get nodes

step "starting ottoscaler (worker pods run ${run_seconds}s in kubesim)"
cat >"$work/ottoscaler.toml" <<EOF
# The demo's configuration: the default template, with kubesim's run time.
shutdown_timeout = "5s"

[templates.default]
image = "busybox:latest"
command = ["sh", "-c", "echo \"otto agent \$OTTO_POD_NAME working on \$OTTO_TASK_ID\"; sleep 10"]
annotations = { "kubesim.ottoscaler.dev/run-seconds" = "$run_seconds" }
EOF
http_port="$(free_port)"
export REDIS_HOST=127.0.0.1 REDIS_PORT="$redis_port" REDIS_CONSUMER=ottoscaler-demo
export OTTOSCALER_CONFIG="$work/ottoscaler.toml"
export OTTOSCALER_KUBERNETES__NAMESPACE="$namespace"
export OTTOSCALER_HTTP__ADDR="127.0.0.1:$http_port"
export RUST_LOG="${RUST_LOG:-info}"
"$ottoscaler" run --kubeconfig "$kubeconfig" >"$work/ottoscaler.log" 2>&1 &
pids+=($!)
ready() { http_get "$http_port" /readyz | head -n 1 | grep -q ' 200 '; }
wait_for "ottoscaler /readyz" 60 ready
info "ready: http://127.0.0.1:$http_port/readyz answers 200"

step "watching the pods (kubectl get pods -w) while the events go in"
# The binary itself in the background (not the kubectl function, not a pipeline), so
# $! is kubectl's own pid; the sed behind it ends when kubectl does.
"$kubectl_bin" --kubeconfig "$kubeconfig" get pods -n "$namespace" -l managed-by=ottoscaler \
  -L ottoscaler.io/task-id --watch --output-watch-events \
  > >(sed -u 's/^/    [pods] /') 2>&1 &
pids+=($!)
sleep 1

# Each id is assigned before it is printed, so a failing command stops the demo.
info "scale_up 3 workers for task-123 (the seed's sample event):"
info "  \$ ottoscaler send-event --type scale_up --pod-count 3 --task-id task-123"
id="$("$ottoscaler" send-event --type scale_up --pod-count 3 --task-id task-123)"
info "  -> entry $id"
info "scale_up 2 workers for task-456, with metadata:"
info "  \$ ottoscaler send-event --type scale_up --pod-count 2 --task-id task-456 --meta branch=main"
id="$("$ottoscaler" send-event --type scale_up --pod-count 2 --task-id task-456 --meta branch=main)"
info "  -> entry $id"
sleep 1.5
info "scale_down task-456 (all its workers) while they run:"
info "  \$ ottoscaler send-event --type scale_down --task-id task-456"
id="$("$ottoscaler" send-event --type scale_down --task-id task-456)"
info "  -> entry $id"
info "a malformed event (pod_count is not a number), straight from redis-cli:"
info "  \$ redis-cli XADD otto:scale:events '*' type scale_up pod_count lots task_id task-789"
id="$(redis XADD otto:scale:events '*' type scale_up pod_count lots task_id task-789)"
info "  -> entry $id"

# Done when the 5 workers have results and no worker pod is left.
finished() {
  [ "$(redis XLEN otto:scale:results)" -ge 5 ] &&
    [ -z "$(kubectl get pods -n "$namespace" -l managed-by=ottoscaler -o name 2>/dev/null)" ]
}
wait_for "5 results and every worker pod deleted" 60 finished
sleep 1 # let the watch print the last deletions

step "results (redis-cli XRANGE otto:scale:results - +)"
redis --no-raw XRANGE otto:scale:results - + | sed 's/^/    /'
echo
info "outcomes: $(redis --raw XRANGE otto:scale:results - + | grep -A1 -x outcome | grep -v -x -e outcome -e -- | sort | uniq -c | xargs)"

step "dead letters (redis-cli XRANGE otto:scale:events:dead - +)"
redis --no-raw XRANGE otto:scale:events:dead - + | sed 's/^/    /'

step "metrics (a few lines of http://127.0.0.1:$http_port/metrics)"
http_get "$http_port" /metrics |
  grep -E '^ottoscaler_(events_total|workers_active|workers_finished_total|kube_requests_total|pod_create_seconds_count|worker_duration_seconds_count)' |
  sed 's/^/    /'

step "ottoscaler's log (last lines)"
tail -n 8 "$work/ottoscaler.log" | sed 's/^/    /'

printf '\n==> demo done in %ss\n' "$(($(date +%s) - started_at))"
