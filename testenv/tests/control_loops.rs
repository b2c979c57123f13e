//! The real kube-scheduler and kube-controller-manager against kubesim's nodes:
//! binding by requests and nodeSelector, Unschedulable pods, and a node failure
//! that the node lifecycle controller and the taint manager handle (NotReady, taint,
//! DisruptionTarget, eviction).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{condition, create, phase, pod, watch_pod, watch_until};
use k8s_openapi::api::core::v1::{Event, Node, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::{ListParams, WatchEvent};

const WAIT: Duration = Duration::from_secs(30);

/// `pod` with resource requests and a nodeSelector.
fn placed_pod(
    name: &str,
    annotations: &[(&str, &str)],
    cpu: &str,
    memory: &str,
    selector: &[(&str, &str)],
) -> Pod {
    let mut p = pod(name, annotations);
    let spec = p.spec.as_mut().expect("pod has a spec");
    if !selector.is_empty() {
        spec.node_selector = Some(
            selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    spec.containers[0].resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])),
        ..ResourceRequirements::default()
    });
    p
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn node_ready(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `within`.
async fn poll<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_scheduler_binds_a_pod_by_its_requests_and_node_selector() {
    let env = testenv::shared();
    let ns = env.namespace("scheduler-binds").await;
    let client = env.client();
    let nodes = env.kubesim().node_names().await.expect("node names");
    assert!(nodes.len() >= 3, "kubesim registers 3 nodes: {nodes:?}");
    // A label only one node has, so the scheduler has exactly one choice.
    let target = nodes[1].clone();
    let value = format!("v{:08x}", rand::random::<u32>());
    env.kubesim()
        .label_node(&target, "testenv.ottoscaler.dev/pick", &value)
        .await
        .expect("label the node");

    let spec = placed_pod(
        "picky",
        &[("run-seconds", "60")],
        "2",
        "1Gi",
        &[("testenv.ottoscaler.dev/pick", &value)],
    );
    let created = create(&client, &ns, &spec).await;
    let mut events = watch_pod(&client, &ns, &created).await;
    let seen = watch_until(
        &mut events,
        &client,
        &ns,
        WAIT,
        "phase Running",
        |e| matches!(e, WatchEvent::Modified(p) if phase(p) == "Running"),
    )
    .await;
    let running = seen.last().and_then(common::pod_of).expect("a pod");
    assert_eq!(node_name(running), Some(target.as_str()));
    let scheduled = condition(running, "PodScheduled").expect("PodScheduled condition");
    assert_eq!(scheduled.status, "True");

    // The binding came from the real scheduler: it reports a Scheduled event.
    let events_api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let event = poll("a Scheduled event", WAIT, || {
        let events_api = events_api.clone();
        async move {
            let list = events_api.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("Scheduled"))
        }
    })
    .await;
    assert_eq!(
        event.reporting_component.as_deref(),
        Some("default-scheduler"),
        "{event:?}"
    );
    let message = event.message.unwrap_or_default();
    assert!(message.contains(&target), "{message}");
}

#[tokio::test]
async fn a_pod_larger_than_any_node_stays_pending_with_the_schedulers_message() {
    let env = testenv::shared();
    let ns = env.namespace("too-large").await;
    let client = env.client();
    let cpus = (testenv::kubesim::nodes::NODE_CPUS * 2).to_string();
    let created = create(&client, &ns, &placed_pod("huge", &[], &cpus, "1Gi", &[])).await;
    let mut events = watch_pod(&client, &ns, &created).await;
    let seen = watch_until(&mut events, &client, &ns, WAIT, "PodScheduled=False", |e| {
        matches!(e, WatchEvent::Modified(p)
            if condition(p, "PodScheduled").is_some_and(|c| c.status == "False"))
    })
    .await;
    let pending = seen.last().and_then(common::pod_of).expect("a pod");
    let scheduled = condition(pending, "PodScheduled").expect("PodScheduled");
    assert_eq!(scheduled.reason.as_deref(), Some("Unschedulable"));
    let message = scheduled.message.clone().unwrap_or_default();
    assert!(message.contains("Insufficient cpu"), "{message}");
    assert_eq!(phase(pending), "Pending");
    assert_eq!(node_name(pending), None);
}

#[tokio::test]
async fn a_node_without_heartbeats_goes_not_ready_is_tainted_and_its_pods_are_evicted() {
    let env = testenv::shared();
    let ns = env.namespace("node-failure").await;
    let client = env.client();
    let nodes_api: Api<Node> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // A node of its own, so the pods land there and the other tests keep theirs.
    let value = format!("v{:08x}", rand::random::<u32>());
    let node = env
        .kubesim()
        .add_node(&[("testenv.ottoscaler.dev/failure", &value)])
        .await
        .expect("add a node");
    testenv::wait_nodes_schedulable(&client, std::slice::from_ref(&node), WAIT)
        .await
        .expect("the new node becomes schedulable");
    let selector = [("testenv.ottoscaler.dev/failure", value.as_str())];
    for name in ["victim-0", "victim-1"] {
        let spec = placed_pod(name, &[("run-seconds", "3600")], "1", "1Gi", &selector);
        create(&client, &ns, &spec).await;
    }
    poll("both pods Running on the new node", WAIT, || {
        let pods_api = pods_api.clone();
        let node = node.clone();
        async move {
            let pods = pods_api.list(&ListParams::default()).await.ok()?;
            let running = pods
                .items
                .iter()
                .filter(|p| phase(p) == "Running" && node_name(p) == Some(node.as_str()))
                .count();
            (running == 2).then_some(())
        }
    })
    .await;
    let victim = pods_api.get("victim-0").await.expect("get victim-0");
    let mut events = watch_pod(&client, &ns, &victim).await;

    let stopped = Instant::now();
    env.kubesim()
        .stop_heartbeats(&node)
        .await
        .expect("stop heartbeats");

    // The node lifecycle controller: Ready=Unknown after the grace period, then the
    // NoExecute taint.
    let grace = testenv::controlplane::NODE_MONITOR_GRACE;
    let not_ready_after = poll("node NotReady", grace + WAIT, || {
        let nodes_api = nodes_api.clone();
        let node = node.clone();
        async move {
            let n = nodes_api.get(&node).await.ok()?;
            (node_ready(&n).as_deref() != Some("True")).then(|| stopped.elapsed())
        }
    })
    .await;
    let taint = poll("unreachable NoExecute taint", WAIT, || {
        let nodes_api = nodes_api.clone();
        let node = node.clone();
        async move {
            let n = nodes_api.get(&node).await.ok()?;
            n.spec?
                .taints?
                .into_iter()
                .find(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
        }
    })
    .await;
    let tainted_after = stopped.elapsed();
    // The grace period runs from the node's last lease renewal, which came up to one
    // heartbeat interval before `stopped` (the shared environment's kubesim runs with
    // the default options).
    let heartbeat = testenv::kubesim::Options::default().heartbeat_interval;
    assert!(
        not_ready_after + heartbeat >= grace,
        "NotReady after {not_ready_after:?}, before the {grace:?} grace period less one \
         {heartbeat:?} heartbeat interval"
    );

    // The taint manager: DisruptionTarget, then deletion; kubesim force-deletes pods
    // of a node whose kubelet is down.
    let seen = watch_until(
        &mut events,
        &client,
        &ns,
        WAIT * 2,
        "victim-0 DELETED",
        |e| matches!(e, WatchEvent::Deleted(_)),
    )
    .await;
    let evicted_after = stopped.elapsed();
    let disrupted = seen
        .iter()
        .filter_map(common::pod_of)
        .find_map(|p| condition(p, "DisruptionTarget").cloned())
        .expect("a DisruptionTarget condition before the pod was deleted");
    assert_eq!(disrupted.status, "True");
    assert_eq!(
        disrupted.reason.as_deref(),
        Some("DeletionByTaintManager"),
        "{disrupted:?}"
    );
    assert!(
        seen.iter()
            .filter_map(common::pod_of)
            .any(|p| p.metadata.deletion_timestamp.is_some()),
        "the eviction is a graceful delete first"
    );
    poll("victim-1 gone too", WAIT, || {
        let pods_api = pods_api.clone();
        async move {
            pods_api
                .get_opt("victim-1")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    eprintln!(
        "node failure: NotReady after {not_ready_after:.1?}, tainted ({}) after \
         {tainted_after:.1?}, pod deleted after {evicted_after:.1?}",
        taint.key
    );

    // The kubelet comes back: Ready again and the taints are removed.
    env.kubesim()
        .resume_heartbeats(&node)
        .await
        .expect("resume heartbeats");
    testenv::wait_nodes_schedulable(&client, std::slice::from_ref(&node), WAIT)
        .await
        .expect("the node is schedulable again");
}
