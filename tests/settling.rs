//! Every event settles: scale_downs that race creates, scale_downs of queued work or
//! before the first pod list, and a worker that keeps failing. Actor-level, against
//! the real API server (creates held in a fault proxy where a race must be forced).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use ::ottoscaler::ledger::GIVE_UP_RESTARTS;
use ::ottoscaler::messages::Outcome;
use ::ottoscaler::messages::supervisor::{EventAcknowledged, EventRefused, FailWorker};
use ::ottoscaler::retry::Backoff;
use kube::api::{Patch, PatchParams};

use common::*;

const WAIT: Duration = Duration::from_secs(60);
/// How long an answer that must come "within seconds" may take on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(15);

#[actix_rt::test]
async fn scale_down_during_creation_settles_both_events_and_leaves_no_pod() {
    let (h, proxied) = Harness::start_proxied("downcreate", &test_settings()).await;
    proxied.proxy.hold_creates(true);
    let up = tokio::spawn(h.supervisor.send(scale_up("10-0", "task-c", 3, "long")));
    assert!(
        proxied.proxy.wait_creates_in_flight(3, WAIT).await,
        "creates in flight: {:?}",
        proxied.proxy.stats()
    );
    let down = tokio::spawn(h.supervisor.send(scale_down("11-0", "task-c", None)));

    // Each cancelled worker reports once, while its create is still held.
    let results = h.results.wait_for(3, WAIT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("cancelled".into(), 3)]),
        "{results:?}"
    );
    proxied.proxy.hold_creates(false);

    let up = answered(up, PROMPTLY, "the scale_up is accepted").await;
    let down = answered(down, PROMPTLY, "the scale_down is accepted").await;
    assert_eq!(down.pods.len(), 3);
    for event_id in [up.event_id, down.event_id] {
        h.supervisor.do_send(EventAcknowledged { event_id });
    }
    // The held POSTs did create the pods: they are deleted, not orphaned.
    h.wait_no_pods(WAIT).await;
    wait_active(&h, 0).await;
    assert_eq!(h.results.all().len(), 3, "{:?}", h.results.all());

    // A restart finds nothing to bring back.
    let again = Harness::start_in(
        h.client.clone(),
        h.namespace.clone(),
        &test_settings(),
        Collected::default(),
    )
    .await;
    assert_eq!(again.status().await.active, 0);
    assert!(again.pods_now().await.is_empty());
}

/// The reader's wait for an answer is bounded: a scale_up whose creates hang is answered
/// "stalled" after `limits.settle_timeout` (its entry stays pending), its workers carry
/// on, and the redelivery is accepted once the creates went through.
#[actix_rt::test]
async fn a_scale_up_whose_creates_hang_is_answered_stalled_then_settles_on_redelivery() {
    let mut settings = test_settings();
    settings.limits.settle_timeout = Duration::from_secs(2);
    let (h, proxied) = Harness::start_proxied("stall", &settings).await;
    proxied.proxy.hold_creates(true);
    let event = scale_up("15-0", "task-h", 2, "long");
    let first = h.supervisor.send(event.clone());
    match tokio::time::timeout(PROMPTLY, first).await {
        Ok(Ok(Err(EventRefused::Stalled { after }))) => {
            assert_eq!(after, Duration::from_secs(2))
        }
        other => panic!("expected a stalled answer within {PROMPTLY:?}, got {other:?}"),
    }
    assert!(h.results.all().is_empty(), "{:?}", h.results.all());
    assert_eq!(h.status().await.active, 2, "the workers carry on");

    proxied.proxy.hold_creates(false);
    let again = answered(
        tokio::spawn(h.supervisor.send(event)),
        WAIT,
        "the redelivered scale_up is accepted once its pods exist",
    )
    .await;
    assert_eq!(again.pods.len(), 2);
    assert_eq!(h.pods_now().await.len(), 2);
    h.supervisor.do_send(EventAcknowledged {
        event_id: again.event_id,
    });
    h.send(scale_down("16-0", "task-h", None))
        .await
        .expect("clean up");
    h.wait_no_pods(WAIT).await;
}

#[actix_rt::test]
async fn scale_down_cancels_a_queued_scale_up_whose_pods_are_never_created() {
    let mut settings = test_settings();
    settings.limits.max_workers = 2;
    let h = Harness::start("downqueue", &settings).await;
    let busy = h
        .send(scale_up("20-0", "task-busy", 2, "long"))
        .await
        .expect("fills the capacity");
    let queued = tokio::spawn(h.supervisor.send(scale_up("21-0", "task-q", 2, "default")));
    wait_until_status(&h, |s| s.queued_events == 1).await;

    let down = h
        .send(scale_down("22-0", "task-q", None))
        .await
        .expect("scale_down accepted");
    assert_eq!(down.pods.len(), 2, "{down:?}");
    let queued = answered(queued, PROMPTLY, "accepted: nothing of it is left to run").await;
    assert_eq!(queued.pods.len(), 2);
    let results = h.results.wait_for(2, WAIT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("cancelled".into(), 2)])
    );
    assert_eq!(h.status().await.queued_events, 0);
    // The busy task's pods are the only ones there ever were.
    let names: Vec<String> = h
        .pods_now()
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let mut expected = busy.pods.clone();
    expected.sort();
    let mut names = names;
    names.sort();
    assert_eq!(names, expected);

    h.send(scale_down("23-0", "task-busy", None))
        .await
        .expect("clean up");
    h.wait_no_pods(WAIT).await;
}

#[actix_rt::test]
async fn a_scale_down_before_the_first_pod_list_waits_for_it() {
    let (client, ns) = namespace("downsync").await;
    let h = Harness::build(Options::new(
        client,
        ns,
        &test_settings(),
        Collected::default(),
    ));
    // Read before the first list: both wait for it, in order.
    let up = tokio::spawn(h.supervisor.send(scale_up("30-0", "task-s", 1, "long")));
    let down = tokio::spawn(h.supervisor.send(scale_down("31-0", "task-s", None)));
    wait_until_status(&h, |s| !s.synced).await;
    h.start_watcher();

    let up = answered(up, WAIT, "the scale_up is accepted").await;
    h.supervisor.do_send(EventAcknowledged {
        event_id: up.event_id,
    });
    let down = answered(
        down,
        WAIT,
        "the scale_down is accepted, not refused as shutting down",
    )
    .await;
    assert_eq!(down.pods.len(), 1);
    let results = h.results.wait_for(1, WAIT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("cancelled".into(), 1)])
    );
    h.wait_no_pods(WAIT).await;
}

#[actix_rt::test]
async fn a_worker_that_keeps_failing_ends_failed_once_and_is_not_adopted_again() {
    let (client, ns) = namespace("keepsfailing").await;
    let mut options = Options::new(client, ns, &test_settings(), Collected::default());
    options.restart_backoff = Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
    };
    let h = Harness::build(options);
    h.start_watcher();
    h.wait_ready(WAIT).await;
    // Not acknowledged: the worker never deletes its pod, so only the injected failures
    // end its incarnations.
    let accepted = h
        .supervisor
        .send(scale_up("40-0", "task-k", 1, "long"))
        .await
        .expect("mailbox")
        .expect("accepted");
    let pod = accepted.pods[0].clone();
    for round in 0..=GIVE_UP_RESTARTS {
        fail_live_worker(&h, &pod).await;
        wait_until_status(&h, |s| s.restarts == u64::from(round) + 1).await;
    }
    wait_active(&h, 0).await;
    // Each restart republishes the one decision (the results publisher writes it once);
    // it is never decided again.
    let results = h.results.wait_for(1, WAIT).await;
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
    assert_eq!(results[0].outcome, Outcome::Failed);
    assert!(
        results[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("restart budget exhausted: injected failure")),
        "{results:?}"
    );

    // The given-up pod changes: the watch shows it, and it must not be adopted with a
    // fresh budget. A later event's result proves the watch event was handled before.
    let patch = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
    h.pods
        .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the pod");
    let before = h.results.all().len();
    h.send(scale_up("41-0", "task-other", 1, "default"))
        .await
        .expect("accepted");
    let results = h.results.wait_for(before + 1, WAIT).await;
    wait_active(&h, 0).await;
    let after: Vec<_> = h.results.all().into_iter().skip(before).collect();
    assert_eq!(
        outcomes(&after),
        BTreeMap::from([("succeeded".into(), 1)]),
        "no new result for the given-up pod: {results:?}"
    );
}

type Asked = tokio::task::JoinHandle<
    Result<
        Result<
            ::ottoscaler::messages::supervisor::EventAccepted,
            ::ottoscaler::messages::supervisor::EventRefused,
        >,
        actix::MailboxError,
    >,
>;

/// The Supervisor's answer to an event sent earlier, within `within`; it must accept.
async fn answered(
    asked: Asked,
    within: Duration,
    what: &str,
) -> ::ottoscaler::messages::supervisor::EventAccepted {
    match tokio::time::timeout(within, asked).await {
        Ok(Ok(Ok(Ok(accepted)))) => accepted,
        Ok(Ok(Ok(Err(refused)))) => panic!("{what}: refused: {refused}"),
        Ok(other) => panic!("{what}: no answer: {other:?}"),
        Err(_) => panic!("{what}: no answer within {within:?}"),
    }
}

/// Fails the worker of `pod` once its current incarnation runs.
async fn fail_live_worker(h: &Harness, pod: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = h
            .supervisor
            .send(FailWorker {
                pod: pod.to_string(),
                reason: "test".into(),
            })
            .await
            .expect("answer");
        if found {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker {pod} never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_active(h: &Harness, n: usize) {
    wait_until_status(h, |s| s.active == n).await;
}

async fn wait_until_status(
    h: &Harness,
    ok: impl Fn(&::ottoscaler::messages::supervisor::SupervisorStatus) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = h.status().await;
        if ok(&status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never as expected: {status:?}\n{}",
            h.describe_pods().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
