//! [`PodView`]: a pod as ottoscaler reads it from the API server: on the shared watch,
//! and in the answers to a worker's create, get and delete.
//!
//! A worker pod on the watch carries its whole spec and `metadata.managedFields`: one
//! entry per writer (ottoscaler's create, the scheduler, the kubelet's status updates),
//! each a tree of field names that decodes into a `serde_json::Value` of maps. The
//! outcome rules ([`observe`](crate::outcome::observe)) read only the metadata below and
//! the status, and every pod passes the watch about six times (added, scheduled,
//! running, finished, deleting, deleted). So the view decodes those and steps over the
//! rest of the JSON without building it: less CPU per unit of work, taken from the same
//! cores as the API server's on a small control plane.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};
use serde::{Deserialize, Deserializer};

/// A pod without its spec and managed fields. It is read-only: nothing serializes it
/// back to the API server.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PodView {
    #[serde(default, deserialize_with = "read_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

/// The metadata ottoscaler and kube-runtime's watcher use; other keys are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

fn read_metadata<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let m = Metadata::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

impl From<PodView> for Pod {
    /// The pod as far as the view knows it: metadata and status, no spec.
    fn from(view: PodView) -> Pod {
        Pod {
            metadata: view.metadata,
            spec: None,
            status: view.status,
        }
    }
}

/// The pods of `pods` (same client, same namespace or all), read as views.
pub fn views(pods: &Api<Pod>) -> Api<PodView> {
    let namespace = pods.namespace().map(str::to_owned);
    let client = Client::from(pods.clone());
    match namespace {
        Some(namespace) => Api::namespaced(client, &namespace),
        None => Api::all(client),
    }
}

/// `Api::<Pod>::create`, the API server's answer read as a view: the POST is the same.
pub async fn create(pods: &Api<PodView>, params: &PostParams, pod: &Pod) -> kube::Result<PodView> {
    let body = serde_json::to_vec(pod).map_err(kube::Error::SerdeError)?;
    let mut request = kube::core::Request::new(pods.resource_url())
        .create(params, body)
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("create");
    Client::from(pods.clone()).request(request).await
}

impl k8s_openapi::Resource for PodView {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for PodView {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::observe;

    /// A finished worker pod as the watch delivers it: spec, two managers' fields.
    const FINISHED: &str = r#"{
      "kind": "Pod", "apiVersion": "v1",
      "metadata": {
        "name": "otto-agent-task-1-0", "namespace": "ci", "uid": "u-1",
        "resourceVersion": "42", "creationTimestamp": "2026-12-06T10:00:00Z",
        "deletionTimestamp": "2026-12-06T10:00:05Z", "deletionGracePeriodSeconds": 0,
        "labels": {"app.kubernetes.io/managed-by": "ottoscaler", "ottoscaler.io/task-id": "task-1",
                   "ottoscaler.io/worker-index": "0"},
        "annotations": {"ottoscaler.io/event-id": "1-0",
                        "ottoscaler.io/created-at": "2026-12-06T10:00:00.123456Z"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": "y"}],
        "managedFields": [
          {"manager": "ottoscaler", "operation": "Update", "apiVersion": "v1",
           "time": "2026-12-06T10:00:00Z", "fieldsType": "FieldsV1",
           "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:ottoscaler.io/task-id": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"worker\"}": {".": {}, "f:image": {}}}}}},
          {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
           "time": "2026-12-06T10:00:02Z", "fieldsType": "FieldsV1",
           "fieldsV1": {"f:status": {"f:phase": {}, "f:conditions": {}}}}
        ]
      },
      "spec": {"containers": [{"name": "worker", "image": "otto/agent:1",
                               "env": [{"name": "A", "value": "b"}]}],
               "nodeName": "node-1", "restartPolicy": "Never"},
      "status": {
        "phase": "Succeeded", "startTime": "2026-12-06T10:00:01Z",
        "conditions": [{"type": "PodScheduled", "status": "True",
                        "lastTransitionTime": "2026-12-06T10:00:00Z"}],
        "containerStatuses": [{"name": "worker", "image": "otto/agent:1", "imageID": "",
          "ready": false, "restartCount": 0,
          "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                   "startedAt": "2026-12-06T10:00:01Z",
                                   "finishedAt": "2026-12-06T10:00:02Z"}}}]
      }
    }"#;

    #[test]
    fn the_outcome_rules_see_the_same_pod_through_the_view() {
        let full: Pod = serde_json::from_str(FINISHED).expect("a pod");
        let view: PodView = serde_json::from_str(FINISHED).expect("a pod view");
        assert_eq!(observe(&Pod::from(view)), observe(&full));
    }

    #[test]
    fn the_view_keeps_what_the_watcher_needs_and_drops_spec_and_managed_fields() {
        let view: PodView = serde_json::from_str(FINISHED).expect("a pod view");
        let m = &view.metadata;
        assert_eq!(m.name.as_deref(), Some("otto-agent-task-1-0"));
        assert_eq!(m.namespace.as_deref(), Some("ci"));
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert!(m.deletion_timestamp.is_some());
        assert_eq!(m.managed_fields, None);
        assert_eq!(m.owner_references, None);
        assert_eq!(Pod::from(view).spec, None);
    }

    #[test]
    fn a_deleted_pods_bare_metadata_and_nulls_decode() {
        let view: PodView =
            serde_json::from_str(r#"{"metadata": {"name": "p", "labels": null}, "status": null}"#)
                .expect("nulls are absent values");
        assert_eq!(view.metadata.name.as_deref(), Some("p"));
        assert_eq!(view.metadata.labels, None);
        assert_eq!(view.status, None);
        let empty: PodView = serde_json::from_str("{}").expect("an empty view");
        assert_eq!(empty, PodView::default());
    }

    #[test]
    fn the_view_is_addressed_as_pods() {
        use kube::Resource;
        assert_eq!(PodView::plural(&()), "pods");
        assert_eq!(PodView::kind(&()), "Pod");
        assert_eq!(PodView::api_version(&()), "v1");
    }
}
