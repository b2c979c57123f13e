//! What H1 ([`super::h1_handover`]) and H2 ([`super::h2_failover`]) share: two
//! ottoscaler processes electing their leader on the lane's Lease, a steady load of
//! one-pod scale_ups in the background, and the times read from the replicas' logs (the
//! approach of tests/ha.rs).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::CpuMeter;
use crate::bench_env::{BenchEnv, Lane};
use crate::events::{self, Tally};
use crate::otto::{DEFAULT_MAX_CONCURRENT_CREATES, Otto, OttoConfig};
use crate::recorder::Recorder;
use crate::report::Row;
use crate::report::json::round;

/// Events per second of the steady load (tests/ha.rs's rate).
pub const RATE: u32 = 20;

/// The reader logs each entry it hands to the Supervisor (debug level): a read.
pub const READ_LINE: &str = "dispatching event";
pub const ACQUIRED_LINE: &str = "acquired the Lease";
pub const RELEASED_LINE: &str = "released the Lease";

/// Pods run 1 s; everything else is ottoscaler's default.
pub const CONFIG: OttoConfig = OttoConfig {
    qps: 50,
    burst: 100,
    max_concurrent_creates: DEFAULT_MAX_CONCURRENT_CREATES,
    http2: true,
    max_workers: 200,
    max_pods_per_event: 50,
    run_seconds: 1.0,
};

/// `ha.lease_duration` / `ha.renew_deadline` / `ha.retry_period`.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub duration: Duration,
    pub renew_deadline: &'static str,
    pub retry_period: &'static str,
}

impl Lease {
    /// ottoscaler's defaults.
    pub const DEFAULT: Lease = Lease {
        duration: Duration::from_secs(15),
        renew_deadline: "10s",
        retry_period: "2s",
    };
    /// tests/ha.rs's short timings: a kill costs ~lease_duration instead of ~15 s.
    pub const SHORT: Lease = Lease {
        duration: Duration::from_secs(3),
        renew_deadline: "2s",
        retry_period: "500ms",
    };
    /// Short, with twice [`Lease::SHORT`]'s renew deadline: what the `--quick` smoke run
    /// uses, as a debug build under a take-over's burst on a loaded machine has missed
    /// 2 s (both new leaders of a run exited 1, one after the other).
    pub const QUICK: Lease = Lease {
        duration: Duration::from_secs(5),
        renew_deadline: "4s",
        retry_period: "1s",
    };

    /// e.g. `15s/10s/2s`.
    pub fn text(&self) -> String {
        format!(
            "{}s/{}/{}",
            self.duration.as_secs(),
            self.renew_deadline,
            self.retry_period
        )
    }

    fn env(&self) -> [(&'static str, String); 3] {
        [
            (
                "OTTOSCALER_HA__LEASE_DURATION",
                format!("{}s", self.duration.as_secs()),
            ),
            ("OTTOSCALER_HA__RENEW_DEADLINE", self.renew_deadline.into()),
            ("OTTOSCALER_HA__RETRY_PERIOD", self.retry_period.into()),
        ]
    }
}

/// The replicas of one lane: the leader first, then its standby. Every process gets a
/// new name (`<prefix>-<n>`: consumer, config and log file), as a Deployment's pods do.
pub struct Replicas<'a> {
    env: &'a BenchEnv,
    lane: Lane,
    prefix: &'static str,
    extra: Vec<(&'static str, String)>,
    live: VecDeque<(usize, Otto)>,
    /// Each process' log, by its number.
    logs: Vec<PathBuf>,
}

impl<'a> Replicas<'a> {
    /// Starts a leader and a standby with `lease` and the further variables `extra`.
    pub async fn start(
        env: &'a BenchEnv,
        lane: &Lane,
        prefix: &'static str,
        lease: Lease,
        extra: &[(&'static str, String)],
    ) -> Result<Replicas<'a>> {
        let mut extra: Vec<(&'static str, String)> = extra.to_vec();
        extra.extend(lease.env());
        // The reads are timed from the debug line of each entry dispatched.
        extra.push(("RUST_LOG", "info,ottoscaler=debug".into()));
        let mut replicas = Replicas {
            env,
            lane: lane.clone(),
            prefix,
            extra,
            live: VecDeque::new(),
            logs: Vec::new(),
        };
        replicas.add()?;
        replicas.wait_leader(Duration::from_secs(60)).await?;
        replicas.add_standby().await?;
        Ok(replicas)
    }

    fn add(&mut self) -> Result<()> {
        let n = self.logs.len();
        let name = format!("{}-{n}", self.prefix);
        let mut extra = self.extra.clone();
        extra.push(("REDIS_CONSUMER", name.clone()));
        let otto = Otto::start_with(self.env, &self.lane, &CONFIG, &name, &extra)?;
        self.logs.push(otto.log_path());
        self.live.push_back((n, otto));
        Ok(())
    }

    /// Starts a new process and waits until it stands by.
    pub async fn add_standby(&mut self) -> Result<()> {
        self.add()?;
        let (_, standby) = self.live.back_mut().context("no replica")?;
        standby.wait_standby(Duration::from_secs(60)).await
    }

    /// Waits until the first live replica leads.
    pub async fn wait_leader(&mut self, timeout: Duration) -> Result<()> {
        let (_, leader) = self.live.front_mut().context("no replica")?;
        leader.wait_ready(timeout).await.map(|_| ())
    }

    /// After the leader was taken out: waits until the standby leads, then starts a new
    /// standby; the new leader's number.
    pub async fn take_over(&mut self, timeout: Duration) -> Result<usize> {
        self.wait_leader(timeout).await?;
        let (new, _) = self.leader()?;
        self.add_standby().await?;
        Ok(new)
    }

    /// The leader's number and consumer name.
    pub fn leader(&self) -> Result<(usize, String)> {
        let (n, _) = self.live.front().context("no replica")?;
        Ok((*n, format!("{}-{n}", self.prefix)))
    }

    /// Takes the leader out (to stop or kill it); the standby is first now.
    pub fn take_leader(&mut self) -> Result<(usize, Otto)> {
        self.live.pop_front().context("no replica")
    }

    /// The live replicas that exited by themselves (a leader that could not renew the
    /// Lease within `ha.renew_deadline` exits 1, for Kubernetes to restart it; here
    /// nobody does): `<name>: <status>: <its last ERROR line>`.
    pub fn exited(&mut self) -> Vec<String> {
        let prefix = self.prefix;
        let mut out = Vec::new();
        for (n, otto) in &mut self.live {
            let Some(status) = otto.try_exited() else {
                continue;
            };
            let log = read_log(&otto.log_path()).unwrap_or_default();
            let error = log
                .lines()
                .rev()
                .find(|l| l.contains(" ERROR "))
                .unwrap_or("");
            out.push(format!("{prefix}-{n}: {status}: {}", error.trim()));
        }
        out
    }

    /// The log of process `n`.
    pub fn log(&self, n: usize) -> Result<String> {
        let path = self.logs.get(n).context("no such replica")?;
        read_log(path)
    }

    /// Stops every live replica (SIGTERM).
    pub async fn stop(self) -> Result<()> {
        for (_, otto) in self.live {
            otto.stop().await?;
        }
        Ok(())
    }
}

fn read_log(path: &Path) -> Result<String> {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The timestamp of every log line containing `needle` (ottoscaler's text format
/// starts each line with an RFC 3339 UTC timestamp).
pub fn times(log: &str, needle: &str) -> Vec<Timestamp> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

pub fn first(log: &str, needle: &str) -> Option<Timestamp> {
    times(log, needle).into_iter().min()
}

pub fn last(log: &str, needle: &str) -> Option<Timestamp> {
    times(log, needle).into_iter().max()
}

pub fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// One-pod scale_ups at [`RATE`] from a task of their own (own connection), so the
/// load goes on while processes are stopped and started.
pub struct Load {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<Vec<String>>>,
}

impl Load {
    /// Sends until [`Load::finish`], `max_seconds` at most.
    pub async fn start(env: &BenchEnv, lane: &Lane, max_seconds: u32) -> Result<Load> {
        let mut con = events::connect(&env.redis.url()).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let stream = lane.stream.clone();
        let prefix = lane.name.clone();
        let task = tokio::spawn(async move {
            let stopped = async {
                // A dropped sender stops the load too.
                let _ = stopped.await;
            };
            let plan = (RATE, RATE * max_seconds);
            events::send_paced_until(&mut con, &stream, &prefix, plan, &[], stopped).await
        });
        Ok(Load { stop, task })
    }

    /// Stops the load; the entry ids sent.
    pub async fn finish(self) -> Result<Vec<String>> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| anyhow!("the load's task failed: {e}"))?
            .context("sending the load")
    }
}

/// One run of H1 or H2: a lane with its pod recorder, the replicas, and the load, which
/// starts once a leader and a standby are up.
pub struct HaRun<'a> {
    env: &'a BenchEnv,
    pub lane: Lane,
    recorder: Recorder,
    pub replicas: Replicas<'a>,
    cpu: CpuMeter,
    load: Load,
    start: Instant,
    phase: Duration,
}

/// What [`HaRun::finish`] leaves: the entries sent, their results per worker, the CPU
/// seconds, and the replicas (whose logs hold the times).
pub struct Ended<'a> {
    pub ids: Vec<String>,
    pub tally: Tally,
    pub cpu: Value,
    /// Replicas that exited by themselves during the run (see [`Replicas::exited`]).
    pub exited: Vec<String>,
    pub replicas: Replicas<'a>,
}

impl<'a> HaRun<'a> {
    /// Lane `name`, replicas with `lease` and `extra`, and the load, for `disruptions`
    /// disruptions one `phase` apart.
    pub async fn start(
        env: &'a BenchEnv,
        name: &'static str,
        (lease, extra): (Lease, &[(&'static str, String)]),
        phase: Duration,
        disruptions: u32,
    ) -> Result<HaRun<'a>> {
        let lane = env.lane(name).await?;
        let recorder = Recorder::start(env.env.config(), &lane.namespace).await?;
        let replicas = Replicas::start(env, &lane, name, lease, extra).await?;
        let cpu = CpuMeter::start(env, None);
        // The load stops after the last disruption and one more phase, however long
        // the disruptions took; three times their schedule at the most.
        let seconds = phase.as_secs() * u64::from(disruptions + 1) * 3;
        let load = Load::start(env, &lane, u32::try_from(seconds).unwrap_or(600)).await?;
        Ok(HaRun {
            env,
            lane,
            recorder,
            replicas,
            cpu,
            load,
            start: Instant::now(),
            phase,
        })
    }

    /// Waits until disruption `k` (from 0) is due: `k + 1` phases after the load began
    /// (at once when the disruptions before it took longer).
    pub async fn due(&self, k: u32) {
        tokio::time::sleep_until(self.start + self.phase * (k + 1)).await;
    }

    /// One more phase of load, then stops it and waits until every worker has its
    /// result, nothing is pending and every pod is gone. A replica that exited by itself
    /// meanwhile is named in the error, or, when the run still ended well, in
    /// [`Ended::exited`].
    pub async fn finish(mut self) -> Result<Ended<'a>> {
        tokio::time::sleep(self.phase).await;
        let ids = self.load.finish().await?;
        let sent: Vec<(String, u32)> = ids.iter().map(|id| (id.clone(), 1)).collect();
        let timeout = Duration::from_secs(60) + Duration::from_millis(100) * ids.len() as u32;
        let ended = async {
            let mut con = events::connect(&self.env.redis.url()).await?;
            let (stream, results) = (&self.lane.stream, &self.lane.results);
            let tally = events::wait_for_results(&mut con, stream, results, &sent, timeout).await?;
            self.recorder
                .wait("every pod gone", Duration::from_secs(30), |c| {
                    c.gone >= ids.len()
                })
                .await?;
            anyhow::Ok(tally)
        }
        .await;
        let exited = self.replicas.exited();
        let tally = match ended {
            Err(err) if !exited.is_empty() => {
                return Err(err.context(format!(
                    "replicas exited by themselves (nobody restarts them here): {}",
                    exited.join("; ")
                )));
            }
            other => other?,
        };
        Ok(Ended {
            ids,
            tally,
            cpu: self.cpu.json(),
            exited,
            replicas: self.replicas,
        })
    }
}

/// The last lines of a log, for an error.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The median and the largest of `values` (nearest rank).
pub fn p50_max(values: &[f64]) -> Result<(f64, f64)> {
    let Some(s) = crate::stats::summarize(values) else {
        bail!("no samples");
    };
    Ok((s.p50, s.max))
}

/// The labels of the two rows of H1 or H2: `<what> p50 of <n>, Lease <lease> (<note>)`
/// and the same with max.
pub fn labels(what: &str, n: u32, lease: Lease, note: &str) -> [String; 2] {
    let lease = lease.text();
    ["p50", "max"].map(|stat| format!("{what} {stat} of {n}, Lease {lease} ({note})"))
}

/// The two rows of H1 or H2 (seconds): the p50 and the max of `samples`, under `labels`,
/// each completed by `common` (target, method, detail).
pub fn rows(
    id: &'static str,
    labels: [String; 2],
    samples: &[f64],
    common: impl Fn(Row) -> Row,
) -> Result<Vec<Row>> {
    let (p50, max) = p50_max(samples)?;
    let [p50_label, max_label] = labels;
    let mut out = Vec::new();
    for (label, value) in [(p50_label, p50), (max_label, max)] {
        out.push(common(Row::new(id, label, value, "s")).detail(
            "samples_s",
            samples.iter().map(|v| round(*v, 3)).collect::<Vec<_>>(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-03T10:00:00.100000Z  INFO ottoscaler::actors::leader: acquired the Lease; this replica leads now
2026-12-03T10:00:01.250000Z DEBUG ottoscaler::actors::redis_reader::entry: dispatching event event_id=1-0
2026-12-03T10:00:02.500000Z DEBUG ottoscaler::actors::redis_reader::entry: dispatching event event_id=2-0
not a timestamp dispatching event
";

    #[test]
    fn log_lines_are_timed_by_their_leading_timestamp() {
        let read = |s: &str| s.parse::<Timestamp>().expect("timestamp");
        assert_eq!(times(LOG, READ_LINE).len(), 2);
        assert_eq!(first(LOG, READ_LINE), Some(read("2026-12-03T10:00:01.25Z")));
        assert_eq!(last(LOG, READ_LINE), Some(read("2026-12-03T10:00:02.5Z")));
        let (a, b) = (
            first(LOG, ACQUIRED_LINE).expect("acquired"),
            last(LOG, READ_LINE).expect("read"),
        );
        assert!((seconds(a, b) - 2.4).abs() < 1e-9);
        assert_eq!(first(LOG, RELEASED_LINE), None);
    }

    #[test]
    fn lease_timings_are_spelled_as_configured() {
        assert_eq!(Lease::DEFAULT.text(), "15s/10s/2s");
        assert_eq!(Lease::SHORT.text(), "3s/2s/500ms");
        assert_eq!(Lease::QUICK.text(), "5s/4s/1s");
        assert_eq!(Lease::SHORT.env()[0].1, "3s");
        let [p50, max] = labels("gap", 2, Lease::SHORT, "short");
        assert_eq!(p50, "gap p50 of 2, Lease 3s/2s/500ms (short)");
        assert_eq!(max, "gap max of 2, Lease 3s/2s/500ms (short)");
    }

    #[test]
    fn the_two_rows_are_the_median_and_the_largest() {
        let three = labels("gap", 3, Lease::DEFAULT, "defaults");
        let two = rows("H1", three, &[0.5, 1.5, 0.25], |r| r.detail("x", 1)).expect("rows");
        assert_eq!(two.len(), 2);
        assert_eq!((two[0].value, two[1].value), (Some(0.5), Some(1.5)));
        assert_eq!(two[1].label, "gap max of 3, Lease 15s/10s/2s (defaults)");
        assert_eq!(two[0].detail["x"], 1);
        let none = labels("gap", 0, Lease::DEFAULT, "defaults");
        assert!(rows("H1", none, &[], |r| r).is_err());
    }
}
