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
            r#"ottoscaler_workers_finished_total{{outcome="{outcome}"}}"#
        ));
    }
    for name in [
        "ottoscaler_dead_letters_total",
        "ottoscaler_results_published_total",
        "ottoscaler_redis_errors_total",
        r#"ottoscaler_kube_requests_total{verb="create",code="201"}"#,
        r#"ottoscaler_kube_requests_total{verb="create",code="error"}"#,
        r#"ottoscaler_kube_requests_total{verb="delete",code="200"}"#,
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
}
