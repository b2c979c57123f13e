//! The admission policy behind the `schedule=never` annotation.
//!
//! The real kube-scheduler places pods, so kubesim cannot simply skip a pod. A
//! MutatingAdmissionPolicy gives every pod created with
//! `kubesim.ottoscaler.dev/schedule: never` a `nodeSelector` that no node matches; the
//! scheduler then reports it PodScheduled=False/Unschedulable, as it would any pod
//! that fits nowhere.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::behaviour::SCHEDULE;

/// Name of the policy and of its binding.
pub const POLICY_NAME: &str = "kubesim-schedule-never";

/// The `nodeSelector` entry the policy adds (no node has this label).
pub const NEVER_SELECTOR: (&str, &str) = (SCHEDULE, "never");

const BASE: &str = "/apis/admissionregistration.k8s.io/v1";

/// Installs the policy and its binding (keeps existing ones), then waits until the
/// apiserver applies it, checked with a dry-run pod create.
pub async fn install(client: &Client) -> Result<()> {
    let (key, value) = NEVER_SELECTOR;
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": { "name": POLICY_NAME },
        "spec": {
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["pods"],
                }],
            },
            "matchConditions": [{
                "name": "annotated-schedule-never",
                "expression": format!(
                    "has(object.metadata.annotations) && '{SCHEDULE}' in object.metadata.annotations \
                     && object.metadata.annotations['{SCHEDULE}'] == 'never'"
                ),
            }],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "mutations": [{
                // nodeSelector is an atomic map, which an ApplyConfiguration may not
                // change: add the key, or the whole map if the pod has none.
                "patchType": "JSONPatch",
                "jsonPatch": {
                    "expression": format!(
                        "has(object.spec.nodeSelector) ? \
                         [JSONPatch{{op: 'add', path: '/spec/nodeSelector/{escaped}', value: '{value}'}}] : \
                         [JSONPatch{{op: 'add', path: '/spec/nodeSelector', value: {{'{key}': '{value}'}}}}]",
                        escaped = key.replace('~', "~0").replace('/', "~1"),
                    ),
                },
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": { "name": POLICY_NAME },
        "spec": { "policyName": POLICY_NAME },
    });
    create(client, "mutatingadmissionpolicies", &policy).await?;
    create(client, "mutatingadmissionpolicybindings", &binding).await?;
    wait_effective(client).await
}

async fn create(client: &Client, resource: &str, body: &Value) -> Result<()> {
    let request = http::Request::post(format!("{BASE}/{resource}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).context("serialise policy")?)
        .context("build policy request")?;
    match client.request::<Value>(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot create {resource}/{POLICY_NAME}")),
    }
}

/// Polls with a dry-run create in `default` until the policy mutates pods (the
/// apiserver picks up new policies from an informer, so not at once).
async fn wait_effective(client: &Client) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "kubesim-policy-probe", "annotations": { SCHEDULE: "never" } },
        "spec": { "containers": [{ "name": "probe", "image": "kubesim/probe" }] },
    }))
    .context("probe pod")?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let started = Instant::now();
    loop {
        let last = match api.create(&params, &pod).await {
            Ok(created) => {
                let selector = created.spec.and_then(|s| s.node_selector);
                if selector.is_some_and(|s| s.contains_key(NEVER_SELECTOR.0)) {
                    return Ok(());
                }
                "the probe pod has no such nodeSelector".to_string()
            }
            Err(err) => err.to_string(),
        };
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the {POLICY_NAME} admission policy was not in effect after 30s: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
