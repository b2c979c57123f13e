//! K1: ottoscaler next to KEDA's ScaledJob (the redis-streams scaler, `lagCount` 1: one
//! Job per entry, pollingInterval 1 s), on the same control plane, Redis and machine,
//! in the same run. Both get the same one-pod scale_up entries at the same rate; the
//! harness plays KEDA's job agent (when a job's pod is Running it reads and acknowledges
//! one entry with XREADGROUP + XACK), so both systems do the same work per entry.
//!
//! Rows, each `ottoscaler / KEDA`: XADD -> pod ADDED on the harness' watch p50 and p99
//! per rate (for KEDA, the n-th pod seen is matched with the n-th entry sent: its Jobs
//! are not tied to an entry); API requests per entry (apiserver_request_total over each
//! system's window, every client but watches); CPU seconds per 1,000 entries and peak
//! RSS (ottoscaler; KEDA: the operator plus kube-controller-manager, whose job
//! controller turns KEDA's Jobs into pods).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::b1_latency::{Coverage, coverage, send_paced};
use crate::args::Plan;
use crate::bench_env::{BenchEnv, Lane};
use crate::keda::{self, Operator, OperatorConfig};
use crate::otto::{Otto, OttoConfig};
use crate::recorder::{PodTimes, Recorder};
use crate::report::json::round;
use crate::report::{Row, Section};
use crate::stats::summarize;
use crate::{apiserver, events, procfs};

/// Both systems with the same client-side limit, above what the rates need.
const QPS: u32 = 500;
const CONFIG: OttoConfig = OttoConfig {
    qps: QPS,
    burst: QPS,
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
/// The ScaledJob's pollingInterval (KEDA's default is 30 s).
const POLLING_SECONDS: u32 = 1;

pub async fn run(env: &BenchEnv, plan: &Plan) -> Section {
    match measure(env, plan).await {
        Ok(section) => section,
        Err(err) => {
            let labels: Vec<String> = plan
                .peer_rates
                .iter()
                .map(|(rate, _)| latency_label("p99", *rate))
                .collect();
            let ids: Vec<(&'static str, &str)> =
                labels.iter().map(|l| ("K1", l.as_str())).collect();
            Section::failed(&ids, &err)
        }
    }
}

fn latency_label(percentile: &str, rate: u32) -> String {
    format!("XADD -> pod created {percentile} at {rate} events/s, ottoscaler / KEDA")
}

/// One system's share of one rate.
struct Phase {
    coverage: Coverage,
    /// apiserver_request_total over the window, watches excluded, by `VERB resource`.
    requests: BTreeMap<String, f64>,
    /// CPU seconds of the system's processes over the window.
    cpu_seconds: f64,
    /// Requests of the system's own clients: ottoscaler's (its
    /// ottoscaler_kube_requests_total); the KEDA operator's (client-go's
    /// rest_client_requests_total) plus the job controller's, see [`job_controller`].
    own_requests: f64,
}

impl Phase {
    fn requests_total(&self) -> f64 {
        self.requests.values().sum()
    }
}

async fn measure(env: &BenchEnv, plan: &Plan) -> Result<Section> {
    let build = keda::build().await.context("building the KEDA operator")?;
    keda::install_crds(env, &build).await?;
    let mut con = events::connect(&env.redis.url()).await?;

    let otto_lane = env.lane("k1-ottoscaler").await?;
    let otto_recorder = Recorder::start(env.env.config(), &otto_lane.namespace).await?;
    let mut otto = Otto::start(env, &otto_lane, &CONFIG, "k1")?;
    otto.wait_ready(Duration::from_secs(60)).await?;

    let keda_lane = env.lane("k1-keda").await?;
    let keda_recorder = Recorder::start(env.env.config(), &keda_lane.namespace).await?;
    create_group(&mut con, &keda_lane.stream).await?;
    let mut operator = Operator::start(env, &build, &keda_lane, KEDA)?;
    let redis_address = env
        .redis
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    keda::apply(
        env,
        &keda::scaled_job(
            &keda_lane,
            &redis_address,
            GROUP,
            POLLING_SECONDS,
            CONFIG.run_seconds,
        ),
    )
    .await
    .context("creating the ScaledJob")?;
    keda::wait_ready(env, &keda_lane.namespace, keda::SCALED_JOB).await?;

    let (_, controller_manager) = env.env.control_plane().control_loop_pids();
    let mut section = Section::default();
    let mut sent_otto = 0usize;
    // (all clients' requests, CPU seconds, entries, own clients' requests)
    let mut otto_total = (0.0, 0.0, 0usize, 0.0);
    let mut keda_total = (0.0, 0.0, 0usize, 0.0);
    for &(rate, seconds) in &plan.peer_rates {
        let count = rate * seconds;
        let timeout = Duration::from_secs(u64::from(seconds) + 90);

        // ottoscaler.
        let otto_phase = {
            let cpu = procfs::cpu_seconds(otto.pid());
            let own_before = otto
                .metrics()
                .await?
                .sum("ottoscaler_kube_requests_total", &[]);
            let before = apiserver::scrape(&env.client()).await?;
            let ids = send_paced(&mut con, &otto_lane.stream, rate, count).await?;
            sent_otto += count as usize;
            if let Err(err) = otto_recorder
                .wait("ottoscaler's pods gone", timeout, |c| c.gone >= sent_otto)
                .await
            {
                eprintln!("bench: k1 ottoscaler at {rate}/s: {err:#}");
            }
            let requests = apiserver::scrape(&env.client())
                .await?
                .since(&before)
                .by_resource();
            let own = otto
                .metrics()
                .await?
                .sum("ottoscaler_kube_requests_total", &[])
                - own_before;
            let pods = otto_recorder.pods();
            let times: Vec<&PodTimes> = pods.values().collect();
            Phase {
                coverage: coverage(&ids, &times, |t| t.seen_us),
                requests,
                cpu_seconds: cpu_since(&[(otto.pid(), cpu)]),
                own_requests: own,
            }
        };

        // KEDA, with the harness as its agent.
        let keda_phase = {
            operator.check_alive()?;
            let cpu = [
                (operator.pid(), procfs::cpu_seconds(operator.pid())),
                (controller_manager, procfs::cpu_seconds(controller_manager)),
            ];
            let own_before = operator.requests_sent().await?;
            let before = apiserver::scrape(&env.client()).await?;
            let seen_before: Vec<String> = keda_recorder.pods().into_keys().collect();
            let base = keda_recorder.counts();
            let agent = play_agent(
                env,
                &keda_lane,
                &keda_recorder,
                base.running,
                count,
                timeout,
            );
            let send = send_paced(&mut con, &keda_lane.stream, rate, count);
            let (ids, consumed) = tokio::join!(send, agent);
            let ids = ids?;
            let consumed = consumed.unwrap_or_else(|err| {
                eprintln!("bench: k1 KEDA agent at {rate}/s: {err:#}");
                0
            });
            if let Err(err) = keda_recorder
                .wait("KEDA's pods finished", Duration::from_secs(30), |c| {
                    c.finished >= c.seen
                })
                .await
            {
                eprintln!("bench: k1 KEDA at {rate}/s: {err:#}");
            }
            let requests = apiserver::scrape(&env.client())
                .await?
                .since(&before)
                .by_resource();
            let new_pods: Vec<i64> = keda_recorder
                .pods()
                .into_iter()
                .filter(|(name, _)| !seen_before.contains(name))
                .filter_map(|(_, t)| t.seen_us)
                .collect();
            let xadd_ms: Vec<i64> = ids.iter().filter_map(|id| events::id_ms(id)).collect();
            let own = operator.requests_sent().await? - own_before + job_controller(&requests);
            let phase = Phase {
                coverage: in_order(&xadd_ms, new_pods.clone()),
                requests,
                cpu_seconds: cpu_since(&cpu),
                own_requests: own,
            };
            if new_pods.len() > count as usize || consumed < count as usize {
                eprintln!(
                    "bench: k1 KEDA at {rate}/s: {} pods for {count} entries, {consumed} consumed",
                    new_pods.len()
                );
            }
            phase
        };

        otto_total.0 += otto_phase.requests_total();
        otto_total.1 += otto_phase.cpu_seconds;
        otto_total.2 += count as usize;
        otto_total.3 += otto_phase.own_requests;
        keda_total.0 += keda_phase.requests_total();
        keda_total.1 += keda_phase.cpu_seconds;
        keda_total.2 += count as usize;
        keda_total.3 += keda_phase.own_requests;
        latency_rows(&mut section, rate, seconds, &otto_phase, &keda_phase)?;
    }

    let units = otto_total.2.max(1) as f64;
    let otto_rss = procfs::memory(otto.pid())?.peak;
    let keda_rss = procfs::memory(operator.pid())?.peak;
    let settings = json!({
        "keda_version": build.version,
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
        "keda_log": keda_lane_log(&operator),
    });
    section.rows.push(
        Row::new(
            "K1",
            "API requests per entry, own clients, ottoscaler / KEDA operator + job controller",
            otto_total.3 / units,
            "requests",
        )
        .baseline(keda_total.3 / keda_total.2.max(1) as f64)
        .method(
            "ottoscaler: the increase of its ottoscaler_kube_requests_total per entry. KEDA: \
             the operator's own client-go counter (rest_client_requests_total on its \
             /metrics, watches included) plus the job controller's requests, taken from the \
             API server's counters of KEDA's window by resource (pods POST and PATCH, \
             jobs/status PUT and PATCH: no other client sends those there).",
        ),
    );
    section.rows.push(
        Row::new(
            "K1",
            "API requests per entry, every client, ottoscaler / KEDA",
            otto_total.0 / units,
            "requests",
        )
        .baseline(keda_total.0 / keda_total.2.max(1) as f64)
        .method(
            "apiserver_request_total (every client, watches excluded) over each system's \
             window at every rate, divided by the entries sent. ottoscaler's window holds \
             its creates and deletes; KEDA's the operator's (ScaledJob reads and status, \
             Job creates and lists), the job controller's (pod creates, Job status) and the \
             garbage collector's; both hold the scheduler's bindings and kubesim's pod \
             status writes, the same per pod.",
        )
        .detail("settings", settings.clone()),
    );
    section.rows.push(
        Row::new(
            "K1",
            "CPU seconds per 1,000 entries, ottoscaler / KEDA",
            otto_total.1 / units * 1000.0,
            "s",
        )
        .baseline(keda_total.1 / keda_total.2.max(1) as f64 * 1000.0)
        .method(
            "CPU seconds (/proc) over each system's windows per 1,000 entries: ottoscaler's \
             process; for KEDA, keda-operator plus kube-controller-manager (its job \
             controller creates the pods; its other controllers are idle here).",
        ),
    );
    section.rows.push(
        Row::new(
            "K1",
            "peak RSS, ottoscaler / KEDA operator",
            mib(otto_rss),
            "MiB",
        )
        .baseline(mib(keda_rss))
        .method(format!(
            "VmHWM of each process at the end of K1 ({} entries each; kube-controller-manager, \
             shared by the cluster, not counted).",
            otto_total.2
        )),
    );

    operator.stop().await?;
    let _ = otto.stop().await?;
    Ok(section)
}

fn mib(bytes: u64) -> f64 {
    round(super::mib(bytes), 1)
}

fn keda_lane_log(operator: &Operator) -> String {
    operator.log_path().display().to_string()
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

/// CPU seconds each pid used since its `before` reading, summed.
fn cpu_since(before: &[(u32, Option<f64>)]) -> f64 {
    before
        .iter()
        .filter_map(|(pid, before)| Some(procfs::cpu_seconds(*pid)? - (*before)?))
        .sum()
}

/// The two latency rows (p50, p99) of one rate.
fn latency_rows(
    section: &mut Section,
    rate: u32,
    seconds: u32,
    otto: &Phase,
    keda: &Phase,
) -> Result<()> {
    let o = summarize(&otto.coverage.latencies).context("no ottoscaler pod was seen")?;
    let k = summarize(&keda.coverage.latencies).context("no KEDA pod was seen")?;
    let shortfall = |c: &Coverage, who: &str| c.shortfall().map(|s| format!("{who}: {s}"));
    let shortfalls: Vec<String> = [
        shortfall(&otto.coverage, "ottoscaler"),
        shortfall(&keda.coverage, "KEDA"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let shortfall = (!shortfalls.is_empty()).then(|| shortfalls.join("; "));
    for (name, ours, theirs) in [("p50", o.p50, k.p50), ("p99", o.p99, k.p99)] {
        section.rows.push(
            Row::new("K1", latency_label(name, rate), ours, "ms")
                .baseline(theirs)
                .shortfall(shortfall.clone())
                .method(format!(
                    "{} one-pod scale_up entries XADDed at {rate}/s for {seconds} s to each \
                     system's stream; XADD (entry id, ms) -> the pod's ADDED on the \
                     harness' watch. ottoscaler: the pod of each entry (event-id \
                     annotation). KEDA: the n-th new pod seen against the n-th entry (its \
                     Jobs carry no entry); an entry without a pod counts as missing.",
                    otto.coverage.expected
                ))
                .detail("ottoscaler_ms", o.json())
                .detail("keda_ms", k.json())
                .detail("ottoscaler_requests", json!(otto.requests))
                .detail("keda_requests", json!(keda.requests)),
        );
    }
    Ok(())
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

/// `XGROUP CREATE stream group $ MKSTREAM` (the group exists before the scaler looks).
async fn create_group(con: &mut redis::aio::MultiplexedConnection, stream: &str) -> Result<()> {
    let created: redis::RedisResult<String> = tokio::time::timeout(
        Duration::from_secs(5),
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(con),
    )
    .await
    .context("XGROUP CREATE timed out")?;
    match created {
        Ok(_) => Ok(()),
        Err(err) if err.to_string().contains("BUSYGROUP") => Ok(()),
        Err(err) => bail!("XGROUP CREATE {stream} {GROUP}: {err}"),
    }
}

/// The job agent: each time one more of the lane's pods is Running (beyond
/// `running_before`), reads one entry for KEDA's group and acknowledges it, until
/// `count` are consumed; returns how many were. Fails after `timeout` without progress.
async fn play_agent(
    env: &BenchEnv,
    lane: &Lane,
    recorder: &Recorder,
    running_before: usize,
    count: u32,
    timeout: Duration,
) -> Result<usize> {
    let mut con = events::connect(&env.redis.url()).await?;
    let mut consumed = 0usize;
    let mut running = 0usize;
    while consumed < count as usize {
        let counts = recorder
            .wait("a KEDA job's pod running", timeout, |c| {
                c.running > running_before + running
            })
            .await?;
        let now_running = counts.running - running_before;
        for _ in running..now_running {
            if read_and_ack(&mut con, &lane.stream).await? {
                consumed += 1;
            }
        }
        running = now_running;
    }
    Ok(consumed)
}

/// One `XREADGROUP GROUP keda-agents agent COUNT 1 STREAMS stream >` and its XACK;
/// false when no entry was left (a job more than entries).
async fn read_and_ack(con: &mut redis::aio::MultiplexedConnection, stream: &str) -> Result<bool> {
    let reply: Value = redis_json(
        con,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("agent")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(stream)
            .arg(">"),
    )
    .await?;
    let Some(id) = first_entry_id(&reply) else {
        return Ok(false);
    };
    let _: Value = redis_json(con, redis::cmd("XACK").arg(stream).arg(GROUP).arg(&id)).await?;
    Ok(true)
}

async fn redis_json(
    con: &mut redis::aio::MultiplexedConnection,
    cmd: &redis::Cmd,
) -> Result<Value> {
    let value: redis::Value = tokio::time::timeout(Duration::from_secs(5), cmd.query_async(con))
        .await
        .context("Redis command timed out")?
        .context("Redis command failed")?;
    Ok(to_json(&value))
}

/// A Redis reply as JSON (bulk strings as strings), enough to walk an XREADGROUP reply.
fn to_json(value: &redis::Value) -> Value {
    match value {
        redis::Value::BulkString(b) => Value::from(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Value::from(s.as_str()),
        redis::Value::Int(i) => Value::from(*i),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        redis::Value::Map(pairs) => Value::Array(
            pairs
                .iter()
                .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The id of the first entry of an XREADGROUP reply: `[[stream, [[id, fields]]]]`
/// (RESP2) or `[[stream, [[id, fields]]]]` from a RESP3 map; None when it is empty.
fn first_entry_id(reply: &Value) -> Option<String> {
    reply
        .get(0)?
        .get(1)?
        .get(0)?
        .get(0)?
        .as_str()
        .map(str::to_string)
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
    fn the_first_entry_id_is_read_from_an_xreadgroup_reply() {
        let reply = json!([["bench:k1:events", [["1700-0", ["type", "scale_up"]]]]]);
        assert_eq!(first_entry_id(&reply).as_deref(), Some("1700-0"));
        assert_eq!(first_entry_id(&Value::Null), None);
        assert_eq!(first_entry_id(&json!([["s", []]])), None);
    }
}
