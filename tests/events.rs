//! Kubernetes Events on worker pods, against the real API server: a worker that fails
//! and one that times out each get an Event on their pod that `kubectl describe pod`
//! finds (core v1 `involvedObject` with the pod's uid) and that the `events.k8s.io`
//! API lists by `regarding`. The results (the durable record) are unaffected.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;

use ::ottoscaler::messages::{Outcome, WorkerFinished};
use common::*;

const RESULTS_TIMEOUT: Duration = Duration::from_secs(90);
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for the `events.k8s.io` Event on `pod` with `reason`, listed by `regarding`.
async fn wait_event(h: &Harness, pod: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(h.client.clone(), &h.namespace);
    let params = ListParams::default().fields(&format!("regarding.name={pod}"));
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let list = events.list(&params).await.expect("list events");
        if let Some(event) = list
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
        {
            return event;
        }
        assert!(
            Instant::now() < deadline,
            "no Event {reason} on {pod} after {EVENT_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the recorder has counted `n` Events published (the count follows the
/// API's answer, so it can trail the Event's appearance).
async fn wait_published(h: &Harness, n: f64) {
    let published = r#"ottoscaler_kube_events_total{result="published"} "#;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while common::ottoscaler::metric_value(&h.metrics.encode(), published) != Some(n) {
        assert!(Instant::now() < deadline, "{}", h.metrics.encode());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn result_of(results: &[WorkerFinished], outcome: Outcome) -> WorkerFinished {
    results
        .iter()
        .find(|r| r.outcome == outcome)
        .cloned()
        .unwrap_or_else(|| panic!("no {outcome} result in {results:?}"))
}

#[actix_rt::test]
async fn failed_and_timed_out_workers_get_an_event_on_their_pod() {
    let mut settings = test_settings();
    settings.worker.pending_timeout = Duration::from_secs(3);
    let h = Harness::start("events", &settings).await;
    h.send(scale_up("700-0", "task-fail", 1, "exit3"))
        .await
        .expect("accepted");
    h.send(scale_up("701-0", "task-never", 1, "never"))
        .await
        .expect("accepted");
    let results = h.results.wait_for(2, RESULTS_TIMEOUT).await;
    assert_eq!(results.len(), 2, "{}", h.describe_pods().await);

    let failed = result_of(&results, Outcome::Failed);
    let event = wait_event(&h, &failed.pod, "WorkerFailed").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.action.as_deref(), Some("FinishWorker"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("ottoscaler.io/ottoscaler")
    );
    assert_eq!(
        event.note.as_deref(),
        Some("worker 0 of task task-fail (event 700-0) failed: exit code 3, Error")
    );
    let regarding = event.regarding.expect("regarding");
    assert_eq!(regarding.kind.as_deref(), Some("Pod"));
    assert_eq!(regarding.namespace.as_deref(), Some(h.namespace.as_str()));
    let uid = regarding
        .uid
        .expect("the pod's uid, as kubectl describe needs");

    // What `kubectl describe pod` asks: core Events by involvedObject name and uid.
    let core: Api<CoreEvent> = Api::namespaced(h.client.clone(), &h.namespace);
    let described = core
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name={},involvedObject.uid={uid}",
            failed.pod
        )))
        .await
        .expect("list core events");
    assert!(
        described
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("WorkerFailed")),
        "{described:?}"
    );

    let timed_out = result_of(&results, Outcome::TimedOut);
    let event = wait_event(&h, &timed_out.pod, "WorkerTimedOut").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.starts_with(
            "worker 0 of task task-never (event 701-0) timed out: pending longer than 3s"
        ),
        "{note}"
    );
    // Published, and nothing dropped or refused.
    wait_published(&h, 2.0).await;
    let metrics = h.metrics.encode();
    assert!(
        metrics.contains(r#"ottoscaler_kube_events_total{result="published"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ottoscaler_kube_events_total{result="failed"} 0"#),
        "{metrics}"
    );
    h.wait_no_pods(Duration::from_secs(30)).await;
}

#[actix_rt::test]
async fn a_succeeded_worker_gets_no_event() {
    let h = Harness::start("events-ok", &test_settings()).await;
    h.send(scale_up("710-0", "task-ok", 1, "default"))
        .await
        .expect("accepted");
    let results = h.results.wait_for(1, RESULTS_TIMEOUT).await;
    assert_eq!(results[0].outcome, Outcome::Succeeded, "{results:?}");
    let events: Api<Event> = Api::namespaced(h.client.clone(), &h.namespace);
    let all = events.list(&ListParams::default()).await.expect("list");
    let ours: Vec<_> = all
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("ottoscaler.io/ottoscaler"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    let metrics = h.metrics.encode();
    assert!(
        metrics.contains(r#"ottoscaler_kube_events_total{result="published"} 0"#),
        "{metrics}"
    );
}

/// A worker cancelled while queued never had a pod and gets no Event; one cancelled
/// with its pod Pending gets a Normal `WorkerCancelled`.
#[actix_rt::test]
async fn a_cancelled_worker_gets_an_event_only_if_it_had_a_pod() {
    let mut settings = test_settings();
    settings.limits.max_workers = 1;
    settings.limits.max_pods_per_event = 1;
    settings.worker.pending_timeout = Duration::from_secs(300);
    let h = Harness::start("events-cancel", &settings).await;
    let pending = h
        .send(scale_up("720-0", "task-c", 1, "never"))
        .await
        .expect("accepted");
    let queued = tokio::spawn(h.supervisor.send(scale_up("720-1", "task-q", 1, "default")));
    let deadline = Instant::now() + RESULTS_TIMEOUT;
    while h.status().await.queued_events == 0 {
        assert!(Instant::now() < deadline, "{:?}", h.status().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.send(scale_down("721-0", "task-q", None))
        .await
        .expect("queued one cancelled");
    let answer = tokio::time::timeout(RESULTS_TIMEOUT, queued)
        .await
        .expect("answered")
        .expect("join")
        .expect("mailbox");
    assert!(answer.is_ok(), "{answer:?}");
    h.send(scale_down("722-0", "task-c", None))
        .await
        .expect("pending one cancelled");
    let results = h.results.wait_for(2, RESULTS_TIMEOUT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("cancelled".into(), 2)]),
        "{results:?}"
    );

    let event = wait_event(&h, &pending.pods[0], "WorkerCancelled").await;
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    // The recorder takes Events in order and the queued worker's result came first: with
    // the pending one's Event counted, exactly one was ever sent.
    wait_published(&h, 1.0).await;
    let metrics = h.metrics.encode();
    for (result, n) in [("published", 1), ("failed", 0), ("dropped", 0)] {
        assert!(
            metrics.contains(&format!(
                r#"ottoscaler_kube_events_total{{result="{result}"}} {n}"#
            )),
            "{result}: {metrics}"
        );
    }
    h.wait_no_pods(Duration::from_secs(30)).await;
}

fn failure(i: u32) -> WorkerFinished {
    WorkerFinished {
        task_id: "flood".into(),
        event_id: "800-0".into(),
        pod: format!("otto-agent-flood-0000000-{i}"),
        worker_index: i,
        outcome: Outcome::Failed,
        exit_code: Some(1),
        reason: Some("Error".into()),
        duration_ms: 1,
        finished_at: "2026-12-02T00:00:00Z".into(),
        trace_id: None,
        attempts: 1,
    }
}

/// A flood of failures costs at most the queue plus the one in flight: the rest are
/// dropped and counted at once, never waited for. Against an API server address where
/// nothing listens, so each request fails fast and is not retried.
#[actix_rt::test]
async fn a_flood_of_failures_is_bounded_by_the_queue_and_counted() {
    use ::ottoscaler::actors::event_recorder::{EventLimits, EventRecorder};
    use ::ottoscaler::messages::events::RecordWorkerEvent;
    use actix::Actor;

    let port = common::ottoscaler::free_port();
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let metrics = std::sync::Arc::new(::ottoscaler::metrics::Metrics::default());
    let recorder = EventRecorder::new(
        client,
        "flood".into(),
        "test".into(),
        EventLimits {
            per_second: 1000,
            burst: 1000,
            queue: 2,
        },
        metrics.clone(),
    )
    .start();
    for i in 0..10 {
        recorder.do_send(RecordWorkerEvent {
            result: failure(i),
            uid: None,
        });
    }
    let count = |result: &str| {
        common::ottoscaler::metric_value(
            &metrics.encode(),
            &format!(r#"ottoscaler_kube_events_total{{result="{result}"}} "#),
        )
        .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("failed") + count("dropped") < 10.0 {
        assert!(Instant::now() < deadline, "{}", metrics.encode());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One in flight and two queued were tried; the other seven were dropped.
    assert_eq!(count("dropped"), 7.0, "{}", metrics.encode());
    assert_eq!(count("failed"), 3.0, "{}", metrics.encode());
    assert_eq!(count("published"), 0.0);
}
