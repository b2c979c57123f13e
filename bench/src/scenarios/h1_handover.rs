//! H1 graceful hand-over: two ottoscaler processes elect their leader on the lane's
//! Lease with the default timings (15s/10s/2s) under ~20 one-pod events/s; the leader
//! gets SIGTERM N times (each time a new process joins as the standby, as in a rolling
//! update). Per hand-over, the intake gap: the last entry the old leader read to the
//! first the new leader read, from their logs (tests/ha.rs's measure).

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::ha::{self, Ended, HaRun, Lease};
use super::section_of;
use crate::args::Plan;
use crate::bench_env::BenchEnv;
use crate::report::json::round;
use crate::report::{Row, Section, Target};

/// The goal for every hand-over's intake gap.
const GOAL_SECONDS: f64 = 2.0;

fn labels(handovers: u32) -> [String; 2] {
    let what = "graceful hand-over (SIGTERM), intake gap";
    ha::labels(what, handovers, Lease::DEFAULT, "defaults")
}

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    section_of("H1", &labels(plan.handovers), measure(env, plan).await)
}

async fn measure(env: &BenchEnv, plan: &Plan) -> Result<Vec<Row>> {
    let (n, phase) = (plan.handovers, plan.handover_phase);
    let lease = (Lease::DEFAULT, &[][..]);
    let mut run = HaRun::start(env, "h1", lease, phase, n).await?;
    let mut handed = Vec::new();
    let mut exit_codes = Vec::new();
    for k in 0..n {
        run.due(k).await;
        let (old, leader) = run.replicas.take_leader()?;
        let code = leader.stop().await?;
        exit_codes.push(code);
        if code != Some(0) {
            bail!(
                "hand-over {k}: the leader exited with {code:?} after SIGTERM, not 0; its log \
                 ends:\n{}",
                ha::tail(&run.replicas.log(old)?)
            );
        }
        let new = run
            .replicas
            .take_over(Duration::from_secs(20))
            .await
            .with_context(|| format!("hand-over {k}"))?;
        handed.push((old, new));
    }
    let Ended {
        ids,
        tally,
        cpu,
        exited,
        replicas,
    } = run.finish().await?;

    let mut gaps = Vec::new();
    let mut release_to_acquire = Vec::new();
    for (k, (old, new)) in handed.iter().enumerate() {
        let (before, after) = (replicas.log(*old)?, replicas.log(*new)?);
        let (Some(last_read), Some(first_read)) = (
            ha::last(&before, ha::READ_LINE),
            ha::first(&after, ha::READ_LINE),
        ) else {
            bail!("hand-over {k}: no read in the old or the new leader's log");
        };
        gaps.push(ha::seconds(last_read, first_read));
        if let (Some(released), Some(acquired)) = (
            ha::last(&before, ha::RELEASED_LINE),
            ha::first(&after, ha::ACQUIRED_LINE),
        ) {
            release_to_acquire.push(ha::seconds(released, acquired));
        }
    }
    replicas.stop().await?;
    let (lease_p50, lease_max) = ha::p50_max(&release_to_acquire).unwrap_or((f64::NAN, f64::NAN));
    let method = format!(
        "Two ottoscaler processes (the binary under test) elect their leader on a Lease with \
         the default timings (ha.lease_duration 15s, renew_deadline 10s, retry_period 2s) \
         while the harness XADDs ~{rate} one-pod scale_up events/s (pods run 1 s). Every {phase} \
         s the leader gets SIGTERM (it releases the Lease and exits 0) and, once the standby \
         leads, a new process joins as the standby; hand-overs: {n}. Intake gap per \
         hand-over: the last 'dispatching event' line (debug log, one per entry read) of the \
         old leader to the first of the new leader, from their log timestamps. After the \
         load: every worker's result on the results stream is counted (lost, duplicated).",
        rate = ha::RATE,
        phase = phase.as_secs(),
    );
    ha::rows("H1", labels(n), &gaps, |row| {
        row.target(Target::at_most(GOAL_SECONDS))
            .shortfall(tally.shortfall())
            .method(method.clone())
            .detail("lease", Lease::DEFAULT.text())
            .detail("handovers", n)
            .detail("release_to_acquire_p50_s", round(lease_p50, 3))
            .detail("release_to_acquire_max_s", round(lease_max, 3))
            .detail("events", ids.len())
            .detail("results_per_worker", tally.json())
            .detail(
                "leader_exit_codes",
                serde_json::to_value(&exit_codes).unwrap_or_default(),
            )
            .detail("replicas_exited_by_themselves", exited.clone())
            .detail("cpu_seconds", cpu.clone())
    })
}
