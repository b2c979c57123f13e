//! B1 event latency: one-pod scale_up events XADDed at a steady rate; for each, the
//! time from the XADD (the entry id's millisecond timestamp) to the ADDED event of its
//! pod on the harness' own watch, i.e. after the API server accepted and stored the
//! create. The pods run 1 s; the same pods give B6 ([`super::b6_completion`]).
//!
//! Baseline: right after each rate, the bare kube-rs client program ([`crate::ceiling`],
//! the stock kube client: HTTP/1.1, Nagle on), as a process of its own like ottoscaler,
//! cycles copies of ottoscaler's pod at the same rate (create sent
//! -> ADDED on a watch of ours), so a miss can be told apart: ottoscaler's, or the
//! control plane's on this machine. Before both, a warm-up run (see [`warm_up`]).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{CpuMeter, b6_completion, cores};
use crate::args::Plan;
use crate::bench_env::BenchEnv;
use crate::otto::{Metrics, Otto, OttoConfig};
use crate::recorder::{PodTimes, Recorder};
use crate::report::json::round;
use crate::report::{AaLine, RateLine, Row, Section, Target};
use crate::stats::summarize;
use crate::{apiserver, ceiling, events};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// Above any rate measured, so neither the client-side rate limit (each pod costs a
/// create and a delete), the bound on creates in flight, nor `max_workers` backpressure
/// shapes the latency; HTTP/1.1 as the bare client speaks (not the default HTTP/2 over
/// a few connections; README "Known limits" compares the two at saturation).
const CONFIG: OttoConfig = OttoConfig {
    qps: 500,
    burst: 500,
    max_concurrent_creates: 1000,
    http2: false,
    max_workers: 1000,
    max_pods_per_event: 50,
    run_seconds: 1.0,
};

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    match measure(env, plan).await {
        Ok(section) => section,
        Err(err) => {
            let mut ids: Vec<(&'static str, String)> = plan
                .latency_rates
                .iter()
                .map(|(rate, _)| ("B1", label(*rate)))
                .collect();
            ids.push(("B6", b6_completion::LABEL.into()));
            let ids: Vec<(&'static str, &str)> =
                ids.iter().map(|(i, l)| (*i, l.as_str())).collect();
            Section::failed(&ids, &err)
        }
    }
}

/// The row's label; ottoscaler runs with qps/burst 500 and HTTP/1.1 here, not the
/// defaults (50/100, HTTP/2).
fn label(rate: u32) -> String {
    format!("event latency p99 at {rate} events/s (qps/burst 500, HTTP/1.1)")
}

/// What the harness' watch saw of one rate's events.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Coverage {
    /// XADD -> the pod's first sighting, in ms, for each event whose pod was seen.
    pub(crate) latencies: Vec<f64>,
    /// Events sent.
    pub(crate) expected: usize,
}

impl Coverage {
    /// Events whose pod the harness never saw: each is a failure of the row, not a gap.
    pub(crate) fn missing(&self) -> usize {
        self.expected - self.latencies.len()
    }

    /// `Some("198 of 200 pods seen")` when any pod is missing.
    pub(crate) fn shortfall(&self) -> Option<String> {
        (self.missing() > 0)
            .then(|| format!("{} of {} pods seen", self.latencies.len(), self.expected))
    }
}

/// For each event id sent, the time from its XADD (the id's milliseconds) to `at` of its
/// pod (by the pod's event-id annotation); events without a pod, or whose pod lacks the
/// time, count as missing.
pub(crate) fn coverage(
    ids: &[String],
    pods: &[&PodTimes],
    at: fn(&PodTimes) -> Option<i64>,
) -> Coverage {
    let by_event: HashMap<&str, i64> = pods
        .iter()
        .filter_map(|t| Some((t.event_id.as_deref()?, at(t)?)))
        .collect();
    let latencies = ids
        .iter()
        .filter_map(|id| {
            Some(*by_event.get(id.as_str())? as f64 / 1000.0 - events::id_ms(id)? as f64)
        })
        .collect();
    Coverage {
        latencies,
        expected: ids.len(),
    }
}

async fn measure(env: &BenchEnv, plan: &Plan) -> Result<Section> {
    let template = template_pod(env).await?;
    let mut section = Section::default();
    let mut completion = Vec::new();
    let mut ceiling_completion = Vec::new();

    for &(rate, seconds) in &plan.latency_rates {
        let count = rate * seconds;
        let timeout = Duration::from_secs(u64::from(seconds) + 90);

        let warm_up = warm_up(env, &template, rate, count, timeout).await?;

        // Rounds of three runs: ottoscaler, the bare client, and the bare client again
        // (the A/A pair: what the same program scores twice on this machine, the noise
        // band any ratio must be read against). The order rotates from round to round
        // (see `order`), so that no contender always runs right after the warm-up or
        // right after another. Each run is a fresh process on fresh lanes, alone on the
        // machine: its watches (the contender's and the harness') open after the
        // warm-up, which sized the API server's watch buffers to the rate (see
        // `warm_up`).
        let mut otto_runs = Vec::new();
        let mut bare_runs = Vec::new();
        let mut again_runs = Vec::new();
        for round in 0..plan.latency_rounds {
            let paced = (rate, count);
            for contender in order(round) {
                match contender {
                    Contender::Ottoscaler => {
                        otto_runs.push(otto_run(env, paced, round, timeout).await?);
                    }
                    Contender::BareClient => {
                        let lane = format!("b1-ceiling-{rate}-{round}");
                        bare_runs.push(ceiling_phase(env, &lane, &template, paced, timeout).await?);
                    }
                    Contender::BareClientAgain => {
                        let lane = format!("b1-again-{rate}-{round}");
                        again_runs
                            .push(ceiling_phase(env, &lane, &template, paced, timeout).await?);
                    }
                }
            }
        }

        let pooled = |runs: &[&Run]| -> Vec<f64> {
            runs.iter()
                .flat_map(|r| r.latencies.iter().copied())
                .collect()
        };
        let otto_plain: Vec<&Run> = otto_runs.iter().map(|o| &o.run).collect();
        let bare_plain: Vec<&Run> = bare_runs.iter().collect();
        let seen = Coverage {
            latencies: pooled(&otto_plain),
            expected: otto_runs.iter().map(|o| o.expected).sum(),
        };
        let annotated: Vec<f64> = otto_runs
            .iter()
            .flat_map(|o| o.annotated.iter().copied())
            .collect();
        let ceiling = pooled(&bare_plain);
        let s = summarize(&seen.latencies).context("no pod of this rate was seen")?;
        let a = summarize(&annotated).map_or(Value::Null, |a| a.json());
        let c = summarize(&ceiling).context("no pod of the bare kube-rs client was seen")?;
        let times: Vec<PodTimes> = otto_plain.iter().flat_map(|r| r.pods.clone()).collect();
        let ceiling_times: Vec<PodTimes> = bare_plain.iter().flat_map(|r| r.pods.clone()).collect();
        let p99 = |pods: &[PodTimes]| summarize(&b6_completion::samples(pods)).map(|s| s.p99);
        let (otto_apiserver, otto_busy) = mean_cores(&otto_plain, "kube-apiserver");
        let (bare_apiserver, bare_busy) = mean_cores(&bare_plain, "kube-apiserver");
        let round_p99: Vec<(Option<f64>, Option<f64>)> = otto_runs
            .iter()
            .zip(&bare_runs)
            .map(|(o, b)| (p99_of(&o.run.latencies), p99_of(&b.latencies)))
            .collect();
        let round_ratio = median_round_ratio(&round_p99);
        let again_plain: Vec<&Run> = again_runs.iter().collect();
        let again = summarize(&pooled(&again_plain))
            .context("no pod of the bare client's second run was seen")?;
        let aa_round_p99: Vec<(Option<f64>, Option<f64>)> = again_runs
            .iter()
            .zip(&bare_runs)
            .map(|(a, b)| (p99_of(&a.latencies), p99_of(&b.latencies)))
            .collect();
        let aa = AaLine {
            latency_p99: again.p99,
            median_round_ratio: median_round_ratio(&aa_round_p99),
            round_p99: aa_round_p99.iter().map(|(a, _)| *a).collect(),
        };
        let rounds: Vec<Value> = otto_runs
            .iter()
            .zip(&bare_runs)
            .zip(&again_runs)
            .zip(&round_p99)
            .zip(0..)
            .map(|((((o, b), a), p99s), round)| round_json(round, o, b, a, *p99s))
            .collect();
        section.rates.push(RateLine {
            rate,
            latency_p99: (s.p99, c.p99),
            median_round_ratio: round_ratio,
            round_p99,
            completion_p99: (p99(&times), p99(&ceiling_times)),
            apiserver_cores: (otto_apiserver, bare_apiserver),
            busy_cores: (otto_busy, bare_busy),
            watch_reopens: (
                otto_plain.iter().map(|r| r.own_watch_reopens).sum(),
                bare_plain.iter().map(|r| r.own_watch_reopens).sum(),
            ),
            aa: Some(aa.clone()),
        });

        let runs = plan.latency_rounds;
        section.rows.push(
            Row::new("B1", label(rate), s.p99, "ms")
                .target(Target::at_most(50.0))
                .shortfall(seen.shortfall())
                .baseline(c.p99)
                .method(format!(
                    "{count} one-pod scale_up events XADDed at {rate}/s for {seconds} s, in \
                     each of {runs} runs; per event: the time the harness' own pod watch \
                     received the pod's ADDED event minus the XADD time in the entry id \
                     (ms). So it includes the create round trip and the watch delivery; a \
                     pod the watch never saw counts as missing and fails the row (pods_seen \
                     of events). The p99 is over the events of every run together. \
                     ottoscaler with qps/burst 500 and 1000 creates in flight (not the \
                     defaults 50/100 and 64), max_workers 1000, and HTTP/1.1 \
                     (kubernetes.http2 false, not the default: the bare client's transport; \
                     HTTP/2 at saturation: README \"Known limits\"), pods run 1 s. Baseline: p99 of the \
                     bare kube-rs client program (the stock kube client: HTTP/1.1, Nagle \
                     on, no client-side limit; a process of its own, as ottoscaler is) at \
                     the same rate \
                     (create sent -> ADDED seen), {runs} runs. A/A: the bare client runs \
                     a second time in each round, and its p99 over the first run's is \
                     the noise band of this machine (aa_ratio_...). Before all, the bare \
                     client program runs the rate once unmeasured (warm_up_bare_client); \
                     then rounds of the three runs, the order rotating from round to round \
                     (rounds), each run a fresh process on fresh lanes, so that its \
                     watches open after the warm-up."
                ))
                .detail("events", seen.expected)
                .detail("pods_seen", seen.latencies.len())
                .detail("pods_missing", seen.missing())
                .detail("xadd_to_watch_added_ms", s.json())
                .detail("xadd_to_created_at_annotation_ms", a)
                .detail("bare_client_create_to_watch_added_ms", c.json())
                .detail("ratio_median_of_rounds", round_ratio.map(|r| round(r, 3)))
                .detail("bare_client_again_create_to_watch_added_ms", again.json())
                .detail(
                    "aa_ratio_bare_client_again_to_bare_client",
                    serde_json::json!({
                        "pooled": round(aa.latency_p99 / c.p99, 3),
                        "median_of_rounds": aa.median_round_ratio.map(|r| round(r, 3)),
                        "again_bare_client_own_watch_reopens":
                            again_plain.iter().map(|r| r.own_watch_reopens).sum::<f64>(),
                    }),
                )
                .detail("rounds", Value::Array(rounds))
                .detail("warm_up_bare_client", warm_up),
        );
        section
            .latencies
            .push((format!("ottoscaler, {rate} events/s"), seen.latencies));
        section
            .latencies
            .push((format!("bare kube-rs client, {rate} pods/s"), ceiling));
        completion.push((format!("{rate} events/s"), times));
        ceiling_completion.extend(ceiling_times);
    }
    section
        .rows
        .push(b6_completion::row(&completion, &ceiling_completion)?);
    Ok(section)
}

/// The mean over `runs` of [`cores`]: `process`'s cores, and every process' together.
fn mean_cores(runs: &[&Run], process: &str) -> (Option<f64>, Option<f64>) {
    let mean = |values: Vec<f64>| {
        (!values.is_empty()).then(|| round(values.iter().sum::<f64>() / values.len() as f64, 2))
    };
    let (one, all): (Vec<_>, Vec<_>) = runs.iter().map(|r| cores(&r.cpu, process)).unzip();
    (
        mean(one.into_iter().flatten().collect()),
        mean(all.into_iter().flatten().collect()),
    )
}

/// The runs of one B1 round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Ottoscaler,
    BareClient,
    /// The bare client program a second time: the A/A pair with [`Contender::BareClient`].
    BareClientAgain,
}

/// The order of the runs in `round`: ottoscaler, bare client, bare client again,
/// rotated left by `round`, so that over three rounds each runs once in each place.
fn order(round: u32) -> [Contender; 3] {
    let mut all = [
        Contender::Ottoscaler,
        Contender::BareClient,
        Contender::BareClientAgain,
    ];
    all.rotate_left(round as usize % 3);
    all
}

/// `order(round)` as the rounds' detail spells it.
fn order_text(round: u32) -> String {
    order(round)
        .map(|c| match c {
            Contender::Ottoscaler => "ottoscaler",
            Contender::BareClient => "bare client",
            Contender::BareClientAgain => "bare client again",
        })
        .join(", ")
}

/// The median over rounds of ottoscaler's p99 / the bare client's p99 in the same round
/// (a paired number: both ran on the machine as it was in that round); with an even
/// count, the mean of the middle two. `None` when no round has both.
fn median_round_ratio(rounds: &[(Option<f64>, Option<f64>)]) -> Option<f64> {
    let mut ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|&(o, b)| Some(o? / b.filter(|b| *b > 0.0)?))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(ratios[n / 2]),
        _ => Some((ratios[n / 2 - 1] + ratios[n / 2]) / 2.0),
    }
}

/// The p99 of `latencies` (ms), if any.
fn p99_of(latencies: &[f64]) -> Option<f64> {
    summarize(latencies).map(|s| s.p99)
}

/// One round's numbers for the row's detail: each contender's p99 (`p99s`, as the
/// by-rate table has them) and CPU, in the order they ran.
fn round_json(
    round: u32,
    otto: &OttoRun,
    bare: &Run,
    again: &Run,
    (otto_p99, bare_p99): (Option<f64>, Option<f64>),
) -> Value {
    serde_json::json!({
        "order": order_text(round),
        "ottoscaler_p99_ms": otto_p99,
        "bare_client_p99_ms": bare_p99,
        "bare_client_again_p99_ms": p99_of(&again.latencies),
        "ottoscaler_pods_missing": otto.expected - otto.run.latencies.len(),
        "own_watch_reopens": {
            "ottoscaler": otto.run.own_watch_reopens,
            "bare_client": bare.own_watch_reopens,
            "bare_client_again": again.own_watch_reopens,
        },
        "apiserver_terminated_pod_watchers": {
            "ottoscaler_run": otto.run.closed_watches,
            "bare_client_run": bare.closed_watches,
            "bare_client_again_run": again.closed_watches,
        },
        "cpu_seconds": otto.run.cpu,
        "cpu_seconds_bare_client": bare.cpu,
        "cpu_seconds_bare_client_again": again.cpu,
        "ottoscaler_read_to_created_ms": otto.create_histogram,
        "ottoscaler_built_to_own_watch_ms": otto.watch_histogram,
    })
}

/// One run of ottoscaler at one rate, as the harness saw it.
struct OttoRun {
    /// The events' pods: XADD -> first seen on the harness' watch (ms), their times,
    /// the CPU and the closed watches of the run.
    run: Run,
    /// Events sent.
    expected: usize,
    /// XADD -> the created-at annotation ottoscaler wrote (ms).
    annotated: Vec<f64>,
    /// ottoscaler's own histograms over the run (read -> created; built -> seen on its
    /// watch).
    create_histogram: Value,
    watch_histogram: Value,
}

/// A fresh ottoscaler process on a fresh lane `b1-<rate>-<round>` gets `count` events
/// at `rate`; stopped at the end, when every pod is gone and every result written.
async fn otto_run(
    env: &BenchEnv,
    (rate, count): (u32, u32),
    round: u32,
    timeout: Duration,
) -> Result<OttoRun> {
    let name = format!("b1-{rate}-{round}");
    let lane = env.lane(&name).await?;
    let recorder = Recorder::start(env.env.config(), &lane.namespace).await?;
    let mut otto = Otto::start(env, &lane, &CONFIG, &name)?;
    otto.wait_ready(Duration::from_secs(60)).await?;
    let mut con = events::connect(&env.redis.url()).await?;

    let cpu = CpuMeter::start(env, Some(otto.pid()));
    let terminated_before = apiserver::terminated_pod_watchers(&env.client()).await?;
    let before = otto.metrics().await?;
    let ids = send_paced(&mut con, &lane.stream, rate, count).await?;
    let total = count as usize;
    // A pod the harness never saw would keep this waiting: after the timeout the run
    // goes on, and the row counts what is missing instead of failing whole.
    let waited = recorder
        .wait("pods of every event gone", timeout, |c| c.gone >= total)
        .await
        .and(
            events::wait_len(
                &mut con,
                &lane.results,
                u64::from(count),
                Duration::from_secs(30),
            )
            .await,
        );
    if let Err(err) = &waited {
        eprintln!("bench: b1 at {rate}/s, round {round}: {err:#}");
    }
    let after = otto.metrics().await?;
    let cpu = cpu.json();
    let closed_watches =
        apiserver::terminated_pod_watchers(&env.client()).await? - terminated_before;
    let watches = |m: &Metrics| m.sum("ottoscaler_kube_requests_total", &["verb=\"watch\""]);
    let code = otto.stop().await?;
    if code != Some(0) {
        eprintln!("bench: b1 ottoscaler at {rate}/s, round {round}, exited with {code:?}");
    }

    let pods = recorder.pods();
    let by_event: HashMap<&str, &PodTimes> = pods
        .values()
        .filter_map(|t| Some((t.event_id.as_deref()?, t)))
        .collect();
    let mine: Vec<(&str, &PodTimes)> = ids
        .iter()
        .filter_map(|id| Some((id.as_str(), *by_event.get(id.as_str())?)))
        .collect();
    write_csv(env, &name, &mine)?;
    let mine_times: Vec<&PodTimes> = mine.iter().map(|(_, t)| *t).collect();
    let seen = coverage(&ids, &mine_times, |t| t.seen_us);
    let annotated = coverage(&ids, &mine_times, |t| t.annotated_created_us);
    Ok(OttoRun {
        run: Run {
            latencies: seen.latencies,
            pods: mine_times.into_iter().cloned().collect(),
            cpu,
            closed_watches,
            // Counted from after ready, when its watch was already open.
            own_watch_reopens: watches(&after) - watches(&before),
        },
        expected: seen.expected,
        annotated: annotated.latencies,
        create_histogram: histogram(&before, &after, "ottoscaler_pod_create_seconds"),
        watch_histogram: histogram(&before, &after, "ottoscaler_pod_watch_delay_seconds"),
    })
}

/// ottoscaler's pod for one event, as it built it: what the bare client copies. From a
/// lane and process of its own, stopped before the rates.
async fn template_pod(env: &BenchEnv) -> Result<Pod> {
    let lane = env.lane("b1-template").await?;
    let recorder = Recorder::start(env.env.config(), &lane.namespace).await?;
    let mut otto = Otto::start(env, &lane, &CONFIG, "b1-template")?;
    otto.wait_ready(Duration::from_secs(60)).await?;
    let mut con = events::connect(&env.redis.url()).await?;
    events::scale_up(&mut con, &lane.stream, "b1-template", 1).await?;
    recorder
        .wait("the template pod gone", Duration::from_secs(60), |c| {
            c.gone >= 1
        })
        .await?;
    events::wait_len(&mut con, &lane.results, 1, Duration::from_secs(30)).await?;
    let template = recorder
        .sample()
        .context("no pod to copy for the bare kube-rs client")?;
    let code = otto.stop().await?;
    if code != Some(0) {
        eprintln!("bench: b1 template ottoscaler exited with {code:?}");
    }
    Ok(template)
}

/// Before each rate, the bare kube-rs client program runs it once unmeasured, on a lane of its own.
///
/// The API server sizes its pod watch cache, and from it the buffer of each new watch,
/// to the event rate it has seen: whoever runs first at a higher rate meets small
/// buffers, watches closed for falling behind and seconds of lag (B1 at 100/s: 1.2 s
/// for the bare client when it ran first, 0.3 s right after). The warm-up takes that hit
/// for both contenders; its p99 and closed watches are kept in the row's detail.
async fn warm_up(
    env: &BenchEnv,
    template: &Pod,
    rate: u32,
    count: u32,
    timeout: Duration,
) -> Result<Value> {
    let phase = ceiling_phase(
        env,
        &format!("b1-warm-up-{rate}"),
        template,
        (rate, count),
        timeout,
    )
    .await
    .context("warm-up")?;
    Ok(serde_json::json!({
        "create_to_watch_added_p99_ms": summarize(&phase.latencies).map(|s| s.p99),
        "apiserver_terminated_pod_watchers": phase.closed_watches,
        "own_watch_reopens": phase.own_watch_reopens,
    }))
}

/// One contender's run at one rate, as the harness saw it.
struct Run {
    /// Per pod: XADD (ottoscaler) or create sent (the bare client) -> first seen on the
    /// recorder's watch, in ms.
    latencies: Vec<f64>,
    /// Each pod's times on the recorder's watch.
    pods: Vec<PodTimes>,
    /// CPU seconds per process over the run, the contender's included.
    cpu: Value,
    /// Pod watches the API server closed during the run, any client's
    /// (`apiserver_terminated_watchers_total`: the scheduler's, the controllers',
    /// kubesim's and the harness' too).
    closed_watches: f64,
    /// How many times the contender re-opened its own pod watch during the run (the API
    /// server closed it, or it failed and was listed anew).
    own_watch_reopens: f64,
}

/// Runs the bare kube-rs client program, with copies of `template`, on a fresh lane
/// `lane` that the harness watches, at `rate` events per second for `count` pods.
async fn ceiling_phase(
    env: &BenchEnv,
    lane: &str,
    template: &Pod,
    (rate, count): (u32, u32),
    timeout: Duration,
) -> Result<Run> {
    let lane = env.lane(lane).await?;
    let namespace = &lane.namespace;
    let recorder = Recorder::start(env.env.config(), namespace).await?;
    let cpu = CpuMeter::start(env, None);
    let closed_before = apiserver::terminated_pod_watchers(&env.client()).await?;
    let run = ceiling::paced_process(
        env.env.kubeconfig_path(),
        env.log_dir(),
        namespace,
        template,
        rate,
        count,
        timeout,
    )
    .await?;
    let mut cpu = cpu.json();
    if let (Some(map), Some(seconds)) = (cpu.as_object_mut(), run.cpu_seconds) {
        map.insert("bare client program".into(), round(seconds, 2).into());
    }
    let closed_watches = apiserver::terminated_pod_watchers(&env.client()).await? - closed_before;
    // The first watch request opened the watch; each further one re-opened it.
    let own_watch_reopens = run.watch_requests.saturating_sub(1) as f64;
    let seen = recorder.pods();
    let latencies = run
        .sent
        .iter()
        .filter_map(|(name, at)| Some((seen.get(name)?.seen_us? - at) as f64 / 1000.0))
        .collect();
    let pods = run
        .sent
        .iter()
        .filter_map(|(name, _)| seen.get(name).cloned())
        .collect();
    Ok(Run {
        latencies,
        pods,
        cpu,
        closed_watches,
        own_watch_reopens,
    })
}

/// One of ottoscaler's latency histograms over the run: its mean and its buckets.
fn histogram(before: &Metrics, after: &Metrics, name: &str) -> Value {
    let delta = |suffix: &str, labels: &[&str]| {
        let series = format!("{name}_{suffix}");
        after.sum(&series, labels) - before.sum(&series, labels)
    };
    let mean_ms = delta("sum", &[]) / delta("count", &[]) * 1000.0;
    let mut buckets = serde_json::Map::new();
    for le in [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf",
    ] {
        let label = format!("le=\"{le}\"");
        buckets.insert(le.to_string(), delta("bucket", &[&label]).into());
    }
    serde_json::json!({ "mean_ms": round(mean_ms, 2), "at_or_under_seconds": buckets })
}

/// Every pod of an ottoscaler run with its times, for a closer look: `b1-<rate>-<round>.csv` in the
/// log directory (times in microseconds since the epoch, the XADD in ms).
fn write_csv(env: &BenchEnv, run: &str, pods: &[(&str, &PodTimes)]) -> Result<()> {
    use std::fmt::Write as _;
    let mut csv = String::from(
        "event_id,xadd_ms,annotated_created_us,seen_us,running_us,finished_us,deleting_us,gone_us\n",
    );
    let t = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
    for (id, p) in pods {
        let _ = writeln!(
            csv,
            "{id},{},{},{},{},{},{},{}",
            t(events::id_ms(id)),
            t(p.annotated_created_us),
            t(p.seen_us),
            t(p.running_us),
            t(p.finished_us),
            t(p.deleting_us),
            t(p.gone_us)
        );
    }
    let path = env.log_dir().join(format!("{run}.csv"));
    std::fs::write(&path, csv).with_context(|| format!("cannot write {}", path.display()))
}

/// XADDs `count` one-pod events (tasks `b1-<rate>-<i>`) at `rate` per second (see
/// [`events::send_paced`]); returns their entry ids.
pub(crate) async fn send_paced(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    rate: u32,
    count: u32,
) -> Result<Vec<String>> {
    events::send_paced(con, stream, &format!("b1-{rate}"), rate, count, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(event_id: &str, seen_us: Option<i64>) -> PodTimes {
        PodTimes {
            event_id: Some(event_id.into()),
            seen_us,
            ..PodTimes::default()
        }
    }

    #[test]
    fn a_pod_never_seen_is_counted_missing_not_dropped() {
        let ids: Vec<String> = ["1000-0", "1010-0", "1020-0"].map(String::from).to_vec();
        // 1010-0's pod was never seen; 1020-0 has a pod without a sighting.
        let pods = [pod("1000-0", Some(1_004_500)), pod("1020-0", None)];
        let refs: Vec<&PodTimes> = pods.iter().collect();
        let c = coverage(&ids, &refs, |t| t.seen_us);
        assert_eq!(c.latencies, vec![4.5]);
        assert_eq!(c.expected, 3);
        assert_eq!(c.missing(), 2);
        assert_eq!(c.shortfall().as_deref(), Some("1 of 3 pods seen"));
    }

    #[test]
    fn every_pod_seen_is_no_shortfall() {
        let ids = vec!["2000-0".to_string()];
        let pods = [pod("2000-0", Some(2_010_000))];
        let refs: Vec<&PodTimes> = pods.iter().collect();
        let c = coverage(&ids, &refs, |t| t.seen_us);
        assert_eq!(c.missing(), 0);
        assert_eq!(c.shortfall(), None);
        assert_eq!(c.latencies, vec![10.0]);
    }

    #[test]
    fn each_contender_runs_once_in_each_place_over_three_rounds() {
        let rounds: Vec<[Contender; 3]> = (0..3).map(order).collect();
        for place in 0..3 {
            let mut at: Vec<Contender> = rounds.iter().map(|r| r[place]).collect();
            at.dedup();
            assert_eq!(at.len(), 3, "place {place}: {rounds:?}");
        }
        assert_eq!(order(3), order(0));
        assert_eq!(order_text(1), "bare client, bare client again, ottoscaler");
    }

    #[test]
    fn the_round_ratio_is_the_median_of_paired_ratios() {
        // Ratios 2.0, 0.5, 1.2: the median is the middle one, not the pooled ratio.
        let rounds = [
            (Some(200.0), Some(100.0)),
            (Some(50.0), Some(100.0)),
            (Some(120.0), Some(100.0)),
        ];
        assert_eq!(median_round_ratio(&rounds), Some(1.2));
        // Even count: the mean of the middle two; a round without both numbers (or a
        // zero baseline) does not count.
        let rounds = [
            (Some(300.0), Some(100.0)),
            (Some(100.0), Some(100.0)),
            (None, Some(100.0)),
            (Some(100.0), Some(0.0)),
        ];
        assert_eq!(median_round_ratio(&rounds), Some(2.0));
        assert_eq!(median_round_ratio(&[(Some(1.0), None)]), None);
    }
}
