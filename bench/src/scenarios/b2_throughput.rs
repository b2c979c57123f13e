//! B2 throughput: N one-pod events at once, pods that finish at once (kubesim
//! run-seconds 0); pods fully cycled per second (created -> finished -> result
//! published -> deleted -> gone), against the bare kube-rs client program ([`crate::ceiling`]) doing the
//! same pods with the same concurrency on the same control plane, right after.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::CpuMeter;
use crate::args::Plan;
use crate::bench_env::BenchEnv;
use crate::ceiling;
use crate::events;
use crate::otto::{DEFAULT_MAX_CONCURRENT_CREATES, Otto, OttoConfig};
use crate::recorder::{Recorder, now_us};
use crate::report::json::round;
use crate::report::{Row, Section, Target};

/// ottoscaler runs with qps/burst 1000 here, not the defaults (50/100): the label says so.
const LABEL: &str = "throughput, pods cycled per second (qps/burst 1000)";

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    match measure(env, plan).await {
        Ok(section) => section,
        Err(err) => Section::failed(&[("B2", LABEL)], &err),
    }
}

async fn measure(env: &BenchEnv, plan: &Plan) -> Result<Section> {
    let n = plan.throughput_events;
    let concurrency = plan.throughput_concurrency;
    // The client-side rate limit raised well above what the API server can take, so
    // the comparison is of the designs, not of a setting (the ceiling has no limit).
    let config = OttoConfig {
        qps: 1000,
        burst: 1000,
        max_concurrent_creates: DEFAULT_MAX_CONCURRENT_CREATES,
        http2: true,
        max_workers: concurrency,
        max_pods_per_event: 1,
        run_seconds: 0.0,
    };
    let timeout = Duration::from_secs(u64::from(n) / 5 + 120);

    // ottoscaler.
    let lane = env.lane("b2").await?;
    let recorder = Recorder::start(env.env.config(), &lane.namespace).await?;
    let mut otto = Otto::start(env, &lane, &config, "b2")?;
    otto.wait_ready(Duration::from_secs(60)).await?;
    let mut con = events::connect(&env.redis.url()).await?;
    let cpu = CpuMeter::start(env, Some(otto.pid()));
    let start_us = now_us();
    events::scale_up_many(&mut con, &lane.stream, "b2", n, 1).await?;
    let total = n as usize;
    recorder
        .wait("every pod gone", timeout, |c| c.gone >= total)
        .await?;
    events::wait_len(
        &mut con,
        &lane.results,
        u64::from(n),
        Duration::from_secs(30),
    )
    .await?;
    let cpu_otto = cpu.json();
    let results = events::results(&mut con, &lane.results).await?;
    let last_result_us = results
        .iter()
        .filter_map(|r| events::id_ms(&r.id))
        .max()
        .context("no result")?
        * 1000;
    let last_gone_us = recorder
        .pods()
        .values()
        .filter_map(|t| t.gone_us)
        .max()
        .context("no pod gone")?;
    let otto_seconds = (last_result_us.max(last_gone_us) - start_us) as f64 / 1e6;
    let succeeded = results.iter().filter(|r| r.outcome == "succeeded").count();
    // The watch may show a pod gone before ottoscaler has counted its delete's response.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = otto.metrics().await?.kube_requests_by_verb();
    let template = recorder
        .sample()
        .context("no pod to copy for the bare kube-rs client")?;
    drop(recorder);
    otto.stop().await?;

    // The ceiling, same pods and concurrency.
    let ceiling_lane = env.lane("b2-ceiling").await?;
    let cpu = CpuMeter::start(env, None);
    let run = tokio::time::timeout(
        timeout,
        ceiling::run(
            env.client(),
            &ceiling_lane.namespace,
            &template,
            n,
            concurrency,
        ),
    )
    .await
    .context("the bare kube-rs client program timed out")??;
    let cpu_ceiling = cpu.json();
    ensure!(
        run.pods == n,
        "the bare kube-rs client cycled {} pods, not {n}",
        run.pods
    );
    let ceiling_seconds = run.elapsed.as_secs_f64();

    let value = f64::from(n) / otto_seconds;
    let baseline = f64::from(n) / ceiling_seconds;
    let row = Row::new("B2", LABEL, value, "pods/s")
        .baseline(baseline)
        .target(Target::ratio_at_least(0.8))
        .method(format!(
            "{n} one-pod scale_up events XADDed at once (pipelined), kubesim run-seconds 0, \
             max_workers {concurrency}, qps/burst 1000 (not the defaults 50/100): N / (first XADD -> the later of the last \
             result entry and the last pod gone). Baseline: a bare kube-rs client program in \
             the harness (the stock kube client: HTTP/1.1, Nagle on), creating the same pods (a copy of ottoscaler's first pod), {concurrency} \
             at a time, waiting on one shared watch for Succeeded, deleting, and waiting for \
             DELETED; run right after on the same control plane."
        ))
        .detail("ottoscaler_seconds", round(otto_seconds, 2))
        .detail("bare_client_seconds", round(ceiling_seconds, 2))
        .detail("results_succeeded", succeeded)
        .detail("ottoscaler_kube_requests", serde_json::to_value(&requests)?)
        .detail("bare_client_requests", run.requests)
        .detail("cpu_seconds_ottoscaler_run", cpu_otto)
        .detail("cpu_seconds_bare_client_run", cpu_ceiling);
    Ok(Section {
        rows: vec![row],
        ..Section::default()
    })
}
