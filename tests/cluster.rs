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

use ::ottoscaler::messages::Outcome;
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
    let dir = common::ottoscaler::temp_dir(&format!("cluster-{name}"));
    let spec_path = dir.join(format!("{name}.yaml"));
    std::fs::write(&spec_path, pod_spec).expect("write the pod spec");
    settings.templates.insert(
        name.into(),
        TemplateSettings {
            annotations: BTreeMap::from([(RUN_SECONDS.to_string(), "3600".to_string())]),
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

#[actix_rt::test]
async fn workers_on_a_node_that_fails_are_evicted_and_end_lost() {
    let env = testenv::shared();
    let client = env.client();
    // A node of its own, and a template that puts the workers there only.
    let value = format!("v{:08x}", rand::random::<u32>());
    let node = own_node(("ottoscaler.test/failure", &value)).await;
    let mut settings = test_settings();
    long_template_with_spec(
        &mut settings,
        "pinned",
        &format!(
            "containers:\n- name: agent\n  image: busybox:latest\n\
             nodeSelector:\n  ottoscaler.test/failure: {value}\n"
        ),
    );
    let h = Harness::start("cluster-node-failure", &settings).await;
    h.send(scale_up("1-0", "pinned", 3, "pinned"))
        .await
        .expect("accepted");
    let deadline = Instant::now() + WAIT;
    loop {
        let pods = h.pods_now().await;
        let running = pods
            .iter()
            .filter(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
            })
            .count();
        if running == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 workers not Running on {node}:\n{}",
            h.describe_pods().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.results.all().is_empty(), "{:?}", h.results.all());

    let stopped = Instant::now();
    env.kubesim()
        .stop_heartbeats(&node)
        .await
        .expect("stop heartbeats");
    // NotReady after the grace period, the taint, the toleration, the eviction.
    let results = h
        .results
        .wait_for(3, testenv::controlplane::NODE_MONITOR_GRACE + WAIT)
        .await;
    let lost_after = stopped.elapsed();
    assert_eq!(results.len(), 3, "{results:?}\n{}", h.describe_pods().await);
    for result in &results {
        assert_eq!(result.outcome, Outcome::Lost, "{result:?}");
        assert_eq!(
            result.reason.as_deref(),
            Some("pod deleted by someone other than ottoscaler"),
            "{result:?}"
        );
    }
    assert!(
        lost_after >= testenv::controlplane::NODE_MONITOR_GRACE,
        "lost after {lost_after:?}, before the node could be NotReady"
    );
    eprintln!("node failure: 3 workers lost {lost_after:.1?} after the heartbeats stopped");
    h.wait_no_pods(WAIT).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &h.namespace);
    assert!(
        pods.list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );

    env.kubesim()
        .resume_heartbeats(&node)
        .await
        .expect("resume heartbeats");
    testenv::wait_nodes_schedulable(&client, std::slice::from_ref(&node), WAIT)
        .await
        .expect("the node is schedulable again");
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
