//! One paced run of one-pod entries to one system of K1, optionally with a crash
//! (SIGKILL and a fresh process) part-way, then a bounded wait for it to settle.
//! KEDA's runs include the harness playing its job agent.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{CONFIG, GROUP, KEDA, OTTO_GROUP, Setup};
use crate::args::Paced;
use crate::bench_env::BenchEnv;
use crate::events::Published;
use crate::keda::Operator;
use crate::otto::Otto;
use crate::recorder::{PodTimes, Recorder, now_us};
use crate::scenarios::b1_latency::send_paced;
use crate::{apiserver, consumer_group, events, procfs};

/// Pause between two looks at Redis and the pods while waiting to settle.
const POLL: Duration = Duration::from_millis(200);
/// How long a fresh ottoscaler gets to be ready after a crash.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the harness' agent did for KEDA in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// The run's job pods seen Running (each one agent run).
    pub runs: usize,
    /// Entries read and acknowledged.
    pub consumed: usize,
    /// Runs that found no entry left (a job beyond the entries).
    pub empty: usize,
}

/// The SIGKILL of a run, and the fresh process after it.
#[derive(Debug, Clone)]
pub struct Crash {
    /// When the old process was killed (µs since the Unix epoch).
    pub killed_us: i64,
    /// The group's pending entries and the lane's pods not deleted yet (KEDA's stay
    /// until its job history limit removes their Jobs) at that moment.
    pub pending_at_kill: usize,
    pub lane_pods_not_deleted_at_kill: usize,
    /// ottoscaler: kill -> the fresh process ready and leading.
    pub ready_after: Option<Duration>,
}

/// How a run ended: settled after this long past the last entry, or not within the
/// bound, with what was left.
#[derive(Debug, Clone)]
pub enum Settled {
    After(Duration),
    Left(String),
}

/// One system's run.
pub struct Run {
    /// The entries sent, in order.
    pub ids: Vec<String>,
    pub measured: Measured,
    /// Entries of `ids` not acknowledged at the end.
    pub unacked: Vec<String>,
    /// ottoscaler: the results published for the run's entries.
    pub results: Vec<Published>,
    /// KEDA: the agent's tally.
    pub tally: Tally,
    pub crash: Option<Crash>,
    pub settled: Settled,
}

impl Run {
    pub fn requests_total(&self) -> f64 {
        self.measured.requests.values().sum()
    }
}

impl Setup<'_> {
    /// `paced` entries to ottoscaler, SIGKILLed and started again (same config and
    /// consumer name, as a crashed pod is restarted) `crash_at` after the first; then
    /// waits up to `bound` for a result of every entry, nothing pending and every pod
    /// of the run gone.
    pub async fn otto_run(
        &mut self,
        paced: Paced,
        crash_at: Option<Duration>,
        bound: Duration,
    ) -> Result<Run> {
        let env = self.env;
        let own = self
            .otto
            .metrics()
            .await?
            .sum("ottoscaler_kube_requests_total", &[]);
        let pid = self.otto.pid();
        let window = Window::open(env, &self.otto_recorder, &[pid], own).await?;

        let lane = &self.otto_lane;
        let recorder = &self.otto_recorder;
        let otto = &mut self.otto;
        let con = &mut self.con;
        let start = Instant::now();
        let send = send_paced(con, &lane.stream, paced.rate, paced.count());
        let crash = async {
            let Some(at) = crash_at else {
                return Ok(None);
            };
            let mut crash = crash(env, start + at, &lane.stream, OTTO_GROUP, recorder, || {
                otto.kill_now();
                *otto = Otto::start(env, lane, &CONFIG, "k1-restarted")?;
                Ok(())
            })
            .await?;
            otto.wait_ready(READY_TIMEOUT).await?;
            let micros = u64::try_from(now_us() - crash.killed_us).unwrap_or(0);
            crash.ready_after = Some(Duration::from_micros(micros));
            anyhow::Ok(Some(crash))
        };
        let (ids, crash) = tokio::join!(send, crash);
        let (ids, crash) = (ids?, crash?);

        let sent = Instant::now();
        let ids_set: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut results = Vec::new();
        let mut unacked = Vec::new();
        let settled = settle(bound, async || {
            results = events::results(con, &lane.results)
                .await?
                .into_iter()
                .filter(|r| ids_set.contains(r.event_id.as_str()))
                .collect();
            unacked = consumer_group::unacked(con, &lane.stream, OTTO_GROUP, &ids).await?;
            let answered: HashSet<&str> = results.iter().map(|r| r.event_id.as_str()).collect();
            let unanswered = ids.len() - answered.len();
            let alive = window.pods_where(recorder, |t| t.gone_us.is_none());
            Ok(left(&[
                (unanswered, "entries without a result"),
                (unacked.len(), "entries unacknowledged"),
                (alive, "pods not gone"),
            ]))
        })
        .await?;
        let settled = settled.map_or_else(|| Settled::After(sent.elapsed()), Settled::Left);

        let otto = &self.otto;
        let measured = window
            .close(env, &self.otto_recorder, otto.pid(), async || {
                Ok(otto
                    .metrics()
                    .await?
                    .sum("ottoscaler_kube_requests_total", &[]))
            })
            .await?;
        Ok(Run {
            ids,
            measured,
            unacked,
            results,
            tally: Tally::default(),
            crash,
            settled,
        })
    }

    /// `paced` entries to KEDA's stream, the harness playing its job agent; the
    /// operator SIGKILLed and started again `crash_at` after the first entry. Then
    /// waits up to `bound` for every entry to be acknowledged, every pod of the lane
    /// finished and no new pod for `quiet` (a job created late, beyond the entries,
    /// would show there).
    pub async fn keda_run(
        &mut self,
        paced: Paced,
        crash_at: Option<Duration>,
        bound: Duration,
        quiet: Duration,
    ) -> Result<Run> {
        let env = self.env;
        self.operator.check_alive()?;
        let own = self.operator.requests_sent().await?;
        let pids = [self.operator.pid(), self.controller_manager];
        let window = Window::open(env, &self.keda_recorder, &pids, own).await?;
        let base = self.keda_recorder.counts();

        let lane = &self.keda_lane;
        let recorder = &self.keda_recorder;
        let build = &self.build;
        let operator = &mut self.operator;
        let con = &mut self.con;
        let (stop_tx, stop_rx) = watch::channel(false);
        // Past the driver's own bounds: the driver stops the agent, not this.
        let agent_bound =
            bound + Duration::from_secs(u64::from(paced.seconds)) + quiet + READY_TIMEOUT;
        let agent = play_agent(
            env,
            &lane.stream,
            recorder,
            base.running,
            stop_rx,
            agent_bound,
        );
        let driver = async {
            let start = Instant::now();
            let send = send_paced(con, &lane.stream, paced.rate, paced.count());
            let crash = async {
                let Some(at) = crash_at else {
                    return Ok(None);
                };
                let crash = crash(env, start + at, &lane.stream, GROUP, recorder, || {
                    operator.kill();
                    *operator = Operator::start(env, build, lane, KEDA)?;
                    Ok(())
                })
                .await?;
                anyhow::Ok(Some(crash))
            };
            let (ids, crash) = tokio::join!(send, crash);
            let settled = match (&ids, &crash) {
                (Ok(ids), Ok(_)) => {
                    let sent = Instant::now();
                    let mut unacked = Vec::new();
                    let mut last_seen = (recorder.counts().seen, Instant::now());
                    settle(bound, async || {
                        unacked = consumer_group::unacked(con, &lane.stream, GROUP, ids).await?;
                        let seen = recorder.counts().seen;
                        if seen != last_seen.0 {
                            last_seen = (seen, Instant::now());
                        }
                        let quiet_left = quiet.saturating_sub(last_seen.1.elapsed());
                        let unfinished = window.pods_where(recorder, |t| {
                            t.finished_us.is_none() && t.gone_us.is_none()
                        });
                        Ok(left(&[
                            (unacked.len(), "entries unacknowledged"),
                            (unfinished, "pods not finished"),
                            (
                                quiet_left.as_millis() as usize,
                                "ms without a new pod to go",
                            ),
                        ]))
                    })
                    .await
                    .map(|left| {
                        (
                            left.map_or_else(|| Settled::After(sent.elapsed()), Settled::Left),
                            unacked,
                        )
                    })
                }
                _ => Ok((Settled::Left("not sent".into()), Vec::new())),
            };
            let _ = stop_tx.send(true);
            (ids, crash, settled)
        };
        let (tally, (ids, crash, settled)) = tokio::join!(agent, driver);
        let (ids, crash, (settled, unacked), tally) = (ids?, crash?, settled?, tally?);

        let operator = &self.operator;
        let mut measured = window
            .close(env, &self.keda_recorder, operator.pid(), async || {
                operator.requests_sent().await
            })
            .await?;
        let job_controller = super::job_controller(&measured.requests);
        measured.own_requests = measured.own_requests.map(|own| own + job_controller);
        Ok(Run {
            ids,
            measured,
            unacked,
            results: Vec::new(),
            tally,
            crash,
            settled,
        })
    }
}

/// The counters and pods a run is measured against.
struct Window {
    /// The system's processes (the first is the one a crash replaces) and their CPU
    /// seconds.
    cpu: Vec<(u32, Option<f64>)>,
    own_requests: f64,
    requests: apiserver::RequestCounts,
    pods: HashSet<String>,
}

/// What a run's window measured.
pub struct Measured {
    /// The pods that appeared in the lane during the run.
    pub pods: Vec<PodTimes>,
    /// apiserver_request_total over the run, watches excluded, by `VERB resource`.
    pub requests: BTreeMap<String, f64>,
    /// Jobs the API server created in the run (`POST jobs` answered 201; KEDA's).
    pub jobs_created: f64,
    /// CPU seconds of the system's processes over the run (None after a crash: the
    /// process changed).
    pub cpu_seconds: Option<f64>,
    /// Requests of the system's own clients (None after a crash: the counters restart).
    pub own_requests: Option<f64>,
}

impl Window {
    /// Before a run: the CPU time of `pids`, the system's own request count `own`,
    /// the API server's counters and the pods `recorder` has seen.
    async fn open(env: &BenchEnv, recorder: &Recorder, pids: &[u32], own: f64) -> Result<Window> {
        Ok(Window {
            cpu: pids
                .iter()
                .map(|pid| (*pid, procfs::cpu_seconds(*pid)))
                .collect(),
            own_requests: own,
            requests: apiserver::scrape(&env.client()).await?,
            pods: recorder.pods().into_keys().collect(),
        })
    }

    /// How many pods `recorder` saw since the window opened satisfy `f`.
    fn pods_where(&self, recorder: &Recorder, f: impl Fn(&PodTimes) -> bool) -> usize {
        recorder
            .pods()
            .iter()
            .filter(|(name, t)| !self.pods.contains(*name) && f(t))
            .count()
    }

    /// After a run: what changed. `pid` is the system's process now; CPU time and the
    /// own request count (`own`, read only then) are taken only if it is the same.
    async fn close(
        self,
        env: &BenchEnv,
        recorder: &Recorder,
        pid: u32,
        own: impl AsyncFnOnce() -> Result<f64>,
    ) -> Result<Measured> {
        let delta = apiserver::scrape(&env.client())
            .await?
            .since(&self.requests);
        let same_process = self.cpu.first().map(|(p, _)| *p) == Some(pid);
        let own_requests = if same_process {
            Some(own().await? - self.own_requests)
        } else {
            None
        };
        Ok(Measured {
            pods: recorder
                .pods()
                .into_iter()
                .filter(|(name, _)| !self.pods.contains(name))
                .map(|(_, t)| t)
                .collect(),
            requests: delta.by_resource(),
            jobs_created: delta.count("POST", "jobs", "201"),
            cpu_seconds: same_process.then(|| cpu_since(&self.cpu)),
            own_requests,
        })
    }
}

/// At `at`: notes the group's pending entries, calls `restart` (SIGKILL and a fresh
/// process), and notes when, and how many of the lane's pods were not deleted yet.
async fn crash(
    env: &BenchEnv,
    at: Instant,
    stream: &str,
    group: &str,
    recorder: &Recorder,
    restart: impl FnOnce() -> Result<()>,
) -> Result<Crash> {
    tokio::time::sleep_until(at).await;
    let mut redis = events::connect(&env.redis.url()).await?;
    let pending_at_kill = consumer_group::pending(&mut redis, stream, group).await?;
    let killed_us = now_us();
    let c = recorder.counts();
    restart()?;
    Ok(Crash {
        killed_us,
        pending_at_kill,
        lane_pods_not_deleted_at_kill: c.seen - c.gone,
        ready_after: None,
    })
}

/// `count what` for each nonzero count, joined; None when all are zero.
fn left(counts: &[(usize, &str)]) -> Option<String> {
    let parts: Vec<String> = counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Calls `check` every [`POLL`] until it reports nothing left (`None`), or `bound`
/// passes: then what it reported last.
async fn settle(
    bound: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<String>>,
) -> Result<Option<String>> {
    let deadline = Instant::now() + bound;
    loop {
        let left = check().await?;
        match left {
            None => return Ok(None),
            Some(left) if Instant::now() >= deadline => {
                return Ok(Some(format!("not settled within {bound:?}: {left}")));
            }
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// CPU seconds each pid used since its `before` reading, summed.
fn cpu_since(before: &[(u32, Option<f64>)]) -> f64 {
    before
        .iter()
        .filter_map(|(pid, before)| Some(procfs::cpu_seconds(*pid)? - (*before)?))
        .sum()
}

/// The job agent: each time one more of the lane's pods is Running (beyond
/// `running_before`), reads one entry for KEDA's group and acknowledges it (or finds
/// none left), until `stop`; then catches up with the pods
/// Running by then. Fails if no pod runs within `bound` and no stop comes.
async fn play_agent(
    env: &BenchEnv,
    stream: &str,
    recorder: &Recorder,
    running_before: usize,
    mut stop: watch::Receiver<bool>,
    bound: Duration,
) -> Result<Tally> {
    let mut con = events::connect(&env.redis.url()).await?;
    let deadline = Instant::now() + bound;
    let mut tally = Tally::default();
    loop {
        let handled = running_before + tally.runs;
        let stopped = tokio::select! {
            waited = recorder.wait(
                "a KEDA job's pod running",
                deadline.saturating_duration_since(Instant::now()),
                |c| c.running > handled,
            ) => {
                waited?;
                false
            }
            _ = stop.wait_for(|s| *s) => true,
        };
        let running = recorder.counts().running.saturating_sub(running_before);
        for _ in tally.runs..running {
            if consumer_group::read_and_ack(&mut con, stream, GROUP).await? {
                tally.consumed += 1;
            } else {
                tally.empty += 1;
            }
        }
        tally.runs = tally.runs.max(running);
        if stopped {
            return Ok(tally);
        }
    }
}
