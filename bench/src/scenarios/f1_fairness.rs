//! F1 fairness: `limits.max_workers` 10, pods that run 1 s; tenant A sends 300 one-pod
//! scale_ups at once (one pipeline), then tenant B sends 20 at 1/s. Run once with
//! `scheduling.policy = "fifo"` and once with `"fair"` (the default), each on a lane and
//! an ottoscaler of its own. B's queue wait per event: the XADD (entry id, ms) to the
//! ADDED event of its pod on the harness' watch (when ottoscaler gave it a slot and
//! the API server stored the pod; Running comes a kubesim bind later and is kept in the
//! detail). A's total time: its first XADD to its last worker's result on the results
//! stream (the result entry's id, ms: both on Redis' clock).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::b1_latency::coverage;
use super::{CpuMeter, section_of};
use crate::args::Plan;
use crate::bench_env::BenchEnv;
use crate::events::{self, Tally};
use crate::otto::{Otto, OttoConfig};
use crate::recorder::{PodTimes, Recorder};
use crate::report::json::round;
use crate::report::{Row, Section};
use crate::stats::{Summary, summarize};

fn labels(plan: &Plan) -> [String; 3] {
    let (a, b, w) = (
        plan.fairness_flood,
        plan.fairness_latecomers,
        plan.fairness_max_workers,
    );
    let setup = format!("max_workers {w}; A: {a} events at once, B: {b} at 1/s");
    [
        format!("tenant B's queue wait p50, fair (baseline fifo; {setup})"),
        format!("tenant B's queue wait p99, fair (baseline fifo; {setup})"),
        format!("tenant A's total time, fair (baseline fifo; {setup})"),
    ]
}

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    section_of("F1", &labels(plan), measure(env, plan).await)
}

/// What one policy's run gave.
struct PolicyRun {
    /// B's XADD -> pod ADDED, and -> pod Running, in seconds.
    b_wait: Summary,
    b_wait_running: Option<Summary>,
    /// A's first XADD -> A's last result, in seconds.
    a_total: f64,
    /// Every event's first XADD -> last result, in seconds.
    all_total: f64,
    tally: Tally,
    cpu: Value,
}

impl PolicyRun {
    fn json(&self) -> Value {
        serde_json::json!({
            "b_xadd_to_pod_added_s": seconds_json(&self.b_wait),
            "b_xadd_to_pod_running_s": self.b_wait_running.as_ref().map(seconds_json),
            "a_total_s": round(self.a_total, 2),
            "all_total_s": round(self.all_total, 2),
            "results_per_worker": self.tally.json(),
            "cpu_seconds": self.cpu,
        })
    }
}

/// A [`Summary`] of seconds, rounded to ms.
fn seconds_json(s: &Summary) -> Value {
    serde_json::json!({
        "count": s.count,
        "min": round(s.min, 3),
        "p50": round(s.p50, 3),
        "p99": round(s.p99, 3),
        "max": round(s.max, 3),
    })
}

async fn measure(env: &BenchEnv, plan: &Plan) -> Result<Vec<Row>> {
    let fifo = one_policy(env, plan, "fifo").await.context("fifo")?;
    let fair = one_policy(env, plan, "fair").await.context("fair")?;
    let [b50, b99, a_total] = labels(plan);
    let method = format!(
        "limits.max_workers {w}, pods run 1 s (kubesim), qps/burst 50/100 (defaults). Tenant \
         A (metadata field tenant=A) XADDs {a} one-pod scale_ups in one pipeline, then \
         tenant B XADDs {b}, one per second. Each policy (scheduling.policy fifo, then fair) \
         runs on its own lane and ottoscaler. Queue wait of a B event: its XADD (entry id, \
         ms) to the ADDED event of its pod on the harness' own watch, i.e. when ottoscaler \
         gave it a slot and the API server stored the pod (Running, a kubesim bind later, is \
         in the detail). A's total time: A's first XADD to the results-stream entry (its \
         id's ms) of A's last worker. Value: fair; baseline: fifo; ratio fair / fifo.",
        w = plan.fairness_max_workers,
        a = plan.fairness_flood,
        b = plan.fairness_latecomers,
    );
    let shortfall = fifo
        .tally
        .shortfall()
        .map(|s| format!("fifo: {s}"))
        .or_else(|| fair.tally.shortfall().map(|s| format!("fair: {s}")));
    let row = |label: String, fair_value: f64, fifo_value: f64| {
        Row::new("F1", label, fair_value, "s")
            .baseline(fifo_value)
            .shortfall(shortfall.clone())
            .method(method.clone())
            .detail("fifo", fifo.json())
            .detail("fair", fair.json())
    };
    Ok(vec![
        row(b50, fair.b_wait.p50, fifo.b_wait.p50),
        row(b99, fair.b_wait.p99, fifo.b_wait.p99),
        row(a_total, fair.a_total, fifo.a_total),
    ])
}

async fn one_policy(env: &BenchEnv, plan: &Plan, policy: &str) -> Result<PolicyRun> {
    let config = OttoConfig {
        max_workers: plan.fairness_max_workers,
        // At most max_workers (checked at start); the events are one-pod anyway.
        max_pods_per_event: plan.fairness_max_workers,
        run_seconds: 1.0,
        ..OttoConfig::default()
    };
    let name = format!("f1-{policy}");
    let lane = env.lane(&name).await?;
    let recorder = Recorder::start(env.env.config(), &lane.namespace).await?;
    let extra = [("OTTOSCALER_SCHEDULING__POLICY", policy.to_string())];
    let mut otto = Otto::start_with(env, &lane, &config, &name, &extra)?;
    otto.wait_ready(Duration::from_secs(60)).await?;
    let mut con = events::connect(&env.redis.url()).await?;

    let cpu = CpuMeter::start(env, Some(otto.pid()));
    let a_ids = events::scale_up_many_with(
        &mut con,
        &lane.stream,
        "f1-a",
        plan.fairness_flood,
        1,
        &[("tenant", "A")],
    )
    .await?;
    let b_ids = events::send_paced(
        &mut con,
        &lane.stream,
        "f1-b",
        1,
        plan.fairness_latecomers,
        &[("tenant", "B")],
    )
    .await?;
    let sent: Vec<(String, u32)> = a_ids
        .iter()
        .chain(&b_ids)
        .map(|id| (id.clone(), 1))
        .collect();
    // The flood alone takes flood / max_workers pod lifetimes; three times that and a
    // minute is plenty on a loaded machine.
    let timeout = Duration::from_secs(
        60 + 3 * u64::from(plan.fairness_flood + plan.fairness_latecomers)
            / u64::from(plan.fairness_max_workers.max(1)),
    );
    let tally =
        events::wait_for_results(&mut con, &lane.stream, &lane.results, &sent, timeout).await?;
    let results = events::results(&mut con, &lane.results).await?;
    let cpu = cpu.json();
    let code = otto.stop().await?;
    if code != Some(0) {
        eprintln!("bench: {name}: ottoscaler exited with {code:?}");
    }

    let pods = recorder.pods();
    let b_wait = waits(&b_ids, &pods, |t| t.seen_us);
    let b_wait = summarize(&b_wait).context("no pod of tenant B was seen")?;
    let b_wait_running = summarize(&waits(&b_ids, &pods, |t| t.running_us));
    let a_total = total(&a_ids, &results).context("no result of tenant A")?;
    let all_total = total(&[a_ids, b_ids].concat(), &results).context("no result")?;
    Ok(PolicyRun {
        b_wait,
        b_wait_running,
        a_total,
        all_total,
        tally,
        cpu,
    })
}

/// Per event of `ids`: its XADD to `at` of its pod, in seconds (events whose pod lacks
/// the time are left out; the tally tells whether any worker went missing).
fn waits(
    ids: &[String],
    pods: &HashMap<String, PodTimes>,
    at: fn(&PodTimes) -> Option<i64>,
) -> Vec<f64> {
    let pods: Vec<&PodTimes> = pods.values().collect();
    let ms = coverage(ids, &pods, at).latencies;
    ms.into_iter().map(|ms| ms / 1000.0).collect()
}

/// The first XADD of `ids` to the last result of their workers (entry ids' ms), in
/// seconds.
fn total(ids: &[String], results: &[events::Published]) -> Option<f64> {
    let first = ids.iter().filter_map(|id| events::id_ms(id)).min()?;
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let last = results
        .iter()
        .filter(|r| wanted.contains(r.event_id.as_str()))
        .filter_map(|r| events::id_ms(&r.id))
        .max()?;
    Some((last - first) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_runs_from_the_entry_id_to_the_pod_time() {
        let pods: HashMap<String, PodTimes> = [(
            "p".to_string(),
            PodTimes {
                event_id: Some("1000-0".into()),
                seen_us: Some(3_500_000),
                ..PodTimes::default()
            },
        )]
        .into();
        let ids = vec!["1000-0".to_string(), "2000-0".to_string()];
        assert_eq!(waits(&ids, &pods, |t| t.seen_us), vec![2.5]);
        assert!(waits(&ids, &pods, |t| t.running_us).is_empty());
    }

    #[test]
    fn the_total_runs_from_the_first_xadd_to_the_last_result() {
        let result = |id: &str, event: &str| events::Published {
            id: id.into(),
            outcome: "succeeded".into(),
            event_id: event.into(),
            worker_index: Some(0),
        };
        let ids = vec!["1000-0".to_string(), "1000-1".to_string()];
        let results = [
            result("4000-0", "1000-1"),
            result("9000-0", "7777-0"),
            result("3000-0", "1000-0"),
        ];
        assert_eq!(total(&ids, &results), Some(3.0));
        assert_eq!(total(&ids, &[]), None);
    }
}
