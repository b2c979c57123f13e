#!/usr/bin/env bash
# `make chaos`: the reliability suite at full size against real redis-server, the test
# control plane and kubesim, then the event-parser fuzz target for a fixed number of
# runs. Writes the figures to docs/reliability.md. Takes about 8-10 minutes on 2 cores;
# the very first run also builds the fuzz target (about 7 minutes more, then cached in
# fuzz/target).
#
# Sizes (environment, defaults below): CHAOS_EVENTS, CHAOS_KILLS, CHAOS_RESTARTS,
# CHAOS_INPUTS, CHAOS_HOSTILE, HA_HANDOVERS, HA_KILLS, HA_CHAOS_KILLS, HA_CHAOS_ROLLS,
# FUZZ_RUNS; CHAOS_SEED replays a run.
# `scripts/chaos.sh --report-only` rewrites docs/reliability.md from the last run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=target/chaos
report="$PWD/$out/reliability.txt"
log="$PWD/$out/chaos.log"
meta="$PWD/$out/run.env"

run_suite() {
    export CHAOS_EVENTS="${CHAOS_EVENTS:-300}"
    export CHAOS_KILLS="${CHAOS_KILLS:-5}"
    export CHAOS_RESTARTS="${CHAOS_RESTARTS:-4}"
    export CHAOS_INPUTS="${CHAOS_INPUTS:-20000}"
    export CHAOS_HOSTILE="${CHAOS_HOSTILE:-300}"
    export HA_HANDOVERS="${HA_HANDOVERS:-10}"
    export HA_KILLS="${HA_KILLS:-10}"
    export HA_CHAOS_KILLS="${HA_CHAOS_KILLS:-5}"
    export HA_CHAOS_ROLLS="${HA_CHAOS_ROLLS:-2}"
    local fuzz_runs="${FUZZ_RUNS:-500000}"
    local tests_budget="${CHAOS_TESTS_BUDGET:-17m}"
    local fuzz_budget="${CHAOS_FUZZ_BUDGET:-12m}"
    mkdir -p "$out"
    : >"$report"
    : >"$log"
    export RELIABILITY_REPORT="$report"
    local started
    started=$(date +%s)

    say "reliability suite: events=$CHAOS_EVENTS kills=$CHAOS_KILLS restarts=$CHAOS_RESTARTS inputs=$CHAOS_INPUTS hostile=$CHAOS_HOSTILE handovers=$HA_HANDOVERS ha_kills=$HA_KILLS ha_chaos=$HA_CHAOS_KILLS/$HA_CHAOS_ROLLS"
    timeout --kill-after=30s "$tests_budget" \
        cargo test --locked --no-fail-fast \
        --test reliability_crash --test reliability_outages \
        --test reliability_input --test reliability_security --test ha \
        -- --nocapture 2>&1 | tee -a "$log"
    local tests_status=${PIPESTATUS[0]}

    say "fuzz target fuzz/fuzz_targets/event_fields.rs: $fuzz_runs runs"
    local fuzz_status=0 fuzz_note=""
    if ! cargo +nightly --version >/dev/null 2>&1; then
        fuzz_note="skipped: no nightly toolchain (install one with 'rustup toolchain install nightly')"
    elif ! cargo fuzz --version >/dev/null 2>&1 && ! cargo install cargo-fuzz --locked 2>&1 | tail -n 3 | tee -a "$log"; then
        fuzz_note="skipped: cargo-fuzz is not installed and 'cargo install cargo-fuzz' failed"
    elif ! cargo fuzz --version >/dev/null 2>&1; then
        fuzz_note="skipped: cargo-fuzz is not available"
    else
        mkdir -p "$out/fuzz-corpus"
        local fuzz_started
        fuzz_started=$(date +%s)
        # A debug build without sanitizer: ottoscaler has no unsafe code, so ASan adds
        # little, and the cold build is minutes shorter. Debug builds check overflow.
        timeout --kill-after=30s "$fuzz_budget" \
            cargo +nightly fuzz run --dev --sanitizer none event_fields \
            "$out/fuzz-corpus" fuzz/seeds/event_fields -- \
            -runs="$fuzz_runs" -dict=fuzz/event_fields.dict -max_len=8192 2>&1 |
            tee "$out/fuzz.log" |
            grep -E '^(Done|SUMMARY)|panicked|deadly|crash-' | tee -a "$log"
        fuzz_status=${PIPESTATUS[0]}
        local done_line runs crashes
        done_line=$(grep -E '^Done [0-9]+ runs' "$out/fuzz.log" | tail -n 1)
        runs=$(sed -E 's/^Done ([0-9]+) runs.*/\1/' <<<"${done_line:-Done 0 runs}")
        crashes=$(find fuzz/artifacts/event_fields -type f 2>/dev/null | wc -l)
        echo "RELIABILITY: test=fuzz_event_fields inputs=$runs crashes=$crashes status=$fuzz_status seconds=$(($(date +%s) - fuzz_started))" |
            tee -a "$report" | tee -a "$log"
    fi
    if [ -n "$fuzz_note" ]; then
        echo "chaos: fuzzing $fuzz_note" | tee -a "$log"
    fi

    local failed
    failed=$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | sort -u | paste -sd, - | sed 's/,/, /g')
    {
        printf 'command=%q\n' "CHAOS_EVENTS=$CHAOS_EVENTS CHAOS_KILLS=$CHAOS_KILLS CHAOS_RESTARTS=$CHAOS_RESTARTS CHAOS_INPUTS=$CHAOS_INPUTS CHAOS_HOSTILE=$CHAOS_HOSTILE HA_HANDOVERS=$HA_HANDOVERS HA_KILLS=$HA_KILLS HA_CHAOS_KILLS=$HA_CHAOS_KILLS HA_CHAOS_ROLLS=$HA_CHAOS_ROLLS FUZZ_RUNS=$fuzz_runs make chaos"
        printf 'when=%q\n' "$(date -u +%Y-%m-%dT%H:%MZ)"
        printf 'commit=%q\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' plus uncommitted changes')"
        printf 'elapsed=%q\n' "$(($(date +%s) - started))"
        printf 'tests_status=%q\n' "$tests_status"
        printf 'failed=%q\n' "$failed"
        printf 'fuzz=%q\n' "${fuzz_note:-exit status $fuzz_status}"
    } >"$meta"
    [ "$tests_status" -eq 0 ] && [ "$fuzz_status" -eq 0 ]
}

say() { printf '\n=== chaos: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)" | tee -a "$log"; }

write_report() {
    # shellcheck source=/dev/null
    . "$meta"
    mkdir -p docs
    {
        echo "# Reliability figures"
        echo
        echo "Written by \`make chaos\` (\`scripts/chaos.sh\`); do not edit by hand. CI-sized"
        echo "versions of the same tests run in \`make test\` on every change."
        echo
        echo "- Command: \`$command\`"
        echo "- When: $when, commit \`$commit\`"
        echo "- Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr); debug build; took $elapsed s"
        echo "- Tests: exit status $tests_status${failed:+; failed: $failed}"
        echo "- Fuzzing: $fuzz"
        echo
        echo "## What each line is"
        echo
        echo "- \`crash_same_name\`, \`crash_new_name\`: events stream in while ottoscaler is killed"
        echo "  with SIGKILL at random moments and restarted under the same consumer name, or"
        echo "  a new one (with \`claim_idle\` 2 s)."
        echo "- \`two_consumers\`: two ottoscalers; one is killed while it holds pending entries."
        echo "- \`adopted_*\`: a pod adopted while its event was pending elsewhere (acknowledged"
        echo "  by another replica, or trimmed and dead-lettered) is still cleaned up."
        echo "- \`redis_restart\`: Redis (appendonly, fsync always) killed or stopped, restarted."
        echo "- \`redis_refused_reconnects\`: Redis drops every connection and refuses"
        echo "  authentication for 5 s; the reader and the results publisher must recover."
        echo "- \`apiserver_restart\`: kube-apiserver killed or stopped and restarted on its etcd."
        echo "- \`api_clean\`, \`api_faults\`: the same workload through a fault-injecting proxy,"
        echo "  without and with faults (429 with Retry-After, 500, 503, resets, delays)."
        echo "- \`input_validation\`: property test of event validation against the contract."
        echo "- \`hostile_entries\`: hostile entries through Redis between valid events."
        echo "- \`hostile_metadata\`, \`secrets\`: event content cannot change the pod spec;"
        echo "  passwords and tokens never reach logs, metrics or printed configuration."
        echo "- \`fuzz_event_fields\`: the cargo-fuzz target of the event parser."
        echo "- \`ha-handover\`: two replicas electing a leader on a Lease (default timings"
        echo "  15s/10s/2s), ~20 events/s; the leader is stopped with SIGTERM \`handovers\` times."
        echo "  \`intake_gap\`: last entry read by the old leader to the first read by the new one."
        echo "- \`ha-failover\`: the leader is killed with SIGKILL while it holds pending entries"
        echo "  (Lease 3s/2s/500ms, \`claim_idle\` 10m); \`kill_to_read\`: kill to the new leader's"
        echo "  first read."
        echo "- \`ha-partition\`: every API request of the leader is reset at the fault proxy"
        echo "  while Redis stays up; times after the cut, from both logs."
        echo "- \`ha-chaos\`: two replicas, leader kills and rolling restarts (maxSurge 1,"
        echo "  maxUnavailable 0) under load."
        echo
        echo "lost = a worker without a result; duplicated = a second result or a second pod"
        echo "(distinct uid, as the API server's watch saw it) for the same (event, worker);"
        echo "orphaned = a pod left behind at the end."
        echo
        echo "| test | events | workers | disruptions | faults injected | inputs tried | lost | duplicated | orphaned | other | seconds |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|"
        sed -n 's/^RELIABILITY: //p' "$report" | awk '
        function v(k) { return (k in f) ? f[k] : "-" }
        function list(keys,    n, i, out, parts) {
            n = split(keys, parts, " ")
            out = ""
            for (i = 1; i <= n; i++) if (parts[i] in f) out = out (out == "" ? "" : ", ") parts[i] "=" f[parts[i]]
            return out == "" ? "-" : out
        }
        {
            split("", f)
            for (i = 1; i <= NF; i++) { eq = index($i, "="); f[substr($i, 1, eq - 1)] = substr($i, eq + 1) }
            faults = v("faults")
            if ("f429" in f) faults = faults " (429: " f["f429"] ", 500: " f["f500"] ", 503: " f["f503"] ", resets: " f["resets"] ", delays: " f["delays"] ")"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f["test"], v("events"), v("workers"),
                list("kills restarts pending_at_kills pending_on_killed redis_kills redis_stops apiserver_kills apiserver_stops apiserver_down_seconds handovers leader_kills rolling_restarts"),
                faults, v("inputs"), v("lost"), v("duplicated"), v("orphaned"),
                list("requests_per_worker clean_per_worker faulty_per_worker ratio accepted refused disagreements hostile_dead_lettered problems leaks crashes intake_gap_p50_s intake_gap_max_s kill_to_read_p50_s kill_to_read_max_s old_last_read_after_cut_s old_last_delete_after_cut_s old_stopped_after_cut_s new_acquired_after_cut_s"),
                v("seconds")
        }'
        echo
        echo "Every line the tests printed (a seed replays a run: \`CHAOS_SEED=<seed>\`):"
        echo
        echo '```text'
        cat "$report"
        echo '```'
    } >docs/reliability.md
}

if [ "${1:-}" = "--report-only" ]; then
    [ -f "$meta" ] || { echo "chaos: no earlier run in $out" >&2; exit 1; }
    write_report
    exit 0
fi

run_suite
status=$?
say "writing docs/reliability.md"
write_report
say "done: exit $status; see docs/reliability.md"
exit "$status"
