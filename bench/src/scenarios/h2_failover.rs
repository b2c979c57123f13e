//! H2 crash fail-over: two ottoscaler processes elect their leader on the lane's Lease
//! under ~20 one-pod events/s; N times the leader is killed (`kill -9`) while it holds
//! pending entries, and a new process joins as the standby. Per kill: the kill to the
//! new leader's first read (its log). The Lease timings are tests/ha.rs's short ones
//! (3s/2s/500ms; `--quick` 5s/4s/1s, see [`Plan::failover_lease`]): with the defaults
//! each kill would cost ~17 s of the bench's budget.
//! `redis.claim_idle` is 10 minutes, so only the take-over's immediate claim can finish
//! the dead leader's entries within the run; each of them must finish exactly once.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use super::ha::{self, Ended, HaRun, Lease};
use super::section_of;
use crate::args::Plan;
use crate::bench_env::BenchEnv;
use crate::events::{self, Tally};
use crate::report::{Row, Section, Target};

fn labels(kills: u32, lease: Lease) -> [String; 2] {
    let what = "crash fail-over (kill -9), kill to first read";
    ha::labels(what, kills, lease, "short, not the defaults")
}

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    section_of(
        "H2",
        &labels(plan.kills, plan.failover_lease),
        measure(env, plan).await,
    )
}

async fn measure(env: &BenchEnv, plan: &Plan) -> Result<Vec<Row>> {
    let (n, phase, lease) = (plan.kills, plan.kill_phase, plan.failover_lease);
    let extra = [
        ("OTTOSCALER_REDIS__CLAIM_IDLE", "10m".to_string()),
        // Every take-over reads what was pending again: more deliveries than usual.
        ("OTTOSCALER_REDIS__MAX_DELIVERIES", "30".to_string()),
    ];
    let mut run = HaRun::start(env, "h2", (lease, &extra), phase, n).await?;
    let mut con = events::connect(&env.redis.url()).await?;
    let mut kills = Vec::new();
    let mut held: HashSet<String> = HashSet::new();
    for k in 0..n {
        run.due(k).await;
        let (_, consumer) = run.replicas.leader()?;
        let pending = wait_pending(&mut con, &run.lane.stream, &consumer).await?;
        let held_now = pending.len();
        held.extend(pending);
        let killed_at = jiff::Timestamp::now();
        let (_, leader) = run.replicas.take_leader()?;
        leader.kill().await?;
        let new = run
            .replicas
            .take_over(lease.duration + Duration::from_secs(15))
            .await
            .with_context(|| format!("fail-over {k}"))?;
        kills.push((killed_at, new, held_now));
    }
    let results_stream = run.lane.results.clone();
    let end: Ended = run.finish().await?;
    let results = events::results(&mut con, &results_stream).await?;
    let held_sent: Vec<(String, u32)> = held.iter().map(|id| (id.clone(), 1)).collect();
    let held_results: Vec<events::Published> = results
        .into_iter()
        .filter(|r| held.contains(&r.event_id))
        .collect();
    let held_tally = Tally::of(&held_sent, &held_results);

    let mut to_read = Vec::new();
    for (k, (killed_at, new, _)) in kills.iter().enumerate() {
        let log = end.replicas.log(*new)?;
        let Some(first_read) = ha::times(&log, ha::READ_LINE)
            .into_iter()
            .filter(|t| t > killed_at)
            .min()
        else {
            bail!(
                "fail-over {k}: the new leader never read; its log ends:\n{}",
                ha::tail(&log)
            );
        };
        to_read.push(ha::seconds(*killed_at, first_read));
    }
    end.replicas.stop().await?;
    let goal = lease.duration.as_secs_f64() + 2.0;
    let method = format!(
        "Two ottoscaler processes elect their leader on a Lease with short timings \
         (ha.lease_duration/renew_deadline/retry_period {lease}; a full run uses \
         tests/ha.rs's 3s/2s/500ms, --quick 5s/4s/1s, which a debug build on a loaded \
         machine keeps; the defaults 15s/10s/2s would make each kill cost ~17 s) while \
         the harness XADDs \
         ~{rate} one-pod scale_up events/s (pods run 1 s). Every {phase} s, once the leader \
         holds pending entries (XPENDING of its consumer), it gets SIGKILL, and once the \
         standby leads a new process joins as the standby; kills: {n}. Per kill: the time \
         from the kill to the new leader's first 'dispatching event' line (debug log, one \
         per entry read). Target: lease_duration + 2 s. redis.claim_idle 10m (only the \
         take-over's claim can finish the dead leader's entries), redis.max_deliveries 30. \
         After the load: every worker's result is counted (lost, duplicated), and those of \
         the entries pending on the killed leaders separately.",
        rate = ha::RATE,
        phase = phase.as_secs(),
        lease = lease.text(),
    );
    let shortfall = end.tally.shortfall().or_else(|| {
        held_tally
            .shortfall()
            .map(|s| format!("killed leaders' pending entries: {s}"))
    });
    ha::rows("H2", labels(n, lease), &to_read, |row| {
        row.target(Target::at_most(goal))
            .shortfall(shortfall.clone())
            .method(method.clone())
            .detail("lease", lease.text())
            .detail("claim_idle", "10m")
            .detail("kills", n)
            .detail(
                "pending_on_killed_leader",
                kills.iter().map(|(_, _, h)| *h).collect::<Vec<_>>(),
            )
            .detail("killed_leaders_entries_results", held_tally.json())
            .detail("events", end.ids.len())
            .detail("results_per_worker", end.tally.json())
            .detail("replicas_exited_by_themselves", end.exited.clone())
            .detail("cpu_seconds", end.cpu.clone())
    })
}

/// Waits (up to 10 s) until `consumer` holds pending entries, read and not yet
/// acknowledged; their ids.
async fn wait_pending(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    consumer: &str,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = events::pending_of(con, stream, consumer).await?;
        if !ids.is_empty() {
            return Ok(ids);
        }
        if Instant::now() >= deadline {
            bail!("the leader {consumer} held no pending entry for 10 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
