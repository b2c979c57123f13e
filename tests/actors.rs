//! Actor-level tests: messages go straight to the Supervisor (no Redis); pods are real
//! objects in a real kube-apiserver, moved through their phases by kubesim.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::DeleteParams;

use ::ottoscaler::messages::Outcome;
use ::ottoscaler::messages::supervisor::FailWorker;
use common::*;

const RESULTS_TIMEOUT: Duration = Duration::from_secs(60);

#[actix_rt::test]
async fn seed_event_creates_three_contract_pods_and_reports_three_successes() {
    let mut settings = test_settings();
    sim_template(&mut settings, "default", &[(RUN_SECONDS, "2")]);
    let h = Harness::start("seed", &settings).await;
    let mut event = scale_up("1718000000000-0", "task-123", 3, "default");
    event.metadata = BTreeMap::from([("branch".to_string(), "main".to_string())]);

    let accepted = h.send(event).await.expect("accepted");
    assert_eq!(accepted.pods.len(), 3);

    let pods = h.pods_now().await;
    let names: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let expected: BTreeSet<String> = (0..3)
        .map(|i| ::ottoscaler::pods::pod_name("task-123", "1718000000000-0", i))
        .collect();
    assert_eq!(names, expected, "pods: {}", h.describe_pods().await);
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(name.starts_with("otto-agent-task-123-"), "{name}");
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["managed-by"], "ottoscaler");
        assert_eq!(labels["app"], "otto-agent");
        assert_eq!(labels["ottoscaler.io/task-id"], "task-123");
        let index = &labels["ottoscaler.io/worker-index"];
        assert!(
            name.ends_with(&format!("-{index}")),
            "{name} vs index {index}"
        );
        let ann = pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann["ottoscaler.io/event-id"], "1718000000000-0");
        assert!(
            ann["ottoscaler.io/created-at"]
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert_eq!(ann["ottoscaler.io/metadata"], r#"{"branch":"main"}"#);
        let spec = pod.spec.clone().expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let c = &spec.containers[0];
        assert_eq!(c.name, "worker");
        assert_eq!(c.image.as_deref(), Some("busybox:latest"));
        let env: BTreeMap<String, Option<String>> = c
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        assert_eq!(env["OTTO_TASK_ID"].as_deref(), Some("task-123"));
        assert_eq!(env["OTTO_WORKER_INDEX"].as_deref(), Some(index.as_str()));
        assert_eq!(env["OTTO_EVENT_ID"].as_deref(), Some("1718000000000-0"));
        assert_eq!(env["OTTO_META_BRANCH"].as_deref(), Some("main"));
        assert!(env.contains_key("OTTO_POD_NAME"));
    }

    let results = h.results.wait_for(3, RESULTS_TIMEOUT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("succeeded".into(), 3)]),
        "{results:?}"
    );
    for r in &results {
        assert_eq!(r.task_id, "task-123");
        assert_eq!(r.event_id, "1718000000000-0");
        assert_eq!(r.exit_code, Some(0));
        assert!(r.duration_ms >= 1500, "ran ~2s: {r:?}");
        assert!(r.finished_at.parse::<jiff::Timestamp>().is_ok());
    }
    h.wait_no_pods(Duration::from_secs(30)).await;
    // A worker leaves once its DELETE is answered, which may come after the watch saw the
    // pod go: wait for it, as a user watching the gauge would.
    wait_active(&h, 0).await;
}

#[actix_rt::test]
async fn repeated_event_creates_no_extra_pod() {
    let mut settings = test_settings();
    sim_template(&mut settings, "default", &[(RUN_SECONDS, "2")]);
    let h = Harness::start("repeat", &settings).await;
    let first = h
        .send(scale_up("100-0", "task-r", 3, "default"))
        .await
        .expect("first");
    let again = h
        .send(scale_up("100-0", "task-r", 3, "default"))
        .await
        .expect("again");
    assert_eq!(first.pods, again.pods);
    assert_eq!(h.pods_now().await.len(), 3);
    assert_eq!(h.status().await.active, 3);

    let results = h.results.wait_for(3, RESULTS_TIMEOUT).await;
    h.wait_no_pods(Duration::from_secs(30)).await;
    // No worker left alive: no further result can come.
    wait_active(&h, 0).await;
    let results_after = h.results.all();
    assert_eq!(results.len(), 3);
    assert_eq!(results_after.len(), 3, "{results_after:?}");
    let pods: BTreeSet<_> = results_after.iter().map(|r| r.pod.clone()).collect();
    assert_eq!(pods.len(), 3);
}

#[actix_rt::test]
async fn exit_code_3_is_failed_with_that_code() {
    let h = Harness::start("exit3", &test_settings()).await;
    h.send(scale_up("200-0", "task-f", 1, "exit3"))
        .await
        .expect("accepted");
    let results = h.results.wait_for(1, RESULTS_TIMEOUT).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, Outcome::Failed);
    assert_eq!(results[0].exit_code, Some(3));
    assert_eq!(results[0].reason.as_deref(), Some("Error"));
    h.wait_no_pods(Duration::from_secs(30)).await;
}

#[actix_rt::test]
async fn image_pull_failure_times_out_naming_image_pull_back_off() {
    let h = Harness::start("pull", &test_settings()).await;
    h.send(scale_up("300-0", "task-p", 1, "pullfail"))
        .await
        .expect("accepted");
    let results = h.results.wait_for(1, RESULTS_TIMEOUT).await;
    assert_eq!(results.len(), 1, "{}", h.describe_pods().await);
    assert_eq!(results[0].outcome, Outcome::TimedOut);
    let reason = results[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("ImagePullBackOff") || reason.contains("ErrImagePull"),
        "{reason}"
    );
    h.wait_no_pods(Duration::from_secs(30)).await;
}

#[actix_rt::test]
async fn unschedulable_pod_times_out_after_the_pending_timeout() {
    let mut settings = test_settings();
    settings.worker.pending_timeout = Duration::from_secs(3);
    let h = Harness::start("never", &settings).await;
    let started = Instant::now();
    h.send(scale_up("400-0", "task-n", 1, "never"))
        .await
        .expect("accepted");
    let results = h.results.wait_for(1, RESULTS_TIMEOUT).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, Outcome::TimedOut);
    assert!(started.elapsed() >= settings.worker.pending_timeout);
    let reason = results[0].reason.clone().unwrap_or_default();
    assert!(reason.starts_with("pending longer than 3s"), "{reason}");
    h.wait_no_pods(Duration::from_secs(30)).await;
}

#[actix_rt::test]
async fn pod_deleted_behind_ottoscalers_back_is_lost() {
    let h = Harness::start("lost", &test_settings()).await;
    let accepted = h
        .send(scale_up("500-0", "task-l", 1, "long"))
        .await
        .expect("accepted");
    // Let kubesim start it, then delete it as a person with kubectl would.
    wait_running(&h, 1).await;
    h.pods
        .delete(&accepted.pods[0], &DeleteParams::default())
        .await
        .expect("delete");
    let results = h.results.wait_for(1, RESULTS_TIMEOUT).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, Outcome::Lost, "{results:?}");
    h.wait_no_pods(Duration::from_secs(30)).await;
    wait_active(&h, 0).await;
}

#[actix_rt::test]
async fn scale_down_cancels_pending_workers_first() {
    let mut settings = test_settings();
    settings.worker.pending_timeout = Duration::from_secs(300);
    let h = Harness::start("down", &settings).await;
    let running = h
        .send(scale_up("600-0", "task-d", 3, "long"))
        .await
        .expect("running");
    // Let the three start running before the two that never schedule are added.
    wait_running(&h, 3).await;
    let pending = h
        .send(scale_up("600-1", "task-d", 2, "never"))
        .await
        .expect("pending");

    let down = h
        .send(scale_down("601-0", "task-d", Some(2)))
        .await
        .expect("down");
    let cancelled: BTreeSet<_> = down.pods.iter().cloned().collect();
    let expected: BTreeSet<_> = pending.pods.iter().cloned().collect();
    assert_eq!(cancelled, expected, "the Pending ones go first");

    let results = h.results.wait_for(2, RESULTS_TIMEOUT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("cancelled".into(), 2)])
    );
    let cancelled_results: BTreeSet<_> = results.iter().map(|r| r.pod.clone()).collect();
    assert_eq!(cancelled_results, expected);
    wait_active(&h, 3).await;

    // The rest, with no count: all unfinished workers of the task.
    let rest = h
        .send(scale_down("602-0", "task-d", None))
        .await
        .expect("rest");
    let rest: BTreeSet<_> = rest.pods.into_iter().collect();
    assert_eq!(rest, running.pods.iter().cloned().collect());
    let results = h.results.wait_for(5, RESULTS_TIMEOUT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("cancelled".into(), 5)])
    );
    h.wait_no_pods(Duration::from_secs(30)).await;

    // Nothing left to cancel: a logged no-op.
    let none = h
        .send(scale_down("603-0", "task-d", None))
        .await
        .expect("no-op");
    assert!(none.pods.is_empty());
}

async fn wait_active(h: &Harness, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.status().await.active != n {
        assert!(Instant::now() < deadline, "{:?}", h.status().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_running(h: &Harness, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = h
            .pods_now()
            .await
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{}", h.describe_pods().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn failed_worker_is_restarted_and_reports_once() {
    let mut settings = test_settings();
    sim_template(&mut settings, "default", &[(RUN_SECONDS, "2")]);
    let h = Harness::start("restart", &settings).await;
    let accepted = h
        .send(scale_up("700-0", "task-s", 1, "default"))
        .await
        .expect("accepted");
    let pod = accepted.pods[0].clone();
    // Fail it mid-lifecycle, twice: the second time once the restarted one runs.
    for round in 0..2u64 {
        let deadline = Instant::now() + RESULTS_TIMEOUT;
        while !h
            .supervisor
            .send(FailWorker {
                pod: pod.clone(),
                reason: "test".into(),
            })
            .await
            .expect("answer")
        {
            assert!(Instant::now() < deadline, "the worker never ran again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = Instant::now() + RESULTS_TIMEOUT;
        while h.status().await.restarts <= round {
            assert!(Instant::now() < deadline, "{:?}", h.status().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let results = h.results.wait_for(1, RESULTS_TIMEOUT).await;
    h.wait_no_pods(Duration::from_secs(30)).await;
    // No worker left alive: no further result can come.
    wait_active(&h, 0).await;
    let results_after = h.results.all();
    assert_eq!(results.len(), 1);
    assert_eq!(results_after.len(), 1, "{results_after:?}");
    assert_eq!(results_after[0].outcome, Outcome::Succeeded);
    assert!(h.status().await.restarts >= 2);
}

/// An instance that runs `event` in its own actix System on its own thread, which is then
/// torn down at once: every actor of it stops, as in a crash, and its pods stay.
fn crashed_instance_starts(
    ns: &str,
    settings: &::ottoscaler::settings::Settings,
    results: &Collected,
    event: ::ottoscaler::messages::ScaleEvent,
) {
    let (settings, ns, results) = (settings.clone(), ns.to_string(), results.clone());
    std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let client = testenv::shared().client();
            let h = Harness::start_in(client, ns, &settings, results).await;
            h.send(event).await.expect("accepted");
        });
    })
    .join()
    .expect("first instance thread");
}

#[actix_rt::test]
async fn second_supervisor_adopts_pods_left_by_a_stopped_one() {
    let mut settings = test_settings();
    sim_template(&mut settings, "default", &[(RUN_SECONDS, "4")]);
    let (client, ns) = namespace("adopt").await;
    let first_results = Collected::default();

    crashed_instance_starts(
        &ns,
        &settings,
        &first_results,
        scale_up("800-0", "task-a", 3, "default"),
    );
    let second_results = Collected::default();
    let h = Harness::start_in(client, ns, &settings, second_results.clone()).await;
    assert_eq!(
        h.status().await.active,
        3,
        "adopted: {}",
        h.describe_pods().await
    );

    let results = second_results.wait_for(3, RESULTS_TIMEOUT).await;
    h.wait_no_pods(Duration::from_secs(30)).await;
    let mut all = first_results.all();
    all.extend(results);
    assert_eq!(
        outcomes(&all),
        BTreeMap::from([("succeeded".into(), 3)]),
        "{all:?}"
    );
    let pods: BTreeSet<_> = all.iter().map(|r| r.pod.clone()).collect();
    assert_eq!(pods.len(), 3, "one result per pod");
}

#[actix_rt::test]
async fn a_standby_supervisor_keeps_the_pods_in_memory_and_adopts_them_when_it_leads() {
    let mut settings = test_settings();
    sim_template(&mut settings, "default", &[(RUN_SECONDS, "4")]);
    let (client, ns) = namespace("standby").await;
    let first_results = Collected::default();
    // The leader that created the pods dies at once.
    crashed_instance_starts(
        &ns,
        &settings,
        &first_results,
        scale_up("810-0", "task-s", 3, "default"),
    );
    let results = Collected::default();
    let mut options = Options::new(client, ns, &settings, results.clone());
    options.standby = true;
    let h = Harness::build(options);
    h.start_watcher();
    // Ready (its watch is up) but driving nothing, and taking no events.
    h.wait_ready(Duration::from_secs(30)).await;
    wait_running(&h, 3).await;
    assert_eq!(h.status().await.active, 0, "a standby adopts nothing");
    assert!(matches!(
        h.supervisor
            .send(scale_up("811-0", "task-t", 1, "default"))
            .await
            .expect("answers"),
        Err(::ottoscaler::messages::supervisor::EventRefused::ShuttingDown)
    ));
    assert!(results.all().is_empty());

    h.supervisor
        .do_send(::ottoscaler::messages::leader::LeadershipAcquired {
            previous: Some("first".into()),
        });
    wait_active(&h, 3).await;
    let got = results.wait_for(3, RESULTS_TIMEOUT).await;
    h.wait_no_pods(Duration::from_secs(30)).await;
    assert_eq!(
        outcomes(&got),
        BTreeMap::from([("succeeded".into(), 3)]),
        "{got:?}"
    );
    assert!(
        first_results.all().is_empty(),
        "the first never saw its pods end"
    );
}

#[actix_rt::test]
async fn max_workers_defers_an_event_until_slots_free() {
    let mut settings = test_settings();
    settings.limits.max_workers = 3;
    sim_template(&mut settings, "default", &[(RUN_SECONDS, "1.5")]);
    let h = Harness::start("limit", &settings).await;
    h.send(scale_up("900-0", "task-m1", 2, "default"))
        .await
        .expect("first");
    let second = h
        .supervisor
        .send(scale_up("900-1", "task-m2", 2, "default"));
    let second = tokio::spawn(second);
    let deadline = Instant::now() + RESULTS_TIMEOUT;
    while h.status().await.queued_events == 0 {
        assert!(Instant::now() < deadline, "{:?}", h.status().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = h.status().await;
    assert_eq!(status.queued_events, 1, "{status:?}");
    assert_eq!(status.active, 2);
    assert!(!second.is_finished(), "the second event must wait");
    assert!(h.pods_now().await.len() <= 3);

    let answer = tokio::time::timeout(RESULTS_TIMEOUT, second)
        .await
        .expect("second accepted in time")
        .expect("join")
        .expect("mailbox");
    let accepted = answer.expect("accepted");
    h.supervisor
        .do_send(::ottoscaler::messages::supervisor::EventAcknowledged {
            event_id: accepted.event_id,
        });
    let results = h.results.wait_for(4, RESULTS_TIMEOUT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("succeeded".into(), 4)])
    );
    h.wait_no_pods(Duration::from_secs(30)).await;
}

/// With a single create slot, the creates go one after another and every slot is given
/// back: all workers of the event still run, report and are cleaned up. The fault proxy
/// in front of the API server counts the creates in flight: never more than one.
#[actix_rt::test]
async fn one_create_slot_still_runs_every_worker() {
    let mut settings = test_settings();
    settings.kubernetes.max_concurrent_creates = 1;
    sim_template(&mut settings, "default", &[(RUN_SECONDS, "0.2")]);
    let (h, proxied) = Harness::start_proxied("oneslot", &settings).await;
    let accepted = h
        .send(scale_up("950-0", "task-slot", 5, "default"))
        .await
        .expect("accepted");
    assert_eq!(accepted.pods.len(), 5);
    let results = h.results.wait_for(5, RESULTS_TIMEOUT).await;
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("succeeded".into(), 5)])
    );
    h.wait_no_pods(Duration::from_secs(30)).await;
    let stats = proxied.proxy.stats();
    assert_eq!(stats.max_creates_in_flight, 1, "{stats:?}");
}

#[actix_rt::test]
async fn burst_of_200_pods_all_complete_and_leave_nothing() {
    let h = Harness::start("burst", &test_settings()).await;
    let started = Instant::now();
    let sends: Vec<_> = (0..4)
        .map(|i| h.send(scale_up(&format!("1000-{i}"), "task-burst", 50, "default")))
        .collect();
    for answer in futures::future::join_all(sends).await {
        answer.expect("accepted");
    }
    let results = h.results.wait_for(200, Duration::from_secs(240)).await;
    h.wait_no_pods(Duration::from_secs(120)).await;
    let wall = started.elapsed();
    eprintln!("200-pod burst: {wall:?} until all results are in and all pods are gone");
    assert_eq!(
        outcomes(&results),
        BTreeMap::from([("succeeded".into(), 200)])
    );
    let pods: BTreeSet<_> = results.iter().map(|r| r.pod.clone()).collect();
    assert_eq!(pods.len(), 200);
}
