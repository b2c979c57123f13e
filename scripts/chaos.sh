#!/usr/bin/env bash
# `make chaos`: the reliability suite at full size against real redis-server, the test
# control plane and kubesim, then the event-parser fuzz target for a fixed number of
# runs. Writes the figures to docs/reliability.md. Budget: 15 minutes on 2 cores
# (the first run also builds the fuzz target, a few minutes more).
#
# Sizes (environment, defaults below): CHAOS_EVENTS, CHAOS_KILLS, CHAOS_RESTARTS,
# CHAOS_INPUTS, CHAOS_HOSTILE, FUZZ_RUNS; CHAOS_SEED replays a run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CHAOS_EVENTS="${CHAOS_EVENTS:-300}"
export CHAOS_KILLS="${CHAOS_KILLS:-5}"
export CHAOS_RESTARTS="${CHAOS_RESTARTS:-4}"
export CHAOS_INPUTS="${CHAOS_INPUTS:-20000}"
export CHAOS_HOSTILE="${CHAOS_HOSTILE:-300}"
FUZZ_RUNS="${FUZZ_RUNS:-500000}"
TESTS_BUDGET="${CHAOS_TESTS_BUDGET:-11m}"
FUZZ_BUDGET="${CHAOS_FUZZ_BUDGET:-8m}"

out=target/chaos
mkdir -p "$out"
report="$PWD/$out/reliability.txt"
log="$PWD/$out/chaos.log"
: >"$report"
: >"$log"
export RELIABILITY_REPORT="$report"
started=$(date +%s)
say() { printf '\n=== chaos: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)" | tee -a "$log"; }

say "reliability suite: events=$CHAOS_EVENTS kills=$CHAOS_KILLS restarts=$CHAOS_RESTARTS inputs=$CHAOS_INPUTS hostile=$CHAOS_HOSTILE"
timeout --kill-after=30s "$TESTS_BUDGET" \
    cargo test --locked --no-fail-fast \
    --test reliability_crash --test reliability_outages \
    --test reliability_input --test reliability_security \
    -- --nocapture --include-ignored 2>&1 | tee -a "$log"
tests_status=${PIPESTATUS[0]}

say "fuzz target fuzz/fuzz_targets/event_fields.rs: $FUZZ_RUNS runs"
fuzz_status=0
fuzz_note=""
if ! cargo +nightly --version >/dev/null 2>&1; then
    fuzz_note="skipped: no nightly toolchain (install one with 'rustup toolchain install nightly')"
elif ! cargo fuzz --version >/dev/null 2>&1 && ! cargo install cargo-fuzz --locked 2>&1 | tail -n 3 | tee -a "$log"; then
    fuzz_note="skipped: cargo-fuzz is not installed and 'cargo install cargo-fuzz' failed"
elif ! cargo fuzz --version >/dev/null 2>&1; then
    fuzz_note="skipped: cargo-fuzz is not available"
else
    mkdir -p "$out/fuzz-corpus"
    fuzz_started=$(date +%s)
    timeout --kill-after=30s "$FUZZ_BUDGET" \
        cargo +nightly fuzz run --dev --sanitizer none event_fields "$out/fuzz-corpus" fuzz/seeds/event_fields -- \
        -runs="$FUZZ_RUNS" -dict=fuzz/event_fields.dict -max_len=8192 2>&1 |
        tee "$out/fuzz.log" | grep -E '^(Done|==|SUMMARY|thread|#[0-9]+ +DONE)|panicked|Crash|crash-' | tee -a "$log"
    fuzz_status=${PIPESTATUS[0]}
    done_line=$(grep -E '^Done [0-9]+ runs' "$out/fuzz.log" | tail -n 1)
    runs=$(sed -E 's/^Done ([0-9]+) runs.*/\1/' <<<"${done_line:-Done 0 runs}")
    crashes=$(find fuzz/artifacts/event_fields -type f 2>/dev/null | wc -l)
    echo "RELIABILITY: test=fuzz_event_fields inputs=$runs crashes=$crashes status=$fuzz_status seconds=$(($(date +%s) - fuzz_started))" |
        tee -a "$report" | tee -a "$log"
fi
if [ -n "$fuzz_note" ]; then
    echo "chaos: fuzzing $fuzz_note" | tee -a "$log"
fi

failed=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | sort -u)
elapsed=$(($(date +%s) - started))

say "writing docs/reliability.md"
mkdir -p docs
{
    echo "# Reliability figures"
    echo
    echo "Written by \`make chaos\` (\`scripts/chaos.sh\`); do not edit by hand. The CI-sized"
    echo "versions of the same tests run in \`cargo test\` on every change."
    echo
    echo "- Command: \`CHAOS_EVENTS=$CHAOS_EVENTS CHAOS_KILLS=$CHAOS_KILLS CHAOS_RESTARTS=$CHAOS_RESTARTS CHAOS_INPUTS=$CHAOS_INPUTS CHAOS_HOSTILE=$CHAOS_HOSTILE FUZZ_RUNS=$FUZZ_RUNS make chaos\`"
    echo "- When: $(date -u +%Y-%m-%dT%H:%MZ), commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`$(git diff --quiet HEAD 2>/dev/null || echo ' plus uncommitted changes')"
    echo "- Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr); debug build; took ${elapsed} s"
    echo "- Tests: exit status $tests_status$( [ -n "$failed" ] && printf '; failed: %s' "$(echo "$failed" | paste -sd, - | sed 's/,/, /g')")"
    echo "- Fuzzing: ${fuzz_note:-exit status $fuzz_status}"
    echo
    echo "lost = a worker without a result; duplicated = a second result or a second pod"
    echo "for the same (event, worker); orphaned = a pod left behind at the end."
    echo
    echo "| test | events | workers | disruptions | faults injected | inputs tried | lost | duplicated | orphaned | seconds |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    sed -n 's/^RELIABILITY: //p' "$report" | awk '
    {
        delete f
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        d = ""
        n = split("kills restarts pending_at_kills pending_on_killed redis_kills redis_stops apiserver_kills apiserver_stops apiserver_down_seconds", keys, " ")
        for (k = 1; k <= n; k++) if (keys[k] in f) d = d (d == "" ? "" : ", ") keys[k] "=" f[keys[k]]
        faults = ("faults" in f) ? f["faults"] : "-"
        if ("f429" in f) faults = faults " (429: " f["f429"] ", 500: " f["f500"] ", 503: " f["f503"] ", resets: " f["resets"] ", delays: " f["delays"] ")"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f["test"], v("events"), v("workers"), (d == "" ? "-" : d), faults, v("inputs"), v("lost"), v("duplicated"), v("orphaned"), v("seconds")
    }
    function v(k) { return (k in f) ? f[k] : "-" }'
    echo
    echo "Every line the tests printed:"
    echo
    echo '```text'
    cat "$report"
    echo '```'
} >docs/reliability.md

say "done in ${elapsed} s: tests exit $tests_status, fuzzing ${fuzz_note:-exit $fuzz_status}; see docs/reliability.md"
[ "$tests_status" -eq 0 ] && [ "$fuzz_status" -eq 0 ]
