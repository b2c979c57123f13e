//! B5 restart: the running instance is stopped (SIGTERM; its pods stay), and a fresh
//! process is timed from spawn until it is ready (`/readyz` 200) and has adopted every
//! live pod (`ottoscaler_workers_active` = N).

use std::time::Duration;

use anyhow::Result;

use super::{CpuMeter, mib};
use crate::bench_env::{BenchEnv, Lane};
use crate::otto::{Otto, OttoConfig};
use crate::report::json::round;
use crate::report::{Row, Target};

pub fn label(pods: u32) -> String {
    format!("restart: adopt {pods} live pods, ready")
}

/// Stops `old`, starts a fresh instance on the same lane and config, and measures it;
/// returns the fresh instance (it keeps the workers) and the B5 row.
pub async fn measure(
    env: &BenchEnv,
    lane: &Lane,
    config: &OttoConfig,
    old: Otto,
    pods: u32,
) -> Result<(Otto, Row)> {
    let exit = old.stop().await?;
    let cpu = CpuMeter::start(env, None);
    let mut fresh = Otto::start(env, lane, config, "b5-fresh")?;
    let ready = fresh.wait_ready(Duration::from_secs(60)).await?;
    fresh
        .wait_active(u64::from(pods), Duration::from_secs(60))
        .await?;
    let adopted = fresh.started.elapsed();
    let memory = fresh.memory()?;
    let requests = fresh.metrics().await?.kube_requests_by_verb();
    let row = Row::new("B5", label(pods), adopted.as_secs_f64(), "s")
        .target(Target::at_most(5.0))
        .method(format!(
            "With {pods} pods Running, the instance gets SIGTERM (pods are left alone) and a \
             fresh ottoscaler process is started: time from spawn until /readyz answers 200 \
             and ottoscaler_workers_active = {pods} (polled every 50 ms)."
        ))
        .detail("readyz_after_s", round(ready.as_secs_f64(), 3))
        .detail("old_instance_exit_code", exit)
        .detail(
            "kube_requests_while_adopting",
            serde_json::to_value(&requests)?,
        )
        .detail("peak_rss_mib_after_adoption", round(mib(memory.peak), 1))
        .detail("cpu_seconds", cpu.json());
    Ok((fresh, row))
}
