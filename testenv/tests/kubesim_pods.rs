//! Pods on the shared test environment: a real kube-apiserver with kubesim acting as
//! scheduler and kubelet. Every transition is observed through a watch.

mod common;

use std::time::Duration;

use common::{create, phase, pod, waiting_reason, watch_pod, watch_until};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams, WatchEvent};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_pod_created_with_kube_rs_is_seen_running_then_succeeded_through_a_watch() {
    let env = testenv::shared();
    let ns = env.namespace("lifecycle").await;
    let client = env.client();
    let created = create(&client, &ns, &pod("job", &[("run-seconds", "1")])).await;
    assert_eq!(phase(&created), "Pending");
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
    let Some(WatchEvent::Modified(running)) = seen.last() else {
        unreachable!("watch_until returns the matching event last")
    };
    let status = running.status.as_ref().expect("running pod has a status");
    assert!(status.start_time.is_some(), "startTime is set");
    assert!(
        status.pod_ip.is_some() && status.host_ip.is_some(),
        "IPs are set"
    );
    let node = running.spec.as_ref().and_then(|s| s.node_name.clone());
    assert!(
        node.is_some_and(|n| n.starts_with("kubesim-node-")),
        "bound to a kubesim node"
    );
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");
    // It went through ContainerCreating before running.
    assert!(
        seen.iter().any(|e| matches!(e, WatchEvent::Modified(p)
            if waiting_reason(p) == Some("ContainerCreating"))),
        "ContainerCreating was reported before Running"
    );

    let seen = watch_until(
        &mut events,
        &client,
        &ns,
        WAIT,
        "phase Succeeded",
        |e| matches!(e, WatchEvent::Modified(p) if phase(p) == "Succeeded"),
    )
    .await;
    let Some(WatchEvent::Modified(done)) = seen.last() else {
        unreachable!("watch_until returns the matching event last")
    };
    let terminated = common::container_state(done)
        .and_then(|s| s.terminated.clone())
        .expect("container terminated");
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    assert!(terminated.started_at.is_some() && terminated.finished_at.is_some());
}

#[tokio::test]
async fn a_pod_whose_image_pull_fails_waits_in_image_pull_back_off_and_stays_pending() {
    let env = testenv::shared();
    let ns = env.namespace("pull-fail").await;
    let client = env.client();
    let created = create(&client, &ns, &pod("bad-image", &[("pull", "fail")])).await;
    let mut events = watch_pod(&client, &ns, &created).await;

    let seen = watch_until(
        &mut events,
        &client,
        &ns,
        WAIT,
        "ImagePullBackOff",
        |e| matches!(e, WatchEvent::Modified(p) if waiting_reason(p) == Some("ImagePullBackOff")),
    )
    .await;
    assert!(
        seen.iter().any(|e| matches!(e, WatchEvent::Modified(p)
            if waiting_reason(p) == Some("ErrImagePull"))),
        "ErrImagePull came first"
    );
    assert!(
        seen.iter()
            .filter_map(common::pod_of)
            .all(|p| phase(p) == "Pending"),
        "the pod never left Pending"
    );
    // And it stays there: nothing changes during the next 1.5 s.
    let later = tokio::time::timeout(
        Duration::from_millis(1500),
        futures::StreamExt::next(&mut events),
    )
    .await;
    assert!(later.is_err(), "no further change, got {later:?}");
    let now = Api::<Pod>::namespaced(client, &ns)
        .get("bad-image")
        .await
        .expect("get pod");
    assert_eq!(phase(&now), "Pending");
    assert_eq!(waiting_reason(&now), Some("ImagePullBackOff"));
}

#[tokio::test]
async fn a_pod_exiting_with_code_3_ends_failed_with_exit_code_3() {
    let env = testenv::shared();
    let ns = env.namespace("exit-code").await;
    let client = env.client();
    let created = create(
        &client,
        &ns,
        &pod("fails", &[("run-seconds", "0.2"), ("exit-code", "3")]),
    )
    .await;
    let mut events = watch_pod(&client, &ns, &created).await;
    let seen = watch_until(
        &mut events,
        &client,
        &ns,
        WAIT,
        "phase Failed",
        |e| matches!(e, WatchEvent::Modified(p) if phase(p) == "Failed"),
    )
    .await;
    let failed = seen.last().and_then(common::pod_of).expect("a pod");
    let terminated = common::container_state(failed)
        .and_then(|s| s.terminated.clone())
        .expect("container terminated");
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
}

#[tokio::test]
async fn a_pod_that_may_never_be_scheduled_stays_unbound_and_unschedulable() {
    let env = testenv::shared();
    let ns = env.namespace("unschedulable").await;
    let client = env.client();
    let created = create(&client, &ns, &pod("nowhere", &[("schedule", "never")])).await;
    let mut events = watch_pod(&client, &ns, &created).await;
    let unschedulable = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
    };
    watch_until(
        &mut events,
        &client,
        &ns,
        WAIT,
        "PodScheduled=False",
        |e| matches!(e, WatchEvent::Modified(p) if unschedulable(p)),
    )
    .await;
    let later = tokio::time::timeout(
        Duration::from_secs(1),
        futures::StreamExt::next(&mut events),
    )
    .await;
    assert!(later.is_err(), "no further change, got {later:?}");
    let now = Api::<Pod>::namespaced(client, &ns)
        .get("nowhere")
        .await
        .expect("get pod");
    let node = now.spec.as_ref().and_then(|s| s.node_name.as_deref());
    assert!(node.is_none(), "still unbound, but on {node:?}");
    assert_eq!(phase(&now), "Pending");
    assert!(unschedulable(&now));
}

#[tokio::test]
async fn deleting_a_running_pod_shows_modified_with_deletion_timestamp_before_deleted() {
    let env = testenv::shared();
    let ns = env.namespace("delete").await;
    let client = env.client();
    let created = create(&client, &ns, &pod("long", &[("run-seconds", "600")])).await;
    let mut events = watch_pod(&client, &ns, &created).await;
    watch_until(
        &mut events,
        &client,
        &ns,
        WAIT,
        "phase Running",
        |e| matches!(e, WatchEvent::Modified(p) if phase(p) == "Running"),
    )
    .await;

    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.delete("long", &DeleteParams::default())
        .await
        .expect("delete accepted");
    // The default grace period is 30 s; kubesim must finish well before that.
    let seen = watch_until(
        &mut events,
        &client,
        &ns,
        Duration::from_secs(20),
        "DELETED",
        |e| matches!(e, WatchEvent::Deleted(_)),
    )
    .await;
    let kinds: Vec<&str> = seen.iter().map(common::kind).collect();
    let terminating = seen
        .iter()
        .position(
            |e| matches!(e, WatchEvent::Modified(p) if p.metadata.deletion_timestamp.is_some()),
        )
        .unwrap_or_else(|| panic!("no MODIFIED with deletionTimestamp in {kinds:?}"));
    let killed = seen
        .iter()
        .position(|e| {
            matches!(e, WatchEvent::Modified(p) if common::container_state(p)
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 137))
        })
        .unwrap_or_else(|| panic!("no MODIFIED with the container killed in {kinds:?}"));
    assert!(terminating <= killed, "events in order: {kinds:?}");
    assert_eq!(kinds.last(), Some(&"DELETED"));
}

#[tokio::test]
async fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
    let env = testenv::shared();
    let ns = env.namespace("deadline").await;
    let client = env.client();
    let mut p = pod("slow", &[("run-seconds", "600")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.active_deadline_seconds = Some(1);
    }
    let created = create(&client, &ns, &p).await;
    let mut events = watch_pod(&client, &ns, &created).await;
    let seen = watch_until(
        &mut events,
        &client,
        &ns,
        WAIT,
        "phase Failed",
        |e| matches!(e, WatchEvent::Modified(p) if phase(p) == "Failed"),
    )
    .await;
    let failed = seen.last().and_then(common::pod_of).expect("a pod");
    let reason = failed.status.as_ref().and_then(|s| s.reason.as_deref());
    assert_eq!(reason, Some("DeadlineExceeded"));
}

#[tokio::test]
async fn the_real_apiserver_rejects_names_and_label_values_over_their_limits_with_422() {
    let env = testenv::shared();
    let ns = env.namespace("invalid").await;
    let api: Api<Pod> = Api::namespaced(env.client(), &ns);
    let invalid = |result: kube::Result<Pod>, field: &str| match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert_eq!(status.reason, "Invalid", "{status:?}");
            assert!(
                status.message.contains(field),
                "{field} named in {status:?}"
            );
        }
        other => panic!("expected a 422 Status about {field}, got {other:?}"),
    };

    // Label values and container names are DNS labels: at most 63 characters.
    let mut long_label = pod("long-label", &[]);
    long_label
        .metadata
        .labels
        .get_or_insert_default()
        .insert("worker".into(), "x".repeat(64));
    invalid(
        api.create(&PostParams::default(), &long_label).await,
        "metadata.labels",
    );
    let mut long_container = pod("long-container", &[]);
    if let Some(spec) = long_container.spec.as_mut() {
        spec.containers[0].name = "c".repeat(64);
    }
    invalid(
        api.create(&PostParams::default(), &long_container).await,
        "spec.containers[0].name",
    );
    // A pod name is a DNS subdomain: up to 253 characters. 64 are fine (a mock that
    // rejected them would be wrong), 254 are not.
    api.create(&PostParams::default(), &pod(&"x".repeat(64), &[]))
        .await
        .expect("a 64-character pod name is valid");
    invalid(
        api.create(&PostParams::default(), &pod(&"x".repeat(254), &[]))
            .await,
        "metadata.name",
    );
}

#[actix_rt::test]
async fn the_shared_environment_works_from_an_actix_rt_test() {
    let env = testenv::shared();
    let ns = env.namespace("actix").await;
    let client = env.client();
    let created = create(&client, &ns, &pod("quick", &[("run-seconds", "0")])).await;
    let mut events = watch_pod(&client, &ns, &created).await;
    watch_until(
        &mut events,
        &client,
        &ns,
        WAIT,
        "phase Succeeded",
        |e| matches!(e, WatchEvent::Modified(p) if phase(p) == "Succeeded"),
    )
    .await;
    let summary = env.pods_summary(&ns).await;
    assert!(summary.contains("quick phase=Succeeded"), "{summary}");
    assert!(summary.contains("app=testenv-test"), "{summary}");
}
