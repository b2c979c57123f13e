//! ottoscaler against the real control loops: the kube-scheduler decides where (and
//! whether) worker pods run, and the node lifecycle controller and taint manager
//! evict them from a node whose kubelet (kubesim) stops its heartbeats. Outcomes are
//! asserted as docs/contract.md section 4 defines them.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams};

use ::ottoscaler::messages::{Outcome, ScaleEvent};
use ::ottoscaler::settings::{ResourceSettings, Settings, TemplateSettings};
use common::*;

const WAIT: Duration = Duration::from_secs(60);

fn pod_scheduled(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
}

/// A kubesim node of its own with `label`, once the scheduler may use it.
async fn own_node(label: (&str, &str)) -> String {
    let env = testenv::shared();
    let node = env.kubesim().add_node(&[label]).await.expect("add a node");
    testenv::wait_nodes_schedulable(&env.client(), std::slice::from_ref(&node), WAIT)
        .await
        .expect("the new node becomes schedulable");
    node
}

/// Adds template `name` to `settings`: pods of `pod_spec` (YAML, written to a file of
/// the test's own) that run for an hour.
fn long_template_with_spec(settings: &mut Settings, name: &str, pod_spec: &str) {
    template_with_spec(settings, name, "3600", pod_spec);
}

/// Adds template `name` to `settings`: pods of `pod_spec` (YAML, written to a file of
/// the test's own) that run for `run_seconds`.
fn template_with_spec(settings: &mut Settings, name: &str, run_seconds: &str, pod_spec: &str) {
    let dir = common::ottoscaler::temp_dir(&format!("cluster-{name}"));
    let spec_path = dir.join(format!("{name}.yaml"));
    std::fs::write(&spec_path, pod_spec).expect("write the pod spec");
    settings.templates.insert(
        name.into(),
        TemplateSettings {
            annotations: BTreeMap::from([(RUN_SECONDS.to_string(), run_seconds.to_string())]),
            pod_spec_file: Some(spec_path.display().to_string()),
            ..TemplateSettings::builtin_default()
        },
    );
}

#[actix_rt::test]
async fn a_worker_no_node_can_hold_is_unschedulable_and_ends_timed_out() {
    let mut settings = test_settings();
    settings.worker.pending_timeout = Duration::from_secs(10);
    // Twice what a kubesim node has: the scheduler finds no place for it.
    let cpus = (testenv::kubesim::nodes::NODE_CPUS * 2).to_string();
    settings.templates.insert(
        "huge".into(),
        TemplateSettings {
            annotations: BTreeMap::from([(RUN_SECONDS.to_string(), "1".to_string())]),
            resources: ResourceSettings {
                requests: BTreeMap::from([("cpu".to_string(), cpus)]),
                limits: BTreeMap::new(),
            },
            ..TemplateSettings::builtin_default()
        },
    );
    let h = Harness::start("cluster-huge", &settings).await;
    let started = Instant::now();
    h.send(scale_up("1-0", "huge", 1, "huge"))
        .await
        .expect("accepted");

    // The real scheduler's verdict, while the worker still waits.
    let mut message = None;
    while message.is_none() {
        assert!(
            started.elapsed() < settings.worker.pending_timeout,
            "no Unschedulable verdict before the pending timeout:\n{}",
            h.describe_pods().await
        );
        message = h.pods_now().await.iter().find_map(|p| {
            pod_scheduled(p)
                .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                .and_then(|c| c.message.clone())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let message = message.unwrap_or_default();
    assert!(message.contains("Insufficient cpu"), "{message}");

    let results = h.results.wait_for(1, WAIT).await;
    assert_eq!(results.len(), 1, "{results:?}\n{}", h.describe_pods().await);
    let result = &results[0];
    assert_eq!(result.outcome, Outcome::TimedOut, "{result:?}");
    let reason = result.reason.clone().unwrap_or_default();
    // The scheduler's message as it stood at the timeout (other tests of this binary may
    // have added nodes since it was read above).
    assert!(
        reason.starts_with("pending longer than 10s (Unschedulable: 0/")
            && reason.contains("Insufficient cpu"),
        "the result names the scheduler's reason: {reason}"
    );
    assert_eq!(result.exit_code, None);
    assert!(
        started.elapsed() >= settings.worker.pending_timeout,
        "decided after {:?}",
        started.elapsed()
    );
    h.wait_no_pods(WAIT).await;
}

/// Waits until `n` pods of attempt `attempt` are Running; returns their nodes by pod.
async fn running_attempts(h: &Harness, attempt: u32, n: usize) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let running: BTreeMap<String, String> = h
            .pods_now()
            .await
            .iter()
            .filter(|p| attempt_of(p) == attempt)
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| {
                Some((
                    p.metadata.name.clone()?,
                    p.spec.as_ref()?.node_name.clone()?,
                ))
            })
            .collect();
        if running.len() == n {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "{n} pods of attempt {attempt} not Running:\n{}",
            h.describe_pods().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attempt_of(pod: &Pod) -> u32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(::ottoscaler::pods::ANNOTATION_ATTEMPT))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
}

/// Each result once, `succeeded`, on attempt 2, in the second attempt's pod.
fn assert_succeeded_on_the_second_attempt(results: &[::ottoscaler::messages::WorkerFinished]) {
    let mut workers = std::collections::BTreeSet::new();
    for result in results {
        assert_eq!(result.outcome, Outcome::Succeeded, "{result:?}");
        assert_eq!(result.attempts, 2, "{result:?}");
        assert!(result.pod.ends_with("-r2"), "{result:?}");
        assert!(
            workers.insert((result.event_id.clone(), result.worker_index)),
            "a second result for {result:?}"
        );
    }
}

#[actix_rt::test]
async fn workers_on_a_node_that_fails_run_again_on_another_node_once_each() {
    let env = testenv::shared();
    let client = env.client();
    // A node of its own, which the workers prefer (but do not require).
    let value = format!("v{:08x}", rand::random::<u32>());
    let node = own_node(("ottoscaler.test/failure", &value)).await;
    let mut settings = test_settings();
    // Long enough to still run when the node is declared lost (~18 s).
    template_with_spec(
        &mut settings,
        "preferring",
        "40",
        &format!(
            "containers:\n- name: agent\n  image: busybox:latest\n\
             affinity:\n  nodeAffinity:\n    preferredDuringSchedulingIgnoredDuringExecution:\n\
             \x20   - weight: 100\n      preference:\n        matchExpressions:\n\
             \x20       - key: ottoscaler.test/failure\n          operator: In\n\
             \x20         values: [\"{value}\"]\n"
        ),
    );
    let h = Harness::start("cluster-node-failure", &settings).await;
    h.send(scale_up("1-0", "preferring", 3, "preferring"))
        .await
        .expect("accepted");
    let first = running_attempts(&h, 1, 3).await;
    assert!(
        first.values().all(|n| *n == node),
        "the first attempts run on {node}: {first:?}"
    );
    assert!(h.results.all().is_empty(), "{:?}", h.results.all());

    let stopped = Instant::now();
    env.kubesim()
        .stop_heartbeats(&node)
        .await
        .expect("stop heartbeats");
    // NotReady after the grace period, the taint, the toleration, the eviction (with
    // the DisruptionTarget condition): each worker runs again, elsewhere.
    let second = running_attempts(&h, 2, 3).await;
    let retried_after = stopped.elapsed();
    assert!(
        second.values().all(|n| *n != node),
        "the second attempts avoid the lost node {node}: {second:?}"
    );
    assert!(
        retried_after >= testenv::controlplane::NODE_MONITOR_GRACE,
        "retried after {retried_after:?}, before the node could be NotReady"
    );
    let results = h.results.wait_for(3, WAIT).await;
    eprintln!(
        "node failure: 3 workers running again {retried_after:.1?} after the heartbeats stopped, \
         succeeded {:.1?} after",
        stopped.elapsed()
    );
    h.wait_no_pods(WAIT).await;
    // Every worker is done: no result can come any more.
    let results_at_end = h.results.all();
    assert_eq!(results_at_end.len(), 3, "{results_at_end:?}");
    assert_eq!(results.len(), 3);
    assert_succeeded_on_the_second_attempt(&results_at_end);
    assert_eq!(
        h.metrics
            .encode()
            .matches("ottoscaler_worker_retries_total 3")
            .count(),
        1
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &h.namespace);
    assert!(
        pods.list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "nothing left behind"
    );

    env.kubesim()
        .resume_heartbeats(&node)
        .await
        .expect("resume heartbeats");
    testenv::wait_nodes_schedulable(&client, std::slice::from_ref(&node), WAIT)
        .await
        .expect("the node is schedulable again");
}

/// A cluster-wide PriorityClass of `value`, named after the test run.
async fn priority_class(client: &kube::Client, name: &str, value: i32) {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let class = PriorityClass {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        value: Some(value),
        ..Default::default()
    };
    classes
        .create(&Default::default(), &class)
        .await
        .expect("create the PriorityClass");
}

#[actix_rt::test]
async fn a_preempted_low_priority_worker_runs_again_and_finishes_once() {
    let env = testenv::shared();
    let client = env.client();
    let value = format!("v{:08x}", rand::random::<u32>());
    let node = own_node(("ottoscaler.test/preemption", &value)).await;
    let (low, high) = (format!("otto-low-{value}"), format!("otto-high-{value}"));
    priority_class(&client, &low, 100).await;
    priority_class(&client, &high, 1000).await;
    let mut settings = test_settings();
    for (class, pc, weight) in [("low", &low, 1), ("high", &high, 10)] {
        settings.priorities.insert(
            class.into(),
            ::ottoscaler::settings::PriorityClassSettings {
                weight,
                priority_class_name: pc.clone(),
            },
        );
    }
    // Each worker takes 60% of the node: two cannot share it.
    let cpus = (testenv::kubesim::nodes::NODE_CPUS * 6 / 10).to_string();
    for (name, seconds) in [("big-low", "8"), ("big-high", "2")] {
        settings.templates.insert(
            name.into(),
            TemplateSettings {
                annotations: BTreeMap::from([(RUN_SECONDS.to_string(), seconds.to_string())]),
                resources: ResourceSettings {
                    requests: BTreeMap::from([("cpu".to_string(), cpus.clone())]),
                    limits: BTreeMap::new(),
                },
                node_selector: BTreeMap::from([(
                    "ottoscaler.test/preemption".to_string(),
                    value.clone(),
                )]),
                ..TemplateSettings::builtin_default()
            },
        );
    }
    let h = Harness::start("cluster-preemption", &settings).await;
    let with_priority = |event_id: &str, template: &str, priority: &str| ScaleEvent {
        priority: priority.into(),
        ..scale_up(event_id, template, 1, template)
    };
    h.send(with_priority("1-0", "big-low", "low"))
        .await
        .expect("accepted");
    let low_first = running_attempts(&h, 1, 1).await;
    assert_eq!(low_first.values().next(), Some(&node));
    // The high-priority worker needs the node: the real scheduler preempts the low one.
    h.send(with_priority("2-0", "big-high", "high"))
        .await
        .expect("accepted");
    let results = h.results.wait_for(2, WAIT).await;
    h.wait_no_pods(WAIT).await;
    let results_at_end = h.results.all();
    assert_eq!(results_at_end.len(), 2, "{results_at_end:?}");
    assert_eq!(results.len(), 2);
    let (low_results, high_results): (Vec<_>, Vec<_>) = results_at_end
        .into_iter()
        .partition(|r| r.task_id == "big-low");
    assert_eq!(high_results.len(), 1);
    assert_eq!(
        high_results[0].outcome,
        Outcome::Succeeded,
        "{high_results:?}"
    );
    assert_eq!(high_results[0].attempts, 1, "{high_results:?}");
    // One result for the preempted worker: succeeded on its second attempt.
    assert_succeeded_on_the_second_attempt(&low_results);
    assert_eq!(low_results.len(), 1);
    assert_eq!(
        h.metrics
            .encode()
            .matches("ottoscaler_worker_retries_total 1")
            .count(),
        1
    );

    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let classes: Api<PriorityClass> = Api::all(client.clone());
    for name in [&low, &high] {
        classes
            .delete(name, &Default::default())
            .await
            .expect("delete the PriorityClass");
    }
}

#[actix_rt::test]
async fn a_template_with_a_toleration_and_a_node_selector_lands_only_on_its_node() {
    let env = testenv::shared();
    let client = env.client();
    // A dedicated node: labelled, and tainted so that nothing else goes there.
    let value = format!("d{:08x}", rand::random::<u32>());
    let node = own_node(("ottoscaler.test/pool", &value)).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let taint = serde_json::json!({"spec": {"taints": [
        {"key": "ottoscaler.test/dedicated", "value": value, "effect": "NoSchedule"}
    ]}});
    nodes
        .patch(&node, &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .expect("taint the node");

    let mut settings = test_settings();
    long_template_with_spec(
        &mut settings,
        "dedicated",
        &format!(
            "containers:\n- name: agent\n  image: busybox:latest\n\
             nodeSelector:\n  ottoscaler.test/pool: {value}\n\
             tolerations:\n- key: ottoscaler.test/dedicated\n  operator: Equal\n  \
             value: {value}\n  effect: NoSchedule\n"
        ),
    );
    let h = Harness::start("cluster-dedicated", &settings).await;
    let dedicated = h
        .send(scale_up("1-0", "dedicated", 3, "dedicated"))
        .await
        .expect("accepted");
    let plain = h
        .send(scale_up("2-0", "plain", 3, "long"))
        .await
        .expect("accepted");

    // Wait until the scheduler has placed all six.
    let deadline = Instant::now() + WAIT;
    let placed: BTreeMap<String, String> = loop {
        let placed: BTreeMap<String, String> = h
            .pods_now()
            .await
            .iter()
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                Some((p.metadata.name.clone()?, node))
            })
            .collect();
        if placed.len() == 6 {
            break placed;
        }
        assert!(
            Instant::now() < deadline,
            "not all 6 workers placed: {placed:?}\n{}",
            h.describe_pods().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for pod in &dedicated.pods {
        assert_eq!(placed.get(pod), Some(&node), "{pod} on its dedicated node");
    }
    for pod in &plain.pods {
        let on = placed.get(pod).expect("placed");
        assert_ne!(on, &node, "{pod} kept off the tainted node");
    }

    h.send(scale_down("3-0", "dedicated", None))
        .await
        .expect("clean up");
    h.send(scale_down("4-0", "plain", None))
        .await
        .expect("clean up");
    h.wait_no_pods(WAIT).await;
}
