//! API writes with retries: what kubesim does to a pod, and how it survives a busy
//! apiserver (429 from priority-and-fairness, 5xx during etcd hiccups, dropped
//! connections) without ever spinning.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::Value;

/// One write to one pod.
#[derive(Debug, Clone)]
pub enum Write {
    /// Merge-patch the `status` subresource of the pod with this uid.
    Status { body: Value, uid: String },
    /// Delete with grace period 0, only if the pod still has this uid.
    Delete { uid: String },
}

/// How a write ended after its retries.
#[derive(Debug)]
pub enum Outcome {
    /// The apiserver accepted it (or it was already in effect).
    Done,
    /// The pod no longer exists (or was replaced by a pod of the same name).
    Gone,
    /// Gave up; the caller tries again later.
    Failed(String),
}

const ATTEMPTS: u32 = 8;

/// Performs `write` on pod `namespace/name`, retrying transient failures with
/// exponential backoff (50 ms doubling to 2 s, jittered).
pub async fn perform(client: Client, namespace: &str, name: &str, write: &Write) -> Outcome {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let mut delay = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        let result = match write {
            Write::Status { body, uid } => {
                // The uid makes the patch fail on a new pod that took the name of the
                // one we meant (uid is immutable), instead of rewriting its status.
                let mut body = body.clone();
                body["metadata"] = serde_json::json!({ "uid": uid });
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                    .map(|_| ())
            }
            Write::Delete { uid } => {
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                api.delete(name, &params).await.map(|_| ())
            }
        };
        let err = match result {
            Ok(()) => return Outcome::Done,
            Err(err) => err,
        };
        match classify(write, &err) {
            Class::Gone => return Outcome::Gone,
            Class::Permanent => return Outcome::Failed(err.to_string()),
            Class::Transient if attempt >= ATTEMPTS => return Outcome::Failed(err.to_string()),
            Class::Transient => {}
        }
        let jitter = rand::random_range(0.8..1.2);
        tokio::time::sleep(delay.mul_f64(jitter)).await;
        delay = (delay * 2).min(Duration::from_secs(2));
        attempt += 1;
    }
}

enum Class {
    Gone,
    Transient,
    Permanent,
}

fn classify(write: &Write, err: &kube::Error) -> Class {
    match err {
        kube::Error::Api(status) => match status.code {
            404 => Class::Gone,
            // Deleting with a stale uid precondition (the name now belongs to a new pod).
            409 if matches!(write, Write::Delete { .. }) => Class::Gone,
            409 | 429 | 500 | 502 | 503 | 504 => Class::Transient,
            _ => Class::Permanent,
        },
        // Connection refused/reset, timeouts, truncated bodies: try again.
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            Class::Transient
        }
        _ => Class::Permanent,
    }
}
