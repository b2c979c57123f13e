//! B4 memory: ottoscaler's peak RSS (VmHWM) with N workers alive at once, N stepping
//! up (e.g. 1,000, 5,000, 10,000) in one namespace; pods run an hour, so none ends.
//! At the step B5 names, the instance is stopped and a fresh one adopts the live pods
//! ([`super::b5_restart`]); the later steps are measured on that fresh instance.

use std::time::Duration;

use anyhow::Result;

use super::{CpuMeter, b5_restart, mib};
use crate::args::Plan;
use crate::bench_env::BenchEnv;
use crate::events;
use crate::otto::{DEFAULT_MAX_CONCURRENT_CREATES, Otto, OttoConfig};
use crate::procfs;
use crate::recorder::Recorder;
use crate::report::json::round;
use crate::report::{Row, Section, Target};

/// Pods per scale_up event (and `limits.max_pods_per_event`).
const PODS_PER_EVENT: u32 = 1000;

fn label(workers: u32) -> String {
    format!("peak RSS, {workers} workers")
}

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    let mut section = Section::default();
    if let Err(err) = measure(env, plan, &mut section).await {
        let done: Vec<&str> = section.rows.iter().map(|r| r.id).collect();
        let mut missing: Vec<(&'static str, String)> = plan
            .memory_steps
            .iter()
            .filter(|s| !section.rows.iter().any(|r| r.label == label(**s)))
            .map(|s| ("B4", label(*s)))
            .collect();
        if !done.contains(&"B5") {
            missing.push(("B5", b5_restart::label(plan.restart_pods)));
        }
        let ids: Vec<(&'static str, &str)> =
            missing.iter().map(|(i, l)| (*i, l.as_str())).collect();
        if !ids.is_empty() {
            section.rows.extend(Section::failed(&ids, &err).rows);
        }
    }
    section
}

async fn measure(env: &BenchEnv, plan: &Plan, section: &mut Section) -> Result<()> {
    let max = plan.memory_steps.iter().copied().max().unwrap_or(1);
    let per_event = PODS_PER_EVENT.min(max);
    let config = OttoConfig {
        qps: 1000,
        burst: 1000,
        max_concurrent_creates: DEFAULT_MAX_CONCURRENT_CREATES,
        http2: true,
        max_workers: max,
        max_pods_per_event: per_event,
        run_seconds: 3600.0,
    };
    let lane = env.lane("b4").await?;
    let recorder = Recorder::start(env.env.config(), &lane.namespace).await?;
    let mut otto = Otto::start(env, &lane, &config, "b4")?;
    otto.wait_ready(Duration::from_secs(60)).await?;
    let idle = otto.memory()?;
    let mut con = events::connect(&env.redis.url()).await?;
    let mut instance = "first instance";
    let mut live = 0;
    for &step in &plan.memory_steps {
        let cpu = CpuMeter::start(env, Some(otto.pid()));
        let mut to_add = step - live;
        let mut event = 0;
        while to_add > 0 {
            let pods = to_add.min(per_event);
            events::scale_up(&mut con, &lane.stream, &format!("b4-{step}-{event}"), pods).await?;
            to_add -= pods;
            event += 1;
        }
        let timeout = Duration::from_secs(60 + u64::from(step - live) / 15);
        let most_sockets = wait_counting_sockets(&recorder, otto.pid(), step, timeout).await?;
        otto.wait_active(u64::from(step), Duration::from_secs(60))
            .await?;
        // Let the last watch events and result-less bookkeeping settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let memory = otto.memory()?;
        let per_worker = memory.peak.saturating_sub(idle.current) as f64 / f64::from(step);
        let mut row = Row::new("B4", label(step), mib(memory.peak), "MiB")
            .method(format!(
                "{step} workers alive at once (pods annotated run-seconds 3600; scale_up events \
                 of up to {per_event} pods; max_workers {max}, qps/burst 1000): VmHWM of the \
                 ottoscaler process from /proc/PID/status once ottoscaler_workers_active = \
                 {step} and every pod is Running. Bytes per worker: (VmHWM - idle VmRSS) / \
                 workers. Measured on the {instance}."
            ))
            .detail("peak_rss_mib", round(mib(memory.peak), 1))
            .detail("current_rss_mib", round(mib(memory.current), 1))
            .detail("idle_rss_mib", round(mib(idle.current), 1))
            .detail("bytes_per_worker", per_worker.round())
            .detail("instance", instance)
            .detail("most_sockets_while_creating", most_sockets)
            .detail(
                "kube_requests",
                serde_json::to_value(otto.metrics().await?.kube_requests_by_code())?,
            )
            .detail("cpu_seconds", cpu.json());
        if step == max {
            row = row.target(Target::at_most(100.0));
        }
        section.rows.push(row);
        section.memory.push((step, mib(memory.peak)));
        live = step;
        if step == plan.restart_pods {
            let (fresh, row) = b5_restart::measure(env, &lane, &config, otto, step).await?;
            otto = fresh;
            section.rows.push(row);
            instance = "fresh instance of B5 (it adopted the earlier pods)";
        }
    }
    otto.stop().await?;
    Ok(())
}

/// Waits until `step` pods are Running; returns the most sockets ottoscaler held
/// meanwhile (sampled every 100 ms): its connections to the API server.
async fn wait_counting_sockets(
    recorder: &Recorder,
    pid: u32,
    step: u32,
    timeout: Duration,
) -> Result<usize> {
    let target = step as usize;
    let mut most = 0;
    let what = format!("{step} pods running");
    let wait = recorder.wait(&what, timeout, |c| c.running >= target);
    let mut wait = std::pin::pin!(wait);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            waited = &mut wait => {
                waited?;
                return Ok(most);
            }
            _ = tick.tick() => most = most.max(procfs::sockets(pid).unwrap_or(0)),
        }
    }
}
