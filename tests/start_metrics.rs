//! Queue and start-up metrics of the real binary against redis-server, the control
//! plane (real kube-scheduler) and kubesim: the three start-up histograms count one
//! sample per worker with sane sums, labelled by template, and the stream gauges show a
//! backlog that the test makes deterministic (an entry pending on a consumer that never
//! acknowledges it; entries not read while every worker slot is taken).

use std::time::{Duration, Instant};

use testenv::RedisServer;

mod common;

use common::ottoscaler::{Launch, Ottoscaler, metric_value, temp_dir};
use common::redis::{entries, redis_cli, xadd};
use common::wait_until;

const STREAM: &str = "otto:scale:events";
const GROUP: &str = "ottoscaler";

/// `ci` pods run 1 s; `long` ones outlive the test. Three slots, and a claim_idle that
/// outlives the test, so the ghost consumer's entry stays pending on it.
const CONFIG: &str = r#"
[redis]
claim_idle = "10m"
stats_interval = "200ms"

[limits]
max_workers = 3

[templates.default]
image = "busybox:latest"

[templates.ci]
image = "busybox:latest"
annotations = { "kubesim.ottoscaler.dev/run-seconds" = "1" }

[templates.long]
image = "busybox:latest"
annotations = { "kubesim.ottoscaler.dev/run-seconds" = "3600" }
"#;

fn value(text: &str, series: &str) -> f64 {
    metric_value(text, &format!("{series} ")).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Milliseconds since the epoch of an entry id.
fn id_ms(id: &str) -> u64 {
    id.split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .expect("an entry id")
}

fn now_ms() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).expect("after 1970")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_histograms_count_every_worker_and_stream_gauges_show_the_backlog() {
    let ns = testenv::shared().namespace("start-metrics").await;
    let redis = RedisServer::start();
    let port = redis.port();

    // A consumer that reads one entry and dies: it stays pending on it.
    redis_cli(port, &["XGROUP", "CREATE", STREAM, GROUP, "$", "MKSTREAM"]);
    let ghost = xadd(
        port,
        STREAM,
        &[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "ghost"),
        ],
    );
    let read = redis_cli(
        port,
        &[
            "XREADGROUP",
            "GROUP",
            GROUP,
            "ghost",
            "COUNT",
            "1",
            "STREAMS",
            STREAM,
            ">",
        ],
    );
    assert!(read.contains(&ghost), "the ghost read its entry: {read}");

    let dir = temp_dir("start-metrics");
    let mut ottoscaler = Ottoscaler::start(
        Launch::new(redis.port(), &ns, &dir)
            .config(CONFIG)
            .consumer("ottoscaler-start-metrics")
            // No read-ahead: entries beyond capacity stay unread, so the lag counts them.
            .env("OTTOSCALER_LIMITS__MAX_WAITING_EVENTS", "0"),
    );
    tokio::task::block_in_place(|| ottoscaler.wait_ready(Duration::from_secs(60)));

    // Three workers of the `ci` template, to their end.
    let started = Instant::now();
    let up = xadd(
        port,
        STREAM,
        &[
            ("type", "scale_up"),
            ("pod_count", "3"),
            ("task_id", "start-metrics"),
            ("template", "ci"),
        ],
    );
    wait_until("3 results", Duration::from_secs(90), || {
        entries(port, "otto:scale:results").len() >= 3
    })
    .await;
    // Every start was recorded before its worker published (Running comes first), so
    // these bounds hold for every sample.
    let waited = (now_ms() - id_ms(&up)) as f64 / 1000.0;
    let elapsed = started.elapsed().as_secs_f64();
    let text = ottoscaler.metrics();
    for name in [
        "ottoscaler_queue_wait_seconds",
        "ottoscaler_pod_scheduling_seconds",
        "ottoscaler_pod_starting_seconds",
    ] {
        assert_eq!(
            value(&text, &format!(r#"{name}_count{{template="ci"}}"#)),
            3.0,
            "{name}: one sample per worker\n{text}"
        );
        assert_eq!(
            value(&text, &format!(r#"{name}_count{{template="default"}}"#)),
            0.0,
            "{name}: other templates untouched"
        );
        let sum = value(&text, &format!(r#"{name}_sum{{template="ci"}}"#));
        // Kubernetes' timestamps have whole seconds: up to one second more per sample.
        assert!(
            (0.0..=3.0 * (elapsed + 1.0)).contains(&sum),
            "{name}_sum {sum} for 3 workers within {elapsed:.1}s"
        );
    }
    let queue_wait = value(&text, r#"ottoscaler_queue_wait_seconds_sum{template="ci"}"#);
    assert!(
        queue_wait > 0.0 && queue_wait <= 3.0 * waited,
        "queue wait sum {queue_wait}: each between XADD and now ({waited:.3}s)"
    );
    assert_eq!(
        value(
            &text,
            r#"ottoscaler_workers_finished_total{outcome="succeeded",template="ci"}"#
        ),
        3.0,
        "{text}"
    );
    assert!(!text.contains(r#"template="unknown""#), "{text}");

    // The backlog: the ghost's entry is the oldest pending one; everything else was
    // read, so the lag is 0.
    wait_until(
        "the stream gauges refreshed",
        Duration::from_secs(30),
        || {
            let text = ottoscaler.metrics();
            metric_value(&text, "ottoscaler_stream_lag ") == Some(0.0)
                && metric_value(&text, "ottoscaler_oldest_pending_age_seconds ")
                    .is_some_and(|age| age >= 0.5)
        },
    )
    .await;
    let before = now_ms();
    let age = value(
        &ottoscaler.metrics(),
        "ottoscaler_oldest_pending_age_seconds",
    );
    let ghost_age = (now_ms() - id_ms(&ghost)) as f64 / 1000.0;
    assert!(
        age <= ghost_age && age >= ((before - id_ms(&ghost)) as f64 / 1000.0) - 5.0,
        "oldest pending age {age} for the ghost's entry, {ghost_age:.3}s old"
    );

    // Every slot taken by `long` workers: the next entries are not read (no read-ahead
    // here), and the lag counts them.
    xadd(
        port,
        STREAM,
        &[
            ("type", "scale_up"),
            ("pod_count", "3"),
            ("task_id", "start-metrics-long"),
            ("template", "long"),
        ],
    );
    wait_until("the long workers running", Duration::from_secs(90), || {
        let text = ottoscaler.metrics();
        metric_value(
            &text,
            r#"ottoscaler_queue_wait_seconds_count{template="long"} "#,
        ) == Some(3.0)
    })
    .await;
    for task in ["waits-1", "waits-2"] {
        xadd(
            port,
            STREAM,
            &[("type", "scale_up"), ("pod_count", "1"), ("task_id", task)],
        );
    }
    wait_until("a lag of 2", Duration::from_secs(30), || {
        metric_value(&ottoscaler.metrics(), "ottoscaler_stream_lag ") == Some(2.0)
    })
    .await;
    let text = ottoscaler.metrics();
    assert_eq!(value(&text, "ottoscaler_workers_active"), 3.0, "{text}");
    assert_eq!(
        value(&text, "ottoscaler_redis_errors_total"),
        0.0,
        "stats refreshes do not fail\n{text}"
    );
    ottoscaler.stop(Duration::from_secs(10));
}
