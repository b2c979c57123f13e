//! Human-readable pod listings for test failure messages.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

/// One line per pod of `namespace`: name, phase, node, container states, labels and
/// deletion mark. Never fails: a listing error becomes part of the text.
pub async fn pods_summary(client: Client, namespace: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) if list.items.is_empty() => format!("no pods in namespace {namespace}"),
        Ok(list) => {
            let mut out = format!("{} pod(s) in namespace {namespace}:\n", list.items.len());
            for pod in &list.items {
                let _ = writeln!(out, "  {}", describe(pod));
            }
            out
        }
        Err(err) => format!("cannot list pods in namespace {namespace}: {err}"),
    }
}

/// A one-line description of a pod.
pub fn describe(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("<none>");
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or("<unbound>");
    let mut line = format!(
        "{} phase={phase} node={node}",
        pod.metadata.name.as_deref().unwrap_or("?")
    );
    if let Some(reason) = status.and_then(|s| s.reason.as_deref()) {
        let _ = write!(line, " reason={reason}");
    }
    for c in status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.status == "False" && c.reason.is_some())
    {
        let _ = write!(
            line,
            " {}=False({})",
            c.type_,
            c.reason.as_deref().unwrap_or("")
        );
    }
    for cs in status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
    {
        let state = cs.state.as_ref();
        let text = if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            format!("waiting:{}", w.reason.as_deref().unwrap_or(""))
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            format!(
                "terminated:{}({})",
                t.reason.as_deref().unwrap_or(""),
                t.exit_code
            )
        } else if state.and_then(|s| s.running.as_ref()).is_some() {
            "running".to_string()
        } else {
            "unknown".to_string()
        };
        let _ = write!(line, " {}={text}", cs.name);
    }
    if pod.metadata.deletion_timestamp.is_some() {
        line.push_str(" deleting");
    }
    let labels = pod.metadata.labels.as_ref();
    let labels: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = write!(line, " labels={{{}}}", labels.join(","));
    line
}
