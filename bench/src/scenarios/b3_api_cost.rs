//! B3 API cost: Kubernetes requests per worker lifecycle, for short and long workers,
//! against the polling design's 2 + T/2 (create, delete, and a GET every 2 s).
//!
//! ottoscaler's own `ottoscaler_kube_requests_total` (every verb, watches and lists
//! included, but `update`: the leader's Lease renewals, a fixed cost of the replica of
//! 0.5 requests/s with the default `ha.retry_period`, not of its workers, reported apart)
//! is the value; the API server's `apiserver_request_total` over the same
//! window is the cross-check (requests on `pods` without subresource, watches left
//! out: see [`crate::apiserver`]). ottoscaler runs with its default settings.

use std::time::Duration;

use anyhow::Result;

use super::CpuMeter;
use crate::apiserver;
use crate::args::Plan;
use crate::bench_env::BenchEnv;
use crate::events;
use crate::otto::{Otto, OttoConfig};
use crate::recorder::Recorder;
use crate::report::json::round;
use crate::report::{Row, Section, Target};

/// Pause between the last pod gone and the final scrape.
const SETTLE: Duration = Duration::from_secs(1);

fn label(seconds: u32) -> String {
    format!("API requests per worker, {seconds} s workers (Lease renewals apart)")
}

/// The verb of the Lease renewals: ottoscaler never updates a pod.
const LEASE_VERB: &str = "update";

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    let mut section = Section::default();
    for &seconds in &plan.cost_run_seconds {
        match measure(env, plan.cost_workers, seconds).await {
            Ok(row) => section.rows.push(row),
            Err(err) => {
                let label = label(seconds);
                section
                    .rows
                    .extend(Section::failed(&[("B3", label.as_str())], &err).rows);
            }
        }
    }
    section
}

async fn measure(env: &BenchEnv, workers: u32, seconds: u32) -> Result<Row> {
    let lane = env.lane(&format!("b3-{seconds}s")).await?;
    let recorder = Recorder::start(env.env.config(), &lane.namespace).await?;
    let config = OttoConfig {
        run_seconds: f64::from(seconds),
        ..OttoConfig::default()
    };
    let mut otto = Otto::start(env, &lane, &config, &format!("b3-{seconds}s"))?;
    otto.wait_ready(Duration::from_secs(60)).await?;
    let client = env.client();
    let mut con = events::connect(&env.redis.url()).await?;

    let cpu = CpuMeter::start(env, Some(otto.pid()));
    let window_start = std::time::Instant::now();
    let otto_before = otto.metrics().await?;
    let api_before = apiserver::scrape(&client).await?;
    events::scale_up(&mut con, &lane.stream, &format!("b3-{seconds}s"), workers).await?;
    let total = workers as usize;
    recorder
        .wait(
            "every worker's pod gone",
            Duration::from_secs(u64::from(seconds) + 120),
            |c| c.gone >= total,
        )
        .await?;
    events::wait_len(
        &mut con,
        &lane.results,
        u64::from(workers),
        Duration::from_secs(30),
    )
    .await?;
    // The watch may show a pod gone before ottoscaler has counted its delete's response.
    tokio::time::sleep(SETTLE).await;
    let otto_after = otto.metrics().await?;
    let api_after = apiserver::scrape(&client).await?;
    otto.stop().await?;

    let by_verb = |m: &crate::otto::Metrics| m.kube_requests_by_verb();
    let (before, after) = (by_verb(&otto_before), by_verb(&otto_after));
    let otto_delta: std::collections::BTreeMap<String, f64> = after
        .iter()
        .map(|(verb, v)| (verb.clone(), v - before.get(verb).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let window = window_start.elapsed();
    let lease_updates = otto_delta.get(LEASE_VERB).copied().unwrap_or(0.0);
    let otto_total: f64 = otto_delta.values().sum::<f64>() - lease_updates;
    let api_delta = api_after.since(&api_before).pod_requests();
    let api_total: f64 = api_delta.values().sum();
    // kubesim deletes a terminal pod it sees with a deletionTimestamp; when the API
    // server already removed it, that DELETE ends in 404 and is not ottoscaler's.
    let api_not_404: f64 = api_delta
        .iter()
        .filter(|(k, _)| !k.ends_with(" 404"))
        .map(|(_, v)| v)
        .sum();
    let w = f64::from(workers);
    let model = 2.0 + f64::from(seconds) / 2.0;
    Ok(Row::new("B3", label(seconds), otto_total / w, "requests")
        .model_baseline(model)
        .target(Target::at_most(2.2))
        .method(format!(
            "One scale_up of {workers} workers running {seconds} s (ottoscaler defaults: qps \
             50, burst 100): the increase of ottoscaler's ottoscaler_kube_requests_total \
             (all verbs but update, the leader's Lease renewals: a fixed cost of the \
             replica, not of its workers, in the detail) from before the XADD to after \
             every pod is gone, divided by {workers}. Baseline: a model, not a measurement: the polling design's 2 + T/2 = \
             {model} (a create, a delete and a GET every 2 s of the run). Cross-check: the \
             API server's apiserver_request_total delta on pods (no subresource, no \
             watches) over the same window; it also holds kubesim's DELETEs of pods it saw \
             terminating (mostly 404, as the API server removed them already)."
        ))
        .detail("ottoscaler_by_verb", serde_json::to_value(&otto_delta)?)
        .detail("lease_updates", lease_updates)
        .detail(
            "lease_updates_per_second",
            round(lease_updates / window.as_secs_f64().max(0.001), 3),
        )
        .detail("apiserver_pods_by_verb", serde_json::to_value(&api_delta)?)
        .detail(
            "ottoscaler_deletes_counted_of_workers",
            format!(
                "{} of {workers}",
                otto_delta.get("delete").copied().unwrap_or(0.0)
            ),
        )
        .detail("apiserver_per_worker", round(api_total / w, 3))
        .detail(
            "apiserver_per_worker_without_404",
            round(api_not_404 / w, 3),
        )
        .detail("cpu_seconds", cpu.json()))
}
