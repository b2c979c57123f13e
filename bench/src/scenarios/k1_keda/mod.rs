//! K1: ottoscaler next to KEDA's ScaledJob (the redis-streams scaler, `lagCount` 1: one
//! Job per entry), on the same control plane, Redis and machine, in the same run. Both
//! get the same one-pod scale_up entries at the same rate; the harness plays KEDA's job
//! agent (when a job's pod is Running it reads and acknowledges one entry with
//! XREADGROUP + XACK), so both systems do the same work per entry.
//!
//! Three parts, each failing on its own (its rows carry the error):
//! - by rate, pollingInterval 1 s: XADD -> pod ADDED on the harness' watch p50 and p99
//!   per rate (for KEDA, the n-th pod seen is matched with the n-th entry sent: its
//!   Jobs are not tied to an entry); API requests per entry (apiserver_request_total
//!   over each system's window, every client but watches); CPU seconds per 1,000
//!   entries and peak RSS (ottoscaler; KEDA: the operator plus kube-controller-manager,
//!   whose job controller turns KEDA's Jobs into pods);
//! - a restart of each system mid-run ([`restart`]): entries lost, pods beyond one per
//!   entry, the worst latency;
//! - KEDA's default pollingInterval (30 s): XADD -> pod created p50 and p99 at one rate,
//!   next to ottoscaler's run at that rate (ottoscaler does not poll).
//!
//! Rows, each `ottoscaler / KEDA`.

mod restart;
mod runs;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::b1_latency::{Coverage, coverage};
use crate::args::{Paced, Plan};
use crate::bench_env::{BenchEnv, Lane};
use crate::keda::{self, KedaBuild, Operator, OperatorConfig};
use crate::otto::{DEFAULT_MAX_CONCURRENT_CREATES, Otto, OttoConfig};
use crate::recorder::{PodTimes, Recorder};
use crate::report::json::round;
use crate::report::{PeerLatency, Row, Section};
use crate::stats::summarize;
use crate::{consumer_group, events, procfs};
use runs::Run;

/// Both systems with the same client-side limit, above what the rates need.
const QPS: u32 = 500;
const CONFIG: OttoConfig = OttoConfig {
    qps: QPS,
    burst: QPS,
    max_concurrent_creates: DEFAULT_MAX_CONCURRENT_CREATES,
    http2: true,
    max_workers: 1000,
    max_pods_per_event: 50,
    run_seconds: 1.0,
};
const KEDA: OperatorConfig = OperatorConfig {
    qps: QPS,
    burst: QPS,
};
/// KEDA's consumer group on its stream, read by the harness' agent.
const GROUP: &str = "keda-agents";
/// ottoscaler's consumer group (its default `redis.group`).
const OTTO_GROUP: &str = "ottoscaler";
/// The ScaledJob's pollingInterval in the runs by rate and the restart (KEDA's
/// default is 30 s, see [`Plan::peer_slow_polling`]).
const POLLING_SECONDS: u32 = 1;
/// After a run by rate, KEDA must create no pod for this long before it counts as
/// settled (a job beyond the entries would show).
const RATE_QUIET: Duration = Duration::from_secs(2);

const OWN_REQUESTS: &str =
    "API requests per entry, own clients, ottoscaler / KEDA operator + job controller";
const ALL_REQUESTS: &str = "API requests per entry, every client, ottoscaler / KEDA";
const CPU: &str = "CPU seconds per 1,000 entries, ottoscaler / KEDA";
const RSS: &str = "peak RSS, ottoscaler / KEDA operator";

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    match measure(env, plan).await {
        Ok(section) => section,
        Err(err) => failed(&labels(plan), &err),
    }
}

/// K1 rows with `labels`, not measured because of `err`.
fn failed(labels: &[String], err: &anyhow::Error) -> Section {
    let ids: Vec<(&'static str, &str)> = labels.iter().map(|l| ("K1", l.as_str())).collect();
    Section::failed(&ids, err)
}

/// Every row of K1, in order.
fn labels(plan: &Plan) -> Vec<String> {
    let mut labels = rate_labels(plan);
    labels.extend(restart::labels(plan.peer_restart));
    labels.extend(slow_labels(plan));
    labels
}

fn rate_labels(plan: &Plan) -> Vec<String> {
    plan.peer_rates
        .iter()
        .flat_map(|(rate, _)| ["p50", "p99"].map(|p| latency_label(p, *rate, POLLING_SECONDS)))
        .chain([OWN_REQUESTS, ALL_REQUESTS, CPU, RSS].map(String::from))
        .collect()
}

fn slow_labels(plan: &Plan) -> Vec<String> {
    let (polling, paced) = plan.peer_slow_polling;
    ["p50", "p99"]
        .map(|p| latency_label(p, paced.rate, polling))
        .to_vec()
}

fn latency_label(percentile: &str, rate: u32, polling: u32) -> String {
    let default = if polling == 30 {
        ", KEDA's default"
    } else {
        ""
    };
    format!(
        "XADD -> pod created {percentile} at {rate} events/s, ottoscaler / KEDA \
         (pollingInterval {polling} s{default})"
    )
}

/// Both systems up, each on a lane of its own, and what K1 needs to drive them.
pub(crate) struct Setup<'a> {
    env: &'a BenchEnv,
    build: KedaBuild,
    con: redis::aio::MultiplexedConnection,
    otto_lane: Lane,
    otto_recorder: Recorder,
    otto: Otto,
    keda_lane: Lane,
    keda_recorder: Recorder,
    operator: Operator,
    /// Redis' `host:port`, for the ScaledJob's trigger.
    redis_address: String,
    /// kube-controller-manager's pid (its job controller works for KEDA).
    controller_manager: u32,
}

/// The by-rate part's rows, and what the plot and the slow-polling rows reuse.
struct Rates {
    rows: Vec<Row>,
    peers: Vec<PeerLatency>,
    /// ottoscaler's coverage by rate.
    ottoscaler: BTreeMap<u32, Coverage>,
}

/// Sums over the runs by rate of one system.
#[derive(Debug, Default)]
struct Totals {
    requests: f64,
    own_requests: f64,
    cpu_seconds: f64,
    entries: usize,
}

impl Totals {
    fn add(&mut self, run: &Run) {
        self.requests += run.requests_total();
        self.own_requests += run.measured.own_requests.unwrap_or(0.0);
        self.cpu_seconds += run.measured.cpu_seconds.unwrap_or(0.0);
        self.entries += run.ids.len();
    }

    fn per_entry(&self, v: f64) -> f64 {
        v / self.entries.max(1) as f64
    }
}

async fn measure(env: &BenchEnv, plan: &Plan) -> Result<Section> {
    let mut setup = Setup::start(env).await?;
    let mut section = Section::default();
    let ottoscaler = match setup.rates(plan).await {
        Ok(rates) => {
            section.rows.extend(rates.rows);
            section.peers.extend(rates.peers);
            rates.ottoscaler
        }
        Err(err) => {
            section.rows.extend(failed(&rate_labels(plan), &err).rows);
            BTreeMap::new()
        }
    };
    match setup.restart(plan.peer_restart).await {
        Ok(rows) => section.rows.extend(rows),
        Err(err) => section
            .rows
            .extend(failed(&restart::labels(plan.peer_restart), &err).rows),
    }
    let (polling, paced) = plan.peer_slow_polling;
    match setup
        .slow_polling(polling, paced, ottoscaler.get(&paced.rate))
        .await
    {
        Ok((rows, peer)) => {
            section.rows.extend(rows);
            section.peers.push(peer);
        }
        Err(err) => section.rows.extend(failed(&slow_labels(plan), &err).rows),
    }
    setup.stop().await?;
    Ok(section)
}

impl<'a> Setup<'a> {
    /// Builds (or finds) the KEDA operator, starts ottoscaler and the operator on lanes
    /// of their own, and creates the ScaledJob (pollingInterval 1 s).
    async fn start(env: &'a BenchEnv) -> Result<Setup<'a>> {
        let build = keda::build().await.context("building the KEDA operator")?;
        keda::install_crds(env, &build).await?;
        let mut con = events::connect(&env.redis.url()).await?;

        let otto_lane = env.lane("k1-ottoscaler").await?;
        let otto_recorder = Recorder::start(env.env.config(), &otto_lane.namespace).await?;
        let mut otto = Otto::start(env, &otto_lane, &CONFIG, "k1")?;
        otto.wait_ready(Duration::from_secs(60)).await?;

        let keda_lane = env.lane("k1-keda").await?;
        let keda_recorder = Recorder::start(env.env.config(), &keda_lane.namespace).await?;
        consumer_group::create(&mut con, &keda_lane.stream, GROUP).await?;
        let operator = Operator::start(env, &build, &keda_lane, KEDA)?;
        let redis_address = env
            .redis
            .url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let (_, controller_manager) = env.env.control_plane().control_loop_pids();
        let setup = Setup {
            env,
            build,
            con,
            otto_lane,
            otto_recorder,
            otto,
            keda_lane,
            keda_recorder,
            operator,
            redis_address,
            controller_manager,
        };
        setup.apply_scaled_job(POLLING_SECONDS).await?;
        keda::wait_ready(env, &setup.keda_lane.namespace, keda::SCALED_JOB).await?;
        Ok(setup)
    }

    async fn apply_scaled_job(&self, polling_seconds: u32) -> Result<()> {
        keda::apply(
            self.env,
            &keda::scaled_job(
                &self.keda_lane,
                &self.redis_address,
                GROUP,
                polling_seconds,
                CONFIG.run_seconds,
            ),
        )
        .await
        .context("applying the ScaledJob")
    }

    async fn stop(self) -> Result<()> {
        self.operator.stop().await?;
        let _ = self.otto.stop().await?;
        Ok(())
    }

    /// Each rate, ottoscaler's run then KEDA's; the totals; peak RSS.
    async fn rates(&mut self, plan: &Plan) -> Result<Rates> {
        let mut rates = Rates {
            rows: Vec::new(),
            peers: Vec::new(),
            ottoscaler: BTreeMap::new(),
        };
        let mut otto_total = Totals::default();
        let mut keda_total = Totals::default();
        for &(rate, seconds) in &plan.peer_rates {
            let paced = Paced { rate, seconds };
            let bound = Duration::from_secs(u64::from(seconds) + 90);
            let otto = self.otto_run(paced, None, bound).await?;
            let keda = self.keda_run(paced, None, bound, RATE_QUIET).await?;
            for (who, run) in [("ottoscaler", &otto), ("KEDA", &keda)] {
                if let runs::Settled::Left(left) = &run.settled {
                    eprintln!("bench: k1 {who} at {rate}/s: {left}");
                }
            }
            otto_total.add(&otto);
            keda_total.add(&keda);
            let o = otto_coverage(&otto);
            let k = keda_coverage(&keda);
            let method = format!(
                "{} one-pod scale_up entries XADDed at {rate}/s for {seconds} s to each \
                 system's stream; XADD (entry id, ms) -> the pod's ADDED on the harness' \
                 watch. ottoscaler: the pod of each entry (event-id annotation). KEDA \
                 (pollingInterval {POLLING_SECONDS} s): the n-th new pod seen against the \
                 n-th entry (its Jobs carry no entry); an entry without a pod counts as \
                 missing.",
                paced.count()
            );
            let details = vec![
                ("ottoscaler_requests", json!(otto.measured.requests)),
                ("keda_requests", json!(keda.measured.requests)),
                ("keda_run", keda_summary(&keda)),
            ];
            rates.rows.extend(latency_rows(
                rate,
                POLLING_SECONDS,
                (&o, &k),
                &method,
                &details,
            )?);
            rates.peers.push(peer("ottoscaler", rate, &o));
            rates.peers.push(peer(
                &format!("KEDA, pollingInterval {POLLING_SECONDS} s"),
                rate,
                &k,
            ));
            rates.ottoscaler.insert(rate, o);
        }

        let otto_rss = procfs::memory(self.otto.pid())?.peak;
        let keda_rss = procfs::memory(self.operator.pid())?.peak;
        let settings = json!({
            "keda_version": self.build.version,
            "keda_operator_kube_api_qps_burst": [KEDA.qps, KEDA.burst],
            "ottoscaler_qps_burst": [CONFIG.qps, CONFIG.burst],
            "scaled_job": {
                "trigger": "redis-streams",
                "lagCount": 1,
                "pollingInterval_s": POLLING_SECONDS,
                "maxReplicaCount": 1000,
                "scalingStrategy": "default",
            },
            "pods_run_s": CONFIG.run_seconds,
            "agent": "the harness: XREADGROUP COUNT 1 + XACK when a job's pod is Running",
            "keda_log": self.operator.log_path().display().to_string(),
        });
        rates
            .rows
            .extend(totals_rows(&otto_total, &keda_total, settings));
        rates.rows.push(
            Row::new("K1", RSS, mib(otto_rss), "MiB")
                .baseline(mib(keda_rss))
                .method(format!(
                    "VmHWM of each process after the runs by rate ({} entries each; \
                     kube-controller-manager, shared by the cluster, not counted).",
                    otto_total.entries
                )),
        );
        Ok(rates)
    }

    /// Each system SIGKILLed half-way through a paced run and started again.
    async fn restart(&mut self, paced: Paced) -> Result<Vec<Row>> {
        let crash_at = Duration::from_secs_f64(f64::from(paced.seconds) / 2.0);
        let otto = self
            .otto_run(paced, Some(crash_at), restart::SETTLE)
            .await
            .context("ottoscaler's restart run")?;
        let keda = self
            .keda_run(paced, Some(crash_at), restart::SETTLE, restart::QUIET)
            .await
            .context("KEDA's restart run")?;
        Ok(restart::rows(paced, &otto, &keda))
    }

    /// KEDA with pollingInterval `polling` s (the ScaledJob changed, its new scale loop
    /// started), `paced` entries; next to ottoscaler's run at the same rate.
    async fn slow_polling(
        &mut self,
        polling: u32,
        paced: Paced,
        ottoscaler: Option<&Coverage>,
    ) -> Result<(Vec<Row>, PeerLatency)> {
        let o = ottoscaler.with_context(|| {
            format!(
                "ottoscaler's run at {} events/s, shown with this one, failed",
                paced.rate
            )
        })?;
        let loops = self.operator.scale_loops_started();
        self.apply_scaled_job(polling).await?;
        self.operator
            .wait_scale_loop(loops, Duration::from_secs(60))
            .await
            .context("waiting for the new pollingInterval to take effect")?;
        let bound = Duration::from_secs(u64::from(paced.seconds + polling) + 90);
        let keda = self.keda_run(paced, None, bound, Duration::ZERO).await?;
        if let runs::Settled::Left(left) = &keda.settled {
            eprintln!("bench: k1 KEDA at pollingInterval {polling} s: {left}");
        }
        let k = keda_coverage(&keda);
        let method = format!(
            "{} one-pod scale_up entries XADDed at {}/s for {} s to KEDA's stream, its \
             ScaledJob changed to pollingInterval {polling} s (KEDA's default is 30 s) \
             once the runs by rate and the restart were over; XADD -> the n-th new pod \
             seen against the n-th entry, as at 1 s. ottoscaler, which does not poll: \
             its run at {} events/s above (the same numbers as that row).",
            paced.count(),
            paced.rate,
            paced.seconds,
            paced.rate,
        );
        let details = vec![
            ("keda_requests", json!(keda.measured.requests)),
            ("keda_run", keda_summary(&keda)),
        ];
        let rows = latency_rows(paced.rate, polling, (o, &k), &method, &details)?;
        let peer = peer(
            &format!("KEDA, pollingInterval {polling} s"),
            paced.rate,
            &k,
        );
        Ok((rows, peer))
    }
}

/// XADD -> pod seen for each of ottoscaler's entries, by its pod's event-id annotation.
fn otto_coverage(run: &Run) -> Coverage {
    let times: Vec<&PodTimes> = run.measured.pods.iter().collect();
    coverage(&run.ids, &times, |t| t.seen_us)
}

/// XADD -> pod seen for KEDA's entries, the n-th new pod against the n-th entry.
fn keda_coverage(run: &Run) -> Coverage {
    let xadd_ms: Vec<i64> = run.ids.iter().filter_map(|id| events::id_ms(id)).collect();
    in_order(
        &xadd_ms,
        run.measured.pods.iter().filter_map(|t| t.seen_us).collect(),
    )
}

/// What KEDA and the agent did in a run, for the rows' detail.
fn keda_summary(run: &Run) -> Value {
    json!({
        "entries": run.ids.len(),
        "pods_created": run.measured.pods.len(),
        "jobs_created": run.measured.jobs_created,
        "job_creates_not_201": run.measured.requests.get("POST jobs").copied().unwrap_or(0.0)
            - run.measured.jobs_created,
        "agent_runs": run.tally.runs,
        "entries_acknowledged": run.tally.consumed,
        "runs_without_an_entry": run.tally.empty,
        "entries_unacknowledged_at_end": run.unacked.len(),
        "settled": settled_text(&run.settled),
    })
}

fn settled_text(settled: &runs::Settled) -> String {
    match settled {
        runs::Settled::After(d) => format!("{:.1} s after the last entry", d.as_secs_f64()),
        runs::Settled::Left(left) => left.clone(),
    }
}

fn peer(system: &str, rate: u32, coverage: &Coverage) -> PeerLatency {
    PeerLatency {
        system: system.to_string(),
        rate,
        samples: coverage.latencies.clone(),
    }
}

/// The requests and CPU rows of the runs by rate.
fn totals_rows(otto: &Totals, keda: &Totals, settings: Value) -> Vec<Row> {
    let rows = [
        (
            OWN_REQUESTS,
            otto.per_entry(otto.own_requests),
            keda.per_entry(keda.own_requests),
            "requests",
            "ottoscaler: the increase of its ottoscaler_kube_requests_total per entry. \
             KEDA: the operator's own client-go counter (rest_client_requests_total on its \
             /metrics, watches included) plus the job controller's requests, taken from \
             the API server's counters of KEDA's window by resource (pods POST and PATCH, \
             jobs/status PUT and PATCH: no other client sends those there).",
        ),
        (
            ALL_REQUESTS,
            otto.per_entry(otto.requests),
            keda.per_entry(keda.requests),
            "requests",
            "apiserver_request_total (every client, watches excluded) over each system's \
             window at every rate, divided by the entries sent. ottoscaler's window holds \
             its creates and deletes; KEDA's the operator's (ScaledJob reads and status, \
             Job creates and lists), the job controller's (pod creates, Job status) and \
             the garbage collector's; both hold the scheduler's bindings and kubesim's pod \
             status writes, the same per pod.",
        ),
        (
            CPU,
            otto.per_entry(otto.cpu_seconds) * 1000.0,
            keda.per_entry(keda.cpu_seconds) * 1000.0,
            "s",
            "CPU seconds (/proc) over each system's windows per 1,000 entries: \
             ottoscaler's process; for KEDA, keda-operator plus kube-controller-manager \
             (its job controller creates the pods; its other controllers are idle here).",
        ),
    ];
    rows.into_iter()
        .map(|(label, ours, theirs, unit, method)| {
            let row = Row::new("K1", label, ours, unit)
                .baseline(theirs)
                .method(method);
            if label == ALL_REQUESTS {
                row.detail("settings", settings.clone())
            } else {
                row
            }
        })
        .collect()
}

fn mib(bytes: u64) -> f64 {
    round(super::mib(bytes), 1)
}

/// The job controller's share of a KEDA window's requests: it alone creates and patches
/// pods (finalizers) and writes Job status there.
fn job_controller(requests: &BTreeMap<String, f64>) -> f64 {
    [
        "POST pods",
        "PATCH pods",
        "PUT jobs/status",
        "PATCH jobs/status",
    ]
    .iter()
    .filter_map(|k| requests.get(*k))
    .sum()
}

/// The two latency rows (p50, p99) of one rate: `(ottoscaler, KEDA)`.
fn latency_rows(
    rate: u32,
    polling: u32,
    (otto, keda): (&Coverage, &Coverage),
    method: &str,
    details: &[(&str, Value)],
) -> Result<Vec<Row>> {
    let o = summarize(&otto.latencies).context("no ottoscaler pod was seen")?;
    let k = summarize(&keda.latencies).context("no KEDA pod was seen")?;
    let shortfall = |c: &Coverage, who: &str| c.shortfall().map(|s| format!("{who}: {s}"));
    let shortfalls: Vec<String> = [shortfall(otto, "ottoscaler"), shortfall(keda, "KEDA")]
        .into_iter()
        .flatten()
        .collect();
    let shortfall = (!shortfalls.is_empty()).then(|| shortfalls.join("; "));
    Ok([("p50", o.p50, k.p50), ("p99", o.p99, k.p99)]
        .into_iter()
        .map(|(name, ours, theirs)| {
            details.iter().fold(
                Row::new("K1", latency_label(name, rate, polling), ours, "ms")
                    .baseline(theirs)
                    .shortfall(shortfall.clone())
                    .method(method)
                    .detail("ottoscaler_ms", o.json())
                    .detail("keda_ms", k.json()),
                |row, (key, value)| row.detail(key, value.clone()),
            )
        })
        .collect())
}

/// XADD times (ms, in sending order) matched in order with the first sightings (µs) of
/// the pods that appeared: the n-th pod seen serves the n-th entry. Entries without a
/// pod count as missing; pods beyond the entries are ignored.
fn in_order(xadd_ms: &[i64], mut seen_us: Vec<i64>) -> Coverage {
    seen_us.sort_unstable();
    let latencies = xadd_ms
        .iter()
        .zip(&seen_us)
        .map(|(x, s)| *s as f64 / 1000.0 - *x as f64)
        .collect();
    Coverage {
        latencies,
        expected: xadd_ms.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_matched_with_entries_in_order_and_missing_ones_counted() {
        let xadd = [1_000, 1_100, 1_200];
        // Two pods, seen out of order in the map: 1_150 ms and 1_020 ms.
        let c = in_order(&xadd, vec![1_150_000, 1_020_000]);
        assert_eq!(c.latencies, vec![20.0, 50.0]);
        assert_eq!(c.missing(), 1);
        assert_eq!(c.shortfall().as_deref(), Some("2 of 3 pods seen"));
    }

    #[test]
    fn the_job_controller_is_counted_by_resource() {
        let requests: BTreeMap<String, f64> = [
            ("POST pods", 20.0),
            ("PATCH pods", 18.0),
            ("PUT jobs/status", 76.0),
            ("PATCH pods/status", 60.0),
            ("POST jobs", 20.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(job_controller(&requests), 114.0);
    }

    #[test]
    fn every_part_has_its_labels_and_the_default_interval_is_named() {
        let plan = Plan::full();
        let labels = labels(&plan);
        assert_eq!(
            labels.len(),
            plan.peer_rates.len() * 2 + 4 + restart::labels(plan.peer_restart).len() + 2
        );
        assert!(
            labels
                .iter()
                .any(|l| l.contains("(pollingInterval 30 s, KEDA's default)"))
        );
        assert!(labels.iter().any(|l| l.contains("(pollingInterval 1 s)")));
    }
}
