//! A freshly started `ottoscaler run` exports its counters at 0 before anything was
//! counted, so dashboards show zeros rather than gaps and `absent()` alerts do not fire
//! on a healthy new replica.

use std::time::Duration;

use testenv::RedisServer;

mod common;

use common::ottoscaler::{Launch, Ottoscaler, metric_value, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_process_lists_every_known_counter_at_zero() {
    let ns = testenv::shared().namespace("metrics-at-start").await;
    let redis = RedisServer::start();
    let dir = temp_dir("metrics-at-start");
    let mut ottoscaler = Ottoscaler::start(
        Launch::new(redis.port(), &ns, &dir)
            .consumer("ottoscaler-metrics-at-start")
            .rust_log("info"),
    );
    // Ready: Redis and the pod watch are up, no event was ever added.
    tokio::task::block_in_place(|| ottoscaler.wait_ready(Duration::from_secs(60)));
    let text = ottoscaler.metrics();

    let mut zero = Vec::new();
    for kind in ["scale_up", "scale_down"] {
        for result in ["accepted", "refused", "dead_lettered"] {
            zero.push(format!(
                r#"ottoscaler_events_total{{type="{kind}",result="{result}"}}"#
            ));
        }
    }
    zero.push(r#"ottoscaler_events_total{type="invalid",result="dead_lettered"}"#.into());
    for outcome in ["succeeded", "failed", "timed_out", "cancelled", "lost"] {
        zero.push(format!(
            r#"ottoscaler_workers_finished_total{{outcome="{outcome}",template="default"}}"#
        ));
    }
    // The start-up histograms, for every configured template (only `default` here).
    for name in [
        "ottoscaler_queue_wait_seconds",
        "ottoscaler_pod_scheduling_seconds",
        "ottoscaler_pod_starting_seconds",
    ] {
        zero.push(format!(r#"{name}_count{{template="default"}}"#));
        zero.push(format!(r#"{name}_sum{{template="default"}}"#));
    }
    zero.push("ottoscaler_oldest_pending_age_seconds".into());
    for name in [
        "ottoscaler_dead_letters_total",
        "ottoscaler_results_published_total",
        "ottoscaler_redis_errors_total",
        r#"ottoscaler_kube_requests_total{verb="create",code="201"}"#,
        r#"ottoscaler_kube_requests_total{verb="create",code="error"}"#,
        r#"ottoscaler_kube_requests_total{verb="delete",code="200"}"#,
        r#"ottoscaler_kube_events_total{result="published"}"#,
        r#"ottoscaler_kube_events_total{result="failed"}"#,
        r#"ottoscaler_kube_events_total{result="dropped"}"#,
    ] {
        zero.push(name.into());
    }
    for series in &zero {
        assert_eq!(
            metric_value(&text, &format!("{series} ")),
            Some(0.0),
            "{series} in\n{text}"
        );
    }
    // Known only once the reader asked Redis (every redis.stats_interval): -1 until then.
    // Or already 0: the stream is empty and the group new.
    let lag = metric_value(&text, "ottoscaler_stream_lag ");
    assert!(
        matches!(lag, Some(-1.0) | Some(0.0)),
        "stream lag {lag:?} in\n{text}"
    );
    let build = format!(
        r#"ottoscaler_build_info{{version="{}"}} "#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric_value(&text, &build), Some(1.0), "{build} in\n{text}");
}
