//! Traces (docs/contract.md, "Traces"): the compiled binary exporting OTLP/HTTP to a
//! real OpenTelemetry Collector (built from its Go modules, testenv::otelcol), with a
//! real redis-server, the test control plane and kubesim.
//!
//! One trace per event from read to acknowledgement, one span per worker from create
//! to delete as its child, continued from the producer's `traceparent`; the pod's
//! `TRACEPARENT` and the results' `trace_id` name the same trace. Off by default.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use testenv::RedisServer;
use testenv::otelcol::{Collector, Span};

mod common;

use common::ottoscaler::{Launch, Ottoscaler, SHORT_AND_LONG_TEMPLATES, temp_dir};
use common::redis::{entries, xadd};
use common::{wait_until, wait_until_async};

const STREAM: &str = "otto:scale:events";
const RESULTS: &str = "otto:scale:results";
const DEAD: &str = "otto:scale:events:dead";
/// The W3C specification's example: what a producer in a trace would send.
const PRODUCER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

/// Adds a scale_up of `pods` workers of `task` with template `long` (they run until a
/// scale_down), carrying `traceparent`; returns the entry id.
fn long_scale_up(port: u16, task: &str, pods: &str, traceparent: &str) -> String {
    scale_up(
        port,
        task,
        pods,
        &[("template", "long"), ("traceparent", traceparent)],
    )
}

/// A namespace, a redis-server and the binary, with `env` added to its environment.
async fn start(label: &str, env: &[(&str, &str)]) -> (String, RedisServer, Ottoscaler) {
    let ns = testenv::shared().namespace(label).await;
    let redis = RedisServer::start();
    let dir = temp_dir(&format!("traces-{label}"));
    let mut launch = Launch::new(redis.port(), &ns, &dir)
        .config(SHORT_AND_LONG_TEMPLATES)
        .consumer(&format!("ottoscaler-{label}"));
    for (k, v) in env {
        launch = launch.env(k, v);
    }
    let mut ottoscaler = Ottoscaler::start(launch);
    ottoscaler.wait_ready(Duration::from_secs(30));
    (ns, redis, ottoscaler)
}

/// Exporting to `collector`, in small quick batches so the test need not wait 5 s.
fn exporting_to(collector: &Collector) -> Vec<(&'static str, String)> {
    vec![
        ("OTTOSCALER_TELEMETRY__OTLP_ENDPOINT", collector.endpoint()),
        ("OTTOSCALER_TELEMETRY__EXPORT_INTERVAL", "200ms".into()),
        (
            "OTTOSCALER_TELEMETRY__SERVICE_NAME",
            "ottoscaler-traces-test".into(),
        ),
    ]
}

fn results_of(port: u16, event_id: &str) -> Vec<BTreeMap<String, String>> {
    entries(port, RESULTS)
        .into_iter()
        .filter(|r| r.get("event_id").map(String::as_str) == Some(event_id))
        .collect()
}

/// Adds a scale_up of `pods` workers of `task`, with `more` fields; returns the entry id.
fn scale_up(port: u16, task: &str, pods: &str, more: &[(&str, &str)]) -> String {
    let mut fields = vec![("type", "scale_up"), ("pod_count", pods), ("task_id", task)];
    fields.extend_from_slice(more);
    xadd(port, STREAM, &fields)
}

/// The results of `event_id`, once there are `n`.
async fn wait_results(port: u16, event_id: &str, n: usize) -> Vec<BTreeMap<String, String>> {
    wait_until(&format!("{n} results"), Duration::from_secs(60), || {
        results_of(port, event_id).len() == n
    })
    .await;
    results_of(port, event_id)
}

/// The pods of `task`, once there are `n`.
async fn pods_of(ns: &str, task: &str, n: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(testenv::shared().client(), ns);
    let params = ListParams::default().labels(&format!(
        "managed-by=ottoscaler,ottoscaler.io/task-id={task}"
    ));
    wait_until_async(
        &format!("{n} pods of {task}"),
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let params = params.clone();
            async move {
                pods.list(&params)
                    .await
                    .map(|l| l.items.len() == n)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    pods.list(&params).await.expect("list pods").items
}

/// A variable of the pod's first container.
fn env_of(pod: &Pod, name: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.containers[0]
        .env
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .and_then(|v| v.value.clone())
}

/// The event span of `event_id` and its worker spans, once all `workers` have ended.
fn event_and_workers(spans: &[Span], event_id: &str, workers: usize) -> Option<(Span, Vec<Span>)> {
    let event = spans.iter().find(|s| {
        s.name == "ottoscaler.event" && s.attribute("messaging.message.id") == Some(event_id)
    })?;
    let children: Vec<Span> = spans
        .iter()
        .filter(|s| {
            s.name == "ottoscaler.worker" && s.attribute("ottoscaler.event_id") == Some(event_id)
        })
        .cloned()
        .collect();
    (children.len() == workers).then(|| (event.clone(), children))
}

#[tokio::test]
async fn an_event_with_a_traceparent_continues_the_producers_trace_to_pods_and_results() {
    let collector = Collector::start();
    let env = exporting_to(&collector);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ns, redis, _ottoscaler) = start("traced", &env).await;
    let port = redis.port();

    // Long-running workers, so their pods can be looked at; a scale_down ends them.
    let traceparent = format!("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01");
    let id = long_scale_up(port, "traced", "2", &traceparent);
    let pods = pods_of(&ns, "traced", 2).await;
    let mut pod_spans = BTreeMap::new();
    for pod in &pods {
        let tp = env_of(pod, "TRACEPARENT").expect("the pod has TRACEPARENT");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", PRODUCER_TRACE, "01"),
            "{tp}"
        );
        assert_ne!(
            parts[2], PRODUCER_SPAN,
            "the pod's context is the worker's span, not the producer's"
        );
        // Reserved, not metadata.
        assert_eq!(env_of(pod, "OTTO_META_TRACEPARENT"), None);
        pod_spans.insert(
            pod.metadata.name.clone().unwrap_or_default(),
            parts[2].to_string(),
        );
    }
    assert_eq!(pod_spans.len(), 2);

    xadd(
        port,
        STREAM,
        &[("type", "scale_down"), ("task_id", "traced")],
    );
    for r in wait_results(port, &id, 2).await {
        assert_eq!(r["outcome"], "cancelled", "{r:?}");
        assert_eq!(
            r.get("trace_id").map(String::as_str),
            Some(PRODUCER_TRACE),
            "{r:?}"
        );
    }

    let spans = collector.wait_spans(Duration::from_secs(60), |s| {
        event_and_workers(s, &id, 2).is_some()
    });
    let (event, workers) = event_and_workers(&spans, &id, 2).expect("waited for");
    assert_eq!(event.trace_id, PRODUCER_TRACE);
    assert_eq!(
        event.parent_span_id, PRODUCER_SPAN,
        "the event span continues the producer's"
    );
    assert_eq!(event.kind, 5, "SPAN_KIND_CONSUMER");
    assert_eq!(event.service_name, "ottoscaler-traces-test");
    assert_eq!(event.attribute("ottoscaler.task_id"), Some("traced"));
    assert_eq!(event.attribute("ottoscaler.pod_count"), Some("2"));
    assert_eq!(event.attribute("messaging.destination.name"), Some(STREAM));
    assert!(event.end_unix_nano >= event.start_unix_nano);
    for w in &workers {
        assert_eq!(w.trace_id, PRODUCER_TRACE);
        assert_eq!(
            w.parent_span_id, event.span_id,
            "a worker span is a child of its event's"
        );
        let pod = w.attribute("k8s.pod.name").expect("pod name");
        assert_eq!(
            pod_spans.get(pod),
            Some(&w.span_id),
            "the pod's TRACEPARENT is its worker span"
        );
        assert_eq!(w.attribute("ottoscaler.outcome"), Some("cancelled"));
        // create -> delete: it starts before the event is acknowledged and ends after.
        assert!(
            w.start_unix_nano <= event.end_unix_nano,
            "{w:?} / {event:?}"
        );
        assert!(w.end_unix_nano >= event.end_unix_nano, "{w:?} / {event:?}");
    }
}

#[tokio::test]
async fn an_event_without_traceparent_starts_a_new_trace_and_a_bad_one_is_dead_lettered() {
    let collector = Collector::start();
    let env = exporting_to(&collector);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_ns, redis, _ottoscaler) = start("untraced", &env).await;
    let port = redis.port();

    let id = scale_up(port, "fresh", "2", &[]);
    let bad = scale_up(port, "bad", "1", &[("traceparent", "00-abc-def-01")]);
    let results = wait_results(port, &id, 2).await;
    let trace_id = results[0]["trace_id"].clone();
    assert_eq!(trace_id.len(), 32, "{results:?}");
    assert_ne!(trace_id, PRODUCER_TRACE);
    assert!(
        results
            .iter()
            .all(|r| r["trace_id"] == trace_id && r["outcome"] == "succeeded"),
        "{results:?}"
    );

    let spans = collector.wait_spans(Duration::from_secs(60), |s| {
        event_and_workers(s, &id, 2).is_some()
    });
    let (event, workers) = event_and_workers(&spans, &id, 2).expect("waited for");
    assert_eq!(event.trace_id, trace_id);
    assert_eq!(event.parent_span_id, "", "a new trace's root");
    for w in &workers {
        assert_eq!(
            (w.trace_id.as_str(), w.parent_span_id.as_str()),
            (trace_id.as_str(), event.span_id.as_str())
        );
        assert_eq!(w.attribute("ottoscaler.outcome"), Some("succeeded"));
        assert_eq!(w.attribute("ottoscaler.exit_code"), Some("0"));
    }

    // The invalid traceparent: dead-lettered with a reason naming the field, no pods.
    wait_until("the dead letter", Duration::from_secs(30), || {
        entries(port, DEAD)
            .iter()
            .any(|d| d.get("task_id").map(String::as_str) == Some("bad"))
    })
    .await;
    let dead = entries(port, DEAD);
    let letter = dead
        .iter()
        .find(|d| d.get("task_id").map(String::as_str) == Some("bad"))
        .expect("found");
    let reason = letter
        .values()
        .find(|v| v.contains("traceparent"))
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.starts_with("field `traceparent` is \"00-abc-def-01\""),
        "{letter:?}"
    );
    assert!(results_of(port, &bad).is_empty());
    assert!(
        !spans
            .iter()
            .any(|s| s.attribute("ottoscaler.task_id") == Some("bad"))
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_results_have_no_trace_id() {
    // A collector where the SDK's own variable points: ottoscaler must not use it.
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let (ns, redis, mut ottoscaler) = start(
        "off",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ],
    )
    .await;
    let port = redis.port();
    let traceparent = format!("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01");
    let id = long_scale_up(port, "off", "1", &traceparent);
    let pods = pods_of(&ns, "off", 1).await;
    assert_eq!(env_of(&pods[0], "TRACEPARENT"), None);
    assert_eq!(
        env_of(&pods[0], "OTTO_META_TRACEPARENT"),
        None,
        "reserved even when off"
    );
    xadd(port, STREAM, &[("type", "scale_down"), ("task_id", "off")]);
    let result = &wait_results(port, &id, 1).await[0];
    assert_eq!(result["outcome"], "cancelled");
    assert!(!result.contains_key("trace_id"), "{result:?}");
    // Stopping flushes whatever an exporter would hold: still nothing arrived.
    ottoscaler.stop(Duration::from_secs(20));
    assert_eq!(collector.spans().expect("spans"), Vec::new());
    assert!(
        !ottoscaler.log().contains("exporting traces"),
        "{}",
        ottoscaler.log_tail(2000)
    );
}

#[tokio::test]
async fn an_unreachable_collector_never_holds_up_work_and_the_log_says_exports_fail() {
    // A port nothing listens on.
    let dead = format!("http://127.0.0.1:{}", common::ottoscaler::free_port());
    let (_ns, redis, ottoscaler) = start(
        "unreachable",
        &[
            ("OTTOSCALER_TELEMETRY__OTLP_ENDPOINT", &dead),
            ("OTTOSCALER_TELEMETRY__EXPORT_INTERVAL", "200ms"),
        ],
    )
    .await;
    let port = redis.port();
    let id = scale_up(port, "nowhere", "2", &[]);
    assert!(
        wait_results(port, &id, 2)
            .await
            .iter()
            .all(|r| r["outcome"] == "succeeded" && r["trace_id"].len() == 32)
    );
    wait_until(
        "an export failure in the log",
        Duration::from_secs(30),
        || {
            ottoscaler
                .log()
                .lines()
                .any(|l| l.contains("opentelemetry") && (l.contains("WARN") || l.contains("ERROR")))
        },
    )
    .await;
}
