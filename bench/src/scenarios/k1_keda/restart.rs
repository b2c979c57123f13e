//! K1's restart part: each system gets a paced run of one-pod entries and is SIGKILLed
//! half-way through, then started again at once with the same settings (ottoscaler:
//! the same config and consumer name, as Kubernetes restarts a crashed container;
//! KEDA: the operator process). After a bounded wait for everything to settle, each
//! entry is accounted for: lost (never acknowledged, or no pod of it ran), or given
//! more than one pod.
//!
//! ottoscaler's pods carry their entry (event-id annotation), so each entry is checked
//! on its own, and a pod name created twice shows as two uids. KEDA's Jobs carry none:
//! its agent (the harness) takes whichever entry is next, and Redis hands an entry to
//! one reader only, so an entry is never run twice there; what KEDA can do instead is
//! create more pods than entries (their agent finds nothing) or leave entries unread.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

#[cfg(test)]
use super::runs::Measured;
use super::runs::{Run, Settled};
use super::{keda_coverage, keda_summary, otto_coverage, settled_text};
use crate::args::Paced;
use crate::report::Row;
use crate::stats::summarize;

/// How long each system gets to settle after the last entry of its restart run.
pub const SETTLE: Duration = Duration::from_secs(120);
/// KEDA must create no pod for this long before its restart run counts as settled.
pub const QUIET: Duration = Duration::from_secs(3);

fn lost_label(paced: Paced) -> String {
    format!(
        "restart mid-run: entries lost of {}, ottoscaler / KEDA",
        paced.count()
    )
}

const EXTRA: &str = "restart mid-run: pods beyond one per entry, ottoscaler / KEDA";
const WORST: &str = "restart mid-run: XADD -> pod created max, ottoscaler / KEDA";

pub fn labels(paced: Paced) -> Vec<String> {
    vec![lost_label(paced), EXTRA.into(), WORST.into()]
}

/// What one system did with the entries of its restart run.
#[derive(Debug, Clone, PartialEq)]
struct Accounting {
    entries: usize,
    /// Entries never acknowledged, or (ottoscaler) without a pod that ran.
    lost: usize,
    /// Pods beyond one per entry.
    extra_pods: usize,
    detail: Value,
}

/// ottoscaler: each entry by its pods (event-id annotation; a name with two uids was
/// created twice) and its results.
fn ottoscaler(run: &Run) -> Accounting {
    #[derive(Default)]
    struct Entry {
        pods: usize,
        ran: bool,
        results: usize,
    }
    let mut entries: HashMap<&str, Entry> = run
        .ids
        .iter()
        .map(|id| (id.as_str(), Entry::default()))
        .collect();
    let mut foreign_pods = 0;
    for pod in &run.measured.pods {
        match pod.event_id.as_deref().and_then(|id| entries.get_mut(id)) {
            Some(e) => {
                e.pods += pod.uids.len().max(1);
                e.ran |= pod.running_us.is_some();
            }
            None => foreign_pods += 1,
        }
    }
    for result in &run.results {
        if let Some(e) = entries.get_mut(result.event_id.as_str()) {
            e.results += 1;
        }
    }
    let unacked: std::collections::HashSet<&str> = run.unacked.iter().map(String::as_str).collect();
    let lost = entries
        .iter()
        .filter(|(id, e)| e.pods == 0 || !e.ran || unacked.contains(*id))
        .count();
    let count = |f: fn(&Entry) -> bool| entries.values().filter(|e| f(e)).count();
    let not_succeeded = run
        .results
        .iter()
        .filter(|r| r.outcome != "succeeded")
        .count();
    Accounting {
        entries: run.ids.len(),
        lost,
        extra_pods: entries.values().map(|e| e.pods.saturating_sub(1)).sum(),
        detail: json!({
            "entries": run.ids.len(),
            "pods_created": entries.values().map(|e| e.pods).sum::<usize>(),
            "entries_without_a_pod": count(|e| e.pods == 0),
            "entries_whose_pod_never_ran": count(|e| e.pods > 0 && !e.ran),
            "entries_with_two_pods": count(|e| e.pods > 1),
            "entries_unacknowledged_at_end": run.unacked.len(),
            "entries_without_a_result": count(|e| e.results == 0),
            "entries_with_two_results": count(|e| e.results > 1),
            "results_not_succeeded": not_succeeded,
            "pods_of_no_entry_of_the_run": foreign_pods,
        }),
    }
}

/// KEDA: entries by the consumer group (acknowledged or not), pods and jobs by count,
/// agent runs by the harness' tally.
fn keda(run: &Run) -> Accounting {
    Accounting {
        entries: run.ids.len(),
        lost: run.unacked.len(),
        extra_pods: run.measured.pods.len().saturating_sub(run.ids.len()),
        detail: keda_summary(run),
    }
}

/// When the system was killed and how it came back, for the detail.
fn crash_detail(run: &Run) -> Value {
    let Some(crash) = &run.crash else {
        return Value::Null;
    };
    let first_pod_after_kill_ms = run
        .measured
        .pods
        .iter()
        .filter_map(|p| p.seen_us)
        .filter(|seen| *seen > crash.killed_us)
        .min()
        .map(|seen| (seen - crash.killed_us) as f64 / 1000.0);
    json!({
        "pending_entries_at_kill": crash.pending_at_kill,
        "lane_pods_not_deleted_at_kill": crash.lane_pods_not_deleted_at_kill,
        "kill_to_ready_s": crash.ready_after.map(|d| d.as_secs_f64()),
        "kill_to_next_pod_created_ms": first_pod_after_kill_ms,
        "settled": settled_text(&run.settled),
    })
}

pub fn rows(paced: Paced, otto_run: &Run, keda_run: &Run) -> Vec<Row> {
    let (o, k) = (ottoscaler(otto_run), keda(keda_run));
    let unsettled: Vec<String> = [("ottoscaler", otto_run), ("KEDA", keda_run)]
        .into_iter()
        .filter_map(|(who, run)| match &run.settled {
            Settled::Left(left) => Some(format!("{who}: {left}")),
            Settled::After(_) => None,
        })
        .collect();
    let shortfall = (!unsettled.is_empty()).then(|| unsettled.join("; "));
    let o_latency = summarize(&otto_coverage(otto_run).latencies);
    let k_latency = summarize(&keda_coverage(keda_run).latencies);
    let json_or_null = |s: Option<crate::stats::Summary>| s.map_or(Value::Null, |s| s.json());
    let how = format!(
        "{} one-pod scale_up entries at {}/s for {} s to each system (ottoscaler first, \
         then KEDA with pollingInterval {} s, the harness its agent); {:.1} s after the \
         first entry the system gets SIGKILL and is started again at once with the same \
         settings (ottoscaler: the same config and consumer name, as Kubernetes restarts a \
         crashed container; KEDA: the keda-operator process). Then up to {} s for it to \
         settle (ottoscaler: a result for every entry, nothing pending, every pod gone; \
         KEDA: every entry acknowledged, every pod finished, no new pod for {} s).",
        paced.count(),
        paced.rate,
        paced.seconds,
        super::POLLING_SECONDS,
        f64::from(paced.seconds) / 2.0,
        SETTLE.as_secs(),
        QUIET.as_secs(),
    );
    let lost = Row::new("K1", lost_label(paced), o.lost as f64, "entries")
        .baseline(k.lost as f64)
        .shortfall(shortfall.clone())
        .method(format!(
            "{how} Lost: ottoscaler, an entry still unacknowledged in its consumer group at \
             the end, or without a pod that reached Running (by the pod's event-id \
             annotation); KEDA, an entry its agents' group never acknowledged (never \
             delivered, or pending), as its Jobs carry no entry."
        ))
        .detail("ottoscaler", o.detail.clone())
        .detail("keda", k.detail.clone())
        .detail("ottoscaler_crash", crash_detail(otto_run))
        .detail("keda_crash", crash_detail(keda_run));
    let extra = Row::new("K1", EXTRA, o.extra_pods as f64, "pods")
        .baseline(k.extra_pods as f64)
        .shortfall(shortfall.clone())
        .method(format!(
            "The same runs. ottoscaler: pods beyond the first of each entry (two pods of an \
             entry: its work ran twice), counting a pod name created a second time (a \
             second uid on the harness' watch). KEDA: pods beyond the entries sent (each \
             such job's agent found no entry: Redis hands an entry to one reader only, \
             so KEDA runs no entry twice but may start jobs for nothing). Of {} entries \
             each.",
            o.entries.max(k.entries)
        ));
    let worst = Row::new("K1", WORST, o_latency.map_or(f64::NAN, |s| s.max), "ms")
        .baseline(k_latency.map_or(f64::NAN, |s| s.max))
        .shortfall(shortfall)
        .method(
            "The same runs: the longest XADD -> pod ADDED on the harness' watch (an entry \
         sent while the system was down waits for the fresh process; KEDA: the n-th new \
         pod against the n-th entry).",
        )
        .detail("ottoscaler_ms", json_or_null(o_latency))
        .detail("keda_ms", json_or_null(k_latency));
    vec![lost, extra, worst]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Published;
    use crate::recorder::PodTimes;
    use std::collections::BTreeMap;

    fn run(ids: &[&str], pods: Vec<PodTimes>, results: &[&str], unacked: &[&str]) -> Run {
        Run {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            measured: Measured {
                pods,
                requests: BTreeMap::new(),
                jobs_created: 0.0,
                cpu_seconds: None,
                own_requests: None,
            },
            unacked: unacked.iter().map(|s| s.to_string()).collect(),
            results: results
                .iter()
                .map(|id| Published {
                    id: "r".into(),
                    event_id: id.to_string(),
                    outcome: "succeeded".into(),
                    worker_index: Some(0),
                })
                .collect(),
            tally: Default::default(),
            crash: None,
            settled: Settled::After(Duration::ZERO),
        }
    }

    fn pod(event: &str, uids: usize, ran: bool) -> PodTimes {
        PodTimes {
            event_id: Some(event.into()),
            seen_us: Some(1),
            running_us: ran.then_some(2),
            uids: (0..uids).map(|i| format!("u{i}")).collect(),
            ..PodTimes::default()
        }
    }

    #[test]
    fn an_ottoscaler_entry_is_lost_without_a_pod_that_ran_or_an_ack() {
        let r = run(
            &["1-0", "2-0", "3-0", "4-0", "5-0"],
            // 1: fine; 2: created twice; 3: never ran; 4: no pod; 5: ran, unacked.
            vec![
                pod("1-0", 1, true),
                pod("2-0", 2, true),
                pod("3-0", 1, false),
                pod("5-0", 1, true),
            ],
            &["1-0", "2-0", "2-0", "5-0"],
            &["5-0"],
        );
        let a = ottoscaler(&r);
        assert_eq!((a.lost, a.extra_pods), (3, 1));
        assert_eq!(a.detail["entries_with_two_results"], 1);
        assert_eq!(a.detail["entries_without_a_result"], 2);
        assert_eq!(a.detail["pods_created"], 5);
    }

    #[test]
    fn keda_is_counted_by_its_group_and_its_pods() {
        let pods = (0..4).map(|_| pod("none", 1, true)).collect();
        let r = run(&["1-0", "2-0", "3-0"], pods, &[], &["3-0"]);
        let a = keda(&r);
        assert_eq!((a.lost, a.extra_pods), (1, 1));
    }
}
