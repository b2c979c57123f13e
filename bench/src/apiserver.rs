//! The API server's own count of the requests it served (`apiserver_request_total` on
//! its `/metrics`, read with the admin token): the cross-check of ottoscaler's count.
//!
//! The metric has no user-agent or namespace label, so a scenario takes the delta over
//! its run and keeps the requests on `pods` without a subresource: kubesim's writes
//! go to `pods/binding` and `pods/status`, and watches (kubesim's, the recorder's,
//! ottoscaler's) are left out (verb WATCH).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

/// A request class as the API server labels it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Class {
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub code: String,
}

/// `apiserver_request_total` by class.
#[derive(Debug, Clone, Default)]
pub struct RequestCounts(BTreeMap<Class, f64>);

/// Reads the API server's `/metrics`.
pub async fn scrape(client: &kube::Client) -> Result<RequestCounts> {
    Ok(RequestCounts::parse(&metrics_text(client).await?))
}

/// Pod watches the API server closed because their client did not keep up with the
/// events (`apiserver_terminated_watchers_total`, any client): a saturated control
/// plane, or a slow watcher, delays every watch.
pub async fn terminated_pod_watchers(client: &kube::Client) -> Result<f64> {
    let text = metrics_text(client).await?;
    Ok(text
        .lines()
        .filter_map(|l| {
            l.strip_prefix(r#"apiserver_terminated_watchers_total{group="",resource="pods"} "#)
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum())
}

async fn metrics_text(client: &kube::Client) -> Result<String> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building the /metrics request")?;
    tokio::time::timeout(Duration::from_secs(10), client.request_text(request))
        .await
        .context("the API server's /metrics timed out")?
        .context("cannot read the API server's /metrics")
}

impl RequestCounts {
    pub fn parse(text: &str) -> RequestCounts {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let labels = parse_labels(labels);
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            let class = Class {
                verb: get("verb"),
                resource: get("resource"),
                subresource: get("subresource"),
                code: get("code"),
            };
            *counts.entry(class).or_insert(0.0) += value;
        }
        RequestCounts(counts)
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &RequestCounts) -> RequestCounts {
        RequestCounts(
            self.0
                .iter()
                .map(|(class, v)| {
                    (
                        class.clone(),
                        v - before.0.get(class).copied().unwrap_or(0.0),
                    )
                })
                .filter(|(_, v)| *v > 0.0)
                .collect(),
        )
    }

    /// Every request but watches, by `VERB resource[/subresource]`: what all clients
    /// asked of the API server (K1 compares two systems' windows with it).
    pub fn by_resource(&self) -> BTreeMap<String, f64> {
        let mut by = BTreeMap::new();
        for (class, v) in &self.0 {
            if class.verb == "WATCH" {
                continue;
            }
            let resource = if class.subresource.is_empty() {
                class.resource.clone()
            } else {
                format!("{}/{}", class.resource, class.subresource)
            };
            *by.entry(format!("{} {resource}", class.verb))
                .or_insert(0.0) += v;
        }
        by
    }

    /// Requests with this verb on this resource (no subresource) answered `code`.
    pub fn count(&self, verb: &str, resource: &str, code: &str) -> f64 {
        self.0
            .iter()
            .filter(|(c, _)| {
                c.verb == verb
                    && c.resource == resource
                    && c.subresource.is_empty()
                    && c.code == code
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Requests on `pods` itself (no subresource), watches excluded, by `VERB code`.
    pub fn pod_requests(&self) -> BTreeMap<String, f64> {
        let mut by_verb = BTreeMap::new();
        for (class, v) in &self.0 {
            if class.resource == "pods" && class.subresource.is_empty() && class.verb != "WATCH" {
                *by_verb
                    .entry(format!("{} {}", class.verb, class.code))
                    .or_insert(0.0) += v;
            }
        }
        by_verb
    }
}

/// `a="x",b="y"` into a map (values as written; the API server's values hold no quotes).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else {
            break;
        };
        labels.insert(
            key.trim_start_matches(',').to_string(),
            after[..end].to_string(),
        );
        rest = &after[end + 1..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 10
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 10
"#;
    const AFTER: &str = r#"apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 60
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 60
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="DELETE",version="v1"} 50
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="WATCH",version="v1"} 2
"#;

    #[test]
    fn the_delta_keeps_pod_requests_without_subresources_or_watches() {
        let delta = RequestCounts::parse(AFTER).since(&RequestCounts::parse(BEFORE));
        let by_verb = delta.pod_requests();
        assert_eq!(by_verb.get("POST 201"), Some(&50.0));
        assert_eq!(by_verb.get("DELETE 200"), Some(&50.0));
        assert_eq!(by_verb.len(), 2);
    }

    #[test]
    fn every_request_but_watches_counts_by_resource() {
        let delta = RequestCounts::parse(AFTER).since(&RequestCounts::parse(BEFORE));
        let by = delta.by_resource();
        assert_eq!(by.get("POST pods"), Some(&50.0));
        assert_eq!(by.get("POST pods/binding"), Some(&50.0));
        assert_eq!(by.get("DELETE pods"), Some(&50.0));
        assert_eq!(by.len(), 3);
    }
}
