//! Helpers shared by the testenv integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;
use kube::{Api, Client};

/// A pod with one container, restartPolicy Never and the given kubesim annotations.
pub fn pod(name: &str, annotations: &[(&str, &str)]) -> Pod {
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (format!("kubesim.ottoscaler.dev/{k}"), v.to_string()))
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([(
                "app".to_string(),
                "testenv-test".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![Container {
                name: "agent".into(),
                image: Some("registry.invalid/agent:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Creates `pod` and returns the created object (with its resourceVersion).
pub async fn create(client: &Client, ns: &str, pod: &Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), pod)
        .await
        .expect("the apiserver accepts the pod")
}

/// A watch on one pod starting right after `from` (so no event after it is missed).
pub async fn watch_pod(
    client: &Client,
    ns: &str,
    from: &Pod,
) -> impl Stream<Item = kube::Result<WatchEvent<Pod>>> + use<> {
    let name = from.metadata.name.clone().expect("pod has a name");
    let version = from
        .metadata
        .resource_version
        .clone()
        .expect("created pod has a resourceVersion");
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    Api::<Pod>::namespaced(client.clone(), ns)
        .watch(&params, &version)
        .await
        .expect("the apiserver accepts the watch")
        .boxed()
}

/// The type of a watch event, as the apiserver names it.
pub fn kind(event: &WatchEvent<Pod>) -> &'static str {
    match event {
        WatchEvent::Added(_) => "ADDED",
        WatchEvent::Modified(_) => "MODIFIED",
        WatchEvent::Deleted(_) => "DELETED",
        WatchEvent::Bookmark(_) => "BOOKMARK",
        WatchEvent::Error(_) => "ERROR",
    }
}

/// The pod carried by an ADDED/MODIFIED/DELETED event.
pub fn pod_of(event: &WatchEvent<Pod>) -> Option<&Pod> {
    match event {
        WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => Some(p),
        _ => None,
    }
}

/// Reads watch events until `done` accepts one, or `within` passes; returns every
/// event seen (the accepted one last). On timeout it panics with the events seen
/// and the pods of the namespace.
pub async fn watch_until<S>(
    stream: &mut S,
    client: &Client,
    ns: &str,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&WatchEvent<Pod>) -> bool,
) -> Vec<WatchEvent<Pod>>
where
    S: Stream<Item = kube::Result<WatchEvent<Pod>>> + Unpin,
{
    let mut seen = Vec::new();
    let result = tokio::time::timeout(within, async {
        while let Some(event) = stream.next().await {
            let event = event.expect("watch stream works");
            let stop = done(&event);
            seen.push(event);
            if stop {
                return true;
            }
        }
        false
    })
    .await;
    if result != Ok(true) {
        let trail: Vec<String> = seen
            .iter()
            .map(|e| match pod_of(e) {
                Some(p) => format!("{} {}", kind(e), testenv::describe_pod(p)),
                None => kind(e).to_string(),
            })
            .collect();
        panic!(
            "did not see {what} within {within:?} (watch ended: {}); events:\n  {}\n{}",
            result.is_ok(),
            trail.join("\n  "),
            testenv::pods_summary(client.clone(), ns).await
        );
    }
    seen
}

/// Phase of a pod.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The condition `kind` of a pod.
pub fn condition<'a>(
    pod: &'a Pod,
    kind: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

/// State of the first container of a pod.
pub fn container_state(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()
}

/// Waiting reason of the first container, if it is waiting.
pub fn waiting_reason(pod: &Pod) -> Option<&str> {
    container_state(pod)?.waiting.as_ref()?.reason.as_deref()
}
